"""A free TCP port, for servers that cannot be given port 0 (embedded Valkey, test servers)."""

from __future__ import annotations

import socket


def free_port(host: str) -> int:
    """A TCP port free right now on ``host``; another process may take it before it is used,
    so callers bind it at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
