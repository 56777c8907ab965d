"""A real Redis Cluster (3 masters, 3 replicas) and a Sentinel set (master, replica, 3 sentinels)
on free 127.0.0.1 ports, from Debian's redis-server and redis-cli, for tests.

Both start in a few seconds: cluster bus timeouts and sentinel detection times are short, and
no node persists anything. Everything is torn down (SIGKILL, temporary directories removed) by
`close()`, which the context managers call.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from tests.support.consumers import product
from tests.support.servers import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

NODE_TIMEOUT_MS = 2000
"""cluster-node-timeout: how long a silent master stays up in the others' view."""


NODE_ARGS = [
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    # A replica whose master is away may take over at once (the tests fail masters over).
    "--cluster-replica-validity-factor", "0",
]  # fmt: skip
BUS_PORT_OFFSET = 10000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(attempts: int = 200) -> int:
    """A free port whose bus port (+10000) is free too and still a valid port number."""
    rng = random.Random()
    for _ in range(attempts):
        port = rng.randrange(20000, 65535 - BUS_PORT_OFFSET)
        if _is_free(port) and _is_free(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) on 127.0.0.1")


def _wait(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():  # type: ignore[operator]
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _info(port: int, section: str) -> dict[str, object]:
    """INFO `section` as redis-py parses it (`slave0` is a dict of its fields)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def _cluster_info(port: int) -> dict[str, str]:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        raw = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class LocalCluster:
    """Six cluster-enabled redis-servers joined by `redis-cli --cluster create`."""

    def __init__(self, masters: int = 3, replicas_per_master: int = 1) -> None:
        self.nodes = [
            RedisServer(port=cluster_port(), extra=NODE_ARGS)
            for _ in range(masters * (1 + replicas_per_master))
        ]
        self.replicas_per_master = replicas_per_master

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A `redis+cluster://` URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every node says `cluster_state:ok` and every replica's link to its master is up."""

        def healthy() -> bool:
            for port in self.ports:
                if _cluster_info(port).get("cluster_state") != "ok":
                    return False
                info = _info(port, "replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
            return True

        _wait(healthy, timeout, "the cluster to be ok with every replica in sync")

    def client(self) -> redis.RedisCluster:
        """A synchronous cluster client (for test set-up and checks)."""
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0])

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot, as the nodes see it now."""
        slot = key_slot(key.encode())
        client = redis.Redis(host="127.0.0.1", port=self.ports[0])
        try:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(master[1])
        finally:
            client.close()
        raise LookupError(f"no master serves slot {slot}")

    def replica_of(self, master_port: int) -> int:
        """The port of one replica of the master on `master_port`."""
        info = _info(master_port, "replication")
        for key, value in info.items():
            if key.startswith("slave") and isinstance(value, dict) and "port" in value:
                return int(value["port"])
        raise LookupError(f"master on {master_port} has no replica")

    def failover(self, key: str, timeout: float = 30.0) -> tuple[int, int]:
        """`CLUSTER FAILOVER` on a replica of `key`'s master; (old master, new master) ports."""
        old = self.master_of(key)
        new = self.replica_of(old)
        client = redis.Redis(host="127.0.0.1", port=new)
        try:
            client.execute_command("CLUSTER", "FAILOVER")
        finally:
            client.close()
        _wait(lambda: _info(new, "replication").get("role") == "master", timeout,
              f"replica {new} to become master")  # fmt: skip
        _wait(lambda: self.master_of(key) == new, timeout, "the slot map to show the new master")
        self.wait_healthy(timeout)
        return old, new

    def reshard_slot_of(self, key: str, timeout: float = 60.0) -> tuple[int, int]:
        """Move `key`'s slot (with its keys) to another master; (from, to) ports.

        `redis-cli --cluster reshard` cannot pick one slot, so this does what it does for each
        slot, for one: SETSLOT IMPORTING / MIGRATING, MIGRATE the keys in batches (clients see
        ASK meanwhile), then SETSLOT NODE on both.
        """
        slot = key_slot(key.encode())
        source = self.master_of(key)
        masters = {int(m[1]) for _, _, m, *_ in self._slots()}
        target = next(p for p in sorted(masters) if p != source)
        src, dst = self._plain(source), self._plain(target)
        try:
            src_id = src.execute_command("CLUSTER", "MYID").decode()
            dst_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                src.execute_command(
                    "MIGRATE", "127.0.0.1", target, "", 0, 5000, "REPLACE", "KEYS", *keys
                )
            else:
                raise TimeoutError(f"keys of slot {slot} still on {source} after {timeout}s")
            for client in (dst, src):
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        finally:
            src.close()
            dst.close()
        _wait(lambda: self.master_of(key) == target, timeout, "the slot map to show the move")
        return source, target

    def _plain(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    def _slots(self) -> list[list[object]]:
        client = self._plain(self.ports[0])
        try:
            return list(client.execute_command("CLUSTER", "SLOTS"))
        finally:
            client.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class LocalSentinels:
    """One master, one replica and three sentinels watching them as `master_name`.

    A master that stays silent for `down_after_ms` is failed over; sentinels only need two
    votes (quorum 2) so one of them may be away.
    """

    def __init__(self, master_name: str = "streams", down_after_ms: int = 1000) -> None:
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.master = RedisServer()
        self.replica = RedisServer()
        self.dir = Path(tempfile.mkdtemp(prefix="streamscale-sentinel-"))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        _wait(lambda: _info(self.replica.port, "replication").get("master_link_status") == "up",
              20, "the replica to sync")  # fmt: skip
        binary = self.master.binary
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.dir}\n"
                f"logfile {self.dir / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen([binary, str(conf), "--sentinel"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )  # fmt: skip
        # Each sentinel must know the replica and the two other sentinels before a failover
        # can be voted on (they discover them through the master's hello channel).
        _wait(self._sentinels_ready, 30, "the sentinels to see the replica and each other", 0.1)

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                                 decode_responses=True)  # fmt: skip
            try:
                state = client.execute_command("SENTINEL", "MASTER", self.master_name)
            finally:
                client.close()
            if not isinstance(state, dict):
                state = dict(zip(state[::2], state[1::2], strict=True))
            fields = state
            if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        client = redis.Redis(host="127.0.0.1", port=self.sentinel_ports[0], socket_timeout=2)
        try:
            _host, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        finally:
            client.close()
        return int(port)

    def kill_master(self, timeout: float = 30.0, *, restart: bool = True) -> int:
        """SIGKILL the master; return the port of the replica the sentinels promoted.

        With `restart`, the killed server then comes back (empty, as a pod would) and the
        sentinels make it a replica of the new master, so writes can be replicated again.
        """
        old = self.master_port()
        server = self.master if self.master.port == old else self.replica
        server.kill()
        _wait(lambda: self.master_port() != old, timeout, "the sentinels to promote the replica",
              0.1)  # fmt: skip
        new = self.master_port()
        _wait(lambda: _info(new, "replication").get("role") == "master", timeout,
              "the promoted replica to act as master")  # fmt: skip
        # Every sentinel names the new master before the old one is back: a client asking a
        # sentinel that lags would otherwise be sent to the restarted, empty server.
        _wait(lambda: self._masters_named() == {new}, timeout, "every sentinel to agree", 0.1)
        if restart:
            # Back as a replica of the new master, as a pod that asks the sentinels on start-up
            # does; started as an empty master it would take writes (and recreate groups) until
            # the sentinels demote it, and those are lost with the resync (Redis, not us).
            server.extra = ["--replicaof", "127.0.0.1", str(new)]
            server.start()
        return new

    def _masters_named(self) -> set[int]:
        """The master port each sentinel reports (one value when they all agree)."""
        ports = set()
        for port in self.sentinel_ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            try:
                _host, master = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
            finally:
                client.close()
            ports.add(int(master))
        return ports

    def close(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.master.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)


