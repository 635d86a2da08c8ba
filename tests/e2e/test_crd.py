"""The CRD (charts/penetrator/crds/nodetasks.yaml) against a real kube-apiserver: the
seed's examples are accepted, bad tasks are refused with the field named, the spec
cannot change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from support import REPO, nodetask_yaml, wait_for

pytestmark = pytest.mark.cluster

CRD_FILE = REPO / "charts" / "penetrator" / "crds" / "nodetasks.yaml"
EXAMPLES = REPO / "deploy" / "examples"
CRD_NAME = "nodetasks.nodetask.apps.superedge.io"


class Cluster(Protocol):
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> Any: ...  # subprocess.CompletedProcess[str]


def add_spec(**over: Any) -> dict[str, Any]:
    """The seed's add example, with changes (a value of None removes the field)."""
    spec: dict[str, Any] = {
        "nodeNamePrefix": "edge",
        "targetMachines": ["172.21.3.194", "172.21.3.195"],
        "sshCredential": "login-secret",
        "proxyNode": "vm-2-117-centos",
    }
    spec.update(over)
    return {k: v for k, v in spec.items() if v is not None}


@pytest.fixture(scope="module")
def kubectl(cluster: Cluster) -> Cluster:
    """The cluster, with the CRD applied and established."""
    applied = cluster.kubectl("apply", "-f", str(CRD_FILE))
    assert CRD_NAME in applied.stdout
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", f"crd/{CRD_NAME}")
    return cluster


