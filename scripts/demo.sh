#!/usr/bin/env bash
# The README's main command. For now (the operator is not written yet) it
# brings up the real control plane, applies the NodeTask CRD and the seed's
# example task, and shows them with kubectl. It leaves the control plane up:
# `.venv/bin/penetrator testenv down --name demo` stops it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
t0=$(date +%s)
eval "$(.venv/bin/penetrator testenv up --name demo)"
kubectl=$(testenv/build.sh)/kubectl
echo "== control plane up: $("$kubectl" version -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
"$kubectl" apply -f deploy/crd.yaml
"$kubectl" wait --for=condition=established --timeout=60s crd/nodetasks.nodetask.apps.superedge.io
"$kubectl" apply -f deploy/examples/nodetask-add.yaml
echo "== kubectl get nt"
"$kubectl" get nt
echo "== kubectl get nt nodes -o custom-columns='STATUS:status.nodetaskStatus'"
"$kubectl" get nt nodes -o custom-columns='STATUS:status.nodetaskStatus'
echo "== a task the API server refuses (256.1.1.1 is no IP):"
sed 's/172.21.3.195/256.1.1.1/; s/name: nodes/name: bad-task/' deploy/examples/nodetask-add.yaml \
  | "$kubectl" apply -f - 2>&1 || true
echo
echo "Done in $(( $(date +%s) - t0 )) s. Try:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  $kubectl explain nodetask.spec"
echo "Stop it with: .venv/bin/penetrator testenv down --name demo"
