"""The Redis half of settling a batch: every entry's transition, in one round trip.

Each transition is its own atomic script (``ack.lua``, ``retry_later.lua``, ``dead_letter.lua``,
``fallback.lua``, ``enqueue.lua`` for the receipts the batch created); a batch queues them all on
one pipeline. Every script tolerates a second run, so a batch applied again after a failure
changes nothing twice, except the receipts' XADDs: ``Applied.streamed`` says how many of them
went through, and only the rest are to be streamed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.publisher import Publisher
from pulse.queue.scripts import by_stream, load_script, per_stream


@dataclass(frozen=True, slots=True)
class EntryRef:
    """Where a job's entry is: what each transition names. ``job_id`` is "" for an entry that
    could not be decoded."""

    stream: str
    entry_id: str
    job_id: str = ""


@dataclass(slots=True)
class SettledBatch:
    """What settling a batch does in Redis: acknowledge, schedule a retry (due ms, and whether
    the attempt called a provider), dead-letter with a reason, move to the next fallback step,
    and stream the receipts the batch created."""

    acks: list[EntryRef] = field(default_factory=list)
    retries: list[tuple[EntryRef, int, bool]] = field(default_factory=list)
    dead: list[tuple[EntryRef, str]] = field(default_factory=list)
    fallbacks: list[tuple[EntryRef, Job]] = field(default_factory=list)
    receipts: Sequence[Job] = ()


@dataclass(frozen=True, slots=True)
class Applied:
    """How a batch went: the receipts streamed (a prefix of ``receipts``), and the first
    error, if a transition failed (the rest were applied all the same)."""

    streamed: int
    error: Exception | None = None

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class Transitions:
    def __init__(self, redis: Redis, keys: QueueKeys, consumer: str, publisher: Publisher) -> None:
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        self._publisher = publisher
        self._ack = load_script(redis, "ack")
        self._retry_later = load_script(redis, "retry_later")
        self._dead_letter = load_script(redis, "dead_letter")
        self._fallback = load_script(redis, "fallback")

    async def apply(self, batch: SettledBatch, now_ms: int) -> Applied:
        """Run every transition of ``batch`` in one pipelined round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._stage_acks(pipe, batch.acks)
            await self._stage_retries(pipe, batch.retries)
            await self._stage_dead(pipe, batch.dead, now_ms)
            await self._stage_fallbacks(pipe, batch.fallbacks)
            await self._publisher.stage(pipe, batch.receipts)
            if not pipe.command_stack:
                return Applied(0)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        receipts = replies[len(replies) - len(batch.receipts) :]
        streamed = next(
            (i for i, reply in enumerate(receipts) if isinstance(reply, Exception)), len(receipts)
        )
        return Applied(streamed, errors[0] if errors else None)

    async def _stage_acks(self, pipe: Pipeline, entries: Sequence[EntryRef]) -> None:
        """``ack.lua``: XACK + XDEL + forget, one call per stream."""
        grouped = by_stream((e.stream, (e.entry_id, e.job_id)) for e in entries)
        index = self._keys.index()
        await per_stream(
            pipe,
            self._ack,
            grouped,
            lambda stream: [stream, index, self._keys.retry_schedule(stream)],
            [CONSUMER_GROUP],
        )

    async def _stage_retries(
        self, pipe: Pipeline, schedule: Sequence[tuple[EntryRef, int, bool]]
    ) -> None:
        """``retry_later.lua``, one call per stream; an attempt not made is given back."""
        grouped = by_stream((e.stream, (e.entry_id, due, int(made))) for e, due, made in schedule)
        await per_stream(
            pipe,
            self._retry_later,
            grouped,
            lambda stream: [stream, self._keys.retry_schedule(stream)],
            [CONSUMER_GROUP, self._consumer],
        )

    async def _stage_dead(
        self, pipe: Pipeline, entries: Sequence[tuple[EntryRef, str]], now_ms: int
    ) -> None:
        """``dead_letter.lua`` per entry: copy to the dead letters, acknowledge the original."""
        for entry, reason in entries:
            keys = [
                entry.stream,
                self._keys.dead_letters(),
                self._keys.index(),
                self._keys.retry_schedule(entry.stream),
            ]
            args: list[str | int] = [CONSUMER_GROUP, entry.entry_id, entry.job_id, reason, now_ms]
            await self._dead_letter(keys=keys, args=args, client=pipe)

    async def _stage_fallbacks(self, pipe: Pipeline, moves: Sequence[tuple[EntryRef, Job]]) -> None:
        """``fallback.lua`` per entry: replace it by a fresh entry of its next step."""
        for entry, following in moves:
            keys = [
                entry.stream,
                self._keys.stream(following.priority),
                self._keys.index(),
                self._keys.retry_schedule(entry.stream),
            ]
            message = encode_job(following)[MESSAGE_FIELD]
            args: list[str | bytes] = [CONSUMER_GROUP, entry.entry_id, following.id, message]
            await self._fallback(keys=keys, args=args, client=pipe)
