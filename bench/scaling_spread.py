"""Which master holds which queue partition, for the cluster drains of bench/scaling.py.

A partition's keys share one hash tag (pulse/queue/keys.py), so the tag's slot decides its
master. With a random key prefix, 6 partitions on 3 masters leave a master without any in about
a quarter of runs; the bench picks a prefix whose partitions fall evenly (``even_token``), then
asks the cluster itself (CLUSTER KEYSLOT, CLUSTER SHARDS) where they are, and refuses a run that
leaves a master idle.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from redis import Redis
from redis.crc import key_slot

from pulse.queue.keys import QueueKeys

TRIES = 100_000


def tags(prefix: str, partitions: int) -> list[str]:
    return [keys.tag for keys in QueueKeys(prefix, partitions=partitions).partition_keys()]


def shards(url: str) -> list[tuple[str, int, int]]:
    """(master address, first slot, last slot) of every slot range, from CLUSTER SHARDS."""
    with Redis.from_url(url, socket_timeout=10) as client:
        answer = client.execute_command("CLUSTER", "SHARDS")
    ranges = []
    for shard in answer:
        ip = next(node[b"ip"].decode() for node in shard[b"nodes"] if node[b"role"] == b"master")
        slots = shard[b"slots"]
        ranges += [(ip, slots[i], slots[i + 1]) for i in range(0, len(slots), 2)]
    return ranges


def _owner(ranges: list[tuple[str, int, int]], slot: int) -> str:
    return next(ip for ip, first, last in ranges if first <= slot <= last)


def even_token(ranges: list[tuple[str, int, int]], partitions: int) -> str:
    """A scope token (bench/scope.py) whose partitions spread as evenly as they can."""
    masters = {ip for ip, _, _ in ranges}
    most = -(-partitions // len(masters))  # every master gets this many or one fewer
    for _ in range(TRIES):
        token = secrets.token_hex(4)
        counts: dict[str, int] = {}
        for tag in tags(f"bench{token}", partitions):
            owner = _owner(ranges, key_slot(tag.encode()))
            counts[owner] = counts.get(owner, 0) + 1
        if len(counts) == min(len(masters), partitions) and max(counts.values()) <= most:
            return token
    raise RuntimeError(f"no key prefix spreads {partitions} partitions over {len(masters)} masters")


def spread(
    url: str, prefix: str, partitions: int, hosts: Mapping[str, str]
) -> dict[str, list[int]]:
    """The partitions each master's host holds, as the cluster answers (KEYSLOT, SHARDS);
    ``hosts``: host name per address. Raises if a master holds none."""
    ranges = shards(url)
    held: dict[str, list[int]] = {host: [] for host in hosts.values()}
    with Redis.from_url(url, socket_timeout=10) as client:
        for number, tag in enumerate(tags(prefix, partitions)):
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", tag))
            held[hosts[_owner(ranges, slot)]].append(number)
    idle = [host for host, numbers in held.items() if not numbers]
    if idle and partitions >= len(held):
        raise RuntimeError(f"partitions {held}: {', '.join(idle)} hold none")
    return held
