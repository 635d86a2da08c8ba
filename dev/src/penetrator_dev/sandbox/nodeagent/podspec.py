"""What the node agent makes of a pod spec (pure: dicts in, a plan out).

No container runtime runs in the sandbox: a pod's first container runs as a
local process inside its node's network namespace, with its volumes
materialised as files and bind-mounted at their mountPaths in a private mount
namespace. This module decides all of that without touching the API or disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

VolumeKind = Literal["configMap", "secret", "projected", "downwardAPI", "emptyDir", "hostPath"]
SUPPORTED_VOLUMES: tuple[VolumeKind, ...] = (
    "configMap",
    "secret",
    "projected",
    "downwardAPI",
    "emptyDir",
    "hostPath",
)
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
# Secrets are readable by their owner only unless the pod asks otherwise.
DEFAULT_SECRET_MODE = 0o400
DEFAULT_FILE_MODE = 0o644
API_DEFAULT_MODE = 0o644


class UnsupportedPod(ValueError):
    """The pod uses something the sandbox cannot run; the message says what."""


@dataclass(frozen=True)
class FileSource:
    """One file of a volume: where its bytes come from and its mode."""

    path: str  # relative to the volume root
    mode: int
    kind: Literal["configMap", "secret", "token", "field"]
    name: str = ""  # configMap/secret name
    key: str = ""  # key in it, or the fieldPath for kind "field"
    optional: bool = False
    expiration_seconds: int = 3600
    audience: str = ""


@dataclass(frozen=True)
class VolumePlan:
    name: str
    kind: VolumeKind
    files: tuple[FileSource, ...] = ()
    # A whole configMap/secret without `items`: every key becomes a file.
    all_keys_of: tuple[tuple[Literal["configMap", "secret"], str, int, bool], ...] = ()
    host_path: str = ""  # hostPath: the node's (here: the host's) directory or file
    host_path_type: str = ""


@dataclass(frozen=True)
class MountPlan:
    volume: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    # valueFrom: ("field", fieldPath) | ("secret", name, key) | ("configMap", name, key)
    source: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    uid: str
    container: str
    argv: tuple[str, ...]
    working_dir: str
    env: tuple[EnvVar, ...]
    env_from: tuple[tuple[str, str, bool], ...]  # (configMap|secret, name, optional)
    volumes: tuple[VolumePlan, ...]
    mounts: tuple[MountPlan, ...]
    restart_policy: str
    active_deadline_seconds: int | None
    grace_period_seconds: int
    service_account: str
    termination_message_path: str = DEFAULT_TERMINATION_PATH
    termination_message_policy: str = "File"
    ignored: tuple[str, ...] = field(default=())  # what of the spec is not honoured


def _items(
    source: dict[str, Any], kind: Literal["configMap", "secret"], default_mode: int, optional: bool
) -> tuple[tuple[FileSource, ...], tuple[tuple[Any, ...], ...]]:
    name = str(source.get("name") or source.get("secretName") or "")
    items = source.get("items") or []
    if not items:
        return (), ((kind, name, default_mode, optional),)
    files = tuple(
        FileSource(
            path=str(item["path"]),
            mode=int(item.get("mode", default_mode)),
            kind=kind,
            name=name,
            key=str(item["key"]),
            optional=optional,
        )
        for item in items
    )
    return files, ()


def _downward_files(source: dict[str, Any], default_mode: int) -> tuple[FileSource, ...]:
    out = []
    for item in source.get("items") or []:
        if "fieldRef" not in item:
            raise UnsupportedPod("downwardAPI resourceFieldRef is not supported in the sandbox")
        out.append(
            FileSource(
                path=str(item["path"]),
                mode=int(item.get("mode", default_mode)),
                kind="field",
                key=str(item["fieldRef"]["fieldPath"]),
            )
        )
    return tuple(out)


def _volume(volume: dict[str, Any]) -> VolumePlan:
    name = str(volume["name"])
    if "configMap" in volume:
        src = volume["configMap"]
        mode = int(src.get("defaultMode", DEFAULT_FILE_MODE))
        cm_files, cm_whole = _items(src, "configMap", mode, bool(src.get("optional")))
        return VolumePlan(name, "configMap", cm_files, cm_whole)
    if "secret" in volume:
        src = volume["secret"]
        # The API defaults defaultMode to 0644, so 0644 means "not chosen": keep secrets tight.
        mode = int(src.get("defaultMode", API_DEFAULT_MODE))
        if mode == API_DEFAULT_MODE:
            mode = DEFAULT_SECRET_MODE
        s_files, s_whole = _items(src, "secret", mode, bool(src.get("optional")))
        return VolumePlan(name, "secret", s_files, s_whole)
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        mode = int(src.get("defaultMode", DEFAULT_FILE_MODE))
        return VolumePlan(name, "downwardAPI", _downward_files(src, mode))
    if "emptyDir" in volume:
        return VolumePlan(name, "emptyDir")
    if "hostPath" in volume:
        src = volume["hostPath"]
        return VolumePlan(
            name, "hostPath", host_path=str(src["path"]), host_path_type=str(src.get("type") or "")
        )
    if "projected" in volume:
        src = volume["projected"]
        mode = int(src.get("defaultMode", DEFAULT_FILE_MODE))
        files: list[FileSource] = []
        whole: list[tuple[Any, ...]] = []
        for part in src.get("sources") or []:
            if "serviceAccountToken" in part:
                t = part["serviceAccountToken"]
                files.append(
                    FileSource(
                        path=str(t["path"]),
                        mode=mode,
                        kind="token",
                        expiration_seconds=int(t.get("expirationSeconds", 3600)),
                        audience=str(t.get("audience") or ""),
                    )
                )
            elif "configMap" in part:
                f, w = _items(
                    part["configMap"], "configMap", mode, bool(part["configMap"].get("optional"))
                )
                files += f
                whole += w
            elif "secret" in part:
                f, w = _items(part["secret"], "secret", mode, bool(part["secret"].get("optional")))
                files += f
                whole += w
            elif "downwardAPI" in part:
                files += _downward_files(part["downwardAPI"], mode)
            else:
                raise UnsupportedPod(
                    f"projected source {sorted(part)} is not supported in the sandbox"
                )
        return VolumePlan(name, "projected", tuple(files), tuple(whole))
    kinds = sorted(k for k in volume if k != "name")
    raise UnsupportedPod(
        f"volume {name!r} of kind {kinds} is not supported in the sandbox "
        f"(supported: {', '.join(SUPPORTED_VOLUMES)})"
    )


def _env(container: dict[str, Any]) -> tuple[EnvVar, ...]:
    out = []
    for e in container.get("env") or []:
        name = str(e["name"])
        if "valueFrom" not in e:
            out.append(EnvVar(name, value=str(e.get("value", ""))))
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            out.append(EnvVar(name, source=("field", str(vf["fieldRef"]["fieldPath"]))))
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            out.append(
                EnvVar(
                    name,
                    source=("secret", str(ref["name"]), str(ref["key"])),
                    optional=bool(ref.get("optional")),
                )
            )
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            out.append(
                EnvVar(
                    name,
                    source=("configMap", str(ref["name"]), str(ref["key"])),
                    optional=bool(ref.get("optional")),
                )
            )
        else:
            raise UnsupportedPod(f"env {name!r}: valueFrom {sorted(vf)} is not supported")
    return tuple(out)


HOST_DIRS = ("/tmp",)
"""Pods here are host processes: an emptyDir over one of these would hide what the
host keeps there (tests keep the install packages under /tmp)."""


def _keep_host_dirs(
    mounts: tuple[MountPlan, ...], volumes: tuple[VolumePlan, ...]
) -> tuple[tuple[MountPlan, ...], list[str]]:
    """The mounts without emptyDirs over ``HOST_DIRS``, and what was left out."""
    empty = {v.name for v in volumes if v.kind == "emptyDir"}
    kept, skipped = [], []
    for m in mounts:
        if m.volume in empty and m.mount_path.rstrip("/") in HOST_DIRS:
            skipped.append(f"emptyDir {m.volume!r} over the host's {m.mount_path}")
        else:
            kept.append(m)
    return tuple(kept), skipped


def plan_pod(pod: dict[str, Any]) -> PodPlan:
    """Decide how to run `pod` (a Pod as a dict, camelCase as the API returns it)."""
    meta, spec = pod["metadata"], pod["spec"]
    containers = spec.get("containers") or []
    if not containers:
        raise UnsupportedPod("the pod has no containers")
    c = containers[0]
    argv = tuple(str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])])
    if not argv:
        raise UnsupportedPod(
            f"container {c.get('name')!r} has no command: the sandbox runs commands, not images"
        )
    ignored = []
    if len(containers) > 1:
        ignored.append(f"containers after the first ({len(containers) - 1})")
    for key in ("initContainers", "ephemeralContainers"):
        if spec.get(key):
            ignored.append(key)
    for key in (
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "resources",
        "securityContext",
        "ports",
        "lifecycle",
    ):
        if c.get(key):
            ignored.append(f"container {key}")
    env_from = []
    for ef in c.get("envFrom") or []:
        if "configMapRef" in ef:
            env_from.append(
                (
                    "configMap",
                    str(ef["configMapRef"]["name"]),
                    bool(ef["configMapRef"].get("optional")),
                )
            )
        elif "secretRef" in ef:
            env_from.append(
                ("secret", str(ef["secretRef"]["name"]), bool(ef["secretRef"].get("optional")))
            )
    mounts = tuple(
        MountPlan(
            volume=str(m["name"]),
            mount_path=str(m["mountPath"]),
            sub_path=str(m.get("subPath") or ""),
            read_only=bool(m.get("readOnly")),
        )
        for m in c.get("volumeMounts") or []
    )
    volumes = tuple(_volume(v) for v in spec.get("volumes") or [])
    mounts, shadowing = _keep_host_dirs(mounts, volumes)
    ignored += shadowing
    deadline = spec.get("activeDeadlineSeconds")
    return PodPlan(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta["name"]),
        uid=str(meta["uid"]),
        container=str(c.get("name") or "main"),
        argv=argv,
        working_dir=str(c.get("workingDir") or "/"),
        env=_env(c),
        env_from=tuple(env_from),
        volumes=volumes,
        mounts=mounts,
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        active_deadline_seconds=int(deadline) if deadline is not None else None,
        grace_period_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
        service_account=str(spec.get("serviceAccountName") or "default"),
        termination_message_path=str(c.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH),
        termination_message_policy=str(c.get("terminationMessagePolicy") or "File"),
        ignored=tuple(ignored),
    )


def field_value(pod: dict[str, Any], field_path: str, pod_ip: str) -> str:
    """The value of a downward-API fieldPath for this pod."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": pod_ip,
        "status.hostIP": pod_ip,
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        values = meta.get(source) or {}
        if field_path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        if field_path.startswith(prefix + "['") and field_path.endswith("']"):
            return str(values.get(field_path[len(prefix) + 2 : -2], ""))
    raise UnsupportedPod(f"fieldPath {field_path!r} is not supported in the sandbox")
