"""A local SMTP sink (aiosmtpd) for ``pulse dev`` and the tests: it accepts every mail, keeps
it in memory and logs one line per mail, so a developer sees what Pulse sent."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from pulse.devtools.managed import Managed

logger = logging.getLogger("pulse.devtools.smtp_sink")


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One accepted mail: the envelope, the parsed headers tests look at, and the raw bytes."""

    mail_from: str
    rcpt_tos: list[str]
    subject: str
    text: str
    message_id: str | None
    raw: bytes


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = bytes(envelope.original_content or envelope.content)
        self._sink.record(envelope.mail_from, list(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """Learns the bound port before aiosmtpd connects to itself, so port 0 works."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpSink(Managed):
    """Accepts every mail on ``host:port`` (0: any free port, see ``.port`` once started)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        on_message: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._on_message = on_message
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._controller: _Controller | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the SMTP sink is not running")
        return int(self._controller.port)

    def start(self) -> None:
        if self._controller is not None:
            return
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd narrates every line
        controller = _Controller(_Handler(self), hostname=self._host, port=self._port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def record(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> ReceivedMail:
        """Parse and keep one mail (the handler calls this from aiosmtpd's thread)."""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        text = text.replace("\r\n", "\n")  # SMTP carries CRLF; Pulse wrote plain newlines
        message_id = parsed.get("Message-ID")
        mail = ReceivedMail(
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            subject=str(parsed.get("Subject", "")),
            text=text,
            message_id=None if message_id is None else str(message_id),
            raw=raw,
        )
        with self._lock:
            self._messages.append(mail)
        logger.info(
            "received mail from %s to %s subject %r", mail_from, ", ".join(rcpt_tos), mail.subject
        )
        if self._on_message is not None:
            try:
                self._on_message(mail)
            except Exception:  # a broken callback must not turn into an SMTP error for Pulse
                logger.exception("on_message callback failed")
        return mail

    def messages(self) -> list[ReceivedMail]:
        """A copy, safe to read while mails keep arriving."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
