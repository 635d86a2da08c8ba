"""Helpers of the operator e2e tests (not a test module): a watch on a task's Jobs,
and the machines' own record of how often they were installed.

``JobWatch`` lists the task's Jobs (there must be none yet) and watches from that
list's resourceVersion, so no event is lost however late the watch connects, and
after a dropped stream it resumes from the last resourceVersion it saw (bookmarks
included). "At once" is computed from the ADDED / DELETED events alone: a Job
exists from its ADDED to its DELETED event (a Job being deleted in the foreground
still exists).

Through an apiserver restart the stream ends (restarted up to ``max_restarts``
times, each after ``restart_delay`` s) and the new apiserver's watch cache may no
longer have our resourceVersion (410 Gone, with ``relist_on_gone``): the Jobs are
listed again and the difference to what the watch knew becomes events, the ADDED
ones before the DELETED ones, so a gap can only make "at once" larger, never hide
a second Job (``gaps`` counts them).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from penetrator.k8s.builders import TASK_NAME_LABEL

MAX_RESTARTS = 5


@dataclass
class JobEvent:
    type: str
    name: str
    uid: str
    resource_version: str
    status: dict[str, Any]
    at: float  # time.time() when received
    managers: frozenset[str] = frozenset()  # of metadata.managedFields: who wrote it

    @property
    def finished(self) -> bool:
        st = self.status
        conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        return bool(
            st.get("succeeded") or conds.get("Complete") == "True" or conds.get("Failed") == "True"
        )


@dataclass
class JobWatch:
    kubectl: Sequence[str]
    """argv of kubectl with its --kubeconfig"""
    namespace: str
    task: str
    events: list[JobEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restarts: int = 0
    max_restarts: int = MAX_RESTARTS
    restart_delay: float = 0.5
    relist_on_gone: bool = False
    gaps: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._gone = False
        selector = f"{TASK_NAME_LABEL}={self.task}"
        self._path = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        self._selector = urllib.parse.quote(selector, safe="")
        listed = subprocess.run(
            [*self.kubectl, "get", "--raw", f"{self._path}?labelSelector={self._selector}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        doc = json.loads(listed.stdout)
        assert doc["items"] == [], "the task's Jobs must not exist before the watch"
        self.list_rv = str(doc["metadata"]["resourceVersion"])
        self._rv = self.list_rv
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # -- the stream -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            uri = (
                f"{self._path}?watch=true&allowWatchBookmarks=true"
                f"&labelSelector={self._selector}&resourceVersion={self._rv}"
            )
            proc = subprocess.Popen(
                [*self.kubectl, "get", "--raw", uri],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            with self._lock:
                self._proc = proc
                if self._stop.is_set():  # stop() came between the check and the start
                    proc.terminate()
            assert proc.stdout is not None
            for raw in proc.stdout:  # the apiserver writes one JSON object per line
                line = raw.strip()
                if line:
                    self._event(json.loads(line))
            proc.wait()
            if self._stop.is_set():
                return
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
            self.restarts += 1
            if self.restarts > self.max_restarts:
                self.errors.append(f"watch ended {self.restarts} times; last: {err[-300:]}")
                return
            if self.relist_on_gone and ("too old resource version" in err or "(Gone)" in err):
                self._gone = True  # refused before streaming (HTTP 410)
            self._stop.wait(self.restart_delay)
            if self._gone:
                self._relist()

    def _event(self, ev: dict[str, Any]) -> None:
        obj = ev.get("object") or {}
        meta = obj.get("metadata") or {}
        rv = str(meta.get("resourceVersion", ""))
        if ev.get("type") == "ERROR":
            if self.relist_on_gone and obj.get("code") == 410:
                self._gone = True  # the stream ends; the next one starts from a list
                return
            # the events since our resourceVersion are lost; say so
            self.errors.append(f"watch error: {obj.get('message', obj)}")
            self._stop.set()
            return
        if rv:
            self._rv = rv
        if ev.get("type") == "BOOKMARK":
            return
        self.events.append(_job_event(str(ev.get("type")), obj, rv))

    def _relist(self) -> None:
        """After 410 Gone: list the Jobs, turn the difference into events, watch on
        from the list. A failed list (the apiserver still starting) is tried again
        after the next restart delay, counted as a restart."""
        listed = subprocess.run(
            [*self.kubectl, "get", "--raw", f"{self._path}?labelSelector={self._selector}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if listed.returncode != 0:
            return
        doc = json.loads(listed.stdout)
        live = self.live()
        now = {str(j["metadata"]["uid"]): j for j in doc["items"]}
        rv = str(doc["metadata"]["resourceVersion"])
        for uid, j in now.items():
            if uid not in live:
                self.events.append(_job_event("ADDED", j, rv))
        for uid, name in live.items():
            if uid not in now:
                self.events.append(JobEvent("DELETED", name, uid, rv, {}, time.time()))
        self._rv, self._gone = rv, False
        self.gaps += 1

    def live(self) -> dict[str, str]:
        """uid -> name of the Jobs that exist after the events seen so far."""
        out: dict[str, str] = {}
        for e in self.events:
            if e.type == "ADDED":
                out[e.uid] = e.name
            elif e.type == "DELETED":
                out.pop(e.uid, None)
        return out

    def stop(self) -> None:
        """Idempotent; also the fixture's safety net when a test failed early."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # our own child, by its PID
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._thread.join(timeout=15)
        assert not self._thread.is_alive()

    # -- what it saw --------------------------------------------------------------------
    def max_at_once(self) -> int:
        """The most Jobs of the task that existed at once, from ADDED/DELETED only."""
        live: set[str] = set()
        most = 0
        for e in self.events:
            if e.type == "ADDED":
                assert e.uid not in live, f"ADDED twice: {e}"
                live.add(e.uid)
            elif e.type == "DELETED":
                assert e.uid in live, f"DELETED without ADDED: {e}"
                live.discard(e.uid)
            else:
                assert e.uid in live, f"{e.type} of a Job never ADDED: {e}"
            most = max(most, len(live))
        return most

    def added(self) -> list[JobEvent]:
        return [e for e in self.events if e.type == "ADDED"]

    def first_finished(self, uid: str) -> JobEvent | None:
        return next((e for e in self.events if e.uid == uid and e.finished), None)

    def assert_sound(self) -> None:
        """No lost events; resourceVersions (etcd revisions here) only grow."""
        assert not self.errors, self.errors
        rvs = [int(self.list_rv), *(int(e.resource_version) for e in self.events)]
        assert rvs == sorted(rvs), rvs

    def summary(self) -> str:
        return "\n".join(
            f"{e.type:8} {e.name} {e.uid[:8]} rv={e.resource_version} "
            f"finished={e.finished} at={e.at:.1f}"
            for e in self.events
        )


def _job_event(type_: str, obj: dict[str, Any], rv: str) -> JobEvent:
    meta = obj.get("metadata") or {}
    return JobEvent(
        type_,
        str(meta.get("name")),
        str(meta.get("uid")),
        rv,
        dict(obj.get("status") or {}),
        time.time(),
        frozenset(str(f.get("manager")) for f in meta.get("managedFields") or []),
    )


def joins(machine_dir: Path, skip: int = 0) -> list[dict[str, Any]]:
    """The `edgeadm join` runs a sandbox machine recorded in its own state directory
    (``edgeadm.log``, one JSON line when a join starts and one when it ends), after
    the first ``skip`` lines."""
    path = machine_dir / "edgeadm.log"
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines()[skip:] if x.strip()]
    return [x for x in lines if x["command"] == "join"]


def journal_length(machine_dir: Path) -> int:
    path = machine_dir / "edgeadm.log"
    return len(path.read_text().splitlines()) if path.exists() else 0
