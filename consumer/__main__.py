"""`python -m streamscale.consumer`: settings from the environment."""

import sys

from pydantic import ValidationError

from streamscale.consumer.app import run
from streamscale.consumer.settings import ConsumerSettings
from streamscale.core.errors import EXIT_CONFIG, ConfigError


def main() -> int:
    try:
        settings = ConsumerSettings()
    except ValidationError as exc:
        print(f"streamscale consume: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"streamscale consume: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
