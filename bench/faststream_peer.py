"""The peer users would pick instead: a FastStream batch subscriber writing with asyncpg.

A FastStream (`faststream[redis]`) `StreamSub` with `batch=True` on the consumer group reads up to
500 entries per XREADGROUP, the handler parses each entry's JSON `data` field, and writes the
whole batch with one asyncpg `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING` into the
same typed table (`examples.models:Product`, `stream_id` = the entry ID). FastStream acks the
batch when the handler returns, i.e. after the insert committed.

Run by bench/consumer_bench.py as a subprocess; SIGTERM stops the FastStream app.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
from decimal import Decimal
from typing import Any

import asyncpg
from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage

BATCH = 500
INSERT = """
INSERT INTO product (stream_id, sku, name, price, url, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[],
                     $6::timestamp[])
ON CONFLICT (stream_id) DO NOTHING
"""


def row(entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[Any, ...]:
    """One table row from a stream entry: the JSON of its `data` field, typed."""
    data = json.loads(fields[b"data"])
    created = datetime.datetime.fromisoformat(data["created_at"])
    # The column is `timestamp` (SQLModel's default for a datetime): UTC without the zone.
    created = created.astimezone(datetime.UTC).replace(tzinfo=None)
    return (
        entry_id.decode(), data["sku"], data["name"], Decimal(data["price"]), data["url"], created,
    )  # fmt: skip


def build(redis_url: str, stream: str, group: str, database_url: str) -> FastStream:
    broker = RedisBroker(redis_url)
    app = FastStream(broker)
    pool: dict[str, asyncpg.Pool] = {}

    @app.on_startup
    async def connect() -> None:
        pool["db"] = await asyncpg.create_pool(database_url, min_size=1, max_size=2)

    @app.after_shutdown
    async def disconnect() -> None:
        await pool["db"].close()

    @broker.subscriber(
        stream=StreamSub(stream, group=group, consumer="faststream", batch=True, max_records=BATCH)
    )
    async def store(msg: RedisBatchStreamMessage) -> None:
        rows = [
            row(entry_id, fields)
            for entry_id, fields in zip(
                msg.raw_message["message_ids"], msg.raw_message["data"], strict=True
            )
        ]
        await pool["db"].execute(INSERT, *map(list, zip(*rows, strict=True)))

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--database-url", required=True, help="postgresql://...")
    args = p.parse_args()
    asyncio.run(build(args.redis_url, args.stream, args.group, args.database_url).run())


if __name__ == "__main__":
    main()
