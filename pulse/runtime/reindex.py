"""Rebuilds the due-time index from PostgreSQL's scheduled rows (the reconciler runs it).

A scheduled notification Redis lost (restarted empty, or an early entry acknowledged after a
reschedule) is put back in its sorted set with its due time from PostgreSQL: never straight
into a stream, so nothing is sent early. One a stream already holds is left alone
(``restore`` skips it atomically); one already in the index only has its due time set again.
"""

from __future__ import annotations

import logging

from pulse.queue.due import DueIndex
from pulse.store.scheduled import ScheduledStore

logger = logging.getLogger("pulse.runtime.reindex")
PAGE = 1000


class DueReindexer:
    def __init__(self, store: ScheduledStore, index: DueIndex) -> None:
        self._store = store
        self._index = index

    async def reindex(self, older_than_s: float) -> int:
        """One pass over the scheduled rows untouched for ``older_than_s``; return how many
        Redis had lost."""
        restored, after = 0, None
        while True:
            page = await self._store.open_scheduled(older_than_s, after, PAGE)
            if page:
                restored += len(await self._index.restore(page))
            if len(page) < PAGE:
                break
            last_job, last_due = page[-1]
            after = (last_due, last_job.id)
        if restored:
            logger.warning("re-indexed %d scheduled notifications missing from Redis", restored)
        return restored
