"""Log lines as Pulse formats them: JSON (one object a line, context fields, exceptions as a
field) or the human default, both scrubbed of configured secrets."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from pulse import logs
from pulse.config import load_settings
from pulse.core.errors import ConfigError

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-twilio-token"
probe = logging.getLogger("pulse.tests.logs_format")


@pytest.fixture
def lines() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """What the probe logger writes, as JSON and as text, both knowing one secret."""
    as_json, as_text = io.StringIO(), io.StringIO()
    handlers = [logs.handler(as_json, "json", [SECRET]), logs.handler(as_text, "text", [SECRET])]
    for handler in handlers:
        probe.addHandler(handler)
    previous = probe.level
    probe.setLevel(logging.DEBUG)
    yield as_json, as_text
    probe.setLevel(previous)
    for handler in handlers:
        probe.removeHandler(handler)


def decoded(stream: io.StringIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_base_fields_and_the_bound_ones(
    lines: tuple[io.StringIO, io.StringIO],
) -> None:
    token = logs.request_id.set("req-7")
    try:
        with logs.bound(notification_id="n1", attempt=2), logs.bound(provider="twilio"):
            probe.info("sent %s", "it")
        probe.warning("outside")
    finally:
        logs.request_id.reset(token)

    first, second = decoded(lines[0])
    assert first["message"] == "sent it"
    assert first["level"] == "INFO"
    assert first["logger"] == "pulse.tests.logs_format"
    assert first["time"].endswith("Z")
    assert first["request_id"] == "req-7"
    assert (first["notification_id"], first["attempt"], first["provider"]) == ("n1", 2, "twilio")
    assert "notification_id" not in second  # the fields end with their block
    assert second["request_id"] == "req-7"


def test_no_request_id_outside_a_request(lines: tuple[io.StringIO, io.StringIO]) -> None:
    probe.info("background work")

    assert "request_id" not in decoded(lines[0])[0]
    assert "[-]: background work" in lines[1].getvalue()


def test_an_exception_is_a_field_of_one_line(lines: tuple[io.StringIO, io.StringIO]) -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        probe.exception("it broke")

    text = lines[0].getvalue()
    assert text.count("\n") == 1
    (line,) = decoded(lines[0])
    assert line["exception"]["type"] == "ValueError"
    assert line["exception"]["message"] == "bad\nvalue"
    assert "Traceback (most recent call last)" in line["exception"]["traceback"]
    assert "raise ValueError" in line["exception"]["traceback"]


def test_secrets_are_scrubbed_in_every_format_and_field(
    lines: tuple[io.StringIO, io.StringIO],
) -> None:
    with logs.bound(detail=f"token={SECRET}"):
        try:
            raise RuntimeError(f"Twilio echoed {SECRET}")
        except RuntimeError:
            probe.exception("provider said %s", SECRET)

    as_json, as_text = lines[0].getvalue(), lines[1].getvalue()
    assert SECRET not in as_json
    assert SECRET not in as_text
    (line,) = decoded(lines[0])
    assert line["message"] == "provider said ***"
    assert line["detail"] == "token=***"
    assert line["exception"]["message"] == "Twilio echoed ***"
    assert "Twilio echoed ***" in line["exception"]["traceback"]
    assert "provider said ***" in as_text


def test_a_secret_with_json_escapes_is_scrubbed_before_encoding() -> None:
    stream, secret = io.StringIO(), 'pa"ss\\word'
    handler = logs.handler(stream, "json", [secret])
    record = logging.LogRecord("pulse.x", logging.WARNING, __file__, 1, secret, None, None)

    stream.write(handler.format(record))

    assert msgspec.json.decode(stream.getvalue())["message"] == "***"


def test_human_lines_are_the_default(lines: tuple[io.StringIO, io.StringIO]) -> None:
    probe.info("hello")

    assert lines[1].getvalue().rstrip().endswith("INFO pulse.tests.logs_format [-]: hello")
    assert load_settings({}, dotenv_path=None).log_format == "text"


def test_the_log_format_setting_is_checked() -> None:
    assert load_settings({"PULSE_LOG_FORMAT": "json"}, dotenv_path=None).log_format == "json"
    with pytest.raises(ConfigError, match="PULSE_LOG_FORMAT='xml' is invalid"):
        load_settings({"PULSE_LOG_FORMAT": "xml"}, dotenv_path=None)
