"""Scrub secret values from any text before it is logged, reported or raised.

The job never puts a secret into a message on purpose; this is the second line:
every error text that leaves a machine's worker goes through ``Redactor.scrub``.
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 4
"""Shorter values are not scrubbed (they would blank ordinary words)."""


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        """Add a secret, and each of its lines (a private key's body lines)."""
        for value in [secret, secret.strip(), *secret.splitlines()]:
            value = value.strip()
            if len(value) >= MIN_SECRET_LENGTH and value not in self._secrets:
                self._secrets.append(value)
        # longest first, so a secret containing another is removed whole
        self._secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and any(s in text for s in self._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} values)"
