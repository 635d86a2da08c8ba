"""Benchmark of `penetrator job` against what users would pick instead (root).

On a sandbox of N machines (``--layout addresses``), with a package of
``--package-mb`` random MB whose stand-in ``edgeadm join`` sleeps
``--install-sleep`` seconds (the real join program is not ready yet: the join
is the sleep), runs side by side on the same machines:

  job-http   penetrator job, machines pull the package from the job (default)
  job-sftp   penetrator job, one SFTP push per machine
  original   SuperEdge's behaviour: 5 machines at a time, one scp of the
             package per machine, then ssh: extract, reset, join (OpenSSH)
  ansible-F  ansible-core, copy + shell modules, OpenSSH with ControlPersist,
             pipelining, forks F

Before each method the machines' work directories are emptied, so every
method transfers and installs everything. Methods that would take too long at
large N (``--original-max``, ``--ansible-max``) are extrapolated linearly from
their largest measured N and marked so. The floor: max(one machine's install
alone, N x machine-side CPU of one install / cores), the CPU measured on the
sandbox's sshd processes (with their reaped children) over 20 machines
installed one at a time.

    .venv/bin/python bench/job_bench.py                    # 50, 200, 1000
    .venv/bin/python bench/job_bench.py --sizes 50 --methods job-http,original

Ansible and matplotlib come from a separate venv (``--tools-venv``, made with
``python3 -m venv DIR && DIR/bin/pip install ansible-core matplotlib``).
Writes bench/results/job.csv and job.png. Never sends a packet outside the
sandbox's namespaces.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from penetrator.sandbox.lifecycle import Sandbox, down
from penetrator.sandbox.network import exec_argv
from penetrator.sandbox.topology import Layout, SandboxSpec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TOKEN = "abcdef.0123456789abcdef"
WORK = "penetrator"
ORIG_DIR = "orig"

EDGEADM = """#!/bin/sh
# stand-in for edgeadm: the join is a sleep
d="${{EDGE_MACHINE_DIR:-$HOME}}"
printf '%s\\n' "$*" >> "$d/edgeadm.calls"
case "$1" in
  reset) exit 0 ;;
  join) sleep {sleep}; exit 0 ;;
esac
exit 2
"""


def make_package(d: Path, mb: int, sleep: float) -> Path:
    src = d / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "edgeadm").write_text(EDGEADM.format(sleep=sleep))
    (src / "edgeadm").chmod(0o755)
    with (src / "payload.bin").open("wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    out = d / "edge-amd64.tgz"
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        tar.add(src / "edgeadm", arcname="edgeadm")
        tar.add(src / "payload.bin", arcname="payload.bin")
    return out


def cpu_of(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def sshd_cpu(sb: Sandbox) -> float:
    return sum(cpu_of(p.pid) for p in sb.state.processes if p.role == "sshd")


def clean_machines(sb: Sandbox) -> None:
    for m in sb.topology.machines():
        d = sb.machine_dir(m.intranet, m.ip)
        for name in (WORK, ORIG_DIR, "edge.tgz"):
            p = d / "home" / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        (d / "edgeadm.calls").unlink(missing_ok=True)


def installs_done(sb: Sandbox) -> int:
    n = 0
    for m in sb.topology.machines():
        f = sb.machine_dir(m.intranet, m.ip) / "edgeadm.calls"
        if f.exists() and "join" in f.read_text():
            n += 1
    return n


TRANSFER_CONCURRENCY: dict[str, int] = {}  # --transfer-concurrency, when given


def run_job(
    sb: Sandbox, tmp: Path, pkg: Path, ips: list[str], distribution: str, concurrency: int = 1000
) -> dict[str, Any]:
    creds = tmp / "creds"
    creds.mkdir(exist_ok=True)
    shutil.copy(sb.credentials.private_key, creds / "sshkey")
    (creds / "token").write_text(TOKEN)
    cfg = {
        "machines": [{"name": f"e{i}", "ip": ip} for i, ip in enumerate(ips)],
        "taskLabel": f"bench-{time.monotonic_ns()}",
        "apiServer": "172.31.0.1:6443",
        "caCertHash": "sha256:" + "0" * 64,
        "packages": {"amd64": str(pkg)},
        "workDir": WORK,
        "distribution": distribution,
        "concurrency": concurrency,
        **TRANSFER_CONCURRENCY,
    }
    (tmp / "job.yaml").write_text(yaml.safe_dump(cfg))
    argv = exec_argv(
        sb.topology.proxy_namespace(1),
        ["/usr/bin/time", "-f", "%M %U %S", sys.executable, "-m", "penetrator.cli", "job",
         "--config", str(tmp / "job.yaml"), "--credentials", str(creds)],
    )  # fmt: skip
    t0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=3600, cwd=REPO)
    wall = time.monotonic() - t0
    rss_kib, user, sys_ = cp.stderr.strip().splitlines()[-1].split()
    summary = json.loads(cp.stdout.strip().splitlines()[-1])["summary"]
    return {
        "wall_s": wall,
        "ok": summary["joined"],
        "rss_mib": int(rss_kib) / 1024,
        "job_cpu_s": float(user) + float(sys_),
    }


ORIGINAL = r"""
import asyncio, sys, json, time
hosts, key, kh, pkg = json.loads(sys.argv[1])
opts = ["-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=" + kh, "-o", "LogLevel=ERROR"]
async def sh(*argv):
    p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                             stderr=asyncio.subprocess.DEVNULL)
    return await p.wait()
