"""Install packages for real, deployed from deploy/penetrator.yaml into the sandbox (as
tests/e2e/test_operator_deploy.py): the seed's add example joins its machines with
packages from a URL (an HTTP server in the cloud, fetched once by the Job on the proxy
node, SHA-256 checked, served to the machines over the LAN) and from a directory of
the proxy node (hostPath, opted in by the settings); a missing package and a wrong
SHA-256 each fail their task at once (one round, no retry) with that reason on the
task's Ready condition and in one Warning Event, and no machine touched (its work
directory never made).

The package image source has its own end-to-end test (a package image built and
imported into the proxy node's containerd): tests/e2e/test_packages_image.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import deploy_penetrator
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import K8S_VERSION, build_join_packages
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.state import state_dir
from support import add_task, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
CLOUD_IP = "172.31.0.1"  # the cloud's bridge: the proxy nodes reach it (the apiserver's)
HTTP_PORT = 8099
WORK_DIR = "penetrator"  # the sandbox's settings: relative to each machine's home


@pytest.fixture(scope="module")
def deployed(sandbox_factory: Any) -> Iterator[tuple[Sandbox, Any, dict[str, str]]]:
    """The sandbox (4 machines behind one NAT), its cluster, the operator deployed
    from the one file with the packages' settings: source url (served from the cloud),
    hostPath allowed (a tree <version>/<arch>/<tarball> on the host, which the sandbox's
    nodes share). Yields also arch -> SHA-256 of the packages."""
    sb = sandbox_factory(machines=4, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
        built = build_join_packages(state_dir(sb.name) / "packages")
        www = state_dir(sb.name) / "www"
        tree = state_dir(sb.name) / "package-tree"
        for arch, pkg in built.items():
            (www / arch).mkdir(parents=True, exist_ok=True)
            shutil.copy(pkg.path, www / arch / pkg.path.name)
            (tree / K8S_VERSION / arch).mkdir(parents=True, exist_ok=True)
            shutil.copy(pkg.path, tree / K8S_VERSION / arch / pkg.path.name)
        sb.spawn(
            "cloud",
            [sys.executable, "-m", "http.server", "--bind", CLOUD_IP, "--directory", str(www),
             str(HTTP_PORT)],
            "package-http",
        )  # fmt: skip
        shas = {a: p.sha256 for a, p in built.items()}
        urls = {
            K8S_VERSION: {
                a: {"url": f"http://{CLOUD_IP}:{HTTP_PORT}/{a}/{p.path.name}", "sha256": p.sha256}
                for a, p in built.items()
            }
        }
        deploy_penetrator(
            sb.name,
            info,
            {
                "reconcile": {"pollInterval": 2, "backoffBase": 2, "startTimeout": 60},
                "job": {"timeouts": {"waitReady": 120}},
                "packages": {
                    "source": "url",
                    "urls": urls,
                    "hostPath": {"allowed": True, "path": str(tree)},
                },
            },
        )
        ssh = sb.status()["ssh"]
        info.kubectl(
            "-n", NS, "create", "secret", "generic", "login",
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        yield sb, info, shas
    finally:
        down(sb.name)


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def apply_task(info: Any, name: str, ip: str, packages: dict[str, Any] | None = None) -> None:
    """The seed's add example (prefix edge, through the proxy node), with the extension
    spec.packages when given."""
    body = add_task(name, [ip], info.proxy_nodes[1])
    if packages is not None:
        body["spec"]["packages"] = packages
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def phase_of(info: Any, name: str, phase: str) -> Any:
    t = get(info, "nt", name)
    return t if t and (t.get("status") or {}).get("nodetaskStatus") == phase else None


def explain(info: Any, name: str) -> str:
    return json.dumps(get(info, "nt", name), indent=1)[-3000:]


def work_dir(sb: Sandbox, ip: str) -> Path:
    return sb.machine_dir(1, ip) / "home" / WORK_DIR


def events(info: Any, name: str) -> list[dict[str, Any]]:
    out = get(info, "events", "-n", NS, "--field-selector", f"involvedObject.name={name}")
    return list((out or {}).get("items", []))


@pytest.mark.parametrize(
    ("task", "machine", "packages"),
    [
        ("via-url", 0, None),  # the settings' source
        ("via-host-path", 1, {"source": "hostPath"}),
    ],
)
def test_machines_join_with_packages_from_the_source(
    deployed: tuple[Sandbox, Any, dict[str, str]],
    task: str,
    machine: int,
    packages: dict[str, Any] | None,
) -> None:
    sb, info, shas = deployed
    ip = sb.topology.intranet(1).machines[machine].ip
    apply_task(info, task, ip, packages)
    try:
        done = wait_for(lambda: phase_of(info, task, "ready"), f"task {task} to be ready", 300)
    except AssertionError:
        print(explain(info, task))
        raise
    assert done["status"]["joined"] == 1
    # the package on the machine is the one the settings name, by its SHA-256
    archives = list((work_dir(sb, ip) / "packages").glob("*.tgz"))
    assert [a.name for a in archives] == [f"{shas['amd64']}.tgz"]
    assert hashlib.sha256(archives[0].read_bytes()).hexdigest() == shas["amd64"]


@pytest.mark.parametrize(
    ("task", "packages", "reason", "says"),
    [
        (
            "missing-package",
            {"source": "hostPath", "kubernetesVersion": "v1.99.0"},
            "PackageNotFound",
            "no package for Kubernetes v1.99.0",
        ),
        (
            "wrong-sha",
            {
                "source": "url",
                "urls": {K8S_VERSION: {"amd64": {"url": "PLACEHOLDER", "sha256": "0" * 64}}},
            },
            "PackageChecksumMismatch",
            "expected SHA-256 " + "0" * 64,
        ),
    ],
)
def test_a_bad_package_fails_the_task_at_once_and_touches_no_machine(
    deployed: tuple[Sandbox, Any, dict[str, str]],
    task: str,
    packages: dict[str, Any],
    reason: str,
    says: str,
) -> None:
    sb, info, _ = deployed
    ip = sb.topology.intranet(1).machines[2 if task == "missing-package" else 3].ip
    if task == "wrong-sha":  # the real package's URL, with a wrong checksum
        real = f"http://{CLOUD_IP}:{HTTP_PORT}/amd64/"
        name = next(p.name for p in (state_dir(sb.name) / "www" / "amd64").iterdir())
        packages["urls"][K8S_VERSION]["amd64"]["url"] = real + name
    apply_task(info, task, ip, packages)
    try:
        failed = wait_for(lambda: phase_of(info, task, "failed"), f"task {task} to fail", 180)
    except AssertionError:
        print(explain(info, task))
        raise
    status = failed["status"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", reason), ready
    assert says in ready["message"]
    assert "BackoffLimitExceeded" not in json.dumps(status)
    (entry,) = status["machines"].values()
    assert entry["phase"] == "failed"
    assert entry["attempts"] == 1  # at once: no second round
    assert entry["lastError"].startswith(f"{reason}: ")
    said = [e for e in events(info, task) if e["reason"] == reason]
    assert len(said) == 1, [e["reason"] for e in events(info, task)]
    assert said[0]["type"] == "Warning"
    assert says in said[0]["message"]
    # no machine touched: the job never logged in, so never made its work directory
    assert not work_dir(sb, ip).exists()
    print(f"{task}: {ready['message']}")
