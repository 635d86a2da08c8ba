"""Why a Job stopped before it reported: the pure function from its pods' status
(k8s.observe.pod_start_failure) and what the reconcile makes of it (one condition,
one Warning Event of that reason, a fatal cause fails the round's machines at once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube.models.core_v1 import (
    ContainerState,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    PodCondition,
    PodStatus,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from penetrator.api import (
    API_VERSION,
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    MachinePhase,
    NodeTask,
    TaskPhase,
)
from penetrator.api.results import ResultsDoc, StartFailure
from penetrator.api.settings import ReconcileSettings
from penetrator.k8s.observe import observe_job, pod_start_failure
from penetrator.plan.reconcile import (
    PROGRESSING,
    READY,
    DeleteJob,
    EmitEvent,
    ObservedJob,
    WriteResults,
    reconcile,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = ReconcileSettings(max_attempts=3, backoff_base=30, poll_interval=10, start_timeout=300)


def pod(
    *,
    waiting: tuple[str, str] | None = None,
    terminated: tuple[int, str | None, str | None] | None = None,
    init_terminated: tuple[int, str | None, str | None] | None = None,
    conditions: list[dict[str, str]] | None = None,
    phase: str = "Pending",
    reason: str | None = None,
    message: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    """A Job's pod as the API server returns it (camelCase dict)."""
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message

    def state(
        w: tuple[str, str] | None, t: tuple[int, str | None, str | None] | None
    ) -> dict[str, Any]:
        if w is not None:
            return {"waiting": {"reason": w[0], "message": w[1]}}
        if t is not None:
            code, why, text = t
            out: dict[str, Any] = {"exitCode": code}
            if why:
                out["reason"] = why
            if text:
                out["message"] = text
            return {"terminated": out}
        return {"running": {"startedAt": created}}

    status["containerStatuses"] = [
        {"name": "install", "image": "penetrator:1", "state": state(waiting, terminated)}
    ]
    if init_terminated is not None:
        status["initContainerStatuses"] = [
            {"name": "packages", "image": "pkgs:1", "state": state(None, init_terminated)}
        ]
    if conditions:
        status["conditions"] = conditions
    return {"metadata": {"name": "nodes-job-abcde", "creationTimestamp": created}, "status": status}


