"""The public names of the NodeTask interface (see docs/compat.md) and our limits.

Everything a user of SuperEdge Penetrator already depends on is spelled here
once; the CRD in ``charts/penetrator/crds/`` repeats the same values (a unit test
keeps them in step).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# --- The custom resource (compat) -------------------------------------------
GROUP: Final = "nodetask.apps.superedge.io"
VERSION: Final = "v1beta1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "NodeTask"
LIST_KIND: Final = "NodeTaskList"
PLURAL: Final = "nodetasks"
SINGULAR: Final = "nodetask"
SHORT_NAME: Final = "nt"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
CATEGORY: Final = "penetrator"

# --- Labels, annotations, namespace, Secret keys (compat) -------------------
NODE_LABEL: Final = "app.superedge.io/node-label"
"""On Nodes and on the task: ``<task name>-<6 random chars>``, one value per task."""
JOB_NAME_ANNOTATION: Final = "app.superedge.io/job-name"
CONFIGMAP_NAME_ANNOTATION: Final = "app.superedge.io/configmap-name"
NAMESPACE: Final = "edge-system"
"""Namespace of the credential Secrets, Jobs, ConfigMaps and Events."""
CREDENTIAL_PASSWORD_KEY: Final = "passwd"  # noqa: S105 (a key name, not a password)
"""Key in the sshCredential Secret: the root password, plain text."""
CREDENTIAL_SSHKEY_KEY: Final = "sshkey"
"""Key in the sshCredential Secret: the private key, plain text."""
DEFAULT_SSH_PORT: Final = 22


class TaskPhase(StrEnum):
    """``status.nodetaskStatus``: ``creating`` and ``ready`` are compat; ``failed`` is ours."""

    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"


class MachinePhase(StrEnum):
    """Where one machine of a task is (ours, ``status.machines[*].phase``)."""

    PENDING = "pending"
    CONNECTING = "connecting"
    TRANSFERRING = "transferring"
    INSTALLING = "installing"
    JOINING = "joining"
    JOINED = "joined"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (MachinePhase.JOINED, MachinePhase.FAILED)


# --- Limits (ours; the CRD enforces the same) --------------------------------
NAME_SUFFIX_LENGTH: Final = 6
"""Random suffix of generated node names and of the task label value."""
NAME_SUFFIX_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_LABEL_LENGTH: Final = 63
"""DNS-1123 label and label value limit."""
MAX_NODE_NAME_LENGTH: Final = 63
"""Node names we plan (generated or overridden): DNS-1123 subdomain syntax, at most
63 characters. Kubernetes allows 253, but a Linux hostname holds 64 and the bound
keeps a 5,000-machine task (names appear in spec and status) well inside etcd's
1.5 MiB object limit and the CEL cost budget."""
MAX_PREFIX_LENGTH: Final = MAX_NODE_NAME_LENGTH - 1 - NAME_SUFFIX_LENGTH  # 56
MAX_OBJECT_NAME_LENGTH: Final = 253
"""Secret and Node names (DNS-1123 subdomains)."""
MAX_IP_LENGTH: Final = 45
"""Longest textual IP address (IPv6 with an embedded IPv4 tail)."""
MAX_MACHINES: Final = 5000
"""Largest number of machines in one task."""
MAX_ERROR_LENGTH: Final = 200
"""``status.machines[*].lastError`` is cut to this many UTF-8 bytes (so characters)."""
MAX_MACHINE_ENTRIES: Final = 1000
"""``status.machines`` lists at most this many machines: those in flight first, then
failed ones, then the rest (the counts cover all; every error is also an Event)."""
MAX_MACHINES_WITH_ERROR: Final = 200
"""At most this many ``status.machines`` entries carry ``lastError`` (failed first)."""
MAX_PLAN_BYTES: Final = 160 * 1024
"""Sum of ``len(node name) + len(IP)`` over a task's machines. Names and addresses are
stored several times (spec, status.nodeStatus, managedFields, kubectl's
last-applied annotation); this bound keeps the whole object under 1 MiB, far from
etcd's 1.5 MiB. 5,000 machines fit with IPv4 addresses and names of up to 17
characters (nodeNamePrefix up to 10); longer names mean fewer machines per task."""
MAX_CONDITION_MESSAGE_LENGTH: Final = 1024
