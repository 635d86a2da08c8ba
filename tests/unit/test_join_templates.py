"""penetrator.api.templates: each ready-made template, rendered for one machine,
uses only its tool's documented flags (the sets below, with where they are
documented), and no command line holds the token."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from penetrator.api.jobconfig import JobConfig
from penetrator.api.templates import (
    DEFAULT_JOIN_TEMPLATE,
    K3S_CONFIG_PATH,
    TOKEN_ARG,
    WRAPPER_SCRIPT,
    JoinTemplate,
    named_template,
)
from penetrator.job.template import RenderedInstall, command_words, render_install

HASH = "sha256:" + "ab" * 32
TOKEN = "abcdef.0123456789abcdef"
PKG = "/w/pkg/x"

# SuperEdge edgeadm join: superedge/edgeadm pkg/util/kubeadm/join.go (joinConfigFlags,
# joinInstallHAFlag, initContainerRuntimeFlags, addJoinConfigFlags, addJoinOtherFlags,
# the kubeadm option names of k8s.io/kubernetes cmd/kubeadm/app/cmd/options), the
# root's flags in cmd/edgeadm/app/server.go; usage in superedge/superedge README.md
# ("./edgeadm join <Master ...>:Port --token xxxx --discovery-token-ca-cert-hash
# sha256:xxxxxxxxxx --install-pkg-path ...") and pkg/penetrator/job/script/addnode.sh.
EDGEADM_JOIN_FLAGS = {
    "install-pkg-path", "pod-infra-container-image", "default-ha", "interface", "runtime",
    "ignore-runtime", "node-name", "certificate-key", "apiserver-advertise-address",
    "apiserver-bind-port", "discovery-token", "discovery-token-ca-cert-hash",
    "discovery-token-unsafe-skip-ca-verification", "discovery-file", "tls-bootstrap-token",
    "cri-socket", "config", "ignore-preflight-errors", "token", "control-plane", "patches",
    "skip-phases", "enable-edge", "worker-path", "kubeconfig",
}  # fmt: skip
# edgeadm reset: superedge/edgeadm pkg/util/kubeadm/reset.go (cert-dir, force/-f,
# kubeconfig, ignore-preflight-errors).
EDGEADM_RESET_FLAGS = {"cert-dir", "force", "kubeconfig", "ignore-preflight-errors"}

# kubeadm join / reset: kubernetes/website content/en/docs/reference/setup-tools/kubeadm/
# generated/kubeadm_join.md and kubeadm_reset.md.
KUBEADM_JOIN_FLAGS = {
    "apiserver-advertise-address", "apiserver-bind-port", "certificate-key", "config",
    "control-plane", "cri-socket", "discovery-file", "discovery-token",
    "discovery-token-ca-cert-hash", "discovery-token-unsafe-skip-ca-verification", "dry-run",
    "help", "ignore-preflight-errors", "node-name", "patches", "skip-phases",
    "tls-bootstrap-token", "token", "rootfs",
}  # fmt: skip
KUBEADM_RESET_FLAGS = {
    "cert-dir", "cleanup-tmp-dir", "config", "cri-socket", "dry-run", "force", "help",
    "ignore-preflight-errors", "kubeconfig", "rootfs", "skip-phases",
}  # fmt: skip
# The flags kubeadm lets through beside --config (k8s.io/kubernetes cmd/kubeadm/app/apis/
# kubeadm/validation/validation.go, isAllowedFlag; plus any "skip-*").
KUBEADM_WITH_CONFIG = {
    "config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name",
    "kubeconfig-dir", "upload-certs", "print-join-command", "rootfs", "v", "log-file",
}  # fmt: skip
# JoinConfiguration kubeadm.k8s.io/v1beta4: kubernetes/website content/en/docs/reference/
# config-api/kubeadm-config.v1beta4.md (k8s.io/kubernetes cmd/kubeadm/app/apis/kubeadm/
# v1beta4/types.go).
JOIN_CONFIGURATION = {
    "apiVersion", "kind", "dryRun", "nodeRegistration", "caCertPath", "discovery",
    "controlPlane", "skipPhases", "patches", "timeouts",
}  # fmt: skip
DISCOVERY = {"bootstrapToken", "file", "tlsBootstrapToken"}
BOOTSTRAP_TOKEN_DISCOVERY = {
    "token", "apiServerEndpoint", "caCertHashes", "unsafeSkipCAVerification",
}  # fmt: skip
NODE_REGISTRATION = {
    "name", "criSocket", "taints", "kubeletExtraArgs", "ignorePreflightErrors",
    "imagePullPolicy", "imagePullSerial",
}  # fmt: skip

# k3s agent: docs.k3s.io/cli/agent (every flag is also a key of the configuration file,
# docs.k3s.io/installation/configuration#configuration-file, default
# /etc/rancher/k3s/config.yaml); --token-file/K3S_TOKEN_FILE, --server/K3S_URL,
# --node-name/K3S_NODE_NAME.
K3S_AGENT_FLAGS = {
    "config", "debug", "v", "vmodule", "log", "alsologtostderr", "token", "token-file",
    "server", "bind-address", "data-dir", "node-name", "with-node-id", "node-label",
    "node-taint", "image-credential-provider-bin-dir", "image-credential-provider-config",
    "protect-kernel-defaults", "selinux", "lb-server-port", "docker",
    "container-runtime-endpoint", "pause-image", "snapshotter", "private-registry",
    "node-ip", "node-external-ip", "resolv-conf", "flannel-iface", "flannel-conf",
    "flannel-cni-conf-dir", "kubelet-arg", "kube-proxy-arg", "rootless", "prefer-bundled-bin",
    "vpn-auth", "vpn-auth-file", "disable-apiserver-lb", "airgap-extra-registry",
}  # fmt: skip
# install.sh: docs.k3s.io/reference/env-variables.
K3S_INSTALL_ENV = {
    "INSTALL_K3S_SKIP_DOWNLOAD", "INSTALL_K3S_SYMLINK", "INSTALL_K3S_SKIP_ENABLE",
    "INSTALL_K3S_SKIP_START", "INSTALL_K3S_VERSION", "INSTALL_K3S_BIN_DIR",
    "INSTALL_K3S_BIN_DIR_READ_ONLY", "INSTALL_K3S_SYSTEMD_DIR", "INSTALL_K3S_EXEC",
    "INSTALL_K3S_NAME", "INSTALL_K3S_TYPE", "INSTALL_K3S_SELINUX_WARN",
    "INSTALL_K3S_SKIP_SELINUX_RPM", "INSTALL_K3S_CHANNEL_URL", "INSTALL_K3S_CHANNEL",
    "K3S_URL", "K3S_TOKEN", "K3S_TOKEN_FILE", "K3S_NODE_NAME",
}  # fmt: skip

# KubeEdge keadm join: kubeedge/kubeedge keadm/cmd/keadm/app/cmd/edge/join.go
# (AddJoinOtherFlags; --cloudcore-ipport is required); reset: reset_others.go
# (`keadm reset edge`, addResetFlags).
KEADM_JOIN_FLAGS = {
    "kubeedge-version", "cgroupdriver", "certpath", "cloudcore-ipport", "runtimetype",
    "edgenode-name", "remote-runtime-endpoint", "token", "certport", "tarballpath", "labels",
    "with-mqtt", "image-repository",
}  # fmt: skip
KEADM_RESET_FLAGS = {"force", "remote-runtime-endpoint", "pre-run", "post-run"}

# OpenYurt yurtadm join: openyurtio/openyurt pkg/yurtadm/cmd/join/join.go
# (addJoinConfigFlags); reset: pkg/yurtadm/cmd/reset/reset.go (AddResetFlags).
YURTADM_JOIN_FLAGS = {
    "token", "node-type", "node-name", "namespace", "cri-socket", "organizations",
    "pause-image", "yurthub-image", "discovery-token-ca-cert-hash",
    "discovery-token-unsafe-skip-ca-verification", "ignore-preflight-errors", "node-labels",
    "kubernetes-resource-server", "yurthub-server-addr", "reuse-cni-bin",
}  # fmt: skip
YURTADM_RESET_FLAGS = {"cert-dir", "force", "cri-socket", "ignore-preflight-errors"}


def render(name: JoinTemplate | str, work_dir: str = "/var/lib/penetrator") -> RenderedInstall:
    cfg = JobConfig.model_validate(
        {
            "machines": [{"name": "edge-a", "ip": "10.10.1.1"}],
            "taskLabel": "nodes-abc123",
            "apiServer": "172.31.0.1:6443",
            "caCertHash": HASH,
            "packages": {"amd64": "/pkg/amd64.tgz"},
            "template": named_template(name),
            "workDir": work_dir,
        }
    )
    return render_install(cfg, cfg.machines[0], "amd64", PKG, {"token": TOKEN})


def tool_argv(line: str) -> list[str]:
    """What the tool itself runs with: through the token wrapper, its argv with the
    token where TOKEN_ARG stands."""
    argv = shlex.split(line)
    if argv[:3] == ["sh", "-c", WRAPPER_SCRIPT]:
        tool, _token_file, *args = argv[3:]
        return [tool, *(TOKEN if a == TOKEN_ARG else a for a in args)]
    return argv


def flags(args: list[str]) -> dict[str, str | None]:
    """--name value / --name=value pairs (a flag followed by another flag or nothing
    is a switch); positional arguments are left out."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                out[name] = args[i + 1]
                i += 1
            else:
                out[name] = None
        i += 1
    return out


