"""A webhook endpoint on loopback that answers 204 to every POST: what the load test's webhooks
are delivered to, so that channel is measured end to end too. It counts each ``webhook-id``
(the notification's id): one received twice is a duplicate delivery."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Pulse's client reuses its connections

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: WebhookReceiver = self.server  # type: ignore[assignment]
        server.count(self.headers.get("webhook-id", ""))  # counted before it is answered
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per webhook would drown the run's output."""


class WebhookReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = 0
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/pulse"

    @property
    def duplicates(self) -> int:
        """Posts beyond the first of each webhook-id."""
        with self._lock:
            return self.received - len(self._ids)

    def count(self, webhook_id: str) -> None:
        with self._lock:
            self.received += 1
            self._ids.add(webhook_id)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()
