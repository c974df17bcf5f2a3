"""The notifications one Locust process sent and has not yet seen finish, per API key.

Latency is the server's own ``delivered_at - created_at`` (accept → delivered, one clock), read
back from the list API; this book only knows which ids to look for and from when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# The list filter is on the server's created_at; the client's clock may be a little ahead.
CLOCK_MARGIN = timedelta(seconds=5)
FINISHED = ("delivered", "failed")


@dataclass(frozen=True, slots=True)
class Settled:
    id: str
    status: str  # delivered or failed
    latency_ms: float  # from accepted (created_at) to delivered_at, or failed_at
    error: str | None


class DeliveryBook:
    def __init__(self) -> None:
        self._pending: dict[str, dict[str, datetime]] = {}
        self.accepted = 0  # ids ever sent: each one ends delivered, failed or still pending

    def sent(self, key: str, ids: list[str], at: datetime) -> None:
        pending = self._pending.setdefault(key, {})
        self.accepted += len(set(ids) - pending.keys())
        pending.update(dict.fromkeys(ids, at))

    def pending(self) -> int:
        return sum(len(ids) for ids in self._pending.values())

    def keys_waiting(self) -> list[str]:
        return [key for key, ids in self._pending.items() if ids]

    def since(self, key: str) -> datetime | None:
        """Where a list of this key's finished notifications must start to include them all."""
        ids = self._pending.get(key)
        return min(ids.values()) - CLOCK_MARGIN if ids else None

    def settle(self, key: str, items: list[dict[str, Any]]) -> list[Settled]:
        """The pending ones among ``items`` (list API documents) that finished, now forgotten."""
        ids = self._pending.get(key, {})
        settled = []
        for item in items:
            if item["id"] in ids and item["status"] in FINISHED:
                del ids[item["id"]]
                settled.append(_settled(item))
        return settled


def _settled(item: dict[str, Any]) -> Settled:
    created = datetime.fromisoformat(item["created_at"])
    ended = datetime.fromisoformat(item["delivered_at"] or item["failed_at"] or item["updated_at"])
    return Settled(
        id=item["id"],
        status=item["status"],
        latency_ms=(ended - created).total_seconds() * 1000,
        error=item.get("last_error"),
    )
