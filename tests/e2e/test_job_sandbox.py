"""`penetrator job` run inside the proxy node's namespace against real sshd
machines behind NAT. The package holds a stand-in `edgeadm` that records its
calls and the join config it was given in the machine's own state directory,
and fails when the machine's install-fails marker exists, so these tests need
no cluster (the default edgeadm template is used unchanged); the real join
program and labelled, Ready Nodes are test_job_join.py's."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.machines import ROLE_MAIN, ROLE_NEW_HOST_KEY, host_key_path
from penetrator_dev.sandbox.topology import Fault
from support import REPO

pytestmark = [pytest.mark.netns]

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "ab" * 32
API = "172.31.0.1:6443"
WORK = "penetrator"  # relative: inside each machine's home

FAKE_EDGEADM = r"""#!/bin/sh
# stand-in for edgeadm: records its argv (the token masked) and the token it was given
d="${EDGE_MACHINE_DIR:-$HOME}"
line=""; prev=""
for a in "$@"; do
  if [ "$prev" = --token ]; then printf '%s' "$a" > "$d/join-token.seen"; a="<token>"; fi
  line="$line${line:+ }$a"; prev=$a
done
printf '%s\n' "$line" >> "$d/edgeadm.calls"
case "$1" in
  reset) exit 0 ;;
  join)
    if [ -e "$d/install-fails" ]; then
      echo "edgeadm: preflight failed on this machine" >&2; exit 3
    fi
    stat -c %a "$HOME/penetrator/token_file" > "$d/token-file.mode"
    exit 0 ;;
