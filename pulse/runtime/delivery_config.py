"""What tenants configured for delivery, as a snapshot refreshed from PostgreSQL.

Routes (which providers deliver a channel, in order) and receipt signing generations are read
on every delivery, so they are held in memory and reloaded every ``refresh_s``: a change made
through the API reaches queued work within that time, without a restart, and an outage of
PostgreSQL keeps the last snapshot in force.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from pulse.core.ports import Envelope
from pulse.core.routes import RouteBook
from pulse.core.signatures import RECEIPT_ROTATION_GRACE, receipt_secret
from pulse.core.timeutil import utcnow
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.receipts import ReceiptStore
from pulse.store.routes import RouteStore

logger = logging.getLogger("pulse.runtime.delivery_config")


class DeliveryConfig:
    def __init__(
        self,
        routes: RouteStore,
        receipts: ReceiptStore,
        defaults: RouteBook,
        *,
        refresh_s: float,
        signing_key: str | None,
    ) -> None:
        self._routes = routes
        self._receipts = receipts
        self._book = defaults
        self._refresh_s = refresh_s
        self._signing_key = signing_key
        self._generations: dict[str, tuple[int, datetime | None]] = {}

    def route(self, tenant_id: str, channel: str) -> list[str]:
        return self._book.route(tenant_id, channel)

    def receipt_secrets(self, envelope: Envelope) -> list[str]:
        """The secrets a receipt to this tenant is signed with: the current one, and during a
        rotation's grace period the previous one too (receivers may check either)."""
        if not self._signing_key:
            return []
        generation, rotated_at = self._generations.get(envelope.tenant_id, (1, None))
        secrets = [receipt_secret(self._signing_key, envelope.tenant_id, generation)]
        if (
            generation > 1
            and rotated_at is not None
            and utcnow() - rotated_at < RECEIPT_ROTATION_GRACE
        ):
            secrets.append(receipt_secret(self._signing_key, envelope.tenant_id, generation - 1))
        return secrets

    async def refresh(self) -> None:
        tenants = await self._routes.all()
        self._generations = await self._receipts.generations()
        self._book = self._book.with_tenant_routes(tenants)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except TRANSIENT_DB_ERRORS as exc:
                logger.warning("could not reload routes (the last ones stay in force): %s", exc)
            await asyncio.sleep(self._refresh_s)
