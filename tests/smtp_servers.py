"""SMTP servers with scripted behaviour for the reliability tests (real aiosmtpd servers)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller

from pulse.devtools.managed import Managed
from pulse.devtools.ports import free_port

FLAKY = re.compile(r"^flaky(\d+)-")


class ScriptedHandler:
    """Replies by recipient: ``reject-*`` gets 550, ``flakyN-*`` gets 451 for its first N
    attempts, ``slow-*`` waits ``slow_s`` first; anything else is accepted. Accepted mails are
    counted by Message-ID, so a duplicate send shows."""

    def __init__(self, slow_s: float = 0.0, random_451: float = 0.0, seed: int = 0) -> None:
        import random

        self.slow_s = slow_s
        self.random_451 = random_451
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.tries: Counter[str] = Counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        recipient = envelope.rcpt_tos[0]
        message_id = _message_id(bytes(envelope.content))
        with self._lock:
            self.tries[message_id] += 1
            tries = self.tries[message_id]
        if recipient.startswith("slow-"):
            await asyncio.sleep(self.slow_s)
        if recipient.startswith("reject-"):
            return "550 5.1.1 no such user"
        flaky = FLAKY.match(recipient)
        if flaky and tries <= int(flaky.group(1)):
            return "451 4.3.0 try again later"
        with self._lock:
            if self.random_451 and self._rng.random() < self.random_451:
                return "451 4.3.0 random hiccup"
            self.accepted[message_id] += 1
        return "250 OK"


def _message_id(content: bytes) -> str:
    for line in content.splitlines():
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


class ScriptedSmtp(Managed):
    def __init__(self, handler: ScriptedHandler) -> None:
        self.handler = handler
        self.port = free_port("127.0.0.1")
        self._controller = Controller(handler, hostname="127.0.0.1", port=self.port)
        self.running = False

    def start(self) -> None:
        self._controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self._controller.stop()
            self.running = False
        elif not self._controller.loop.is_closed():
            self._controller.loop.close()  # never started: aiosmtpd made a loop it never closes