esac
echo "edgeadm: unknown command $1" >&2
exit 2
"""


@pytest.fixture(scope="module")
def sb(sandbox_factory: Any) -> Iterator[Sandbox]:
    s = sandbox_factory(machines=6, intranets=1)
    try:
        yield s
    finally:
        down(s.name)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pkg")
    tool = d / "edgeadm"
    tool.write_text(FAKE_EDGEADM)
    tool.chmod(0o755)
    out = {}
    for arch in ("amd64", "arm64"):
        path = d / f"edge-{arch}.tgz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(tool, arcname="edgeadm")
            tar.addfile(tarfile.TarInfo(f"ARCH-{arch}"))  # distinct checksums per arch
        out[arch] = str(path)
    return out


def ips(sb: Sandbox) -> list[str]:
    return [m.ip for m in sb.topology.intranet(1).machines]


def mdir(sb: Sandbox, ip: str) -> Path:
    return sb.machine_dir(1, ip)


def creds(sb: Sandbox, where: Path, *, key: bool = False, known_hosts: bool | str = False) -> Path:
    """``known_hosts``: True for the sandbox's, an address for the sandbox's without it."""
    where.mkdir(parents=True, exist_ok=True)
    st = sb.status()["ssh"]
    if key:
        shutil.copy(st["private_key"], where / "sshkey")
    else:
        shutil.copy(st["password_file"], where / "passwd")
    (where / "token").write_text(TOKEN + "\n")
    if known_hosts:
        lines = Path(st["known_hosts"]["1"]).read_text().splitlines(keepends=True)
        kept = [x for x in lines if x.split()[0] != known_hosts]
        (where / "known_hosts").write_text("".join(kept))
    for f in where.iterdir():
        f.chmod(0o600)
    return where


def run_job(
    sb: Sandbox,
    tmp: Path,
    machines: list[str],
    label: str,
    packages: dict[str, str],
    *,
    key: bool = False,
    known_hosts: bool | str = False,
    pins: Path | None = None,
    **extra: Any,
) -> tuple[int, dict[str, dict[str, Any]], str]:
    cfg = {
        "machines": [{"name": f"edge-{ip.replace('.', '-')}", "ip": ip} for ip in machines],
        "taskLabel": label,
        "apiServer": API,
        "caCertHash": CA_HASH,
        "packages": packages,
        "workDir": WORK,
        "timeouts": {"connect": 3},
        "retry": {"attempts": 2, "backoff": 0.2},
        **extra,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "job.yaml").write_text(yaml.safe_dump(cfg))
    argv = [
        "ip", "netns", "exec", sb.topology.proxy_namespace(1),
        sys.executable, "-m", "penetrator.cli", "job",
        "--config", str(tmp / "job.yaml"),
        "--credentials", str(creds(sb, tmp / "creds", key=key, known_hosts=known_hosts)),
        "--results", str(tmp / "results.json"),
    ]  # fmt: skip
    if pins is not None:
        argv += ["--known-hosts-out", str(pins)]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    lines = [json.loads(x) for x in cp.stdout.splitlines() if x.strip()]
    by_name = {x["name"]: x for x in lines if "name" in x}
    # the results file is the document the JSON lines are views of
    doc = json.loads((tmp / "results.json").read_text())
    assert doc["done"] is True
    assert {n: {**m, "name": n} for n, m in doc["machines"].items()} == {
        n: {k: v for k, v in r.items() if v is not None} for n, r in by_name.items()
    }
    assert TOKEN not in cp.stdout + cp.stderr
    assert sb.credentials.password_file.read_text().strip() not in cp.stdout + cp.stderr
    return cp.returncode, {r["ip"]: r for r in by_name.values()}, cp.stdout + cp.stderr


def archive_stamp(sb: Sandbox, ip: str) -> list[tuple[str, int, int]]:
    d = mdir(sb, ip) / "home" / WORK / "packages"
    return sorted((p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in d.iterdir())


def calls(sb: Sandbox, ip: str) -> list[str]:
    f = mdir(sb, ip) / "edgeadm.calls"
    return f.read_text().splitlines() if f.exists() else []


def test_password_and_key_join_then_a_second_run_does_nothing(
    sb: Sandbox, packages: dict[str, str], tmp_path: Path
) -> None:
    all_ips = ips(sb)
    by_password, by_key = all_ips[:3], all_ips[3:]
    arm = by_key[-1]
    sb.set_arch(1, arm, "aarch64")
    pins = tmp_path / "pins"
    try:
        rc1, r1, out1 = run_job(
            sb, tmp_path / "pw", by_password, "t-one", packages, pins=pins, distribution="http"
        )
        rc2, r2, out2 = run_job(
            sb,
            tmp_path / "key",
            by_key,
            "t-one",
            packages,
            key=True,
            pins=pins,
            distribution="sftp",
        )
    finally:
        sb.set_arch(1, arm, "x86_64")
    assert rc1 == 0, out1
    assert rc2 == 0, out2
    results = {**r1, **r2}
    for ip in all_ips:
        r = results[ip]
        assert r["phase"] == "joined", r
        assert r["transferred"] is True
        assert r["delivery"] == ("http" if ip in by_password else "sftp")
        assert r["warnings"] == []
        assert r["tries"] == 1
        assert r["host_key"].startswith("SHA256:")
        assert r["arch"] == ("arm64" if ip == arm else "amd64")
        # machine side: reset then SuperEdge's join command line, the token read from
        # a 0600 file on the machine (never in the command sent)
        sha = hashlib.sha256(Path(packages[r["arch"]]).read_bytes()).hexdigest()
        kube = f"{mdir(sb, ip)}/home/{WORK}/pkg/{sha[:16]}/kube-linux-{r['arch']}-v1.37.2.tar.gz"
        assert calls(sb, ip)[-2:] == [
            "reset --force",
            f"join {API} --token <token> --discovery-token-ca-cert-hash {CA_HASH} "
            f"--node-name {r['name']} --install-pkg-path {kube}",
        ]
        assert (mdir(sb, ip) / "join-token.seen").read_text() == TOKEN
        assert (mdir(sb, ip) / "token-file.mode").read_text().strip() == "600"
        assert not (mdir(sb, ip) / "home" / WORK / "token_file").exists()  # removed after
    # every machine's key is pinned
    pinned = {line.split()[0] for line in pins.read_text().splitlines()}
    assert pinned == set(all_ips)
    assert oct(pins.stat().st_mode & 0o777) == "0o600"

    # a second run: no transfer, no install
    before = {ip: (archive_stamp(sb, ip), calls(sb, ip)) for ip in all_ips}
    rc3, r3, out3 = run_job(sb, tmp_path / "again", all_ips, "t-one", packages, key=True, pins=pins)
    assert rc3 == 0, out3
    for ip in all_ips:
        assert r3[ip]["phase"] == "joined"
        assert r3[ip]["skipped"] is True
        assert r3[ip]["transferred"] is False
        assert (archive_stamp(sb, ip), calls(sb, ip)) == before[ip]

    # a reinstall (another task's label): installs again, sends nothing
    rc4, r4, out4 = run_job(sb, tmp_path / "re", all_ips, "t-two", packages, key=True, pins=pins)
    assert rc4 == 0, out4
    for ip in all_ips:
        assert r4[ip]["skipped"] is False
        # (the arm machine answers x86_64 now: it needs, and gets, the amd64 package)
        assert r4[ip]["transferred"] is (ip == arm)
        if ip != arm:
            assert archive_stamp(sb, ip) == before[ip][0]
        assert len(calls(sb, ip)) == len(before[ip][1]) + 2


def _fp(path: Path) -> str:
    key = asyncssh.import_public_key(path.with_name(path.name + ".pub").read_text())
    fp: str = key.get_fingerprint("sha256")
    return fp


def test_a_changed_host_key_is_refused_naming_both_and_insecure_only_when_asked(
    sb: Sandbox, packages: dict[str, str], tmp_path: Path
) -> None:
    all_ips = ips(sb)
    victim = all_ips[1]
    ns = sb.topology.machine(1, victim).namespace
    old_fp = _fp(host_key_path(sb.name, ns, ROLE_MAIN))
    pins = tmp_path / "pins"
    rc, r, out = run_job(sb, tmp_path / "first", all_ips, "t-hk1", packages, pins=pins)
    assert rc == 0, out
    assert r[victim]["host_key"] == old_fp
    sb.fault(1, victim, Fault.NEW_HOST_KEY)
    try:
        new_fp = _fp(host_key_path(sb.name, ns, ROLE_NEW_HOST_KEY))  # made on first use
        assert new_fp != old_fp
        rc, r, out = run_job(sb, tmp_path / "second", all_ips, "t-hk2", packages, pins=pins)
        assert rc == 1
        v = r[victim]
        assert v["phase"] == "failed"
        assert v["tries"] == 1  # never retried
        assert r[victim]["name"] in v["error"]
        assert old_fp in v["error"]
        assert new_fp in v["error"]
        assert "changed" in v["error"]
        assert all(r[ip]["phase"] == "joined" for ip in all_ips if ip != victim)
        # the pin is not replaced by the impostor's key
        assert pins.read_text().count(victim + " ") == 1
        # insecure, asked for: accepted, and said so
        rc, r, out = run_job(
            sb, tmp_path / "insecure", [victim], "t-hk3", packages, hostKeyPolicy="insecure"
        )
        assert rc == 0, out
        assert r[victim]["host_key"] is None  # accepted unchecked: nothing to pin
        assert new_fp in r[victim]["warnings"][0]
        assert "insecure" in out
    finally:
        sb.fault(1, victim, None)


def test_strict_uses_only_the_users_known_hosts(
    sb: Sandbox, packages: dict[str, str], tmp_path: Path
) -> None:
    a = ips(sb)[:2]
    rc, r, out = run_job(
        sb, tmp_path / "s1", a, "t-strict", packages, known_hosts=True, hostKeyPolicy="strict"
    )
    assert rc == 0, out
    # a known_hosts makes the check strict under the default policy too (no first use):
    # a machine whose key it does not list is refused, never pinned
    other = ips(sb)[-1]
    rc, r, out = run_job(sb, tmp_path / "s3", [other], "t-strict3", packages, known_hosts=other)
    assert rc == 1, out
    assert "not in known_hosts" in r[other]["error"]
    assert r[other]["host_key"] is None
    rc, r, out = run_job(sb, tmp_path / "s2", a, "t-strict2", packages, hostKeyPolicy="strict")
    assert rc == 1
    for ip in a:
        assert "not in known_hosts" in r[ip]["error"]


def test_each_fault_fails_only_its_machine_with_a_clear_message(
    sb: Sandbox, packages: dict[str, str], tmp_path: Path
) -> None:
    m = ips(sb)
    wrong_pw, gone, refused, broken, arm, odd = m
    odd_shim = mdir(sb, odd) / "bin" / "uname"
    sb.fault(1, wrong_pw, Fault.WRONG_PASSWORD)
    sb.fault(1, gone, Fault.DOWN)
    sb.fault(1, refused, Fault.REFUSE)
    sb.fault(1, broken, Fault.INSTALL_FAILS)
    sb.set_arch(1, arm, "aarch64")
    try:
        odd_shim.parent.mkdir(parents=True, exist_ok=True)
        odd_shim.write_text("#!/bin/sh\necho 'mips64;rm -rf /'\n")
        odd_shim.chmod(0o755)
        rc, r, out = run_job(sb, tmp_path / "faults", m, "t-faults", {"amd64": packages["amd64"]})
    finally:
        odd_shim.unlink(missing_ok=True)
        sb.set_arch(1, arm, "x86_64")
        for ip in (wrong_pw, gone, refused, broken):
            sb.fault(1, ip, None)
    assert rc == 1, out
    assert all(x["phase"] == "failed" for x in r.values()), r
    assert r[wrong_pw]["error"] == "authentication failed: the credential was refused"
    assert r[wrong_pw]["tries"] == 1
    assert r[gone]["error"] == "connect timed out after 3s (after 2 attempts)"
    assert r[gone]["tries"] == 2
    assert r[refused]["error"] == "connection refused on port 22 (after 2 attempts)"
    assert r[broken]["error"].startswith("join failed: `edgeadm join` exited 3: ")
    assert "preflight failed" in r[broken]["error"]
    assert r[broken]["tries"] == 1
    assert r[arm]["error"] == "no package for arm64 in the job config"
    assert "unsupported architecture" in r[odd]["error"]
    assert "mips64" in r[odd]["error"]
    # the healthy path still works right after (faults cleared)
    rc, r, out = run_job(sb, tmp_path / "after", m[:2], "t-faults2", packages)
    assert rc == 0, out


def test_hostile_config_is_refused_before_any_connection(
    sb: Sandbox, packages: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "machines": [{"name": "edge;touch /tmp/pwned", "ip": ips(sb)[0]}],
                "taskLabel": "t",
                "apiServer": API,
                "caCertHash": CA_HASH,
                "packages": packages,
            }
        )
    )
    c = creds(sb, tmp_path / "creds")
    cp = subprocess.run(
        [sys.executable, "-m", "penetrator.cli", "job", "--config", str(tmp_path / "job.yaml"),
         "--credentials", str(c)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert cp.returncode == 2
    assert "machines.0.name" in cp.stderr
    assert cp.stdout == ""


def test_a_slow_machine_still_joins(sb: Sandbox, packages: dict[str, str], tmp_path: Path) -> None:
    """Every chunk delayed (the slow fault): slower, but the steps' timeouts hold."""
    ip = ips(sb)[0]
    sb.fault(1, ip, Fault.SLOW)
    try:
        rc, r, out = run_job(
            sb, tmp_path / "slow", [ip], "t-slow", packages, keepalive=1, timeouts={"connect": 30}
        )
    finally:
        sb.fault(1, ip, None)
    assert rc == 0, out
    assert r[ip]["phase"] == "joined"
    assert r[ip]["tries"] == 1
    assert r[ip]["durations"]["connect"] > 0.5  # the delay was real


