"""The operator's one Settings object: read once (environment, then CLI options),
validated, failing fast with the variable named."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from penetrator.api import NAMESPACE
from penetrator.k8s.builders import JobSettings
from penetrator.plan.reconcile import ReconcileSettings

ENV_PREFIX = "PENETRATOR_"


class SettingsError(ValueError):
    """A setting is invalid; the message names it."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: Path | None = None
    """None: in-cluster (the pod's service account)."""
    namespace: str = NAMESPACE
    field_manager: str = "penetrator-operator"
    identity: str = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or f"pid-{os.getpid()}"
    )
    """This replica's name in the Lease."""
    lease_name: str = "penetrator-operator"
    lease_seconds: float = Field(default=15.0, gt=1, le=600)
    # the Job
    image: str = "penetrator:latest"
    job_command: tuple[str, ...] = ("penetrator",)
    job_service_account: str = "penetrator-job"
    job_deadline_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    job_report: bool = True
    """Pass --report-configmap to the job (turn off for a job without the flag)."""
    job_config_defaults: dict[str, Any] = Field(default_factory=dict)
    """Merged into every job config: packages, template, hostKeyPolicy, concurrency..."""
    api_server: str | None = None
    """Override cluster-info's server (https://host:port the machines can reach)."""
    # rounds
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_base: float = Field(default=30.0, ge=0, le=3600)
    backoff_max: float = Field(default=600.0, ge=0, le=24 * 3600)
    poll_interval: float = Field(default=10.0, gt=0, le=600)
    job_start_timeout: float = Field(default=300.0, ge=10, le=24 * 3600)
    """A round's Job that wrote no result this long is deleted and the round counted."""
    # bootstrap token
    token_ttl_hours: float = Field(default=24.0, gt=0.1, le=24 * 30)
    token_margin_hours: float = Field(default=2.0, ge=0)
    # endpoints
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """0: no metrics endpoint."""
    health_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    """Kopf's liveness endpoint (also used for readiness); "off": none."""

    @field_validator("health_endpoint", "api_server", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("job_command", mode="before")
    @classmethod
    def _argv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(value.split())
        return value

    def reconcile_settings(self) -> ReconcileSettings:
        return ReconcileSettings(
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            poll_interval=self.poll_interval,
            start_timeout=self.job_start_timeout,
        )

    def job_settings(self) -> JobSettings:
        return JobSettings(
            image=self.image,
            command=self.job_command,
            service_account=self.job_service_account,
            active_deadline_seconds=self.job_deadline_seconds,
            report=self.job_report,
            job_config_defaults=dict(self.job_config_defaults),
        )

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """``PENETRATOR_<FIELD>`` variables (upper case; JSON for
        ``PENETRATOR_JOB_CONFIG_DEFAULTS``, or ``PENETRATOR_JOB_CONFIG_DEFAULTS_FILE``),
        then ``overrides`` (CLI options; None values ignored)."""
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env and env[key] != "":
                data[name] = env[key]
        path = env.get(ENV_PREFIX + "JOB_CONFIG_DEFAULTS_FILE")
        if path:
            try:
                data["job_config_defaults"] = Path(path).read_text()
            except OSError as e:
                raise SettingsError(
                    f"{ENV_PREFIX}JOB_CONFIG_DEFAULTS_FILE: cannot read {path}: {e.strerror}"
                ) from None
        raw = data.get("job_config_defaults")
        if isinstance(raw, str):
            try:
                data["job_config_defaults"] = json.loads(raw)
            except ValueError:
                raise SettingsError(
                    f"{ENV_PREFIX}JOB_CONFIG_DEFAULTS: not JSON (an object of job config fields)"
                ) from None
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(x) for x in err['loc']).upper()}: {err['msg']}"
                for err in e.errors()[:10]
            )
            raise SettingsError(f"invalid settings: {problems}") from None