# --- the pure function: a table -----------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], tuple[str, bool, bool] | None, str]] = [
    (
        "missing package: the job's termination message",
        pod(
            phase="Failed",
            terminated=(2, "Error", "PackageNotFound: no package for Kubernetes v1.99.0: ..."),
        ),
        ("PackageNotFound", True, True),
        "no package for Kubernetes v1.99.0",
    ),
    (
        "wrong checksum",
        pod(phase="Failed", terminated=(2, "Error", "PackageChecksumMismatch: amd64 has SHA x")),
        ("PackageChecksumMismatch", True, True),
        "amd64 has SHA x",
    ),
    (
        "unreadable credential",
        pod(phase="Failed", terminated=(2, "Error", "CredentialUnreadable: sshkey is not a key")),
        ("CredentialUnreadable", True, True),
        "sshkey is not a key",
    ),
    (
        "a fetch that failed: retry next round",
        pod(phase="Failed", terminated=(2, "Error", "PackageFetchFailed: https://x: ConnectError")),
        ("PackageFetchFailed", False, True),
        "ConnectError",
    ),
    (
        "cluster unreachable: retry",
        pod(phase="Failed", terminated=(2, "Error", "ClusterUnreachable: cannot reach")),
        ("ClusterUnreachable", False, True),
        "cannot reach",
    ),
    (
        "exit 2 without our prefix (an older image)",
        pod(phase="Failed", terminated=(2, "Error", "something odd\nwith lines")),
        ("JobCannotStart", False, True),
        "something odd with lines",
    ),
    (
        "exit 2 and no message at all",
        pod(phase="Failed", terminated=(2, "Error", None)),
        ("JobCannotStart", False, True),
        "no termination message",
    ),
    (
        "machines failed (exit 1): the results say why, not the pod",
        pod(phase="Failed", terminated=(1, "Error", "some log lines")),
        None,
        "",
    ),
    ("succeeded", pod(phase="Succeeded", terminated=(0, "Completed", None)), None, ""),
    ("running", pod(phase="Running"), None, ""),
    (
        "OOM killed",
        pod(phase="Failed", terminated=(137, "OOMKilled", None)),
        ("OOMKilled", False, True),
        "exit status 137 (OOMKilled)",
    ),
    (
        "image pull back-off: said, the pod may still start",
        pod(waiting=("ImagePullBackOff", 'Back-off pulling image "penetrator:1"')),
        ("ImagePullBackOff", False, False),
        "Back-off pulling image",
    ),
    (
        "image pull error",
        pod(waiting=("ErrImagePull", "pull access denied")),
        ("ErrImagePull", False, False),
        "image penetrator:1: pull access denied",
    ),
    (
        "invalid image name: never starts",
        pod(waiting=("InvalidImageName", "couldn't parse image name")),
        ("InvalidImageName", True, True),
        "couldn't parse",
    ),
    (
        "container config error (e.g. a missing Secret key)",
        pod(waiting=("CreateContainerConfigError", "secret x not found")),
        ("CreateContainerConfigError", False, False),
        "container install: secret x not found",
    ),
    (
        "container creating: nothing wrong yet",
        pod(waiting=("ContainerCreating", "")),
        None,
        "",
    ),
    (
        "cannot be scheduled on the proxy node",
        pod(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 1 Insufficient memory.",
                }
            ]
        ),
        ("Unschedulable", False, False),
        "Insufficient memory",
    ),
    (
        "proxy node not ready (its taint keeps the pod off)",
        pod(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 1 node(s) had untolerated taint "
                    "{node.kubernetes.io/not-ready: }.",
                }
            ]
        ),
        ("ProxyNodeNotReady", False, False),
        "node.kubernetes.io/not-ready",
    ),
    (
        "proxy node lost: the pod evicted by the taint manager",
        pod(
            phase="Failed",
            conditions=[
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint",
                }
            ],
        ),
        ("ProxyNodeNotReady", False, True),
        "NoExecute",
    ),
    (
        "the package image's copy failed",
        pod(init_terminated=(1, "Error", "cp: can't stat '/packages/.': No such file")),
        ("PackageCopyFailed", True, True),
        "init container packages: cp: can't stat",
    ),
    (
        "a pod failed by the kubelet (evicted)",
        pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory."),
        ("Evicted", False, True),
        "low on resource",
    ),
    ("no pod yet", {}, None, ""),
]


