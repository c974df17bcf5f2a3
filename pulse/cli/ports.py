"""Who may serve the API's port: one deployment only.

SO_REUSEPORT lets every socket of the same user bind a port already bound with it, and the
kernel then splits new connections among them: two deployments' ``pulse api`` on one port
would each answer a share of the other's clients. So only the children of one ``pulse api
--processes N`` supervisor set it. A lone ``pulse api`` binds plainly (a taken port fails), and
the supervisor, before starting children, takes the port for them: a lock keyed by the port (an
abstract Unix socket: gone with the process, no file to clean up) that a second supervisor
cannot take, and a SO_REUSEPORT socket bound to the port (never listening, so the kernel
hands it no connections) that only its children can join, held while they come and go.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from collections.abc import Iterator
from typing import Any


class PortInUse(Exception):
    """The API's port is served by another process: start-up stops, naming the port."""

    def __init__(self, host: str, port: int, holder: str = "another process") -> None:
        super().__init__(
            f"address in use: port {port} (on {host}) is taken by {holder};"
            " stop it or choose another PULSE_HTTP_PORT"
        )


def is_port_in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE


@contextlib.contextmanager
def hold_port(host: str, port: int) -> Iterator[None]:
    """Take ``port`` for one supervisor's children until the block ends, or raise
    ``PortInUse``."""
    with contextlib.ExitStack() as held:
        if sys.platform == "linux":
            lock = held.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            try:
                lock.bind(f"\0pulse-api-port-{port}")
            except OSError as exc:
                if is_port_in_use(exc):
                    holder = "another `pulse api --processes` supervisor"
                    raise PortInUse(host, port, holder) from None
                raise
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            # First plainly, then kept with SO_REUSEPORT: a port some other process bound with
            # SO_REUSEPORT (which the second bind alone would join) is refused too.
            for reuse_port in (False, True):
                sock = _bind(host, port, family, kind, proto, address, reuse_port=reuse_port)
                if reuse_port:
                    held.enter_context(sock)
                else:
                    sock.close()
        yield


def _bind(
    host: str,
    port: int,
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    proto: int,
    address: tuple[Any, ...],
    *,
    reuse_port: bool,
) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # as asyncio's servers do: IPv4 binds separately
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if is_port_in_use(exc):
            raise PortInUse(host, port) from None
        raise
    return sock
