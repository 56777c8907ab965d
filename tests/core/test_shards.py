"""Shard naming and the partition-key hash: stable, spread, one Redis Cluster slot per shard."""

from __future__ import annotations

import collections
import zlib

import pytest
from redis.crc import key_slot

from streamscale.core.shards import (
    logical_stream,
    shard_for,
    shard_name,
    shard_stream,
    shard_streams,
)


def test_the_shard_of_a_key_is_crc32_mod_n_so_any_language_can_compute_it() -> None:
    assert shard_for("user-42", 8) == zlib.crc32(b"user-42") % 8
    # Fixed values, so a change of hash is a visible break of every producer's routing.
    assert [shard_for(f"user-{n}", 4) for n in range(6)] == [
        zlib.crc32(f"user-{n}".encode()) % 4 for n in range(6)
    ]
    assert shard_for(b"user-42", 8) == shard_for("user-42", 8)
    assert shard_for(42, 8) == shard_for("42", 8)
    assert shard_for("anything", 1) == 0
    with pytest.raises(ValueError, match="at least 1"):
        shard_for("x", 0)


def test_keys_spread_evenly_over_the_shards() -> None:
    counts = collections.Counter(shard_for(f"customer-{n}", 8) for n in range(40_000))
    assert sorted(counts) == list(range(8))
    assert max(counts.values()) < 1.1 * min(counts.values())


def test_each_shard_is_its_own_hash_tag_and_its_dead_letter_stream_shares_its_slot() -> None:
    names = shard_streams("orders", 6)
    assert names == [shard_name("orders", i) for i in range(6)] == [
        "{orders:0}", "{orders:1}", "{orders:2}", "{orders:3}", "{orders:4}", "{orders:5}"
    ]  # fmt: skip
    assert len({key_slot(name.encode()) for name in names}) == 6, "spread over slots"
    for name in names:
        assert key_slot(name.encode()) == key_slot(f"{name}:dlq".encode())
        assert key_slot(name.encode()) == key_slot(f"{name}:dlq:count:{name}:g".encode())
    assert shard_stream("orders", "user-42", 6) == names[shard_for("user-42", 6)]
    assert logical_stream("{orders:5}") == ("orders", 5)
    assert logical_stream("{a:b:12}") == ("a:b", 12)
    for other in ("orders", "{orders}", "{orders:01}", "{orders:x}", "x{orders:1}"):
        assert logical_stream(other) is None, other
    with pytest.raises(ValueError, match=r"1\.\.1024"):
        shard_streams("orders", 0)
