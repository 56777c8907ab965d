"""Bad input: the decoder and the row builder never crash or hang, whatever a producer sends.

Property tests (hypothesis) drive `messages.decode` and `sinks.rows.RowBuilder` with random
bytes, huge fields, deeply nested JSON, wrong types and odd unicode (lone surrogates, NUL);
the end-to-end tests push such messages through a real consumer into a real PostgreSQL and
check that each one ends in the dead-letter stream with a reason, while the good ones commit.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import orjson
import pydantic
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from sqlmodel import Field, SQLModel

from examples.models import Product
from streamscale.consumer.messages import Message, decode, decode_all, entry_size
from streamscale.consumer.metrics import E2E_BUCKETS, BatchHistogram
from streamscale.consumer.sinks.models import StreamEvent
from streamscale.consumer.sinks.rows import RowBuilder
from tests.support.chaos import dead_letters, group_state
from tests.support.consumers import ConsumerProcess, product, wait_until
from tests.support.servers import PostgresServer, RedisServer

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip

odd_text = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=50
) | st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "\udfff", "\U0010ffff", "\u202e", "\ufeff", "e\u0301", "" ]
)  # fmt: skip
"""Text including lone surrogates and NUL (st.characters with no codec allows surrogates)."""

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30,
)  # fmt: skip


def _escape_json(value: str) -> bytes:
    """JSON text for `value` with every non-ASCII character escaped (lone surrogates too)."""
    return json.dumps(value, ensure_ascii=True).encode()


def _dumps(value: Any) -> bytes:
    # json, not orjson: big integers and lone surrogates must reach the decoder as they are.
    return json.dumps(value).encode()


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


data_values = st.one_of(
    st.binary(max_size=200),  # random bytes, mostly not JSON and not UTF-8
    json_values.map(_dumps),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(_dumps),
    st.builds(lambda s: b'{"name": ' + _escape_json(s) + b"}", odd_text),
    st.builds(_nested, st.integers(1, 3000), st.sampled_from(["list", "dict"])),
    st.integers(0, 3).map(lambda n: b'{"x": "' + b"y" * (10**n * 1000) + b'"}'),  # huge
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"1e400",
            b"-0",
            b'"\\ud800"',
            b'{"a": "\\u0000"}',
            b"{\x00}",
            b'{"a": 123456789012345678901234567890}',
            b"\xef\xbb\xbf{}",
            b"{}" * 3,
            b"NaN",
        ]
    ),
)
field_maps = st.one_of(
    st.dictionaries(st.binary(max_size=20), st.binary(max_size=100), max_size=6),
    st.builds(lambda d, rest: {b"data": d, **rest}, data_values,
              st.dictionaries(st.binary(max_size=10), st.binary(max_size=20), max_size=3)),
)  # fmt: skip


EVENTS = RowBuilder(StreamEvent, json_as_text=True)


@FUZZ
@given(fields=field_maps, max_bytes=st.integers(64, 2_000_000))
def test_decode_never_raises_and_bounds_size(fields: dict[bytes, bytes], max_bytes: int) -> None:
    message = decode("1-1", fields, max_bytes)
    assert isinstance(message, Message)
    assert (message.payload is None) == (message.error is not None)
    if message.payload is not None:
        assert isinstance(message.payload, dict)
        # Whatever decodes must either become a jsonb row or be rejected, never raise: JSON
        # 256 to 1023 levels deep decodes, but orjson.dumps stops at 255.
        rows, _ids, rejected = EVENTS.build([message])
        assert len(rows) + len(rejected) == 1
    else:
        assert message.error
    if entry_size(fields) > max_bytes:
        assert message.error is not None and "above" in message.error


@FUZZ
@given(maps=st.lists(field_maps, max_size=6), max_bytes=st.integers(1, 400))
def test_decoding_a_batch_inline_gives_what_decode_gives(
    maps: list[dict[bytes, bytes]], max_bytes: int
) -> None:
    entries = [(f"{n}-0", fields) for n, fields in enumerate(maps, 1)]
    assert decode_all(entries, max_bytes, "s") == [
        decode(i, fields, max_bytes, "s") for i, fields in entries
    ]


PRODUCT_KEYS = ["sku", "name", "price", "url", "created_at"]
wrong_values = st.one_of(
    json_values,
    odd_text,
    st.sampled_from(
        [
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+01:00",
            "yesterday",
            "1e400",
            "-1",
            "1" * 40,
            "0.001",
            "NaN",
            "Infinity",
            "sNaN",
            "-0",
            10**30,
            -(10**30),
            1e308,
            "x" * 100_000,
            "2025-02-30T00:00:00Z",
            "2025-04-22T10:00:00+24:00",
            True,
            [],
            {},
        ]
    ),
)
payloads = st.one_of(
    st.fixed_dictionaries({k: wrong_values for k in PRODUCT_KEYS}),
    st.builds(
        lambda n, key, value: {**product(n), key: value},
        st.integers(0, 10**6), st.sampled_from(PRODUCT_KEYS), wrong_values,
    ),
    st.dictionaries(st.text(max_size=12), json_values, max_size=8),
    st.integers(0, 10**6).map(product),
)  # fmt: skip


PRODUCTS = RowBuilder(Product, json_as_text=True)


def _messages(items: list[dict[str, Any]]) -> list[Message]:
    return [Message(f"{n + 1}-0", {}, payload) for n, payload in enumerate(items)]


@settings(FUZZ, max_examples=120)
@given(items=st.lists(payloads, min_size=1, max_size=8))
def test_row_builder_never_raises_and_accounts_for_every_message(
    items: list[dict[str, Any]],
) -> None:
    messages = _messages(items)
    for builder in (
        PRODUCTS,
        RowBuilder(Product, json_as_text=False),
        EVENTS,
    ):
        rows, ids, rejected = builder.build(messages)
        assert len(rows) == len(ids)
        assert set(ids).isdisjoint(rejected)
        assert set(ids) | set(rejected) == {m.id for m in messages}
        assert all(isinstance(err, str) and err for err in rejected.values())
        for row in rows:
            assert len(row) == len(builder.columns)


class DefaultedProduct(SQLModel, table=True):
    """Product plus a column with a default: the builder then validates into model instances."""

    __tablename__ = "defaulted_product"
    id: int | None = Field(default=None, primary_key=True)
    stream_id: str = Field(unique=True)
    sku: str = Field(max_length=64)
    name: str
    price: Decimal = Field(max_digits=12, decimal_places=2, ge=0)
    url: str
    created_at: datetime.datetime
    note: str = "none"


DEFAULTED = RowBuilder(DefaultedProduct, json_as_text=True)


@settings(FUZZ, max_examples=120)
@given(items=st.lists(payloads, min_size=1, max_size=8))
def test_row_builder_paths_agree(items: list[dict[str, Any]]) -> None:
    """Validation into dicts (all fields required) and into models (a default) give the same
    rows and the same rejections."""
    messages = _messages(items)
    assert PRODUCTS._dicts and not DEFAULTED._dicts
    rows, ids, rejected = PRODUCTS.build(messages)
    other_rows, other_ids, other_rejected = DEFAULTED.build(messages)
    assert DEFAULTED.columns == [*PRODUCTS.columns, "note"]
    assert [row[:-1] for row in other_rows] == rows
    assert all(row[-1] == "none" for row in other_rows)
    assert (other_ids, other_rejected) == (ids, rejected)


class Signed(SQLModel, table=True):
    """Decimals with other digit limits, signed, whole numbers and limits the fast path skips."""

    __tablename__ = "signed_amounts"
    stream_id: str = Field(primary_key=True)
    amount: Decimal = Field(max_digits=6, decimal_places=3)
    whole: Decimal = Field(max_digits=5, decimal_places=0)
    fraction: Decimal = Field(max_digits=3, decimal_places=3)
    bounded: Decimal = Field(max_digits=8, decimal_places=2, gt=0, le=1000)


SIGNED = RowBuilder(Signed, json_as_text=True)
DECIMAL_FIELDS = {
    builder: {
        name: pydantic.TypeAdapter(Annotated[Decimal, builder_model.model_fields[name]])
        for name in fields
    }
    for builder, builder_model, fields in (
        (PRODUCTS, Product, ["price"]),
        (SIGNED, Signed, ["amount", "whole", "fraction", "bounded"]),
    )
}
decimal_like = st.one_of(
    st.from_regex(r"[-+]?[0-9]{0,13}(\.[0-9]{0,5})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"\s?-?0*[0-9]{1,4}(\.[0-9]{1,3})?\s?", fullmatch=True),
    st.sampled_from(["٣", "1_000", "0.", ".5", "-0", "-0.00", "NaN", "inf", "12.50", "0012.5"]),
    st.integers(-(10**13), 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)


@settings(FUZZ, max_examples=400)
@given(value=decimal_like)
def test_the_decimal_fast_path_accepts_and_makes_what_the_model_does(value: object) -> None:
    """Digit-limited decimals are validated in the batch through a text pattern; every value
    must still be accepted or refused as the field itself does, and become the same Decimal
    (the same digits and exponent: numeric(p, s) stores "1.50" and "1.5" alike, a handler or a
    trigger may not)."""
    for builder, fields in DECIMAL_FIELDS.items():
        for name, exact in fields.items():
            payload = {
                **(product(1) if builder is PRODUCTS else {"amount": "1", "whole": "1",
                                                           "fraction": "0.1", "bounded": "1"}),
                name: value,
            }  # fmt: skip
            rows, _ids, rejected = builder.build(_messages([payload]))
            try:
                expected = exact.validate_python(value)
            except pydantic.ValidationError:
                assert not rows and rejected, (name, value, rows)
                continue
            assert rows, (name, value, rejected)
            made = rows[0][builder.columns.index(name)]
            assert type(made) is Decimal and made.as_tuple() == expected.as_tuple(), (name, value)


# End to end ----------------------------------------------------------------------------------

GOOD = {"sku": "A", "name": "fine", "price": "1.50", "url": "u",
        "created_at": "2025-04-22T10:00:00Z"}  # fmt: skip
BAD: list[tuple[str, dict[bytes, bytes]]] = [
    ("random bytes", {b"data": b"\xff\xfe\x00garbage\x80"}),
    ("not UTF-8 field map", {b"sku": b"\xc3\x28", b"name": b"x"}),
    ("empty data", {b"data": b""}),
    ("JSON array", {b"data": b"[1, 2]"}),
    ("JSON null", {b"data": b"null"}),
    ("deep list", {b"data": _nested(5000, "list")}),
    ("deep object", {b"data": _nested(2000, "dict")}),
    ("lone surrogate", {b"data": b'{"sku": "\\ud800", "name": "x"}'}),
    ("too large", {b"data": orjson.dumps({**GOOD, "name": "x" * 70_000})}),
    ("price text", {b"data": orjson.dumps({**GOOD, "price": "cheap"})}),
    ("price too many digits", {b"data": orjson.dumps({**GOOD, "price": "1" * 20})}),
    ("price negative", {b"data": orjson.dumps({**GOOD, "price": "-1"})}),
    ("price NaN", {b"data": orjson.dumps({**GOOD, "price": "NaN"})}),
    ("sku too long", {b"data": orjson.dumps({**GOOD, "sku": "s" * 65})}),
    ("missing field", {b"data": orjson.dumps({"sku": "A"})}),
    ("created_at words", {b"data": orjson.dumps({**GOOD, "created_at": "yesterday"})}),
    ("created_at year 9999 west", {b"data": orjson.dumps(
        {**GOOD, "created_at": "9999-12-31T23:59:59-23:59"})}),
    ("created_at year 1 east", {b"data": orjson.dumps(
        {**GOOD, "created_at": "0001-01-01T00:00:00+01:00"})}),
    ("NUL in name", {b"data": orjson.dumps({**GOOD, "name": "a\x00b"})}),
    ("NUL in url", {b"data": b'{"sku": "A", "name": "n", "price": "1", "url": "\\u0000",'
                             b' "created_at": "2025-04-22T10:00:00Z"}'}),
    ("NUL in field map", {b"sku": b"A\x00", b"name": b"n", b"price": b"1", b"url": b"u",
                          b"created_at": b"2025-04-22T10:00:00Z"}),
]  # fmt: skip
"""(label, fields) of messages that can never become a `Product` row."""


def _settings(
    redis_url: str, database_url: str, stream: str, model: str | None
) -> dict[str, object]:
    return {
        "redis_url": redis_url, "database_url": database_url, "stream": stream,
        "group": "fuzz", "max_message_bytes": 65_536, "batch_size": 50,
        "claim_idle_ms": 1000, "max_deliveries": 3, **({"model": model} if model else {}),
    }  # fmt: skip


def _add(client: redis.Redis, stream: str, fields: list[dict[bytes, bytes]]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for f in fields:
        pipe.xadd(stream, f)  # type: ignore[arg-type]
    return [i.decode() for i in pipe.execute()]


def _run(server: RedisServer, database_url: str, stream: str, model: str | None,
         entries: list[dict[bytes, bytes]]) -> tuple[list[str], redis.Redis, str]:  # fmt: skip
    client = redis.Redis.from_url(server.url)
    ids = _add(client, stream, entries)
    consumer = ConsumerProcess(**_settings(server.url, database_url, stream, model)).start()
    try:
        wait_until(
            lambda: group_state(client, stream, "fuzz").get("entries-read") == len(ids)
            and group_state(client, stream, "fuzz").get("pending") == 0,
            60, 0.2, "every entry handled",
        )  # fmt: skip
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    return ids, client, consumer.output()


@pytest.mark.timeout(120)
def test_bad_messages_end_in_the_dead_letter_stream_with_a_reason(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """Each bad message sits between good ones in a batch; the good ones all commit."""
    stream = names("fuzz")
    entries: list[dict[bytes, bytes]] = []
    labels: list[str | None] = []
    for round_ in range(3):
        for label, fields in BAD:
            good = {**GOOD, "sku": f"G{round_}-{len(entries)}"}
            entries += [{b"data": orjson.dumps(good)}, fields]
            labels += [None, label]
    ids, client, output = _run(redis_server, database_url, stream, "examples.models:Product",
                               entries)  # fmt: skip
    db = database_url.rsplit("/", 1)[1]
    stored = set(postgres_server.psql("SELECT stream_id FROM product", db).split())
    dead = {d["x-original-id"]: d for d in dead_letters(client, stream + ":dlq")}
    expected_bad = {i: label for i, label in zip(ids, labels, strict=True) if label}
    assert stored == {i for i, label in zip(ids, labels, strict=True) if label is None}
    missing = {label for i, label in expected_bad.items() if i not in dead}
    assert not missing, f"not dead-lettered: {missing}"
    assert set(dead) == set(expected_bad)
    for entry_id, letter in dead.items():
        assert letter["x-reason"] == "invalid", (expected_bad[entry_id], letter)
        assert letter["x-error"], expected_bad[entry_id]
        assert letter["x-deliveries"] == "1", (expected_bad[entry_id], letter["x-deliveries"])
    assert "Traceback" not in output
    print("\n" + "\n".join(
        f"{expected_bad[i]:<28} {dead[i]['x-error'][:90]}" for i in ids[1:2 * len(BAD):2]
    ))  # fmt: skip


@pytest.mark.timeout(120)
def test_nul_in_a_jsonb_payload_is_dead_lettered_not_retried_forever(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """The built-in `stream_events` table keeps payloads as jsonb, which refuses U+0000."""
    stream = names("events")
    entries = []
    for n in range(40):
        entries.append({b"data": orjson.dumps({"n": n, "text": "fine"})})
        if n % 4 == 0:
            entries.append({b"data": orjson.dumps({"n": n, "text": "nul \x00 here"})})
        if n % 10 == 0:
            entries.append({b"data": b'{"key\\u0000": 1}'})
        if n % 20 == 0:
            # Deeper than orjson.dumps goes (255), shallower than orjson.loads allows (1024).
            entries.append({b"data": _nested(300, "dict")})
    ids, client, output = _run(redis_server, database_url, stream,
                               None, entries)  # fmt: skip
    db = database_url.rsplit("/", 1)[1]
    stored = set(postgres_server.psql("SELECT stream_id FROM stream_events", db).split())
    dead = {d["x-original-id"]: d for d in dead_letters(client, stream + ":dlq")}
    bad = {i for i, e in zip(ids, entries, strict=True) if b"\\u0000" in e[b"data"]
           or e[b"data"].startswith(b'{"a":')}  # fmt: skip
    assert len(bad) == 16
    assert set(dead) == bad
    assert stored == set(ids) - bad
    assert {d["x-reason"] for d in dead.values()} == {"invalid"}
    assert all(d["x-error"] for d in dead.values()), dead
    assert "Traceback" not in output


def test_the_batch_histogram_exposes_what_prometheus_clients_histogram_does() -> None:
    registry = CollectorRegistry()
    values = [0.0, 0.001, 0.0010001, 0.3, 7.5, 1e9, 0.25, 0.25, 300.0, 300.5]
    plain = Histogram("plain", "x", ["a"], buckets=E2E_BUCKETS, registry=registry)
    batched = BatchHistogram("batched", "x", ["a"], buckets=E2E_BUCKETS, registry=registry)
    for value in values:
        plain.labels("1").observe(value)
    batched.labels("1").observe_many(values[:4])
    batched.labels("1").observe_many(values[4:-1])
    batched.labels("1").observe(values[-1])
    samples = {
        family.name: [
            (s.name.split("_", 1)[1], s.labels, s.value)
            for s in family.samples
            if not s.name.endswith("_created")  # the consumer disables `_created` series
        ]
        for family in registry.collect()
    }
    assert samples["batched"] == samples["plain"]


@FUZZ
@given(
    now_ms=st.integers(0, 2**45),
    offsets=st.lists(st.integers(-5_000, 400_000) | st.sampled_from([0, 1, 5, 10, 25, 100]),
                     max_size=60),
    buckets=st.sampled_from([E2E_BUCKETS, (0.0025, 0.1, 1.0, 7.3), (0.001,)]),
)  # fmt: skip
def test_elapsed_milliseconds_land_where_their_seconds_do(
    now_ms: int, offsets: list[int], buckets: tuple[float, ...]
) -> None:
    """`observe_elapsed` (entry IDs' milliseconds, one bisection per bucket) counts each into
    the bucket `observe_many` puts `max(0, now - t) / 1000` in, whatever their order; instants
    after `now` (another host's clock) count as 0 s."""
    since = [now_ms - d for d in offsets]
    registry = CollectorRegistry()
    fast = BatchHistogram("fast", "x", [], buckets=buckets, registry=registry).labels()
    plain = BatchHistogram("plain", "x", [], buckets=buckets, registry=registry).labels()
    fast.observe_elapsed(now_ms, since)
    plain.observe_many([max(0, now_ms - t) / 1000 for t in since])
    assert fast.counts == plain.counts
    assert fast.sum == pytest.approx(plain.sum, rel=1e-12, abs=1e-9)
