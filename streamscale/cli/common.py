"""Helpers the CLI's command and logic modules share."""

from __future__ import annotations

import urllib.parse


def safe_url(url: str) -> str:
    """`url` with any password replaced by `***`, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url