@pytest.mark.parametrize("name", list(JoinTemplate))
def test_every_template_keeps_the_token_out_of_command_lines(name: JoinTemplate) -> None:
    out = render(name)
    assert out.join
    for line in [*out.reset, *out.join]:
        assert TOKEN not in line
    holders = [f for f in out.files if TOKEN in f.content]
    assert len(holders) == 1  # in exactly one 0600 file
    assert all(f.path.startswith("/var/lib/penetrator/") for f in out.files)


def test_the_default_is_edgeadm() -> None:
    assert DEFAULT_JOIN_TEMPLATE == JoinTemplate.EDGEADM
    plain = JobConfig.from_plan(
        {"edge-a": "10.10.1.1"}, taskLabel="t", apiServer="172.31.0.1:6443", caCertHash=HASH,
        packages={"amd64": "/pkg/amd64.tgz"},
    )  # fmt: skip
    assert plain.template == named_template("edgeadm")


def test_edgeadm_is_the_originals_command_line() -> None:
    out = render(JoinTemplate.EDGEADM)
    (reset,) = out.reset
    assert shlex.split(reset) == [f"{PKG}/edgeadm", "reset", "--force"]
    assert set(flags(shlex.split(reset))) <= EDGEADM_RESET_FLAGS
    (join,) = out.join
    argv = tool_argv(join)
    assert argv == [
        f"{PKG}/edgeadm", "join", "172.31.0.1:6443", "--token", TOKEN,
        "--discovery-token-ca-cert-hash", HASH, "--node-name", "edge-a",
        "--install-pkg-path", f"{PKG}/kube-linux-amd64-v1.37.2.tar.gz",
    ]  # fmt: skip
    assert set(flags(argv[2:])) <= EDGEADM_JOIN_FLAGS
    (f,) = out.files
    assert (f.path, f.content) == ("/var/lib/penetrator/token_file", TOKEN)


