"""The API server address and CA pin that machines join with, from kubeadm's
``kube-public/cluster-info`` ConfigMap."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from penetrator.k8s.builders import ClusterInfo

CLUSTER_INFO_NAMESPACE = "kube-public"
CLUSTER_INFO_NAME = "cluster-info"


class ClusterInfoError(ValueError):
    """cluster-info is missing or unusable (the message says what to fix)."""


def ca_cert_hash(ca_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA certificate's SubjectPublicKeyInfo (kubeadm's pin)."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def parse_cluster_info(kubeconfig_text: str, server_override: str | None = None) -> ClusterInfo:
    """From the ``kubeconfig`` key of cluster-info: the first cluster's server and the
    pin of its CA. ``server_override`` replaces the server (an address the machines
    can reach when cluster-info's is internal)."""
    try:
        doc: Any = yaml.safe_load(kubeconfig_text)
        cluster = doc["clusters"][0]["cluster"]
        server = str(server_override or cluster["server"])
        ca = base64.b64decode(cluster["certificate-authority-data"])
        return ClusterInfo(server=server, ca_cert_hash=ca_cert_hash(ca))
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as e:
        raise ClusterInfoError(
            f"{CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO_NAME} has no usable kubeconfig "
            f"(server and certificate-authority-data): {type(e).__name__}"
        ) from None


async def read_cluster_info(client: AsyncClient, server_override: str | None = None) -> ClusterInfo:
    cm = await client.get(ConfigMap, CLUSTER_INFO_NAME, namespace=CLUSTER_INFO_NAMESPACE)
    text = (cm.data or {}).get("kubeconfig")
    if not text:
        raise ClusterInfoError(
            f"{CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO_NAME} has no kubeconfig key "
            "(kubeadm init creates it; so does `penetrator-dev testenv`)"
        )
    return parse_cluster_info(text, server_override)


async def server_version(client: AsyncClient) -> str:
    """The API server's version (``/version``'s gitVersion without build metadata, e.g.
    v1.37.2): the packages' version unless the settings or the task name one.
    lightkube has no call for /version; its HTTP client (with the client's
    credentials and base URL) asks (every authenticated user may: system:discovery)."""
    http: Any = client._client._client  # private: see above
    response = await http.get("/version")
    response.raise_for_status()
    version = str(response.json().get("gitVersion") or "")
    if not version:
        raise ClusterInfoError("the API server's /version has no gitVersion")
    return version.split("+", 1)[0]
