"""What an accept answers, and the Idempotency-Key outcomes that are not a 202.

Shared by the accept service and its group commit (``pulse.services.group_commit``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pulse.core.errors import PulseError
from pulse.store.idempotency import Existing


class KeyBusy(PulseError):
    """Another request with this Idempotency-Key is being processed right now (409)."""


class KeyReused(PulseError):
    """This Idempotency-Key was used with another request body (422)."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    value: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer: the first answer again when ``replayed``."""

    status: int
    body: bytes
    location: str | None = None
    replayed: bool = False


def replay(existing: Existing) -> Answer:
    """The answer remembered for the key; 422 when it answered another body."""
    if not existing.same_body:
        raise KeyReused("this Idempotency-Key was used with a different request body")
    return Answer(existing.status, existing.body, existing.location, replayed=True)
