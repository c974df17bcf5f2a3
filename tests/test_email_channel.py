"""The email channel against real SMTP servers: STARTTLS with auth, implicit TLS, SMTP errors."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pulse.channels.email import EmailChannel, EmailPayload
from pulse.channels.registry import smtp_config
from pulse.config import Settings
from pulse.core.errors import ConfigError
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed, Retry
from pulse.devtools.ports import free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "pulse", "s3cret"


class Recorder:
    def __init__(self, reply: str = "250 OK") -> None:
        self.reply = reply
        self.mails: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.mails.append(bytes(envelope.content))
        return self.reply


def check_password(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # unhandled failure: aiosmtpd answers 535


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def envelope() -> Envelope:
    payload = EmailPayload(subject="Hello", body="Welcome to Pulse")
    return Envelope(str(uuid7()), str(uuid7()), "someone@example.com", payload, attempt=1)


def channel_for(port: int, tls: str, ca_file: Path, password: str = PASSWORD) -> EmailChannel:
    settings = Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls=tls,  # type: ignore[arg-type]
        smtp_username=USER,
        smtp_password=password,
        smtp_ca_file=str(ca_file),
        smtp_timeout_s=5,
    )
    return EmailChannel(smtp_config(settings))


@pytest.fixture
def starttls_server(ca: trustme.CA) -> Iterator[tuple[int, Recorder]]:
    recorder = Recorder()
    port = free_port("127.0.0.1")
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context(ca),
        require_starttls=True,
        auth_required=True,
        authenticator=check_password,
    )
    controller.start()
    yield port, recorder
    controller.stop()


async def test_starttls_with_auth_delivers(
    starttls_server: tuple[int, Recorder], ca_file: Path
) -> None:
    port, recorder = starttls_server
    sent = envelope()

    outcome = await channel_for(port, "starttls", ca_file).send(sent)

    assert isinstance(outcome, Delivered)
    assert len(recorder.mails) == 1
    assert f"Message-ID: <{sent.notification_id}@pulse>".encode() in recorder.mails[0]


async def test_wrong_password_is_a_permanent_failure(
    starttls_server: tuple[int, Recorder], ca_file: Path
) -> None:
    port, recorder = starttls_server

    outcome = await channel_for(port, "starttls", ca_file, password="wrong").send(envelope())

    assert isinstance(outcome, Failed)
    assert "535" in outcome.error
    assert PASSWORD not in outcome.error
    assert recorder.mails == []


async def test_implicit_tls_delivers(ca: trustme.CA, ca_file: Path) -> None:
    recorder = Recorder()
    port = free_port("127.0.0.1")
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        ssl_context=server_context(ca),
        auth_required=True,
        auth_require_tls=False,  # aiosmtpd only sees STARTTLS; this connection is TLS from byte 0
        authenticator=check_password,
    )
    controller.start()
    try:
        outcome = await channel_for(port, "implicit", ca_file).send(envelope())
    finally:
        controller.stop()

    assert isinstance(outcome, Delivered)
    assert len(recorder.mails) == 1


@pytest.mark.parametrize(
    ("reply", "expected"), [("451 try later", Retry), ("550 no such user", Failed)]
)
async def test_smtp_4xx_retries_and_5xx_fails(reply: str, expected: type) -> None:
    recorder = Recorder(reply)
    port = free_port("127.0.0.1")
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
        outcome = await EmailChannel(smtp_config(settings)).send(envelope())
    finally:
        controller.stop()

    assert isinstance(outcome, expected)


async def test_unreachable_server_is_temporary() -> None:
    settings = Settings(
        smtp_host="127.0.0.1", smtp_port=free_port("127.0.0.1"), smtp_tls="none", smtp_timeout_s=2
    )

    outcome = await EmailChannel(smtp_config(settings)).send(envelope())

    assert isinstance(outcome, Retry)


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PULSE_SMTP_CA_FILE"):
        smtp_config(Settings(smtp_ca_file=str(tmp_path / "missing.pem")))


async def test_html_reply_to_and_custom_headers_arrive() -> None:
    from email import message_from_bytes, policy

    recorder = Recorder()
    port = free_port("127.0.0.1")
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    payload = EmailPayload(
        subject="Your order",
        body="Plain text for old readers",
        html="<p>Rich <b>text</b></p>",
        reply_to="support@example.com",
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
    )
    sent = Envelope(str(uuid7()), str(uuid7()), "someone@example.com", payload, attempt=1)
    try:
        settings = Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
        outcome = await EmailChannel(smtp_config(settings)).send(sent)
    finally:
        controller.stop()

    assert isinstance(outcome, Delivered)
    mail = message_from_bytes(recorder.mails[0], policy=policy.default)
    assert mail["Reply-To"] == "support@example.com"
    assert mail["X-Campaign"] == "spring"
    assert mail.get_body(("html",)).get_content().strip() == "<p>Rich <b>text</b></p>"  # type: ignore[union-attr]
    assert "Plain text" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "payload",
    [
        {"subject": "s", "body": "b", "headers": {"X-Evil": "a\r\nBcc: victim@example.com"}},
        {"subject": "s", "body": "b", "headers": {"From": "ceo@example.com"}},
        {"subject": "s", "body": "b", "reply_to": "not an address"},
        {"subject": "s\r\nBcc: x@example.com", "body": "b"},
    ],
)
def test_header_injection_and_owned_headers_are_refused(payload: dict[str, Any]) -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(payload, EmailPayload)
