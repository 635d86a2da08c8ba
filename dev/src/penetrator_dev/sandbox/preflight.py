"""Checks before `up`: root, and every tool the sandbox runs, with the Debian
package that provides it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# tool -> Debian package (bookworm)
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "sshd": "openssh-server",
    "unshare": "util-linux",
    "mount": "mount",
    "sh": "dash",
    "sed": "sed",
}
APT_PACKAGES = ("iproute2", "nftables", "openssh-server", "util-linux", "mount")
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class PreflightError(RuntimeError):
    pass


def find_tool(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for d in SBIN_DIRS:
        p = Path(d) / tool
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return None


def missing_tools() -> dict[str, str]:
    """{tool: package} for every tool that cannot be found."""
    return {t: pkg for t, pkg in TOOLS.items() if find_tool(t) is None}


def problems() -> list[str]:
    out = []
    if os.geteuid() != 0:
        out.append("the sandbox needs root (network namespaces, nftables, sshd): run it as root")
    missing = missing_tools()
    if missing:
        pkgs = sorted(set(missing.values()))
        tools = ", ".join(f"{t} (package {p})" for t, p in sorted(missing.items()))
        out.append(f"missing tools: {tools}; install with: apt-get install -y {' '.join(pkgs)}")
    if not Path("/proc/self/ns/net").exists():
        out.append("this kernel has no network namespaces")
    return out


def check() -> None:
    """Raise PreflightError naming every problem (and the packages to install)."""
    p = problems()
    if p:
        raise PreflightError("; ".join(p))
