"""Helpers to run real consumer processes and feed them, as a user would."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from tests.support.servers import free_port, http_get

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:  # fmt: skip
    """Poll `predicate` until truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def product(n: int) -> dict[str, Any]:
    """The product payload of `examples.models:Product`."""
    return {
        "sku": f"SKU-{n:07d}",
        "name": f"Product {n}",
        "price": f"{(n % 1000) + 0.99:.2f}",
        "url": f"https://shop.example/p/{n}",
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }


def produce(client: redis.Redis, stream: str, payloads: Iterable[dict[str, Any] | bytes],
            chunk: int = 2000) -> list[str]:  # fmt: skip
    """XADD each payload as JSON in `data` (bytes as they are), pipelined; the entry IDs."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    pending = 0
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else json.dumps(payload)
        pipe.xadd(stream, {"data": data})
        pending += 1
        if pending >= chunk:
            ids += [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]
            pending = 0
    if pending:
        ids += [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]
    return ids


class ConsumerProcess:
    """`python -m streamscale.consumer` in a subprocess with STREAMSCALE_* settings.

    It runs in the repository root, so `-m` puts the root on sys.path and `tests.support.models:...`
    imports; PYTHONPATH must not point there (it would shadow the standard `operator`).
    """

    def __init__(self, **settings: Any) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "STREAMSCALE_HTTP_PORT": str(self.port),
            "STREAMSCALE_HTTP_HOST": "127.0.0.1",
            "STREAMSCALE_LOG_FORMAT": "console",
            "STREAMSCALE_CLAIM_INTERVAL_MS": "500",
        }
        for key, value in settings.items():
            self.env[f"STREAMSCALE_{key.upper()}"] = str(value)
        self.proc: subprocess.Popen[bytes] | None = None
        # A name of its own: ports come back, and appending to the log of an earlier consumer
        # on the same port (this run's or an earlier run's) showed its lines as this one's.
        self.log = ROOT / ".build" / "test-logs" / f"consumer-{self.port}-{uuid.uuid4().hex}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)

    def start(self, wait_ready: bool = True) -> ConsumerProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamscale.consumer"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        if wait_ready:
            wait_until(self.ready, 30, what=f"consumer on :{self.port} to be ready")
        return self

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"consumer exited with {self.proc.returncode}:\n{self.output()}")
        return self.get("/readyz")[0] == 200

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)
