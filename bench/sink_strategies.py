"""Which PostgreSQL write path should the sink use? Measured, not guessed.

Writes the same 100,000 product rows in batches of 500 through three idempotent strategies
and prints rows/s for each and its ratio against row-by-row `executemany` (the baseline):
- executemany: `INSERT ... VALUES ($1..$n) ON CONFLICT DO NOTHING`, pipelined by asyncpg;
- unnest:      one `INSERT ... SELECT FROM unnest($1::t[], ...) ON CONFLICT DO NOTHING`;
- copy:        COPY into a temporary table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`.

Run from the repository root: `.venv/bin/python bench/sink_strategies.py`.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
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


async def copy(conn: asyncpg.Connection, batch: list[tuple[object, ...]]) -> None:
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


async def measure(url: str, name: str, data: list[tuple[object, ...]]) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS products")
        await conn.execute(DDL)
        write = {"executemany": executemany, "unnest": unnest, "copy": copy}[name]
        started = time.perf_counter()
        for i in range(0, len(data), BATCH):
            await write(conn, data[i : i + BATCH])
        elapsed = time.perf_counter() - started
        assert await conn.fetchval("SELECT count(*) FROM products") == len(data)
        return len(data) / elapsed
    finally:
        await conn.close()


async def main() -> None:
    data = rows()
    with running_postgres() as pg:
        url = pg.url()
        rates = {name: await measure(url, name, data) for name in ("executemany", "unnest", "copy")}
    base = rates["executemany"]
    print(f"{'strategy':<12} {'rows/s':>10} {'vs executemany':>15}")
    for name, rate in rates.items():
        print(f"{name:<12} {rate:>10,.0f} {rate / base:>14.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
