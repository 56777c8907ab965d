"""`streamscale demo` end to end: a short run drains, scales out and in, and cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STREAMSCALE = str(Path(sys.executable).parent / "streamscale")


def children(pid: int) -> set[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    env["TMPDIR"] = str(tmp_path)  # a killed demo leaves its directory in pytest's tmp_path
    return env


def test_demo_short_run_stores_or_dead_letters_everything_and_scales(tmp_path):
    result = subprocess.run(
        [STREAMSCALE, "demo", "--count", "3000", "--poison-ratio", "0.01",
         "--backlog-per-replica", "1000", "--max-replicas", "3", "--no-live", "--json"],
        capture_output=True, text=True, timeout=110, env=demo_env(tmp_path), cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert summary["crashed"] == []
    assert summary["produced"] == 3000 and summary["drained"] is True
    assert summary["stored"] + summary["dead_lettered"] == 3000
    assert summary["lost"] == 0 and summary["stored_and_dead_lettered"] == 0
    assert summary["dead_lettered"] == summary["poison"] > 0
    assert summary["backlog_left"] == 0
    # 3,000 entries at 1,000 per replica ask for 3 replicas: the first decision sees the whole
    # burst, however fast the machine (a quiet one once drained it with one replica).
    assert summary["peak_replicas"] == 3
    assert any("-> 0" in line for line in summary["scale_events"])  # scaled back in
    assert summary["duration_seconds"] < 100


def test_demo_with_chaos_and_postgresql_loses_nothing(tmp_path, database_url):
    result = subprocess.run(
        [STREAMSCALE, "demo", "--count", "12000", "--rate", "3000", "--chaos", "1.5",
         "--backlog-per-replica", "1000", "--max-replicas", "3", "--no-live", "--json",
         "--database-url", database_url],
        capture_output=True, text=True, timeout=110, env=demo_env(tmp_path), cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert summary["drained"] and summary["lost"] == 0
    assert summary["stored"] + summary["dead_lettered"] >= 12000
    assert len(summary["killed"]) >= 1


def test_demo_duration_stops_early_and_accounts_for_what_is_left(tmp_path):
    result = subprocess.run(
        [STREAMSCALE, "demo", "--count", "100000", "--rate", "8000", "--max-replicas", "1",
         "--backlog-per-replica", "100000", "--duration", "3", "--no-live", "--json"],
        capture_output=True, text=True, timeout=60, env=demo_env(tmp_path), cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert not summary["drained"] and summary["lost"] == 0
    assert 0 < summary["produced"] < 100000
    done = summary["stored"] + summary["dead_lettered"]
    assert done <= summary["produced"] <= done + summary["backlog_left"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_demo_stops_every_child(tmp_path, signum):
    proc = subprocess.Popen(
        [STREAMSCALE, "demo", "--count", "500000", "--rate", "20000", "--no-live"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=demo_env(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        # redis-server and at least one consumer process are running.
        assert wait_for(lambda: len(children(proc.pid)) >= 2, 30)
        kids = children(proc.pid)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in out + err
    assert wait_for(lambda: not any(alive(pid) for pid in kids), 10)


def test_a_killed_demo_leaves_no_process_behind(tmp_path):
    proc = subprocess.Popen(
        [STREAMSCALE, "demo", "--count", "500000", "--rate", "20000", "--no-live"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=demo_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(children(proc.pid)) >= 2, 30)
        kids = children(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    # The parent-death signal reaches redis-server and the consumers.
    assert wait_for(lambda: not any(alive(pid) for pid in kids), 30)


def test_demo_refuses_what_can_never_work_up_front_without_a_password(tmp_path, postgres_server):
    secret = "never-print-this-pw"
    zero = subprocess.run(
        [STREAMSCALE, "demo", "--count", "0", "--no-live"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=demo_env(tmp_path),
        cwd=tmp_path,
    )
    assert zero.returncode == 2 and "--count" in zero.stderr, zero.stderr

    user = postgres_server.user
    unusable = postgres_server.url().replace(f"{user}@", f"{user}:{secret}@")
    unusable = unusable.replace(f":{postgres_server.port}/", ":9/")  # nothing listens there
    bad = subprocess.run(
        [STREAMSCALE, "demo", "--count", "100", "--no-live", "--json", "--database-url", unusable],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=demo_env(tmp_path),
        cwd=tmp_path,
    )
    assert bad.returncode == 2, bad.stderr
    assert "cannot be used" in bad.stderr and "Traceback" not in bad.stderr
    assert secret not in bad.stderr + bad.stdout


def test_demo_never_prints_the_database_password(tmp_path, postgres_server):
    secret = "never-print-this-pw"
    user = postgres_server.user
    url = postgres_server.url().replace(f"{user}@", f"{user}:{secret}@")  # trust auth ignores it
    for output in (["--json"], []):
        result = subprocess.run(
            [
                STREAMSCALE,
                "demo",
                "--count",
                "50",
                "--no-live",
                "--database-url",
                url,
                "--duration",
                "1",
                *output,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=110,
            env=demo_env(tmp_path),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr + result.stdout
        assert secret not in result.stdout + result.stderr
        assert "***" in result.stdout


def test_consumers_that_keep_crashing_end_the_demo_with_one_message(tmp_path):
    """The scaler's verdict, not a crash of its task: one `Error:` line, no traceback, logs kept."""
    env = demo_env(tmp_path)
    env["STREAMSCALE_BATCH_SIZE"] = "0"  # every consumer refuses its settings and exits 2
    result = subprocess.run(
        [STREAMSCALE, "demo", "--count", "200", "--no-live"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "consumer processes keep failing" in errors[0], result.stderr
    assert "batch_size" in errors[0] and "Traceback" not in result.stderr
    kept = [d for d in tmp_path.iterdir() if d.name.startswith("streamscale-demo-")]
    assert len(kept) == 1 and sorted(kept[0].glob("consumer-*.log")), "the logs are kept"
