"""Summarize a py-spy `--format raw` profile (collapsed stacks) of the consumer.

Usage: python bench/consumer_profile.py .build/bench-logs/consumer-throughput.pyspy.txt [-n 25]
Prints: samples by area (the leaf frame's package: redis parsing, pydantic, asyncpg, metrics,
event loop, ...), then the top functions by self and by inclusive samples.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")

# First match wins, on the frame's file path; the innermost matching frame names the area.
AREAS = [
    ("redis-py (commands, connection, parsing)", ("redis/",)),
    ("hiredis", ("hiredis",)),
    ("asyncpg (encoding, protocol, pool)", ("asyncpg/",)),
    ("pydantic validation", ("pydantic", "consumer/sinks/rows.py")),
    ("prometheus metrics", ("prometheus_client/", "consumer/metrics.py")),
    ("decode (orjson, messages.py)", ("consumer/messages.py", "orjson")),
    ("sink (sql.py)", ("consumer/sinks/sql.py",)),
    ("consumer loop (reading, processing, claiming, core streams and tasks)",
     ("consumer/processing.py", "consumer/reading.py", "consumer/claiming.py",
      "core/streams.py", "core/tasks.py", "core/backoff.py")),
    ("HTTP server", ("core/serving.py", "aiohttp/")),
    ("event loop (asyncio / uvloop)", ("asyncio/", "uvloop/")),
]  # fmt: skip


def frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for raw in stack.split(";"):
        m = FRAME.match(raw.strip())
        out.append((m["func"], m["file"]) if m else (raw.strip(), ""))
    return out


def area(stack: list[tuple[str, str]]) -> str:
    for func, file in reversed(stack):
        for name, needles in AREAS:
            if any(n in file or n in func for n in needles):
                return name
    return "other"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("-n", type=int, default=25)
    args = p.parse_args(argv)
    areas: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        stack = frames(stack_text)
        total += count
        areas[area(stack)] += count
        leaf = stack[-1]
        self_[f"{leaf[0]} ({leaf[1]})"] += count
        for name in {f"{f} ({file})" for f, file in stack}:
            inclusive[name] += count
    print(f"{total} samples (CPU-busy only)\n\nby area (innermost known frame):")
    for name, count in areas.most_common():
        print(f"  {100 * count / total:5.1f}%  {name}")
    print(f"\ntop {args.n} by self samples:")
    for name, count in self_.most_common(args.n):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print(f"\ntop {args.n} by inclusive samples:")
    for name, count in inclusive.most_common(args.n):
        print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
