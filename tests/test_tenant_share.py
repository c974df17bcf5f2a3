"""Weighted fair share between the tenants of one priority (pure scheduling, no Redis)."""

from __future__ import annotations

from collections import Counter

import pytest

from pulse.core.tenant_share import TenantShare

pytestmark = pytest.mark.unit


def drain(share: TenantShare, backlog: dict[str, int], budget: int, rounds: int) -> Counter[str]:
    """Run ``rounds`` rounds against queues of ``backlog`` entries; count what each served."""
    served: Counter[str] = Counter()
    for _ in range(rounds):
        asked = share.plan([t for t, n in backlog.items() if n > 0], budget)
        got = {t: min(n, backlog[t]) for t, n in asked.items()}
        for tenant, n in got.items():
            backlog[tenant] -= n
            served[tenant] += n
        share.served(asked, got)
    return served


def test_a_small_tenant_is_served_from_the_first_round_despite_a_flood() -> None:
    backlog = {"a": 200_000, "b": 100}
    served = drain(TenantShare(), backlog, budget=100, rounds=2)
    assert served["b"] == 100
    assert served["a"] == 100  # the flood keeps its half meanwhile


def test_equal_weights_share_equally_under_contention() -> None:
    served = drain(TenantShare(), {"a": 10_000, "b": 10_000}, budget=64, rounds=50)
    assert served["a"] == served["b"] == 64 * 50 // 2


def test_weights_set_the_shares() -> None:
    share = TenantShare(weights={"a": 3, "b": 1})
    served = drain(share, {"a": 10_000, "b": 10_000}, budget=40, rounds=25)
    assert served["a"] == 3 * served["b"]


def test_a_share_below_one_entry_per_round_accumulates() -> None:
    tenants = {f"t{i}": 1_000 for i in range(10)}
    share = TenantShare(weights={"t0": 1})
    served = drain(share, tenants, budget=5, rounds=40)
    # Every tenant is probed each round; none is starved and none takes more than its due.
    assert min(served.values()) >= 20
    assert max(served.values()) <= 40


def test_a_dry_tenant_is_only_probed_until_it_has_work_again() -> None:
    share = TenantShare()
    asked = share.plan(["a", "b"], 10)
    dry = share.served(asked, {"a": asked["a"], "b": 0})
    assert dry == ["b"]
    again = share.plan(["a", "b"], 10)
    assert again == {"a": 10, "b": 1}  # the busy tenant is not held back by the dry one
    share.served(again, {"a": 10, "b": 1})  # b has work again
    assert share.plan(["a", "b"], 10) == {"a": 5, "b": 5}


def test_an_alone_tenant_gets_the_whole_budget() -> None:
    assert TenantShare().plan(["a"], 32) == {"a": 32}
    assert TenantShare().plan([], 32) == {}


def test_more_tenants_than_the_budget_are_asked_in_turn_never_beyond_it() -> None:
    share = TenantShare()
    tenants = [f"t{i:04}" for i in range(5000)]
    asked: list[str] = []
    for _ in range(25):  # 25 rounds of 200: every tenant asked once, none twice
        plan = share.plan(tenants, 200)
        assert sum(plan.values()) == 200
        asked += list(plan)
    assert sorted(asked) == tenants
