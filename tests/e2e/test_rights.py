"""A task cannot exceed its author's rights (issue 12): the operator deployed from
deploy/penetrator.yaml (webhook and ValidatingAdmissionPolicy) into a sandbox of its
own; requests as a user bound only to the chart's penetrator-user roles plus get on
one credential Secret (README "Security model"), by impersonation (kubectl --as),
against the real API server. Each hole is refused with the field and the missing
right named; the same task from the administrator goes through where it should; the
control-plane Node is untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from penetrator.api import CONFIGMAP_NAME_ANNOTATION, JOB_NAME_ANNOTATION, NODE_LABEL
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import deploy_penetrator
from penetrator_dev.sandbox.lifecycle import down
from support import add_task, nodetask, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
USER = "alice"
EDITOR = "bob"
"""alice's roles plus patch on NodeTasks: the set-once rules hold for such a user too."""
CP = "control-plane"


class Env:
    def __init__(self, info: Any, machine: str, proxy: str) -> None:
        self.info = info
        self.machine = machine  # an edge machine's address (not a Node)
        self.proxy = proxy

    def kubectl(self, *args: str, input: str | None = None, as_: str | None = None) -> Any:
        who = ("--as", as_) if as_ else ()
        return self.info.kubectl(*who, *args, input=input, check=False)

    def create(self, body: dict[str, Any], as_: str | None = None, dry: bool = False) -> Any:
        dry_run = ("--dry-run=server",) if dry else ()
        return self.kubectl("create", *dry_run, "-f", "-", input=yaml.safe_dump(body), as_=as_)

    def get(self, *args: str) -> Any:
        out = self.kubectl("get", *args, "-o", "json").stdout
        return json.loads(out) if out.strip() else None


