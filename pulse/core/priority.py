"""Weighted deficit round robin over the priority levels: urgent first, nobody starves.

Each fetch round, every level that had work last round earns ``batch * weight / active
weights`` of credit and may read that many entries; a level that had no work is still probed
with a small count so new work is seen within one round. Credit a level could not use because
its stream ran dry is dropped (classic DRR), so an idle level cannot hoard a burst.

Under contention the shares follow the weights (0:16, 1:8, 2:4, 3:2, 4:1 by default: the bulk
level still gets 1/31 of the throughput under a flood of critical work); alone, any level
gets the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_WEIGHTS = (16, 8, 4, 2, 1)
PROBE = 1


@dataclass
class DeficitRoundRobin:
    weights: Sequence[int]
    batch: int
    _credit: list[float] = field(init=False)
    _active: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        if not self.weights or any(w < 1 for w in self.weights):
            raise ValueError("every priority weight must be a positive integer")
        if self.batch < 1:
            raise ValueError("batch must be positive")
        self._credit = [0.0] * len(self.weights)
        self._active = [True] * len(self.weights)

    def plan(self) -> list[int]:
        """How many entries to read from each level this round."""
        active_weight = sum(w for w, on in zip(self.weights, self._active, strict=True) if on)
        counts = []
        for level, weight in enumerate(self.weights):
            if self._active[level] and active_weight:
                self._credit[level] += self.batch * weight / active_weight
                counts.append(max(PROBE, int(self._credit[level])))
            else:
                counts.append(PROBE)
        return counts

    def served(self, asked: Sequence[int], got: Mapping[int, int]) -> None:
        """Record what each level delivered; a level that came up short has run dry."""
        for level, wanted in enumerate(asked):
            taken = got.get(level, 0)
            self._active[level] = taken >= wanted
            self._credit[level] = max(0.0, self._credit[level] - taken)
            if not self._active[level]:
                self._credit[level] = 0.0
