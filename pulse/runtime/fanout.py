"""Expands accepted batches into notifications and streams them: the fan-out is a worker's
job, so a batch request is answered as soon as the batch is committed, whatever its size."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from msgspec.structs import replace

from pulse.queue.due import DueIndex
from pulse.queue.publisher import Publisher
from pulse.runtime.backoff import until_answered
from pulse.runtime.work import Delivery
from pulse.store.batches import BatchStore, Expanded
from pulse.store.errors import TRANSIENT_DB_ERRORS

logger = logging.getLogger("pulse.runtime.fanout")


class FanOut:
    def __init__(self, batches: BatchStore, publisher: Publisher, due_index: DueIndex) -> None:
        self._batches = batches
        self._publisher = publisher
        self._due_index = due_index

    async def expand(self, deliveries: Sequence[Delivery]) -> None:
        """Create and stream each batch's notifications. Creating is idempotent; should the
        stream step fail, the created notifications are queued in PostgreSQL and the reconciler
        streams them."""
        for delivery in deliveries:
            origin = delivery.job.origin  # the batch's request and trace, for each of its items
            created = await self._create(delivery.job.id)
            jobs = [replace(job, origin=origin) for job in created.queued]
            await self._publisher.publish(jobs)
            later = [(replace(job, origin=origin), due) for job, due in created.scheduled]
            if later:
                await self._due_index.schedule(later)
            if jobs or later:
                count = len(jobs) + len(later)
                logger.info("batch %s fanned out into %d notifications", delivery.job.id, count)

    async def _create(self, batch_id: str) -> Expanded:
        return await until_answered(
            lambda: self._batches.expand(batch_id), f"expand batch {batch_id}", TRANSIENT_DB_ERRORS
        )