def test_kubeadm_reads_everything_from_its_join_configuration() -> None:
    out = render(JoinTemplate.KUBEADM)
    (reset,) = out.reset
    assert shlex.split(reset) == ["kubeadm", "reset", "--force"]
    assert set(flags(shlex.split(reset))) <= KUBEADM_RESET_FLAGS
    (join,) = out.join
    argv = shlex.split(join)
    assert argv == ["kubeadm", "join", "--config", "/var/lib/penetrator/join_config"]
    used = set(flags(argv[2:]))
    assert used <= KUBEADM_JOIN_FLAGS
    assert all(f in KUBEADM_WITH_CONFIG or f.startswith("skip-") for f in used)
    (f,) = out.files
    doc = json.loads(f.content)
    assert set(doc) <= JOIN_CONFIGURATION
    assert (doc["apiVersion"], doc["kind"]) == ("kubeadm.k8s.io/v1beta4", "JoinConfiguration")
    assert set(doc["discovery"]) <= DISCOVERY
    assert doc["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "172.31.0.1:6443",
        "token": TOKEN,
        "caCertHashes": [HASH],
    }
    assert set(doc["discovery"]["bootstrapToken"]) <= BOOTSTRAP_TOKEN_DISCOVERY
    assert doc["nodeRegistration"] == {"name": "edge-a"}
    assert set(doc["nodeRegistration"]) <= NODE_REGISTRATION


