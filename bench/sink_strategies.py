"""Which PostgreSQL write path should the sink use? Measured, not guessed.

Writes the same 100,000 product rows in batches of 500 through four idempotent strategies
and prints, for each, rows/s and its ratio against row-by-row `executemany` (the baseline),
and the CPU time per row of the client (this process) and of its PostgreSQL backend:
- executemany: `INSERT ... VALUES ($1..$n) ON CONFLICT DO NOTHING`, pipelined by asyncpg;
- unnest:      one `INSERT ... SELECT FROM unnest($1::t[], ...) ON CONFLICT DO NOTHING`;
- copy-temp:   COPY into a temporary table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`;
- copy:        COPY into the table itself, `unnest` for a batch COPY refuses and the 16 after
               it (what the sink does: a batch with a row stored already fails as a whole,
               then goes in with ON CONFLICT DO NOTHING).
Then the same once more with every row stored already (a replay), where `copy` pays for one
failed COPY in 17 batches.

Run from the repository root: `.venv/bin/python bench/sink_strategies.py`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from tests.support.servers import running_postgres

ROWS = 100_000
BATCH = 500
DDL = """
CREATE TABLE products (
    id bigserial PRIMARY KEY, stream_id varchar UNIQUE NOT NULL, sku varchar(64) NOT NULL,
    name varchar NOT NULL, price numeric(12, 2) NOT NULL, url varchar NOT NULL,
    created_at timestamptz NOT NULL
)"""
COLS = "stream_id, sku, name, price, url, created_at"
TYPES = ("varchar", "varchar", "varchar", "numeric", "varchar", "timestamptz")


def rows() -> list[tuple[object, ...]]:
    now = datetime.datetime.now(datetime.UTC)
    return [
        (f"{1700000000000 + n}-0", f"SKU-{n:07d}", f"Product {n}", Decimal("9.99"),
         f"https://shop.example/p/{n}", now)
        for n in range(ROWS)
    ]  # fmt: skip


async def executemany(conn: asyncpg.Connection, batch: list[tuple[object, ...]]) -> None:
    await conn.executemany(
        f"INSERT INTO products ({COLS}) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (stream_id) DO NOTHING",
        batch,
    )


async def unnest(conn: asyncpg.Connection, batch: list[tuple[object, ...]]) -> None:
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(TYPES, 1))
    await conn.execute(
        f"INSERT INTO products ({COLS}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (stream_id) DO NOTHING",
        *zip(*batch, strict=True),
    )


async def copy_temp(conn: asyncpg.Connection, batch: list[tuple[object, ...]]) -> None:
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE products INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("incoming", records=batch, columns=COLS.split(", "))
        await conn.execute(
            f"INSERT INTO products ({COLS}) SELECT {COLS} FROM incoming "
            "ON CONFLICT (stream_id) DO NOTHING"
        )


class Copy:
    """COPY into the table; after a batch with a stored row, `unnest` for the next 16 (the
    sink's COPY_PAUSE_BATCHES: redeliveries come in runs)."""

    def __init__(self) -> None:
        self.paused = 0

    async def __call__(self, conn: asyncpg.Connection, batch: list[tuple[object, ...]]) -> None:
        if self.paused:
            self.paused -= 1
            await unnest(conn, batch)
            return
        try:
            await conn.copy_records_to_table("products", records=batch, columns=COLS.split(", "))
        except asyncpg.exceptions.UniqueViolationError:
            self.paused = 16
            await unnest(conn, batch)


STRATEGIES: dict[str, Callable[[asyncpg.Connection, list[tuple[object, ...]]], Awaitable[None]]]
STRATEGIES = {"executemany": executemany, "unnest": unnest, "copy-temp": copy_temp, "copy": Copy()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    url: str, name: str, data: list[tuple[object, ...]], *, replay: bool = False
) -> tuple[float, float, float]:
    """rows/s, client and backend CPU µs per row; `replay`: every row is stored already."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS products")
        await conn.execute(DDL)
        write = STRATEGIES[name]
        if replay:
            for i in range(0, len(data), BATCH):
                await unnest(conn, data[i : i + BATCH])
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        client, server = time.process_time(), cpu_seconds(backend)
        started = time.perf_counter()
        for i in range(0, len(data), BATCH):
            await write(conn, data[i : i + BATCH])
        elapsed = time.perf_counter() - started
        client, server = time.process_time() - client, cpu_seconds(backend) - server
        assert await conn.fetchval("SELECT count(*) FROM products") == len(data)
        per_row = 1e6 / len(data)
        return len(data) / elapsed, client * per_row, server * per_row
    finally:
        await conn.close()


async def main() -> None:
    data = rows()
    with running_postgres() as pg:
        url = pg.url()
        for replay in (False, True):
            results = {name: await measure(url, name, data, replay=replay) for name in STRATEGIES}
            base = results["executemany"][0]
            print("every row stored already (a replay)" if replay else "new rows")
            print(f"{'strategy':<12} {'rows/s':>10} {'vs executemany':>15} "
                  f"{'client µs/row':>14} {'backend µs/row':>15}")  # fmt: skip
            for name, (rate, client, server) in results.items():
                print(f"{name:<12} {rate:>10,.0f} {rate / base:>14.2f}x {client:>14.2f} "
                      f"{server:>15.2f}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
