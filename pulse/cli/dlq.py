"""``pulse dlq``: the operator's view of dead letters across tenants (list, show, replay, purge)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import msgspec

from pulse.cli.serve import backends
from pulse.config import Settings
from pulse.queue.dead_letters import DeadLetterStream
from pulse.queue.keys import keys_for
from pulse.queue.partitions import known_keys
from pulse.queue.publisher import Publisher
from pulse.services.dead_letters import DEFAULT_RATE, DeadLetters
from pulse.store.dead_letters import DeadLetterFilter, DeadLetterStore


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dlq = sub.add_parser("dlq", help="list, show, replay and purge dead letters")
    actions = dlq.add_subparsers(required=True, metavar="ACTION")
    for name, handler, help_text in (
        ("list", _list, "list dead letters (newest last)"),
        ("show", _show, "show dead letters with their attempts"),
        ("replay", _replay, "replay dead letters with fresh attempts"),
        ("purge", _purge, "delete dead letters for good"),
    ):
        action = actions.add_parser(name, help=help_text)
        _filters(action)
        action.set_defaults(command=lambda s, a, h=handler: asyncio.run(h(s, a)))
        if name == "replay":
            action.add_argument("--rate", type=float, default=DEFAULT_RATE, help="per second")
        if name in ("list", "replay"):
            action.add_argument("--limit", type=int, default=100)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="tenant id")
    parser.add_argument("--channel")
    parser.add_argument("--error-class")
    parser.add_argument("--since", type=datetime.fromisoformat, help="ISO time")
    parser.add_argument("--until", type=datetime.fromisoformat, help="ISO time")
    parser.add_argument("--id", type=int, action="append", dest="ids", help="dead letter id")


def _where(args: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(
        tenant_id=args.tenant,
        channel=args.channel,
        error_class=args.error_class,
        since=args.since,
        until=args.until,
        ids=args.ids,
    )


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[DeadLetters]:
    async with backends(settings) as (redis, pool):
        keys = await known_keys(redis, keys_for(settings))  # dead letters of retiring ones too
        publisher = Publisher(redis, keys, fair=settings.tenant_fairness)  # as the API appends
        yield DeadLetters(DeadLetterStore(pool), DeadLetterStream(redis, keys), publisher)


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async with _service(settings) as service:
        for item in await service.store.find(_where(args), 0, args.limit):
            print(msgspec.json.encode(item).decode())
    return 0


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    async with _service(settings) as service:
        for item in await service.store.find(_where(args), 0, 1000):
            attempts = (
                await service.store.attempts(item.notification_id) if item.notification_id else []
            )
            print(msgspec.json.encode({"dead_letter": item, "attempts": attempts}).decode())
    return 0


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    async with _service(settings) as service:
        by = f"cli {getpass.getuser()}"
        count = await service.replay(_where(args), by, limit=args.limit, rate=args.rate)
    print(f"replayed {count}")
    return 0


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    async with _service(settings) as service:
        count = await service.purge(_where(args))
    print(f"purged {count}")
    return 0
