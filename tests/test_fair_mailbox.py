"""A task lane's mailbox: priority first, then tenants in turn, each tenant in arrival order."""

from __future__ import annotations

import pytest

from pulse.runtime.fair_mailbox import FairMailbox

pytestmark = pytest.mark.unit


async def test_tenants_take_turns_within_a_priority_and_urgent_work_goes_first() -> None:
    mailbox: FairMailbox[str] = FairMailbox()
    for i in range(3):
        mailbox.put_nowait(5, "b", f"b{i}")
    mailbox.put_nowait(5, "a", "a0")
    mailbox.put_nowait(5, "a", "a1")
    mailbox.put_nowait(0, "c", "urgent")
    taken = [await mailbox.get() for _ in range(6)]
    assert taken == ["urgent", "b0", "a0", "b1", "a1", "b2"]
    assert mailbox.qsize() == 0


async def test_join_returns_once_every_item_is_done() -> None:
    mailbox: FairMailbox[int] = FairMailbox()
    await mailbox.join()  # empty: nothing to wait for
    mailbox.put_nowait(0, "a", 1)
    await mailbox.get()
    mailbox.task_done()
    await mailbox.join()
