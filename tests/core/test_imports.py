"""`module:attr` loading: every way a path can be wrong ends in a ConfigError naming the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from streamscale.core.errors import ConfigError
from streamscale.core.imports import import_object


def test_a_valid_path_with_dots_after_the_colon_loads_the_attribute() -> None:
    assert import_object("json:JSONDecoder.decode", "STREAMSCALE_HANDLER") is (
        json.JSONDecoder.decode
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("json.dumps", "is not an import path: write it as 'package.module:Name'"),
        (":dumps", "is not an import path"),
        ("json:", "is not an import path"),
        ("no_such_module_here:x", "cannot import module 'no_such_module_here'"),
        ("json:nope", "module 'json' has no attribute 'nope'"),
    ],
)
def test_a_wrong_path_names_the_setting_and_what_to_do(path: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="STREAMSCALE_MODEL") as info:
        import_object(path, "STREAMSCALE_MODEL")
    assert expected in str(info.value)


def test_a_module_failing_at_import_time_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_user_module.py").write_text("def handle(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing 'broken_user_module' failed: SyntaxError"):
        import_object("broken_user_module:handle", "STREAMSCALE_HANDLER")
    sys.modules.pop("broken_user_module", None)
