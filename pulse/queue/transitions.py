"""The Redis half of settling a batch: every entry's transition, in one round trip.

Each transition is its own atomic script (``ack.lua``, ``retry_later.lua``, ``dead_letter.lua``,
``fallback.lua``, ``enqueue.lua`` or ``enqueue_tenant.lua`` for the receipts the batch created);
a batch sends them all in one round trip (by EVALSHA alone: ``scripts.run_calls``). Every
script tolerates a second run, so a batch applied again after a failure changes nothing twice,
except the receipts' XADDs: ``Applied.streamed`` says how many of them went through, and only
the rest are to be streamed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.publisher import Appends
from pulse.queue.scripts import Call, by_stream, load_script, per_stream, run_calls


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
    def __init__(self, redis: Redis, keys: QueueKeys, consumer: str, *, fair: bool = False) -> None:
        """``fair``: a fallback step and a receipt go to their tenant's sub-stream of their
        priority, as the publisher appends an accepted notification (PULSE_TENANT_FAIRNESS)."""
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        self._fair = fair
        self._appends = Appends(redis, keys, fair=fair)  # as the publisher appends
        self._ack = load_script(redis, "ack")
        self._retry_later = load_script(redis, "retry_later")
        self._dead_letter = load_script(redis, "dead_letter")
        self._fallback = load_script(redis, "fallback")
        self._enqueue_once = load_script(redis, "enqueue_once")

    async def apply(self, batch: SettledBatch, now_ms: int) -> Applied:
        """Run every transition of ``batch`` in one pipelined round trip."""
        calls = [
            *self._acks(batch.acks),
            *self._retries(batch.retries),
            *self._dead(batch.dead, now_ms),
            *self._fallbacks(batch.fallbacks),
            *self._receipts(batch.receipts),
        ]
        if not calls:
            return Applied(0)
        replies = await run_calls(self._redis, calls)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        receipts = replies[len(replies) - len(batch.receipts) :]
        streamed = next(
            (i for i, reply in enumerate(receipts) if isinstance(reply, Exception)), len(receipts)
        )
        return Applied(streamed, errors[0] if errors else None)

    def _acks(self, entries: Sequence[EntryRef]) -> list[Call]:
        """``ack.lua``: XACK + XDEL + forget, one call per stream."""
        grouped = by_stream((e.stream, (e.entry_id, e.job_id)) for e in entries)
        return per_stream(
            self._ack,
            grouped,
            lambda stream: [
                stream,
                self._keys.of_key(stream).index(),
                QueueKeys.retry_schedule_of(stream),
            ],
            [CONSUMER_GROUP],
        )

    def _retries(self, schedule: Sequence[tuple[EntryRef, int, bool]]) -> list[Call]:
        """``retry_later.lua``, one call per stream; an attempt not made is given back."""
        grouped = by_stream((e.stream, (e.entry_id, due, int(made))) for e, due, made in schedule)
        return per_stream(
            self._retry_later,
            grouped,
            lambda stream: [stream, QueueKeys.retry_schedule_of(stream)],
            [CONSUMER_GROUP, self._consumer],
        )

    def _dead(self, entries: Sequence[tuple[EntryRef, str]], now_ms: int) -> list[Call]:
        """``dead_letter.lua`` per entry: copy to the dead letters, acknowledge the original."""
        return [
            Call(
                self._dead_letter,
                [
                    entry.stream,
                    self._keys.of_key(entry.stream).dead_letters(),
                    self._keys.of_key(entry.stream).index(),
                    QueueKeys.retry_schedule_of(entry.stream),
                ],
                [CONSUMER_GROUP, entry.entry_id, entry.job_id, reason, now_ms],
            )
            for entry, reason in entries
        ]

    def _fallbacks(self, moves: Sequence[tuple[EntryRef, Job]]) -> list[Call]:
        """``fallback.lua`` per entry: replace it by a fresh entry of its next step, in the
        same partition (the move is one script: one slot), in the tenant's lane when fair. An
        entry of a retiring partition moves out of it instead (``_leave_retiring``)."""
        calls: list[Call] = []
        for entry, following in moves:
            if self._keys.of_key(entry.stream).retiring:
                calls += self._leave_retiring(entry, following)
            else:
                calls.append(self._fallback_call(entry, following))
        return calls

    def _leave_retiring(self, entry: EntryRef, following: Job) -> list[Call]:
        """The next step of an entry in a retiring partition goes to a configured partition
        (``of_job``): two slots, so two calls in order, append then acknowledge. The append is
        ``enqueue_once.lua`` (into the priority stream, which the fair fetcher reads too): a
        batch applied again, or an entry reclaimed after a crash between the two, never streams
        the step twice while its entry waits."""
        target = self._keys.of_job(following)
        return [
            Call(
                self._enqueue_once,
                [target.stream(following.priority), target.index()],
                [following.id, encode_job(following)[MESSAGE_FIELD]],
            ),
            *self._acks([EntryRef(entry.stream, entry.entry_id, entry.job_id)]),
        ]

    def _fallback_call(self, entry: EntryRef, following: Job) -> Call:
        fair = self._fair
        part = self._keys.of_key(entry.stream)
        lane = (
            part.tenant_stream(following.priority, following.tenant_id)
            if fair
            else part.stream(following.priority)
        )
        return Call(
            self._fallback,
            [
                entry.stream, lane, part.index(), QueueKeys.retry_schedule_of(entry.stream),
                part.tenants(following.priority), part.wake(),
            ],
            [
                CONSUMER_GROUP, entry.entry_id, following.id,
                encode_job(following)[MESSAGE_FIELD], following.tenant_id if fair else "",
            ],
        )  # fmt: skip

    def _receipts(self, jobs: Sequence[Job]) -> list[Call]:
        """``enqueue.lua`` per receipt (``enqueue_tenant.lua`` when fair), as the publisher
        appends an accepted job (to the receipt's own partition)."""
        return [self._appends.call(job) for job in jobs]
