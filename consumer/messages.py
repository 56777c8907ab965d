"""Decoding stream entries into messages.

An entry's payload is the JSON object in its `data` field, or, when there is no `data` field,
its flat field map (values decoded as UTF-8 text). Decoding never raises: a message that
cannot be decoded carries the reason, and the batch goes on without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import orjson

from streamscale.core.constants import DATA_FIELD
from streamscale.core.streams import Entry, Fields, StreamId, id_millis

_DATA = DATA_FIELD.encode()
_DATA_SIZE = len(_DATA)


@dataclasses.dataclass(slots=True)
class Message:
    """One entry of the stream, decoded."""

    id: StreamId
    fields: Fields
    payload: dict[str, Any] | None
    error: str | None = None
    """Why the payload could not be decoded (the message goes to the dead-letter stream)."""
    stream: str = ""
    """The stream the entry was read from (a consumer may read several)."""
    size: int = 0
    """Bytes of its field names and values (`entry_size`)."""
    redelivered: bool = False
    """Delivered before: a restarted consumer's own pending entry or one claimed from another
    consumer. Its earlier delivery may have been stored or handled already."""

    @property
    def produced_ms(self) -> int:
        """When the entry was added: the millisecond part of its ID."""
        return id_millis(self.id)

    def field(self, name: str) -> str | None:
        """A raw field as text, or None."""
        value = self.fields.get(name.encode())
        return None if value is None else value.decode("utf-8", "replace")


def entry_size(fields: Fields) -> int:
    """Bytes of field names and values: what `max_message_bytes` bounds."""
    return sum(map(len, fields)) + sum(map(len, fields.values()))


def decode(entry_id: StreamId, fields: Fields, max_bytes: int, stream: str = "") -> Message:
    """Decode one entry; a bad one comes back with `payload=None` and `error` set."""
    raw = fields.get(_DATA)
    # The usual entry is the `data` field alone: its size without summing over the map saves
    # about a third of decoding's CPU per message (bench/README.md).
    size = _DATA_SIZE + len(raw) if raw is not None and len(fields) == 1 else entry_size(fields)
    payload, error = _payload(fields, raw, size, max_bytes)
    return Message(entry_id, fields, payload, error, stream, size)


def _payload(
    fields: Fields, raw: bytes | None, size: int, max_bytes: int
) -> tuple[dict[str, Any] | None, str | None]:
    """The payload of an entry, or None and why it has none."""
    if size > max_bytes:
        return None, f"message is {size} bytes, above {max_bytes}"
    if raw is None:
        try:
            return {k.decode(): v.decode() for k, v in fields.items()}, None
        except UnicodeDecodeError as exc:
            return None, f"field is not UTF-8 text: {exc}"
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"data is not JSON: {exc}"
    if not isinstance(payload, dict):
        return None, f"data is JSON {type(payload).__name__}, expected an object"
    return payload, None


def decode_all(
    entries: Iterable[tuple[StreamId, Fields]], max_bytes: int, stream: str = ""
) -> list[Message]:
    """Decode a batch of (live) entries of `stream`.

    The usual entry (a `data` field alone, holding a JSON object within the size cap) is
    decoded inline; anything else goes through `decode`. Inline, a batch of product entries
    decodes in about two thirds of the time (bench/README.md).
    """
    messages: list[Message] = []
    append = messages.append
    loads = orjson.loads
    limit = max_bytes - _DATA_SIZE
    for entry_id, fields in entries:
        raw = fields.get(_DATA)
        if raw is not None and len(fields) == 1 and len(raw) <= limit:
            try:
                payload = loads(raw)
            except orjson.JSONDecodeError:
                payload = None
            if type(payload) is dict:
                append(Message(entry_id, fields, payload, None, stream, _DATA_SIZE + len(raw)))
                continue
        append(decode(entry_id, fields, max_bytes, stream))
    return messages


def split_deleted(entries: Iterable[Entry]) -> tuple[list[tuple[StreamId, Fields]], list[StreamId]]:
    """Separate live entries from pending ones whose entry was deleted (fields None)."""
    live: list[tuple[StreamId, Fields]] = []
    deleted: list[StreamId] = []
    for entry_id, fields in entries:
        if fields is None:
            deleted.append(entry_id)
        else:
            live.append((entry_id, fields))
    return live, deleted
