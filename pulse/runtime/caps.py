"""Recipient caps: at most N deliveries to one recipient of a tenant's channel per window.

Checked before the route is tried. Under the cap the notification counts (once, however many
attempts it takes) and goes on; over it, as the tenant chose, it waits until the window allows
(an attempt put off, not made: no attempt used, its history says why, counted in
``pulse_deliveries_deferred_total{limit="recipient"}``) or ends ``skipped`` with the reason (a
final status, in receipts; ``pulse_notifications_skipped_total``). Each tenant's caps are
cached for a few seconds; should PostgreSQL be unreadable the last ones known stay in force,
and should Redis be, the notification goes on uncapped (fail-open, logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from pulse.core.limits import RecipientCap
from pulse.core.ports import Envelope, Failed, Retry
from pulse.core.timeutil import utcnow
from pulse.metrics import Metrics
from pulse.queue.caps import RecipientWindows
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.runtime.work import CAP_SKIPPED, RECIPIENT_CAPPED, Try
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.recipient_caps import RecipientCapStore

logger = logging.getLogger("pulse.runtime.caps")
RECIPIENT_LIMIT = "recipient"
Caps = dict[str, tuple[RecipientCap, datetime]]


class RecipientCaps:
    def __init__(
        self,
        store: RecipientCapStore,
        windows: RecipientWindows,
        metrics: Metrics,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._windows = windows
        self._metrics = metrics
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[str, tuple[float, Caps]] = {}

    async def check(self, channel: str, envelope: Envelope) -> Try | None:
        """None when the notification may go on; else the attempt's end (put off or skipped)."""
        cap = (await self._caps(envelope.tenant_id)).get(channel)
        if cap is None:
            return None
        wait_ms = await self._take(channel, envelope, cap[0])
        if not wait_ms:
            return None
        return self._over(channel, envelope, cap[0], wait_ms / 1000)

    async def _take(self, channel: str, envelope: Envelope, cap: RecipientCap) -> int:
        window = (cap.max_count, cap.window_s * 1000.0)
        try:
            return await self._windows.take(
                envelope.tenant_id, channel, envelope.recipient, envelope.notification_id,
                window, self._clock() * 1000,
            )  # fmt: skip
        except TRANSIENT_REDIS_ERRORS as exc:
            logger.warning("recipient caps cannot be checked (%s): sending uncapped", exc)
            return 0

    def _over(self, channel: str, envelope: Envelope, cap: RecipientCap, wait_s: float) -> Try:
        what = cap.describe(channel)
        if cap.over == "skip":
            self._metrics.skipped.labels(RECIPIENT_LIMIT, channel).inc()
            logger.info("%s: skipped: over %s", envelope.notification_id, what)
            outcome: Failed | Retry = Failed(error=f"skipped: over {what}", error_class=CAP_SKIPPED)
        else:
            self._metrics.deferred.labels(RECIPIENT_LIMIT, "-").inc()
            error = f"waiting {wait_s:.3f} s for {what}"
            logger.info("%s: %s", envelope.notification_id, error)
            outcome = Retry(
                error=error, after_s=wait_s, error_class=RECIPIENT_CAPPED, provider_fault=False
            )
        return Try(None, outcome, utcnow(), 0.0)

    async def _caps(self, tenant_id: str) -> Caps:
        now = time.monotonic()
        found = self._cached.get(tenant_id)
        if found is not None and now < found[0]:
            return found[1]
        try:
            caps = await self._store.of(tenant_id)
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning("recipient caps unreadable (%s); the last known stay in force", exc)
            return {} if found is None else found[1]
        self._cached[tenant_id] = (now + self._ttl_s, caps)
        return caps
