"""What to join: from `edgeadm join` flags or from a kubeadm JoinConfiguration
file (`--config`), so the installer never needs a secret in argv."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from penetrator_dev.sandbox.join.discovery import Token, parse_pin

JOIN_KIND = "JoinConfiguration"
JOIN_API_VERSIONS = ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4")
DEFAULT_DISCOVERY_TIMEOUT = 300.0  # kubeadm's 5m
DEFAULT_BOOTSTRAP_TIMEOUT = 300.0
NODE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ConfigError(ValueError):
    """A bad command line or configuration file (the message names the field)."""


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""


@dataclass(frozen=True)
class JoinParams:
    server: str  # host:port of the apiserver, as given
    token: Token  # discovery token
    tls_token: Token  # TLS bootstrap token (usually the same)
    pins: tuple[str, ...]
    node_name: str
    skip_ca_verification: bool = False
    discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    def __post_init__(self) -> None:
        if not self.server:
            raise ConfigError("the apiserver endpoint is missing")
        if not NODE_NAME_RE.match(self.node_name) or len(self.node_name) > 253:
            raise ConfigError(
                f"node name {self.node_name!r} is not a valid DNS subdomain "
                "(lowercase letters, digits, '-' and '.')"
            )
        if not self.pins and not self.skip_ca_verification:
            raise ConfigError(
                "give --discovery-token-ca-cert-hash sha256:<hash> to pin the cluster's CA "
                "(or --discovery-token-unsafe-skip-ca-verification)"
            )


def parse_duration(text: Any) -> float:
    """Go durations as kubeadm writes them ("5m0s", "30s", "1h") -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = str(text).strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise ConfigError(f"{s!r} is not a duration (like 5m0s)")
    for num, unit in parts:
        total += float(num) * units[unit]
    return total


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for k in path.split("."):
        if not isinstance(cur, dict):
            raise ConfigError(f"{path}: expected an object at {k!r}")
        cur = cur.get(k)
        if cur is None:
            return None
    return cur


def _str(doc: dict[str, Any], path: str) -> str | None:
    v = _get(doc, path)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{path} must be a string")
    return v


def find_join_configuration(text: str) -> dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"the configuration is not valid YAML: {e}") from None
    for d in docs:
        if not isinstance(d, dict):
            raise ConfigError("every document of the configuration must be an object")
        if d.get("kind") == JOIN_KIND:
            if d.get("apiVersion") not in JOIN_API_VERSIONS:
                raise ConfigError(
                    f"JoinConfiguration apiVersion {d.get('apiVersion')!r} is not supported "
                    f"(use one of {', '.join(JOIN_API_VERSIONS)})"
                )
            return d
    raise ConfigError(f"the configuration holds no kind: {JOIN_KIND}")


def params_from_config(text: str, default_node_name: str | None = None) -> JoinParams:
    """Parse a kubeadm JoinConfiguration (v1beta3 or v1beta4)."""
    doc = find_join_configuration(text)
    if _get(doc, "discovery.file") is not None:
        raise ConfigError("discovery.file is not supported: use discovery.bootstrapToken")
    bt = _get(doc, "discovery.bootstrapToken")
    if not isinstance(bt, dict):
        raise ConfigError("discovery.bootstrapToken is missing")
    endpoint = _str(doc, "discovery.bootstrapToken.apiServerEndpoint")
    if not endpoint:
        raise ConfigError("discovery.bootstrapToken.apiServerEndpoint is missing")
    token_text = _str(doc, "discovery.bootstrapToken.token")
    if not token_text:
        raise ConfigError("discovery.bootstrapToken.token is missing")
    try:
        token = Token.parse(token_text)
        tls_text = _str(doc, "discovery.tlsBootstrapToken")
        tls_token = Token.parse(tls_text) if tls_text else token
    except ValueError as e:
        raise ConfigError(f"discovery.bootstrapToken.token: {e}") from None
    hashes = _get(doc, "discovery.bootstrapToken.caCertHashes") or []
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise ConfigError("discovery.bootstrapToken.caCertHashes must be a list of strings")
    try:
        pins = tuple(parse_pin(h) for h in hashes)
    except ValueError as e:
        raise ConfigError(f"discovery.bootstrapToken.caCertHashes: {e}") from None
    skip = bool(_get(doc, "discovery.bootstrapToken.unsafeSkipCAVerification"))
    name = _str(doc, "nodeRegistration.name") or default_node_name
    if not name:
        raise ConfigError("nodeRegistration.name is missing")
    # v1beta3: discovery.timeout; v1beta4: timeouts.discovery / timeouts.tlsBootstrap
    dt = _get(doc, "timeouts.discovery") or _get(doc, "discovery.timeout")
    tt = _get(doc, "timeouts.tlsBootstrap")
    taints = []
    for i, t in enumerate(_get(doc, "nodeRegistration.taints") or []):
        if not isinstance(t, dict) or not isinstance(t.get("key"), str):
            raise ConfigError(f"nodeRegistration.taints[{i}].key must be a string")
        effect = t.get("effect")
        if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ConfigError(
                f"nodeRegistration.taints[{i}].effect must be NoSchedule, "
                "PreferNoSchedule or NoExecute"
            )
        taints.append(Taint(t["key"], effect, str(t.get("value") or "")))
    try:
        return JoinParams(
            server=endpoint,
            token=token,
            tls_token=tls_token,
            pins=pins,
            node_name=name,
            skip_ca_verification=skip,
            discovery_timeout=parse_duration(dt) if dt else DEFAULT_DISCOVERY_TIMEOUT,
            bootstrap_timeout=parse_duration(tt) if tt else DEFAULT_BOOTSTRAP_TIMEOUT,
            taints=tuple(taints),
        )
    except ConfigError as e:
        raise ConfigError(
            f"nodeRegistration.name: {e}" if "node name" in str(e) else str(e)
        ) from None
