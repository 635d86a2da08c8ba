"""What the operator observes, turned into the plain inputs of ``plan.reconcile``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from penetrator.api import NODE_LABEL
from penetrator.plan.reconcile import ObservedJob


def _get(obj: Any, *path: str) -> Any:
    """``obj[a][b]...`` over dicts or lightkube models (None when missing)."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj


def observe_job(job: Any) -> ObservedJob:
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
    )


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
