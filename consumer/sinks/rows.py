"""Turning decoded messages into table rows: validation, identity and column types."""

from __future__ import annotations

import datetime
import decimal
import operator
from collections.abc import Callable
from typing import Annotated, Any

import annotated_types
import orjson
import pydantic
import sqlalchemy as sa
from sqlmodel import SQLModel
from sqlmodel.main import FieldInfoMetadata
from typing_extensions import TypedDict

from streamscale.consumer.constants import STREAM_ID_COLUMN
from streamscale.consumer.messages import Message
from streamscale.consumer.sinks.models import STREAM_COLUMN, StreamEvent, conflict_columns
from streamscale.core.streams import StreamId

Row = tuple[Any, ...]
Convert = Callable[[Any], Any]

UNSTORABLE = (orjson.JSONEncodeError, OverflowError)
"""A valid payload the row still cannot hold: JSON nested deeper than orjson.dumps goes (255,
while orjson.loads accepts 1024), a datetime that leaves the calendar when moved to UTC."""


def _to_aware(value: Any) -> Any:
    # A timezone-aware column refuses naive datetimes: a naive one is taken as UTC.
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value


def _to_naive(value: Any) -> Any:
    # A naive column stores UTC wall time; an aware datetime is converted, not truncated.
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def _to_json_text(value: Any) -> Any:
    return None if value is None else orjson.dumps(value).decode()


def _is_generated(column: sa.Column[Any]) -> bool:
    """An integer primary key the database numbers itself (`id: int | None = Field(...)`)."""
    return (
        column.primary_key
        and column.name != STREAM_ID_COLUMN
        and column.autoincrement in (True, "auto")
        and isinstance(column.type, sa.Integer)
    )


class RowBuilder:
    """Validates payloads against the model and lays them out in `columns` order.

    Validation runs on a plain pydantic model derived from the table class: SQLModel table
    classes skip validation on construction, and one pydantic call per batch is much faster
    than building ORM objects.
    """

    def __init__(self, model: type[SQLModel], *, json_as_text: bool) -> None:
        table = getattr(model, "__table__", None)
        assert isinstance(table, sa.Table)
        self.table = table
        self.events = model is StreamEvent
        # Filled by streamscale, not taken from the payload: the entry ID, and the stream when
        # it is part of the identity (a table several streams feed).
        self._filled = [
            STREAM_ID_COLUMN,
            *(c for c in conflict_columns(table) if c != STREAM_ID_COLUMN),
        ]
        if self.events:
            self.columns = ["stream", STREAM_ID_COLUMN, "payload", "produced_at"]
            self._payload_json = json_as_text
            return
        self.columns = [
            col.name
            for col in table.columns
            if not _is_generated(col) and col.name in model.model_fields
        ]
        infos = {
            name: info
            for name, info in model.model_fields.items()
            if name in self.columns and name not in self._filled
        }
        # Validating into dicts costs about half of validating into model instances (0.95-1.1
        # against 1.8 µs per product row, bench/README.md), but a TypedDict fills no defaults
        # and knows no aliases: models that use them keep the model.
        self._dicts = all(info.is_required() and not info.alias for info in infos.values())
        # The batch is validated with a fast path for digit-limited decimals (`_decimal_text`);
        # a batch with an invalid payload is validated again payload by payload without it, so
        # errors read exactly as the model's own.
        fast = {name: t for name, info in infos.items() if (t := _decimal_text(info)) is not None}
        batch: Any = list[self._shadow(model, infos, fast)]  # type: ignore[misc]
        self._one: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(self._shadow(model, infos, {}))
        self._many: pydantic.TypeAdapter[list[Any]] = pydantic.TypeAdapter(batch)
        self._converters: list[tuple[str, Convert | None]] = []
        for name in self.columns:
            col = table.columns[name]
            base = col.type.impl_instance if isinstance(col.type, sa.TypeDecorator) else col.type
            convert: Convert | None = None
            if isinstance(base, sa.DateTime):
                aware = getattr(col.type, "timezone", False) or base.timezone
                convert = _to_aware if aware else _to_naive
            elif isinstance(base, sa.JSON) and json_as_text:
                convert = _to_json_text
            elif name in fast:
                convert = decimal.Decimal  # the digits the fast path kept as text
            self._converters.append((name, convert))
        # `_row` runs once per message: one itemgetter call picks the values, and only the
        # columns that need it are converted (half the cost of a per-column generator).
        self._pick = _picker([name for name in self.columns if name not in self._filled])
        # (column position, is the stream) in column order: inserting the lower position first
        # keeps the later positions right.
        self._inserts = sorted(
            (self.columns.index(name), name == STREAM_COLUMN)
            for name in self._filled
            if name in self.columns
        )
        self._convert_at = [(i, c) for i, (_, c) in enumerate(self._converters) if c is not None]

    def _shadow(self, model: type[SQLModel], infos: dict[str, Any], fast: dict[str, Any]) -> Any:
        """The plain pydantic type payloads are validated as (`fast` replaces some fields)."""
        if self._dicts:
            typed_dict: Any = TypedDict  # built at run time from the model: no static type
            return typed_dict(
                f"{model.__name__}Payload",
                {
                    name: fast.get(name) or Annotated[info.annotation, _plain_field(info)]
                    for name, info in infos.items()
                },
            )
        fields: dict[str, Any] = {
            name: (
                (fast[name], _plain_field(info, constraints=False))
                if name in fast
                else (info.annotation, _plain_field(info))
            )
            for name, info in infos.items()
        }
        return pydantic.create_model(
            f"{model.__name__}Payload", __config__=pydantic.ConfigDict(extra="ignore"), **fields
        )

    def build(
        self, messages: list[Message]
    ) -> tuple[list[Row], list[StreamId], dict[StreamId, str]]:
        """Rows and their IDs for the valid messages; the invalid ones with the error."""
        if self.events:
            return self._events(messages)
        payloads = [m.payload for m in messages]
        try:
            valid = self._many.validate_python(payloads)
            return (
                [self._row(m, v) for m, v in zip(messages, valid, strict=True)],
                [m.id for m in messages],
                {},
            )
        except (pydantic.ValidationError, *UNSTORABLE):
            pass
        rows: list[Row] = []
        ids: list[StreamId] = []
        rejected: dict[StreamId, str] = {}
        for message in messages:
            try:
                value = self._one.validate_python(message.payload)
                row = self._row(message, value)
            except pydantic.ValidationError as exc:
                rejected[message.id] = _describe(exc)
                continue
            except UNSTORABLE as exc:
                rejected[message.id] = f"cannot store the payload: {exc}"
                continue
            rows.append(row)
            ids.append(message.id)
        return rows, ids, rejected

    def _row(self, message: Message, value: Any) -> Row:
        row = list(self._pick(value if self._dicts else value.__dict__))
        for at, is_stream in self._inserts:
            row.insert(at, message.stream if is_stream else message.id)
        for i, convert in self._convert_at:
            row[i] = convert(row[i])
        return tuple(row)

    def _events(
        self, messages: list[Message]
    ) -> tuple[list[Row], list[StreamId], dict[StreamId, str]]:
        rows, ids, rejected = [], [], {}
        for m in messages:
            produced = datetime.datetime.fromtimestamp(m.produced_ms / 1000, datetime.UTC)
            try:
                payload: Any = orjson.dumps(m.payload).decode() if self._payload_json else m.payload
            except UNSTORABLE as exc:
                rejected[m.id] = f"cannot store the payload: {exc}"
                continue
            rows.append((m.stream, m.id, payload, produced))
            ids.append(m.id)
        return rows, ids, rejected


