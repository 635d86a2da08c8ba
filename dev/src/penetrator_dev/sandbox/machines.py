"""Edge machines: credentials, per-machine state directories, and real OpenSSH
sshd processes, each in a private mount namespace so that the host's root
password, /etc/shadow and /root are never touched.

Every sshd gets a generated /etc/passwd and /etc/shadow (bind-mounted in its
own mount namespace): root's password is the sandbox's, root's shell is
``edge-shell``, a tiny /bin/sh wrapper that finds the machine from the local
address of the session (``$SSH_CONNECTION``) and exports::

    EDGE_MACHINE_IP    the machine's address
    EDGE_MACHINE_DIR   its own state directory (machine_state_dir on the host)
    HOME               $EDGE_MACHINE_DIR/home (the session starts there)
    EDGE_INTRANET, EDGE_SANDBOX
    PATH               $EDGE_MACHINE_DIR/bin first: a `uname` shim lives there
                       when the machine is aarch64, and the stand-in `kubeadm`

With the marker ``$EDGE_MACHINE_DIR/no-downloader`` (fault no-downloader) the
session runs in a mount namespace of its own where every curl and wget on PATH
is covered by /dev/null: ``command -v curl`` finds nothing and the binaries
cannot be run, on that machine only (SFTP, served inside sshd, still works).

so one sshd serves a thousand addresses and each still is a machine of its own.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from penetrator_dev.sandbox.network import exec_argv
from penetrator_dev.sandbox.state import (
    INSTALL_FAILS_MARKER,
    ProcessRecord,
    start_ticks,
    state_dir,
)
from penetrator_dev.sandbox.topology import (
    NEW_HOST_KEY_PORT,
    SSH_PORT,
    WRONG_PASSWORD_PORT,
    Intranet,
    Machine,
    MachineHost,
    Topology,
)

SSHD = "/usr/sbin/sshd"

EDGE_SHELL = r"""#!/bin/sh
# penetrator sandbox: root's login shell on every edge machine. The machine is
# the local address this session came in on (field 3 of $SSH_CONNECTION).
l=${SSH_CONNECTION#* }; l=${l#* }; l=${l%% *}
d="$EDGE_MACHINES/$l"
if [ ! -d "$d" ]; then echo "edge-shell: no machine at $l" >&2; exit 254; fi
EDGE_MACHINE_IP=$l
EDGE_MACHINE_DIR=$d
HOME=$d/home
PATH="$d/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export EDGE_MACHINE_IP EDGE_MACHINE_DIR HOME PATH
cd "$HOME" 2>/dev/null || cd /
if [ -f "$d/node/holder.pid" ]; then
  # a real-join machine (realjoin.py): the session lives in the machine's own mount
  # namespace, with its /etc/kubernetes, /var/lib/kubelet, containerd socket...
  exec nsenter --mount=/proc/$(cat "$d/node/holder.pid")/ns/mnt -- /bin/sh -c \
    'cd "$HOME" 2>/dev/null || cd /; exec /bin/sh "$@"' edge-shell "$@"
fi
if [ -e "$d/no-downloader" ]; then
  # fault no-downloader: this session's own mount namespace has no curl, no wget
  exec unshare --mount --propagation private -- /bin/sh -c '
    IFS=:
    for p in $PATH; do
      for t in curl wget; do
        if [ -f "$p/$t" ]; then
          mount --bind /dev/null "$p/$t" || { echo "edge-shell: cannot hide $p/$t" >&2; exit 253; }
        fi
      done
    done
    unset IFS
    exec /bin/sh "$@"' edge-shell "$@"
fi
exec /bin/sh "$@"
"""

UNAME_SHIM = r"""#!/bin/sh
# penetrator sandbox: this machine answers {arch}
case "$1" in
  -m|-p|-i|--machine|--processor|--hardware-platform) echo {arch} ;;
  *) /bin/uname "$@" | sed 's/x86_64/{arch}/g' ;;