async def one(ip, sem):
    async with sem:
        if await sh("scp", "-q", "-O", *opts, pkg, f"root@{ip}:edge.tgz"):
            return False
        cmd = ("mkdir -p orig && tar -xzf edge.tgz -C orig && orig/edgeadm reset --force && "
               "orig/edgeadm join --config /dev/null")
        return await sh("ssh", *opts, f"root@{ip}", cmd) == 0
async def main():
    sem = asyncio.Semaphore(5)
    r = await asyncio.gather(*(one(ip, sem) for ip in hosts))
    print(json.dumps({"ok": sum(r)}))
asyncio.run(main())
"""


def run_original(sb: Sandbox, tmp: Path, pkg: Path, ips: list[str]) -> dict[str, Any]:
    kh = sb.status()["ssh"]["known_hosts"]["1"]
    arg = json.dumps([ips, str(sb.credentials.private_key), kh, str(pkg)])
    argv = exec_argv(sb.topology.proxy_namespace(1), [sys.executable, "-c", ORIGINAL, arg])
    t0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=7200)
    wall = time.monotonic() - t0
    return {"wall_s": wall, "ok": json.loads(cp.stdout)["ok"]}


PLAYBOOK = """
- hosts: edge
  gather_facts: false
  tasks:
    - copy: {src: "%(pkg)s", dest: "edge.tgz", mode: "0600"}
    - shell: mkdir -p orig && tar -xzf edge.tgz -C orig && orig/edgeadm reset --force && orig/edgeadm join --config /dev/null
