"""An example third-party channel: writes each notification as a JSON file in an outbox folder.

Its settings are its own, under ``PULSE_CHANNEL_EXAMPLE__<FIELD>``:
``OUTBOX`` (the folder), ``GREETING`` (put before each text), ``MAX_LENGTH`` (longest text
accepted) and ``API_TOKEN`` (a secret: its name ends in ``_token``, so Pulse hides and scrubs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from pulse.core.ports import ChannelPlugin, ChannelSpec, Delivered, Envelope, Failed, Outcome


class ExampleSettings(msgspec.Struct, frozen=True, kw_only=True):
    outbox: str | None = None
    greeting: str = "Hello"
    max_length: Annotated[int, msgspec.Meta(ge=1)] = 1000
    api_token: str | None = None


class ExamplePayload(msgspec.Struct, kw_only=True):
    text: Annotated[str, msgspec.Meta(min_length=1)]


def check_name(value: str) -> str:
    if not value.isidentifier():
        raise ValueError("a recipient of the example channel is a plain name")
    return value


SPEC = ChannelSpec(name="example", payload_type=ExamplePayload, check_recipient=check_name)


class ExampleChannel:
    spec = SPEC

    def __init__(self, settings: ExampleSettings) -> None:
        self._settings = settings

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> Outcome:
        if self._settings.outbox is None:
            return Failed("PULSE_CHANNEL_EXAMPLE__OUTBOX is not set")
        text: str = envelope.payload.text
        if len(text) > self._settings.max_length:
            return Failed(f"text longer than {self._settings.max_length}")
        message = {"to": envelope.recipient, "text": f"{self._settings.greeting}, {text}"}
        path = Path(self._settings.outbox) / f"{envelope.notification_id}.json"
        path.write_bytes(msgspec.json.encode(message))
        return Delivered(provider_id=path.name)


PLUGIN: ChannelPlugin[ExampleSettings] = ChannelPlugin(
    "example", lambda settings: SPEC, ExampleChannel, settings_type=ExampleSettings
)
