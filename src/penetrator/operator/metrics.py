"""Prometheus metrics of the operator."""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from lightkube import AsyncClient
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from penetrator.api import MachinePhase, NodeTaskStatus, TaskPhase


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("penetrator_tasks", "NodeTasks by state", ["state"], registry=r)
        self.machines = Gauge(
            "penetrator_machines", "Planned machines by phase (all tasks)", ["phase"], registry=r
        )
        self.rounds = Counter("penetrator_rounds", "Rounds started", registry=r)
        self.rounds_finished = Counter("penetrator_rounds_finished", "Rounds folded", registry=r)
        self.round_duration = Histogram(
            "penetrator_round_duration_seconds",
            "From a round's start to its fold",
            buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.api_errors = Counter(
            "penetrator_api_errors", "Failed API requests", ["operation"], registry=r
        )
        self.api_requests = Counter(
            "penetrator_api_requests", "API requests sent", ["method"], registry=r
        )
        self.requests = 0
        """The same, as one number (bench: requests per reconcile)."""
        self.reconciles = Counter("penetrator_reconciles", "Reconcile steps", registry=r)
        self.is_leader = Gauge("penetrator_leader", "1 when this replica acts", registry=r)
        self._by_task: dict[str, NodeTaskStatus] = {}

    def count_requests(self, client: AsyncClient) -> None:
        """Count every request ``client`` sends, whoever sends it: an httpx event hook
        on the httpx client lightkube wraps (lightkube has no option for hooks)."""

        async def sent(request: httpx2.Request) -> None:
            self.requests += 1
            self.api_requests.labels(method=request.method).inc()

        http: httpx2.AsyncClient = client._client._client
        hooks = http.event_hooks
        http.event_hooks = {"request": [*hooks["request"], sent], "response": hooks["response"]}

    def task_status(self, name: str, status: NodeTaskStatus | None) -> None:
        if status is None:
            self._by_task.pop(name, None)
        else:
            self._by_task[name] = status
        self._refresh()

    def _refresh(self) -> None:
        states: dict[str, int] = {p.value: 0 for p in TaskPhase}
        phases: dict[str, int] = {p.value: 0 for p in MachinePhase}
        for st in self._by_task.values():
            if st.nodetask_status is not None:
                states[st.nodetask_status.value] += 1
            phases[MachinePhase.JOINED.value] += st.joined
            phases[MachinePhase.FAILED.value] += st.failed
            busy = _count({n: m.phase.value for n, m in st.machines.items()})
            in_flight = 0
            for phase, n in busy.items():
                if phase not in ("joined", "failed", "pending"):
                    phases[phase] += n
                    in_flight += n
            phases[MachinePhase.PENDING.value] += max(
                0, st.planned - st.joined - st.failed - in_flight
            )
        for state, n in states.items():
            self.tasks.labels(state=state).set(n)
        for phase, n in phases.items():
            self.machines.labels(phase=phase).set(n)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)


def _count(phases: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in phases.values():
        out[p] = out.get(p, 0) + 1
    return out
