"""Pure builders of the Events the operator writes about a task (typed lightkube models).

One occurrence is written as two core/v1 Events, because no single Event can be
found both ways users look (checked against kube-apiserver and kubectl v1.37):

* ``kubectl -n edge-system get events [--field-selector involvedObject.name=TASK]``
  (compat.md: Events live in edge-system) lists Events stored in edge-system. The API
  server accepts an Event there only if its ``involvedObject.namespace`` is
  edge-system too: an empty one is refused outside ``default`` (and, for Events with
  ``eventTime``, ``kube-system``), in core/v1 and events.k8s.io/v1 (``regarding``)
  alike (``legacyValidateEvent``, "does not match event.namespace").
* ``kubectl describe nt TASK`` lists Events of *all* namespaces with the field
  selector involvedObject.name=TASK, involvedObject.namespace= (empty: the task is
  cluster-scoped), involvedObject.kind=NodeTask, involvedObject.uid=UID. Only an Event
  whose involvedObject has no namespace matches, so it must live in ``default``,
  where Kubernetes keeps Events about cluster-scoped objects (a Node's, for one).

Each copy matches one of the two look-ups only, so neither shows a duplicate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from penetrator.api import API_VERSION, KIND, NodeTask

CLUSTER_EVENTS_NAMESPACE: Final = "default"
"""Where the API server accepts an Event about a cluster-scoped object named as such."""
COMPONENT: Final = "penetrator-operator"
MESSAGE_LIMIT: Final = 1024


def task_reference(task: NodeTask) -> ObjectReference:
    """The cluster-scoped task as an involvedObject: no namespace, with its uid."""
    return ObjectReference(apiVersion=API_VERSION, kind=KIND, name=task.name, uid=task.metadata.uid)


def build_events(
    about: ObjectReference,
    namespace: str,
    type_: str,
    reason: str,
    message: str,
    *,
    now: datetime,
    instance: str,
    once: bool = False,
) -> list[Event]:
    """The Events that say one thing about the cluster-scoped object ``about`` (a task,
    or a machine's Node: ``ObjectReference(apiVersion="v1", kind="Node", ...)``): one in
    ``namespace`` (its involvedObject carries that namespace, as the API server
    requires there) and one in ``default`` (its involvedObject has none: what
    ``kubectl describe`` finds); just the latter when ``namespace`` is ``default``.

    ``once``: a fixed name, so that a second create is refused (409), not doubled."""
    name = about.name or ""
    fixed = f"{name[:200]}.{reason.lower()}.{(about.uid or '')[:8]}"
    namespaces = [namespace] if namespace != CLUSTER_EVENTS_NAMESPACE else []
    namespaces.append(CLUSTER_EVENTS_NAMESPACE)
    return [
        Event(
            metadata=ObjectMeta(
                name=fixed if once else None,
                generateName=None if once else f"{name[:200]}.",
                namespace=ns,
            ),
            involvedObject=ObjectReference(
                apiVersion=about.apiVersion,
                kind=about.kind,
                name=about.name,
                uid=about.uid,
                namespace=None if ns == CLUSTER_EVENTS_NAMESPACE else ns,
            ),
            reason=reason,
            message=message[:MESSAGE_LIMIT],
            type=type_,
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            source=EventSource(component=COMPONENT),
            reportingComponent=COMPONENT,
            reportingInstance=instance[:128],
        )
        for ns in namespaces
    ]
