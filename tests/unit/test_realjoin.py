"""The pure parts of the sandbox's real-join machines (realjoin.py): which machines,
and what their containerd, CNI network and kubelet get."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from penetrator_dev.sandbox import kubeletnode, realjoin
from penetrator_dev.sandbox.topology import Layout, SandboxSpec, build_topology


def test_the_first_machines_of_intranet_1_join_for_real() -> None:
    topo = build_topology(SandboxSpec(name="t", machines=4, intranets=2, real_join=2))
    assert [m.ip for m in realjoin.real_join_machines(topo, 2)] == ["10.10.1.1", "10.10.1.2"]
    assert realjoin.real_join_machines(topo, 0) == []


def test_real_join_is_checked_before_anything_starts() -> None:
    with pytest.raises(ValueError, match=r"real_join must be 0\.\.3"):
        SandboxSpec(name="t", machines=3, real_join=4).validate()
    topo = build_topology(SandboxSpec(name="t", machines=3, layout=Layout.ADDRESSES))
    with pytest.raises(realjoin.RealJoinError, match="--layout netns"):
        realjoin.real_join_machines(topo, 1)


def test_containerd_is_private_and_fits_the_vm() -> None:
    conf = tomllib.loads(realjoin.containerd_config(Path("/sd/node")))
    assert conf["root"] == "/sd/node/containerd/root"
    assert conf["grpc"]["address"] == "/run/containerd/containerd.sock"
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE in the VM
    assert cri["disable_apparmor"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == kubeletnode.PAUSE_IMAGE
    assert cri["cni"]["conf_dir"] == "/sd/node/cni"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_each_machine_has_its_own_pod_subnet_cgroup_and_node_ip() -> None:
    topo = build_topology(SandboxSpec(name="t", machines=2, real_join=2))
    a, b = topo.intranet(1).machines
    subnets = {json.loads(realjoin.cni_config(m))["plugins"][0]["ipam"]["subnet"] for m in (a, b)}
    assert len(subnets) == 2
    env = realjoin.kubelet_env("t", a)
    assert "--node-ip=10.10.1.1" in env
    assert f"--cgroup-root=/penetrator-sandbox-t/{realjoin.cgroup_node(a)}" in env
    assert realjoin.cgroup_node(a) != realjoin.cgroup_node(b)


def test_the_machine_mounts_cover_what_kubelets_would_share() -> None:
    script = realjoin.mounts_script(Path("/sd/node"))
    for target in ("/etc/kubernetes", "/var/lib/kubelet", "/run/containerd", "/var/log"):
        assert f" {target}\n" in script
    assert "/etc/resolv.conf" in script
    assert script.endswith("exec sleep infinity")
