"""Provider failover: one attempt goes down the route until a provider answers for good.

The route (a tenant's, else the default) lists a channel's providers in order. Each call is
admitted by the provider's circuit breaker; a provider whose breaker is open is skipped, and a
temporary failure (timeout, 5xx, throttling) moves on to the next provider within the same
attempt. A delivery ends the attempt, and so does a permanent refusal: that is about the
message (an invalid number, an unsubscribed recipient), and sending it elsewhere would be
wrong. When every provider is skipped, the attempt is retried once the first breaker half-opens
(and, no provider having been called, it costs the notification none of its attempts). A channel
that raises has failed on that message alone: a permanent failure, not the provider's fault.

Each provider call is a span (``pulse.provider``, whose id the channel sends on as the request's
``traceparent``) and one log line naming its outcome: DEBUG when delivered, INFO when it is to
be retried, WARNING when it failed for good (errors scrubbed of secrets by the log formatter).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping

from pulse import logs, tracing
from pulse.core.breaker import BreakerPolicy, CircuitBreaker
from pulse.core.ports import Channel, Delivered, Envelope, Failed, Outcome, Retry
from pulse.core.timeutil import utcnow
from pulse.metrics import LabelledOnce, Metrics
from pulse.runtime.caps import RecipientCaps
from pulse.runtime.throttle import Throttle
from pulse.runtime.work import CIRCUIT_OPEN, OUTCOME_NAMES, RATE_LIMITED, Try

logger = logging.getLogger("pulse.runtime.failover")
LEVELS = {Delivered: logging.DEBUG, Retry: logging.INFO, Failed: logging.WARNING}


class Breakers:
    """One breaker per provider, shared by every channel it serves (a Twilio account's trouble
    is the same for SMS and WhatsApp); each one's state is a gauge in /metrics."""

    def __init__(
        self,
        policy: BreakerPolicy,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._metrics = metrics
        self._clock = clock
        self._rng = random.Random()
        self._breakers: dict[str, CircuitBreaker] = {}

    def of(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            breaker = self._breakers[provider] = CircuitBreaker(self._policy)
            self._metrics.circuit_state.labels(provider).set_function(
                lambda: float(breaker.state(self._clock()))
            )
        return breaker

    def admit(self, provider: str) -> bool:
        return self.of(provider).admit(self._clock())

    def record(self, provider: str, outcome: Outcome) -> None:
        """Only the provider's own trouble counts against it; any other answer shows it up."""
        breaker = self.of(provider)
        if isinstance(outcome, Retry) and outcome.provider_fault:
            if breaker.failed(self._clock()):
                self._metrics.circuit_opened.labels(provider).inc()
        else:
            breaker.succeeded()

    def retry_in(self, providers: list[str]) -> float:
        """When to try a route whose providers are all paused: once the first may admit a
        probe, spread over a cool-down so that the held-back messages do not all come back at
        the same moment (one probe at a time goes out; the rest would be paused again)."""
        now = self._clock()
        soonest = min(self.of(name).reopens_in(now) for name in providers)
        return soonest + self._rng.uniform(0.0, self._policy.cooldown_s)


class Failover:
    """Sends one channel's envelopes down their route."""

    def __init__(
        self,
        channel: str,
        providers: Mapping[str, Channel],
        breakers: Breakers,
        route: Callable[[str, str], list[str]],
        metrics: Metrics,
        throttle: Throttle | None = None,
        caps: RecipientCaps | None = None,
    ) -> None:
        self._channel = channel
        self._throttle = throttle
        self._caps = caps
        self._providers = providers
        self._breakers = breakers
        self._route = route
        self._metrics = metrics
        self._attempts = LabelledOnce(metrics.provider_attempts)
        self._call_seconds = LabelledOnce(metrics.provider_seconds)

    def route_of(self, tenant_id: str) -> list[str]:
        """The tenant's route, restricted to providers this worker has (a route naming a
        provider configured elsewhere only skips it); never empty."""
        names = [p for p in self._route(tenant_id, self._channel) if p in self._providers]
        return names or list(self._providers)[:1]

    async def send(self, envelope: Envelope) -> list[Try]:
        """Every call this attempt made, in order; the last one's outcome decides. A recipient
        over its cap is not sent to at all (runtime/caps.py)."""
        if self._caps is not None and (capped := await self._caps.check(self._channel, envelope)):
            return [capped]
        return await self._down_the_route(envelope)

    async def _down_the_route(self, envelope: Envelope) -> list[Try]:
        tries: list[Try] = []
        skipped: list[str] = []
        waits: dict[str, float] = {}  # providers over their rate -> seconds to their next slot
        for name in self.route_of(envelope.tenant_id):
            if not self._breakers.admit(name):
                skipped.append(name)
                continue
            if wait := await self._over_rate(name):
                waits[name] = wait
                continue
            done = await self._call(name, envelope)
            tries.append(done)
            if not isinstance(done.outcome, Retry):
                return tries
        if not tries and waits:
            return [self._over_rates(envelope, waits)]
        if not tries:
            logger.info("%s: every provider is paused: %s", envelope.notification_id, skipped)
            return [self._all_open(skipped)]
        return tries

    async def _over_rate(self, name: str) -> float:
        """Seconds until ``name`` may be called, 0 when now (its breaker already admitted the
        call: given back, a skipped call says nothing of the provider)."""
        wait = 0.0 if self._throttle is None else await self._throttle.wait_s(name)
        if wait:
            self._breakers.of(name).released()
        return wait

    def _over_rates(self, envelope: Envelope, waits: dict[str, float]) -> Try:
        """No provider may be called: put off until the soonest slot (no attempt made)."""
        assert self._throttle is not None
        name, wait = min(waits.items(), key=lambda item: item[1])
        rate = self._throttle.rate_of(name)
        self._throttle.deferred(name)
        limit = "" if rate is None else f" ({rate.per_s:g}/s, burst {rate.burst})"
        error = f"waiting {wait:.3f} s for provider {name}'s rate limit{limit}"
        logger.info("%s: %s", envelope.notification_id, error)
        outcome = Retry(error=error, after_s=wait, error_class=RATE_LIMITED, provider_fault=False)
        return Try(None, outcome, utcnow(), 0.0)

    async def _call(self, name: str, envelope: Envelope) -> Try:
        """One provider call in its span, logged with its outcome."""
        attributes: dict[str, tracing.Value] = {"pulse.provider": name}
        with (
            logs.bound(provider=name),
            tracing.child("pulse.provider", kind="client", attributes=attributes) as span,
        ):
            done = await self._call_in_span(name, envelope)
            outcome = done.outcome
            span.set("pulse.outcome", OUTCOME_NAMES[type(outcome)])
            if not isinstance(outcome, Delivered):
                span.failed(outcome.error_class)
            _log(envelope, name, outcome)
            return done

    async def _call_in_span(self, name: str, envelope: Envelope) -> Try:
        started_at, started = utcnow(), time.perf_counter()
        breaker = self._breakers.of(name)
        try:
            outcome = await self._providers[name].send(envelope)
        except asyncio.CancelledError:
            breaker.released()  # says nothing of the provider
            raise
        except Exception as exc:
            outcome = self._raised(name, envelope, exc)
            breaker.released()  # the channel's own failure says nothing of the provider
        else:
            self._breakers.record(name, outcome)
        took = time.perf_counter() - started
        self._attempts(name, self._channel, OUTCOME_NAMES[type(outcome)]).inc()
        self._call_seconds(name).observe(took)
        return Try(name, outcome, started_at, took)

    def _raised(self, name: str, envelope: Envelope, exc: Exception) -> Failed:
        """A channel that raises instead of answering failed on this message (a value it cannot
        build a request from, a plugin bug): a permanent failure of this message alone, never
        the provider's fault, so it neither retries nor counts against the shared breaker."""
        logger.exception("%s/%s raised on %s", self._channel, name, envelope.notification_id)
        return Failed(error=f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)

    def _all_open(self, skipped: list[str]) -> Try:
        outcome = Retry(
            error=f"every provider of {self._channel} is paused (circuit open): "
            + ", ".join(skipped),
            after_s=self._breakers.retry_in(skipped),
            error_class=CIRCUIT_OPEN,
            provider_fault=False,
        )
        return Try(None, outcome, utcnow(), 0.0)


def _log(envelope: Envelope, provider: str, outcome: Outcome) -> None:
    what = OUTCOME_NAMES[type(outcome)]
    error = "" if isinstance(outcome, Delivered) else f" ({outcome.error_class}: {outcome.error})"
    level = LEVELS[type(outcome)]
    ident, attempt = envelope.notification_id, envelope.attempt
    logger.log(level, "%s attempt %d via %s: %s%s", ident, attempt, provider, what, error)
