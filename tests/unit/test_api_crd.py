"""The CRD (charts/penetrator/crds/nodetasks.yaml) and penetrator.api say the same things."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from penetrator import api
from penetrator.api.validation import DNS1123_LABEL_RE, DNS1123_SUBDOMAIN_RE
from support import REPO

CRD_FILE = REPO / "charts" / "penetrator" / "crds" / "nodetasks.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
VERSION: dict[str, Any] = CRD["spec"]["versions"][0]
ROOT: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC: dict[str, Any] = ROOT["properties"]["spec"]
STATUS: dict[str, Any] = ROOT["properties"]["status"]


def test_names_match_compat() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == api.CRD_NAME == "nodetasks.nodetask.apps.superedge.io"
    assert CRD["spec"]["group"] == api.GROUP
    assert CRD["spec"]["scope"] == "Cluster"
    names = CRD["spec"]["names"]
    assert names["kind"] == api.KIND
    assert names["listKind"] == api.LIST_KIND
    assert names["plural"] == api.PLURAL
    assert names["singular"] == api.SINGULAR
    assert names["shortNames"] == [api.SHORT_NAME]
    assert api.CATEGORY in names["categories"]
    assert [v["name"] for v in CRD["spec"]["versions"]] == [api.VERSION]
    assert VERSION["served"]
    assert VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}
    assert f"{api.GROUP}/{api.VERSION}" == api.API_VERSION
    assert api.NodeTask.model_fields["api_version"].default == api.API_VERSION


def test_spec_fields_match_the_model() -> None:
    aliases = {f.alias for f in api.NodeTaskSpec.model_fields.values()}
    assert set(SPEC["properties"]) == aliases
    assert SPEC["required"] == ["sshCredential"]
    status_aliases = {f.alias or n for n, f in api.NodeTaskStatus.model_fields.items()}
    assert set(STATUS["properties"]) == status_aliases
    entry = STATUS["properties"]["machines"]["additionalProperties"]
    assert entry["properties"]["phase"]["enum"] == [p.value for p in api.MachinePhase]
    assert STATUS["properties"]["nodetaskStatus"]["enum"] == [p.value for p in api.TaskPhase]
    assert entry["properties"]["lastError"]["maxLength"] == api.MAX_ERROR_LENGTH
    assert STATUS["properties"]["machines"]["maxProperties"] == api.MAX_MACHINE_ENTRIES
    condition = STATUS["properties"]["conditions"]["items"]["properties"]
    assert set(condition) == {f.alias or n for n, f in api.Condition.model_fields.items()}


def test_limits_match() -> None:
    props = SPEC["properties"]
    assert props["nodeNamePrefix"]["maxLength"] == api.MAX_PREFIX_LENGTH == 56
    assert props["targetMachines"]["maxItems"] == api.MAX_MACHINES
    assert props["nodeNamesOverride"]["maxProperties"] == api.MAX_MACHINES
    assert props["targetMachines"]["minItems"] == 1
    assert props["nodeNamesOverride"]["minProperties"] == 1
    for ip in (
        props["targetMachines"]["items"],
        props["nodeNamesOverride"]["additionalProperties"],
    ):
        assert ip["maxLength"] == api.MAX_IP_LENGTH
        assert ip["x-kubernetes-validations"][0]["rule"] == "isIP(self)"
    assert props["sshPort"] == {
        **props["sshPort"],
        "default": api.DEFAULT_SSH_PORT,
        "minimum": 1,
        "maximum": 65535,
    }
    assert props["sshCredential"]["minLength"] == 1
    assert props["sshCredential"]["maxLength"] == api.MAX_OBJECT_NAME_LENGTH
    rule = props["nodeNamesOverride"]["x-kubernetes-validations"][0]["rule"]
    assert f"size(n) <= {api.MAX_NODE_NAME_LENGTH}" in rule


def _pattern(schema: dict[str, Any]) -> re.Pattern[str]:
    return re.compile(schema["pattern"])


@pytest.mark.parametrize(
    "value", ["edge", "e", "edge-1", "1edge", "Edge", "edge_1", "-edge", "edge-", "a.b", ""]
)
def test_prefix_pattern_is_dns1123_label(value: str) -> None:
    crd = bool(_pattern(SPEC["properties"]["nodeNamePrefix"]).search(value))
    assert crd == bool(DNS1123_LABEL_RE.fullmatch(value))


@pytest.mark.parametrize(
    "value", ["login-secret", "a.b", "a..b", "A", "a_b", "-a", "a-", "x" * 300, ""]
)
def test_credential_pattern_is_dns1123_subdomain(value: str) -> None:
    crd = bool(_pattern(SPEC["properties"]["sshCredential"]).search(value))
    assert crd == bool(DNS1123_SUBDOMAIN_RE.fullmatch(value))
    proxy = bool(_pattern(SPEC["properties"]["proxyNode"]).search(value))
    assert proxy == (value == "" or bool(DNS1123_SUBDOMAIN_RE.fullmatch(value)))


def test_node_name_regex_in_cel_is_dns1123_subdomain() -> None:
    rule = SPEC["properties"]["nodeNamesOverride"]["x-kubernetes-validations"][0]["rule"]
    (regex,) = re.findall(r"matches\('([^']*)'\)", rule)
    for value in ["edge-1mokvl", "a.b", "a..b", "Edge", "a_b", "-a", "a-", "a.-b"]:
        assert bool(re.search(regex, value)) == bool(DNS1123_SUBDOMAIN_RE.fullmatch(value))


def test_cel_rules_are_present() -> None:
    rules = " ".join(r["rule"] for r in SPEC["x-kubernetes-validations"])
    assert "has(self.targetMachines) || has(self.nodeNamesOverride)" in rules
    assert "self == oldSelf" in rules
    assert "!has(self.targetMachines) || has(self.nodeNamePrefix)" in rules
    for rule in SPEC["x-kubernetes-validations"]:
        assert rule["message"]


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Status": ".status.nodetaskStatus",
        "Planned": ".status.planned",
        "Joined": ".status.joined",
        "Failed": ".status.failed",
        "Proxy Node": ".spec.proxyNode",
        "Age": ".metadata.creationTimestamp",
    }


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    """Paths of properties without a description."""
    missing = []
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        if (
            "description" not in sub
            and name not in ("metadata",)
            and path != ".status.conditions[]"
        ):
            missing.append(here)
        missing += _walk(sub, here)
    if "items" in schema:
        missing += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        missing += _walk(schema["additionalProperties"], f"{path}{{}}")
    return missing


def test_every_field_is_described() -> None:
    assert _walk(ROOT, "") == []


def test_no_unknown_fields_are_preserved() -> None:
    assert "x-kubernetes-preserve-unknown-fields" not in CRD_FILE.read_text()


@pytest.mark.parametrize("path", sorted((REPO / "deploy" / "examples").glob("*.yaml")))
def test_examples_are_valid_tasks(path: Path) -> None:
    api.NodeTask.from_dict(yaml.safe_load(path.read_text()))
