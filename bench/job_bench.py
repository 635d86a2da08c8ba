"""Benchmark of `penetrator job` against what users would pick instead (root).

On a sandbox of N machines (``--layout addresses``) with its real cluster (the
control plane in the cloud namespace, the intranet's heartbeat service in the
proxy node's namespace), the install is the sandbox's real join package plus a
``--package-mb`` random payload, whose ``edgeadm join`` first sleeps
``--install-sleep`` seconds (the stand-in for unpacking and starting the
kubelet) and then runs the sandbox's real join: token discovery with the CA
pin, CSR TLS bootstrap approved and signed by the real controller manager,
Node + Lease; the heartbeat service then keeps the Node Ready. Side by side on
the same machines, in one sitting:

  job-http   penetrator job in the proxy node's namespace with cluster access
             (waits for Ready, labels the Nodes), machines pull the package
             from the job over HTTP, the default edgeadm template
             (JoinConfiguration file, the token never in argv)
  job-sftp   the same, one SFTP push per machine
  original   SuperEdge's behaviour: 5 machines at a time, one scp of the
             package per machine, then one ssh: unpack, ``edgeadm reset
             --force``, ``edgeadm join <server> --token ...
             --discovery-token-ca-cert-hash ... --node-name <name>`` (OpenSSH)
  ansible-F  ansible-core, copy + shell modules, OpenSSH with ControlPersist,
             pipelining, forks F (5, 50, 200)

Between methods every machine is reset (its kubelet state and heartbeat
registry entry removed: heartbeats stop), its work files deleted, and the edge
Nodes, their Leases and the CSRs deleted, so every method transfers, installs
and joins every machine. "ok" is the number of the method's Nodes that are
Ready, counted through the API after the method returns (``tool_ok``: what the
tool itself reported).

Nothing is extrapolated. At N > 50 an Ansible forks value is skipped (a
``skipped`` row saying why) only when its lower bound ceil(N/F) x one install
exceeds the best Ansible time already measured at that N, or when it would not
fit in ``--budget-min`` (the best forks found at the previous N is always
measured first). At the largest N the order is job-http, ansible, original.

The floor: max(one machine's install alone, N x machine-side CPU of one
install / cores); machine-side CPU = the sandbox's sshd processes (with their
reaped children: the session shell, tar, curl, the join program) + the
control plane's work (kube-apiserver, etcd, kube-controller-manager CPU
deltas from /proc, minus their idle rate measured just before) per join,
measured over ``--floor-machines`` machines installed one at a time by the
job. Every row records the 1-minute load average at its start and end (the
VM is shared), the job's peak RSS and CPU (``/usr/bin/time``).

``--shaped`` is the second run: ``tc tbf`` at 1 Gbit/s on both ends of the
link between the proxy node and the machines' LAN, a 100 MB package, 200
machines, job-http against job-sftp; writes bench/results/job_shaped.csv.

    .venv/bin/python bench/job_bench.py > /tmp/job_bench.log      # 50, 200, 1000
    .venv/bin/python bench/job_bench.py --sizes 20 --out /tmp/smoke.csv
    .venv/bin/python bench/job_bench.py --shaped
    .venv/bin/python bench/job_bench.py --resume PART.csv   # finish an interrupted sitting

The job's own JSON lines (per-machine phases and step durations) are kept in
/tmp/job_bench_runs/. Every method runs under a memory guard (``--mem-guard-mib``:
the sandbox's machines share this host's memory with other work): below it the
method is stopped (its process group, by id) and, for the job, run again at a
third of its concurrency (noted in the row).

Ansible and matplotlib come from a separate venv (``--tools-venv``, made with
``python3 -m venv DIR && DIR/bin/pip install ansible-core matplotlib``).
Progress: one JSON line per measured row and a line when each method starts,
on stdout (flushed). Writes the CSV after every row and the PNG at the end.
Never sends a packet outside the sandbox's namespaces; the token never appears
in the output.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from penetrator.k8s.bootstrap_token import BootstrapToken, bootstrap_token_secret
from penetrator_dev.sandbox.cluster import SandboxCluster, start_cluster
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import build_join_package
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.network import exec_argv
from penetrator_dev.sandbox.topology import Layout, SandboxSpec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORK = "penetrator"
RUNS = Path("/tmp/job_bench_runs")  # the job's own JSON lines per run (phases, durations)
CP_ROLES = ("cluster-kube-apiserver", "cluster-etcd", "cluster-kube-controller-manager")
FIELDS = ["n", "method", "wall_s", "ok", "tool_ok", "skipped", "floor_s", "ratio_to_floor",
          "one_install_s", "machine_cpu_s", "sshd_cpu_s", "control_plane_cpu_s", "cores",
          "package_mb", "rss_mib", "job_cpu_s", "load_start", "load_end",
          "min_mem_avail_mib", "job_concurrency", "started", "note"]  # fmt: skip


def log(obj: Any) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


# -- the package ------------------------------------------------------------------------


def make_package(d: Path, mb: int, sleep: float) -> Path:
    """The sandbox's real join package, its edgeadm sleeping `sleep` s before a
    join, plus `mb` MB of random payload."""
    base = build_join_package(d / "base", "amd64")
    out = d / f"edge-{mb}mb.tgz"
    with (
        tarfile.open(base.path) as src,
        tarfile.open(out, "w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as dst,
    ):
        for ti in src.getmembers():
            f = src.extractfile(ti) if ti.isfile() else None
            data = f.read() if f else b""
            if ti.isfile() and ti.name.rsplit("/", 1)[-1] == "edgeadm":
                text = data.decode().replace(
                    "\nexec ", f'\n[ "$1" = join ] && sleep {sleep:g}  # the install\nexec ', 1
                )
                data = text.encode()
                ti.size = len(data)
            dst.addfile(ti, io.BytesIO(data) if ti.isfile() else None)
        payload = d / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        dst.add(payload, arcname="payload.bin")
        payload.unlink()
    return out


# -- the sandbox and its cluster --------------------------------------------------------


@dataclass
class Env:
    sb: Sandbox
    info: SandboxCluster
    token: str
    pkg: Path
    ips: list[str]
    index: dict[str, int]  # ip -> machine index

    @property
    def server(self) -> str:
        return str(self.info.server).split("//", 1)[1]

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        p = subprocess.run(
            [str(self.info.kubectl_binary), f"--kubeconfig={self.info.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if p.returncode != 0:
            raise RuntimeError(f"kubectl {args[:2]}: {p.stderr.strip()[-400:]}")
        return p.stdout

    def names(self, tag: str, ips: list[str]) -> list[str]:
        return [f"{tag}-{self.index[ip]:05d}" for ip in ips]

    def redact(self, text: str) -> str:
        return text.replace(self.token, "<token>").replace(self.token.split(".")[1], "<secret>")


def bring_up(name: str, n: int, pkg: Path) -> Env:
    down(name)  # a leftover of an interrupted run
    sb = Sandbox.up(SandboxSpec(name=name, machines=n, layout=Layout.ADDRESSES))
    info = start_cluster(sb)
    sb = Sandbox.load(name)
    hb.start_sandbox_heartbeat(sb, 1)
    sb = Sandbox.load(name)
    t = BootstrapToken.generate(dt.datetime.now(dt.UTC), dt.timedelta(hours=6))
    env = Env(sb, info, t.value, pkg, [], {})
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump(bootstrap_token_secret(t, "job bench")))
    for m in sb.topology.intranet(1).machines:
        env.ips.append(m.ip)
        env.index[m.ip] = m.index
    return env


def edge_nodes(env: Env) -> list[str]:
    out = env.kubectl("get", "nodes", "-o", "name")
    names = [x.split("/", 1)[1] for x in out.split()]
    keep = {env.info.control_plane_node, *env.info.proxy_nodes.values()}
    return [x for x in names if x not in keep]


def reset_all(env: Env) -> None:
    """Every machine's join state and work files removed (heartbeats stop), the
    edge Nodes, their Leases and all CSRs deleted."""
    reg = hb.sandbox_registry_dir(env.sb.name, 1) / "machines"
    if reg.is_dir():
        for p in reg.iterdir():
            p.unlink(missing_ok=True)
    for ip in env.ips:
        d = env.sb.machine_dir(1, ip)
        shutil.rmtree(d / "kubelet", ignore_errors=True)
        for name in (WORK, "orig", "edge.tgz", ".ansible"):
            p = d / "home" / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
    time.sleep(2)  # the heartbeat service drops unregistered machines within a second
    # one deletecollection each (kubectl delete NAMES... deletes one by one: minutes at 1,000);
    # the Leases go with their Nodes (owner references, the garbage collector)
    keep = ",".join(sorted({env.info.control_plane_node, *env.info.proxy_nodes.values()}))
    sel = urllib.parse.quote(f"kubernetes.io/hostname notin ({keep})")
    env.kubectl("delete", "--raw", f"/api/v1/nodes?labelSelector={sel}")
    env.kubectl("delete", "--raw", "/apis/certificates.k8s.io/v1/certificatesigningrequests")
    deadline = time.monotonic() + 180
    while edge_nodes(env) and time.monotonic() < deadline:
        time.sleep(2)
    left = edge_nodes(env)
    if left:
        raise RuntimeError(f"{len(left)} edge Nodes still there after the reset")


def ready_nodes(env: Env, names: list[str]) -> int:
    want = set(names)
    items = json.loads(env.kubectl("get", "nodes", "-o", "json"))["items"]
    n = 0
    for it in items:
        if it["metadata"]["name"] not in want:
            continue
        conds = {c["type"]: c["status"] for c in it.get("status", {}).get("conditions", [])}
        n += conds.get("Ready") == "True"
    return n


def cpu_of(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (children once reaped)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def sshd_cpu(env: Env) -> float:
    return sum(cpu_of(p.pid) for p in env.sb.state.processes if p.role == "sshd")


def cp_cpu(env: Env) -> float:
    return sum(cpu_of(p.pid) for p in env.sb.state.processes if p.role in CP_ROLES)


def pairs(env: Env, tag: str, ips: list[str]) -> list[tuple[str, str]]:
    """(node name, ip) per machine: names unique per method."""
    return list(zip(env.names(tag, ips), ips, strict=True))


def mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


class MemoryGuardError(RuntimeError):
    pass


GUARD = {"mib": 2500, "min_seen": 1 << 30}  # --mem-guard-mib; lowest MemAvailable seen


def run_guarded(
    argv: list[str],
    *,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 7200,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run in its own session, killed (its process group, by id) when the
    host's MemAvailable falls below the guard: the sandbox's machines share this
    host's memory with other agents' work."""
    p = subprocess.Popen(
        argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        start_new_session=True,
    )  # fmt: skip
    out: dict[str, str] = {}

    def talk() -> None:
        out["o"], out["e"] = p.communicate(input)

    th = threading.Thread(target=talk)
    th.start()
    deadline = time.monotonic() + timeout
    low = False
    while th.is_alive():
        avail = mem_available_mib()
        GUARD["min_seen"] = min(GUARD["min_seen"], avail)
        if avail < GUARD["mib"] or time.monotonic() > deadline:
            low = avail < GUARD["mib"]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            th.join(60)
            break
        th.join(0.5)
    if low:
        raise MemoryGuardError(f"MemAvailable fell below {GUARD['mib']} MiB")
    return subprocess.CompletedProcess(argv, p.returncode, out.get("o", ""), out.get("e", ""))