@pytest.fixture(scope="module")
def env(sandbox_factory: Any) -> Iterator[Env]:
    sb = sandbox_factory(machines=2, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        deploy_penetrator(sb.name, info, {"reconcile": {"pollInterval": 2, "maxAttempts": 1}})
        ssh = sb.status()["ssh"]
        for secret in ("login", "other-team"):
            info.kubectl(
                "-n", NS, "create", "secret", "generic", secret,
                f"--from-file=passwd={ssh['password_file']}",
            )  # fmt: skip
        info.kubectl("-n", NS, "create", "role", "get-login", "--verb=get",
                     "--resource=secrets", "--resource-name=login")  # fmt: skip
        for user in (USER, EDITOR):  # the README's user role, bound as an admin would
            info.kubectl("create", "clusterrolebinding", f"pu-{user}",
                         "--clusterrole=penetrator-user", f"--user={user}")  # fmt: skip
            info.kubectl("-n", NS, "create", "rolebinding", f"pu-{user}",
                         "--role=penetrator-user", f"--user={user}")  # fmt: skip
            info.kubectl("-n", NS, "create", "rolebinding", f"login-{user}",
                         "--role=get-login", f"--user={user}")  # fmt: skip
        # alice may delete one Node name not in use: a rename onto it gets past the policy
        info.kubectl("create", "clusterrole", "delete-edge-new", "--verb=delete",
                     "--resource=nodes", "--resource-name=edge-new")  # fmt: skip
        info.kubectl("create", "clusterrolebinding", "delete-edge-new",
                     "--clusterrole=delete-edge-new", f"--user={USER}")  # fmt: skip
        info.kubectl("create", "clusterrole", "patch-nt", "--verb=patch,update",
                     "--resource=nodetasks.nodetask.apps.superedge.io")  # fmt: skip
        info.kubectl("create", "clusterrolebinding", "patch-nt-bob", "--clusterrole=patch-nt",
                     f"--user={EDITOR}")  # fmt: skip
        machines = sb.topology.intranet(1).machines
        yield Env(info, machines[0].ip, info.proxy_nodes[1])
    finally:
        down(sb.name)


def control_plane(e: Env) -> dict[str, Any]:
    node = e.get("node", CP)
    assert node is not None, "the sandbox has a Node named control-plane"
    return dict(node["metadata"])


def refused(p: Any, *texts: str) -> str:
    assert p.returncode != 0, f"admitted: {p.stdout}"
    for text in texts:
        assert text in p.stderr, p.stderr
    return str(p.stderr)


def test_the_user_role_can_do_what_the_readme_says(env: Env) -> None:
    e = env
    can = {
        ("create", "nodetasks.nodetask.apps.superedge.io", ""): "yes",
        ("create", "secrets", NS): "yes",
        ("get", "secrets/login", NS): "yes",
        ("get", "secrets/other-team", NS): "no",
        ("delete", f"nodes/{CP}", ""): "no",
        ("patch", "nodetasks.nodetask.apps.superedge.io", ""): "no",
    }
    for (verb, what, ns), want in can.items():
        p = e.kubectl("auth", "can-i", verb, what, *(("-n", ns) if ns else ()), as_=USER)
        assert p.stdout.strip() == want, (verb, what, p.stdout, p.stderr)


def test_a_reinstall_naming_the_control_plane_node_is_refused(env: Env) -> None:
    e = env
    before = control_plane(e)
    body = nodetask("cp", nodeNamesOverride={CP: e.machine}, sshCredential="login",
                    proxyNode=e.proxy)  # fmt: skip
    # the user: the API server's policy (CEL authorizer), webhook or not
    refused(
        e.create(body, as_=USER),
        "spec.nodeNamesOverride: alice may not delete Node control-plane",
        "missing right: delete on nodes/control-plane",
    )
    # the administrator may delete Nodes, but the webhook keeps control-plane Nodes out
    refused(
        e.create(body),
        "spec.nodeNamesOverride: Node control-plane is a control-plane node",
        "webhook.allowControlPlaneNodes",
    )
    # renaming the control plane's own address away (alice may delete Node edge-new, the
    # policy lets it by): the webhook finds the control plane by its address
    internal = next(
        a["address"] for a in e.get("node", CP)["status"]["addresses"] if a["type"] == "InternalIP"
    )
    rename = nodetask("cp2", nodeNamesOverride={"edge-new": internal}, sshCredential="login")
    refused(
        e.create(rename, as_=USER),
        "spec.nodeNamesOverride: alice may not delete Node control-plane",
        f"missing right: delete on nodes/{CP}",
    )
    refused(e.create(rename), "Node control-plane is a control-plane node")
    assert e.get("nt", "cp") is None
    assert e.get("nt", "cp2") is None
    after = control_plane(e)
    assert (after["uid"], after["resourceVersion"]) == (before["uid"], before["resourceVersion"])


@pytest.mark.parametrize(
    ("ip", "says"),
    [
        ("127.0.0.1", "is a loopback address"),
        ("0.0.0.0", "is an unspecified address"),
        ("169.254.169.254", "is a link-local address"),
        ("224.0.0.5", "is a multicast address"),
    ],
)
def test_addresses_no_machine_has_are_refused_for_everyone(env: Env, ip: str, says: str) -> None:
    e = env
    body = add_task("lo", [e.machine, ip], e.proxy)
    for who in (USER, None):
        # the webhook answers first (the CRD's rule says the same without it)
        refused(e.create(body, as_=who), "spec.targetMachines", f"{ip} {says}")


def test_the_clusters_own_addresses_are_refused(env: Env) -> None:
    e = env
    internal = next(
        a["address"] for a in e.get("node", CP)["status"]["addresses"] if a["type"] == "InternalIP"
    )
    body = add_task("own", [internal], e.proxy)
    for who in (USER, None):
        refused(
            e.create(body, as_=who),
            f"spec.targetMachines: {internal} is already the InternalIP of Node control-plane",
        )
    service_ip = e.get("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    refused(
        e.create(add_task("svc", [service_ip], e.proxy), as_=USER),
        f"spec.targetMachines: {service_ip} is in the cluster's Service network",
    )


def test_a_credential_the_user_may_not_read_is_refused(env: Env) -> None:
    e = env
    body = add_task("creds", [e.machine], e.proxy, credential="other-team")
    refused(
        e.create(body, as_=USER),
        "spec.sshCredential: alice may not get Secret edge-system/other-team",
        "missing right: get on secrets/other-team in edge-system",
    )
    # the administrator may read it: admitted (server-side dry run: nothing runs)
    p = e.create(body, dry=True)
    assert p.returncode == 0, p.stderr
    # and the user's own credential: admitted
    p = e.create(add_task("creds", [e.machine], e.proxy), as_=USER, dry=True)
    assert p.returncode == 0, p.stderr


def test_label_and_annotations_are_set_once_and_object_names_come_from_the_uid(
    env: Env,
) -> None:
    e = env
    body = add_task("owned", ["10.254.3.1"], e.proxy)  # no such machine: the round fails
    body["metadata"]["labels"] = {NODE_LABEL: "someone-abcdef"}
    body["metadata"]["annotations"] = {JOB_NAME_ANNOTATION: "penetrator-operator"}
    p = e.create(body, as_=USER)
    assert p.returncode == 0, p.stderr  # the webhook replaced the copies
    try:
        t = e.get("nt", "owned")
        ours = f"nodetask-{t['metadata']['uid']}"
        label = t["metadata"]["labels"][NODE_LABEL]
        assert label != "someone-abcdef"

        def annotated() -> bool:
            notes = e.get("nt", "owned")["metadata"].get("annotations") or {}
            return notes.get(JOB_NAME_ANNOTATION) == notes.get(CONFIGMAP_NAME_ANNOTATION) == ours

        wait_for(annotated, "the operator's annotations from the uid", 60)
        for who, why in ((USER, "cannot patch resource"), (EDITOR, ""), (None, "")):
            p = e.kubectl("label", "nt", "owned", "--overwrite", f"{NODE_LABEL}=x", as_=who)
            refused(p, why or f"metadata.labels[{NODE_LABEL}]: is set once")
            p = e.kubectl("annotate", "nt", "owned", "--overwrite",
                          f"{JOB_NAME_ANNOTATION}=penetrator-operator", as_=who)  # fmt: skip
            refused(p, why or f"metadata.annotations[{JOB_NAME_ANNOTATION}]: is set once")
            p = e.kubectl("annotate", "nt", "owned", f"{CONFIGMAP_NAME_ANNOTATION}-", as_=who)
            refused(p, why or f"metadata.annotations[{CONFIGMAP_NAME_ANNOTATION}]")
        t = e.get("nt", "owned")
        assert t["metadata"]["labels"][NODE_LABEL] == label
        assert t["metadata"]["annotations"][JOB_NAME_ANNOTATION] == ours
        # the round's objects carry the uid's name and this task as their controller
        cm = wait_for(lambda: e.get("configmap", "-n", NS, ours), "the task's ConfigMap", 60)
        (ref,) = cm["metadata"]["ownerReferences"]
        assert (ref["uid"], ref["controller"]) == (t["metadata"]["uid"], True)
    finally:
        e.kubectl("delete", "nt", "owned", "--ignore-not-found", "--wait=true")


def test_the_control_plane_node_is_untouched_at_the_end(env: Env) -> None:
    e = env
    node = e.get("node", CP)
    assert NODE_LABEL not in (node["metadata"].get("labels") or {})
    assert node["metadata"].get("deletionTimestamp") is None
