"""The SSRF guard of outbound HTTP (webhooks, receipts): Pulse reaches only globally routable
addresses, unless configuration allows inward ones (a receiver on loopback in development).

Three checks, one verdict (``refusal``):
- at accept time and before each request, an IP-literal host (in any notation the system
  resolver accepts: ``127.1``, ``2130706433``, ``[::ffff:7f00:1]``);
- the resolver: every address a name resolves to, before connecting, so a name pointing inward
  is refused, and since the connection goes only to the vetted addresses, so is DNS rebinding;
- the socket factory: every address a connection is opened to, whatever led there.
Redirects are never followed (see ``pulse.channels.webhook``), so there is no second hop.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

logger = logging.getLogger("pulse.channels.guard")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges the IANA special-purpose registries mark not globally reachable but which some Python
# versions' ``is_global`` still calls global (3.11's lists predate several of them).
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # shared address space (carrier-grade NAT, some clouds' metadata)
        "192.0.0.0/24",  # IETF protocol assignments (all of it, the two anycast ones too)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy prefix
        "2001::/23",  # IETF protocol assignments, Teredo included
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing SIDs
        "fec0::/10",  # site-local (deprecated)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are IPv4
_LEGACY_IPV4 = re.compile(r"^[0-9a-fA-FxX.]+$")  # 127.1, 0x7f.1, 2130706433, 0177.0.0.1


class RefusedAddress(OSError):
    """A host or address Pulse must not reach."""


def refusal(address: str) -> str | None:
    """Why ``address`` may not be reached, or None when it is globally routable. Forms that
    carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the address they carry."""
    ip = ipaddress.ip_address(address)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner = _verdict(embedded)
        return None if inner is None else f"{inner} (inside {ip})"
    return _verdict(ip)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _verdict(ip: IPAddress) -> str | None:
    for label, hit in (
        ("link-local", ip.is_link_local),
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("special-purpose", any(ip in network for network in _NOT_GLOBAL)),
        ("non-global", not ip.is_global),
    ):
        if hit:
            return f"{label} address {ip}"
    return None


def literal_address(host: str) -> str | None:
    """The address an IP-literal host names (brackets, a trailing dot and the legacy IPv4
    notations included), or None for a name that needs resolving."""
    bare = host.strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not _LEGACY_IPV4.match(bare):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(bare))
    except OSError:
        return None


def host_refusal(host: str) -> str | None:
    """Why an IP-literal ``host`` may not be reached; None for names (the resolver judges
    those) and for globally routable literals."""
    address = literal_address(host)
    return None if address is None else refusal(address)


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses the name if any answer is an
    address Pulse must not reach."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = refusal(result["host"])
            if reason is not None:  # the detail is the operator's, not the tenant's to learn
                logger.info("refused %s: it resolves to a %s", host, reason)
                raise RefusedAddress(f"{host} does not resolve to public addresses only")
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket factory: the last check, on the very address being connected to."""
    family, kind, proto, _, sockaddr = addr_info
    reason = refusal(sockaddr[0])
    if reason is not None:
        logger.info("refused to connect to a %s", reason)
        raise RefusedAddress("refused to connect to a non-public address")
    return socket.socket(family=family, type=kind, proto=proto)
