"""Kubeconfig files for the components and the admin."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from penetrator_dev.testenv.pki import write_private


def kubeconfig_document(server: str, ca_pem: bytes, user: dict[str, str] | None = None) -> str:
    """A one-cluster, one-context kubeconfig; `user` may be empty (anonymous)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "penetrator",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "penetrator", "user": user or {}}],
        "contexts": [
            {"name": "penetrator", "context": {"cluster": "penetrator", "user": "penetrator"}}
        ],
        "current-context": "penetrator",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> None:
    user = {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }
    write_private(path, kubeconfig_document(server, ca.read_bytes(), user).encode())
