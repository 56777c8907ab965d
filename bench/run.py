"""`make bench`: the consumer benchmark, then the operator benchmark when there is one.

Usage: python bench/run.py [--messages N] [--quick] [--only consumer|operator] [consumer options]
(see `python bench/consumer_bench.py --help`). The operator benchmark runs as a subprocess,
given `--quick` when this run is quick.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import consumer_bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--only", choices=("consumer", "operator"))
    parser.add_argument("--quick", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
    code = 0
    if args.only != "operator":
        code = consumer_bench.main([*rest, *(["--quick"] if args.quick else [])])
    if args.only != "consumer":
        operator_bench = BENCH / "operator_bench.py"
        if operator_bench.exists():
            print("\n== operator benchmark ==", flush=True)
            cmd = [sys.executable, str(operator_bench), *(["--quick"] if args.quick else [])]
            code = subprocess.call(cmd, cwd=BENCH.parent) or code
        else:
            print("\n(no bench/operator_bench.py yet: operator benchmark skipped)")
    return code


if __name__ == "__main__":
    sys.exit(main())
