"""A producer of product rows for `examples.models:Product`: one XADD each, or pipelined.

    python examples/producer.py --count 10000 --bulk

Stream mode sends one XADD per round trip (lowest latency per message); bulk mode pipelines
them (far higher throughput). The payload is JSON in the `data` field, the convention the
consumer decodes. `streamscale produce` does the same with templates, rate and progress bar.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import time

from redis.asyncio import Redis


def product(n: int) -> dict[str, object]:
    return {
        "sku": f"SKU-{n:08d}",
        "name": f"Product {n}",
        "price": round(random.uniform(0.5, 500.0), 2),
        "url": f"https://shop.example.com/p/{n}",
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--stream", default=os.environ.get("STREAMSCALE_STREAM", "products"))
    parser.add_argument("--bulk", action="store_true", help="Pipeline 500 XADDs per round trip.")
    parser.add_argument(
        "--redis-url", default=os.environ.get("STREAMSCALE_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    redis = Redis.from_url(args.redis_url)
    started = time.perf_counter()
    try:
        if args.bulk:
            for start in range(0, args.count, 500):
                async with redis.pipeline(transaction=False) as pipe:
                    for n in range(start, min(start + 500, args.count)):
                        pipe.xadd(args.stream, {"data": json.dumps(product(n))})
                    await pipe.execute()
        else:
            for n in range(args.count):
                await redis.xadd(args.stream, {"data": json.dumps(product(n))})
    finally:
        await redis.aclose()
    seconds = time.perf_counter() - started
    mode = "bulk" if args.bulk else "stream"
    print(f"pushed {args.count} products to {args.stream!r} in {seconds:.2f}s ({mode} mode)")


if __name__ == "__main__":
    asyncio.run(main())
