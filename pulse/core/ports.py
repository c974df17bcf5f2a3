"""Ports between the domain and the outside: channels and their outcomes.

A channel knows nothing of Redis or PostgreSQL: it receives an envelope and answers one of
three outcomes; the runtime turns the outcome into exactly one state transition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec


class Delivered(msgspec.Struct, frozen=True):
    """The provider accepted the message."""

    provider_id: str | None = None
    response: str | None = None


class Retry(msgspec.Struct, frozen=True):
    """A temporary failure: try again later (after ``after_s`` when the provider said so).

    ``provider_fault``: the provider itself is in trouble (unreachable, timing out, 5xx,
    throttling), which counts against its circuit breaker; False when it answered but put
    this one message off (an SMTP 451 for a greylisted mailbox), or when the far end is the
    recipient's own (a webhook endpoint), not a provider shared by everyone."""

    error: str
    after_s: float | None = None
    error_class: str = "TemporaryError"
    response: str | None = None
    provider_fault: bool = True


class Failed(msgspec.Struct, frozen=True):
    """A permanent failure: retrying cannot help."""

    error: str
    error_class: str = "PermanentError"
    response: str | None = None


Outcome = Delivered | Retry | Failed


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """What the API needs to know about a channel to validate a request at accept time.

    ``check_recipient`` returns the normalised recipient or raises ``ValueError`` with a reason.
    ``provider_kind`` names the kind of account that delivers it (``smtp``, ``twilio``...): the
    channel's default provider carries that name, and named providers of that kind can be put
    on its routes. None: the channel is its own single provider.
    ``missing`` names the setting the deployment lacks for that default provider (such as
    ``PULSE_TWILIO_ACCOUNT_SID``); None when it is configured.
    """

    name: str
    payload_type: type[msgspec.Struct]
    check_recipient: Callable[[str], str]
    provider_kind: str | None = None
    missing: str | None = None


C = TypeVar("C", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class ChannelPlugin(Generic[C]):
    """What a ``pulse.channels`` entry point names: how to check requests for the channel and
    how to build it, both from the channel's settings.

    A plugin's ``settings_type`` is a struct of its own, filled from
    ``PULSE_CHANNEL_<NAME>__<FIELD>`` and checked at start-up (a bad value names the variable);
    None (Pulse's own channels) hands over the process's ``pulse.config.Settings`` instead."""

    name: str
    spec: Callable[[C], ChannelSpec]
    build: Callable[[C], Channel]
    settings_type: type[C] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One delivery attempt of one notification, as a channel sees it."""

    notification_id: str
    tenant_id: str
    recipient: str
    payload: Any  # an instance of the channel's ``payload_type``
    attempt: int


class Channel(Protocol):
    """A delivery channel plugin."""

    spec: ChannelSpec

    async def start(self) -> None:
        """Open long-lived resources (HTTP sessions, connections)."""

    async def send(self, envelope: Envelope) -> Outcome:
        """Deliver once; never raise for provider errors, answer an outcome instead."""

    async def close(self) -> None:
        """Release what ``start`` opened."""