def _picker(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function giving the values of `names` from a dict, always as a tuple."""
    if len(names) == 1:
        name = names[0]
        return lambda data: (data[name],)
    if not names:
        return lambda _data: ()
    return operator.itemgetter(*names)


def _plain_field(info: Any, *, constraints: bool = True) -> Any:
    """A pydantic FieldInfo with the validation parts of a SQLModel field (defaults, limits)."""
    kwargs: dict[str, Any] = {}
    if info.default_factory is not None:
        kwargs["default_factory"] = info.default_factory
    elif not info.is_required():
        kwargs["default"] = info.default
    if info.alias:
        kwargs["alias"] = info.alias
    field = pydantic.Field(**kwargs)
    field.metadata = list(info.metadata) if constraints else []
    return field


def _decimal_text(info: Any) -> Any | None:
    """For a `Decimal` field with digit limits (`numeric(p, s)`), a type that keeps text
    within the limits as it is, and validates anything else as the field does; else None.

    pydantic's max_digits / decimal_places checks took about 0.7 µs of the 0.9 µs a product
    payload's validation cost (bench/README.md); a pattern checked in pydantic's core accepts
    the usual text ("12.99") for a small part of that, and `Decimal` then makes the same value.
    The pattern accepts only text the limits accept: at most p - s digits before the point and
    s after it, and no sign when the field is `ge=0`. Any other limit (gt, le, multiple_of, ...)
    leaves the field as it is.
    """
    if info.annotation is not decimal.Decimal:
        return None
    digits: dict[str, Any] = {}
    signed = True
    for item in info.metadata:
        if isinstance(item, FieldInfoMetadata):
            continue  # SQLModel's column options: no validation
        if isinstance(item, annotated_types.Ge) and item.ge == 0:
            signed = False
            continue
        limits = _digit_limits(item)
        if limits is None:
            return None  # a limit the pattern does not express
        digits.update(limits)
    places = digits.get("decimal_places")
    if "max_digits" not in digits or places is None:
        return None
    whole = digits["max_digits"] - places
    if whole < 1:
        return None
    fraction = rf"(\.[0-9]{{1,{places}}})?" if places else ""
    pattern = rf"^{'-?' if signed else ''}[0-9]{{1,{whole}}}{fraction}$"
    text = Annotated[str, pydantic.StringConstraints(pattern=pattern)]
    validating = [m for m in info.metadata if not isinstance(m, FieldInfoMetadata)]
    exact = Annotated[decimal.Decimal, *validating]
    return Annotated[text | exact, pydantic.Field(union_mode="left_to_right")]


def _digit_limits(item: Any) -> dict[str, int] | None:
    """max_digits / decimal_places of pydantic's general metadata; None for anything else."""
    given = {k: v for k, v in getattr(item, "__dict__", {}).items() if v is not None}
    return given if given and set(given) <= {"max_digits", "decimal_places"} else None


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
