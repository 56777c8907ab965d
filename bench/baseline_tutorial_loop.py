"""The baseline: a straightforward redis-py + SQLModel consumer loop, the kind the tutorials show.

Three worker coroutines share one redis-py asyncio client (`decode_responses=True`); each does
XREADGROUP COUNT 100 BLOCK 5000, `json.loads` of the `data` field, builds SQLModel ORM objects,
`session.add_all` and one commit per batch on an `AsyncSession` (postgresql+asyncpg), then XACK
and an XTRIM to cap the stream. One adaptation, needed to store into the same table as the
contender (`examples.models:Product`): `stream_id` is set to the entry ID (the tutorials' tables
have no such column; ours must, so that the streamscale consumer can be idempotent, and both
contenders pay for its unique index).
The loop's per-batch `print`s stay (the bench sends them to a log file).

Run by bench/consumer_bench.py as a subprocess; SIGTERM stops it
(a signal handler sets a shutdown flag).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

sys.path.append(str(Path(__file__).resolve().parent.parent))  # examples.models, after stdlib

from examples.models import Product

GROUP_NAME = "inserters"
WORKER_NAME_PREFIX = "worker"
NUM_WORKERS = 3
MAX_STREAM_LENGTH = 10_000_000  # the loop leaves it open; large enough never to drop unread

STREAM_NAME = "products"
STREAM_MODEL_MAP: dict[str, type] = {}
STREAMS: list[str] = []

redis_conn: redis.Redis
db_engine: Any = None
AsyncSessionLocal: async_sessionmaker[AsyncSession]
shutdown_event = asyncio.Event()
running_tasks: list[asyncio.Task[None]] = []


async def setup_consumer_groups() -> None:
    for stream in STREAMS:
        try:
            await redis_conn.xgroup_create(stream, GROUP_NAME, id="0", mkstream=True)
            print(f"Created group '{GROUP_NAME}' on stream '{stream}'.")
        except redis.ResponseError as e:
            # BUSYGROUP == already exists -> safe to ignore
            if "BUSYGROUP" in str(e):
                pass
            else:
                raise


async def process_messages(consumer_name: str, messages: Any) -> int:
    if not messages:
        return 0

    bucket: dict[type, list[Any]] = {Product: []}
    ack_success: list[str] = []
    ack_malformed: list[str] = []

    for stream, entries in messages:
        model_cls = STREAM_MODEL_MAP.get(stream)

        if model_cls is None:
            print(f"Unknown stream '{stream}' - skipping.")
            continue

        for entry_id, fields in entries:
            raw = fields.get("data")

            if raw is None:
                print(f"{entry_id}: missing 'data' field, not ACKing.")
                ack_malformed.append(entry_id)
                continue

            try:
                data = json.loads(raw)
                data["created_at"] = datetime.fromisoformat(data["created_at"])
                data["stream_id"] = entry_id

                bucket[model_cls].append(model_cls(**data))
                ack_success.append(entry_id)

            except Exception as e:
                print(f"{entry_id}: parse/validation error: {e} - skipping.")
                ack_malformed.append(entry_id)

    total_inserted = sum(len(entries) for entries in bucket.values())

    if total_inserted:
        print(f"Inserting batch of {total_inserted} objects into DB...")

        try:
            async with AsyncSessionLocal() as session:
                for obj in bucket.values():
                    session.add_all(obj)

                await session.commit()

            print("DB commit successful.")

        except Exception as e:
            print(f"DB commit failed - nothing has been ACKed. ({e})")
            ack_success.clear()
            total_inserted = 0

    ids_to_ack = ack_malformed + ack_success

    if ids_to_ack:
        try:
            await redis_conn.xack(
                *([stream for stream in STREAM_MODEL_MAP][0:1]), GROUP_NAME, *ids_to_ack
            )

        except Exception:
            print(f"Failed to ACK {len(ids_to_ack)} messages.")

    try:
        for stream in STREAM_MODEL_MAP:
            trimmed = await redis_conn.xtrim(stream, maxlen=MAX_STREAM_LENGTH, approximate=False)

            if trimmed:
                print(f"XTRIM {stream}: removed {trimmed} old entries.")
    except Exception:
        print("XTRIM failed.")

    return total_inserted


async def run_worker(consumer_name: str, shutdown_event: asyncio.Event) -> None:
    await setup_consumer_groups()

    try:
        while not shutdown_event.is_set():
            try:
                response = await redis_conn.xreadgroup(
                    GROUP_NAME,
                    consumer_name,
                    {STREAM_NAME: ">"},
                    count=100,  # batch of 100
                    block=5000,  # block reads for 5s
                )
                if response:
                    await process_messages(consumer_name, response)

            except Exception as e:
                print(f"Unhandled error in worker loop; continuing. ({e})")
                await asyncio.sleep(2)

    finally:
        print("Exiting worker.")


def handle_shutdown_signal(sig: int, frame: Any) -> None:
    if not shutdown_event.is_set():
        print(f"Received signal {sig}. Initiating graceful shutdown...")
        shutdown_event.set()

    else:
        print(f"Received signal {sig} again. Shutdown in progress.")


async def main() -> None:
    loop = asyncio.get_running_loop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle_shutdown_signal, sig, None)

    hostname = socket.gethostname()

    for i in range(NUM_WORKERS):
        consumer_name = f"{WORKER_NAME_PREFIX}-{hostname}-{i + 1}"

        task = asyncio.create_task(
            run_worker(consumer_name, shutdown_event), name=f"Worker-{consumer_name}"
        )
        running_tasks.append(task)

    await shutdown_event.wait()

    timeout_seconds = 30.0

    try:
        _done, pending = await asyncio.wait(running_tasks, timeout=timeout_seconds)

        if pending:
            for task in pending:
                task.cancel()

            await asyncio.gather(*pending, return_exceptions=True)

        else:
            print("All worker tasks completed gracefully.")

    except Exception:
        print("An error occurred while waiting for worker tasks.")

    try:
        await redis_conn.aclose()
        print("Closed Redis connection.")
    except Exception as e:
        print(f"Error closing Redis connection: {e}")

    try:
        if db_engine:
            await db_engine.dispose()
    except Exception as e:
        print(f"Error disposing database engine: {e}")

    print("Application shutdown complete.")


def configure(argv: list[str] | None = None) -> None:
    """Such loops read these from the environment; the bench passes them as arguments."""
    global redis_conn, db_engine, AsyncSessionLocal, STREAM_NAME, STREAM_MODEL_MAP, STREAMS  # noqa: PLW0603
    global GROUP_NAME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--database-url", required=True, help="postgresql+asyncpg://...")
    parser.add_argument("--stream", default=STREAM_NAME)
    parser.add_argument("--group", default=GROUP_NAME)
    args = parser.parse_args(argv)
    STREAM_NAME, GROUP_NAME = args.stream, args.group
    STREAM_MODEL_MAP = {STREAM_NAME: Product}
    STREAMS = [STREAM_NAME]
    # redis-py 8 added a default socket timeout of 5 s, which the loop's BLOCK 5000 runs into
    # on an idle stream; older redis-py had none.
    redis_conn = redis.Redis.from_url(args.redis_url, decode_responses=True, socket_timeout=None)
    db_engine = create_async_engine(args.database_url)
    AsyncSessionLocal = async_sessionmaker(
        bind=db_engine, class_=AsyncSession, expire_on_commit=False
    )


if __name__ == "__main__":
    configure()
    asyncio.run(main())
