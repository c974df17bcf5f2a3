"""A local SMTP sink (aiosmtpd) for ``pulse dev`` and the tests: it accepts every mail, keeps
it in memory and logs one line per mail, so a developer sees what Pulse sent."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from pulse.managed import Managed

logger = logging.getLogger("pulse.devsmtp")


@dataclass(frozen=True, slots=True)
class ReceivedMail:
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


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class SmtpSink(Managed):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._controller: Controller | None = None

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the SMTP sink is not running")
        return int(self._controller.port)

    def start(self) -> None:
        # aiosmtpd connects to its own port to check that it started, so port 0 cannot be
        # passed through: take a free port from the OS first.
        port = self._port or free_port(self._host)
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd narrates every line
        controller = Controller(_Handler(self), hostname=self._host, port=port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def record(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        mail = ReceivedMail(
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            subject=str(parsed.get("Subject", "")),
            text=text,
            message_id=parsed.get("Message-ID"),
            raw=raw,
        )
        with self._lock:
            self._messages.append(mail)
        logger.info("received mail from %s to %s: %r", mail_from, ", ".join(rcpt_tos), mail.subject)

    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)