@pytest.mark.parametrize(
    ("pod_", "expected", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_pod_status_to_reason(
    pod_: dict[str, Any], expected: tuple[str, bool, bool] | None, text: str
) -> None:
    got = pod_start_failure([pod_] if pod_ else [])
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.reason, got.fatal, got.final) == expected
    assert text in got.message
    assert "\n" not in got.message


def test_lightkube_models_read_the_same() -> None:
    model = Pod(
        metadata=ObjectMeta(name="p", creationTimestamp=None),
        status=PodStatus(
            phase="Pending",
            containerStatuses=[
                ContainerStatus(
                    name="install",
                    image="penetrator:1",
                    imageID="",
                    ready=False,
                    restartCount=0,
                    state=ContainerState(
                        waiting=ContainerStateWaiting(reason="ErrImagePull", message="denied")
                    ),
                )
            ],
            conditions=[PodCondition(type="PodScheduled", status="True")],
        ),
    )
    got = pod_start_failure([model])
    assert got is not None
    assert (got.reason, got.message) == ("ErrImagePull", "image penetrator:1: denied")
    done = Pod(
        metadata=ObjectMeta(name="p"),
        status=PodStatus(
            phase="Failed",
            containerStatuses=[
                ContainerStatus(
                    name="install",
                    image="i",
                    imageID="",
                    ready=False,
                    restartCount=0,
                    state=ContainerState(
                        terminated=ContainerStateTerminated(
                            exitCode=2, message="PackageNotFound: gone\n"
                        )
                    ),
                )
            ],
        ),
    )
    stop = pod_start_failure([done])
    assert stop is not None
    assert (stop.reason, stop.message, stop.fatal) == ("PackageNotFound", "gone", True)


def test_the_newest_pod_speaks() -> None:
    old = pod(
        phase="Failed", terminated=(2, None, "PackageNotFound: old"), created="2026-01-01T00:00:00Z"
    )
    new = pod(waiting=("ImagePullBackOff", "new"), created="2026-01-01T00:05:00Z")
    got = pod_start_failure([old, new])
    assert got is not None
    assert got.reason == "ImagePullBackOff"


def test_a_long_message_is_cut_to_one_bounded_line() -> None:
    got = pod_start_failure(
        [pod(phase="Failed", terminated=(2, None, "PackageNotFound: " + "x " * 5000))]
    )
    assert got is not None
    assert len(got.message.encode()) <= 1024


def test_observe_job_carries_the_pods_reason() -> None:
    job = {
        "metadata": {"name": "nodes-job", "uid": "j1"},
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
        },
    }
    observed = observe_job(job, [pod(phase="Failed", terminated=(2, None, "PackageNotFound: x"))])
    assert observed.finished
    assert observed.start_failure is not None
    assert observed.start_failure.reason == "PackageNotFound"
    assert observe_job(job).start_failure is None


# --- the reconcile -------------------------------------------------------------------------


def make_task(status: dict[str, Any] | None = None) -> NodeTask:
    return NodeTask.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": "NodeTask",
            "metadata": {
                "name": "nodes",
                "uid": "u-1",
                "generation": 1,
                "labels": {NODE_LABEL: "nodes-abc123"},
                "annotations": {
                    JOB_NAME_ANNOTATION: "nodes-job",
                    CONFIGMAP_NAME_ANNOTATION: "nodes-config",
                },
            },
            "spec": {
                "sshCredential": "login",
                "proxyNode": "proxy-1",
                "nodeNamesOverride": {"edge-a": "10.0.0.1", "edge-b": "10.0.0.2"},
            },
            "status": status or {},
        }
    )


def round_one(task: NodeTask) -> ResultsDoc:
    d = reconcile(task, {}, None, None, T0, S)
    (write,) = [a for a in d.actions if isinstance(a, WriteResults)]
    return write.doc


def warnings(actions: Any) -> list[EmitEvent]:
    return [a for a in actions if isinstance(a, EmitEvent) and a.type == "Warning"]


MISSING = StartFailure(
    reason="PackageNotFound", message="no package for Kubernetes v1.99.0", fatal=True
)


def test_a_fatal_cause_fails_the_task_at_once_with_its_reason() -> None:
    task = make_task()
    doc = round_one(task)
    job = ObservedJob("nodes-job", "j1", finished=True, reason="BackoffLimitExceeded")
    job = ObservedJob(**{**job.__dict__, "start_failure": MISSING})
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=3), S)
    (write,) = [a for a in d.actions if isinstance(a, WriteResults)]
    folded = write.doc
    assert folded.start_failure == MISSING
    for m in folded.machines.values():
        assert m.phase is MachinePhase.FAILED
        assert m.attempts == 1  # one round, no more
        assert m.error == "PackageNotFound: no package for Kubernetes v1.99.0"
    (event,) = warnings(d.actions)
    assert (event.reason, event.once) == ("PackageNotFound", True)
    assert "before it touched any machine" in event.message
    assert "BackoffLimitExceeded" not in event.message
    assert DeleteJob("nodes-job", "j1") in d.actions
    # the Job gone: the task is failed, its Ready condition names the cause
    after = reconcile(task, {}, None, folded, T0 + timedelta(seconds=5), S)
    assert after.status.nodetask_status is TaskPhase.FAILED
    ready = after.status.condition(READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "PackageNotFound")
    assert "no package for Kubernetes v1.99.0" in ready.message
    assert not [a for a in after.actions if type(a).__name__ == "CreateJob"]
    for m in after.status.machines.values():
        assert m.phase is MachinePhase.FAILED
        assert m.last_error is not None
        assert "PackageNotFound" in m.last_error
    # said once more only as the task's final word (reason Failed), not per step
    assert [e.reason for e in warnings(after.actions)] == ["Failed"]
    again = reconcile(
        make_task(after.status.to_dict()), {}, None, folded, T0 + timedelta(seconds=9), S
    )
    assert warnings(again.actions) == []


