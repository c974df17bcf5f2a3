"""UUIDv7 ids carry the time they were made: the accept time of every notification."""

import time
import uuid

import pytest

from pulse.core.ids import uuid7, uuid7_ms

pytestmark = pytest.mark.unit


def test_an_id_tells_when_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    ids = [str(uuid7()) for _ in range(1_000)]
    after = time.time_ns() // 1_000_000

    times = [uuid7_ms(value) for value in ids]

    assert all(t is not None and before <= t <= after for t in times)
    assert times == [uuid.UUID(value).int >> 80 for value in ids]  # the same as parsing it
    assert uuid7_ms(ids[0].upper()) == times[0]


def test_an_id_of_another_version_has_no_time() -> None:
    assert uuid7_ms(str(uuid.uuid4())) is None
    with pytest.raises(ValueError, match="badly formed"):
        uuid7_ms("not-an-id")
