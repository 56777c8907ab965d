"""SQL sinks: PostgreSQL through asyncpg (the production path) and SQLite (the embedded default).

Every write is idempotent, so a redelivered message never makes a second row. On PostgreSQL a
batch is first sent with binary COPY, the cheapest way in for both sides; a batch of messages
delivered before (`Message.redelivered`), and one COPY cannot take (a row is stored already or
is invalid), goes through `INSERT ... ON CONFLICT (<identity>) DO NOTHING`, which SQLite always
uses. When a batch fails because of one row (a constraint, a value out of range), the batch is
bisected until the offending rows are isolated: they are rejected (dead-lettered), the rest
commits. Failures that are not the rows' fault (connection lost, server restarting) raise
TransientError and the whole batch is retried later.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions._base as asyncpg_base
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import SQLModel

from streamscale.consumer.messages import Message
from streamscale.consumer.sinks.base import SinkResult
from streamscale.consumer.sinks.column_types import (
    MODEL_TYPE_SQL,
    TABLE_TYPES_SQL,
    Mismatch,
    PgType,
    cannot_store,
    copies_alike,
    mismatched_types_error,
    silent_change,
)
from streamscale.consumer.sinks.models import (
    OWNERS_TABLE,
    check_owner,
    check_streams,
    conflict_columns,
    owners,
    shares_identity,
)
from streamscale.consumer.sinks.rows import Row, RowBuilder
from streamscale.core.errors import ConfigError, TransientError
from streamscale.core.streams import StreamId

logger = logging.getLogger(__name__)

Insert = Callable[[Sequence[Row]], Awaitable[None]]


class RowError(Exception):
    """These rows, as a set, cannot be stored (a constraint or a value); bisect to find which."""


def missing_columns_error(
    table: str, missing: dict[str, str], *, runtime: bool = False
) -> ConfigError:
    """The table lacks model columns: say which, and the statements that add them."""
    alters = "\n".join(
        f"    ALTER TABLE {table} ADD COLUMN {name} {type_};" for name, type_ in missing.items()
    )
    when = "now lacks" if runtime else "lacks"
    return ConfigError(
        f"table {table} {when} the model's column(s) {', '.join(missing)}, so no message can be "
        "stored; nothing was acked, the messages stay pending. Add them:\n"
        f"{alters}\nor set STREAMSCALE_ADD_MISSING_COLUMNS=true to have them added (nullable) "
        "at start-up, then start the consumer again."
    )


async def insert_isolating(
    insert: Insert, rows: Sequence[Row], ids: Sequence[StreamId]
) -> dict[StreamId, str]:
    """Insert `rows`; on RowError bisect and return the rows that fail on their own."""
    try:
        await insert(rows)
        return {}
    except RowError as exc:
        if len(rows) == 1:
            return {ids[0]: str(exc.__cause__ or exc)}
    mid = len(rows) // 2
    failed = await insert_isolating(insert, rows[:mid], ids[:mid])
    failed.update(await insert_isolating(insert, rows[mid:], ids[mid:]))
    return failed


class SqlSinkBase:
    """What both SQL sinks share: row building, isolation, metrics-free write()."""

    builder: RowBuilder

    async def write(self, messages: list[Message]) -> SinkResult:
        rows, ids, rejected = self.builder.build(messages)
        if rows:
            fresh = not any(m.redelivered for m in messages)
            insert = self._insert if fresh else functools.partial(self._insert, fresh=False)
            rejected.update(await insert_isolating(insert, rows, ids))
        return SinkResult(rejected=rejected)

    async def _insert(self, rows: Sequence[Row], *, fresh: bool = True) -> None:
        """Insert `rows`, skipping the ones stored already. `fresh`: none was delivered before,
        so a way in that fails on a stored row (COPY) is worth trying."""
        raise NotImplementedError


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme.split("+")[0] in ("postgresql", "postgres")


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes libpq URLs without a SQLAlchemy driver suffix."""
    scheme, sep, rest = url.partition("://")
    return "postgresql" + sep + rest if scheme.startswith("postgres") else url


def _array_element_type(column: sa.Column[Any], dialect: Any) -> str:
    """The SQL type to cast a column's parameter array to.

    Strings go as `text`: an explicit cast to `varchar(n)` would silently truncate a value that
    is too long, while the INSERT's own assignment to the column rejects it (and the row is
    dead-lettered, as on SQLite).
    """
    base = column.type.impl_instance if isinstance(column.type, sa.TypeDecorator) else column.type
    if isinstance(base, sa.String) and not isinstance(base, sa.Enum):
        return "text"
    return str(column.type.compile(dialect=dialect))


