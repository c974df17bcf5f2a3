"""W3C Trace Context parsing, and the trace context's trip through the stream message.

A malformed ``traceparent`` is ignored (the caller starts a new trace), never an error; a
malformed ``tracestate`` is dropped while the trace is kept; a message written before the
origin field existed still reads.
"""

from __future__ import annotations

import itertools
import sys

import msgspec
import pytest

from pulse.core.models import Job, JobKind
from pulse.core.tracecontext import Origin, TraceContext, child_of, parse_traceparent
from pulse.queue.codec import MESSAGE_FIELD, StreamMessage, decode_job, encode_job
from pulse.tracing import configure, wanted

pytestmark = pytest.mark.unit

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_gives_its_trace_and_parent() -> None:
    context = parse_traceparent(VALID)

    assert context == TraceContext(trace_id=TRACE, span_id=SPAN, sampled=True, state="")
    assert context.traceparent() == VALID


def test_the_sampled_flag_is_read_and_unknown_flags_are_sent_as_zero() -> None:
    unsampled = parse_traceparent(f"00-{TRACE}-{SPAN}-00")
    odd_flags = parse_traceparent(f"00-{TRACE}-{SPAN}-ff")

    assert unsampled is not None
    assert not unsampled.sampled
    assert unsampled.traceparent().endswith("-00")
    assert odd_flags is not None
    assert odd_flags.traceparent().endswith("-01")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param(VALID.upper(), id="uppercase-hex"),
        pytest.param(f"00-{'0' * 32}-{SPAN}-01", id="zero-trace-id"),
        pytest.param(f"00-{TRACE}-{'0' * 16}-01", id="zero-parent-id"),
        pytest.param(f"ff-{TRACE}-{SPAN}-01", id="version-ff"),
        pytest.param(f"00-{TRACE}-{SPAN}-01-extra", id="version-00-with-more"),
        pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", id="short-trace-id"),
        pytest.param(f"00-{TRACE}-{SPAN}0-01", id="long-parent-id"),
        pytest.param(f"00-{TRACE}-{SPAN}-1", id="short-flags"),
        pytest.param(f"00_{TRACE}_{SPAN}_01", id="wrong-separators"),
        pytest.param(f"0g-{TRACE}-{SPAN}-01", id="non-hex-version"),
        pytest.param(f"00-{TRACE}-{SPAN}-01\r\nX-Forged: 1", id="crlf"),
        pytest.param(f"01-{TRACE}-{SPAN}-01x", id="later-version-bad-tail"),
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_missing_traceparent_is_none_and_its_tracestate_unread() -> None:
    assert parse_traceparent(None, ["vendor=value"]) is None


def test_a_later_version_is_read_for_the_fields_it_shares() -> None:
    context = parse_traceparent(f"01-{TRACE}-{SPAN}-01-more-fields")

    assert context is not None
    assert (context.trace_id, context.span_id) == (TRACE, SPAN)
    assert context.traceparent() == VALID  # sent on as the version this code knows


def test_tracestate_members_are_kept_in_order_across_headers() -> None:
    context = parse_traceparent(VALID, ["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7", "t@sys=a b"])

    assert context is not None
    assert context.state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,t@sys=a b"
    assert context.headers() == {"traceparent": VALID, "tracestate": context.state}


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(["Upper=1"], id="uppercase-key"),
        pytest.param(["novalue"], id="no-equals"),
        pytest.param(["a=1,a=2"], id="duplicate-key"),
        pytest.param(["a=x,y"], id="comma-in-value"),
        pytest.param(["a=b=c"], id="equals-in-value"),
        pytest.param(["a=\x01"], id="control-character"),
        pytest.param([",".join(f"k{i}=v" for i in range(33))], id="33-members"),
    ],
)
def test_a_malformed_tracestate_is_dropped_but_the_trace_kept(state: list[str]) -> None:
    context = parse_traceparent(VALID, state)

    assert context is not None
    assert context.trace_id == TRACE
    assert context.state == ""
    assert "tracestate" not in context.headers()


