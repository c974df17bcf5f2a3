"""Providers' rates: an attempt over its provider account's rate is put off, not made.

Each rate-limited provider (``PULSE_RATE_LIMIT_PROVIDERS``) has one token bucket in Redis shared
by every worker, so the fleet as a whole stays within the account's throughput (a Twilio
number's messages a second, an SMTP relay's sending rate). Failover asks before each call; a
provider over its rate is skipped like one whose breaker is open (the route's next provider
may take the message), and when no provider of the route may be called, the attempt is put
off until the bucket's next free slot: not made, so it uses none of the notification's
attempts; its history says which limit it waited for; ``pulse_deliveries_deferred_total``
counts it. Should Redis be unreachable, the call goes ahead (fail-open): the provider's own
throttling answers remain retried as before, and a worker without Redis cannot settle anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping

from pulse.core.errors import ConfigError
from pulse.core.limits import Rate
from pulse.metrics import LabelledOnce, Metrics
from pulse.queue.buckets import ProviderBuckets
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS

logger = logging.getLogger("pulse.runtime.throttle")
PROVIDER_LIMIT = "provider"  # the limit label of a deferral for a provider's rate


def known_rates(rates: Mapping[str, Rate], providers: Collection[str]) -> dict[str, Rate]:
    """``rates``, each naming a provider this worker has: a misspelt name would otherwise
    leave its provider unlimited without a word."""
    unknown = sorted(set(rates) - set(providers))
    if unknown:
        raise ConfigError(
            f"PULSE_RATE_LIMIT_PROVIDERS names {', '.join(unknown)}: no configured provider is"
            f" called so (providers: {', '.join(sorted(providers))})"
        )
    return dict(rates)


class Throttle:
    def __init__(
        self,
        buckets: ProviderBuckets,
        rates: Mapping[str, Rate],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._buckets = buckets
        self._rates = dict(rates)
        self._deferred = LabelledOnce(metrics.deferred)
        self._clock = clock

    def rate_of(self, provider: str) -> Rate | None:
        return self._rates.get(provider)

    async def wait_s(self, provider: str) -> float:
        """0 when ``provider`` may be called now (a token taken, or no limit); else how many
        seconds until it may be asked again."""
        rate = self._rates.get(provider)
        if rate is None:
            return 0.0
        try:
            wait_ms = await self._buckets.take(provider, rate, self._clock() * 1000)
        except TRANSIENT_REDIS_ERRORS as exc:
            logger.warning("%s's rate cannot be checked (%s): calling it anyway", provider, exc)
            return 0.0
        return wait_ms / 1000

    def deferred(self, provider: str) -> None:
        """Count an attempt put off because ``provider`` was over its rate."""
        self._deferred(PROVIDER_LIMIT, provider).inc()
