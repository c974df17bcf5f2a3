"""Rate limits as values: what a tenant's ingress limits are, decided without I/O.

A ``Rate`` is a generic cell rate limit: ``per_s`` units a second on average, ``burst`` units at
once. A tenant's stored overrides (``LimitOverrides``, None meaning "the deployment's default")
and the deployment's defaults resolve to ``TenantLimits``: one limit on the tenant as a whole
and one on each of its API keys, either of which may be off (a rate of 0).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pulse.core.errors import ConfigError

_PROVIDER_RATE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9_-]*)=(?P<per_s>\d+(\.\d+)?)(/(?P<burst>[1-9]\d*))?$"
)


MIN_RATE_PER_S = 1 / 86_400  # one a day: slower is a lock-out, not a rate
MAX_RATE_PER_S = 1_000_000.0


def rate_problem(per_s: float) -> str | None:
    """Why ``per_s`` cannot be a limit's rate (None: it can). A rate is 0 (off) or from one a
    day to a million a second: a tinier one would lock a client out for years after one request
    and make the limiter's arithmetic overflow."""
    if per_s == 0 or MIN_RATE_PER_S <= per_s <= MAX_RATE_PER_S:
        return None
    return f"a rate is 0 (off) or from 1/86400 (one a day) to {MAX_RATE_PER_S:.0f} a second"


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float
    burst: int

    @property
    def interval_ms(self) -> float:
        """The emission interval: ms one unit costs (GCRA's T)."""
        return 1000.0 / self.per_s

    @property
    def window_s(self) -> int:
        """Seconds an exhausted limit takes to refill its whole burst (whole seconds, at
        least 1): the window of the ``RateLimit-Policy`` header."""
        return max(1, math.ceil(self.burst / self.per_s))


def rate(per_s: float, burst: int | None) -> Rate | None:
    """The limit of ``per_s`` a second with ``burst`` at once; None when ``per_s`` is 0 (off).
    A burst of None or 0 is one second's worth (at least one unit)."""
    if per_s <= 0:
        return None
    return Rate(per_s, burst or max(1, math.ceil(per_s)))


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    """A tenant's own settings; None leaves the deployment's default in force."""

    rate_per_s: float | None = None
    burst: int | None = None
    key_rate_per_s: float | None = None
    key_burst: int | None = None


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The limits in force for one tenant: on the tenant, and on each of its keys."""

    tenant: Rate | None
    key: Rate | None

    @property
    def off(self) -> bool:
        return self.tenant is None and self.key is None


def effective(overrides: LimitOverrides | None, defaults: LimitOverrides) -> TenantLimits:
    """The tenant's overrides over the deployment's defaults, field by field."""
    own = overrides or LimitOverrides()

    def pick(mine: float | None, default: float | None) -> float:
        per_s = float(mine if mine is not None else default or 0)
        return per_s and max(per_s, MIN_RATE_PER_S)  # one stored before rates were bounded

    def pick_burst(mine: int | None, default: int | None) -> int | None:
        return mine if mine is not None else default

    return TenantLimits(
        tenant=rate(
            pick(own.rate_per_s, defaults.rate_per_s), pick_burst(own.burst, defaults.burst)
        ),
        key=rate(
            pick(own.key_rate_per_s, defaults.key_rate_per_s),
            pick_burst(own.key_burst, defaults.key_burst),
        ),
    )


def provider_rates(text: str, variable: str = "PULSE_RATE_LIMIT_PROVIDERS") -> dict[str, Rate]:
    """``smtp=5,relay2=20/40``: provider account -> its rate a second (and burst; one second's
    worth when left out). A bad entry stops start-up naming the variable."""
    rates: dict[str, Rate] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = _PROVIDER_RATE.match(entry)
        found = None if match is None else rate(float(match["per_s"]), _int(match["burst"]))
        if match is None or found is None:
            raise ConfigError(
                f"{variable}: {entry!r} is not <provider>=<per second>[/<burst>] with a rate > 0"
            )
        rates[match["name"]] = found
    return rates


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


@dataclass(frozen=True, slots=True)
class RecipientCap:
    """At most ``max_count`` deliveries to one recipient of a channel per ``window_s``; over it
    a notification waits for the window (``defer``) or ends ``skipped`` (``skip``)."""

    max_count: int
    window_s: int
    over: str  # "defer" | "skip"

    def describe(self, channel: str) -> str:
        return f"the recipient cap of {self.max_count} per {self.window_s} s on {channel}"


def cap_identity(channel: str, recipient: str) -> str:
    """Who a recipient cap counts for: one mailbox is one recipient however its address is
    written (the whole address case-folded, as most providers treat it); phone numbers are
    E.164 and webhook URLs as validated already, so those count as sent."""
    return recipient.casefold() if channel == "email" else recipient
