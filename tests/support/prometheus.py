"""Prometheus for the tests: promtool, a real Prometheus server, and the metric-name contract.

Both binaries come from Debian's `prometheus` package (`.ci/run` installs it when promtool is
missing). The server listens on a free 127.0.0.1 port with a temporary config and storage
directory and scrapes only loopback targets.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamscale.consumer import constants as consumer_constants
from streamscale.operator import constants as operator_constants

REPO = Path(__file__).resolve().parents[2]
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
NAME = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
# PromQL words that look like metric names: functions, aggregations, keywords, label matchers.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "min_over_time", "max_over_time", "avg_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "absent", "absent_over_time",
    "clamp_min", "clamp_max", "abs", "ceil", "floor", "round", "vector", "scalar", "time",
    "label_replace", "label_join", "sort", "sort_desc", "changes", "resets", "predict_linear",
    "le", "inf", "nan", "Inf", "NaN",
}  # fmt: skip


def binary(name: str) -> str:
    """The path of promtool or prometheus; fails with the install command when missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install prometheus (Debian's package)")
    return found


def contract_metric_names() -> set[str]:
    """Every metric name the consumer and the operator export, from their constants modules.

    The dashboards and alert rules may use only these. A constant whose Python name ends in
    `_TOTAL` is a counter (prometheus-client appends `_total`); every `*_seconds` name may be a
    histogram, so its series suffixes are allowed too.
    """
    names: set[str] = set()
    for module in (consumer_constants, operator_constants):
        for constant, value in vars(module).items():
            if not (isinstance(value, str) and value.startswith(consumer_constants.METRIC_PREFIX)):
                continue
            if value == consumer_constants.METRIC_PREFIX:
                continue
            name = value + "_total" if constant.endswith("_TOTAL") else value
            names.add(name)
            if name.endswith("_seconds"):
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # ranges
    stripped = re.sub(GROUPING, "", stripped)  # by (...), on (...)
    names = set()
    for match in NAME.finditer(stripped):
        word = match.group(0)
        after = stripped[match.end() :].lstrip()
        if word in PROMQL_WORDS or word.startswith("$") or after.startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusServer:
    """A running Prometheus; `query` answers PromQL through the HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def metric_names(self) -> set[str]:
        return set(self.api("/api/v1/label/__name__/values"))

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("/api/v1/targets")["activeTargets"]
        return active

    def wait_until(self, predicate: Any, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        raise AssertionError(f"Prometheus: {what} not reached in {timeout}s; log:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@contextlib.contextmanager
def running_prometheus(
    jobs: Mapping[str, Sequence[str]],
    *,
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> Iterator[PrometheusServer]:
    """Prometheus scraping `jobs` ({job name: ["127.0.0.1:port", ...]}) on loopback only,
    evaluating `rule_files`."""
    for targets in jobs.values():
        for target in targets:
            assert target.startswith("127.0.0.1:"), "the tests scrape loopback only"
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        root = Path(tmp)
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path.resolve()) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "honor_labels": True, "static_configs": [{"targets": list(t)}]}
                for job, t in jobs.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = root / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        server = PrometheusServer(f"http://127.0.0.1:{port}", process, log)
        try:
            server.wait_until(lambda: _ready(server), "ready", timeout=30)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _ready(server: PrometheusServer) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"prometheus exited {server.process.returncode}:\n{server.tail()}")
    try:
        with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
