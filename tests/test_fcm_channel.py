"""Push against local servers speaking FCM HTTP v1 and Google's OAuth2 token endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pulse.channels.fcm import FcmChannel, PushPayload
from pulse.channels.registry import fcm_config
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed, Retry
from tests.provider_fakes import BUSY, GOOD, UNREGISTERED, FakeGoogle

pytestmark = pytest.mark.integration


async def push(channel: FcmChannel, target: str) -> Any:
    payload = PushPayload(title="Your order", body="has shipped", data={"order": "42"})
    return await channel.send(Envelope(str(uuid7()), str(uuid7()), target, payload, 1))


async def test_push_outcomes_and_a_cached_access_token(
    google: tuple[FakeGoogle, Settings],
) -> None:
    fake, settings = google
    channel = FcmChannel(fcm_config(settings))
    await channel.start()
    try:
        sent = await push(channel, GOOD)
        to_topic = await push(channel, "/topics/news")
        gone = await push(channel, UNREGISTERED)
        busy = await push(channel, BUSY)
    finally:
        await channel.close()

    assert isinstance(sent, Delivered)
    assert sent.provider_id == "projects/pulse-test/messages/0:1234"
    assert isinstance(to_topic, Delivered)
    assert fake.messages[1]["topic"] == "news"
    assert fake.messages[0]["notification"] == {"title": "Your order", "body": "has shipped"}
    assert isinstance(gone, Failed)
    assert gone.error_class == "UNREGISTERED"
    assert isinstance(busy, Retry)
    assert busy.after_s == 11.0
    assert fake.tokens_issued == 1  # one grant, cached for every later send


def test_registration_tokens_and_topics_are_checked() -> None:
    from pulse.channels.fcm import check_target

    assert check_target(GOOD) == GOOD
    assert check_target("/topics/news") == "/topics/news"
    for bad in ("short", "/topics/", "not a token with spaces" * 3):
        with pytest.raises(ValueError, match="FCM"):
            check_target(bad)


def test_unreadable_service_account_is_a_config_error(tmp_path: Path) -> None:
    from pulse.core.errors import ConfigError

    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="PULSE_FCM_SERVICE_ACCOUNT_FILE"):
        fcm_config(Settings(fcm_service_account_file=str(tmp_path / "bad.json")))
