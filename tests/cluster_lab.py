"""A real Redis Cluster on loopback for the partition tests and the scaling bench.

``running_cluster(masters, replicas)`` starts ``masters * (1 + replicas)`` ``redis-server``
processes in cluster mode on free loopback ports, in a temporary folder of its own (no
persistence), joins them (``redis-cli --cluster create``; a one-master cluster takes every slot
itself, as ``--cluster create`` wants three), waits until every node says ``cluster_state:ok``,
and kills and removes everything afterwards. ``kill_master`` SIGKILLs a master and waits until
its replica serves its slots: a failover. ``freeze_replica_of`` SIGSTOPs a master's replica
first, so what the master acknowledges meanwhile is never replicated: the writes a failover
loses (``kill_master(..., thaw=replica)`` lets the replica go on and take over).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from pulse.devtools.ports import free_port

HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 1000  # how long a silent master has before its replica takes over
READY_TIMEOUT_S = 60.0
# More than loopback's socket buffers hold (tcp_rmem max 32 MiB + tcp_wmem max 4 MiB here),
# less than a replica's soft output-buffer limit (64 MiB).
CLOG_BYTES = 48 * 1024 * 1024


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed")
    return found


@dataclass
class Node:
    port: int
    workdir: Path
    cluster: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(HOST, self.port, socket_timeout=5)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cluster = [
            "--cluster-enabled", "yes", "--cluster-port", str(free_port(HOST)),
            "--cluster-config-file", str(self.workdir / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        ]  # fmt: skip
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                redis_server(), "--port", str(self.port), "--bind", HOST,
                *(cluster if self.cluster else []),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--repl-diskless-sync-delay", "0",
            ],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@dataclass
class ClusterLab:
    workdir: Path
    masters: int = 3
    replicas: int = 1
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A node to start from: the client finds the others."""
        return f"redis://{self.live()[0].address}"

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive()]

    def start(self) -> None:
        count = self.masters * (1 + self.replicas)
        for i in range(count):
            node = Node(free_port(HOST), self.workdir / f"node-{i}")
            node.start()
            self.nodes.append(node)
        for node in self.nodes:
            _wait(lambda n=node: _pings(n), f"{node.address} answering")
        if self.masters >= 3:
            addresses = [node.address for node in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        else:
            self._create_small()
        self.wait_ok()

    def _create_small(self) -> None:
        """One master holds every slot; its replicas (if any) follow it."""
        master, *followers = self.nodes
        with master.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            master_id = client.execute_command("CLUSTER", "MYID").decode()
        for node in followers:
            with node.client() as client:
                client.execute_command("CLUSTER", "MEET", HOST, master.port)
        for node in followers:
            _wait(lambda n=node: _knows(n, master_id), f"{node.address} meeting the master")
            with node.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", master_id)

    def wait_ok(self) -> None:
        """Every live node says the cluster is ok and sees the same masters serving all slots,
        and every replica is in sync with its master (only a synced replica can take over)."""
        _wait(self._ok, "cluster_state:ok on every node")
        _wait(self._replicas_synced, "every replica in sync")

    def _replicas_synced(self) -> bool:
        for node in self.live():
            with node.client() as client:
                info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def _ok(self) -> bool:
        views = set()
        for node in self.live():
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
            views.add(tuple(sorted(self._masters_seen_by(node))))
        return len(views) == 1 and len(next(iter(views))) == self.masters

    @staticmethod
    def _masters_seen_by(node: Node) -> list[int]:
        """The ports of the masters serving slots, as ``node`` sees the cluster."""
        masters = []
        with node.client() as client:
            table = client.execute_command("CLUSTER", "NODES").decode()
        for line in table.splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                masters.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return masters

    def master_ports(self) -> list[int]:
        return sorted(self._masters_seen_by(self.live()[0]))

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        with self.live()[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            slots: list[list[object]] = client.execute_command("CLUSTER", "SLOTS")
            for start, end, master, *_ in slots:
                assert isinstance(start, int)
                assert isinstance(end, int)
                assert isinstance(master, list)
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def replica_of(self, port: int) -> Node:
        """The live replica of the master on ``port`` (one that was promoted has none)."""
        with self.live()[0].client() as client:
            table = client.execute_command("CLUSTER", "NODES").decode()
        ids = {line.split()[1].split("@")[0]: line.split()[0] for line in table.splitlines()}
        master_id = ids[f"{HOST}:{port}"]
        for line in table.splitlines():
            fields = line.split()
            if fields[3] == master_id and "fail" not in fields[2]:
                address = fields[1].split("@")[0]
                return next(node for node in self.live() if node.address == address)
        raise LookupError(f"{port} has no live replica")

    def has_replica(self, port: int) -> bool:
        try:
            self.replica_of(port)
        except (LookupError, StopIteration):
            return False
        return True

    def freeze_replica_of(self, port: int, clog_key: str) -> Node:
        """SIGSTOP the replica of the master on ``port``, then write ``CLOG_BYTES`` to
        ``clog_key`` (a key of that master): the replication link's socket buffers fill (a
        frozen replica would read them once thawed), so what the master acknowledges next
        waits in the master's memory alone, lost if it dies."""
        replica = self.replica_of(port)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        master = next(node for node in self.nodes if node.port == port)
        with master.client() as client:
            client.set(clog_key, b"x" * CLOG_BYTES)
        return replica

    def kill_master(self, port: int, *, thaw: Node | None = None) -> None:
        """SIGKILL the master on ``port`` (then SIGCONT ``thaw``, its frozen replica); return
        once a replica of it serves its slots."""
        node = next(node for node in self.nodes if node.port == port)
        node.kill()
        if thaw is not None and thaw.process is not None:
            os.kill(thaw.process.pid, signal.SIGCONT)
        _wait(lambda: port not in self._masters_among_live(), "the replica's promotion")
        self.wait_ok()

    def _masters_among_live(self) -> list[int]:
        seen: set[int] = set()
        for node in self.live():
            seen.update(self._masters_seen_by(node))
        return sorted(seen)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive() and node.process is not None:
                os.kill(node.process.pid, signal.SIGCONT)  # a frozen one too
            node.kill()


def _pings(node: Node) -> bool:
    try:
        with node.client() as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def _knows(node: Node, node_id: str) -> bool:
    with node.client() as client:
        return node_id in client.execute_command("CLUSTER", "NODES").decode()


def _wait(ready: object, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except redis.RedisError:
            pass  # a node still starting or failing over: ask again
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout_s}s for {what}")


@contextlib.contextmanager
def running_redis() -> Iterator[str]:
    """One plain ``redis-server`` (no cluster mode) in a temporary folder: its URL."""
    with tempfile.TemporaryDirectory(prefix="pulse-redis-") as workdir:
        node = Node(free_port(HOST), Path(workdir), cluster=False)
        try:
            node.start()
            _wait(lambda: _pings(node), f"{node.address} answering")
            yield f"redis://{node.address}"
        finally:
            node.kill()


@contextlib.contextmanager
def running_cluster(masters: int = 3, replicas: int = 1) -> Iterator[ClusterLab]:
    """A started cluster in a temporary folder of its own, killed and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pulse-cluster-") as workdir:
        lab = ClusterLab(Path(workdir), masters, replicas)
        try:
            lab.start()
            yield lab
        finally:
            lab.stop()
