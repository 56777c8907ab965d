"""Local processes for `streamscale demo`: a throwaway redis-server, and consumer processes
scaled through the same `Actuator` interface the operator uses for a Deployment.

Every child is started with a parent-death signal (Linux `PR_SET_PDEATHSIG`), so even a demo
killed with SIGKILL leaves no redis-server or consumer behind; a normal exit or Ctrl-C stops
them in order (consumers first, draining, then Redis).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
"""Loaded in the parent: between fork and exec the child only makes this one system call."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _preexec() -> Any:
    return _die_with_parent if _PRCTL is not None else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    """True once something accepts connections on 127.0.0.1:`port`, False after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


class LocalError(RuntimeError):
    """A local process could not be started; the text says what to install or change."""


class RedisProcess:
    """A redis-server on a free 127.0.0.1 port in `directory`, with persistence off."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LocalError(
                "redis-server is not on PATH: install Redis >= 7 (apt install redis-server,"
                " brew install redis), or point --redis-url at a server of your own"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_preexec(),  # noqa: PLW1509 -- one prctl call, see _PRCTL
            # Own session: a terminal's Ctrl-C must not stop Redis before the consumers drain.
            start_new_session=True,
        )
        if not wait_port(self.port, 20):
            self.stop()
            raise LocalError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclasses.dataclass
class ConsumerProcess:
    """One `python -m streamscale.consumer` child."""

    name: str
    http_port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    stopping: bool = False
    killed: bool = False
    """SIGKILLed on purpose (the demo's chaos): its exit is not a failure."""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class LocalConsumers:
    """Consumer processes as replicas: the demo's `Actuator` (see operator/scaling.py).

    `set_replicas(n)` starts processes named `<prefix>-<seq>` (each its own
    STREAMSCALE_CONSUMER and HTTP port) or sends SIGTERM to the newest ones, which drain
    their batch and leave the group, as a Deployment's pods do when it is scaled down.
    """

    def __init__(
        self, env: Mapping[str, str], log_dir: Path, prefix: str = "consumer", grace: float = 15.0
    ) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.prefix = prefix
        self.grace = grace
        self.processes: list[ConsumerProcess] = []
        self.started = 0
        self.peak = 0
        self.crashed: list[str] = []
        self.killed = 0

    def _reap(self) -> None:
        for p in self.processes:
            if not p.alive:
                code = p.proc.returncode
                if not p.stopping and not p.killed and code != 0:
                    self.crashed.append(f"{p.name} exit {code}: {self.last_words(p.name)}")
                p.log.close()
        self.processes = [p for p in self.processes if p.alive]

    def last_words(self, name: str, lines: int = 3) -> str:
        """The end of a consumer's log, to say why it stopped."""
        path = self.log_dir / f"{name}.log"
        try:
            tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return f"(no log at {path})"
        return " | ".join(tail) + f" (log {path})"

    def running(self) -> list[ConsumerProcess]:
        """Live processes that were not asked to stop: the replicas."""
        self._reap()
        return [p for p in self.processes if not p.stopping]

    def alive_names(self) -> set[str]:
        """Every consumer name a live process may still use (draining ones included)."""
        self._reap()
        return {p.name for p in self.processes}

    async def get_replicas(self) -> int:
        return len(self.running())

    async def set_replicas(self, n: int) -> None:
        current = self.running()
        for p in reversed(current[n:]):
            p.stopping = True
            p.proc.send_signal(signal.SIGTERM)
        for _ in range(n - len(current)):
            self._start()
        self.peak = max(self.peak, len(self.running()))

    def _start(self) -> None:
        self.started += 1
        name = f"{self.prefix}-{self.started}"
        port = free_port()
        env = {
            **os.environ,
            **self.env,
            "STREAMSCALE_CONSUMER": name,
            "STREAMSCALE_HTTP_PORT": str(port),
            "STREAMSCALE_HTTP_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamscale.consumer"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_preexec(),  # noqa: PLW1509 -- one prctl call, see _PRCTL
            # Own process group: a terminal's Ctrl-C reaches the demo, which stops these in order.
            start_new_session=True,
        )
        self.processes.append(ConsumerProcess(name, port, proc, log))

    def kill_one(self, rng: random.Random) -> str | None:
        """SIGKILL a random replica, as a node failure would; returns its name."""
        candidates = self.running()
        if not candidates:
            return None
        victim = rng.choice(candidates)
        victim.killed = True
        victim.proc.kill()
        self.killed += 1
        return victim.name

    def stop_all(self, grace: float | None = None) -> None:
        """SIGTERM everyone, wait for the drain, SIGKILL what is left after `grace` seconds."""
        for p in self.processes:
            if p.alive:
                p.stopping = True
                p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        for p in self.processes:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                p.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        self._reap()