_PERMANENT_PG = (
    asyncpg.exceptions.IntegrityConstraintViolationError,  # class 23
    asyncpg.exceptions.DataError,  # class 22: out of range, too long, bad text representation
    asyncpg_base.DataError,  # a value asyncpg itself cannot encode for the column
)


_COPY_REFUSED = (
    asyncpg.exceptions.InsufficientPrivilegeError,  # COPY reads the columns first (SELECT)
    asyncpg.exceptions.FeatureNotSupportedError,  # row-level security
    asyncpg.exceptions.WrongObjectTypeError,  # a view
    asyncpg.exceptions.UnsupportedClientFeatureError,
)
"""COPY failing where an INSERT may work (the first batch tells): the batch is inserted, and
when that works, COPY is not tried again. So does asyncpg's InternalClientError for a column
type without a binary encoder (`_NO_BINARY_ENCODER`); any other InternalClientError means the
connection is broken."""

_NO_BINARY_ENCODER = "no binary format encoder"


COPY_PAUSE_BATCHES = 16
"""Writes that use INSERT after a COPY failed on its rows. Stored rows delivered as new come in
runs (a Redis failover that lost the deliveries but not the writes), isolating an invalid row
takes a write per bisection step, and a failed COPY costs its encoding and the rows it wrote
before failing, dead in the table until vacuumed (asyncpg also cancels it on a connection of its
own when a value cannot be encoded)."""

_UNENCODABLE = (TypeError, ValueError, ArithmeticError)
"""What asyncpg's encoders raise for a value COPY cannot send, e.g. a time that leaves the
calendar when moved to UTC (INSERT wraps the same errors in asyncpg's DataError)."""


_SCHEMA_PG = (
    asyncpg.exceptions.UndefinedColumnError,  # 42703: a model column is gone
    asyncpg.exceptions.DatatypeMismatchError,  # 42804: a column's type cannot take the values
    asyncpg.exceptions.CannotCoerceError,  # 42846
    asyncpg.exceptions.FeatureNotSupportedError,  # 0A000: e.g. an INSERT rule added since
)
"""The table no longer fits the model (altered under a running consumer): no retry can help."""

_CANNOT_STORE_PG = (
    asyncpg.exceptions.DatatypeMismatchError,
    asyncpg.exceptions.CannotCoerceError,
)


_TRANSIENT_PG = (
    TimeoutError,
    OSError,
    asyncpg.exceptions.PostgresError,  # anything else: server restarting, table missing, ...
    asyncpg.exceptions.InterfaceError,
    # A connection the server dropped mid-error (a restart) cannot be reset when the pool takes
    # it back: "cannot switch to state 15; another operation (2) is in progress". The pool
    # terminates it; the batch is retried on a fresh one.
    asyncpg.exceptions.InternalClientError,
)


PING_TIMEOUT = 0.8
"""Seconds `/readyz` waits for PostgreSQL."""

_OWNERS_LOCK = int.from_bytes(hashlib.blake2b(OWNERS_TABLE.encode(), digest_size=7).digest())


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume an abandoned check's outcome: its error is reported elsewhere, or moot."""
    if not task.cancelled():
        task.exception()


class _QuietAbandonedWaiters:
    """The event loop's exception handler, quieting one record of asyncpg's.

    asyncpg's COPY (0.32) creates its waiter before it checks the connection's state and leaves
    it behind when the check fails (`_insert`). When the connection drops, the waiter gets a
    ConnectionDoesNotExistError nobody awaits, and asyncio logs "Future exception was never
    retrieved", an ERROR with a traceback, for a failure already reported and retried. That
    record goes to debug; every other one to the handler that was installed before.
    """

    def __init__(self, previous: Callable[[Any, dict[str, Any]], object] | None) -> None:
        self.previous = previous

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> None:
        previous = loop.get_exception_handler()
        if not isinstance(previous, cls):
            loop.set_exception_handler(cls(previous))

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if (
            context.get("message") == "Future exception was never retrieved"
            and isinstance(context.get("exception"), asyncpg.exceptions.ConnectionDoesNotExistError)
            and not isinstance(context.get("future"), asyncio.Task)
        ):
            logger.debug("asyncpg left a waiter behind: %s", context["exception"])
        elif self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


