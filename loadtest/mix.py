"""What a simulated client sends: bodies across channels and priorities, in realistic shares.

Pure functions of a random generator, so the mix is tested without a server or Locust.
"""

from __future__ import annotations

import random
from typing import Any

# Lower is more urgent; most traffic is normal, some urgent, some bulk.
PRIORITY_SHARES = {0: 5, 1: 15, 2: 60, 3: 15, 4: 5}
# Channels `pulse dev` delivers by itself: email (its SMTP sink), log, and webhooks to a
# receiver on loopback when the Pulse under test allows one (PULSE_WEBHOOK_ALLOW_PRIVATE).
CHANNEL_SHARES = {"email": 50, "log": 25, "webhook": 25}
BATCH_SIZE = 10


def choose_priority(rng: random.Random) -> int:
    return rng.choices(list(PRIORITY_SHARES), weights=list(PRIORITY_SHARES.values()))[0]


def choose_channel(rng: random.Random, webhook_url: str | None) -> str:
    """A webhook only when there is a receiver to send it to: whatever is sent must deliver."""
    shares = {c: w for c, w in CHANNEL_SHARES.items() if c != "webhook" or webhook_url}
    return rng.choices(list(shares), weights=list(shares.values()))[0]


def recipient(channel: str, rng: random.Random, webhook_url: str | None) -> str:
    number = rng.randrange(100_000)
    if channel == "webhook":
        assert webhook_url is not None
        return f"{webhook_url}?customer={number}"
    if channel == "email":
        return f"customer-{number}@example.com"
    return f"customer-{number}"


def payload(channel: str, rng: random.Random) -> dict[str, Any]:
    order = rng.randrange(1_000_000)
    if channel == "email":
        return {"subject": f"Order {order} shipped", "body": f"Your order {order} is on its way."}
    if channel == "webhook":
        return {"type": "order.shipped", "data": {"order": order}}
    return {"message": f"order {order} shipped", "data": {"order": order}}


def single(rng: random.Random, webhook_url: str | None, metadata: dict[str, str]) -> dict[str, Any]:
    """One notification: a channel, its recipient and payload, a priority, our metadata tag."""
    channel = choose_channel(rng, webhook_url)
    return {
        "recipient": recipient(channel, rng, webhook_url),
        "channel": channel,
        "payload": payload(channel, rng),
        "priority": choose_priority(rng),
        "metadata": metadata,
    }


def batch(rng: random.Random, webhook_url: str | None, metadata: dict[str, str]) -> dict[str, Any]:
    """A campaign: one template, many recipients of the same channel, bulk or normal priority."""
    channel = choose_channel(rng, webhook_url)
    return {
        "template": {
            "channel": channel,
            "payload": payload(channel, rng),
            "priority": rng.choice([2, 4]),
            "metadata": metadata,
        },
        "recipients": [recipient(channel, rng, webhook_url) for _ in range(BATCH_SIZE)],
    }
