"""The package layout keeps its promises."""

import subprocess
import sys

import streamscale.operator
from tests.support.consumers import ROOT


def test_import_operator_from_the_repository_root_is_the_standard_library() -> None:
    code = "import operator, sys; print(operator.__file__); print(operator.eq(1, 1))"
    for argv in (
        [sys.executable, "-c", code],
        [sys.executable, "-m", "tests.support.layout_probe"],
    ):
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        path, eq = out.split()
        assert "/work" not in path or "site-packages" in path or "/lib/python" in path
        assert not path.startswith(str(ROOT / "operator")), path
        assert eq == "True"


def test_our_operator_package_is_streamscale_operator() -> None:
    assert streamscale.operator.__file__ is not None
    assert streamscale.operator.__file__.startswith(str(ROOT / "operator"))