# -- the methods ------------------------------------------------------------------------


def run_job(
    env: Env, d: Path, ips: list[str], tag: str, distribution: str, concurrency: int = 1000
) -> dict[str, Any]:
    d.mkdir(parents=True, exist_ok=True)
    creds = d / "creds"
    creds.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(env.sb.credentials.private_key, creds / "sshkey")
    (creds / "token").write_text(env.token)
    cfg = {
        "machines": [{"name": nm, "ip": ip} for nm, ip in pairs(env, tag, ips)],
        "taskLabel": f"bench-{tag}",
        "apiServer": env.server,
        "caCertHash": env.info.ca_cert_hash,
        "packages": {"amd64": str(env.pkg)},
        "workDir": WORK,
        "distribution": distribution,
        "concurrency": concurrency,
    }
    (d / "job.yaml").write_text(yaml.safe_dump(cfg))
    argv = exec_argv(
        env.sb.topology.proxy_namespace(1),
        ["/usr/bin/time", "-f", "%M %U %S", sys.executable, "-m", "penetrator.cli", "job",
         "--config", str(d / "job.yaml"), "--credentials", str(creds),
         "--kubeconfig", str(env.info.in_cloud_kubeconfig)],
    )  # fmt: skip
    t0 = time.monotonic()
    try:
        cp = run_guarded(argv, cwd=REPO, timeout=3600)
    finally:
        shutil.rmtree(creds, ignore_errors=True)
    wall = time.monotonic() - t0
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{tag}-{len(ips)}.jsonl").write_text(env.redact(cp.stdout))
    try:
        rss_kib, user, sys_ = cp.stderr.strip().splitlines()[-1].split()
        summary = json.loads(cp.stdout.strip().splitlines()[-1])["summary"]
    except (IndexError, ValueError, KeyError):
        log(f"job failed: rc={cp.returncode} {env.redact(cp.stderr[-800:])}")
        raise
    if cp.returncode != 0:
        failed = [x for x in cp.stdout.splitlines() if '"phase": "failed"' in x][:3]
        log(f"job exited {cp.returncode}: {env.redact(' | '.join(failed))[:800]}")
    return {
        "wall_s": wall,
        "tool_ok": summary["joined"],
        "rss_mib": round(int(rss_kib) / 1024, 1),
        "job_cpu_s": round(float(user) + float(sys_), 2),
        "job_concurrency": concurrency,
    }


