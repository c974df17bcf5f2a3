"""The stream message is a versioned schema: round trips, and refuses what it cannot read."""

from __future__ import annotations

import msgspec
import pytest

from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.queue.codec import MESSAGE_FIELD, UndecodableMessage, decode_job, encode_job

pytestmark = pytest.mark.unit


def a_job() -> Job:
    return Job(
        id=str(uuid7()),
        tenant_id=str(uuid7()),
        kind=JobKind.NOTIFICATION,
        channel="email",
        recipient="someone@example.com",
        payload={"subject": "Hello", "body": "Welcome"},
        priority=1,
        max_attempts=5,
    )


def test_job_round_trips() -> None:
    job = a_job()
    assert decode_job(encode_job(job)) == job


def test_job_with_a_fallback_chain_round_trips() -> None:
    step = {"channel": "sms", "recipient": "+14155552671", "payload": {"body": "Hi"}}
    job = msgspec.structs.replace(a_job(), fallback=(step,))

    following = job.next_step()

    assert decode_job(encode_job(job)) == job
    assert following is not None
    assert (following.channel, following.recipient, following.step) == ("sms", step["recipient"], 1)
    assert decode_job(encode_job(following)) == following
    assert following.next_step() is None


def test_message_carries_its_version() -> None:
    fields = encode_job(a_job())
    assert msgspec.msgpack.decode(fields[MESSAGE_FIELD])["v"] == 2


def test_a_version_1_message_is_still_read() -> None:
    job = a_job()
    old = msgspec.structs.asdict(job) | {"v": 1}
    del old["step"], old["fallback"]
    old["handler"] = old.pop("channel")  # the wire name of the channel field

    assert decode_job({MESSAGE_FIELD: msgspec.msgpack.encode(old)}) == job


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {MESSAGE_FIELD: b"not msgpack \xc1"},
        {MESSAGE_FIELD: msgspec.msgpack.encode({"v": 3, "id": "x"})},
        {MESSAGE_FIELD: msgspec.msgpack.encode({"v": 1})},
    ],
)
def test_undecodable_entries_raise_with_their_raw_bytes(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(UndecodableMessage) as caught:
        decode_job(fields)
    assert caught.value.raw == fields


def test_uuid7_sorts_by_time() -> None:
    earlier, later = uuid7(now_ms=1_000), uuid7(now_ms=2_000)
    assert earlier.version == 7
    assert str(earlier) < str(later)
