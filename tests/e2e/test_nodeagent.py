"""The sandbox's node agent against the real control plane: the real scheduler
binds pods to its node, the real Job controller runs Jobs, RBAC is real."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from penetrator_dev.sandbox.cluster import SandboxCluster, restart_node_agent
from penetrator_dev.sandbox.lifecycle import Sandbox
from support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.netns]

NODE = "proxy-1"  # the proxy node of intranet 1, inside its network namespace
TOLERATION = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}


@pytest.fixture(scope="module")
def cluster(sandbox_cluster: tuple[Sandbox, SandboxCluster]) -> Iterator[SandboxCluster]:
    _, info = sandbox_cluster
    info.kubectl("create", "namespace", "agent-probe")
    # Every Job of this module mounts it.
    info.kubectl(
        "-n", "agent-probe", "create", "secret", "generic", "probe", "--from-literal=key=s3cret"
    )
    try:
        yield info
    finally:
        info.kubectl("delete", "namespace", "agent-probe", "--wait=false", check=False)


def job(name: str, sa: str, code: str, **extra: object) -> str:
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "agent-probe"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": sa,
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "tolerations": [TOLERATION],
                    "containers": [
                        {
                            "name": "main",
                            "image": "ignored",
                            "command": ["python", "-c", code],
                            "volumeMounts": [
                                {
                                    "name": "probe-secret",
                                    "mountPath": "/run/penetrator-test/probe-secret",
                                    "readOnly": True,
                                }
                            ],
                        }
                    ],
                    "volumes": [{"name": "probe-secret", "secret": {"secretName": "probe"}}],
                    **extra,
                }
            },
        },
    }
    return json.dumps(manifest)


READ_CONFIGMAP = """
import os, stat
from lightkube import Client
from lightkube.resources.core_v1 import ConfigMap
cm = Client().get(ConfigMap, "probe", namespace="agent-probe")
secret = "/run/penetrator-test/probe-secret/key"
print("configmap:", cm.data["greeting"])
print("secret:", open(secret).read())
print("mode:", oct(stat.S_IMODE(os.stat(secret).st_mode)))
"""


def job_condition(cluster: SandboxCluster, name: str) -> str:
    out = cluster.kubectl(
        "-n",
        "agent-probe",
        "get",
        "job",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.status=='True')].type}",
        check=False,
    )
    return out.stdout


def pod_log(cluster: SandboxCluster, job_name: str) -> str:
    logs = list(cluster.pods_dir.glob(f"agent-probe_{job_name}-*/container.log"))
    return "\n".join(p.read_text() for p in logs)


def test_job_reads_configmap_with_in_cluster_config_and_a_mounted_secret(
    cluster: SandboxCluster,
) -> None:
    cluster.kubectl(
        "-n", "agent-probe", "create", "configmap", "probe", "--from-literal=greeting=hello"
    )
    cluster.kubectl("-n", "agent-probe", "create", "serviceaccount", "reader")
    cluster.kubectl(
        "-n", "agent-probe", "create", "role", "read-cm", "--verb=get", "--resource=configmaps"
    )
    cluster.kubectl(
        "-n",
        "agent-probe",
        "create",
        "rolebinding",
        "reader",
        "--role=read-cm",
        "--serviceaccount=agent-probe:reader",
    )
    cluster.kubectl("apply", "-f", "-", input=job("reads", "reader", READ_CONFIGMAP))
    wait_for(
        lambda: (
            "Complete" in job_condition(cluster, "reads")
            or "Failed" in job_condition(cluster, "reads")
        ),
        "the Job to finish",
        90,
    )
    log = pod_log(cluster, "reads")
    assert "Complete" in job_condition(cluster, "reads"), log
    assert "configmap: hello" in log
    assert "secret: s3cret" in log
    assert "mode: 0o400" in log


def test_job_without_rbac_is_forbidden(
    cluster: SandboxCluster,
) -> None:
    cluster.kubectl("-n", "agent-probe", "create", "serviceaccount", "nobody")
    cluster.kubectl("apply", "-f", "-", input=job("forbidden", "nobody", READ_CONFIGMAP))
    wait_for(lambda: "Failed" in job_condition(cluster, "forbidden"), "the Job to fail", 90)
    assert "403" in pod_log(cluster, "forbidden") or "Forbidden" in pod_log(cluster, "forbidden")


def test_deleting_a_running_pod_stops_its_process(cluster: SandboxCluster) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=job("sleeper", "default", "import time; time.sleep(600)")
    )

    def running_pid() -> int:
        out = cluster.kubectl(
            "-n",
            "agent-probe",
            "get",
            "pods",
            "-l",
            "job-name=sleeper",
            "-o",
            "jsonpath={.items[0].status.containerStatuses[0].containerID}",
            check=False,
        ).stdout
        return int(out.removeprefix("sandbox://")) if out.startswith("sandbox://") else 0

    wait_for(lambda: running_pid() > 0, "the sleeper pod to run", 60)
    pid = running_pid()
    assert Path(f"/proc/{pid}").exists()
    pod = cluster.kubectl(
        "-n",
        "agent-probe",
        "get",
        "pods",
        "-l",
        "job-name=sleeper",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout
    cluster.kubectl("-n", "agent-probe", "delete", "job", "sleeper", "--cascade=orphan")
    cluster.kubectl(
        "-n",
        "agent-probe",
        "delete",
        "pod",
        pod,
        "--grace-period=2",
        "--wait=true",
        "--timeout=60s",
    )
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the pod's process to stop", 30)


def test_service_gets_the_pods_ip_in_its_endpoints(cluster: SandboxCluster) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "agent-probe", "labels": {"app": "web"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE},
            "tolerations": [TOLERATION],
            "containers": [
                {
                    "name": "web",
                    "image": "ignored",
                    "command": ["python", "-m", "http.server", "18080", "--bind", "127.0.0.1"],
                    "ports": [{"containerPort": 18080}],
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster.kubectl("-n", "agent-probe", "create", "service", "clusterip", "web", "--tcp=80:18080")

    def endpoint_ips() -> list[str]:
        out = cluster.kubectl(
            "-n",
            "agent-probe",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ).stdout
        return [
            a
            for s in json.loads(out)["items"]
            for e in (s.get("endpoints") or [])
            if (e.get("conditions") or {}).get("ready")
            for a in e["addresses"]
        ]

    wait_for(lambda: endpoint_ips() == ["10.10.0.2"], "the Service's endpoints", 60)
    cluster.kubectl("-n", "agent-probe", "delete", "pod", "web", "--grace-period=1", "--wait=false")


def test_an_agent_crash_fails_a_running_job_pod_instead_of_running_it_twice(
    sandbox_cluster: tuple[Sandbox, SandboxCluster], cluster: SandboxCluster
) -> None:
    sb, _ = sandbox_cluster
    marker = cluster.pods_dir.parent / "orphan-starts"
    marker.unlink(missing_ok=True)
    code = f"open({str(marker)!r}, 'a').write('started\\n'); import time; time.sleep(600)"
    cluster.kubectl("apply", "-f", "-", input=job("orphan", "default", code))

    def pod_status(path: str) -> str:
        return cluster.kubectl(
            "-n",
            "agent-probe",
            "get",
            "pods",
            "-l",
            "job-name=orphan",
            "-o",
            f"jsonpath={{.items[*]{path}}}",
            check=False,
        ).stdout

    wait_for(
        lambda: pod_status(".status.containerStatuses[0].containerID").startswith("sandbox://"),
        "the pod to run",
        60,
    )
    pid = int(pod_status(".status.containerStatuses[0].containerID").removeprefix("sandbox://"))
    assert Path(f"/proc/{pid}").exists()
    restart_node_agent(sb)  # SIGKILL: the pod's process is orphaned
    wait_for(lambda: pod_status(".status.phase") == "Failed", "the pod to be failed", 60)
    assert pod_status(".status.reason") == "NodeAgentRestarted"
    wait_for(
        lambda: not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text(),
        "the orphan to stop",
        30,
    )
    wait_for(lambda: "Failed" in job_condition(cluster, "orphan"), "the Job to fail", 60)
    assert marker.read_text() == "started\n"  # it never ran a second time
    assert len(pod_status(".metadata.name").split()) == 1
    # The restarted agent keeps the nodes Ready and runs new pods.
    cluster.kubectl("apply", "-f", "-", input=job("after-restart", "default", "print('ok')"))
    wait_for(
        lambda: "Complete" in job_condition(cluster, "after-restart"), "a Job after the restart", 60
    )
