"""`make bench` still runs: the consumer benchmark end to end with tiny numbers.

Only that it completes and prints its figures: speed never belongs in a timed test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.consumers import ROOT


@pytest.mark.timeout(90)
def test_consumer_bench_smoke_run_prints_the_ratio_and_the_targets() -> None:
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--only", "consumer", "--quick",
         "--messages", "2000", "--latency-seconds", "2"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=80,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ratio: streamscale / baseline = " in out
    assert "ratio: streamscale / FastStream peer = " in out
    assert "load average" in out
    targets = ("throughput vs baseline", "throughput vs FastStream", "consumer CPU per message")
    for target in (*targets, "consumer peak RSS", "p99 end-to-end"):
        assert target in out
    assert "2,000" in out  # every contender stored every message (checked by the bench)


@pytest.mark.timeout(90)
def test_streamscale_bench_runs_the_checkouts_benchmarks() -> None:
    """`streamscale bench` from an editable install finds bench/run.py, whatever the cwd."""
    streamscale = Path(sys.executable).with_name("streamscale")
    result = subprocess.run(
        [str(streamscale), "bench", "--only", "consumer", "--quick", "--messages", "2000",
         "--no-baseline", "--no-peer", "--no-latency"],
        check=False, cwd="/", capture_output=True, text=True, timeout=80,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "streamscale consume" in result.stdout
