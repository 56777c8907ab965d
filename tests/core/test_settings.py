"""The base settings every process shares: sources, refusals, and no secret in any error."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from streamscale.consumer.settings import ConsumerSettings
from streamscale.core.errors import ConfigError
from streamscale.core.settings import ClientSettings
from streamscale.operator.settings import OperatorSettings

PASSWORD = "s3cret-never-shown"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMSCALE_SECRETS_DIR", raising=False)
    monkeypatch.delenv("STREAMSCALE_REDIS_URL", raising=False)
    monkeypatch.delenv("STREAMSCALE_LOG_LEVEL", raising=False)


@pytest.mark.parametrize("settings_class", [ConsumerSettings, OperatorSettings, ClientSettings])
def test_a_secrets_dir_is_read_when_set_after_import(
    settings_class: type[ClientSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "streamscale_redis_url").write_text("redis://db.example:6390/2\n")
    monkeypatch.setenv("STREAMSCALE_SECRETS_DIR", str(tmp_path))
    url = settings_class().redis_url
    assert url is not None and url.get_secret_value() == "redis://db.example:6390/2"


@pytest.mark.parametrize("settings_class", [ConsumerSettings, OperatorSettings, ClientSettings])
def test_a_secrets_dir_that_does_not_exist_is_a_config_error(
    settings_class: type[ClientSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCALE_SECRETS_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(ConfigError, match=r"STREAMSCALE_SECRETS_DIR=.*is not a directory"):
        settings_class()


@pytest.mark.parametrize("settings_class", [ConsumerSettings, OperatorSettings, ClientSettings])
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"redis_url": f"http://user:{PASSWORD}@host:6379/0"}, "not a Redis URL"),
        ({"redis_url": f"redis://user:{PASSWORD}/x@host:6379/0"}, "not a port number"),
        ({"log_level": "LOUD"}, "not a log level"),
    ],
)
def test_bad_values_are_refused_without_quoting_them(
    settings_class: type[ClientSettings], values: dict[str, str], expected: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        settings_class(**values)
    assert expected in str(info.value)
    assert PASSWORD not in str(info.value)
    assert "LOUD" not in str(info.value)


def test_log_levels_are_accepted_in_any_case() -> None:
    assert OperatorSettings(log_level="debug").log_level == "DEBUG"
