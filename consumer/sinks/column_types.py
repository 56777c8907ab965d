"""Does an existing PostgreSQL column fit the model's column? (issue 10: a type mismatch).

CREATE TABLE IF NOT EXISTS leaves an older table as it is. A column of another type is one of:

- one PostgreSQL cannot store the model's values in at all (no assignment cast: `text` into
  `jsonb`, `integer` or `uuid`, `boolean` into `integer`): every INSERT fails. PostgreSQL answers
  that itself: the sink prepares the insert of that one column (`cannot_store` below);
- one PostgreSQL accepts but changes the values without a word (`silent_change`): numbers, times
  or JSON kept as text, a time of day dropped, fractions rounded to whole numbers;
- anything else fits: `varchar(n)` against `text`, `int4` against `int8` either way, another
  numeric precision. A value that does not fit such a column (too long, out of range) fails on
  its own row, which is dead-lettered, as it would with the model's own type.

A time-zone-aware model column against `timestamp without time zone` fits too: the sink's
sessions run in UTC, so the column gets the UTC time of each value, the convention streamscale
keeps for naive times everywhere. It is also what every table made before SQLModel 0.0.45 has
(0.0.44 and earlier mapped `datetime` to `timestamp without time zone`, 0.0.45 to `timestamp with
time zone`; pyproject allows both): refusing it would stop such consumers at their next upgrade.

False refusals stop a consumer that would have worked, so `silent_change` names only the cases
above, and a model type PostgreSQL cannot resolve (an enum type not created yet) is not judged.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamscale.core.errors import ConfigError

TABLE_TYPES_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS display,
       b.typname, b.typcategory::text AS typcategory
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""
"""Each column's type as PostgreSQL writes it, and the name and category of its base type (a
domain is judged by the type it is based on)."""

MODEL_TYPE_SQL = """
SELECT format_type(t.oid, NULL) AS display, t.typname, t.typcategory::text AS typcategory
FROM pg_type t WHERE t.oid = to_regtype($1)
"""
"""The type a model column's SQL type names (no row when PostgreSQL does not know it)."""

INTEGERS = frozenset({"int2", "int4", "int8"})
FRACTIONAL = frozenset({"numeric", "float4", "float8"})
STRING_CATEGORIES = frozenset({"S", "E"})  # strings, and enum labels (text by nature)
TEXT_IS_CANONICAL = frozenset({"uuid"})
"""Non-string types whose text form is the value itself: a string column holds them faithfully."""


@dataclass(frozen=True)
class PgType:
    display: str
    """As PostgreSQL writes it: `character varying(64)`, `timestamp without time zone`."""
    name: str
    """`pg_type.typname` of the base type: varchar, int4, timestamptz, jsonb, ..."""
    category: str
    """`pg_type.typcategory`: S string, N numeric, D date/time, B boolean, U user-defined, ..."""


@dataclass(frozen=True)
class Mismatch:
    column: str
    """Quoted as it goes into SQL."""
    table_type: str
    model_type: str
    """The model column's SQL type, as the consumer would create it."""
    why: str


def silent_change(model: PgType, table: PgType) -> str | None:
    """What PostgreSQL would do to the model's values in this column without an error, or None
    when it keeps them as they are (lengths and ranges aside: those fail row by row)."""
    if (
        table.category in STRING_CATEGORIES
        and model.category not in STRING_CATEGORIES
        and model.name not in TEXT_IS_CANONICAL
    ):
        return f"the column would hold the model's {model.display} values as text"
    if model.name in ("timestamp", "timestamptz") and table.name == "date":
        return "PostgreSQL would drop the time of day"
    if model.name in FRACTIONAL and table.name in INTEGERS:
        return "PostgreSQL would round the model's fractional values to whole numbers"
    return None


ENCODED_ALIKE = (
    frozenset({"text", "varchar", "bpchar"}),
    frozenset({"json", "jsonb"}),
    INTEGERS,
    frozenset({"float4", "float8"}),
)
"""Types whose columns asyncpg fills from the same Python values in the same way."""


def copies_alike(model: PgType | None, table: PgType) -> bool:
    """True when COPY stores the model's values in this column as INSERT does.

    COPY sends each value in the column's own binary format, with no cast: into a column of
    another type than the model's, a value is encoded for that type by asyncpg, not converted
    by PostgreSQL. A naive time into `timestamptz`, for one, would be read in the consumer's
    local time zone, not the session's UTC. Only the same type, or types in one family of
    `ENCODED_ALIKE`, qualify (lengths and precisions are checked by the column either way).
    """
    if model is None:
        return False
    return model.name == table.name or any(
        model.name in family and table.name in family for family in ENCODED_ALIKE
    )


def cannot_store(error: Exception) -> str:
    """The reason for a column PostgreSQL refused the model's values for (a prepared insert)."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"PostgreSQL cannot store the model's values in it ({first_line}): every row would fail"


def mismatched_types_error(table: str, mismatches: list[Mismatch]) -> ConfigError:
    """The table has columns of types that do not fit the model: which, why, and the fix."""
    lines = "\n".join(
        f"    {m.column}: the table has {m.table_type}, the model {m.model_type}: {m.why}"
        for m in mismatches
    )
    alters = "\n".join(
        f"    ALTER TABLE {table} ALTER COLUMN {m.column} TYPE {m.model_type}"
        f" USING {m.column}::{m.model_type};"
        for m in mismatches
    )
    return ConfigError(
        f"table {table} has column(s) whose type does not fit the model, so nothing is "
        f"consumed; nothing was acked, the messages stay pending:\n{lines}\n"
        f"Change the column(s) to the model's type:\n{alters}\n"
        "or change the model to the table's types, then start the consumer again."
    )
