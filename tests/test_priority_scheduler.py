"""The weighted scheduler's shares, with simulated backlogs (pure, no I/O)."""

from __future__ import annotations

import pytest

from pulse.core.priority import DEFAULT_WEIGHTS, DeficitRoundRobin

pytestmark = pytest.mark.unit


def simulate(backlog: list[int], rounds: int, batch: int = 200) -> list[int]:
    """Run the scheduler against queues holding ``backlog`` entries; return what each served."""
    scheduler = DeficitRoundRobin(DEFAULT_WEIGHTS, batch)
    remaining = list(backlog)
    served = [0] * len(backlog)
    for _ in range(rounds):
        asked = scheduler.plan()
        got = {}
        for level, want in enumerate(asked):
            take = min(want, remaining[level])
            remaining[level] -= take
            served[level] += take
            got[level] = take
        scheduler.served(asked, got)
    return served


def test_shares_follow_the_weights_under_contention() -> None:
    served = simulate([10**9] * 5, rounds=200)
    total = sum(served)
    for level, weight in enumerate(DEFAULT_WEIGHTS):
        assert served[level] / total == pytest.approx(weight / sum(DEFAULT_WEIGHTS), rel=0.05)


def test_bulk_keeps_its_share_under_a_critical_flood() -> None:
    served = simulate([10**9, 0, 0, 0, 10**9], rounds=200)
    share = served[4] / (served[0] + served[4])
    assert share == pytest.approx(1 / 17, rel=0.1)


def test_a_lone_level_gets_the_whole_batch() -> None:
    served = simulate([0, 0, 0, 0, 10**9], rounds=10)
    assert served[4] >= 10 * 200 * 0.9


def test_new_critical_work_is_read_in_the_next_round() -> None:
    scheduler = DeficitRoundRobin(DEFAULT_WEIGHTS, 200)
    asked = scheduler.plan()
    scheduler.served(asked, {4: asked[4]})  # only bulk had work
    assert scheduler.plan()[0] >= 1  # critical is still probed every round


def test_invalid_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        DeficitRoundRobin([1, 0], 10)