def test_a_transient_cause_retries_and_says_why() -> None:
    task = make_task()
    doc = round_one(task)
    fetch = StartFailure(reason="PackageFetchFailed", message="https://x: ConnectError")
    job = ObservedJob("nodes-job", "j1", finished=True, start_failure=fetch)
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=3), S)
    (write,) = [a for a in d.actions if isinstance(a, WriteResults)]
    for m in write.doc.machines.values():
        assert m.phase is MachinePhase.PENDING
        assert (m.error or "").startswith("PackageFetchFailed: ")
    assert [e.reason for e in warnings(d.actions)] == ["PackageFetchFailed"]


def test_a_pending_pod_is_said_at_once_and_given_up_at_the_start_timeout() -> None:
    task = make_task()
    doc = round_one(task)
    pull = StartFailure(reason="ImagePullBackOff", message="image p:1: back-off", final=False)
    job = ObservedJob("nodes-job", "j1", start_failure=pull)
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=10), S)
    progressing = d.status.condition(PROGRESSING)
    assert progressing is not None
    assert (progressing.reason, progressing.message) == (
        "ImagePullBackOff",
        "round 1: image p:1: back-off",
    )
    assert [e.reason for e in warnings(d.actions)] == ["ImagePullBackOff"]
    assert not [a for a in d.actions if isinstance(a, DeleteJob)]
    # the next step with that condition on the task says nothing new
    later = reconcile(make_task(d.status.to_dict()), {}, job, doc, T0 + timedelta(seconds=20), S)
    assert warnings(later.actions) == []
    # at the start timeout: the round ends with the cause, the Job goes
    end = reconcile(task, {}, job, doc, T0 + timedelta(seconds=S.start_timeout + 1), S)
    assert [a for a in end.actions if isinstance(a, DeleteJob)]
    (write,) = [a for a in end.actions if isinstance(a, WriteResults)]
    assert all(
        (m.error or "").startswith("ImagePullBackOff: ") for m in write.doc.machines.values()
    )
    assert [e.reason for e in warnings(end.actions)] == ["ImagePullBackOff"]  # no JobNotStarted


def test_a_pod_that_never_can_start_ends_the_round_now() -> None:
    task = make_task()
    doc = round_one(task)
    bad = StartFailure(reason="InvalidImageName", message="image ::: bad", fatal=True)
    job = ObservedJob("nodes-job", "j1", start_failure=bad)  # not finished: Pending
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=2), S)
    assert DeleteJob("nodes-job", "j1") in d.actions
    (write,) = [a for a in d.actions if isinstance(a, WriteResults)]
    assert all(m.phase is MachinePhase.FAILED for m in write.doc.machines.values())


def test_a_job_that_reported_is_not_judged_by_its_pod() -> None:
    task = make_task()
    doc = round_one(task).model_copy(update={"updated": T0 + timedelta(seconds=1)})
    job = ObservedJob("nodes-job", "j1", finished=True, start_failure=MISSING)
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=3), S)
    (write,) = [a for a in d.actions if isinstance(a, WriteResults)]
    assert write.doc.start_failure is None
    assert all(m.phase is MachinePhase.PENDING for m in write.doc.machines.values())