POISON = b"{poison"


class FlowingProducer(threading.Thread):
    """Adds entries to `stream` at about `rate` a second, through failovers, until `total`.

    A write that fails is retried as a new entry, though its first attempt may have landed: the
    stream itself is the record of what was produced. `confirmed` holds the IDs Redis
    acknowledged; with `wait_replicas`, only those a replica acknowledged too (WAIT 1), which
    a failover cannot lose. Every `poison_every`-th entry is not JSON.
    """

    def __init__(
        self,
        connect: Callable[[], redis.Redis | redis.RedisCluster],
        stream: str,
        *,
        total: int,
        rate: float,
        poison_every: int = 97,
        wait_replicas: bool = False,
    ) -> None:
        super().__init__(daemon=True, name="producer")
        self.connect, self.stream, self.total, self.rate = connect, stream, total, rate
        self.poison_every, self.wait_replicas = poison_every, wait_replicas
        self.confirmed: list[str] = []
        self.unconfirmed: list[str] = []
        """Written, but no replica had it within the WAIT timeout: a failover may undo them."""
        self.failed_writes = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        client = self.connect()
        started = time.monotonic()
        n = 0
        try:
            while n < self.total:
                bad = n % self.poison_every == self.poison_every - 1
                data = POISON if bad else orjson.dumps(product(n))
                try:
                    self._write(client, data)
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError,
                        RedisClusterException):  # fmt: skip
                    self.failed_writes += 1
                    time.sleep(0.05)
                    continue
                n += 1
                ahead = n / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()
            self.done.set()

    def _write(self, client: redis.Redis | redis.RedisCluster, data: bytes) -> None:
        if not self.wait_replicas:
            self.confirmed.append(client.xadd(self.stream, {"data": data}).decode())
            return
        # One pipeline, so WAIT runs on the connection that made the write.
        pipe = client.pipeline(transaction=False)
        pipe.xadd(self.stream, {"data": data})
        pipe.execute_command("WAIT", 1, 200)
        entry_id, replicas = pipe.execute()
        (self.confirmed if int(replicas) >= 1 else self.unconfirmed).append(entry_id.decode())


def stream_entries(client: redis.Redis | redis.RedisCluster, stream: str) -> dict[str, bool]:
    """Every entry of `stream`: ID -> whether it is poison."""
    found: dict[str, bool] = {}
    start = "-"
    while True:
        page = client.xrange(stream, min=start, max="+", count=5000)
        for entry_id, fields in page:
            found[entry_id.decode()] = fields.get(b"data") == POISON
        if len(page) < 5000:
            return found
        start = "(" + page[-1][0].decode()


@contextlib.contextmanager
def running_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def running_sentinels(**kwargs: object) -> Iterator[LocalSentinels]:
    sentinels = LocalSentinels(**kwargs)  # type: ignore[arg-type]
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.close()
