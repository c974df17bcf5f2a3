"""What tenants configured for delivery, as a snapshot refreshed from PostgreSQL.

Routes (which providers deliver a channel, in order) and the generations of tenants' receipt
and webhook signing secrets are read
on every delivery, so they are held in memory and reloaded every ``refresh_s``: a change made
through the API reaches queued work within that time, without a restart, and an outage of
PostgreSQL keeps the last snapshot in force.
"""

from __future__ import annotations

import asyncio
import logging

from pulse.core.ports import Envelope
from pulse.core.routes import RouteBook
from pulse.core.signatures import RECEIPTS, WEBHOOKS, SecretGeneration, secrets_in_force
from pulse.core.timeutil import utcnow
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.receipts import ReceiptStore
from pulse.store.routes import RouteStore
from pulse.store.webhook_secrets import WebhookSecretStore

logger = logging.getLogger("pulse.runtime.delivery_config")


class DeliveryConfig:
    def __init__(
        self,
        routes: RouteStore,
        receipts: ReceiptStore,
        webhooks: WebhookSecretStore,
        defaults: RouteBook,
        *,
        refresh_s: float,
        signing_key: str | None,
    ) -> None:
        self._routes = routes
        self._receipts = receipts
        self._webhooks = webhooks
        self._book = defaults
        self._refresh_s = refresh_s
        self._signing_key = signing_key
        self._generations: dict[str, SecretGeneration] = {}
        self._webhook_generations: dict[str, SecretGeneration] = {}

    def route(self, tenant_id: str, channel: str) -> list[str]:
        return self._book.route(tenant_id, channel)

    def receipt_secrets(self, envelope: Envelope) -> list[str]:
        """The secrets a receipt to this tenant is signed with: the current one, and during a
        rotation's grace period the previous one too (receivers may check either)."""
        return self._secrets(RECEIPTS, self._generations, envelope.tenant_id)

    def webhook_secrets(self, envelope: Envelope) -> list[str]:
        """The same for the tenant's webhooks, with secrets of their own."""
        return self._secrets(WEBHOOKS, self._webhook_generations, envelope.tenant_id)

    def _secrets(
        self, purpose: str, generations: dict[str, SecretGeneration], tenant_id: str
    ) -> list[str]:
        if not self._signing_key:
            return []
        state = generations.get(tenant_id, SecretGeneration())
        return secrets_in_force(self._signing_key, purpose, tenant_id, state, utcnow())

    async def refresh(self) -> None:
        tenants = await self._routes.all()
        self._generations = await self._receipts.generations()
        self._webhook_generations = await self._webhooks.generations()
        self._book = self._book.with_tenant_routes(tenants)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except TRANSIENT_DB_ERRORS as exc:
                logger.warning("could not reload routes (the last ones stay in force): %s", exc)
            await asyncio.sleep(self._refresh_s)
