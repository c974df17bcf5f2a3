"""Logging set-up: one format for every process, human-readable or JSON, scrubbed of secrets.

Context travels in ``contextvars``, so it follows each asyncio task without being passed
around: the HTTP edge sets the request id (``-`` outside a request) and the trace, a worker's
delivery binds its notification id, tenant, channel, attempt, the accepting request's id and
its trace, and the provider call adds the provider. Human lines show the request id, as a
client's ``X-Request-ID`` finds them; JSON lines (``PULSE_LOG_FORMAT=json``) carry every field,
one object a line, exceptions included as a field (never a multi-line text). Every line, in
either format, goes through the same scrubbing as attempt rows: a configured secret that a
provider echoes in an error becomes ``***``.
"""

from __future__ import annotations

import contextvars
import logging
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

import msgspec

from pulse.core.redaction import Redactor

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_fields", default=MappingProxyType({})
)
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_encoder = msgspec.json.Encoder()


@contextmanager
def bound(**more: Any) -> Iterator[None]:
    """Add ``more`` to every log line written in this block (and the tasks it starts)."""
    token = fields.set(MappingProxyType({**fields.get(), **more}))
    try:
        yield
    finally:
        fields.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """The human format (the default), scrubbed."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact.text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, the bound fields,
    and ``exception`` (type, message, traceback) when there is one."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact.text(record.getMessage()),
        }
        ident = getattr(record, "request_id", request_id.get())
        if ident != "-":
            line["request_id"] = ident
        for key, value in fields.get().items():
            line.setdefault(key, self._redact.text(value) if isinstance(value, str) else value)
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = self._exception(record.exc_info[1])
        if record.stack_info:
            line["stack"] = self._redact.text(record.stack_info)
        return _encoder.encode(line).decode()

    def _exception(self, exc: BaseException) -> dict[str, str]:
        trace = "".join(traceback.format_exception(exc))
        return {
            "type": type(exc).__name__,
            "message": self._redact.text(str(exc)),
            "traceback": self._redact.text(trace),
        }


def _iso(created: float) -> str:
    """UTC with milliseconds: ``2025-01-31T12:00:00.123Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def handler(stream: TextIO | None, log_format: str, secrets: Sequence[str] = ()) -> logging.Handler:
    """A handler writing Pulse's lines (``text`` or ``json``) to ``stream`` (stderr: None)."""
    redact = Redactor(secrets)
    made = logging.StreamHandler(stream)
    made.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    made.addFilter(RequestIdFilter())
    return made


def configure(level: str, log_format: str = "text", secrets: Sequence[str] = ()) -> None:
    logging.basicConfig(level=level, handlers=[handler(None, log_format, secrets)])
