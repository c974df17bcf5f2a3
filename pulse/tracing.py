"""Spans across processes: accept (API) -> delivery (worker) -> each provider call.

The context travels as W3C Trace Context: in from the client's ``traceparent``, through the
stream message to the worker, and out on each provider request (webhook, Twilio, FCM) with the
provider call's own span id. The current span lives in a ``contextvar`` and is bound to the log
lines (``trace_id``, ``span_id``), so it follows each asyncio task.

Spans are exported only when the ``otel`` extra is installed and the standard ``OTEL_*``
variables ask for it (``configure``); otherwise ids are still made and propagated, but nothing
of OpenTelemetry is imported. The exporter is process-wide, set once at the edge, like logging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pulse.core.tracecontext import TraceContext, child_of
from pulse.logs import fields

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import Tracer

logger = logging.getLogger("pulse.tracing")
current: ContextVar[TraceContext | None] = ContextVar("trace_context", default=None)
Kind = Literal["server", "producer", "consumer", "client", "internal"]
Value = str | int | bool
INSTRUMENTATION = "pulse"


class Span(Protocol):
    """What the code in a span may do: read its context, add attributes, mark it failed."""

    @property
    def context(self) -> TraceContext: ...

    def set(self, key: str, value: Value) -> None: ...

    def failed(self, reason: str) -> None: ...


class _Backend(Protocol):
    def start(
        self, name: str, parent: TraceContext | None, kind: Kind, attributes: Mapping[str, Value]
    ) -> AbstractContextManager[Span]: ...


@dataclass(slots=True)
class _IdsOnly:
    """Without an exporter: a span is only its ids, made and propagated."""

    context: TraceContext

    def set(self, key: str, value: Value) -> None:
        return None

    def failed(self, reason: str) -> None:
        return None


class _Local:
    @contextmanager
    def start(
        self, name: str, parent: TraceContext | None, kind: Kind, attributes: Mapping[str, Value]
    ) -> Iterator[Span]:
        yield _IdsOnly(child_of(parent))


@dataclass(slots=True)
class _Recorded:
    """An OpenTelemetry span, seen through ``Span``."""

    context: TraceContext
    span: OtelSpan

    def set(self, key: str, value: Value) -> None:
        self.span.set_attribute(key, value)

    def failed(self, reason: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_status(Status(StatusCode.ERROR, reason))


class _Otel:
    """Spans recorded by an OpenTelemetry tracer; the parent is always given explicitly."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    @contextmanager
    def start(
        self, name: str, parent: TraceContext | None, kind: Kind, attributes: Mapping[str, Value]
    ) -> Iterator[Span]:
        from opentelemetry import trace
        from opentelemetry.context import Context

        parent_context = Context() if parent is None else _as_otel_parent(parent)
        with self._tracer.start_as_current_span(
            name, context=parent_context, kind=trace.SpanKind[kind.upper()], attributes=attributes
        ) as span:
            made = span.get_span_context()
            context = TraceContext(
                trace_id=format(made.trace_id, "032x"),
                span_id=format(made.span_id, "016x"),
                sampled=made.trace_flags.sampled,
                state=parent.state if parent is not None else "",
            )
            yield _Recorded(context, span)


def _as_otel_parent(parent: TraceContext) -> Any:
    from opentelemetry import trace

    state = trace.TraceState.from_header([parent.state]) if parent.state else None
    remote = trace.SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if parent.sampled else 0),
        trace_state=state,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote))


_backend: list[_Backend] = [_Local()]  # the one in force, replaced by ``use`` / ``configure``


def use(provider: TracerProvider | None) -> None:
    """Record spans with ``provider`` (None: ids only). Tests pass an in-memory one."""
    _backend[0] = _Local() if provider is None else _Otel(provider.get_tracer(INSTRUMENTATION))


def span(
    name: str,
    parent: TraceContext | None,
    *,
    kind: Kind = "internal",
    attributes: Mapping[str, Value] | None = None,
) -> AbstractContextManager[Span]:
    """A span, child of ``parent`` (None: a new trace), current within the block: the log
    lines written there carry its ``trace_id`` and ``span_id``."""
    backend = _backend[0]
    if isinstance(backend, _Local):  # ids only: the delivery path's case, kept cheap
        return _Current(nullcontext(_IdsOnly(child_of(parent))))
    return _Current(backend.start(name, parent, kind, attributes or {}))


class _Current:
    """Makes a started span the current one (and its ids log fields) for the block."""

    __slots__ = ("_fields", "_started", "_token")

    def __init__(self, started: AbstractContextManager[Span]) -> None:
        self._started = started

    def __enter__(self) -> Span:
        made = self._started.__enter__()
        self._token = current.set(made.context)
        more = {"trace_id": made.context.trace_id, "span_id": made.context.span_id}
        self._fields = fields.set(MappingProxyType({**fields.get(), **more}))
        return made

    def __exit__(self, *exc: Any) -> bool | None:
        fields.reset(self._fields)
        current.reset(self._token)
        return self._started.__exit__(*exc)


def child(
    name: str, *, kind: Kind = "internal", attributes: Mapping[str, Value] | None = None
) -> AbstractContextManager[Span]:
    """A span in the current one (a new trace outside any)."""
    return span(name, current.get(), kind=kind, attributes=attributes)


def outgoing_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for a request sent in the current span."""
    context = current.get()
    return context.headers() if context is not None else {}


OTLP_ON = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted(environ: Mapping[str, str]) -> bool:
    """Do the standard variables ask for OTLP export? An endpoint, or ``OTEL_TRACES_EXPORTER``
    ``otlp``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` says no."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter == "otlp"
    return any(environ.get(name) for name in OTLP_ON)


def configure(environ: Mapping[str, str], service: str = "pulse") -> bool:
    """Export spans over OTLP when ``environ`` asks and the ``otel`` extra is installed (the
    exporter reads its own ``OTEL_EXPORTER_OTLP_*`` settings); True when it does."""
    if not wanted(environ):
        return False
    try:
        provider = _otlp_provider(environ, service)
    except ImportError as exc:
        logger.warning("OTEL_* asks for trace export but %s: pip install 'pulse[otel]'", exc)
        return False
    use(provider)
    return True


def _otlp_provider(environ: Mapping[str, str], service: str) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)  # flushes at exit (its own atexit hook)
    provider.add_span_processor(BatchSpanProcessor(_exporter(protocol.strip())))
    return provider


def _exporter(protocol: str) -> SpanExporter:
    """OTLP over gRPC or HTTP (``http/protobuf``, the specification's default)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        exporter: SpanExporter = Grpc()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    exporter = Http()
    return exporter
