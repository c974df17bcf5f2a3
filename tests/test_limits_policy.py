"""Limits as values: defaults and overrides, provider rates from the environment, the header
fields, and an attempt put off by a rate being no attempt made."""

from __future__ import annotations

import pytest

from pulse.config import load_settings
from pulse.core.errors import ConfigError
from pulse.core.limits import LimitOverrides, Rate, effective, provider_rates, rate
from pulse.core.ports import Retry
from pulse.http.limits import limit_headers
from pulse.queue.limiter import Limit, LimitState
from pulse.runtime.throttle import known_rates
from pulse.runtime.work import RATE_LIMITED, Delivery, Done
from tests.conftest import log_job

pytestmark = pytest.mark.unit


def test_a_rate_of_zero_is_off_and_a_missing_burst_is_one_seconds_worth() -> None:
    assert rate(0, 10) is None
    assert rate(2.5, None) == Rate(2.5, 3)
    assert rate(0.2, 0) == Rate(0.2, 1)
    assert Rate(10, 25).window_s == 3
    assert Rate(100, 10).window_s == 1


def test_a_tenants_overrides_win_field_by_field_over_the_defaults() -> None:
    defaults = LimitOverrides(rate_per_s=100, burst=500, key_rate_per_s=10)
    assert effective(None, defaults).tenant == Rate(100, 500)
    assert effective(None, defaults).key == Rate(10, 10)
    mine = effective(LimitOverrides(rate_per_s=5, key_rate_per_s=0), defaults)
    assert mine.tenant == Rate(5, 500)  # its own rate, the default burst
    assert mine.key is None  # 0: off for this tenant
    assert effective(None, LimitOverrides()).off


def test_provider_rates_are_read_from_one_setting() -> None:
    assert provider_rates("smtp=5, relay-2=0.5/3") == {
        "smtp": Rate(5, 5),
        "relay-2": Rate(0.5, 3),
    }
    assert provider_rates("") == {}
    for bad in ("smtp", "smtp=0", "smtp=-1", "smtp=5/0", "SMTP=x"):
        with pytest.raises(ConfigError, match="PULSE_RATE_LIMIT_PROVIDERS"):
            provider_rates(bad)
    settings = load_settings({"PULSE_RATE_LIMIT_PROVIDERS": "smtp=2/4"}, dotenv_path=None)
    assert settings.provider_rates() == {"smtp": Rate(2, 4)}


def test_a_rate_for_a_provider_nobody_configured_stops_the_worker() -> None:
    rates = provider_rates("smtp=5,relay9=1")
    with pytest.raises(ConfigError, match="relay9"):
        known_rates(rates, ["smtp", "log"])
    assert known_rates({"smtp": Rate(5, 5)}, ["smtp"]) == {"smtp": Rate(5, 5)}


def test_headers_follow_the_drafts_structured_field_syntax() -> None:
    states = (
        LimitState(Limit("tenant", "t", Rate(10, 20)), remaining=7, reset_ms=1300),
        LimitState(Limit("key", "k", Rate(1, 1)), remaining=0, reset_ms=1000),
    )
    assert limit_headers(states) == {
        "RateLimit-Policy": '"tenant";q=20;w=2, "key";q=1;w=1',
        "RateLimit": '"tenant";r=7;t=2, "key";r=0;t=1',
    }
    assert limit_headers(()) == {}


def test_an_attempt_put_off_by_a_providers_rate_is_not_made() -> None:
    delivery = Delivery("s", "1-0", 1, log_job())
    put_off = Done.without_call(
        delivery, Retry(error="waiting", after_s=0.2, error_class=RATE_LIMITED)
    )
    assert not put_off.made
    failed = Done.without_call(delivery, Retry(error="timeout", after_s=None))
    assert failed.made


def test_a_default_rate_below_one_a_day_stops_start_up_naming_its_variable() -> None:
    from pulse.http.limits import defaults

    tiny = load_settings({"PULSE_KEY_RATE_LIMIT_PER_S": "1e-300"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="PULSE_KEY_RATE_LIMIT_PER_S"):
        defaults(tiny)
    assert defaults(load_settings({}, dotenv_path=None)) == LimitOverrides(0.0, None, 0.0, None)


def test_a_stored_rate_below_one_a_day_counts_as_one_a_day() -> None:
    # a tenant's rate stored before rates were bounded is served, never an overflow
    assert effective(LimitOverrides(rate_per_s=1e-300, burst=2), LimitOverrides()).tenant == Rate(
        1 / 86_400, 2
    )
