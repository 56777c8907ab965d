"""backlog mode and drainTime mode side by side on the queue model's traces.

Usage: python bench/scaling_sim.py [--target SECONDS] [--backlog-per-replica N]

Each trace (step, ramp, sine, burst, a sink that slows down) runs through the operator's own
policy and rate estimator (`tests/support/queue_model.py`): polls every 5 s, replicas ready 10 s
after they are asked for, 500 entries/s per replica, at most 20 replicas. drainTime runs twice:
seeded with `replicaThroughput` and learning it from scratch. Printed per run: peak backlog, the
longest FIFO wait, the longest time from a backlog's peak to empty, replica-seconds, scale changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from streamscale.operator.scaling import Policy  # noqa: E402
from tests.support.queue_model import CAPACITY, simulate, traces  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=30.0, help="targetDrainSeconds")
    parser.add_argument("--backlog-per-replica", type=int, default=1000)
    args = parser.parse_args(argv)
    backlog = Policy(max_replicas=20, backlog_per_replica=args.backlog_per_replica)
    drain = Policy(max_replicas=20, mode="drainTime", target_drain_seconds=args.target)
    print(
        f"{'trace':10} {'mode':18} {'peak backlog':>12} {'max wait s':>10} {'drain s':>8}"
        f" {'replica-s':>9} {'changes':>7} {'peak replicas':>13}"
    )
    for trace in traces():
        runs = [
            (f"backlog/{args.backlog_per_replica}", simulate(trace, backlog)),
            ("drainTime seeded", simulate(trace, drain, seed_per_replica=CAPACITY)),
            ("drainTime learned", simulate(trace, drain)),
        ]
        base = runs[0][1].replica_seconds
        for label, o in runs:
            ratio = f"{o.replica_seconds / base:5.2f}x"
            print(
                f"{o.trace:10} {label:18} {o.peak_backlog:12,} {o.max_wait_seconds:10.0f}"
                f" {o.drain_seconds:8.0f} {o.replica_seconds:9,} {o.scale_changes:7}"
                f" {o.peak_replicas:13}  replica-s {ratio} of backlog mode"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
