"""How an e2e module's sandbox with penetrator deployed looks (the ``deployed``
fixture of tests/e2e/conftest.py reads the module's ``DEPLOYMENT``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Deployment:
    """The defaults: one intranet of one machine, the chart's settings."""

    machines: int = 1
    intranets: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Merged into the settings of deploy/penetrator.yaml (``deploy_penetrator``)."""