def join_command(env: Env, name: str) -> str:
    """The original's install: unpack, reset, join with the token in argv."""
    pin = env.info.ca_cert_hash
    join = ["orig/edgeadm", "join", env.server, "--token", env.token,
            "--discovery-token-ca-cert-hash", pin, "--node-name", name]  # fmt: skip
    return (
        "mkdir -p orig && tar -xzf edge.tgz -C orig && orig/edgeadm reset --force && "
        + shlex.join(join)
    )


ORIGINAL = r"""
import asyncio, sys, json
req = json.load(sys.stdin)
opts = ["-i", req["key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=" + req["known_hosts"], "-o", "LogLevel=ERROR"]
async def sh(*argv):
    p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                             stderr=asyncio.subprocess.DEVNULL)
    return await p.wait()
async def one(m, sem):
    async with sem:
        if await sh("scp", "-q", "-O", *opts, req["package"], f"root@{m['ip']}:edge.tgz"):
            return False
        return await sh("ssh", *opts, f"root@{m['ip']}", m["command"]) == 0
async def main():
    sem = asyncio.Semaphore(5)
    r = await asyncio.gather(*(one(m, sem) for m in req["machines"]))
    print(json.dumps({"ok": sum(r)}))
asyncio.run(main())
"""


def run_original(env: Env, d: Path, ips: list[str], tag: str) -> dict[str, Any]:
    req = {
        "key": str(env.sb.credentials.private_key),
        "known_hosts": env.sb.status()["ssh"]["known_hosts"]["1"],
        "package": str(env.pkg),
        "machines": [
            {"ip": ip, "command": join_command(env, nm)} for nm, ip in pairs(env, tag, ips)
        ],
    }
    argv = exec_argv(env.sb.topology.proxy_namespace(1), [sys.executable, "-c", ORIGINAL])
    t0 = time.monotonic()
    cp = run_guarded(argv, input=json.dumps(req))
    wall = time.monotonic() - t0
    if cp.returncode != 0:
        log(f"original exited {cp.returncode}: {env.redact(cp.stderr[-600:])}")
    return {"wall_s": wall, "tool_ok": json.loads(cp.stdout)["ok"] if cp.stdout else 0}