class PostgresSink(SqlSinkBase):
    """PostgreSQL through an asyncpg pool: one binary COPY per batch, or for messages delivered
    before and where COPY cannot take the batch, one
    `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`."""

    def __init__(
        self,
        url: str,
        model: type[SQLModel],
        streams: list[str],
        pool_size: int,
        *,
        add_missing_columns: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.dsn = asyncpg_dsn(url)
        self.timeout = timeout
        self.add_missing_columns = add_missing_columns
        self.model = model
        self.stream = streams[0]
        self.builder = RowBuilder(model, json_as_text=True)
        check_streams(model, self.builder.table, streams)
        self.pool_size = pool_size
        self.pool: asyncpg.Pool | None = None
        table = self.builder.table
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        quote = dialect.identifier_preparer.quote
        cols = ", ".join(quote(name) for name in self.builder.columns)
        target = ", ".join(quote(name) for name in conflict_columns(table))
        name = dialect.identifier_preparer.format_table(table)
        types = [_array_element_type(table.columns[c], dialect) for c in self.builder.columns]
        self._param_types = dict(zip(self.builder.columns, types, strict=True))
        if any(isinstance(table.columns[c].type, sa.ARRAY) for c in self.builder.columns):
            # unnest() would flatten array columns: insert row by row in one round trip instead.
            values = ", ".join(f"${i}" for i in range(1, len(types) + 1))
            self._many = True
            self.sql = (
                f"INSERT INTO {name} ({cols}) VALUES ({values}) ON CONFLICT ({target}) DO NOTHING"
            )
        else:
            arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
            self._many = False
            self.sql = (
                f"INSERT INTO {name} ({cols}) SELECT * FROM unnest({arrays}) "
                f"ON CONFLICT ({target}) DO NOTHING"
            )
        self._ddl = [str(CreateTable(table, if_not_exists=True).compile(dialect=dialect))] + [
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in table.indexes
        ]
        self._owners_ddl = str(CreateTable(owners, if_not_exists=True).compile(dialect=dialect))
        self._table_name = name
        self._copy = True
        """Send batches with COPY (until the table turns out not to take it)."""
        self._copy_paused = 0
        """Writes left to make with INSERT after a COPY failed on its rows."""
        self._column_types = {
            col: (quote(col), str(table.columns[col].type.compile(dialect=dialect)))
            for col in self.builder.columns
        }

    async def start(self) -> None:
        _QuietAbandonedWaiters.install(asyncio.get_running_loop())
        try:
            self.pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                command_timeout=self.timeout,
                timeout=self.timeout,
                # Naive times are UTC (rows.py): a timezone-aware value going into a `timestamp`
                # column becomes its UTC time, and a naive one into `timestamptz` is read as UTC,
                # whatever the server's TimeZone (column_types.py).
                server_settings={"timezone": "UTC"},
            )
            async with self.pool.acquire() as conn, conn.transaction():
                # Several pods start at once: serialize CREATE TABLE IF NOT EXISTS, which can
                # otherwise fail on the catalog's unique index.
                key = int.from_bytes(
                    hashlib.blake2b(self.builder.table.name.encode(), digest_size=7).digest()
                )
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
                for statement in self._ddl:
                    await conn.execute(statement)
                await self._check_columns(conn)
                await self._check_rules(conn)
                if shares_identity(self.builder.table):
                    await self._claim_table(conn)
        except ConfigError:
            await self.close()
            raise
        except (TimeoutError, OSError, asyncpg.exceptions.PostgresConnectionError) as exc:
            await self.close()
            raise TransientError(f"PostgreSQL unreachable: {exc}") from exc
        except asyncpg.exceptions.InvalidPasswordError as exc:
            raise ConfigError(f"PostgreSQL refused the credentials: {exc}") from exc
        except asyncpg.exceptions.InvalidAuthorizationSpecificationError as exc:
            # A role that does not exist, or a pg_hba.conf rule rejecting this client.
            raise ConfigError(
                f"PostgreSQL refused the connection: {exc}; nothing is consumed. Fix the user in "
                "STREAMSCALE_DATABASE_URL or the server's pg_hba.conf, then start again."
            ) from exc
        except asyncpg.exceptions.InvalidCatalogNameError as exc:
            raise ConfigError(
                f"PostgreSQL: {exc}; nothing is consumed. Create it (CREATE DATABASE ...) or fix "
                "the database name at the end of STREAMSCALE_DATABASE_URL, then start again."
            ) from exc
        except asyncpg.exceptions.ClientConfigurationError as exc:
            # e.g. sslmode=verify-full without a root certificate to verify the server with.
            hint = f" {exc.hint}" if getattr(exc, "hint", None) else ""
            raise ConfigError(
                f"PostgreSQL connection settings cannot work: {exc}.{hint} Nothing is consumed; "
                "fix STREAMSCALE_DATABASE_URL (e.g. add sslrootcert=/path/to/root.crt) and start "
                "again."
            ) from exc

    async def _check_columns(self, conn: asyncpg.Connection) -> None:
        """Refuse (or, when allowed, extend) an existing table that lacks model columns.

        CREATE TABLE IF NOT EXISTS leaves an older table as it is; every INSERT would then fail
        with "column does not exist", which no retry can fix.
        """
        present = {
            row["attname"]
            for row in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                "AND attnum > 0 AND NOT attisdropped",
                self._table_name,
            )
        }
        missing = dict(spec for col, spec in self._column_types.items() if col not in present)
        if missing:
            if not self.add_missing_columns:
                raise missing_columns_error(self._table_name, missing)
            for col, type_ in missing.items():
                await conn.execute(
                    f"ALTER TABLE {self._table_name} ADD COLUMN IF NOT EXISTS {col} {type_}"
                )
            logger.warning(
                "added the missing column(s) %s to table %s (nullable: existing rows have NULL)",
                ", ".join(missing), self._table_name,
            )  # fmt: skip
        await self._check_types(conn)

    async def _check_types(self, conn: asyncpg.Connection) -> None:
        """Refuse a table with a column whose type cannot take the model's values, or would
        change them without a word (column_types.py says which types fit)."""
        found = {
            row["attname"]: PgType(row["display"], row["typname"], row["typcategory"])
            for row in await conn.fetch(TABLE_TYPES_SQL, self._table_name)
        }
        mismatches, not_copied = [], []
        for col, (quoted, model_type) in self._column_types.items():
            table_type = found.get(col)
            if table_type is None:
                continue
            row = await conn.fetchrow(MODEL_TYPE_SQL, model_type)
            model = PgType(row["display"], row["typname"], row["typcategory"]) if row else None
            if not copies_alike(model, table_type):
                not_copied.append(f"{quoted} ({table_type.display})")
            why = await self._cannot_store(conn, quoted, self._param_types[col])
            if why is None and model is not None:  # a type PostgreSQL does not know: not judged
                why = silent_change(model, table_type)
            if why is not None:
                mismatches.append(Mismatch(quoted, table_type.display, model_type, why))
        if mismatches:
            raise mismatched_types_error(self._table_name, mismatches)
        if not_copied:
            self._copy = False
            logger.info(
                "writing into %s with INSERT only: column(s) %s are not of the model's types, "
                "and only INSERT converts the values",
                self._table_name, ", ".join(not_copied),
            )  # fmt: skip

    async def _cannot_store(self, conn: asyncpg.Connection, column: str, param: str) -> str | None:
        """Ask PostgreSQL whether the batch INSERT can assign the model's values to `column`:
        prepare (never run) the insert of that one column, with the parameter type the batch
        statement casts to."""
        if self._many:  # untyped parameters: PostgreSQL takes the column's own type
            return None
        try:
            async with conn.transaction():  # a savepoint: a refused prepare aborts only it
                await conn.prepare(
                    f"INSERT INTO {self._table_name} ({column}) VALUES ($1::{param})"
                )
        except _CANNOT_STORE_PG as exc:
            return cannot_store(exc)
        except asyncpg.exceptions.PostgresError as exc:
            # Not a type question (a GENERATED ALWAYS column, ...): the batch insert reports it.
            logger.debug("column %s not judged: %s", column, exc)
        return None

    async def _claim_table(self, conn: asyncpg.Connection) -> None:
        """Record this stream as the table's one feeder, or refuse when another stream is."""
        # One lock for the registry itself: pods of different tables create it concurrently.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _OWNERS_LOCK)
        await conn.execute(self._owners_ddl)
        await conn.execute(
            f"INSERT INTO {OWNERS_TABLE} (table_name, stream) VALUES ($1, $2) "
            "ON CONFLICT (table_name) DO NOTHING",
            self._table_name,
            self.stream,
        )
        owner = await conn.fetchval(
            f"SELECT stream FROM {OWNERS_TABLE} WHERE table_name = $1", self._table_name
        )
        check_owner(self._table_name, self.stream, owner)

    async def _insert(self, rows: Sequence[Row], *, fresh: bool = True) -> None:
        assert self.pool is not None, "start() first"
        refused: BaseException | None = None  # COPY failed where an INSERT may work
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                if self._copy_paused:
                    self._copy_paused -= 1
                elif self._copy and fresh:
                    try:
                        await conn.copy_records_to_table(
                            self.builder.table.name, schema_name=self.builder.table.schema,
                            columns=self.builder.columns, records=rows,
                        )  # fmt: skip
                        return
                    except (*_PERMANENT_PG, *_UNENCODABLE):
                        # A row is stored already (a redelivery: ON CONFLICT DO NOTHING skips
                        # it), or some row cannot be stored (the INSERT names it, and the
                        # batch is bisected to isolate it).
                        self._copy_paused = COPY_PAUSE_BATCHES
                    except _COPY_REFUSED as exc:
                        refused = exc
                    except asyncpg.exceptions.InternalClientError as exc:
                        if not str(exc).startswith(_NO_BINARY_ENCODER):
                            # The server's FATAL error came in while the connection sat in
                            # the pool, its closing not yet: the protocol refuses to start.
                            conn.terminate()
                            raise
                        refused = exc
                if self._many:
                    await conn.executemany(self.sql, rows)
                else:
                    await conn.execute(self.sql, *zip(*rows, strict=True))
        except _PERMANENT_PG as exc:
            raise RowError(str(exc)) from exc
        except _SCHEMA_PG as exc:
            # The table was altered under a running consumer: retrying cannot help.
            raise ConfigError(
                f"writing into table {self._table_name} failed: {exc}. Restart the consumer: "
                "at start-up it names the ALTER TABLE to run (nothing was acked, the messages "
                "stay pending)."
            ) from exc
        except TimeoutError as exc:
            # Its message is empty: say what it means (a SIGSTOPped or overloaded server).
            raise TransientError(
                f"PostgreSQL did not answer within {self.timeout:g} s (hung, overloaded or "
                "waiting on a lock)"
            ) from exc
        except _TRANSIENT_PG as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if refused is not None:
            # COPY failed where the INSERT just worked: INSERT from now on.
            self._copy = False
            logger.warning(
                "writing into %s with INSERT only from now on: COPY failed with %s: %s",
                self._table_name, type(refused).__name__, refused,
            )  # fmt: skip

    async def _check_rules(self, conn: asyncpg.Connection) -> None:
        """Refuse a table with INSERT rules: PostgreSQL refuses `INSERT ... ON CONFLICT` on it,
        and COPY would skip the rules without a word."""
        rules = await conn.fetch(
            "SELECT rulename FROM pg_rewrite WHERE ev_class = $1::regclass AND ev_type = '3'",
            self._table_name,
        )
        if rules:
            names = ", ".join(r["rulename"] for r in rules)
            raise ConfigError(
                f"table {self._table_name} has INSERT rules ({names}): PostgreSQL refuses "
                "INSERT ... ON CONFLICT on it, which makes redelivered messages harmless, and "
                "COPY would skip the rules. Nothing is consumed; replace the rules with a "
                "trigger (CREATE TRIGGER ... AFTER INSERT ON ... FOR EACH ROW) and start again."
            )

    async def ping(self) -> str | None:
        if self.pool is None:
            return "PostgreSQL not connected yet"
        # Within the kubelet's default probe timeout (1 s): a probe that times out shows only
        # "context deadline exceeded", never this reason. asyncio.wait, not wait_for: cancelling
        # a query on a hung server waits for the server, and the answer must not.
        check = asyncio.ensure_future(self._select_one())
        check.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({check}, timeout=PING_TIMEOUT)
        if not done:
            check.cancel()
            return f"PostgreSQL did not answer within {PING_TIMEOUT:g} s (hung or overloaded)"
        error = check.exception()
        return f"PostgreSQL: {type(error).__name__}: {error}" if error else None

    async def _select_one(self) -> None:
        assert self.pool is not None, "start() first"
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (TimeoutError, OSError, asyncpg.exceptions.InterfaceError):
                pool.terminate()


