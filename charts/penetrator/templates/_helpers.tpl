{{/* The namespace of every object: fixed by compat.md (credential Secrets, Jobs). */}}
{{- define "penetrator.namespace" -}}edge-system{{- end }}

{{- define "penetrator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Labels of every object; selectors use only name and component. */}}
{{- define "penetrator.labels" -}}
app.kubernetes.io/name: penetrator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The settings tree with what the chart decides filled in (one home each). */}}
{{- define "penetrator.settings" -}}
{{- $s := deepCopy .Values.settings -}}
{{- $jobPod := merge (dict "image" (include "penetrator.image" .) "imagePullPolicy" .Values.image.pullPolicy) ($s.jobPod | default dict) -}}
{{- $_ := set $s "jobPod" $jobPod -}}
{{- $webhook := merge (dict "enabled" .Values.webhook.enabled) ($s.webhook | default dict) -}}
{{- $_ := set $s "webhook" $webhook -}}
{{- toYaml $s -}}
{{- end }}

{{/* The operator's health port: the port of settings.healthEndpoint. */}}
{{- define "penetrator.healthPort" -}}
{{- $host := (urlParse .Values.settings.healthEndpoint).host -}}
{{- last (splitList ":" $host) -}}
{{- end }}