PLAYBOOK = """
- hosts: edge
  gather_facts: false
  tasks:
    - copy: {src: "%(pkg)s", dest: "edge.tgz", mode: "0600"}
    - shell: >-
        mkdir -p orig && tar -xzf edge.tgz -C orig && orig/edgeadm reset --force &&
        orig/edgeadm join {{ server }} --token {{ token }}
        --discovery-token-ca-cert-hash {{ ca_hash }} --node-name {{ node_name }}
      no_log: true
"""


def run_ansible(
    env: Env, d: Path, ips: list[str], tag: str, forks: int, venv: Path
) -> dict[str, Any]:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    kh = env.sb.status()["ssh"]["known_hosts"]["1"]
    hosts = "".join(f"{ip} node_name={nm}\n" for nm, ip in pairs(env, tag, ips))
    (d / "hosts").write_text(
        "[edge]\n" + hosts + "[edge:vars]\n"
        f"server={env.server}\ntoken={env.token}\nca_hash={env.info.ca_cert_hash}\n"
    )
    (d / "play.yml").write_text(PLAYBOOK % {"pkg": env.pkg})
    (d / "ansible.cfg").write_text(
        textwrap.dedent(f"""\
        [defaults]
        inventory = {d / "hosts"}
        forks = {forks}
        host_key_checking = False
        remote_user = root
        private_key_file = {env.sb.credentials.private_key}
        interpreter_python = /usr/bin/python3
        stdout_callback = ansible.builtin.minimal
        timeout = 60
        [ssh_connection]
        pipelining = True
        ssh_args = -o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile={kh}
        control_path_dir = {d / "cp"}
        """)
    )
    env_vars = {**os.environ, "ANSIBLE_CONFIG": str(d / "ansible.cfg"),
                "ANSIBLE_LOCAL_TEMP": str(d / "lt"), "ANSIBLE_HOME": str(d / "ah")}  # fmt: skip
    argv = exec_argv(
        env.sb.topology.proxy_namespace(1),
        [str(venv / "bin" / "ansible-playbook"), str(d / "play.yml")],
    )
    t0 = time.monotonic()
    try:
        cp = run_guarded(argv, env=env_vars, cwd=d)
    finally:
        (d / "hosts").unlink()
    wall = time.monotonic() - t0
    out = cp.stdout + cp.stderr
    if cp.returncode != 0:
        log(f"ansible exited {cp.returncode}: {env.redact(out[-600:])}")
    return {"wall_s": wall, "tool_ok": len(ips) - out.count("| FAILED") - out.count("UNREACHABLE")}


