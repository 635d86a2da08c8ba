"""The README's "Using it" section, followed literally on a sandbox: every fenced
shell block marked ``<!-- readme-test -->`` in README.md is run as written, in
order, by bash (``set -euo pipefail``), with the Go-built kubectl, the pinned helm
and this virtualenv's penetrator first on PATH and KUBECONFIG naming the sandbox's
cluster. Nothing is substituted in the commands; the working directory holds what
a user brings: the chart (a link to the checkout's), ``site.yaml`` (the settings
naming the sandbox's install packages) and ``./passwd`` (the machines' root
password). Then it checks what the user would see: the add task ready, its
machines joined as Ready nodes named ``edge-...`` (no --prefix given), and after the
reinstall the same machines as Ready nodes under the names given, the old ones gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from penetrator.api import NODE_LABEL
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import merge, sandbox_settings
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from support import REPO, kubectl_binary, venv_bin

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

MARKER = "<!-- readme-test -->"
SECTION = "## Using it"
MACHINES = ["10.10.1.1", "10.10.1.2"]
"""The addresses the README uses: the sandbox's first two machines of intranet 1."""
REINSTALLED = {"edge-7qk2mz": "10.10.1.1", "gateway-2": "10.10.1.2"}


def using_blocks(readme: str) -> list[str]:
    """The marked ```sh blocks of the README's "Using it" section, in order."""
    start = readme.index(SECTION + "\n")
    after = readme.find("\n## ", start + len(SECTION))
    section = readme[start : after if after >= 0 else len(readme)]
    pattern = re.escape(MARKER) + r"\n```(?:sh|bash)\n(.*?)\n```"
    return re.findall(pattern, section, flags=re.DOTALL)


def test_the_marked_blocks_are_the_using_sections_commands() -> None:
    """Every marker sits right above a shell block (a marker elsewhere would be
    silently skipped), and the section starts from the chart."""
    readme = (REPO / "README.md").read_text()
    blocks = using_blocks(readme)
    start = readme.index(SECTION + "\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    assert len(blocks) == section.count("\n" + MARKER + "\n") >= 5
    assert blocks[0].startswith("helm install penetrator charts/penetrator")
    assert any(b.startswith("penetrator add ") and "--prefix" not in b for b in blocks)


def helm_dir() -> Path:
    p = subprocess.run(
        [str(REPO / "testenv" / "helm" / "build.sh"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if p.returncode != 0:
        pytest.fail(f"helm is not built (run scripts/setup.sh): {p.stderr.strip()}")
    return Path(p.stdout.strip())


@pytest.fixture(scope="module")
def sandbox(sandbox_factory: Any) -> Iterator[tuple[Sandbox, Any]]:
    """A sandbox (one intranet behind NAT, proxy node proxy-1) with its cluster and
    nothing of penetrator in it: the README installs it."""
    sb = sandbox_factory(machines=len(MACHINES), intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        assert [m.ip for m in sb.topology.intranet(1).machines] == MACHINES
        assert info.proxy_nodes[1] == "proxy-1"
        yield sb, info
    finally:
        down(sb.name)


def user_dir(tmp: Path, sb: Sandbox, info: Any) -> Path:
    """What a user has at hand: the chart, their settings and the root password."""
    (tmp / "charts").symlink_to(REPO / "charts")
    settings = merge(sandbox_settings(sb.name, info), {"reconcile": {"pollInterval": 2}})
    # the image is the chart's value (the operator's and every Job's), not a setting
    repository, tag = settings.pop("jobPod")["image"].rsplit(":", 1)
    site = {"image": {"repository": repository, "tag": tag}, "settings": settings}
    (tmp / "site.yaml").write_text(yaml.safe_dump(site))
    shutil.copy(sb.status()["ssh"]["password_file"], tmp / "passwd")
    return tmp


def run_block(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    print(f"$ {block}")
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    print(p.stdout[-4000:], p.stderr[-2000:], sep="\n")
    return p


def nodes(info: Any, *selector: str) -> list[dict[str, Any]]:
    out = info.kubectl("get", "nodes", *selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def ready_ips(items: list[dict[str, Any]]) -> dict[str, str]:
    """Node name -> InternalIP of the Ready ones."""
    out = {}
    for n in items:
        conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
        ips = [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
        if conds.get("Ready") == "True" and ips:
            out[n["metadata"]["name"]] = ips[0]
    return out


def test_the_using_section_works_as_written(sandbox: tuple[Sandbox, Any], tmp_path: Path) -> None:
    sb, info = sandbox
    blocks = using_blocks((REPO / "README.md").read_text())
    cwd = user_dir(tmp_path, sb, info)
    path = [str(venv_bin()), str(kubectl_binary().parent), str(helm_dir())]
    env = {**os.environ, "PATH": os.pathsep.join([*path, os.environ.get("PATH", "")])}
    env["KUBECONFIG"] = str(info.kubeconfig)
    env["HOME"] = str(tmp_path)  # helm's caches and kubectl's discovery cache stay here

    shown = {}  # each block's first line -> what it printed
    for block in blocks:
        p = run_block(block, cwd, env)
        assert p.returncode == 0, f"README block failed (exit {p.returncode}):\n{block}"
        shown[block.splitlines()[0]] = p.stdout

    task = json.loads(info.kubectl("get", "nt", "batch-1", "-o", "json").stdout)
    assert task["status"]["nodetaskStatus"] == "ready"
    assert task["spec"]["nodeNamePrefix"] == "edge"  # --prefix left out
    again = json.loads(info.kubectl("get", "nt", "again-1", "-o", "json").stdout)
    assert again["status"]["nodetaskStatus"] == "ready"
    assert again["status"]["joined"] == again["status"]["planned"] == len(MACHINES)
    # batch-1 named the machines edge-<6 chars>; the reinstall gave them the names asked for
    added = task["spec"]["nodeNamesOverride"]
    assert sorted(added.values()) == MACHINES
    assert all(re.fullmatch(r"edge-[a-z0-9]{6}", n) for n in added), added
    # what the status block showed, between the add and the reinstall
    status = shown["penetrator status batch-1"]
    assert "batch-1 ready: 2/2 joined, 0 failed" in status
    for name in added:
        assert re.search(rf"^{name} +Ready ", status, flags=re.MULTILINE), name
    label = again["metadata"]["labels"][NODE_LABEL]
    assert ready_ips(nodes(info, "-l", f"{NODE_LABEL}={label}")) == REINSTALLED
    names = {n["metadata"]["name"] for n in nodes(info)}
    assert not (set(added) - set(REINSTALLED)) & names  # the old names are gone
