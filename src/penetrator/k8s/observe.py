"""What the operator observes, turned into the plain inputs of ``plan.reconcile``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from penetrator.api import NODE_LABEL
from penetrator.api.results import StartFailure
from penetrator.plan.reconcile import ObservedJob

EXIT_CANNOT_START: Final = 2
"""``penetrator job``'s exit status when it could not start (``job.entry``)."""
REASON_RE: Final = re.compile(r"^([A-Z][A-Za-z0-9]{1,63}): (.+)$", re.DOTALL)
FATAL_REASONS: Final = frozenset(
    {"PackageNotFound", "PackageChecksumMismatch", "JobConfigInvalid", "CredentialUnreadable"}
)
"""The job's own reasons that another round of the same task cannot cure."""
IMAGE_NEVER: Final = frozenset({"InvalidImageName", "ErrImageNeverPull"})
"""Waiting reasons of a container that will never start."""
IMAGE_PULL: Final = frozenset({"ErrImagePull", "ImagePullBackOff"})
CONTAINER_CONFIG: Final = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
NOT_READY_TAINTS: Final = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _get(obj: Any, *path: str) -> Any:
    """``obj[a][b]...`` over dicts or lightkube models (None when missing)."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj


def observe_job(job: Any, pods: Iterable[Any] = ()) -> ObservedJob:
    """A Job (dict from a Kopf event/index or a lightkube model). Finished means a
    terminal condition is True (Complete or Failed): the Job controller sets those only
    once the pods have terminated (FailureTarget/SuccessCriteriaMet come earlier)."""
    conditions = _get(job, "status", "conditions") or []
    finished = succeeded = False
    reason: str | None = None
    for c in conditions:
        if _get(c, "status") != "True":
            continue
        ctype = _get(c, "type")
        if ctype == "Complete":
            finished = succeeded = True
        elif ctype == "Failed":
            finished = True
            reason = _get(c, "reason") or "Failed"
    return ObservedJob(
        name=str(_get(job, "metadata", "name") or ""),
        uid=str(_get(job, "metadata", "uid") or ""),
        finished=finished,
        succeeded=succeeded,
        deleting=_get(job, "metadata", "deletionTimestamp") is not None,
        reason=reason,
        start_failure=pod_start_failure(pods),
    )


def pod_start_failure(pods: Iterable[Any]) -> StartFailure | None:
    """Why the Job's pod stopped, or cannot go on, before the job reported: the first
    of its pods (newest first) that says so (pure; pods as dicts or lightkube models).
    None: nothing wrong can be seen (running, succeeded, or failed machines, which the
    results document reports)."""
    ordered = sorted(
        pods, key=lambda p: str(_get(p, "metadata", "creationTimestamp") or ""), reverse=True
    )
    for pod in ordered:
        found = _pod_failure(pod)
        if found is not None:
            return found
    return None


def _pod_failure(pod: Any) -> StartFailure | None:
    for status in _get(pod, "status", "initContainerStatuses") or []:
        found = _container_failure(status, init=True)
        if found is not None:
            return found
    for status in _get(pod, "status", "containerStatuses") or []:
        found = _container_failure(status, init=False)
        if found is not None:
            return found
    for cond in _get(pod, "status", "conditions") or []:
        found = _condition_failure(cond)
        if found is not None:
            return found
    if _get(pod, "status", "phase") == "Failed" and _get(pod, "status", "reason"):
        reason = str(_get(pod, "status", "reason"))
        message = str(_get(pod, "status", "message") or f"the pod failed ({reason})")
        return StartFailure(reason=reason, message=message)
    return None


def _container_failure(status: Any, init: bool) -> StartFailure | None:
    name = str(_get(status, "name") or "")
    waiting = _get(status, "state", "waiting")
    if waiting is not None:
        reason = str(_get(waiting, "reason") or "")
        message = str(_get(waiting, "message") or reason)
        image = str(_get(status, "image") or "")
        if reason in IMAGE_NEVER:
            return StartFailure(
                reason=reason, message=f"image {image}: {message}", fatal=True, final=True
            )
        if reason in IMAGE_PULL:
            return StartFailure(reason=reason, message=f"image {image}: {message}", final=False)
        if reason in CONTAINER_CONFIG:
            return StartFailure(reason=reason, message=f"container {name}: {message}", final=False)
        return None
    terminated = _get(status, "state", "terminated")
    if terminated is None:
        return None
    code = int(_get(terminated, "exitCode") or 0)
    text = " ".join(str(_get(terminated, "message") or "").split())
    if code == 0:
        return None
    if init:  # the package image's copy
        detail = text or f"exit status {code} ({_get(terminated, 'reason') or 'Error'})"
        return StartFailure(
            reason="PackageCopyFailed",
            message=f"init container {name}: {detail}",
            fatal=code not in (137, 143),
        )
    if code == EXIT_CANNOT_START:
        m = REASON_RE.match(text)
        reason, message = (m.group(1), m.group(2)) if m else ("JobCannotStart", text)
        return StartFailure(
            reason=reason,
            message=message or "the job could not start (no termination message)",
            fatal=reason in FATAL_REASONS,
        )
    if code == 1 and _get(terminated, "reason") in (None, "Error", "Completed"):
        return None  # machines failed: the results document says which and why
    why = str(_get(terminated, "reason") or "Error")
    return StartFailure(
        reason=why if re.fullmatch(r"[A-Z][A-Za-z0-9]{1,63}", why) else "JobFailed",
        message=f"the job's container ended with exit status {code} ({why})"
        + (f": {text}" if text else ""),
    )


def _condition_failure(cond: Any) -> StartFailure | None:
    ctype, status = _get(cond, "type"), _get(cond, "status")
    message = str(_get(cond, "message") or "")
    if ctype == "PodScheduled" and status == "False" and _get(cond, "reason") == "Unschedulable":
        if any(taint in message for taint in NOT_READY_TAINTS):
            return StartFailure(
                reason="ProxyNodeNotReady",
                message=f"the pod cannot be scheduled: {message}",
                final=False,
            )
        return StartFailure(
            reason="Unschedulable", message=f"the pod cannot be scheduled: {message}", final=False
        )
    if ctype == "DisruptionTarget" and status == "True":
        why = str(_get(cond, "reason") or "DisruptionTarget")
        not_ready = why == "DeletionByTaintManager"
        return StartFailure(
            reason="ProxyNodeNotReady" if not_ready else why,
            message=f"the pod was evicted ({why}): {message}".rstrip(": "),
        )
    return None


def node_ip(node: Any) -> str:
    addresses = _get(node, "status", "addresses") or []
    for kind in ("InternalIP", "ExternalIP"):
        for a in addresses:
            if _get(a, "type") == kind:
                return str(_get(a, "address"))
    return ""


def installed_nodes(nodes: Iterable[Any], task_label: str) -> dict[str, str]:
    """name -> IP of the Nodes carrying ``task_label`` (the caller lists them by label
    selector; the filter here only guards against a stale index)."""
    out: dict[str, str] = {}
    for n in nodes:
        labels = _get(n, "metadata", "labels") or {}
        if labels.get(NODE_LABEL) == task_label:
            out[str(_get(n, "metadata", "name"))] = node_ip(n)
    return out
