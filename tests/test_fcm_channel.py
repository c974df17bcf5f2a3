"""Push against local servers speaking FCM HTTP v1 and Google's OAuth2 token endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.fcm import FcmChannel, PushPayload
from pulse.channels.registry import channel_specs, fcm_config
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed, Retry
from pulse.http.app import create_app
from tests.conftest import WorkerFactory, wait_for_status
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
    assert sent.provider_id == fake.names[0]
    assert isinstance(to_topic, Delivered)
    assert fake.messages[1]["topic"] == "news"
    assert fake.messages[0]["notification"] == {"title": "Your order", "body": "has shipped"}
    assert isinstance(gone, Failed)
    assert gone.error_class == "UNREGISTERED"
    assert isinstance(busy, Retry)
    assert busy.after_s == 11.0
    assert fake.tokens_issued == 1  # one grant, cached for every later send


async def test_a_revoked_access_token_is_dropped_and_the_push_sent_once_more(
    google: tuple[FakeGoogle, Settings],
) -> None:
    # Given a channel holding a cached access token
    fake, settings = google
    channel = FcmChannel(fcm_config(settings))
    await channel.start()
    try:
        first = await push(channel, GOOD)

        # When Google revokes that token mid-run (or it expires early)
        fake.revoke()
        after_revocation = await push(channel, GOOD)
        next_one = await push(channel, GOOD)
    finally:
        await channel.close()

    # Then the refused push fetched a new token and was sent again, once, and delivered;
    # the new token serves what follows
    assert isinstance(first, Delivered)
    assert isinstance(after_revocation, Delivered), after_revocation
    assert isinstance(next_one, Delivered)
    assert fake.refused == 1
    assert fake.tokens_issued == 2
    assert len(fake.messages) == 3  # the refused request was not taken


async def test_credentials_refused_even_when_fresh_are_retried_later_not_failed(
    google: tuple[FakeGoogle, Settings],
) -> None:
    # Given an account whose every access token FCM refuses (its key disabled, say)
    fake, settings = google
    fake.grant_dead_tokens = True
    channel = FcmChannel(fcm_config(settings))
    await channel.start()
    try:
        outcome = await push(channel, GOOD)
    finally:
        await channel.close()

    # Then the push is tried with one fresh token only (no loop), and put off: the account is
    # at fault, not the message, so it must not be dead-lettered as permanent
    assert isinstance(outcome, Retry), outcome
    assert outcome.error_class == "UNAUTHENTICATED"
    assert outcome.provider_fault
    assert fake.tokens_issued == 2
    assert fake.refused == 2


async def test_the_fcm_message_name_is_kept_on_the_attempt(
    settings: Settings,
    google: tuple[FakeGoogle, Settings],
    start_worker: WorkerFactory,
    auth: dict[str, str],
) -> None:
    # Given a deployment that pushes through FCM
    fake, fcm = google
    local = msgspec.structs.replace(
        settings,
        fcm_service_account_file=fcm.fcm_service_account_file,
        fcm_base_url=fcm.fcm_base_url,
    )
    start_worker(local)
    body = {"recipient": GOOD, "channel": "push", "payload": {"title": "Hi"}}
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # When a push is delivered
        response = await client.post("/api/notifications/", json=body, headers=auth)
        document = await wait_for_status(client, auth, response.headers["Location"], "delivered")
        tries = await client.get(f"/api/notifications/{document['id']}/attempts", headers=auth)
        attempts = msgspec.json.decode(await tries.read())["attempts"]

    # Then its attempt shows the name FCM gave the message, to match with FCM's own records
    assert [a["provider_message_id"] for a in attempts] == fake.names


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
