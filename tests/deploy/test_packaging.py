"""pyproject.toml as the build backend reads it: `pip install -e .` must print no deprecation."""

from __future__ import annotations

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

from tests.support.helm import REPO


def test_pyproject_applies_without_deprecation_warnings() -> None:
    """pytest turns warnings into errors, so a deprecated field (a license table) fails here."""
    distribution = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert distribution.metadata.license_expression == "Apache-2.0"
    assert distribution.metadata.name == "streamscale"
