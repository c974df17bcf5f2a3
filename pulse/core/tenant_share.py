"""Weighted deficit round robin over the tenants of one priority: a flood cannot starve others.

Within a priority, each tenant with work has its own sub-stream. A fetch round gives the
priority's share of the batch (from ``pulse.core.priority``) to its busy tenants in proportion
to their weights (default 1); a tenant's unused fraction carries over as credit, so weights hold
exactly over rounds even when the per-round share is below one entry. A tenant whose
sub-stream came up short has run dry: it loses its credit (classic DRR, no hoarding) and is
only probed for one entry until it delivers what it is asked again, so a dry lane does not
take a share from a busy one. With tenant A's 200,000 queued and tenant B's 100 arriving, B
is served from the next round on (at once for a sub-stream that round finds new, then by this
plan) at half the priority's rate (equal weights), A at the other half; alone, A gets all of
it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_WEIGHT = 1
PROBE = 1  # entries asked of a dry lane: enough to see that it has work again


@dataclass
class TenantShare:
    """The DRR state of one priority: tenant id -> credit, kept between rounds."""

    weights: Mapping[str, int] = field(default_factory=dict)
    _credit: dict[str, float] = field(init=False, default_factory=dict)
    _dry: set[str] = field(init=False, default_factory=set)
    _turn: int = field(init=False, default=0)  # where the next window starts (many tenants)

    def weight(self, tenant: str) -> int:
        return max(1, self.weights.get(tenant, DEFAULT_WEIGHT))

    def plan(self, tenants: Iterable[str], budget: int) -> dict[str, int]:
        """How many entries to read from each active tenant's sub-stream this round.

        Every active tenant is asked for at least one entry (so a newly active tenant is seen
        within one round), and the others share ``budget`` by weight. With more active tenants
        than ``budget``, a window of ``budget`` of them is asked for one each, the window
        turning round them from round to round: a worker never takes more than its batch
        because many tenants have work.
        """
        active = sorted(set(tenants))
        for gone in set(self._credit) - set(active):
            del self._credit[gone]
        self._dry &= set(active)
        if not active or budget < 1:
            return {}
        if len(active) > budget:
            start = self._turn % len(active)
            self._turn = start + budget
            return dict.fromkeys((active[start:] + active[:start])[:budget], PROBE)
        total = sum(self.weight(t) for t in active if t not in self._dry)
        counts: dict[str, int] = {}
        for tenant in active:
            if tenant in self._dry or not total:
                counts[tenant] = PROBE
                continue
            credit = self._credit.get(tenant, 0.0) + budget * self.weight(tenant) / total
            self._credit[tenant] = credit
            counts[tenant] = max(PROBE, int(credit))
        return counts

    def served(self, asked: Mapping[str, int], got: Mapping[str, int]) -> list[str]:
        """Charge each tenant what it delivered; answer the tenants that ran dry (their
        sub-streams may be dropped from the active set)."""
        dry: list[str] = []
        for tenant, wanted in asked.items():
            taken = got.get(tenant, 0)
            if taken < wanted:
                self._credit.pop(tenant, None)
                self._dry.add(tenant)
                dry.append(tenant)
            else:
                self._dry.discard(tenant)
                self._credit[tenant] = max(0.0, self._credit.get(tenant, 0.0) - taken)
        return dry
