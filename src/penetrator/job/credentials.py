"""The credentials directory: files, never argv or environment.

::

    passwd        the SSH password (plain text)      } exactly one of these two
    sshkey        the SSH private key (plain text)   }
    token         the bootstrap token <id>.<secret>
    known_hosts   optional: host keys the user trusts (OpenSSH format)
    host_key_pins optional: keys pinned by earlier rounds of the task (trust on
                  first use; ``host SHA256:fingerprint`` lines, penetrator.api.hostkeys)

This is the shape of the task's Secrets mounted into the Job's pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from penetrator.api import CREDENTIAL_PASSWORD_KEY, CREDENTIAL_SSHKEY_KEY
from penetrator.api.hostkeys import SECRET_PINS_KEY, parse_pins
from penetrator.job.redact import Redactor

TOKEN_FILE = "token"  # noqa: S105 - a file name
KNOWN_HOSTS_FILE = "known_hosts"
TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
MAX_CREDENTIAL_BYTES = 64 * 1024


class CredentialError(ValueError):
    """The credentials directory is unusable (the message never holds a secret)."""


@dataclass(frozen=True, repr=False)
class Credentials:
    password: str | None
    key: asyncssh.SSHKey | None
    token: str
    known_hosts: str | None  # text of the user's known_hosts, if given
    redactor: Redactor = field(default_factory=Redactor)
    pins: dict[str, str] = field(default_factory=dict)
    """Host pattern -> fingerprint pinned by earlier rounds of the task."""

    @property
    def auth_method(self) -> str:
        return "password" if self.password is not None else "publickey"

    def __repr__(self) -> str:
        return f"Credentials(auth={self.auth_method}, known_hosts={self.known_hosts is not None})"

    __str__ = __repr__


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CredentialError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise CredentialError(f"{path} is larger than {MAX_CREDENTIAL_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise CredentialError(f"{path} is not UTF-8 text") from None


def load_credentials(directory: Path) -> Credentials:
    d = Path(directory)
    if not d.is_dir():
        raise CredentialError(f"credentials directory {d} does not exist")
    pw_file, key_file = d / CREDENTIAL_PASSWORD_KEY, d / CREDENTIAL_SSHKEY_KEY
    has_pw, has_key = pw_file.is_file(), key_file.is_file()
    if has_pw == has_key:
        raise CredentialError(
            f"{d} must hold exactly one of {CREDENTIAL_PASSWORD_KEY!r} and "
            f"{CREDENTIAL_SSHKEY_KEY!r} (found {'both' if has_pw else 'neither'})"
        )
    redactor = Redactor()
    password: str | None = None
    key: asyncssh.SSHKey | None = None
    if has_pw:
        password = _read(pw_file).rstrip("\r\n")
        if not password:
            raise CredentialError(f"{pw_file} is empty")
        redactor.add(password)
    else:
        text = _read(key_file)
        redactor.add(text)
        try:
            key = asyncssh.import_private_key(text)
        except (asyncssh.KeyImportError, ValueError):
            raise CredentialError(
                f"{key_file} is not an unencrypted private key (OpenSSH or PEM)"
            ) from None
    token_file = d / TOKEN_FILE
    if not token_file.is_file():
        raise CredentialError(f"{d} has no {TOKEN_FILE!r} file (the bootstrap token)")
    token = _read(token_file).strip()
    redactor.add(token)
    if not TOKEN_RE.fullmatch(token):
        raise CredentialError(f"{token_file} does not hold a bootstrap token <6 chars>.<16 chars>")
    redactor.add(token.split(".", 1)[1])
    kh = d / KNOWN_HOSTS_FILE
    known_hosts = _read(kh) if kh.is_file() else None
    pins_file = d / SECRET_PINS_KEY
    pins: dict[str, str] = {}
    if pins_file.is_file():
        try:
            pins = parse_pins(_read(pins_file))
        except ValueError as e:
            raise CredentialError(f"{pins_file}: {e}") from None
    return Credentials(password, key, token, known_hosts, redactor, pins)
