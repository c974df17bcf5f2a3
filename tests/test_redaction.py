"""Secrets never reach attempt rows or errors, whatever a provider echoes back."""

from __future__ import annotations

import random

import pytest

from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.core.ports import Retry
from pulse.core.retry import RetryPolicy
from pulse.core.timeutil import utcnow
from pulse.runtime.settle import Redactor, settle
from pulse.runtime.work import Delivery, Done, Try

pytestmark = pytest.mark.unit


def test_settled_rows_carry_no_configured_secret() -> None:
    settings = Settings(smtp_password="hunter2-smtp", twilio_auth_token="tw-token-123")
    redact = Redactor(settings.secret_values())
    job = Job(id=str(uuid7()), tenant_id=str(uuid7()), kind=JobKind.NOTIFICATION, channel="email",
              recipient="a@example.com", payload={}, priority=2, max_attempts=5)  # fmt: skip
    item = Delivery("s", "1-0", 1, job)
    echoed = Retry(
        error="535 auth failed for user pulse password hunter2-smtp",
        response="server said: tw-token-123 rejected",
    )

    tries = [Try("smtp", echoed, utcnow(), 0.1)]
    plan = settle([Done.of(item, tries)], RetryPolicy(), random.Random(0), 0, redact)

    row, attempt = plan.outcomes[0], plan.attempts[0]
    assert row.error is not None
    assert "hunter2-smtp" not in row.error
    assert "***" in row.error
    assert attempt.error == row.error
    assert attempt.response == "server said: *** rejected"


def test_short_or_absent_secrets_are_ignored() -> None:
    assert Settings().secret_values() == []
    assert Redactor([])("nothing to hide") == "nothing to hide"
    assert Redactor(["abc123"])(None) is None