class SqliteSink(SqlSinkBase):
    """SQLite through aiosqlite: the embedded default for local runs and the demo.

    WAL mode and a busy timeout let several local consumer processes share one file.
    """

    def __init__(
        self,
        url: str,
        model: type[SQLModel],
        streams: list[str],
        *,
        add_missing_columns: bool = False,
    ) -> None:
        self.add_missing_columns = add_missing_columns
        _scheme, sep, rest = url.partition("://")
        self.url = "sqlite+aiosqlite" + sep + rest
        self.model = model
        self.stream = streams[0]
        self.builder = RowBuilder(model, json_as_text=False)
        check_streams(model, self.builder.table, streams)
        table = self.builder.table
        self.stmt = sqlite.insert(table).on_conflict_do_nothing(
            index_elements=conflict_columns(table)
        )
        self.engine: AsyncEngine | None = None

    async def start(self) -> None:
        engine = create_async_engine(self.url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        self.engine = engine
        try:
            async with engine.begin() as conn:
                await conn.run_sync(self.builder.table.create, checkfirst=True)
        except sa.exc.OperationalError as exc:
            if "already exists" not in str(exc):
                raise TransientError(f"SQLite: {exc}") from exc
        await self._check_columns(engine)
        if shares_identity(self.builder.table):
            await self._claim_table(engine)

    async def _check_columns(self, engine: AsyncEngine) -> None:
        """Refuse (or, when allowed, extend) an existing table that lacks model columns."""
        table = self.builder.table
        dialect = engine.dialect
        quote = dialect.identifier_preparer.quote
        try:
            async with engine.begin() as conn:
                present = {
                    row[1]
                    for row in await conn.execute(
                        sa.text(f"PRAGMA table_info({quote(table.name)})")
                    )
                }
                missing = {
                    quote(col): str(table.columns[col].type.compile(dialect=dialect))
                    for col in self.builder.columns
                    if col not in present
                }
                if missing and self.add_missing_columns:
                    for col, type_ in missing.items():
                        await conn.execute(
                            sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {col} {type_}")
                        )
        except sa.exc.OperationalError as exc:
            raise TransientError(f"SQLite: {exc}") from exc
        if missing and not self.add_missing_columns:
            raise missing_columns_error(quote(table.name), missing)
        if missing:
            logger.warning(
                "added the missing column(s) %s to table %s (nullable: existing rows have NULL)",
                ", ".join(missing), table.name,
            )  # fmt: skip

    async def _claim_table(self, engine: AsyncEngine) -> None:
        """Record this stream as the table's one feeder, or refuse when another stream is."""
        table_name = self.builder.table.name
        try:
            async with engine.begin() as conn:
                await conn.run_sync(owners.create, checkfirst=True)
                await conn.execute(
                    sqlite.insert(owners)
                    .values(table_name=table_name, stream=self.stream)
                    .on_conflict_do_nothing(index_elements=["table_name"])
                )
                owner = (
                    await conn.execute(
                        sa.select(owners.c.stream).where(owners.c.table_name == table_name)
                    )
                ).scalar_one()
        except sa.exc.OperationalError as exc:
            raise TransientError(f"SQLite: {exc}") from exc
        check_owner(table_name, self.stream, owner)

    async def _insert(self, rows: Sequence[Row], *, fresh: bool = True) -> None:
        assert self.engine is not None, "start() first"
        params = [dict(zip(self.builder.columns, row, strict=True)) for row in rows]
        try:
            async with self.engine.begin() as conn:
                await conn.execute(self.stmt, params)
        except sa.exc.OperationalError as exc:
            if "has no column named" in str(exc.orig):
                # The table was altered under a running consumer: retrying cannot help.
                raise ConfigError(
                    f"writing into table {self.builder.table.name} failed: {exc.orig}. Restart "
                    "the consumer: at start-up it names the ALTER TABLE to run (nothing was "
                    "acked, the messages stay pending)."
                ) from exc
            raise TransientError(f"SQLite: {exc}") from exc
        except (sa.exc.ProgrammingError, sa.exc.InternalError, OSError) as exc:
            raise TransientError(f"SQLite: {exc}") from exc
        except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.StatementError) as exc:
            raise RowError(str(getattr(exc, "orig", None) or exc)) from exc

    async def ping(self) -> str | None:
        if self.engine is None:
            return "SQLite not opened yet"
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return f"SQLite: {exc}"
        return None

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