def test_k3s_agent_reads_its_token_from_its_configuration_file() -> None:
    out = render(JoinTemplate.K3S)
    (f,) = out.files
    config = json.loads(f.content)  # JSON is YAML: k3s reads it as its config.yaml
    assert config == {"server": "https://172.31.0.1:6443", "token": TOKEN, "node-name": "edge-a"}
    assert set(config) <= K3S_AGENT_FLAGS
    place, binary, installer = (shlex.split(line) for line in out.join)
    assert place == ["install", "-D", "-m", "0600", f.path, K3S_CONFIG_PATH]
    assert binary == ["install", "-m", "0755", f"{PKG}/k3s", "/usr/local/bin/k3s"]
    assert installer[0] == "env"
    assert installer[-2:] == ["sh", f"{PKG}/install.sh"]
    env = dict(a.split("=", 1) for a in installer[1:-2])
    assert set(env) <= K3S_INSTALL_ENV
    assert env == {"INSTALL_K3S_SKIP_DOWNLOAD": "true", "INSTALL_K3S_EXEC": "agent"}
    (reset,) = out.reset
    assert "k3s-agent-uninstall.sh" in reset


def test_keadm_joins_cloudcore_with_documented_flags() -> None:
    out = render(JoinTemplate.KEADM)
    (reset,) = out.reset
    argv = shlex.split(reset)
    assert argv[:3] == [f"{PKG}/keadm", "reset", "edge"]
    assert set(flags(argv[3:])) <= KEADM_RESET_FLAGS
    (join,) = out.join
    argv = tool_argv(join)
    assert argv[:2] == [f"{PKG}/keadm", "join"]
    used = flags(argv[2:])
    assert set(used) <= KEADM_JOIN_FLAGS
    assert used == {
        "cloudcore-ipport": "172.31.0.1:10000",
        "token": TOKEN,
        "edgenode-name": "edge-a",
        "tarballpath": PKG,
    }


def test_yurtadm_joins_as_an_edge_node_with_documented_flags() -> None:
    out = render(JoinTemplate.YURTADM)
    (reset,) = out.reset
    argv = shlex.split(reset)
    assert argv[:2] == [f"{PKG}/yurtadm", "reset"]
    assert set(flags(argv[2:])) <= YURTADM_RESET_FLAGS
    (join,) = out.join
    argv = tool_argv(join)
    assert argv[:3] == [f"{PKG}/yurtadm", "join", "172.31.0.1:6443"]
    used = flags(argv[3:])
    assert set(used) <= YURTADM_JOIN_FLAGS
    assert used == {
        "token": TOKEN,
        "discovery-token-ca-cert-hash": HASH,
        "node-name": "edge-a",
        "node-type": "edge",
    }


def test_unknown_template_name_is_refused() -> None:
    with pytest.raises(ValueError, match="ansible"):
        named_template("ansible")


def test_the_wrapper_hands_the_file_token_to_the_tool(tmp_path: Path) -> None:
    """Run the rendered edgeadm line with sh and a stand-in that prints its argv:
    the token reaches --token, and every other argument arrives unchanged."""
    out = render(JoinTemplate.EDGEADM, work_dir=str(tmp_path))
    for f in out.files:
        Path(f.path).write_text(f.content)
    pkg = Path(PKG)
    line = out.join[0].replace(f"{PKG}/edgeadm", str(tmp_path / "edgeadm"), 1)
    tool = tmp_path / "edgeadm"
    tool.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    tool.chmod(0o755)
    got = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    assert got.stdout.splitlines() == [
        "join", "172.31.0.1:6443", "--token", TOKEN, "--discovery-token-ca-cert-hash", HASH,
        "--node-name", "edge-a", "--install-pkg-path",
        f"{pkg}/kube-linux-amd64-v1.37.2.tar.gz",
    ]  # fmt: skip


def test_the_wrapper_fails_without_its_token_file(tmp_path: Path) -> None:
    out = render(JoinTemplate.EDGEADM, work_dir=str(tmp_path))
    line = out.join[0].replace(f"{PKG}/edgeadm", "/bin/echo", 1)
    got = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=False)
    assert got.returncode != 0
    assert got.stdout == ""


def test_errors_name_the_wrapped_tool_not_the_shell() -> None:
    (join,) = render(JoinTemplate.EDGEADM).join
    assert command_words(join) == ["edgeadm", "join"]
    (join,) = render(JoinTemplate.KUBEADM).join
    assert command_words(join) == ["kubeadm", "join"]
    assert command_words("rm -f -- /x") == ["rm", "-f"]
    assert command_words("echo 'unbalanced") == ["echo", "'unbalanced"]
