"""Packages from a package image, for real (issue 13, 3a): on real nodes (kubelets on
containerd), penetrator deployed from deploy/penetrator.yaml with the settings
packages.source image, mount copy; the package image (built here with umoci: the
sandbox's edgeadm tarballs under /packages/<version>/<arch>/ and busybox-static as
``cp``) is imported into the proxy node's containerd. The seed's add example joins
its machine, and the archive on the machine is the package's, by its SHA-256.

``mount: volume`` (Kubernetes' ImageVolume) is not tested end to end: Debian's
containerd 1.6 cannot mount an image as a volume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import deploy_penetrator, operator_log_tail
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import K8S_VERSION, build_join_packages
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.packageimage import import_package_image, package_image
from penetrator_dev.sandbox.state import state_dir
from support import add_task, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
WORK_DIR = "penetrator"  # the sandbox's settings: relative to each machine's home


@pytest.fixture(scope="module")
def deployed(sandbox_factory: Any) -> Iterator[tuple[Sandbox, Any, dict[str, str]]]:
    """A real-nodes sandbox of one machine behind NAT, the package image in the proxy
    node's containerd, penetrator deployed with packages.source image (mount copy).
    Yields also arch -> SHA-256 of the packages."""
    sb = sandbox_factory(machines=1, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
        built = build_join_packages(state_dir(sb.name) / "packages")
        archive = package_image(K8S_VERSION, {a: p.path for a, p in built.items()})
        reference = import_package_image(sb.name, list(info.proxy_nodes.values()), archive)
        deploy_penetrator(
            sb.name,
            info,
            {
                "reconcile": {"pollInterval": 2, "backoffBase": 2, "startTimeout": 60},
                "job": {"timeouts": {"waitReady": 120}},
                "packages": {
                    "source": "image",
                    "image": {
                        "reference": reference,
                        "mount": "copy",
                        "pullPolicy": "IfNotPresent",
                    },
                },
            },
        )
        ssh = sb.status()["ssh"]
        info.kubectl(
            "-n", NS, "create", "secret", "generic", "login",
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        yield sb, info, {a: p.sha256 for a, p in built.items()}
    finally:
        down(sb.name)


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def ready(info: Any, name: str) -> Any:
    t = get(info, "nt", name)
    return t if t and (t.get("status") or {}).get("nodetaskStatus") == "ready" else None


def test_the_machine_joins_with_the_package_from_the_image(
    deployed: tuple[Sandbox, Any, dict[str, str]],
) -> None:
    sb, info, shas = deployed
    ip = sb.topology.intranet(1).machines[0].ip
    body = add_task("via-image", [ip], info.proxy_nodes[1])  # the seed's add example
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    try:
        done = wait_for(lambda: ready(info, "via-image"), "task via-image to be ready", 300)
    except AssertionError:
        print(operator_log_tail(info, 60))
        print(json.dumps(get(info, "nt", "via-image"), indent=1)[-3000:])
        print(json.dumps(get(info, "pods", "-n", NS), indent=1)[-6000:])
        raise
    assert done["status"]["joined"] == 1
    # the Job's pod copied the tree from the package image with its init container
    # (the kubelet's events outlive the Job, which the operator deletes when done)
    said = [
        e for e in get(info, "events", "-n", NS)["items"]
        if e["involvedObject"].get("fieldPath") == "spec.initContainers{packages}"
    ]  # fmt: skip
    assert any(e["reason"] == "Started" for e in said), [e["message"] for e in said]
    pulled = [e["message"] for e in said if e["reason"] == "Pulled"]
    assert pulled, [e["message"] for e in said]
    assert all("penetrator-sandbox-packages:" in m for m in pulled), pulled
    # the package on the machine is the image's, by its SHA-256
    archives = list((sb.machine_dir(1, ip) / "home" / WORK_DIR / "packages").glob("*.tgz"))
    assert [a.name for a in archives] == [f"{shas['amd64']}.tgz"]
    assert hashlib.sha256(archives[0].read_bytes()).hexdigest() == shas["amd64"]
