"""k8s.client: one way to reach the API server (kubeconfig and context, or in-cluster),
and the operator's Kopf login taken from the same place (no environment hand-off)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from lightkube import ConfigError

from penetrator.api.settings import Settings
from penetrator.k8s.client import NodeTaskResource, load_config, make_client, make_sync_client

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").decode()


def kubeconfig(tmp_path: Path) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "one",
        "clusters": [
            {"name": "c1",
             "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": CA}},
            {"name": "c2",
             "cluster": {"server": "https://10.0.0.2:6443", "certificate-authority": "ca.crt"}},
            {"name": "c3",
             "cluster": {"server": "https://10.0.0.3:6443", "insecure-skip-tls-verify": True}},
        ],
        "users": [
            {"name": "u1", "user": {"token": "t1"}},
            {"name": "u2", "user": {"client-certificate": "u.crt", "client-key": "u.key"}},
        ],
        "contexts": [
            {"name": "one", "context": {"cluster": "c1", "user": "u1", "namespace": "ns1"}},
            {"name": "two", "context": {"cluster": "c2", "user": "u2"}},
            {"name": "three", "context": {"cluster": "c3", "user": "u1"}},
        ],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_and_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    assert load_config(path).cluster.server == "https://10.0.0.1:6443"
    assert load_config(path, "two").cluster.server == "https://10.0.0.2:6443"
    with pytest.raises(ConfigError):
        load_config(path, "four")


def test_clients(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    assert make_sync_client(path, "three", field_manager="x") is not None
    assert make_client(path, "three", field_manager="x", timeout=3) is not None
    assert NodeTaskResource._api_info.plural == "nodetasks"


def test_the_kopf_login_uses_the_settings_kubeconfig(tmp_path: Path) -> None:
    from penetrator.operator import handlers

    path = kubeconfig(tmp_path)
    old = handlers.STATE.settings
    try:
        handlers.STATE.settings = Settings(kubeconfig=path)
        info = handlers.login()
        assert (info.server, info.token, info.ca_data) == ("https://10.0.0.1:6443", "t1", CA)
        assert info.default_namespace == "ns1"
        handlers.STATE.settings = Settings(kubeconfig=path, context="two")
        info = handlers.login()
        assert info.server == "https://10.0.0.2:6443"
        assert info.ca_path == str(tmp_path / "ca.crt")  # relative to the kubeconfig
        assert (info.certificate_path, info.private_key_path) == (
            str(tmp_path / "u.crt"),
            str(tmp_path / "u.key"),
        )
        assert info.token is None
    finally:
        handlers.STATE.settings = old
