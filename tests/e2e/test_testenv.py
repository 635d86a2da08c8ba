"""The Go-built control plane is real: versions, controllers, bootstrap tokens, clean stop."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from penetrator_dev.testenv.bootstrap import create_bootstrap_token
from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions, _is_ours
from penetrator_dev.testenv.pki import ca_cert_hash
from support import REPO, add_task, wait_for

pytestmark = pytest.mark.cluster


def test_server_reports_the_pinned_version(cluster: ControlPlane) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    go_mod = (REPO / "testenv" / "go.mod").read_text()
    pinned = next(
        w
        for line in go_mod.splitlines()
        if "k8s.io/kubernetes v" in line
        for w in line.split()
        if w.startswith("v1.")
    )
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def _anonymous_get(cluster: ControlPlane, path: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(cluster.pki.ca_crt))
    try:
        with urllib.request.urlopen(cluster.server + path, context=ctx, timeout=10) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_cluster_info_is_readable_anonymously_and_pins_the_ca(cluster: ControlPlane) -> None:
    status, body = _anonymous_get(cluster, "/api/v1/namespaces/kube-public/configmaps/cluster-info")
    assert status == 200
    kubeconfig = yaml.safe_load(json.loads(body)["data"]["kubeconfig"])
    cluster_entry = kubeconfig["clusters"][0]["cluster"]
    assert cluster_entry["server"] == cluster.server
    ca_pem = base64.b64decode(cluster_entry["certificate-authority-data"])
    assert ca_cert_hash(ca_pem) == cluster.ca_cert_hash
    # Anonymous may read cluster-info and nothing else.
    assert _anonymous_get(cluster, "/api/v1/nodes")[0] == 403
    assert _anonymous_get(cluster, "/api/v1/namespaces/kube-system/secrets")[0] == 403


def test_bootstrap_token_authenticates_and_is_signed_into_cluster_info(
    cluster: ControlPlane,
) -> None:
    token = create_bootstrap_token(cluster)
    who = cluster.kubectl(
        "auth",
        "whoami",
        "-o",
        "json",
        f"--token={token.value}",
        "--kubeconfig=/dev/null",
        f"--server={cluster.server}",
        f"--certificate-authority={cluster.pki.ca_crt}",
    )
    user = json.loads(who.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:bootstrap:{token.token_id}"
    assert "system:bootstrappers:kubeadm:default-node-token" in user["groups"]

    # The bootstrap signer (enabled on purpose) signs cluster-info for this token.
    def signed() -> bool:
        cm = json.loads(
            cluster.kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "json").stdout
        )
        return f"jws-kubeconfig-{token.token_id}" in cm["data"]

    wait_for(signed, "the bootstrapsigner controller to sign cluster-info", 60)


def test_expired_bootstrap_token_is_refused(cluster: ControlPlane) -> None:
    token = create_bootstrap_token(cluster, ttl=dt.timedelta(seconds=-60))
    who = cluster.kubectl(
        "auth",
        "whoami",
        f"--token={token.value}",
        "--kubeconfig=/dev/null",
        f"--server={cluster.server}",
        f"--certificate-authority={cluster.pki.ca_crt}",
        check=False,
    )
    assert who.returncode != 0
    assert "Unauthorized" in who.stderr


def test_owned_configmap_is_garbage_collected_with_its_nodetask(
    cluster: ControlPlane, crd: None
) -> None:
    task = add_task("gc-probe", ["10.0.0.1"], "proxy-1", credential="login-secret")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(task))
    uid = cluster.kubectl("get", "nt", "gc-probe", "-o", "jsonpath={.metadata.uid}").stdout
    cluster.kubectl("create", "namespace", "gc-probe", check=False)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": "gc-probe",
            "ownerReferences": [
                {
                    "apiVersion": "nodetask.apps.superedge.io/v1beta1",
                    "kind": "NodeTask",
                    "name": "gc-probe",
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"k": "v"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cm))
    cluster.kubectl("delete", "nt", "gc-probe", "--wait=true")
    wait_for(
        lambda: (
            cluster.kubectl("-n", "gc-probe", "get", "cm", "owned", check=False).returncode != 0
        ),
        "the garbage collector to delete the owned ConfigMap",
        60,
    )
    cluster.kubectl("delete", "namespace", "gc-probe", "--wait=false")


def test_scheduler_and_job_controller_run_a_job_to_its_pod(cluster: ControlPlane) -> None:
    # No kubelet here: the pod stays Pending, but the Job controller created it
    # and the scheduler looked at it (no nodes: FailedScheduling).
    cluster.kubectl("create", "namespace", "job-probe", check=False)
    cluster.kubectl("-n", "job-probe", "create", "job", "probe", "--image=busybox", "--", "true")

    def scheduled_or_tried() -> bool:
        pods = json.loads(
            cluster.kubectl(
                "-n", "job-probe", "get", "pods", "-l", "job-name=probe", "-o", "json"
            ).stdout
        )["items"]
        return any(
            c.get("type") == "PodScheduled"
            for p in pods
            for c in p.get("status", {}).get("conditions", [])
        )

    wait_for(scheduled_or_tried, "the job's pod to be seen by the scheduler", 60)
    cluster.kubectl("delete", "namespace", "job-probe", "--wait=false")


def test_two_control_planes_run_at_once_and_stop_cleanly(cluster: ControlPlane) -> None:
    second = ControlPlane(ControlPlaneOptions(die_with_parent=True))
    second.start()  # how long it takes: bench/timings.py
    try:
        assert second.server != cluster.server
        second.kubectl("create", "namespace", "only-in-second")
        assert cluster.kubectl("get", "namespace", "only-in-second", check=False).returncode != 0
        records = list(second.state.processes)
        assert {r.component for r in records} == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        }
    finally:
        second.stop()
    assert not any(_is_ours(r) for r in records)
    assert not second.workdir.exists()


def test_cli_up_and_down_leave_no_process(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    cli = [sys.executable, "-m", "penetrator_dev.cli", "testenv"]
    up = subprocess.run(
        [*cli, "up", "--name", "clitest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    state_file = tmp_path / "penetrator-testenv-clitest" / "controlplane.json"
    try:
        assert up.returncode == 0, up.stderr
        line = next(ln for ln in up.stdout.splitlines() if ln.startswith("export KUBECONFIG="))
        kubeconfig = line.split("=", 1)[1].strip("'")
        state = json.loads(state_file.read_text())
        pids = [p["pid"] for p in state["processes"]]
        assert len(pids) == 4
        nodes = subprocess.run(
            [
                state["processes"][0]["binary"].replace("etcd", "kubectl"),
                f"--kubeconfig={kubeconfig}",
                "get",
                "--raw=/readyz",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout == "ok"
        # Idempotent: a second `up` reuses the running control plane.
        again = subprocess.run(
            [*cli, "up", "--name", "clitest"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert line in again.stdout
    finally:
        down = subprocess.run(
            [*cli, "down", "--name", "clitest"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        )
    assert not state_file.parent.exists()
