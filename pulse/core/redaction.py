"""Scrubbing configured secrets out of text that people read: attempt rows and log lines."""

from __future__ import annotations

from collections.abc import Sequence


class Redactor:
    """Replaces every configured secret in a text with ``***``: provider errors sometimes echo
    what they were sent, and attempt rows and logs are read by people."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