def test_a_machine_without_curl_or_wget_gets_the_package_by_sftp(
    sb: Sandbox, tmp_path: Path, sandbox_ssh: Any
) -> None:
    """Distribution http: the machines pull the package from the job; one has
    neither curl nor wget (fault no-downloader) and gets it pushed by SFTP."""
    pkg = tmp_path / "edge-amd64.tgz"  # a package no machine has yet
    tool = tmp_path / "edgeadm"
    tool.write_text(FAKE_EDGEADM)
    tool.chmod(0o755)
    with tarfile.open(pkg, "w:gz") as tar:
        tar.add(tool, arcname="edgeadm")
        tar.addfile(tarfile.TarInfo(f"NO-DOWNLOADER-{tmp_path.name}"))
    sha = hashlib.sha256(pkg.read_bytes()).hexdigest()
    machines = ips(sb)[:3]
    bare = machines[1]
    archive = f"{WORK}/packages/{sha}.tgz"
    sb.fault(1, bare, Fault.NO_DOWNLOADER)
    try:
        seen = sandbox_ssh(sb, 1, machines, "command -v curl || echo none")
        assert {x["host"]: x["stdout"].strip() for x in seen["results"]}[bare] == "none"
        rc, r, out = run_job(
            sb, tmp_path / "job", machines, "t-nodl", {"amd64": str(pkg)}, distribution="http"
        )
        # what each machine holds, checked on the machine itself
        check = sandbox_ssh(sb, 1, machines, f"sha256sum -- {shlex.quote(archive)}")
    finally:
        sb.fault(1, bare, None)
    assert rc == 0, out
    for ip in machines:
        assert r[ip]["phase"] == "joined", r[ip]
        assert r[ip]["transferred"] is True
        assert r[ip]["tries"] == 1
        assert calls(sb, ip)[-1].startswith(f"join {API} --token <token> ")
    assert r[bare]["delivery"] == "sftp"
    assert r[bare]["warnings"] == ["no curl or wget on the machine: pushed by SFTP"]
    for ip in machines:
        if ip != bare:
            assert r[ip]["delivery"] == "http", r[ip]
            assert r[ip]["warnings"] == []
    assert check["ok"] == len(machines), check["results"]
    sums = {x["host"]: x["stdout"].split()[0] for x in check["results"]}
    assert sums == dict.fromkeys(machines, sha)
    # the fault is gone: the machine finds curl again
    again = sandbox_ssh(sb, 1, [bare], "command -v curl || echo none")
    assert again["results"][0]["stdout"].strip().endswith("/curl")
