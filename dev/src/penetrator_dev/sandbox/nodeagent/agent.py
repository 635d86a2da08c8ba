"""The sandbox's node agent: plays the kubelet for the sandbox's own nodes.

It registers Nodes, keeps them Ready with Leases, and runs the pods the real
scheduler binds to them as local processes inside the node's network
namespace. Each node talks to the apiserver with its own `system:node:<name>`
client certificate, so the Node authorizer and NodeRestriction apply to it
exactly as to a kubelet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import NodeSpec, Taint
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Node, Pod, Secret, ServiceAccount
from lightkube.types import PatchType

from penetrator_dev.sandbox.nodeagent.podspec import (
    FileSource,
    PodPlan,
    UnsupportedPod,
    VolumePlan,
    field_value,
    plan_pod,
)
from penetrator_dev.sandbox.state import start_ticks

log = logging.getLogger("penetrator.nodeagent")

LEASE_SECONDS = 40
LEASE_RENEW_S = 5.0
STATUS_REPORT_S = 30.0
PREPARE_ATTEMPTS = 40  # x 0.5 s: how long a 403 for a newly bound pod is retried
FIELD_MANAGER = "penetrator-nodeagent"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def rfc3339(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AgentNode:
    """One node the agent serves."""

    name: str
    ip: str
    netns: str | None
    cert: str  # client certificate (PEM path), CN system:node:<name>
    key: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()  # registered with the Node, as --register-with-taints
    arch: str = "amd64"


@dataclass(frozen=True)
class AgentConfig:
    server: str
    ca: str
    nodes: tuple[AgentNode, ...]
    pods_dir: str
    # What pods see as KUBERNETES_SERVICE_HOST/PORT: the apiserver itself (no kube-proxy).
    service_host: str
    service_port: int
    python: str = sys.executable

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        raw = json.loads(path.read_text())
        raw["nodes"] = tuple(
            AgentNode(**{**n, "taints": tuple(n.get("taints", ()))}) for n in raw["nodes"]
        )
        return cls(**raw)

    def dump(self) -> str:
        return json.dumps({**self.__dict__, "nodes": [n.__dict__ for n in self.nodes]}, indent=2)


def node_client(config: AgentConfig, node: AgentNode) -> AsyncClient:
    kubeconfig = KubeConfig.from_dict(
        {
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": config.server, "certificate-authority": config.ca},
                }
            ],
            "users": [
                {
                    "name": node.name,
                    "user": {"client-certificate": node.cert, "client-key": node.key},
                }
            ],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": node.name}}],
            "current-context": "c",
        }
    )
    return AsyncClient(config=kubeconfig, field_manager=FIELD_MANAGER)


MAX_TERMINATION_BYTES = 4096
"""The kubelet keeps at most this much of a termination message."""


def pod_dir(pods_dir: str, plan: PodPlan) -> Path:
    return Path(pods_dir) / f"{plan.namespace}_{plan.name}_{plan.uid}"


def pod_log_path(pods_dir: str, namespace: str, name: str) -> Path | None:
    """The log file of the newest pod of that name (for `penetrator-dev sandbox logs`)."""
    matches = sorted(
        Path(pods_dir).glob(f"{namespace}_{name}_*/container.log"), key=lambda p: p.stat().st_mtime
    )
    return matches[-1] if matches else None


class PodRunner:
    """Runs one pod to its end (or forever, for restartPolicy Always)."""

    def __init__(self, agent: NodeAgentForNode, pod: dict[str, Any]):
        self.agent = agent
        self.pod = pod
        self.plan = plan_pod(pod)
        self.process: asyncio.subprocess.Process | None = None
        self.deleting = asyncio.Event()
        self.restarts = 0
        self.dir = pod_dir(agent.config.pods_dir, self.plan)
        self.termination_log = self.dir / "termination-log"
        self.started_at = now()

    # -- volumes and environment ------------------------------------------------------------

    async def _source_data(self, kind: str, name: str, optional: bool) -> dict[str, bytes]:
        c = self.agent.client
        try:
            if kind == "configMap":
                cm = await c.get(ConfigMap, name, namespace=self.plan.namespace)
                data = {k: v.encode() for k, v in (cm.data or {}).items()}
                data.update({k: base64.b64decode(v) for k, v in (cm.binaryData or {}).items()})
                return data
            secret = await c.get(Secret, name, namespace=self.plan.namespace)
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        except ApiError as e:
            if e.status.code == 404 and optional:
                return {}
            raise

    async def _token(self, f: FileSource) -> bytes:
        req = ServiceAccount.Token(
            metadata=ObjectMeta(name=self.plan.service_account, namespace=self.plan.namespace),
            spec=TokenRequestSpec(
                audiences=[f.audience] if f.audience else [],
                expirationSeconds=max(f.expiration_seconds, 600),
                boundObjectRef=BoundObjectReference(
                    kind="Pod", apiVersion="v1", name=self.plan.name, uid=self.plan.uid
                ),
            ),
        )
        result = await self.agent.client.create(
            req, name=self.plan.service_account, namespace=self.plan.namespace
        )
        if result.status is None or not result.status.token:
            raise UnsupportedPod(
                f"no token issued for service account {self.plan.service_account!r}"
            )
        return result.status.token.encode()

    async def _file_bytes(self, f: FileSource) -> bytes | None:
        if f.kind == "token":
            return await self._token(f)
        if f.kind == "field":
            return field_value(self.pod, f.key, self.agent.node.ip).encode()
        data = await self._source_data(f.kind, f.name, f.optional)
        if f.key not in data:
            if f.optional:
                return None
            raise UnsupportedPod(f"{f.kind} {f.name!r} has no key {f.key!r}")
        return data[f.key]

    async def _materialise(self, volume: VolumePlan, root: Path) -> None:
        if volume.kind == "hostPath":  # the host's own directory, bind-mounted as it is
            path = Path(volume.host_path)
            if volume.host_path_type == "Directory" and not path.is_dir():
                raise UnsupportedPod(
                    f'MountVolume.SetUp failed for volume "{volume.name}": hostPath type '
                    f"check failed: {volume.host_path} is not a directory"
                )
            return
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)  # noqa: S103 - a volume is readable, its files carry modes
        files: list[tuple[str, bytes, int]] = []
        for kind, name, mode, optional in volume.all_keys_of:
            for key, value in (await self._source_data(kind, name, optional)).items():
                files.append((key, value, mode))
        for f in volume.files:
            content = await self._file_bytes(f)
            if content is not None:
                files.append((f.path, content, f.mode))
        for rel, content, mode in files:
            path = root / rel
            if ".." in Path(rel).parts:
                raise UnsupportedPod(f"volume {volume.name!r}: path {rel!r} leaves the volume")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.chmod(path, mode)

    async def _environment(self) -> dict[str, str]:
        env = {
            "PATH": f"{Path(self.agent.config.python).parent}:/usr/local/sbin:/usr/local/bin:"
            "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.plan.name,
            "HOME": "/root",
            "KUBERNETES_SERVICE_HOST": self.agent.config.service_host,
            "KUBERNETES_SERVICE_PORT": str(self.agent.config.service_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.agent.config.service_port),
            "PYTHONUNBUFFERED": "1",
        }
        for kind, name, optional in self.plan.env_from:
            for k, v in (await self._source_data(kind, name, optional)).items():
                env[k] = v.decode(errors="replace")
        for e in self.plan.env:
            if e.value is not None:
                env[e.name] = e.value
            elif e.source[0] == "field":
                env[e.name] = field_value(self.pod, e.source[1], self.agent.node.ip)
            else:
                data = await self._source_data(e.source[0], e.source[1], e.optional)
                if e.source[2] in data:
                    env[e.name] = data[e.source[2]].decode(errors="replace")
                elif not e.optional:
                    raise UnsupportedPod(
                        f"env {e.name}: {e.source[0]} {e.source[1]!r} has no key {e.source[2]!r}"
                    )
        return env

    async def _prepare(self) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        volumes_root = self.dir / "volumes"
        for v in self.plan.volumes:
            await self._materialise(v, volumes_root / v.name)
        host_paths = {v.name: v.host_path for v in self.plan.volumes if v.kind == "hostPath"}
        mounts = []
        for m in self.plan.mounts:
            source = Path(host_paths.get(m.volume) or volumes_root / m.volume)
            if m.sub_path:
                source = source / m.sub_path
            mounts.append([str(source), m.mount_path, m.read_only])
        # As the kubelet: an empty file at terminationMessagePath, read when it ends.
        self.termination_log.write_bytes(b"")
        os.chmod(self.termination_log, 0o666)  # noqa: S103 - the container's user writes it
        launch = {
            "mounts": mounts,
            "termination_log": [str(self.termination_log), self.plan.termination_message_path],
            "dev_copy": str(self.dir / "host-dev"),
            "cwd": self.plan.working_dir,
            "argv": self._resolved_argv(),
            "env": await self._environment(),
        }
        # Holds secret env values: owner-only, and the launcher deletes it once read.
        launch_file = self.dir / "launch.json"
        fd = os.open(launch_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(launch, out)
        prefix = ["ip", "netns", "exec", self.agent.node.netns] if self.agent.node.netns else []
        return [
            *prefix,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            self.agent.config.python,
            "-m",
            "penetrator_dev.sandbox.nodeagent.launch",
            str(launch_file),
        ]

    def _resolved_argv(self) -> list[str]:
        # The image is ignored: commands come from the project's own venv first.
        argv = list(self.plan.argv)
        venv_bin = Path(self.agent.config.python).parent
        if "/" not in argv[0] and (venv_bin / argv[0]).exists():
            argv[0] = str(venv_bin / argv[0])
        return argv

    # -- status --------------------------------------------------------------------------

    async def _report(
        self,
        phase: str,
        state: dict[str, Any],
        ready: bool,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        t = rfc3339(now())
        ip = self.agent.node.ip

        def cond(typ: str, ok: bool) -> dict[str, str]:
            return {"type": typ, "status": "True" if ok else "False", "lastTransitionTime": t}

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": ip,
            "hostIPs": [{"ip": ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": rfc3339(self.started_at),
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", True),
                cond("ContainersReady", ready),
                cond("Ready", ready),
            ],
            "containerStatuses": [
                {
                    "name": self.plan.container,
                    "image": str(self.pod["spec"]["containers"][0].get("image", "")),
                    "imageID": "",
                    "containerID": f"sandbox://{self.process.pid if self.process else 0}",
                    "ready": ready,
                    "started": "running" in state,
                    "restartCount": self.restarts,
                    "state": state,
                }
            ],
        }
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        try:
            await self.agent.client.patch(
                Pod.Status,
                self.plan.name,
                {"status": status},
                namespace=self.plan.namespace,
                patch_type=_merge(),
            )
        except ApiError as e:
            if e.status.code != 404:
                raise

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except UnsupportedPod as e:
            await self._report(
                "Failed",
                {"terminated": {"exitCode": 128, "reason": "Unsupported", "message": str(e)}},
                False,
                reason="Unsupported",
                message=str(e),
            )
        finally:
            if self.deleting.is_set():
                await self._final_delete()

    async def _prepare_retrying(self) -> list[str]:
        """As the kubelet retries mounts: the Node authorizer learns of a pod bound to
        this node a moment after our watch shows it, so its token, ConfigMaps and
        Secrets may be refused (403, "no relationship found") for a short while."""
        for attempt in range(PREPARE_ATTEMPTS):
            try:
                return await self._prepare()
            except ApiError as e:
                if e.status.code != 403 or attempt == PREPARE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    async def _run(self) -> None:
        if self.plan.ignored:
            log.info(
                "pod %s/%s: ignoring %s",
                self.plan.namespace,
                self.plan.name,
                ", ".join(self.plan.ignored),
            )
        deadline = (
            asyncio.get_running_loop().time() + self.plan.active_deadline_seconds
            if self.plan.active_deadline_seconds is not None
            else None
        )
        backoff = 1.0
        while True:
            argv = await self._prepare_retrying()
            log_file = open(self.dir / "container.log", "ab")  # noqa: SIM115 - child owns it
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log_file.close()
            # Who the process is, for an agent that restarts after a crash.
            pid = self.process.pid
            (self.dir / "process").write_text(f"{pid} {start_ticks(pid) or 0}\n")
            started = rfc3339(now())
            await self._report("Running", {"running": {"startedAt": started}}, True)
            code, why = await self._wait(deadline)
            finished = {
                "terminated": {
                    "exitCode": code,
                    "reason": why,
                    "startedAt": started,
                    "finishedAt": rfc3339(now()),
                }
            }
            message = self._termination_message(code)
            if message:
                finished["terminated"]["message"] = message
            if why == "DeadlineExceeded":
                await self._report(
                    "Failed",
                    finished,
                    False,
                    reason="DeadlineExceeded",
                    message="Pod was active on the node longer than the specified deadline",
                )
                return
            if self.deleting.is_set():
                await self._report("Failed" if code else "Succeeded", finished, False)
                return
            restart = self.plan.restart_policy == "Always" or (
                self.plan.restart_policy == "OnFailure" and code != 0
            )
            if not restart:
                await self._report("Succeeded" if code == 0 else "Failed", finished, False)
                return
            self.restarts += 1
            await self._report("Running", {"waiting": {"reason": "CrashLoopBackOff"}}, False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deleting.wait(), backoff)
            if self.deleting.is_set():
                return
            backoff = min(backoff * 2, 30.0)

    def _termination_message(self, code: int) -> str:
        """As the kubelet: the file at terminationMessagePath (at most 4096 bytes); with
        FallbackToLogsOnError and a failure, else the log's last lines."""
        try:
            with self.termination_log.open("rb") as f:
                text = f.read(MAX_TERMINATION_BYTES).decode(errors="replace")
        except OSError:
            text = ""
        fallback = self.plan.termination_message_policy == "FallbackToLogsOnError"
        if not text.strip() and code != 0 and fallback:
            with contextlib.suppress(OSError):
                tail = (self.dir / "container.log").read_bytes()[-MAX_TERMINATION_BYTES:]
                text = b"\n".join(tail.splitlines()[-80:]).decode(errors="replace")
        return text

    async def _wait(self, deadline: float | None) -> tuple[int, str]:
        assert self.process is not None
        proc = self.process
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(proc.wait())
        deleting = asyncio.ensure_future(self.deleting.wait())
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        done, _ = await asyncio.wait(
            {waiter, deleting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        deleting.cancel()
        if waiter in done:
            code = waiter.result()
            return _exit_code(code), "Completed" if code == 0 else "Error"
        grace = self.plan.grace_period_seconds
        if deleting in done:
            grace = int(self.pod["metadata"].get("deletionGracePeriodSeconds", grace))
        await self._terminate(grace)
        code = await waiter
        return _exit_code(code), ("Error" if deleting in done else "DeadlineExceeded")

    async def _terminate(self, grace: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=max(grace, 0))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def lost(self) -> None:
        """The pod ran under an agent that died: stop its orphan, report it failed."""
        try:
            pid_text, ticks_text = (self.dir / "process").read_text().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (FileNotFoundError, ValueError):
            pid, ticks = 0, 0
        if pid and ticks and start_ticks(pid) == ticks:  # the same process, not a reused PID
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        await self._report(
            "Failed",
            {"terminated": {"exitCode": 137, "reason": "NodeAgentRestarted"}},
            False,
            reason="NodeAgentRestarted",
            message="the node agent restarted while the pod ran; its process is gone",
        )

    async def stop(self) -> None:
        """Deletion requested: SIGTERM, grace period, SIGKILL, then the final delete."""
        self.deleting.set()

    async def _final_delete(self) -> None:
        with contextlib.suppress(ApiError):
            await self.agent.client.delete(
                Pod, self.plan.name, namespace=self.plan.namespace, grace_period=0
            )
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N -> 128 + N


def _merge() -> PatchType:
    return PatchType.MERGE


class NodeAgentForNode:
    """Everything the agent does for one node."""

    def __init__(self, config: AgentConfig, node: AgentNode):
        self.config = config
        self.node = node
        self.client = node_client(config, node)
        self.pods: dict[str, PodRunner] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def _node_status(self) -> dict[str, Any]:
        t = rfc3339(now())
        return {
            "addresses": [
                {"type": "InternalIP", "address": self.node.ip},
                {"type": "Hostname", "address": self.node.name},
            ],
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"},
            "allocatable": {
                "cpu": "4",
                "memory": "8Gi",
                "pods": "110",
                "ephemeral-storage": "50Gi",
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "penetrator sandbox node agent is posting ready status",
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
            ],
            "nodeInfo": {
                "architecture": self.node.arch,
                "operatingSystem": "linux",
                "kubeletVersion": "v0.0.0-sandbox",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "penetrator-sandbox://1",
                "kernelVersion": os.uname().release,
                "osImage": "penetrator sandbox",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self.node.arch,
            **self.node.labels,
        }
        body = Node(
            metadata=ObjectMeta(name=self.node.name, labels=labels),
            spec=NodeSpec(
                taints=[
                    Taint(effect=t["effect"], key=t["key"], value=t.get("value"))
                    for t in self.node.taints
                ]
            ),
        )
        with contextlib.suppress(ApiError):
            await self.client.create(body)
        await self.client.patch(
            Node.Status, self.node.name, {"status": self._node_status()}, patch_type=_merge()
        )

    async def keep_ready(self) -> None:
        last_status = asyncio.get_running_loop().time()
        while True:
            try:
                await self._renew_lease()
                if asyncio.get_running_loop().time() - last_status > STATUS_REPORT_S:
                    await self.client.patch(
                        Node.Status,
                        self.node.name,
                        {"status": self._node_status()},
                        patch_type=_merge(),
                    )
                    last_status = asyncio.get_running_loop().time()
            except ApiError as e:
                log.warning("node %s: heartbeat failed: %s", self.node.name, e.status.message)
            await asyncio.sleep(LEASE_RENEW_S)

    async def _renew_lease(self) -> None:
        t = dt.datetime.now(dt.UTC)
        lease = Lease(
            metadata=ObjectMeta(name=self.node.name, namespace="kube-node-lease"),
            spec=LeaseSpec(
                holderIdentity=self.node.name, leaseDurationSeconds=LEASE_SECONDS, renewTime=t
            ),
        )
        await self.client.apply(lease, force=True)

    async def watch_pods(self) -> None:
        while True:
            try:
                async for kind, pod in self.client.watch(
                    Pod, namespace="*", fields={"spec.nodeName": self.node.name}
                ):
                    self._on_pod(kind, pod.to_dict())
            except ApiError as e:
                log.warning("node %s: pod watch: %s", self.node.name, e.status.message)
            except Exception as e:  # the watch is the agent's lifeline: restart it
                log.warning("node %s: pod watch restarted: %r", self.node.name, e)
            await asyncio.sleep(1)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.pods.get(uid)
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            if runner:
                runner.pod = pod
                self._spawn(runner.stop())
            elif kind != "DELETED":
                # Never started here (or finished): just finish the deletion.
                self._spawn(self._delete_now(pod))
            return
        if runner or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        try:
            runner = PodRunner(self, pod)
        except UnsupportedPod as e:
            log.warning("pod %s: %s", pod["metadata"]["name"], e)
            return
        self.pods[uid] = runner
        if (
            pod.get("status", {}).get("phase") == "Running"
            and runner.plan.restart_policy != "Always"
        ):
            # It ran under an earlier agent and its process is gone. Running it
            # again could install a machine twice; a kubelet reports it failed.
            self._spawn(runner.lost())
            return
        self._spawn(runner.run())

    async def _delete_now(self, pod: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError):
            await self.client.delete(
                Pod, pod["metadata"]["name"], namespace=pod["metadata"]["namespace"], grace_period=0
            )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()):
            log.error("node %s: %r", self.node.name, exc, exc_info=exc)

    async def shutdown(self) -> None:
        for runner in self.pods.values():
            if runner.process and runner.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(runner.process.pid, signal.SIGKILL)
        for task in list(self.tasks):
            task.cancel()


async def run_agent(
    config: AgentConfig,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Register every node, then heartbeat and run pods until `stop` is set."""
    stop = stop or asyncio.Event()
    agents = [NodeAgentForNode(config, n) for n in config.nodes]
    for a in agents:
        await a.register()
    loops = [
        asyncio.ensure_future(coro) for a in agents for coro in (a.keep_ready(), a.watch_pods())
    ]
    if on_ready:
        on_ready()
    try:
        await stop.wait()
    finally:
        for t in loops:
            t.cancel()
        for a in agents:
            await a.shutdown()


def main(config_path: str) -> None:
    """Entry point of the agent process (`penetrator-dev sandbox node-agent CONFIG`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AgentConfig.load(Path(config_path))
    stop = asyncio.Event()

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_agent(config, stop, on_ready=lambda: log.info("node agent ready"))

    asyncio.run(_main())
