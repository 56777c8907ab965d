"""`make test` and `make demo` on a fresh machine: stop at once with the one command to run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.helm import REPO

SCRIPT = REPO / ".ci" / "prerequisites"


def run(purpose: str, path: Path) -> subprocess.CompletedProcess[str]:
    """The check with PATH limited to `path`: what a machine with only those programs sees."""
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(SCRIPT), purpose],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_bare_machine_gets_the_one_install_command(tmp_path: Path) -> None:
    result = run("test", tmp_path)
    assert result.returncode != 0
    assert "Nothing was run" in result.stderr
    assert "sudo apt-get install -y" in result.stderr
    for package in ("redis-server", "prometheus", "openssl"):
        assert package in result.stderr.split("apt-get install -y", 1)[1], result.stderr


def test_demo_says_it_needs_redis_server(tmp_path: Path) -> None:
    python = shutil.which("python3")
    assert python is not None
    (tmp_path / "python3").symlink_to(python)
    result = run("demo", tmp_path)
    assert result.returncode != 0
    assert "make demo needs programs this machine lacks: redis-server." in result.stderr
    assert "sudo apt-get install -y redis-server\n" in result.stderr


def test_this_machine_has_everything() -> None:
    """The suite runs here, so the check must pass with the real PATH."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here")
    result = subprocess.run(
        [str(SCRIPT), "test"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("target", ["test", "demo"])
def test_make_checks_before_it_installs_or_runs(target: str) -> None:
    recipe = subprocess.run(
        ["make", "-n", "-C", str(REPO), target],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.splitlines()
    commands = [line for line in recipe if not line.startswith("make")]
    assert commands[0] == f".ci/prerequisites {target}", recipe
