#!/usr/bin/env bash
# The README's main command: the sandbox demo, on a fresh machine as root.
#  1. builds (once, cached) or reuses the Kubernetes control plane;
#  2. brings up the sandbox: a real cluster in a "cloud" network namespace whose
#     control-plane and proxy nodes are real kubelets with containerd, and an
#     intranet behind NAT with a proxy node and 20 edge machines running real
#     sshd, which the cloud cannot reach (DEMO_REAL_JOIN=N: the first N of them
#     get containerd, the kubelet and kubeadm, and join with the real kubeadm);
#  3. deploys the CRD, the operator and its webhook from deploy/penetrator.yaml;
#  4. adds the 20 machines with `penetrator add` and follows the task live
#     until every machine is a Ready node;
#  5. reinstalls two of them, renaming one;
#  6. prints a summary. The sandbox stays up until
#     `.venv/bin/penetrator-dev sandbox down --name demo`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
t0=$(date +%s)
pen=.venv/bin/penetrator
dev=.venv/bin/penetrator-dev
machines=${DEMO_MACHINES:-20}
real_join=${DEMO_REAL_JOIN:-0}
py=.venv/bin/python

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1-2. the sandbox: cloud + 1 NAT'd intranet (proxy node + $machines machines)"
$dev sandbox up --name demo --machines "$machines" --real-join "$real_join" > /tmp/penetrator-demo-up.txt
cat /tmp/penetrator-demo-up.txt
eval "$(grep '^export ' /tmp/penetrator-demo-up.txt | sed 's/ *#.*$//')"
export PATH="$repo/.venv/bin:$(testenv/build.sh):$PATH"  # kubectl, penetrator
kubectl get nodes -o wide
status=$($dev sandbox status --name demo -o json)
all_ips=$(echo "$status" | $py -c 'import json,sys; print(" ".join(m["ip"] for m in json.load(sys.stdin)["machines"] if m["intranet"] == 1))')
# the first $real_join machines have the real join stack (sandbox up --real-join)
read -r -a ip_list <<< "$all_ips"
kubeadm_ips="${ip_list[*]:0:$real_join}"
ips="${ip_list[*]:$real_join}"
first=${ip_list[0]}
$dev sandbox exec --name demo cloud -- sh -c "timeout 3 bash -c '</dev/tcp/$first/22' 2>/dev/null && echo 'cloud -> $first:22 open (unexpected!)' || echo 'cloud -> $first:22: unreachable (behind NAT)'"
$dev sandbox exec --name demo proxy-1 -- sh -c "timeout 3 bash -c '</dev/tcp/$first/22' && echo 'proxy-1 -> $first:22: open'"

step "3. deploying the CRD, RBAC, webhook and operator from deploy/penetrator.yaml"
$dev sandbox deploy --name demo
kubectl -n edge-system get deploy,pods,svc

step "4. penetrator add: $machines machines through proxy-1"
$pen credential create login-secret --key-file "$PENETRATOR_SANDBOX_SSH_KEY"
t_add=$(date +%s)
# shellcheck disable=SC2086 # one argument per IP
if [ -n "$kubeadm_ips" ]; then  # beside the other task: the real kubeadm
  # shellcheck disable=SC2086
  $pen add $kubeadm_ips --prefix kubeadm --join-template kubeadm --proxy-node proxy-1 \
    --credential login-secret --name kubeadm-nodes --no-wait
fi
$pen add $ips --prefix edge --proxy-node proxy-1 --credential login-secret --name nodes --timeout 900
if [ -n "$kubeadm_ips" ]; then
  kubectl wait nt/kubeadm-nodes --for=condition=Ready --timeout=600s
  kubectl get nodes -l app.superedge.io/node-label -o wide | grep -E '^NAME|^kubeadm-'
fi
add_s=$(( $(date +%s) - t_add ))
kubectl get nt nodes -o custom-columns='STATUS:status.nodetaskStatus'
kubectl get nodes -l app.superedge.io/node-label -L app.superedge.io/node-label

step "5. penetrator reinstall: two machines, one of them renamed"
# The first two installed nodes: keep the first one's name, rename the second.
read -r keep keep_ip old old_ip < <(kubectl get nodes -l app.superedge.io/node-label --sort-by=.metadata.name \
  -o jsonpath='{range .items[0:2]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address} {end}{"\n"}')
pairs="$keep=$keep_ip edge-renamed=$old_ip"
echo "reinstalling $keep ($keep_ip) and $old ($old_ip) as edge-renamed"
# shellcheck disable=SC2086
$pen reinstall $pairs --proxy-node proxy-1 --credential login-secret --name reinstall --timeout 600
kubectl get nodes -L app.superedge.io/node-label
if kubectl get node "$old" >/dev/null 2>&1; then echo "the old name $old is still there" >&2; exit 1; fi
echo "renamed: $old -> edge-renamed (the old Node object is gone)"

joined=$(kubectl get nodes -l app.superedge.io/node-label --no-headers | grep -c ' Ready ')
step "summary"
echo "machines joined and Ready: $joined of $machines (add took ${add_s}s); whole demo $(( $(date +%s) - t0 ))s"
echo "look next:"
echo "  export KUBECONFIG=$KUBECONFIG PATH=$repo/.venv/bin:$(testenv/build.sh):\$PATH"
echo "  kubectl get nt; kubectl -n edge-system get events --sort-by=.lastTimestamp | tail"
echo "  penetrator status nodes; penetrator-dev sandbox status --name demo"
echo "  penetrator-dev sandbox logs --name demo <operator pod>   (kubectl -n edge-system get pods)"
echo "stop it with: $dev sandbox down --name demo"