"""  # noqa: E501


def run_ansible(
    sb: Sandbox, tmp: Path, pkg: Path, ips: list[str], forks: int, venv: Path
) -> dict[str, Any]:
    kh = sb.status()["ssh"]["known_hosts"]["1"]
    (tmp / "hosts").write_text("[edge]\n" + "".join(f"{ip}\n" for ip in ips))
    (tmp / "play.yml").write_text(PLAYBOOK % {"pkg": pkg})
    (tmp / "ansible.cfg").write_text(
        textwrap.dedent(f"""\
        [defaults]
        inventory = {tmp / "hosts"}
        forks = {forks}
        host_key_checking = False
        remote_user = root
        private_key_file = {sb.credentials.private_key}
        interpreter_python = /usr/bin/python3
        stdout_callback = ansible.builtin.minimal
        timeout = 60
        [ssh_connection]
        pipelining = True
        ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={kh}
        control_path_dir = {tmp / "cp"}
        """)
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(tmp / "lt"), "ANSIBLE_HOME": str(tmp / "ah")}  # fmt: skip
    argv = exec_argv(
        sb.topology.proxy_namespace(1),
        [str(venv / "bin" / "ansible-playbook"), str(tmp / "play.yml")],
    )
    t0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=7200, env=env, cwd=tmp)
    wall = time.monotonic() - t0
    if cp.returncode != 0:
        print(f"ansible exited {cp.returncode}: {(cp.stdout + cp.stderr)[-600:]}", file=sys.stderr)
    return {"wall_s": wall, "ok": installs_done(sb)}


def floor(sb: Sandbox, tmp: Path, pkg: Path, ips: list[str]) -> dict[str, float]:
    """One install alone, and machine-side CPU per install (20 one at a time)."""
    clean_machines(sb)
    one = run_job(sb, tmp, pkg, ips[:1], "http", concurrency=1)["wall_s"]
    clean_machines(sb)
    sample = ips[:20]
    c0 = sshd_cpu(sb)
    run_job(sb, tmp, pkg, sample, "http", concurrency=1)
    per = (sshd_cpu(sb) - c0) / len(sample)
    return {"one_install_s": one, "machine_cpu_s": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="50,200,1000")
    ap.add_argument("--package-mb", type=int, default=20)
    ap.add_argument("--install-sleep", type=float, default=5)
    ap.add_argument("--methods", default="job-http,job-sftp,original,ansible")
    ap.add_argument("--ansible-forks", default="5,50,200")
    ap.add_argument("--original-max", type=int, default=50)
    ap.add_argument("--ansible-max", type=int, default=200)
    ap.add_argument("--tools-venv", type=Path, default=Path("/root/.cache/penetrator/bench-venv"))
    ap.add_argument("--transfer-concurrency", type=int, help="the job's transferConcurrency")
    ap.add_argument("--out", type=Path, default=RESULTS / "job.csv")
    a = ap.parse_args()
    if a.transfer_concurrency:
        TRANSFER_CONCURRENCY["transferConcurrency"] = a.transfer_concurrency
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sizes = [int(x) for x in a.sizes.split(",")]
    methods = a.methods.split(",")
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    measured: dict[str, tuple[int, float]] = {}  # method -> (largest N, wall)
    tmp_root = Path(tempfile.mkdtemp(prefix="job-bench-"))
    try:
        pkg = make_package(tmp_root / "pkg", a.package_mb, a.install_sleep)
        fl: dict[str, float] | None = None  # measured once, on the first sandbox
        for n in sizes:
            name = f"jb{n}"[:8]
            sb = Sandbox.up(SandboxSpec(name=name, machines=n, layout=Layout.ADDRESSES))
            try:
                ips = [m.ip for m in sb.topology.intranet(1).machines]
                if fl is None:
                    fl = floor(sb, tmp_root, pkg, ips)
                    print(json.dumps({"floor": fl}), flush=True)
                floor_s = max(fl["one_install_s"], n * fl["machine_cpu_s"] / cores)
                plan: list[tuple[str, Any]] = []
                for meth in methods:
                    if meth == "ansible":
                        plan += [(f"ansible-{f}", int(f)) for f in a.ansible_forks.split(",")]
                    else:
                        plan.append((meth, None))
                for meth, forks in plan:
                    row: dict[str, Any] = {"n": n, "method": meth, "floor_s": round(floor_s, 2),
                                           "one_install_s": round(fl["one_install_s"], 2),
                                           "machine_cpu_s": round(fl["machine_cpu_s"], 4),
                                           "cores": cores, "package_mb": a.package_mb,
                                           "extrapolated": False}  # fmt: skip
                    small = meth in ("original", "ansible-5")  # 5 at a time: slow at large N
                    limit = a.original_max if small else a.ansible_max
                    if meth.startswith(("original", "ansible")) and n > limit:
                        if meth in measured:
                            n0, w0 = measured[meth]
                            row.update(wall_s=round(w0 * n / n0, 1), ok=None, extrapolated=True)
                            rows.append(row)
                        continue
                    clean_machines(sb)
                    d = tmp_root / f"{meth}-{n}"
                    d.mkdir(exist_ok=True)
                    if meth == "job-http":
                        res = run_job(sb, d, pkg, ips, "http")
                    elif meth == "job-sftp":
                        res = run_job(sb, d, pkg, ips, "sftp")
                    elif meth == "original":
                        res = run_original(sb, d, pkg, ips)
                    else:
                        res = run_ansible(sb, d, pkg, ips, forks, a.tools_venv)
                    res["wall_s"] = round(res["wall_s"], 2)
                    row.update(res)
                    rows.append(row)
                    measured[meth] = (n, res["wall_s"])
                    print(json.dumps(row), flush=True)
            finally:
                down(name)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["n", "method", "wall_s", "ok", "extrapolated", "floor_s", "one_install_s",
              "machine_cpu_s", "cores", "package_mb", "rss_mib", "job_cpu_s"]  # fmt: skip
    with a.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {a.out}")
    plot(rows, a.out.with_suffix(".png"), a.tools_venv)


def plot(rows: list[dict[str, Any]], png: Path, venv: Path) -> None:
    """Wall time against N per method (matplotlib from the tools venv)."""
    script = textwrap.dedent("""
        import json, sys
        import matplotlib; matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = json.loads(sys.stdin.read())
        fig, ax = plt.subplots(figsize=(8, 5))
        for meth in sorted({r["method"] for r in rows}):
            rs = sorted((r for r in rows if r["method"] == meth), key=lambda r: r["n"])
            ax.plot([r["n"] for r in rs], [r["wall_s"] for r in rs], marker="o", label=meth)
            for r in rs:
                if r["extrapolated"]:
                    ax.plot([r["n"]], [r["wall_s"]], marker="x", color="k")
        fl = sorted({(r["n"], r["floor_s"]) for r in rows})
        ax.plot([n for n, _ in fl], [s for _, s in fl], "k--", label="floor")
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("machines"); ax.set_ylabel("wall time (s)")
        ax.set_title("install N machines (x: extrapolated)")
        ax.legend(); fig.tight_layout(); fig.savefig(sys.argv[1], dpi=100)
    """)
    py = venv / "bin" / "python"
    if not py.exists():
        print("no tools venv: skipping the plot")
        return
    subprocess.run([str(py), "-c", script, str(png)], input=json.dumps(rows), text=True, check=True)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
