"""A Redis Cluster on sandbox hosts for bench/scaling.py: one master per host, no replicas.

Each master is the redis-server of bench/sandbox_servers.py in cluster mode on its host's
address, announcing that address (``cluster-announce-ip``) so that clients on other hosts reach
the nodes the cluster names. The masters are joined as tests/cluster_lab.py joins its loopback
clusters (``redis-cli --cluster create`` for three masters or more; a lone master takes every
slot itself), but with ``redis-cli`` run inside a host: the root namespace cannot reach them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.sandbox_servers import WORKDIR_PREFIX, redis_server, wait

NODE_TIMEOUT_MS = 5000
ALL_SLOTS = ("0", "16383")


@dataclass(frozen=True)
class Master:
    host: str  # the sandbox node it runs on, e.g. "r1"
    prefix: Sequence[str]  # that host's `ip netns exec`
    address: str


@dataclass(frozen=True)
class SandboxCluster:
    url: str  # a node to start from: the cluster client finds the others
    pids: dict[str, int]  # redis-server's pid per host
    addresses: dict[str, str]  # per host


def _cli(master: Master, port: int, *args: str) -> str:
    command = [*master.prefix, "redis-cli", "-h", master.address, "-p", str(port), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _ready(masters: Sequence[Master], port: int) -> bool:
    """Every node says the cluster is ok, knows every master and sees each serving slots."""
    want = len(masters)
    for master in masters:
        info = _cli(master, port, "CLUSTER", "INFO")
        if not all(
            f"{field}:{value}" in info
            for field, value in (("cluster_state", "ok"), ("cluster_known_nodes", want),
                                 ("cluster_size", want))
        ):  # fmt: skip
            return False
    return True


def _join(masters: Sequence[Master], port: int) -> None:
    first = masters[0]
    if len(masters) == 1:
        _cli(first, port, "CLUSTER", "ADDSLOTSRANGE", *ALL_SLOTS)
        return
    nodes = [f"{master.address}:{port}" for master in masters]
    _cli(first, port, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")


@contextlib.contextmanager
def sandbox_cluster(masters: Sequence[Master], port: int) -> Iterator[SandboxCluster]:
    """The masters started on their hosts and joined; stopped and removed on the way out."""
    with contextlib.ExitStack() as stack:
        folder = tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-cluster-")
        workdir = Path(stack.enter_context(folder))
        workdir.chmod(0o755)
        pids = {}
        for master in masters:
            flags = [
                "--cluster-enabled", "yes", "--cluster-announce-ip", master.address,
                "--cluster-config-file", str(workdir / master.host / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            ]  # fmt: skip
            server = redis_server(master.prefix, master.address, workdir / master.host, port, flags)
            pids[master.host] = stack.enter_context(server)
        _join(masters, port)
        wait(lambda: _ready(masters, port), f"a cluster of {len(masters)} master(s)")
        yield SandboxCluster(
            url=f"redis://{masters[0].address}:{port}",
            pids=pids,
            addresses={master.host: master.address for master in masters},
        )
