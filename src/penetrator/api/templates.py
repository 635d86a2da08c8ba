"""The ready-made install templates, chosen per task by name (``spec.joinTemplate``).

Each one keeps the bootstrap token out of every command line we send, by the
safest means its tool allows (the token is ``{token}``, which the job only writes
into 0600 files, see ``penetrator.api.jobconfig``):

- ``edgeadm`` (the default, SuperEdge's command line as the original ran it):
  edgeadm reads the token only from argv. Its ``--config`` is no way out: kubeadm's
  rule refuses ``--config`` together with ``--install-pkg-path`` (which edgeadm
  needs), and edgeadm's join deletes the ``--config`` file before reading it;
  ``--discovery-file`` (token in the kubeconfig) fails edgeadm's edge join in its
  lite-apiserver step, which needs token discovery's endpoint. So
  the token goes into a 0600 file and a fixed ``sh -c`` wrapper reads it and
  ``exec``s edgeadm: the token is in edgeadm's own argv on the machine while it
  runs, never in our SSH command, logs, Events or ConfigMaps.
- ``kubeadm``: a JoinConfiguration file (``--config``): never in argv.
- ``k3s``: k3s's own configuration file ``/etc/rancher/k3s/config.yaml`` (root
  only, read by the agent at every start): never in argv or the environment.
- ``keadm``, ``yurtadm``: like edgeadm, argv only, so the same wrapper.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from penetrator.api.jobconfig import InstallTemplate


class JoinTemplate(StrEnum):
    EDGEADM = "edgeadm"  # SuperEdge (the original's)
    KUBEADM = "kubeadm"
    K3S = "k3s"  # k3s agent
    KEADM = "keadm"  # KubeEdge
    YURTADM = "yurtadm"  # OpenYurt


DEFAULT_JOIN_TEMPLATE: Final = JoinTemplate.EDGEADM

TOKEN_ARG: Final = "@token@"  # noqa: S105 (a marker, not a secret)
"""In a wrapped argv: where the token read from the token file goes."""
TOKEN_FILE: Final = "token_file"  # noqa: S105 (a file name)
"""The file (``{token_file}`` in commands) holding just the token."""
K3S_CONFIG_PATH: Final = "/etc/rancher/k3s/config.yaml"

WRAPPER_SCRIPT: Final = (
    't=$(cat -- "$1") || exit 1; tool=$0; shift; '
    'for a in "$@"; do shift; if [ "$a" = ' + TOKEN_ARG + ' ]; then set -- "$@" "$t"; '
    'else set -- "$@" "$a"; fi; done; exec "$tool" "$@"'
)
"""``sh -c WRAPPER_SCRIPT TOOL TOKEN_FILE ARG...`` runs ``TOOL ARG...`` with
TOKEN_ARG replaced by the file's content. The script is fixed: the values are
positional parameters, never parsed by the shell."""


def token_wrapped(tool: str, args: list[str]) -> list[str]:
    """argv running ``tool args`` with the token (at TOKEN_ARG) read from {token_file}."""
    return ["sh", "-c", WRAPPER_SCRIPT, tool, "{" + TOKEN_FILE + "}", *args]


def _kubeadm_style(tool: str, *extra: str) -> InstallTemplate:
    """``tool reset --force``, then ``tool join <server> --token ...
    --discovery-token-ca-cert-hash ... --node-name ... EXTRA`` with the token read
    from its 0600 file (edgeadm and yurtadm take kubeadm's join flags)."""
    join = [
        "join",
        "{api_server}",
        "--token",
        TOKEN_ARG,
        "--discovery-token-ca-cert-hash",
        "{ca_cert_hash}",
        "--node-name",
        "{node_name}",
        *extra,
    ]
    return InstallTemplate(
        reset=[[tool, "reset", "--force"]],
        join=[token_wrapped(tool, join)],
        files={TOKEN_FILE: "{token}"},
    )


def _edgeadm() -> InstallTemplate:
    """`edgeadm join <server> --token ... --discovery-token-ca-cert-hash sha256:...
    --node-name ... --install-pkg-path ...` (compat.md), from the package."""
    kube_package = "{package_dir}/kube-linux-{arch}-{kubernetes_version}.tar.gz"
    return _kubeadm_style("{package_dir}/edgeadm", "--install-pkg-path", kube_package)


def _kubeadm() -> InstallTemplate:
    """kubeadm (with kubelet and a container runtime) installed on the machine."""
    return InstallTemplate(
        reset=[["kubeadm", "reset", "--force"]],
        join=[["kubeadm", "join", "--config", "{join_config}"]],
        files={
            "join_config": {
                "apiVersion": "kubeadm.k8s.io/v1beta4",
                "kind": "JoinConfiguration",
                "discovery": {
                    "bootstrapToken": {
                        "apiServerEndpoint": "{api_server}",
                        "token": "{token}",
                        "caCertHashes": ["{ca_cert_hash}"],
                    }
                },
                "nodeRegistration": {"name": "{node_name}"},
            }
        },
    )


def _k3s() -> InstallTemplate:
    """The package holds ``k3s`` and k3s's ``install.sh``; the agent runs as the
    ``k3s-agent`` service with its settings in K3S_CONFIG_PATH."""
    return InstallTemplate(
        reset=[
            [
                "sh",
                "-c",
                "if [ -x /usr/local/bin/k3s-agent-uninstall.sh ]; "
                "then exec /usr/local/bin/k3s-agent-uninstall.sh; fi",
            ]
        ],
        join=[
            ["install", "-D", "-m", "0600", "{k3s_config}", K3S_CONFIG_PATH],
            ["install", "-m", "0755", "{package_dir}/k3s", "/usr/local/bin/k3s"],
            [
                "env",
                "INSTALL_K3S_SKIP_DOWNLOAD=true",
                "INSTALL_K3S_EXEC=agent",
                "sh",
                "{package_dir}/install.sh",
            ],
        ],
        files={
            "k3s_config": {
                "server": "https://{api_server}",
                "token": "{token}",
                "node-name": "{node_name}",
            }
        },
    )


def _keadm() -> InstallTemplate:
    """KubeEdge's keadm from the package, which also holds the KubeEdge tarball;
    CloudCore on the API server's host at its default port 10000."""
    tool = "{package_dir}/keadm"
    return InstallTemplate(
        reset=[[tool, "reset", "edge", "--force"]],
        join=[
            token_wrapped(
                tool,
                [
                    "join",
                    "--cloudcore-ipport",
                    "{api_server_host}:10000",
                    "--token",
                    TOKEN_ARG,
                    "--edgenode-name",
                    "{node_name}",
                    "--tarballpath",
                    "{package_dir}",
                ],
            )
        ],
        files={TOKEN_FILE: "{token}"},
    )


def _yurtadm() -> InstallTemplate:
    """OpenYurt's yurtadm from the package, joining as an edge node."""
    return _kubeadm_style("{package_dir}/yurtadm", "--node-type", "edge")


_BUILDERS: Final = {
    JoinTemplate.EDGEADM: _edgeadm,
    JoinTemplate.KUBEADM: _kubeadm,
    JoinTemplate.K3S: _k3s,
    JoinTemplate.KEADM: _keadm,
    JoinTemplate.YURTADM: _yurtadm,
}


def named_template(name: JoinTemplate | str) -> InstallTemplate:
    """The ready-made template called ``name`` (ValueError for an unknown name)."""
    return _BUILDERS[JoinTemplate(name)]()
