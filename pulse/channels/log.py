"""The development channel: writes the notification to the log and reports it delivered.

Useful to try Pulse without any provider, and as the baseline in benchmarks: it measures the
runtime itself, not a provider.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec

from pulse.core.ports import ChannelSpec, Delivered, Envelope, Outcome

logger = logging.getLogger("pulse.channels.log")


class LogPayload(msgspec.Struct, kw_only=True):
    message: Annotated[str, msgspec.Meta(min_length=1)]
    data: dict[str, Any] | None = None


def check_any(value: str) -> str:
    return value


LOG_SPEC = ChannelSpec(name="log", payload_type=LogPayload, check_recipient=check_any)


class LogChannel:
    spec = LOG_SPEC

    def __init__(self, quiet: bool = False) -> None:
        self._quiet = quiet

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> Outcome:
        if not self._quiet:
            logger.info(
                "notification %s to %s: %s",
                envelope.notification_id,
                envelope.recipient,
                envelope.payload.message,
            )
        return Delivered(provider_id=None)
