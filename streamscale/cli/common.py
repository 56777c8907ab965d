"""Helpers the CLI's command and logic modules share."""

from __future__ import annotations

from streamscale.core.redis_urls import redacted


def safe_url(url: str) -> str:
    """`url` with any password (the user part's, a Sentinel URL's own) replaced by `***`."""
    return redacted(url)
