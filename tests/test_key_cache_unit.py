"""The key cache's rules, with a clock of the test's own: trusted only while live, emptied by a
revocation (and a lookup begun before it cannot refill it), bounded in number and in age."""

from __future__ import annotations

import pytest

from pulse.store.key_cache import KeyCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def live_cache(max_entries: int = 10, ttl_s: float = 60.0) -> tuple[KeyCache[str], Clock]:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(max_entries, ttl_s, clock)
    cache.live = lambda: True
    return cache, clock


def test_nothing_is_remembered_or_served_while_not_live() -> None:
    cache, _ = live_cache()
    cache.put(b"a", "tenant-a", cache.generation)
    cache.live = lambda: False
    assert cache.get(b"a") is None
    cache.put(b"b", "tenant-b", cache.generation)
    cache.live = lambda: True
    assert cache.get(b"b") is None
    assert cache.get(b"a") == "tenant-a"


def test_a_lookup_begun_before_a_revocation_does_not_refill_the_cache() -> None:
    # Given a lookup that read the key before a revocation emptied the cache
    cache, _ = live_cache()
    began_at = cache.generation
    cache.clear()
    # When it stores what it read
    cache.put(b"a", "tenant-a", began_at)
    # Then nothing is kept
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_entries_age_out_after_the_ttl() -> None:
    cache, clock = live_cache(ttl_s=60.0)
    cache.put(b"a", "tenant-a", cache.generation)
    clock.now = 59.9
    assert cache.get(b"a") == "tenant-a"
    clock.now = 60.0
    assert cache.get(b"a") is None


def test_the_least_recently_used_entry_goes_first_beyond_the_bound() -> None:
    cache, _ = live_cache(max_entries=2)
    for digest in (b"a", b"b"):
        cache.put(digest, digest.decode(), cache.generation)
    assert cache.get(b"a") == "a"  # now b is the least recently used
    cache.put(b"c", "c", cache.generation)
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert (cache.get(b"a"), cache.get(b"c")) == ("a", "c")