esac
"""

KUBEADM_STAND_IN = r"""#!/bin/sh
# penetrator sandbox: a STAND-IN for kubeadm, not kubeadm. The penetrator template
# "kubeadm" expects kubeadm (with a kubelet and a container runtime) already on the
# machine; sandbox machines have none, so this runs the sandbox's join program (the
# one its edgeadm package runs), which takes kubeadm's `join --config FILE` and
# `reset --force` and joins at the API level. Journal lines say tool "kubeadm".
EDGE_JOIN_TOOL=kubeadm exec {python} -m penetrator_dev.sandbox.join "$@"
"""


@dataclass(frozen=True)
class Credentials:
    password_file: Path
    private_key: Path
    public_key: Path
    authorized_keys: Path


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def new_ed25519() -> tuple[bytes, str]:
    """(OpenSSH private key PEM, "ssh-ed25519 AAAA..." public key)."""
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return priv, pub.decode()


def hash_password(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def ssh_dir(name: str) -> Path:
    return state_dir(name) / "ssh"


def credentials(name: str) -> Credentials:
    d = ssh_dir(name)
    return Credentials(
        d / "password", d / "id_ed25519", d / "id_ed25519.pub", d / "authorized_keys"
    )


def known_hosts_file(name: str, intranet: int) -> Path:
    return ssh_dir(name) / f"known_hosts-{intranet}"


def write_credentials(name: str) -> Credentials:
    """Client key pair + root password (files 0600); passwd/shadow for the sshds.
    Kept if they exist (up is idempotent)."""
    c = credentials(name)
    if not (c.password_file.exists() and c.private_key.exists()):
        priv, pub = new_ed25519()
        _write(c.private_key, priv, 0o600)
        _write(c.public_key, pub + f" penetrator-sandbox-{name}\n", 0o644)
        _write(c.authorized_keys, pub + f" penetrator-sandbox-{name}\n", 0o644)
        _write(c.password_file, secrets.token_urlsafe(12) + "\n", 0o600)
    password = c.password_file.read_text().strip()
    etc = state_dir(name) / "etc"
    home = state_dir(name) / "root"
    home.mkdir(parents=True, exist_ok=True)
    shell = state_dir(name) / "bin" / "edge-shell"
    _write(shell, EDGE_SHELL, 0o755)
    passwd = _passwd(str(home), str(shell))
    _write(etc / "passwd", passwd, 0o644)
    users = [line.split(":", 1)[0] for line in passwd.splitlines() if line]
    _write(etc / "shadow", _shadow(users, hash_password(password)), 0o600)
    _write(etc / "shadow-wrong", _shadow(users, hash_password(secrets.token_hex(16))), 0o600)
    return c


def _passwd(home: str, shell: str) -> str:
    out = [f"root:x:0:0:root:{home}:{shell}"]
    for line in Path("/etc/passwd").read_text().splitlines():
        if line and not line.startswith("root:"):
            out.append(line)
    return "\n".join(out) + "\n"


def _shadow(users: list[str], root_hash: str) -> str:
    return "".join(f"{u}:{root_hash if u == 'root' else '*'}:20000:0:99999:7:::\n" for u in users)


# -------------------------------------------------------------- machine dirs


def prepare_machine_dirs(name: str, topo: Topology, arches: dict[str, str]) -> None:
    for m in topo.machines():
        write_machine_dir(name, m, arches.get(m.key, m.arch))


def write_machine_dir(name: str, m: Machine, arch: str) -> None:
    d = state_dir(name) / "machines" / str(m.intranet) / m.ip
    (d / "home").mkdir(parents=True, exist_ok=True)
    shim = d / "bin" / "uname"
    if arch != "x86_64":
        _write(shim, UNAME_SHIM.replace("{arch}", arch), 0o755)
    elif shim.exists():
        shim.unlink()
    python = shlex.quote(sys.executable)
    _write(d / "bin" / "kubeadm", KUBEADM_STAND_IN.replace("{python}", python), 0o755)


def _set_marker(name: str, m: Machine, marker_name: str, text: str | None) -> None:
    marker = state_dir(name) / "machines" / str(m.intranet) / m.ip / marker_name
    if text is not None:
        _write(marker, text)
    elif marker.exists():
        marker.unlink()


def set_install_fails(name: str, m: Machine, on: bool) -> None:
    text = "penetrator-dev sandbox fault: an install on this machine must fail\n"
    _set_marker(name, m, INSTALL_FAILS_MARKER, text if on else None)


NO_DOWNLOADER_MARKER = "no-downloader"
"""In the machine's state directory: its sessions see no curl and no wget
(read by edge-shell)."""


def set_no_downloader(name: str, m: Machine, on: bool) -> None:
    text = "penetrator-dev sandbox fault: sessions on this machine see no curl and no wget\n"
    _set_marker(name, m, NO_DOWNLOADER_MARKER, text if on else None)


# --------------------------------------------------------------------- sshd

ROLE_MAIN = "sshd"
ROLE_WRONG_PASSWORD = "sshd-wrong-password"  # noqa: S105 (a role, no secret)
ROLE_NEW_HOST_KEY = "sshd-new-host-key"
SSHD_ROLES = {
    ROLE_MAIN: SSH_PORT,
    ROLE_WRONG_PASSWORD: WRONG_PASSWORD_PORT,
    ROLE_NEW_HOST_KEY: NEW_HOST_KEY_PORT,
}


def host_key_path(name: str, namespace: str, role: str) -> Path:
    suffix = "-new" if role == ROLE_NEW_HOST_KEY else ""
    return state_dir(name) / "hostkeys" / f"{namespace}{suffix}"


def ensure_host_key(name: str, namespace: str, role: str) -> str:
    """The host key of an sshd (created once); returns the public key line."""
    path = host_key_path(name, namespace, role)
    pub = path.with_name(path.name + ".pub")
    if not path.exists() or not pub.exists():
        priv, pubtext = new_ed25519()
        _write(path, priv, 0o600)
        _write(pub, pubtext + "\n")
    return pub.read_text().strip()


def sshd_config(name: str, it: Intranet, host: MachineHost, role: str) -> str:
    sd = state_dir(name)
    c = credentials(name)
    return "\n".join(
        [
            f"# penetrator sandbox {name}: {role} of {host.namespace}",
            f"Port {SSHD_ROLES[role]}",
            "ListenAddress 0.0.0.0",
            f"HostKey {host_key_path(name, host.namespace, role)}",
            "PidFile none",
            "PermitRootLogin yes",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            "StrictModes no",
            f"AuthorizedKeysFile {c.authorized_keys}",
            "MaxStartups 2000:30:4000",
            "MaxSessions 64",
            "LoginGraceTime 60",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "PermitUserEnvironment no",
            "Subsystem sftp internal-sftp",
            f"SetEnv EDGE_SANDBOX={name} EDGE_INTRANET={it.index} "
            f"EDGE_MACHINES={sd / 'machines' / str(it.index)}",
            "LogLevel ERROR",
            "",
        ]
    )


def start_sshd(name: str, it: Intranet, host: MachineHost, role: str) -> ProcessRecord:
    """Start one sshd in `host`'s namespace, in a private mount namespace with
    the sandbox's passwd/shadow. Returns at once; see wait_listening."""
    sd = state_dir(name)
    ensure_host_key(name, host.namespace, role)
    conf = sd / "sshd" / f"{host.namespace}-{role}.conf"
    _write(conf, sshd_config(name, it, host, role))
    shadow = sd / "etc" / ("shadow-wrong" if role == ROLE_WRONG_PASSWORD else "shadow")
    log = sd / "logs" / f"{host.namespace}-{role}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    script = (
        # many concurrent startups need file descriptors (CI's soft limit is often 1024)
        "ulimit -n $(ulimit -Hn) 2>/dev/null; "
        'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/shadow && '
        f'exec {SSHD} -D -e -f "$3"'
    )
    argv = exec_argv(
        host.namespace,
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "edge-sshd",
            str(sd / "etc" / "passwd"),
            str(shadow),
            str(conf),
        ],
    )
    with open(log, "ab") as logf:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True
        )
    ticks = start_ticks(p.pid) or 0
    return ProcessRecord(role=role, namespace=host.namespace, pid=p.pid, start_ticks=ticks)


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on `port` in the network namespace of `pid`."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    want = f":{port:04X}"
    for line in lines:
        f = line.split()
        if len(f) > 3 and f[1].endswith(want) and f[3] == "0A":
            return True
    return False


def wait_listening(
    procs: list[tuple[ProcessRecord, int]], timeout: float = 60, log_dir: Path | None = None
) -> None:
    """Wait (bounded) until every (process, port) listens; raise naming the
    ones that did not (with the end of their log)."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [(r, port) for r, port in pending if not listening(r.pid, port)]
        if not pending:
            return
        dead = [(r, port) for r, port in pending if start_ticks(r.pid) is None]
        if dead or time.monotonic() > deadline:
            bad = dead or pending
            detail = ""
            if log_dir is not None:
                r = bad[0][0]
                log = log_dir / f"{r.namespace}-{r.role}.log"
                if log.exists():
                    detail = ": " + log.read_text()[-500:].strip()
            what = ", ".join(f"{r.role} in {r.namespace}" for r, _ in bad[:5])
            raise RuntimeError(f"not listening ({len(bad)}): {what}{detail}")
        time.sleep(0.05)