def test_whitespace_around_tracestate_members_is_dropped() -> None:
    context = parse_traceparent(VALID, [" a=1 ,\tb=x y \t"])

    assert context is not None
    assert context.state == "a=1,b=x y"


def test_a_child_span_keeps_the_trace_and_gets_its_own_id() -> None:
    parent = parse_traceparent(VALID, ["rojo=1"])
    digits = itertools.cycle(["ab" * 8, "cd" * 16])

    child = child_of(parent, lambda size: next(digits)[: size * 2])
    root = child_of(None)

    assert child == TraceContext(trace_id=TRACE, span_id="ab" * 8, state="rojo=1")
    assert len(root.trace_id) == 32
    assert root.trace_id != TRACE
    assert len(root.span_id) == 16
    assert root.span_id.strip("0")


def test_an_all_zero_random_id_is_drawn_again() -> None:
    draws = iter(["00" * 16, "00" * 8, "12" * 8, "00" * 16, "34" * 16, "56" * 8])

    made = child_of(None, lambda size: next(d for d in draws if len(d) == size * 2))

    assert made.trace_id == "34" * 16
    assert made.span_id == "56" * 8


def job(origin: Origin | None) -> Job:
    return Job(
        id="0190a5b2-0000-7000-8000-000000000001",
        tenant_id="t",
        kind=JobKind.NOTIFICATION,
        channel="webhook",
        recipient="https://example.com/hook",
        payload={"type": "x", "data": {}},
        priority=2,
        max_attempts=5,
        origin=origin,
    )


def test_the_origin_travels_in_the_stream_message() -> None:
    origin = Origin(request_id="req-1", trace=parse_traceparent(VALID, ["rojo=1"]))

    assert decode_job(encode_job(job(origin))).origin == origin


def test_a_message_without_origin_reads_as_before() -> None:
    assert decode_job(encode_job(job(None))).origin is None


def test_a_message_written_before_the_origin_field_still_reads() -> None:
    older = msgspec.msgpack.encode(
        {"v": 2, "id": "n1", "tenant_id": "t", "kind": "notification", "handler": "log",
         "recipient": "r", "payload": {"message": "m"}, "priority": 2, "max_attempts": 5,
         "step": 0, "fallback": []}
    )  # fmt: skip

    read = decode_job({MESSAGE_FIELD: older})

    assert (read.id, read.channel, read.origin) == ("n1", "log", None)


def test_an_older_worker_skips_the_origin_field() -> None:
    """A worker of the version before (its v2 struct without the field) still delivers."""

    class OlderMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="v", tag=2):
        id: str
        channel: str = msgspec.field(name="handler")

    data = encode_job(job(Origin(request_id="r", trace=parse_traceparent(VALID))))

    older = msgspec.msgpack.decode(data[MESSAGE_FIELD], type=OlderMessage)

    assert older.channel == "webhook"


def test_a_corrupt_trace_in_a_message_is_dropped_not_fatal() -> None:
    message = msgspec.msgpack.decode(encode_job(job(None))[MESSAGE_FIELD], type=StreamMessage)
    corrupt = msgspec.structs.replace(message, request_id="r", traceparent="00-zz-zz-01")

    read = decode_job({MESSAGE_FIELD: msgspec.msgpack.encode(corrupt)})

    assert read.origin == Origin(request_id="r", trace=None)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "pulse-api"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        (
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
            False,
        ),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, False),
    ],
)
def test_export_is_wanted_only_when_the_standard_variables_ask(
    environ: dict[str, str], expected: bool
) -> None:
    assert wanted(environ) is expected


def test_export_asked_for_without_the_extra_warns_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The OTLP exporter is the ``otel`` extra's: missing, spans are not exported, nothing
    fails, and the warning names the extra to install."""
    for module in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import fails

    exported = configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})

    assert exported is False
    assert "pip install 'pulse[otel]'" in caplog.text
