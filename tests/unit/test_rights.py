"""A task cannot exceed its author's rights (issue 12, items 1-3), the pure parts:
address classes no machine has, the cluster's own addresses, the Nodes a reinstall
replaces and the rights it needs, control-plane Nodes, object names from the uid
and the controller check before a write."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference

from penetrator.api import NodeTaskSpec, check_machine_address, parse_ip
from penetrator.api.models import NodeTask, object_name
from penetrator.api.validation import address_class
from penetrator.k8s.builders import controlled_by, controller_text
from penetrator.plan.addresses import (
    ClusterNetworks,
    NodeFacts,
    cluster_address_problems,
    control_plane_problems,
    replaced_nodes,
)
from penetrator.plan.admission import CreateFacts, rights_needed, rights_problems, validate_create

# --- address classes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
    ],
)
def test_each_class_no_machine_has_is_refused_naming_it(ip: str, kind: str) -> None:
    assert address_class(parse_ip(ip)) == kind
    problem = check_machine_address(ip)
    assert problem is not None
    article = "an" if kind == "unspecified" else "a"
    assert problem.startswith(f"{ip} is {article} {kind} address")


@pytest.mark.parametrize("ip", ["10.0.0.1", "172.21.3.194", "192.168.1.1", "8.8.8.8", "fd00::1"])
def test_machine_addresses_pass(ip: str) -> None:
    assert address_class(parse_ip(ip)) is None
    assert check_machine_address(ip) is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"targetMachines": ["10.0.0.1", "127.0.0.1"], "nodeNamePrefix": "e"}, "targetMachines"),
        ({"nodeNamesOverride": {"control-plane": "::1"}}, "nodeNamesOverride"),
        ({"nodeNamesOverride": {"edge-1": "169.254.1.1"}}, "nodeNamesOverride"),
    ],
)
def test_the_spec_names_the_field_of_a_bad_address(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as e:
        NodeTaskSpec.model_validate({"sshCredential": "login", **spec})
    assert "never a machine to install" in str(e.value)


# --- the cluster's own addresses ---------------------------------------------------------

CP = NodeFacts(
    "control-plane",
    (("InternalIP", "10.9.0.2"), ("Hostname", "control-plane")),
    control_plane=True,
    pod_cidrs=("10.244.0.0/24",),
)
EDGE = NodeFacts(
    "edge-1",
    (("InternalIP", "172.21.3.10"), ("ExternalIP", "203.0.113.7")),
    pod_cidrs=("10.244.1.0/24",),
)
CLUSTER = ClusterNetworks.of(["10.96.0.0/12", "fd00:96::/112"], [CP, EDGE])


def test_pod_networks_of_the_nodes_are_merged() -> None:
    assert [str(n) for n in CLUSTER.pod_cidrs] == ["10.244.0.0/23"]


@pytest.mark.parametrize(
    ("ip", "says"),
    [
        ("10.96.0.1", "Service network 10.96.0.0/12"),
        ("fd00:96::a", "Service network fd00:96::/112"),
        ("10.244.1.7", "Pod network 10.244.0.0/23"),
        ("10.9.0.2", "already the InternalIP of Node control-plane"),
        ("172.21.3.10", "already the InternalIP of Node edge-1"),
        ("203.0.113.7", "already the ExternalIP of Node edge-1"),
    ],
)
def test_an_add_task_may_not_list_the_clusters_own_addresses(ip: str, says: str) -> None:
    (problem,) = cluster_address_problems("spec.targetMachines", {ip: ip}, CLUSTER, False)
    assert problem.startswith(f"spec.targetMachines: {ip} is ")
    assert says in problem


def test_a_reinstall_may_list_a_nodes_address_but_not_the_networks() -> None:
    plan = {"edge-1": "172.21.3.10", "edge-2": "10.96.0.10"}
    (problem,) = cluster_address_problems("spec.nodeNamesOverride", plan, CLUSTER, True)
    assert problem.startswith("spec.nodeNamesOverride[edge-2]: 10.96.0.10 is in the cluster's")


def test_a_machine_outside_the_cluster_passes() -> None:
    assert (
        cluster_address_problems("spec.targetMachines", {"x": "172.21.3.11"}, CLUSTER, False) == []
    )


# --- the Nodes a reinstall replaces, control-plane Nodes ------------------------------------


def test_replaced_nodes_by_name_and_by_address() -> None:
    assert replaced_nodes({"edge-1": "172.21.3.10"}, CLUSTER) == {"edge-1": "reinstalled as edge-1"}
    renamed = replaced_nodes({"gateway": "172.21.3.10"}, CLUSTER)
    assert renamed == {"edge-1": "its address 172.21.3.10 is renamed to gateway"}
    # the control plane's name with an edge machine's address: both Nodes go
    both = replaced_nodes({"control-plane": "172.21.3.10"}, CLUSTER)
    assert set(both) == {"control-plane", "edge-1"}
    assert replaced_nodes({"new-1": "172.21.3.99"}, CLUSTER) == {}


def test_control_plane_nodes_refused_unless_allowed() -> None:
    replaced = replaced_nodes({"control-plane": "172.21.3.99"}, CLUSTER)
    (problem,) = control_plane_problems("spec.nodeNamesOverride", replaced, CLUSTER, False)
    assert problem.startswith("spec.nodeNamesOverride: Node control-plane is a control-plane")
    assert "webhook.allowControlPlaneNodes" in problem
    assert control_plane_problems("spec.nodeNamesOverride", replaced, CLUSTER, True) == []
    by_address = replaced_nodes({"edge-9": "10.9.0.2"}, CLUSTER)
    assert control_plane_problems("f", by_address, CLUSTER, False)


def _reinstall(plan: dict[str, str], credential: str = "login") -> dict[str, Any]:
    return {
        "metadata": {"name": "t1"},
        "spec": {"sshCredential": credential, "nodeNamesOverride": plan},
    }


def test_validate_create_uses_the_cluster_facts() -> None:
    facts = CreateFacts({"passwd": 3}, None, {}, CLUSTER)
    problems = validate_create(_reinstall({"control-plane": "172.21.3.99"}), facts)
    assert [p.split(":")[0] for p in problems] == ["spec.nodeNamesOverride"]
    allowed = CreateFacts({"passwd": 3}, None, {}, CLUSTER, allow_control_plane=True)
    assert validate_create(_reinstall({"control-plane": "172.21.3.99"}), allowed) == []
    add = {"metadata": {"name": "t2"}, "spec": {"sshCredential": "login",
           "nodeNamePrefix": "e", "targetMachines": ["10.9.0.2"]}}  # fmt: skip
    (problem,) = validate_create(add, facts)
    assert problem.startswith("spec.targetMachines: 10.9.0.2 is already the InternalIP")


# --- the requester's rights ---------------------------------------------------------------


def test_rights_needed_by_an_add_task_the_credential_only() -> None:
    spec = NodeTaskSpec.model_validate(
        {"sshCredential": "team-b", "nodeNamePrefix": "e", "targetMachines": ["172.21.3.50"]}
    )
    (right,) = rights_needed(spec, CLUSTER)
    assert (right.verb, right.resource, right.name, right.namespace) == (
        "get", "secrets", "team-b", "edge-system",
    )  # fmt: skip
    (msg,) = rights_problems("alice", [right])
    assert msg.startswith("spec.sshCredential: alice may not get Secret edge-system/team-b")
    assert "(missing right: get on secrets/team-b in edge-system)" in msg


def test_rights_needed_by_a_reinstall_delete_on_each_replaced_node() -> None:
    spec = NodeTaskSpec.model_validate(_reinstall({"control-plane": "172.21.3.10"})["spec"])
    rights = rights_needed(spec, CLUSTER)
    deletes = {r.name: r for r in rights if r.verb == "delete"}
    assert set(deletes) == {"control-plane", "edge-1"}
    msgs = rights_problems("alice", [deletes["control-plane"]])
    assert msgs == [
        "spec.nodeNamesOverride: alice may not delete Node control-plane (missing right: "
        "delete on nodes/control-plane); the task replaces Node control-plane "
        "(reinstalled as control-plane)"
    ]
    # without the cluster's facts, only what the spec names
    assert [r.verb for r in rights_needed(spec, None)] == ["get"]


# --- object names and owners ------------------------------------------------------------------


def test_object_names_come_from_the_uid_not_the_annotations() -> None:
    data = _reinstall({"edge-1": "172.21.3.10"})
    data["metadata"] |= {
        "uid": "0f6c1d2e-aaaa-bbbb-cccc-123456789abc",
        "annotations": {
            "app.superedge.io/job-name": "penetrator-operator",
            "app.superedge.io/configmap-name": "other-task-config",
        },
    }
    task = NodeTask.from_dict(data)
    assert task.job_name == task.configmap_name == object_name(str(task.metadata.uid))
    assert task.job_name == "nodetask-0f6c1d2e-aaaa-bbbb-cccc-123456789abc"
    assert len(task.job_name) <= 63  # a Job name goes into a label value


def _ref(uid: str, controller: bool | None = True) -> OwnerReference:
    return OwnerReference(
        apiVersion="nodetask.apps.superedge.io/v1beta1",
        kind="NodeTask",
        name="t1",
        uid=uid,
        controller=controller,
    )


def test_only_an_object_this_task_controls_is_its_own() -> None:
    assert controlled_by(ObjectMeta(ownerReferences=[_ref("u-1")]), "u-1")
    assert not controlled_by(ObjectMeta(ownerReferences=[_ref("u-2")]), "u-1")  # another task
    assert not controlled_by(
        ObjectMeta(ownerReferences=[_ref("u-1", None)]), "u-1"
    )  # not controller
    assert not controlled_by(ObjectMeta(), "u-1")  # no owner: made by someone else
    assert not controlled_by(None, "u-1")
    assert not controlled_by(ObjectMeta(ownerReferences=[_ref("")]), "")
    assert controller_text(ObjectMeta(ownerReferences=[_ref("u-2")])) == "NodeTask t1 (uid u-2)"
    assert controller_text(ObjectMeta()) == "nothing"