def run_method(
    env: Env, d: Path, meth: str, ips: list[str], venv: Path, concurrency: int
) -> dict[str, Any]:
    tag = meth.replace("job-", "j").replace("original", "orig").replace("ansible-", "a")
    if meth == "job-http":
        res = run_job(env, d, ips, tag, "http", concurrency)
    elif meth == "job-sftp":
        res = run_job(env, d, ips, tag, "sftp", concurrency)
    elif meth == "original":
        res = run_original(env, d, ips, tag)
    else:
        res = run_ansible(env, d, ips, tag, int(meth.split("-")[1]), venv)
    res["ok"] = ready_nodes(env, env.names(tag, ips))
    res["wall_s"] = round(res["wall_s"], 2)
    return res


# -- the floor --------------------------------------------------------------------------


def floor(env: Env, d: Path, sample_n: int) -> dict[str, float]:
    """One install alone, and machine-side CPU per install (`sample_n` one at a time)."""
    reset_all(env)
    one = run_job(env, d / "one", env.ips[:1], "fl1", "http", concurrency=1)["wall_s"]
    reset_all(env)
    sample = env.ips[1 : 1 + sample_n]
    c0, t0 = cp_cpu(env), time.monotonic()
    time.sleep(20)
    idle_rate = (cp_cpu(env) - c0) / (time.monotonic() - t0)
    s0, c0, t0 = sshd_cpu(env), cp_cpu(env), time.monotonic()
    res = run_job(env, d / "sample", sample, "fls", "http", concurrency=1)
    if res["tool_ok"] != len(sample):
        raise RuntimeError(f"floor sample: {res['tool_ok']}/{len(sample)} joined")
    sshd = (sshd_cpu(env) - s0) / len(sample)
    cp = (cp_cpu(env) - c0 - idle_rate * (time.monotonic() - t0)) / len(sample)
    reset_all(env)
    return {
        "one_install_s": round(one, 2),
        "sshd_cpu_s": round(sshd, 4),
        "control_plane_cpu_s": round(cp, 4),
        "machine_cpu_s": round(sshd + cp, 4),
        "control_plane_idle_cpu_per_s": round(idle_rate, 4),
        "sample_wall_s": res["wall_s"],
    }


