"""`streamscale produce`: payloads from a template, written one XADD at a time or pipelined.

The default payload is a product row (sku, name, price, url, created_at). A
`--template` is any JSON object whose strings may hold placeholders: `{n}` (the message's number,
from 0), `{uuid}`, `{now}` (ISO 8601 with the UTC offset), `{rand}` (a float in [0, 1)). A string
that is exactly one placeholder takes the placeholder's own type (`"{n}"` becomes the number).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from streamscale.core.constants import DATA_FIELD
from streamscale.core.errors import REDIS_RETRYABLE
from streamscale.core.shards import shard_stream, shard_streams
from streamscale.core.streams import Client

PLACEHOLDER = re.compile(r"\{(n|uuid|now|rand)\}")
POISON_PREFIX = b"not json: "
"""A poison message's `data`: undecodable, so every consumer dead-letters it as `invalid`."""


class TemplateError(ValueError):
    """The `--template` is unusable; the text says why."""


def parse_template(text: str) -> dict[str, Any]:
    """A `--template` (JSON object text) checked for shape."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TemplateError(f"--template is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TemplateError(
            f"--template must be a JSON object (the payload), got {type(value).__name__}"
        )
    return value


def _placeholders(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "n": n,
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "now": datetime.datetime.now(datetime.UTC).isoformat(),
        "rand": rng.random(),
    }


def render(template: Any, values: dict[str, Any]) -> Any:
    """`template` with its placeholders filled in from `values`, recursively."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    return template


PRODUCT_FIELDS = ("sku", "name", "price", "url", "created_at")


def product(n: int, rng: random.Random) -> dict[str, Any]:
    """The default payload: a product row, as a price scraper produces them."""
    return {
        "sku": f"SKU-{n:08d}",
        "name": f"Product {n}",
        "price": round(rng.uniform(0.5, 500.0), 2),
        "url": f"https://shop.example.com/p/{n}",
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }


@dataclasses.dataclass
class Generator:
    """Stream-entry fields for message number `n`: a payload, or a poison message."""

    template: dict[str, Any] | None = None
    poison_ratio: float = 0.0
    seed: int | None = None
    key_field: str | None = None
    """The payload field whose value is the partition key (sharded streams); None: `n`."""
    rng: random.Random = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.poison_ratio <= 1.0:
            raise TemplateError(f"--poison-ratio must be within [0, 1], got {self.poison_ratio}")
        self.rng = random.Random(self.seed)
        fields = PRODUCT_FIELDS if self.template is None else tuple(self.template)
        if self.key_field is not None and self.key_field not in fields:
            raise TemplateError(
                f"--key-field {self.key_field!r} is not a field of the payload"
                f" ({', '.join(fields)})"
            )

    def fields(self, n: int) -> tuple[dict[str, bytes], bool]:
        """The entry's fields and whether it is poison."""
        fields, poison, _key = self.entry(n)
        return fields, poison

    def entry(self, n: int) -> tuple[dict[str, bytes], bool, str]:
        """The entry's fields, whether it is poison, and its partition key."""
        if self.poison_ratio and self.rng.random() < self.poison_ratio:
            return {DATA_FIELD: POISON_PREFIX + str(n).encode()}, True, str(n)
        if self.template is None:
            payload = product(n, self.rng)
        else:
            payload = render(self.template, _placeholders(n, self.rng))
        key = str(n) if self.key_field is None else str(payload[self.key_field])
        return {DATA_FIELD: orjson.dumps(payload)}, False, key


@dataclasses.dataclass
class Summary:
    """What one `produce` run did."""

    stream: str
    produced: int = 0
    poison: int = 0
    seconds: float = 0.0
    length: int | None = 0
    error: str | None = None
    """Why the run ended early when Redis went away; the counts are what Redis acknowledged."""
    first_id: str | None = None
    last_id: str | None = None
    by_shard: dict[str, int] = dataclasses.field(default_factory=dict)
    """Sharded runs: entries produced into each shard."""

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["rate"] = round(self.rate, 1)
        doc["seconds"] = round(self.seconds, 3)
        return doc


async def produce(
    redis: Client,
    stream: str,
    count: int,
    generator: Generator,
    *,
    bulk: bool = False,
    pipeline_size: int = 500,
    rate: float | None = None,
    maxlen: int | None = None,
    progress: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    shards: int = 1,
) -> Summary:
    """Add `count` entries to `stream`; `bulk` pipelines `pipeline_size` XADDs per round trip.

    With `shards` > 1, `stream` is a logical stream: each entry goes to the shard of its
    partition key (`core.shards.shard_stream`). `rate` (entries per second) paces the run
    against a fixed schedule, so a slow round trip is caught up rather than accumulated.
    `maxlen` trims the stream approximately (`MAXLEN ~`). Setting `stop` ends the run after the
    current round trip (cancelling a task in the middle of a redis-py pipeline is not reliable).
    """
    summary = Summary(stream)
    started = time.monotonic()
    chunk = pipeline_size if bulk else 1
    n = 0
    while n < count and not (stop is not None and stop.is_set()):
        size = min(chunk, count - n)
        if rate:
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                if stop is None:
                    await asyncio.sleep(ahead)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), ahead)
                    if stop.is_set():
                        break
        batch = [generator.entry(i) for i in range(n, n + size)]
        targets = [
            stream if shards == 1 else shard_stream(stream, key, shards) for _f, _p, key in batch
        ]
        try:
            if bulk:
                async with redis.pipeline(transaction=False) as pipe:
                    for target, (fields, _poison, _key) in zip(targets, batch, strict=True):
                        pipe.xadd(target, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                    ids = await pipe.execute()
            else:
                fields = batch[0][0]
                ids = [await redis.xadd(targets[0], fields, maxlen=maxlen, approximate=True)]  # type: ignore[arg-type]
        except REDIS_RETRYABLE as exc:
            # Keep what was acknowledged so far: the summary is printed either way.
            summary.error = f"lost Redis after {n} entries: {type(exc).__name__}: {exc}"
            break
        summary.first_id = summary.first_id or _text(ids[0])
        summary.last_id = _text(ids[-1])
        summary.poison += sum(1 for _fields, poison, _key in batch if poison)
        if shards > 1:
            for target in targets:
                summary.by_shard[target] = summary.by_shard.get(target, 0) + 1
        n += size
        summary.produced = n
        if progress is not None:
            progress(size)
    summary.seconds = time.monotonic() - started
    if summary.error is None:
        names = [stream] if shards == 1 else shard_streams(stream, shards)
        summary.length = sum([int(await redis.xlen(name)) for name in names])
    else:
        summary.length = None
    return summary


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
