"""The repository speaks to an outside reader: no references to the project's private notes."""

from __future__ import annotations

import re
import subprocess

from tests.support.helm import REPO

# Built from parts so that this file does not match itself.
PRIVATE = re.compile("seeds" + r"/\d|seed " + "article|/work/" + "shared", re.IGNORECASE)


def test_no_file_refers_to_private_notes() -> None:
    files = subprocess.run(
        # Tracked files only: scratch files in a working copy are nobody else's business.
        ["git", "-C", str(REPO), "ls-files", "--cached"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    found = []
    for name in files:
        path = REPO / name
        if not path.is_file() or name.endswith(".sum"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if PRIVATE.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert len(files) > 50
    assert not found, "\n".join(found)
