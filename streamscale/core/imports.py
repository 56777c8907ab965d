"""Loading the user's `module:attribute` paths (models, handlers) with fix-it messages."""

from __future__ import annotations

import importlib
from typing import Any

from streamscale.core.errors import ConfigError


def import_object(path: str, what: str) -> Any:
    """The object `path` names (`package.module:Name`, dots allowed after the colon).

    `what` names the setting in messages (e.g. `STREAMSCALE_MODEL`). Raises ConfigError saying
    what is wrong and what to do; a user's module failing at import time is reported the same
    way, since a traceback through importlib hides which setting caused it.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{what} {path!r} is not an import path: write it as 'package.module:Name'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {path!r}: cannot import module {module_name!r} ({exc}); check the"
            " spelling, and that the module is installed or importable from here (run from the"
            " directory that contains it, or set PYTHONPATH)"
        ) from exc
    except Exception as exc:  # the user's module failing at import time (SyntaxError, ...)
        raise ConfigError(
            f"{what} {path!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return target
