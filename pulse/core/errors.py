"""The rooted error hierarchy.

Every error Pulse raises on purpose derives from ``PulseError``; the HTTP layer maps each class to
one RFC 9457 problem in a single middleware, so no handler formats errors by hand.
"""

from __future__ import annotations


class PulseError(Exception):
    """Base of every deliberate Pulse error."""


class ConfigError(PulseError):
    """A setting is missing or malformed; start-up stops with this message."""


class InvalidInput(PulseError):
    """A request body or parameter failed validation.

    ``pointer`` is a JSON path such as ``$.payload.subject`` naming the field at fault.
    """

    def __init__(self, detail: str, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


class Forbidden(PulseError):
    """The key is valid but lacks the scope this operation needs."""


class NotFound(PulseError):
    """The resource does not exist for this tenant (other tenants' resources look absent)."""


class NotConfigured(PulseError):
    """The deployment lacks a setting this operation needs (the operator must set it)."""


class Unavailable(PulseError):
    """A backing service (Redis, PostgreSQL) cannot be reached right now; the client may retry."""

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class RateLimited(PulseError):
    """Over a rate limit: nothing was accepted; retry after ``retry_after_s`` (429), with the
    limits' state in ``headers``."""

    def __init__(self, detail: str, retry_after_s: int, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.headers = headers
