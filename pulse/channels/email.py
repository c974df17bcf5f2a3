"""Email over SMTP with aiosmtplib.

SMTP 5xx replies are permanent (the server refused this message for good); 4xx replies and
connection problems are temporary (only connection problems and 421 count against the relay's
circuit breaker: other 4xx are about one message). The Message-ID is derived from the
notification id so a receiving system can recognise a redelivered mail as the same message.
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

from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed, Outcome, Retry

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"^[^@\s<>()\[\],;:\"]+@{_LABEL}(?:\.{_LABEL})+$")


QUIT_TIMEOUT_S = 1.0


# Custom headers: RFC 5322 field names; values on one line (no header injection); never the
# headers Pulse itself owns.
HeaderName = Annotated[str, msgspec.Meta(pattern=r"^[!-9;-~]{1,76}$")]
HeaderValue = Annotated[str, msgspec.Meta(max_length=998, pattern=r"^[^\r\n]*$")]
OWN_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "sender",
     "mime-version", "content-type", "content-transfer-encoding"}
)  # fmt: skip


class EmailPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=998, pattern=r"^[^\r\n]*$")]
    body: Annotated[str, msgspec.Meta(min_length=1)]
    html: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    reply_to: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    headers: Annotated[dict[HeaderName, HeaderValue], msgspec.Meta(max_length=20)] | None = None

    def __post_init__(self) -> None:
        if self.reply_to is not None:
            check_address(self.reply_to)
        clash = sorted(name for name in self.headers or {} if name.lower() in OWN_HEADERS)
        if clash:
            raise ValueError(f"headers may not set {', '.join(clash)}: Pulse sets them")


def check_address(value: str) -> str:
    """Accept a bare address such as ``someone@example.com``."""
    address = value.strip()
    if len(address) > 254 or not _ADDRESS.match(address):
        raise ValueError(f"{value!r} is not an email address")
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

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> Outcome:
        message = build_message(envelope, self._config.sender)
        try:
            await self._send(message)
        except aiosmtplib.SMTPResponseException as exc:
            return _classify(exc.code, exc.message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return _classify(first.code, first.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Retry(error=f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
        return Delivered(provider_id=message["Message-ID"], response="250")

    async def _send(self, message: EmailMessage) -> None:
        """Connect, authenticate, send. Not ``aiosmtplib.send``: its context manager answers a
        cancellation with a polite QUIT, which hangs on a stalled server; a worker told to stop
        at once must drop the connection instead."""
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
            await client.send_message(message)
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
