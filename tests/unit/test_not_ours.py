"""The operator reads and writes only objects whose controller owner is the task
(issue 12, item 9: a deleted task of the same name and label whose objects are still
being garbage-collected)."""

from __future__ import annotations

import pytest
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import ConfigMap

from penetrator.api import NodeTask
from penetrator.operator.runtime import NotOurs, check_ours, foreign_owner

TASK = NodeTask.from_dict(
    {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": "nodes", "uid": "new-uid"},
        "spec": {"nodeNamesOverride": {"edge-a": "10.0.0.1"}, "sshCredential": "login"},
    }
)


def configmap(*owners: tuple[str, bool]) -> ConfigMap:
    refs = [
        OwnerReference(
            apiVersion="nodetask.apps.superedge.io/v1beta1",
            kind="NodeTask",
            name="nodes",
            uid=uid,
            controller=controller,
        )
        for uid, controller in owners
    ]
    return ConfigMap(metadata=ObjectMeta(name="nodes-config-1", ownerReferences=refs or None))


def test_the_tasks_own_object_and_an_absent_one_pass() -> None:
    ours = configmap(("new-uid", True))
    assert foreign_owner(ours, TASK) is None
    assert check_ours(ours, TASK) is ours
    assert check_ours(None, TASK) is None


@pytest.mark.parametrize(
    ("owners", "whose"),
    [
        ((("old-uid", True),), "object old-uid"),  # the deleted task of the same name
        ((("new-uid", False),), "no task"),  # ours only as a non-controller
        ((), "no task"),
    ],
)
def test_an_object_of_another_owner_is_not_ours(
    owners: tuple[tuple[str, bool], ...], whose: str
) -> None:
    with pytest.raises(NotOurs) as e:
        check_ours(configmap(*owners), TASK)
    assert f"ConfigMap edge-system/nodes-config-1 belongs to {whose}" in str(e.value)
    assert "it is left alone: delete it" in str(e.value)
