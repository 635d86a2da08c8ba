"""The webhook's objects in deploy/penetrator.yaml (the rendered chart), its settings and
its generated certificate (no cluster)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from penetrator.api.settings import WebhookSettings, load_settings
from penetrator.k8s.webhook_tls import build_serving_cert, service_hosts, usable
from penetrator.operator.webhook import MUTATE_CREATE, VALIDATE_CREATE, VALIDATE_UPDATE
from support import REPO

MANIFEST = REPO / "deploy" / "penetrator.yaml"


def docs(*kinds: str) -> list[dict[str, Any]]:
    """The objects of the one-file install (the rendered chart) of these kinds."""
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] in kinds]


def test_webhook_configurations() -> None:
    by_kind = {
        d["kind"]: d
        for d in docs("Service", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    }
    settings = WebhookSettings()
    service = by_kind["Service"]
    assert service["metadata"]["name"] == settings.service
    assert service["spec"]["ports"][0]["targetPort"] == settings.port
    deploy = {d["kind"]: d for d in docs("ConfigMap", "Deployment")}
    operator = deploy["Deployment"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= operator["metadata"]["labels"].items()
    deployed = load_settings(yaml.safe_load(deploy["ConfigMap"]["data"]["settings.yaml"]))
    assert deployed.webhook == settings.model_copy(update={"enabled": True})
    hooks = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = by_kind[kind]
        assert config["metadata"]["name"] == settings.configuration
        for w in config["webhooks"]:
            assert "caBundle" not in w["clientConfig"]  # written by the operator, never shipped
            assert w["clientConfig"]["service"]["name"] == settings.service
            assert w["timeoutSeconds"] <= 10
            assert w["sideEffects"] == "None"
            (rule,) = w["rules"]
            assert rule["resources"] == ["nodetasks"]  # not nodetasks/status
            hooks[w["clientConfig"]["service"]["path"]] = (rule["operations"], w["failurePolicy"])
    assert hooks == {
        f"/{MUTATE_CREATE}": (["CREATE"], "Fail"),
        f"/{VALIDATE_CREATE}": (["CREATE"], "Fail"),
        f"/{VALIDATE_UPDATE}": (["UPDATE"], "Ignore"),
    }


def test_webhook_rbac_is_least_privilege() -> None:
    rules = [
        r
        for d in docs("ClusterRole")
        if d["metadata"]["name"] == "penetrator-operator-webhook"
        for r in d["rules"]
    ]
    for r in rules:
        assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"]
    configs = [r for r in rules if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert configs[0]["resourceNames"] == [WebhookSettings().configuration]
    assert set(configs[0]["verbs"]) == {"get", "patch"}
    nodes = [r for r in rules if r["resources"] == ["nodes"]]
    assert nodes[0]["verbs"] == ["get"]  # by name; never a list of all Nodes for names


def test_generated_certificate_chain_and_names() -> None:
    hosts = service_hosts("penetrator-webhook", "edge-system")
    cert = build_serving_cert(hosts)
    ca = x509.load_pem_x509_certificate(cert.ca_pem)
    leaf = x509.load_pem_x509_certificate(cert.cert_pem)
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "penetrator-webhook.edge-system.svc" in sans.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert usable(cert, hosts)
    assert not usable(cert, [*hosts, "other.svc"])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    assert not usable(cert, hosts, now=later)  # renewed in its last 30 days
    assert b"PRIVATE KEY" in cert.key_pem
    assert b"PRIVATE KEY" not in cert.ca_pem + cert.cert_pem
    broken = type(cert)(cert.ca_pem, b"junk", cert.key_pem)
    assert not usable(broken, hosts)
