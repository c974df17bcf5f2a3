"""Email over SMTP with aiosmtplib.

SMTP 5xx replies are permanent (the server refused this message for good); 4xx replies and
connection problems are temporary (only connection problems and 421 count against the relay's
circuit breaker: other 4xx are about one message). The Message-ID is derived from the
notification id so a receiving system can recognise a redelivered mail as the same message.

The SMTP envelope is always the configured sender and the one accepted recipient, whatever the
headers say; tenants' headers and header-bound values are checked by ``mail_headers``. A mail
that cannot be built is a permanent failure of that mail (``UnbuildableMessage``), never an
exception out of the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Annotated, Literal

import aiosmtplib
import msgspec

from pulse.channels.mail_headers import (
    MAX_VALUE_LENGTH,
    NAME,
    address_fault,
    name_fault,
    render_fault,
    value_fault,
)
from pulse.core.errors import ConfigError
from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed, Outcome, Retry

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"^[^@\s<>()\[\],;:\"]+@{_LABEL}(?:\.{_LABEL})+$")


QUIT_TIMEOUT_S = 1.0


class EmailPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Header-bound fields (subject, reply_to, headers) are checked in ``__post_init__`` by
    ``mail_headers``: with the mail library's own rule, and naming the field at fault."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_VALUE_LENGTH)]
    body: Annotated[str, msgspec.Meta(min_length=1)]
    html: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    reply_to: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    headers: Annotated[dict[str, str], msgspec.Meta(max_length=20)] | None = None

    def __post_init__(self) -> None:
        _refuse(value_fault("Subject", self.subject), "subject")
        if self.reply_to is not None:
            _refuse(_address_error(self.reply_to), "reply_to")
        for name, value in (self.headers or {}).items():
            where = f"headers.{name}" if NAME.fullmatch(name) else "headers"
            _refuse(name_fault(name) or value_fault(name, value), where)


def _refuse(fault: str | None, field: str) -> None:
    """Raise ``fault`` for ``field`` in msgspec's own "reason - at `$.path`" form, which the
    API reads to name the field (a JSON pointer) in its 422."""
    if fault is not None:
        raise ValueError(f"{fault} - at `$.{field}`")


def _address_error(value: str) -> str | None:
    try:
        check_address(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_address(value: str) -> str:
    """Accept a bare address such as ``someone@example.com``, one the mail library writes in an
    address header as itself."""
    address = value.strip()
    if len(address) > 254 or not _ADDRESS.match(address):
        raise ValueError(f"{value!r} is not an email address")
    fault = address_fault(address)
    if fault is not None:
        raise ValueError(f"{value!r} cannot be a mail address: {fault}")
    return address


EMAIL_SPEC = ChannelSpec(
    name="email", payload_type=EmailPayload, check_recipient=check_address, provider_kind="smtp"
)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    tls: Literal["none", "starttls", "implicit"]
    username: str | None
    password: str | None
    sender: str
    timeout_s: float
    tls_context: ssl.SSLContext | None = None


class EmailChannel:
    """Sends one mail per attempt; one SMTP connection per send keeps failures independent."""

    spec = EMAIL_SPEC

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._sender = envelope_sender(config.sender)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> Outcome:
        try:
            message = build_message(envelope, self._config.sender)
        except Exception as exc:  # whatever this one mail holds, it can never be sent: not a
            return _unbuildable(f"{type(exc).__name__}: {exc}")  # fault of the relay's
        fault = render_fault(message)  # what aiosmtplib would raise mid-session, found now
        if fault is not None:
            return _unbuildable(fault)
        try:
            await self._send(message, envelope.recipient)
        except aiosmtplib.SMTPResponseException as exc:
            return _classify(exc.code, exc.message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return _classify(first.code, first.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Retry(error=f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
        return Delivered(provider_id=message["Message-ID"], response="250")

    async def _send(self, message: EmailMessage, recipient: str) -> None:
        """Connect, authenticate, send. Not ``aiosmtplib.send``: its context manager answers a
        cancellation with a polite QUIT, which hangs on a stalled server; a worker told to stop
        at once must drop the connection instead.

        The envelope is given, never left to aiosmtplib: it would read it from the headers
        (``Resent-To``/``Resent-From`` when a ``Resent-Date`` is present), and the mail would
        go where the headers say rather than to the one recipient accepted."""
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.tls == "implicit",
            start_tls=config.tls == "starttls",
            timeout=config.timeout_s,
            tls_context=config.tls_context,
        )
        try:
            await client.connect()
            await client.send_message(message, sender=self._sender, recipients=[recipient])
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await asyncio.wait_for(client.quit(), QUIT_TIMEOUT_S)
        finally:
            client.close()


def build_message(envelope: Envelope, sender: str) -> EmailMessage:
    payload: EmailPayload = envelope.payload
    message = EmailMessage()
    message["From"] = sender
    message["To"] = envelope.recipient
    message["Subject"] = payload.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(envelope.notification_id)
    if payload.reply_to:
        message["Reply-To"] = payload.reply_to
    for name, value in (payload.headers or {}).items():
        message[name] = value
    message.set_content(payload.body)
    if payload.html:
        message.add_alternative(payload.html, subtype="html")
    return message


def envelope_sender(sender: str) -> str:
    """The address of the configured From (``Pulse <pulse@localhost>``), for MAIL FROM."""
    message = EmailMessage()
    try:
        message["From"] = sender
        addresses: list[str] = [mailbox.addr_spec for mailbox in message["From"].addresses]
    except (ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"the SMTP sender {sender!r} is not an address: {exc}") from None
    if len(addresses) != 1 or "@" not in addresses[0]:
        raise ConfigError(f"the SMTP sender {sender!r} must hold exactly one address")
    return addresses[0]


def _unbuildable(reason: str) -> Failed:
    return Failed(error=f"the mail cannot be built: {reason}", error_class="UnbuildableMessage")


def message_id(notification_id: str) -> str:
    return f"<{notification_id}@pulse>"


def _classify(code: int, text: str) -> Outcome:
    error, error_class, response = f"SMTP {code}: {text}", f"SMTP{code}", f"{code} {text}"
    if 500 <= code < 600:
        return Failed(error=error, error_class=error_class, response=response)
    # 421: the relay is shutting the channel (its own trouble); other 4xx put off one message
    return Retry(
        error=error, error_class=error_class, response=response, provider_fault=code == 421
    )
