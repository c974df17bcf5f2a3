"""The SSRF guard's verdict on addresses, with no network I/O: every address that is not
globally routable is refused, in whatever form it is written (IPv4-mapped, NAT64, 6to4,
Teredo), and the socket factory refuses before a socket exists."""

from __future__ import annotations

import socket

import pytest

from pulse.channels.guard import RefusedAddress, guarded_socket, host_refusal, refusal
from pulse.core.signatures import webhook_signature

pytestmark = pytest.mark.unit

REFUSED = [
    "127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "100.100.100.200", "0.0.0.0", "0.1.2.3", "192.0.0.8",
    "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
    "ff0e::1", "2001:db8::1", "100::1", "3fff::1", "5f00::1", "64:ff9b:1::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::6440:1",
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:a00:1::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "::127.0.0.1", "::169.254.169.254",  # IPv4-compatible (deprecated)
]  # fmt: skip
ALLOWED = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED)
def test_addresses_that_are_not_globally_routable_are_refused(address: str) -> None:
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_globally_routable_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def test_a_refusal_names_the_address_and_what_it_is() -> None:
    reason = refusal("::ffff:169.254.169.254")

    assert reason is not None
    assert "169.254.169.254" in reason
    assert "link-local" in reason


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "::ffff:7f00:1", "2130706433", "0x7f.1", "127.1", "017700000001"]
)
def test_ip_literals_in_any_notation_are_judged_as_addresses(host: str) -> None:
    assert host_refusal(host) is not None


@pytest.mark.parametrize("host", ["example.com", "hooks.example.com", "8.8.8.8", "[2606:4700::1]"])
def test_names_and_public_literals_are_left_to_resolution(host: str) -> None:
    assert host_refusal(host) is None


@pytest.mark.parametrize(
    ("family", "sockaddr"),
    [
        (socket.AF_INET, ("127.0.0.1", 443)),
        (socket.AF_INET, ("100.64.0.1", 443)),
        (socket.AF_INET6, ("::ffff:169.254.169.254", 443, 0, 0)),
        (socket.AF_INET6, ("fe80::1%1", 443, 0, 1)),
    ],
)
def test_the_socket_factory_refuses_before_any_socket_exists(
    family: socket.AddressFamily, sockaddr: tuple[object, ...]
) -> None:
    with pytest.raises(RefusedAddress):
        guarded_socket((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))


def test_an_empty_signing_key_never_signs() -> None:
    with pytest.raises(ValueError, match="empty"):
        webhook_signature("whsec_", "msg_1", 1614265330, b"{}")