@pytest.fixture
def cleanup(kubectl: Cluster) -> Iterator[list[str]]:
    """Names of NodeTasks to delete after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        kubectl.kubectl("delete", "nodetask", name, "--ignore-not-found", "--wait=true")


def test_crd_is_established_with_names(kubectl: Cluster) -> None:
    out = kubectl.kubectl(
        "get",
        f"crd/{CRD_NAME}",
        "-o",
        "jsonpath={.spec.scope} {.spec.names.shortNames} "
        "{.status.conditions[?(@.type=='Established')].status}",
    ).stdout
    assert out == 'Cluster ["nt"] True'
    resources = kubectl.kubectl("api-resources", "--api-group=nodetask.apps.superedge.io").stdout
    assert "nodetasks" in resources
    assert " nt " in resources


def explain(kubectl: Cluster, field: str) -> str:
    """``kubectl explain``, once the apiserver has published the CRD's OpenAPI (it
    does so a moment after Established)."""

    def answered() -> str | None:
        proc = kubectl.kubectl("explain", field, check=False)
        return str(proc.stdout) if proc.returncode == 0 else None

    return wait_for(answered, f"`kubectl explain {field}` to answer", 60, interval=1)


def test_explain_teaches_the_user(kubectl: Cluster) -> None:
    out = explain(kubectl, "nodetask.spec")
    for text in (
        "nodeNamePrefix",
        "targetMachines",
        "nodeNamesOverride",
        "sshCredential",
        "proxyNode",
        "sshPort",
        "edge-system",
        "passwd",
        "sshkey",
        "cannot be changed after creation",
    ):
        assert text in out
    assert "1-65535" in explain(kubectl, "nt.spec.sshPort")
    assert "creating" in explain(kubectl, "nt.status.nodetaskStatus")


def test_seed_add_example_round_trip(kubectl: Cluster, cleanup: list[str]) -> None:
    cleanup.append("nodes")
    created = kubectl.kubectl("create", "-f", str(EXAMPLES / "nodetask-add.yaml"))
    assert "nodetask.nodetask.apps.superedge.io/nodes created" in created.stdout

    status = kubectl.kubectl(
        "get", "nt", "nodes", "-o", "custom-columns=STATUS:status.nodetaskStatus"
    ).stdout.splitlines()
    assert status == ["STATUS", "<none>"]  # no operator yet: the object exists, no status
    assert kubectl.kubectl("get", "nt", "nodes", "-o", "jsonpath={.spec.sshPort}").stdout == "22"

    kubectl.kubectl(
        "patch",
        "nt",
        "nodes",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"nodetaskStatus": "creating", "planned": 2, "joined": 0, "failed": 0,'
        ' "nodeStatus": {"edge-ab12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"},'
        ' "machines": {"edge-ab12cd": {"phase": "connecting", "attempts": 1}}}}',
    )
    status = kubectl.kubectl(
        "get", "nt", "nodes", "-o", "custom-columns=STATUS:status.nodetaskStatus"
    ).stdout.splitlines()
    assert status == ["STATUS", "creating"]

    table = kubectl.kubectl("get", "nt").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "STATUS",
        "PLANNED",
        "JOINED",
        "FAILED",
        "PROXY",
        "NODE",
        "AGE",
    ]
    row = next(line.split() for line in table if line.startswith("nodes "))
    assert row[:6] == ["nodes", "creating", "2", "0", "0", "vm-2-117-centos"]


def test_status_is_validated_too(kubectl: Cluster, cleanup: list[str]) -> None:
    cleanup.append("status-check")
    kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("status-check", **add_spec()))
    bad = kubectl.kubectl(
        "patch",
        "nt",
        "status-check",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"nodetaskStatus": "done"}}',
        check=False,
    )
    assert bad.returncode != 0
    assert "status.nodetaskStatus" in bad.stderr


def test_seed_reinstall_example_is_accepted(kubectl: Cluster, cleanup: list[str]) -> None:
    text = (EXAMPLES / "nodetask-reinstall.yaml").read_text().replace("name: nodes", "name: again")
    cleanup.append("again")
    kubectl.kubectl("create", "-f", "-", input=text)
    override = kubectl.kubectl(
        "get", "nt", "again", "-o", "jsonpath={.spec.nodeNamesOverride}"
    ).stdout
    assert override == '{"edge-1mokvl":"172.21.3.194"}'


def test_direct_mode_and_ipv6_are_accepted(kubectl: Cluster, cleanup: list[str]) -> None:
    cleanup.append("direct")
    spec = add_spec(
        proxyNode=None, targetMachines=["fd00::1", "10.0.0.1", "10.0.0.1"], sshPort=2222
    )
    kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("direct", **spec))


REJECTED = [
    pytest.param(
        add_spec(targetMachines=["172.21.3"]),
        ["spec.targetMachines[0]", "172.21.3"],
        id="malformed-ip",
    ),
    pytest.param(
        add_spec(targetMachines=["256.1.1.1"]), ["spec.targetMachines[0]", "256.1.1.1"], id="ip-256"
    ),
    pytest.param(
        add_spec(targetMachines=["10.0.0.1", "1.2.3.4;rm -rf /"]),
        ["spec.targetMachines[1]", "1.2.3.4;rm -rf /"],
        id="ip-shell-metacharacters",
    ),
    pytest.param(
        add_spec(targetMachines=["$(reboot)"]),
        ["spec.targetMachines[0]"],
        id="ip-command-substitution",
    ),
    pytest.param(
        add_spec(targetMachines=["01.2.3.4"]), ["spec.targetMachines[0]"], id="ip-leading-zero"
    ),
    pytest.param(
        add_spec(targetMachines=None, nodeNamesOverride={"edge-a": "10.0.0.256"}),
        ["spec.nodeNamesOverride[edge-a]", "10.0.0.256"],
        id="override-bad-ip",
    ),
    pytest.param(
        add_spec(nodeNamesOverride={"edge-1mokvl": "172.21.3.194"}),
        ["spec", "give only one of spec.targetMachines", "spec.nodeNamesOverride"],
        id="both-lists",
    ),
    pytest.param(
        add_spec(nodeNamesGenerated=True),
        ["spec.nodeNamesGenerated", "set by the admission webhook only"],
        id="generated-mark-by-user",
    ),
    pytest.param(
        add_spec(targetMachines=None),
        ["spec", "give spec.targetMachines", "spec.nodeNamesOverride"],
        id="neither",
    ),
    pytest.param(
        add_spec(targetMachines=[]), ["spec.targetMachines", "at least 1 items"], id="empty-list"
    ),
    pytest.param(
        add_spec(targetMachines=None, nodeNamesOverride={}),
        ["spec.nodeNamesOverride", "at least 1"],
        id="empty-map",
    ),
    pytest.param(
        add_spec(nodeNamePrefix="Edge_1"),
        ["spec.nodeNamePrefix", "should match"],
        id="prefix-not-dns1123",
    ),
    pytest.param(
        add_spec(nodeNamePrefix="e" * 57), ["spec.nodeNamePrefix", "56"], id="prefix-too-long"
    ),
    pytest.param(
        add_spec(nodeNamePrefix=None), ["spec.nodeNamePrefix", "is required"], id="prefix-missing"
    ),
    pytest.param(
        add_spec(targetMachines=None, nodeNamesOverride={"Edge_A": "10.0.0.1"}),
        ["spec.nodeNamesOverride", "DNS-1123"],
        id="override-bad-name",
    ),
    pytest.param(
        add_spec(targetMachines=None, nodeNamesOverride={"a" * 64: "10.0.0.1"}),
        ["spec.nodeNamesOverride", "at most 63"],
        id="override-long-name",
    ),
    pytest.param(add_spec(sshPort=0), ["spec.sshPort", "greater than or equal to 1"], id="port-0"),
    pytest.param(
        add_spec(sshPort=70000), ["spec.sshPort", "less than or equal to 65535"], id="port-70000"
    ),
    pytest.param(
        add_spec(sshCredential=""),
        ["spec.sshCredential", "at least 1 chars"],
        id="empty-credential",
    ),
    pytest.param(
        add_spec(sshCredential=None), ["spec.sshCredential", "Required"], id="missing-credential"
    ),
    pytest.param(
        add_spec(sshCredential="Login_Secret"),
        ["spec.sshCredential", "should match"],
        id="credential-not-a-name",
    ),
    pytest.param(
        add_spec(proxyNode="vm 2; id"), ["spec.proxyNode", "should match"], id="proxy-not-a-name"
    ),
]


@pytest.mark.parametrize(("spec", "expected"), REJECTED)
def test_bad_task_is_refused_with_the_field_named(
    kubectl: Cluster, cleanup: list[str], spec: dict[str, Any], expected: list[str]
) -> None:
    cleanup.append("refused")
    proc = kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("refused", **spec), check=False)
    assert proc.returncode != 0, proc.stdout
    assert 'The NodeTask "refused" is invalid' in proc.stderr
    for text in expected:
        assert text in proc.stderr


def test_webhook_shape_with_both_lists_is_stored(kubectl: Cluster, cleanup: list[str]) -> None:
    """What the mutating webhook writes on create: generated names, marked."""
    cleanup.append("planned")
    spec = add_spec(
        nodeNamesOverride={"edge-ab12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"},
        nodeNamesGenerated=True,
    )
    kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("planned", **spec))


def test_spec_is_immutable(kubectl: Cluster, cleanup: list[str]) -> None:
    cleanup.append("fixed")
    kubectl.kubectl("apply", "-f", "-", input=nodetask_yaml("fixed", **add_spec()))
    again = kubectl.kubectl("apply", "-f", "-", input=nodetask_yaml("fixed", **add_spec()))
    assert "unchanged" in again.stdout

    for change in (
        add_spec(targetMachines=["172.21.3.194", "172.21.3.196"]),
        add_spec(sshPort=2222),
        add_spec(proxyNode=None),
    ):
        proc = kubectl.kubectl(
            "apply", "-f", "-", input=nodetask_yaml("fixed", **change), check=False
        )
        assert proc.returncode != 0
        assert "spec is immutable" in proc.stderr
        assert "create a new NodeTask" in proc.stderr

    patch = kubectl.kubectl(
        "patch", "nt", "fixed", "--type=merge", "-p", '{"spec": {"sshPort": 2200}}', check=False
    )
    assert patch.returncode != 0
    assert "spec is immutable" in patch.stderr

    # Metadata (the webhook's label and annotations) can still change.
    kubectl.kubectl("label", "nt", "fixed", "app.superedge.io/node-label=fixed-abc123")
    kubectl.kubectl("annotate", "nt", "fixed", "app.superedge.io/job-name=fixed-job")
    assert (
        kubectl.kubectl("get", "nt", "fixed", "-o", "jsonpath={.spec.targetMachines}").stdout
        == '["172.21.3.194","172.21.3.195"]'
    )


def test_generated_names_may_be_written_once_and_nothing_else(
    kubectl: Cluster, cleanup: list[str]
) -> None:
    """Without a webhook the operator writes the names it generated into the spec,
    as the webhook would on create: that change, once, and no other."""
    cleanup.append("named-later")
    kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("named-later", **add_spec()))
    names = {"edge-ab12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"}

    def patch(spec: dict[str, Any]) -> Any:
        body = json.dumps({"spec": spec})
        return kubectl.kubectl(
            "patch", "nt", "named-later", "--type=merge", "-p", body, check=False
        )

    for worse in (
        {"nodeNamesOverride": names, "nodeNamesGenerated": True, "sshPort": 2200},
        {"nodeNamesOverride": names, "nodeNamesGenerated": True, "proxyNode": "other"},
        {"nodeNamesOverride": names, "nodeNamesGenerated": True,
         "targetMachines": ["172.21.3.194", "172.21.3.195", "172.21.3.196"]},
        {"nodeNamesOverride": names},  # without the mark
    ):  # fmt: skip
        refused = patch(worse)
        assert refused.returncode != 0, worse
        assert "spec" in refused.stderr
    ok = patch({"nodeNamesOverride": names, "nodeNamesGenerated": True})
    assert ok.returncode == 0, ok.stderr
    stored = kubectl.kubectl("get", "nt", "named-later", "-o", "jsonpath={.spec.nodeNamesOverride}")
    assert json.loads(stored.stdout) == names
    again = patch({"nodeNamesOverride": {"edge-qq11qq": "172.21.3.194", "edge-zz99aa": None}})
    assert again.returncode != 0
    assert "spec is immutable" in again.stderr


def test_5000_machine_task_fits_the_cel_budget(kubectl: Cluster, cleanup: list[str]) -> None:
    """The largest task the schema admits passes every rule (CEL cost included)."""
    names = {
        f"{'n' * 56}-{i:06d}": f"fd00:ffff:ffff:ffff:ffff:ffff:ffff:{i:04x}" for i in range(5000)
    }
    spec = add_spec(
        nodeNamePrefix="n" * 56,
        targetMachines=list(names.values()),
        nodeNamesOverride=names,
        nodeNamesGenerated=True,
    )
    cleanup.append("largest")
    kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("largest", **spec))
    kubectl.kubectl("label", "nt", "largest", "app.superedge.io/node-label=largest-abc123")
    too_many = add_spec(targetMachines=[f"10.0.{i // 256}.{i % 256}" for i in range(5001)])
    proc = kubectl.kubectl(
        "create", "-f", "-", input=nodetask_yaml("refused", **too_many), check=False
    )
    cleanup.append("refused")
    assert proc.returncode != 0
    assert "spec.targetMachines" in proc.stderr
    assert "5000" in proc.stderr


def test_misspelt_field_is_refused(kubectl: Cluster, cleanup: list[str]) -> None:
    cleanup.append("typo")
    spec = add_spec(targetMachine=["172.21.3.196"])
    proc = kubectl.kubectl("create", "-f", "-", input=nodetask_yaml("typo", **spec), check=False)
    assert proc.returncode != 0
    assert 'unknown field "spec.targetMachine"' in proc.stderr
