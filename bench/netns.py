"""Simulated hosts for bench/scaling.py: Linux network namespaces joined by veth pairs to a bridge.

Every namespace is named ``pulse-sc-<run>-<node>``; the bridge lives in a namespace of its own
(``-br``), so the host's root namespace gains no link and no address. The hosts share one private
/24 with no default route and no NAT: their traffic cannot leave the sandbox. ``Sandbox`` removes
what it made (processes still inside first, then the namespaces, which takes their links along);
``remove_leftovers`` does the same for the namespaces of a run whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

PREFIX = "pulse-sc-"
BRIDGE = "br0"
STOP_GRACE_S = 10.0
_NAME = re.compile(rf"^{PREFIX}(\d+)-([a-z0-9]+)$")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    """The names `ip netns list` shows (without their ids)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


@dataclass
class Sandbox:
    """The namespaces of one run: ``nodes`` hosts plus the bridge's namespace."""

    run: str
    nodes: Sequence[str]
    subnet: str  # the first three octets, e.g. "10.254.17"
    made: list[str] = field(default_factory=list)

    def name(self, node: str) -> str:
        return f"{PREFIX}{self.run}-{node}"

    def address(self, node: str) -> str:
        return f"{self.subnet}.{self.nodes.index(node) + 1}"

    def exec(self, node: str) -> list[str]:
        """The command prefix that runs a program on ``node``."""
        return ["ip", "netns", "exec", self.name(node)]

    def all_names(self) -> list[str]:
        return [self.name(node) for node in [*self.nodes, "br"]]

    def create(self) -> None:
        bridge = self._add("br")
        _ip("-n", bridge, "link", "add", "name", BRIDGE, "type", "bridge")
        _ip("-n", bridge, "link", "set", "dev", BRIDGE, "up")
        for node in self.nodes:
            self._join(bridge, node)

    def _add(self, node: str) -> str:
        name = self.name(node)
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("-n", name, "link", "set", "dev", "lo", "up")
        return name

    def _join(self, bridge: str, node: str) -> None:
        name = self._add(node)
        port = f"veth-{node}"
        _ip("-n", bridge, "link", "add", "name", port, "type", "veth", "peer", "name", "eth0",
            "netns", name)  # fmt: skip
        _ip("-n", bridge, "link", "set", "dev", port, "master", BRIDGE)
        _ip("-n", bridge, "link", "set", "dev", port, "up")
        _ip("-n", name, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "dev", "eth0", "up")

    def remove(self) -> None:
        for name in reversed(self.made):
            remove_namespace(name)
        self.made.clear()


def remove_namespace(name: str) -> None:
    """Stop the processes still inside (SIGTERM, then SIGKILL), then delete the namespace."""
    with contextlib.suppress(RuntimeError):
        pids = [int(pid) for pid in _ip("netns", "pids", name).split()]
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.05)
        _signal(pids, signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", name)


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Remove the namespaces of runs whose process has gone (a crash, a SIGKILL); return them."""
    removed = []
    for name in namespaces():
        found = _NAME.match(name)
        if found and not alive(int(found.group(1))):
            remove_namespace(name)
            removed.append(name)
    return removed


@contextlib.contextmanager
def sandbox(nodes: Sequence[str]) -> Iterator[Sandbox]:
    """A sandbox for this process's run, removed on the way out whatever happens."""
    run = str(os.getpid())
    box = Sandbox(run, nodes, f"10.254.{os.getpid() % 250 + 1}")
    try:
        box.create()
        yield box
    finally:
        box.remove()
