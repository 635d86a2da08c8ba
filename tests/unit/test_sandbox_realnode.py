"""The real nodes' configuration files (pure): the facts found on these machines
(issue 14) that containerd, the kubelet and the CNI bridge need to run here."""

from __future__ import annotations

import json
import tomllib

import yaml

from penetrator_dev.sandbox import kubeletnode, realnode
from penetrator_dev.sandbox.realnode import RealNode

NODE = RealNode("proxy-2", "10.10.0.2", "pn-p2", 2)


def test_containerd_is_private_to_its_node_and_runs_in_this_vm() -> None:
    cfg = tomllib.loads(realnode.containerd_config("pn", "proxy-2"))
    d = str(realnode.node_dir("pn", "proxy-2"))
    assert cfg["root"].startswith(d)
    assert cfg["state"].startswith(d)
    assert cfg["grpc"]["address"] == str(realnode.socket_path("pn", "proxy-2"))
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    # no CAP_SYS_RESOURCE in the VM's bounding set: runc may not raise oom_score_adj
    assert cri["restrict_oom_score_adj"] is True
    assert cri["disable_apparmor"] is True
    assert cri["sandbox_image"] == kubeletnode.PAUSE_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    assert runc["Root"].startswith(d)


def test_kubelet_config_for_cgroup_v1_and_its_own_cgroup_root() -> None:
    cfg = yaml.safe_load(realnode.kubelet_config("pn", NODE, realnode.node_dir("pn", "x")))
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["failCgroupV1"] is False
    assert cfg["failSwapOn"] is False
    assert cfg["cgroupRoot"] == "/penetrator-sandbox-pn/proxy-2"
    assert cfg["address"] == NODE.ip
    assert cfg["authentication"]["webhook"]["enabled"] is True
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["imageGCHighThresholdPercent"] == 100  # the imported images stay


def test_each_node_has_its_own_pod_subnet() -> None:
    cni = json.loads(realnode.cni_config(NODE))
    bridge = cni["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24"}]]
    assert bridge["ipMasq"] is True
    assert RealNode("control-plane", "172.31.0.1", "pn-cloud", 0).pod_cidr == "10.244.0.0/24"


def test_the_kubernetes_service_goes_to_the_apiserver() -> None:
    rules = realnode.service_ruleset("172.31.0.1", 6443)
    assert "ip daddr 10.96.0.1 tcp dport 443 dnat to 172.31.0.1:6443" in rules
    assert "hook prerouting" in rules
    assert "hook output" in rules
