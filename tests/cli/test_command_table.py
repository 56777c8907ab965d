"""The lazy command table and the one error-to-exit-code place of `streamscale.cli.main`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.servers import RedisServer

STREAMSCALE = str(Path(sys.executable).parent / "streamscale")
HEAVY = ("kopf", "aiohttp", "sqlmodel", "sqlalchemy", "asyncpg", "aiosqlite")
"""The operator's and the SQL sink's libraries: only `consume`, `operate` and `demo` use them."""
COMMAND_MODULES = {
    "streamscale.cli.commands." + name
    for name in ("bench", "consume", "demo", "dlq", "operate", "produce", "status")
}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STREAMSCALE_", "PYTHON"))}


PROBE = """
import atexit, os, sys
from streamscale.cli.main import main

def record():
    with open(os.environ["MODULES_FILE"], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))

atexit.register(record)
sys.argv[0] = "streamscale"
main()
"""
"""The console script's `main`, recording every module imported by the time the process ends
(`-X importtime` misses what `importlib.import_module` loads, as the command table does)."""


def imported_by(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `streamscale ARGS` as a user does; every module it imported."""
    listing = tmp_path / "modules.txt"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
        env={**clean_env(), "MODULES_FILE": str(listing)},
    )  # fmt: skip
    modules = set(listing.read_text().split())
    assert "streamscale.cli.main" in modules, result.stderr[-2000:]
    return result, modules


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_help_lists_every_command_without_the_heavy_libraries(tmp_path: Path) -> None:
    result, modules = imported_by(tmp_path, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert heavy(modules) == []
    assert modules >= COMMAND_MODULES, "--help imports each command to show its help line"
    assert "streamscale.cli.demo" not in modules and "streamscale.operator" not in modules
    for name in ("consume", "operate", "produce", "status", "dlq", "demo", "bench"):
        assert f"\n  {name} " in result.stdout, result.stdout


def test_produce_imports_only_its_own_command(tmp_path: Path, redis_server: RedisServer) -> None:
    result, modules = imported_by(
        tmp_path,
        "produce",
        "-c",
        "5",
        "--no-progress",
        "--stream",
        "lazy",
        "--redis-url",
        redis_server.url,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert heavy(modules) == []
    assert COMMAND_MODULES & modules == {"streamscale.cli.commands.produce"}
    assert not any(m.startswith(("streamscale.consumer", "streamscale.operator")) for m in modules)


def test_an_unknown_command_is_a_usage_error_naming_it() -> None:
    result = subprocess.run(
        [STREAMSCALE, "consumer"], capture_output=True, text=True, timeout=60, check=False,
        env=clean_env(), cwd="/",
    )  # fmt: skip
    assert result.returncode == 2
    assert "No such command 'consumer'" in result.stderr


def test_ctrl_c_in_a_command_without_its_own_stop_exits_130_with_one_line(
    redis_server: RedisServer,
) -> None:
    """`status --once` sleeps between its two samples: a Ctrl-C there ends it like the others."""
    proc = subprocess.Popen(
        [STREAMSCALE, "status", "--once", "--interval", "60", "--redis-url", redis_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd="/",
    )  # fmt: skip
    try:
        time.sleep(2)  # past start-up and the first sample, into the 60 s wait
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted" and out == ""
