"""The image's size and start-up time: builds it with scripts/image.sh (cached),
unpacks it with umoci and starts `penetrator --version` in it with runc, several
times, next to `python3 -c pass` (the runtime's and the interpreter's share).
Appends one row to bench/results/image.csv and prints it. Needs root.

    .venv/bin/python bench/image_report.py [--runs 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "image.csv"


def build() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "image.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def unpack(archive: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    layout = work / "oci"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    tag = entry["annotations"]["org.opencontainers.image.ref.name"]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    manifest["digest"] = entry["digest"]
    bundle = work / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle, manifest


def start_seconds(bundle: Path, args: list[str], runs: int) -> list[float]:
    """Wall time of `runc run` from start to the process's exit, per run."""
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))
    times = []
    for n in range(runs):
        began = time.perf_counter()
        subprocess.run(
            ["runc", "run", "--bundle", str(bundle), f"penetrator-bench-{os.getpid()}-{n}"],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    archive = build()
    with tempfile.TemporaryDirectory() as tmp:
        bundle, manifest = unpack(archive, Path(tmp))
        du = subprocess.run(
            ["du", "-sb", str(bundle / "rootfs")], check=True, capture_output=True, text=True
        )
        version = start_seconds(bundle, ["/usr/local/bin/penetrator", "--version"], runs)
        bare = start_seconds(bundle, ["/usr/bin/python3", "-c", "pass"], runs)
    mb = 1_000_000
    row = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifest": str(manifest["digest"]),
        "archive_mb": round(archive.stat().st_size / mb, 1),
        "layer_gzip_mb": round(sum(int(la["size"]) for la in manifest["layers"]) / mb, 1),
        "rootfs_mb": round(int(du.stdout.split()[0]) / mb, 1),
        "runs": runs,
        "version_median_s": round(statistics.median(version), 3),
        "version_min_s": round(min(version), 3),
        "python_pass_median_s": round(statistics.median(bare), 3),
        "load_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    for key, value in row.items():
        print(f"{key:22} {value}")


if __name__ == "__main__":
    main()
