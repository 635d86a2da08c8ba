#!/usr/bin/env bash
# The README's main command: the sandbox demo. It builds or reuses the
# control plane, brings up the sandbox (a real cluster in the "cloud"
# namespace, an intranet behind NAT with a proxy node and 20 edge machines
# running real sshd), applies the NodeTask CRD and a task for those machines,
# and shows what the cluster sees. It leaves the sandbox up:
#   .venv/bin/penetrator sandbox down --name demo
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
t0=$(date +%s)
pen=.venv/bin/penetrator
machines=${DEMO_MACHINES:-20}

echo "== bringing up the sandbox: cloud + 1 NAT'd intranet (proxy node + $machines machines)"
eval "$($pen sandbox up --name demo --machines "$machines" | tee /dev/stderr | grep '^export ' | sed 's/ *#.*$//')"
kubectl=$(testenv/build.sh)/kubectl
echo
echo "== the cluster (kube-apiserver $("$kubectl" version -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') in the cloud namespace)"
"$kubectl" get nodes -o wide
echo
echo "== the one-way network: the proxy node reaches the machines, the cloud does not"
first=$($pen sandbox status --name demo -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["machines"][0]["ip"])')
$pen sandbox exec --name demo proxy-1 -- sh -c "timeout 3 bash -c '</dev/tcp/$first/22' && echo 'proxy-1 -> $first:22 open'"
$pen sandbox exec --name demo cloud -- sh -c "timeout 3 bash -c '</dev/tcp/$first/22' 2>/dev/null && echo 'cloud -> $first:22 open (unexpected!)' || echo 'cloud -> $first:22 unreachable, as behind NAT'"
echo
echo "== the NodeTask CRD and a task for the $machines machines through proxy-1"
"$kubectl" apply -f deploy/crd.yaml
"$kubectl" wait --for=condition=established --timeout=60s crd/nodetasks.nodetask.apps.superedge.io
"$kubectl" create namespace edge-system --dry-run=client -o yaml | "$kubectl" apply -f -
"$kubectl" -n edge-system create secret generic login-secret \
  --from-file=sshkey="$PENETRATOR_SANDBOX_SSH_KEY" --dry-run=client -o yaml | "$kubectl" apply -f -
ips=$($pen sandbox status --name demo -o json | .venv/bin/python -c 'import json,sys; print("\n".join("    - " + m["ip"] for m in json.load(sys.stdin)["machines"] if m["intranet"] == 1))')
cat <<YAML | "$kubectl" apply -f -
apiVersion: nodetask.apps.superedge.io/v1beta1
kind: NodeTask
metadata:
  name: nodes
spec:
  nodeNamePrefix: edge
  targetMachines:
$ips
  sshCredential: login-secret
  proxyNode: proxy-1
YAML
"$kubectl" get nt
echo
echo "Done in $(( $(date +%s) - t0 )) s. The sandbox stays up; try:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  $kubectl get nodes; $kubectl explain nodetask.spec"
echo "  $pen sandbox status --name demo"
echo "Stop it with: $pen sandbox down --name demo"
