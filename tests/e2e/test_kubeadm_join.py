"""The kubeadm template on machines with a real join stack (`sandbox up --real-join`):
the operator, deployed from deploy/penetrator.yaml, joins 3 machines behind NAT
through the proxy node with the real kubeadm; they become Ready Nodes run by the
real kubelet (v1.37.2, built here) on Debian's containerd, labelled with the task,
and a pod the scheduler puts on one of them runs. Then one machine is reinstalled
under a new name: `kubeadm reset -f`, a join under the new name, the old Node gone,
and the kubelet's client certificate is the new name's. Another is reinstalled
under its same name while its old Node is Ready (the real kubeadm's preflight
refuses that name until the operator removed the Node the Job asked it to)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from penetrator.api import NODE_LABEL, MachinePhase
from penetrator.api.results import ResultsDoc
from penetrator.k8s.builders import TASK_NAME_LABEL
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import deploy_penetrator, operator_log_tail
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.realjoin import BUSYBOX_IMAGE, node_dir
from support import add_task, nodetask_yaml, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
MACHINES = 3


@pytest.fixture(scope="module")
def deployed(sandbox_factory: Any) -> Iterator[tuple[Sandbox, Any]]:
    sb = sandbox_factory(machines=MACHINES, intranets=1, real_join=MACHINES)
    try:
        info = cluster_mod.start_cluster(sb)
        deploy_penetrator(
            sb.name,
            info,
            {
                "reconcile": {"pollInterval": 2, "backoffBase": 2},
                "job": {"timeouts": {"waitReady": 120}},
            },
        )
        ssh = sb.status()["ssh"]
        info.kubectl(
            "-n", NS, "create", "secret", "generic", "login",
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        yield sb, info
    finally:
        down(sb.name)


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def ready_task(info: Any, name: str, timeout: float) -> dict[str, Any]:
    def ready() -> Any:
        t = get(info, "nt", name) or {}
        return t if (t.get("status") or {}).get("nodetaskStatus") == "ready" else None

    try:
        return dict(wait_for(ready, f"the task {name} to be ready", timeout))
    except AssertionError:
        print(operator_log_tail(info, 60))
        print(json.dumps(get(info, "nt", name), indent=1)[-4000:])
        raise


def nodes_by_ip(info: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for n in get(info, "nodes")["items"]:
        for a in n["status"].get("addresses", []):
            if a["type"] == "InternalIP":
                out[a["address"]] = n
    return out


def is_ready(node: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def server_version(info: Any) -> str:
    return str(
        yaml.safe_load(info.kubectl("version", "-o", "yaml").stdout)["serverVersion"]["gitVersion"]
    )


@pytest.fixture(scope="module")
def joined(deployed: tuple[Sandbox, Any]) -> dict[str, Any]:
    """The task "kubeadm" (every machine, the kubeadm template, through the proxy
    node), once it is ready; with how long it took."""
    sb, info = deployed
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    task = add_task("kubeadm", ips, info.proxy_nodes[1], prefix="kubeadm")
    task["spec"]["joinTemplate"] = "kubeadm"
    t0 = time.monotonic()
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump(task))
    out = ready_task(info, "kubeadm", 300)
    print(f"task kubeadm: {len(ips)} machines ready in {time.monotonic() - t0:.1f} s")
    return out


def test_machines_join_with_the_real_kubeadm(
    deployed: tuple[Sandbox, Any], joined: dict[str, Any]
) -> None:
    sb, info = deployed
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    label = joined["metadata"]["labels"][NODE_LABEL]
    by_ip = nodes_by_ip(info)
    version = server_version(info)
    for ip in ips:
        node = by_ip[ip]
        node_info = node["status"]["nodeInfo"]
        print(ip, node["metadata"]["name"], node_info["kubeletVersion"],
              node_info["containerRuntimeVersion"])  # fmt: skip
        assert is_ready(node), node["status"]["conditions"]
        assert node["metadata"]["labels"][NODE_LABEL] == label
        assert node_info["kubeletVersion"] == version == "v1.37.2"
        assert node_info["containerRuntimeVersion"].startswith("containerd://1.6."), node_info
        # joined by kubeadm: its TLS bootstrap left the kubelet a client certificate
        assert client_certificate_name(sb, ip) == f"system:node:{node['metadata']['name']}"

    # a pod the scheduler puts on one of them runs (its image is in the machine's
    # containerd already: there is no registry)
    target = by_ip[ips[-1]]["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "on-edge", "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": target},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "c",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec sleep 3600"],
                }
            ],
        },
    }
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    try:

        def running() -> Any:
            p = get(info, "pod", "-n", "default", "on-edge") or {}
            st = p.get("status") or {}
            statuses = st.get("containerStatuses") or [{}]
            return p if st.get("phase") == "Running" and statuses[0].get("ready") else None

        try:
            p = wait_for(running, "the pod on the edge machine to run", 120)
        except AssertionError:
            print(
                json.dumps(
                    (get(info, "pod", "-n", "default", "on-edge") or {}).get("status"), indent=1
                )
            )
            print(info.kubectl("get", "events", "-n", "default", check=False).stdout[-3000:])
            log = node_dir(sb.name, sb.topology.machine(1, ips[-1])) / "kubelet.log"
            print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
            raise
        assert p["spec"]["nodeName"] == target
        assert p["status"]["podIP"].startswith("10.244.")  # the machine's own bridge
    finally:
        info.kubectl("delete", "pod", "-n", "default", "on-edge", "--ignore-not-found",
                     "--wait=false")  # fmt: skip


def client_certificate_name(sb: Sandbox, ip: str) -> str:
    """The name in the kubelet's client certificate, read from the machine's
    /var/lib/kubelet (its kubelet-client-current.pem links to an absolute path
    inside the machine: the file name is what counts here)."""
    pki = node_dir(sb.name, sb.topology.machine(1, ip)) / "var-lib-kubelet" / "pki"
    current = Path(os.readlink(pki / "kubelet-client-current.pem")).name
    cert = x509.load_pem_x509_certificate((pki / current).read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_reinstall_under_a_new_name(deployed: tuple[Sandbox, Any], joined: dict[str, Any]) -> None:
    sb, info = deployed
    ip = sb.topology.intranet(1).machines[0].ip
    old = nodes_by_ip(info)[ip]["metadata"]["name"]
    assert client_certificate_name(sb, ip) == f"system:node:{old}"
    manifest = nodetask_yaml(
        "rename",
        nodeNamesOverride={"kubeadm-renamed": ip},
        sshCredential="login",
        proxyNode=info.proxy_nodes[1],
        joinTemplate="kubeadm",
    )
    info.kubectl("apply", "-f", "-", input=manifest)
    task = ready_task(info, "rename", 300)
    node = nodes_by_ip(info)[ip]
    assert node["metadata"]["name"] == "kubeadm-renamed"
    assert is_ready(node)
    assert node["metadata"]["labels"][NODE_LABEL] == task["metadata"]["labels"][NODE_LABEL]
    names = {n["metadata"]["name"] for n in get(info, "nodes")["items"]}
    assert old not in names  # the old Node is gone
    # kubeadm reset removed the old identity; the TLS bootstrap made the new one
    assert client_certificate_name(sb, ip) == "system:node:kubeadm-renamed"


def results_doc(info: Any, task: str) -> ResultsDoc:
    """The task's results ConfigMap (the one with the task's name label and key)."""
    items = get(info, "configmap", "-n", NS, "-l", f"{TASK_NAME_LABEL}={task}")["items"]
    docs = [ResultsDoc.from_configmap_data(cm.get("data")) for cm in items]
    found = [d for d in docs if d is not None]
    assert len(found) == 1, [cm["metadata"]["name"] for cm in items]
    return found[0]


def test_reinstall_under_the_same_name(
    deployed: tuple[Sandbox, Any], joined: dict[str, Any]
) -> None:
    """The real kubeadm refuses to join while a Ready Node of its name exists: the Job
    resets the machine, asks in the results for the old Node's removal, the operator
    deletes it, the Job joins. One round, no retry."""
    sb, info = deployed
    ip = sb.topology.intranet(1).machines[1].ip
    old = nodes_by_ip(info)[ip]
    name = old["metadata"]["name"]
    assert is_ready(old), old["status"]["conditions"]  # the kubeadm preflight would refuse it
    manifest = nodetask_yaml(
        "same-name",
        nodeNamesOverride={name: ip},
        sshCredential="login",
        proxyNode=info.proxy_nodes[1],
        joinTemplate="kubeadm",
    )
    t0 = time.monotonic()
    info.kubectl("apply", "-f", "-", input=manifest)
    task = ready_task(info, "same-name", 300)
    print(f"task same-name: reinstalled under its own name in {time.monotonic() - t0:.1f} s")
    node = nodes_by_ip(info)[ip]
    assert node["metadata"]["name"] == name
    assert node["metadata"]["uid"] != old["metadata"]["uid"]  # a new Node, registered afresh
    assert is_ready(node)
    assert node["metadata"]["labels"][NODE_LABEL] == task["metadata"]["labels"][NODE_LABEL]
    doc = results_doc(info, "same-name")
    entry = doc.machines[name]
    assert (doc.round, entry.attempts, entry.phase) == (1, 1, MachinePhase.JOINED), doc
    assert entry.awaits_removal is None
    assert entry.error is None
    assert client_certificate_name(sb, ip) == f"system:node:{name}"