# -- shaping ----------------------------------------------------------------------------


def shape(env: Env, rate: str) -> str:
    """tbf on both ends of the proxy node's link into the LAN; returns `tc qdisc show`."""
    topo = env.sb.topology
    it = topo.intranet(1)
    ends = [(topo.proxy_namespace(1), "eth0"), (it.router_ns, "p0")]
    shown = []
    for ns, dev in ends:
        subprocess.run(exec_argv(ns, ["tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                                      "rate", rate, "burst", "1mb", "latency", "50ms"]),
                       check=True, capture_output=True, text=True, timeout=30)  # fmt: skip
        out = subprocess.run(exec_argv(ns, ["tc", "qdisc", "show", "dev", dev]),
                             check=True, capture_output=True, text=True, timeout=30)  # fmt: skip
        shown.append(f"{ns}/{dev}: {out.stdout.strip()}")
    return "; ".join(shown)


# -- the run ----------------------------------------------------------------------------


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.rows: list[dict[str, Any]] = []
        self.cores = os.cpu_count() or 1
        self.deadline = time.monotonic() + a.budget_min * 60
        self.fl: dict[str, float] = {}
        self.first_n: int | None = None  # the size at which every forks value runs
        self.done: set[tuple[int, str]] = set()  # (n, method) kept from --resume

    def load(self, path: Path) -> None:
        """Rows (and the floor) of an interrupted run of the same sitting: its
        (N, method) rows are not run again."""

        def num(v: str) -> Any:
            for t in (int, float):
                with contextlib.suppress(ValueError):
                    return t(v)
            return v

        with path.open() as f:
            self.rows = [{k: num(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        r0 = next(r for r in self.rows if "machine_cpu_s" in r)
        keys = ("one_install_s", "machine_cpu_s", "sshd_cpu_s", "control_plane_cpu_s")
        self.fl = {k: float(r0[k]) for k in keys}
        self.done = {(r["n"], r["method"]) for r in self.rows}
        self.first_n = min(r["n"] for r in self.rows)
        log({"resumed": str(path), "rows": len(self.rows)})

    def write(self) -> None:
        self.a.out.parent.mkdir(parents=True, exist_ok=True)
        fields = FIELDS + sorted({k for r in self.rows for k in r} - set(FIELDS))
        with self.a.out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
            w.writeheader()
            w.writerows(self.rows)

    def base_row(self, n: int, meth: str) -> dict[str, Any]:
        row: dict[str, Any] = {"n": n, "method": meth, "cores": self.cores,
                               "package_mb": self.a.package_mb}  # fmt: skip
        if self.fl:
            row["floor_s"] = round(
                max(self.fl["one_install_s"], n * self.fl["machine_cpu_s"] / self.cores), 2
            )
            for k in ("one_install_s", "machine_cpu_s", "sshd_cpu_s", "control_plane_cpu_s"):
                row[k] = self.fl[k]
        return row

    def skip(self, n: int, meth: str, why: str) -> None:
        row = self.base_row(n, meth)
        row["skipped"] = why
        self.rows.append(row)
        self.write()
        log(row)

    def measure(self, env: Env, tmp: Path, meth: str, extra: dict[str, Any] | None = None) -> Any:
        n = len(env.ips)
        conc = self.a.job_concurrency
        notes: list[str] = []
        while True:
            log(f"== {time.strftime('%H:%M:%S')} n={n} {meth}: reset, then start")
            reset_all(env)
            row = self.base_row(n, meth)
            row["started"] = time.strftime("%H:%M:%S")
            row["load_start"] = round(os.getloadavg()[0], 2)
            GUARD["min_seen"] = mem_available_mib()
            t0 = time.monotonic()
            try:
                res = run_method(env, tmp / f"{meth}-{n}", meth, env.ips, self.a.tools_venv, conc)
            except MemoryGuardError as e:
                if not meth.startswith("job-") or conc <= 100:
                    res = {"skipped": f"stopped after {time.monotonic() - t0:.0f} s: {e}"}
                    break
                log(f"{meth} at concurrency {conc} stopped: {e}; again at {conc // 3}")
                notes.append(f"first at concurrency {conc}: stopped, {e}")
                conc //= 3
                time.sleep(20)
                continue
            break
        row.update(res)
        if notes:
            row["note"] = "; ".join(notes)
        row["load_end"] = round(os.getloadavg()[0], 2)
        row["min_mem_avail_mib"] = GUARD["min_seen"]
        if "floor_s" in row and "wall_s" in row:
            row["ratio_to_floor"] = round(row["wall_s"] / row["floor_s"], 2)
        row.update(extra or {})
        self.rows.append(row)
        self.write()
        log(row)
        return row

    def ansible(self, env: Env, tmp: Path, n: int, first: bool) -> None:
        forks = [int(f) for f in self.a.ansible_forks.split(",")]
        prev = [r for r in self.rows if r["method"].startswith("ansible-") and "wall_s" in r]
        if not first and prev:  # the best forks at the previous N first
            n0 = max(r["n"] for r in prev)
            best_prev = min((r for r in prev if r["n"] == n0), key=lambda r: r["wall_s"])
            bf = int(best_prev["method"].split("-")[1])
            forks = [bf] + [f for f in forks if f != bf]
        here = [r["wall_s"] for r in prev if r["n"] == n]
        best: float | None = min(here) if here else None
        for i, f in enumerate(forks):
            meth = f"ansible-{f}"
            if (n, meth) in self.done:
                continue
            bound = math.ceil(n / f) * self.fl.get("one_install_s", 0)
            if not first and best is not None and bound > best:
                self.skip(n, meth, f"lower bound ceil({n}/{f}) x one install = {bound:.0f} s "
                                   f"> best ansible at this N {best:.0f} s")  # fmt: skip
                continue
            same = [r for r in prev if r["method"] == meth]
            if i > 0 and same and not first:
                r0 = max(same, key=lambda r: r["n"])
                est = r0["wall_s"] * n / r0["n"]
                left = self.deadline - time.monotonic() - self.reserve(n)
                if est > left:
                    self.skip(n, meth, f"time budget: about {est:.0f} s (linear from N="
                                       f"{r0['n']}), {max(left, 0):.0f} s left")  # fmt: skip
                    continue
            w = self.measure(env, tmp, meth).get("wall_s")
            if w is not None:
                best = w if best is None else min(best, w)

    def reserve(self, n: int) -> float:
        """Time kept for the original at `n` (it runs last)."""
        if "original" not in self.a.methods.split(","):
            return 0
        return (n / 5) * self.fl.get("one_install_s", 7) * 1.2

    def run(self, tmp: Path) -> None:
        a = self.a
        sizes = [int(x) for x in a.sizes.split(",")]
        methods = a.methods.split(",")
        sftp_sizes = {int(x) for x in a.sftp_sizes.split(",")} if a.sftp_sizes else set(sizes)
        pkg = make_package(tmp / "pkg", a.package_mb, a.install_sleep)
        log({"package": pkg.name, "bytes": pkg.stat().st_size})
        for n in sizes:
            name = f"{a.name}{n}"[:8]
            log(f"== {time.strftime('%H:%M:%S')} n={n}: sandbox {name} up with its cluster")
            t0 = time.monotonic()
            try:
                env = bring_up(name, n, pkg)
                log({"n": n, "sandbox_up_s": round(time.monotonic() - t0, 1)})
                extra: dict[str, Any] = {}
                if a.shaped:
                    shown = shape(env, a.rate)
                    log({"shaped": shown})
                    bound = n * pkg.stat().st_size * 8 / 1e9
                    extra = {"rate": a.rate, "link_bound_s": round(bound, 1)}
                elif not self.fl:
                    log(f"== {time.strftime('%H:%M:%S')} floor: 1 install, then "
                        f"{a.floor_machines} one at a time")  # fmt: skip
                    self.fl = floor(env, tmp / "floor", a.floor_machines)
                    log({"floor": self.fl})
                for meth in methods:
                    if (n, meth) in self.done:
                        continue
                    if meth == "job-sftp" and n not in sftp_sizes:
                        self.skip(n, meth, "sftp measured only at " + a.sftp_sizes)
                    elif meth == "ansible":
                        self.ansible(env, tmp, n, first=(n == (self.first_n or sizes[0])))
                    elif meth != "original":
                        self.measure(env, tmp, meth, extra)
                if "original" in methods and (n, "original") not in self.done:
                    self.measure(env, tmp, "original", extra)
            finally:
                down(name)
        log(f"wrote {a.out}")


def plot(rows: list[dict[str, Any]], png: Path, venv: Path) -> None:
    """Wall time against N per method, and the floor (matplotlib from the tools venv)."""
    script = textwrap.dedent("""
        import json, sys
        import matplotlib; matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = [r for r in json.loads(sys.stdin.read()) if r.get("wall_s")]
        fig, ax = plt.subplots(figsize=(8, 5))
        for meth in sorted({r["method"] for r in rows}):
            rs = sorted((r for r in rows if r["method"] == meth), key=lambda r: r["n"])
            ax.plot([r["n"] for r in rs], [r["wall_s"] for r in rs], marker="o", label=meth)
        fl = sorted({(r["n"], r["floor_s"]) for r in rows if r.get("floor_s")})
        ax.plot([n for n, _ in fl], [s for _, s in fl], "k--", marker="x", label="floor")
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("machines"); ax.set_ylabel("wall time (s)")
        ax.set_title("install + real join of N sandbox machines (2 shared cores)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(); fig.tight_layout(); fig.savefig(sys.argv[1], dpi=100)
    """)
    py = venv / "bin" / "python"
    if not py.exists():
        log("no tools venv: skipping the plot")
        return
    subprocess.run([str(py), "-c", script, str(png)], input=json.dumps(rows), text=True, check=True)
    log(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="50,200,1000")
    ap.add_argument("--package-mb", type=int, default=20)
    ap.add_argument("--install-sleep", type=float, default=5)
    ap.add_argument("--methods", default="job-http,job-sftp,ansible,original")
    ap.add_argument("--sftp-sizes", default="50,200", help="N at which job-sftp runs")
    ap.add_argument("--ansible-forks", default="5,50,200")
    ap.add_argument("--floor-machines", type=int, default=20)
    ap.add_argument("--job-concurrency", type=int, default=1000, help="the job's concurrency")
    ap.add_argument("--mem-guard-mib", type=int, default=2500, help="stop a method below")
    ap.add_argument("--budget-min", type=float, default=110, help="skip optional rows beyond")
    ap.add_argument("--name", default="jb", help="sandbox name prefix")
    ap.add_argument("--tools-venv", type=Path, default=Path("/root/.cache/penetrator/bench-venv"))
    ap.add_argument("--shaped", action="store_true", help="the 1 Gbit/s run (job_shaped.csv)")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--resume", type=Path, help="a CSV of this sitting: keep its rows, floor")
    a = ap.parse_args()
    if a.shaped:
        if a.sizes == "50,200,1000":
            a.sizes = "200"
        if a.package_mb == 20:
            a.package_mb = 100
        if a.methods == ap.get_default("methods"):
            a.methods = "job-http,job-sftp"
        a.sftp_sizes = a.sizes
    GUARD["mib"] = a.mem_guard_mib
    a.out = a.out or RESULTS / ("job_shaped.csv" if a.shaped else "job.csv")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = Bench(a)
    if a.resume:
        b.load(a.resume)
    tmp = Path(tempfile.mkdtemp(prefix="job-bench-"))
    try:
        b.run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        b.write()
    if not a.shaped:
        plot(b.rows, a.out.with_suffix(".png"), a.tools_venv)


if __name__ == "__main__":
    main()
