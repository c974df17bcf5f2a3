"""Every test belongs to exactly one tier, and a unit test starts no server.

Tiers (registered in pyproject.toml): ``unit`` (no I/O), ``integration`` (real Redis,
PostgreSQL, SMTP or HTTP on loopback), ``system`` (starts processes, chaos, long drains).
A test without one would silently fall out of `make test-unit`/`test-integration`/`test-system`,
so the run refuses to start instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

TIERS = frozenset({"unit", "integration", "system"})
# Fixtures that start or need a server: a unit test using one is not a unit test.
SERVER_FIXTURES = frozenset({"server_urls", "smtp_sink", "twilio", "google", "live_api"})


def tier_problem(item: pytest.Item) -> str | None:
    """Why ``item`` is not properly tiered, or None."""
    tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
    if not tiers:
        return f"{item.nodeid}: no tier (add `pytestmark = pytest.mark.unit|integration|system`)"
    if len(tiers) > 1:
        return f"{item.nodeid}: more than one tier ({', '.join(tiers)})"
    servers = sorted(SERVER_FIXTURES & set(getattr(item, "fixturenames", ())))
    if tiers == ["unit"] and servers:
        return f"{item.nodeid}: a unit test uses server fixtures ({', '.join(servers)})"
    return None


def refuse_untiered(items: Sequence[pytest.Item]) -> None:
    """Stop the run before any test starts if one is untiered or mistiered."""
    problems = [problem for item in items if (problem := tier_problem(item))]
    if problems:
        raise pytest.UsageError("tests without a proper tier:\n  " + "\n  ".join(problems))
