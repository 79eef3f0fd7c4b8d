"""The warm/cold tiers' zstd codec: round trips, its two dictionaries, and old payloads."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.node.tiers import record
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.codec import (
    FIRST_DICT,
    FIRST_LARGE_DICT,
    LARGE_SAMPLE_HEAD,
    PLAIN,
    RAW,
    SMALL_VALUE,
    Codec,
)
from memcluster.node.tiers.cold import ColdTier

NOW = 1_700_000_000.0
GiB = 1 << 30
WORDS = ("cache", "node", "value", "key", "store", "user", "order", "product", "price", "review")


def doc(i: int, size: int) -> bytes:
    """A JSON record of about ``size`` bytes, similar to its neighbours as real ones are."""
    rng = random.Random(i)
    head = {"sku": f"SKU-{i:08d}", "price": rng.randrange(10_000)}
    reviews: list[bytes] = []
    length = 0
    while length < size:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(5, 20)))
        review = {"user": f"u{rng.randrange(10**6):06d}", "stars": rng.randrange(6), "text": text}
        reviews.append(json.dumps(review, separators=(",", ":")).encode())
        length += len(reviews[-1]) + 1
    return (
        json.dumps(head, separators=(",", ":")).encode()[:-1]
        + b',"reviews":['
        + b",".join(reviews)
        + b"]}"
    )


def small_docs(n: int, start: int = 0) -> list[bytes]:
    return [doc(i, 200) for i in range(start, start + n)]


def large_docs(n: int, size: int = 4096, start: int = 0) -> list[bytes]:
    return [doc(i, size) for i in range(start, start + n)]


def trained() -> Codec:
    """A level-3 codec that has trained both dictionaries on a modest sample."""
    codec = Codec(3, train_samples=300, large_train_bytes=400_000)
    for value in small_docs(300) + large_docs(120):
        codec.compress(value)
    assert set(codec.dictionaries) == {FIRST_DICT, FIRST_LARGE_DICT}
    return codec


@functools.cache
def trained_once() -> Codec:
    return trained()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3 * SMALL_VALUE) | st.sampled_from(small_docs(3) + large_docs(3)))
def test_every_value_round_trips_and_never_grows_by_more_than_a_byte(value: bytes) -> None:
    for codec in (Codec(3, train=False), trained_once()):
        payload = codec.compress(value)
        assert len(payload) <= len(value) + 1
        assert codec.decompress(payload) == value


def test_small_and_large_values_train_their_own_dictionaries() -> None:
    saved: list[int] = []
    codec = Codec(
        3, train_samples=300, large_train_bytes=400_000, on_trained=lambda n, _: saved.append(n)
    )
    plain = Codec(3, train=False)
    for value in large_docs(120) + small_docs(300):
        codec.compress(value)
    assert saved == [FIRST_LARGE_DICT, FIRST_DICT]  # in the order their classes filled up
    small, large = small_docs(50, start=1000), large_docs(50, start=1000)
    assert {codec.compress(v)[0] for v in small} == {FIRST_DICT}
    assert {codec.compress(v)[0] for v in large} == {FIRST_LARGE_DICT}
    for values, share in ((small, 0.7), (large, 0.9)):
        with_dict = sum(len(codec.compress(v)) for v in values)
        assert with_dict < share * sum(len(plain.compress(v)) for v in values)
        assert [codec.decompress(codec.compress(v)) for v in values] == values


def test_large_values_are_sampled_by_their_heads() -> None:
    """64 KB values count LARGE_SAMPLE_HEAD bytes each towards the training budget."""
    saved: list[int] = []
    codec = Codec(
        3, large_train_bytes=20 * LARGE_SAMPLE_HEAD, on_trained=lambda n, _: saved.append(n)
    )
    values = large_docs(21, size=65536)
    for value in values[:19]:
        codec.compress(value)
    assert not saved, "19 heads are short of the budget (19 whole values would exceed it)"
    codec.compress(values[19])
    assert saved == [FIRST_LARGE_DICT]


def test_payloads_in_the_earlier_format_still_read() -> None:
    """Raw, plain and small-dictionary payloads as the single-dictionary codec wrote them."""
    samples: list[bytes | bytearray | memoryview] = list(small_docs(400))
    zdict = zstandard.train_dictionary(16 * 1024, samples, level=3)
    old = zstandard.ZstdCompressor(
        level=3, dict_data=zdict, write_content_size=True, write_dict_id=False
    )
    value, big = small_docs(1, start=500)[0], large_docs(1)[0]
    payloads = {
        bytes((RAW,)) + b"xyz": b"xyz",
        bytes((PLAIN,))
        + zstandard.ZstdCompressor(level=3, write_content_size=True).compress(big): big,
        bytes((FIRST_DICT,)) + old.compress(value): value,
    }
    codec = Codec(5)
    codec.add_dictionary(FIRST_DICT, zdict.as_bytes())
    assert {p: codec.decompress(p) for p in payloads} == payloads
    # The old dictionary keeps compressing small values; large ones get a dictionary of their own.
    assert codec.compress(value)[0] == FIRST_DICT
    codec = Codec(3, large_train_bytes=200_000)
    codec.add_dictionary(FIRST_DICT, zdict.as_bytes())
    for v in large_docs(60):
        codec.compress(v)
    assert set(codec.dictionaries) == {FIRST_DICT, FIRST_LARGE_DICT}
    assert codec.compress(value)[0] == FIRST_DICT and codec.compress(big)[0] == FIRST_LARGE_DICT


def test_loaded_dictionaries_pick_the_highest_number_of_each_class() -> None:
    source = trained_once().dictionaries
    codec = Codec(3)
    for number in (FIRST_DICT, FIRST_DICT + 1):
        codec.add_dictionary(number, source[FIRST_DICT])
    codec.add_dictionary(FIRST_LARGE_DICT, source[FIRST_LARGE_DICT])
    assert codec.compress(small_docs(1)[0])[0] == FIRST_DICT + 1
    assert codec.compress(large_docs(1)[0])[0] == FIRST_LARGE_DICT
    payload = trained_once().compress(small_docs(1)[0])
    assert codec.decompress(payload) == small_docs(1)[0]  # dictionary 2 still reads


@pytest.mark.parametrize("number", [-1, 0, PLAIN, 256])
def test_dictionary_numbers_outside_the_range_are_refused(number: int) -> None:
    with pytest.raises(ValueError, match=r"outside 2\.\.255"):
        Codec(3).add_dictionary(number, trained_once().dictionaries[FIRST_DICT])


def test_a_missing_dictionary_is_named() -> None:
    payload = trained_once().compress(large_docs(1)[0])
    with pytest.raises(ValueError, match="dictionary 128"):
        Codec(3).decompress(payload)


def test_training_that_fails_retries_with_more_samples_then_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []

    def fail(dict_size: int, samples: list[bytes], **_: int) -> zstandard.ZstdCompressionDict:
        sizes.append(len(samples))
        raise zstandard.ZstdError("too uniform")

    monkeypatch.setattr(zstandard, "train_dictionary", fail)
    codec = Codec(3, train_samples=10)
    for value in small_docs(200):
        assert codec.decompress(codec.compress(value)) == value
    assert sizes == [10, 20, 40] and not codec.dictionaries


def test_a_cold_tier_written_with_only_the_small_dictionary_reads_and_upgrades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold directory from before large dictionaries: a node restarted on it reads it all."""
    path = str(tmp_path / "cold")
    small, large = small_docs(2100), large_docs(300)
    values = {b"s%d" % i: v for i, v in enumerate(small)} | {
        b"l%d" % i: v for i, v in enumerate(large[:100])
    }
    # The earlier codec: a small dictionary, large values in plain frames. Training
    # inline (not on the worker thread) fixes which records use which dictionary.
    monkeypatch.setattr("memcluster.node.tiers.cold.Codec", inline_codec(large_train_bytes=1 << 62))
    tier = ColdTier(path, GiB)
    for key, value in values.items():
        tier.put(key, Item(value, 1), NOW)
    tier.close()
    assert kinds(path, [b"l0", b"l99"]) == {PLAIN} and kinds(path, [b"s2099"]) == {FIRST_DICT}
    monkeypatch.setattr("memcluster.node.tiers.cold.Codec", inline_codec(large_train_bytes=400_000))
    tier = ColdTier(path, GiB)
    assert {key: tier.peek(key) for key in values} == {k: Item(v, 1) for k, v in values.items()}
    more = {b"m%d" % i: v for i, v in enumerate(large[100:])}
    for key, value in more.items():
        tier.put(key, Item(value, 1), NOW)
    tier.close()
    assert kinds(path, [b"l0", b"s2099", b"m199"]) == {PLAIN, FIRST_DICT, FIRST_LARGE_DICT}
    tier = ColdTier(path, GiB)
    everything = values | more
    assert {key: tier.peek(key) for key in everything} == {
        k: Item(v, 1) for k, v in everything.items()
    }
    tier.close()


def inline_codec(**overrides: Any) -> Callable[..., Codec]:
    """A Codec factory for ColdTier that trains inside compress, with ``overrides``."""

    def make(*args: Any, **kwargs: Any) -> Codec:
        return Codec(*args, **{**kwargs, **overrides, "background": False})

    return make


def kinds(path: str, keys: list[bytes]) -> set[int]:
    """The codec byte of each key's record in a closed cold directory (short keys)."""
    with lmdb.open(path, max_dbs=4) as env, env.begin() as txn:
        items = env.open_db(b"items", txn=txn, create=False)
        return {(txn.get(key, db=items) or b"")[record.HEADER_SIZE] for key in keys}


def test_background_training_keeps_compressing_until_the_dictionary_is_ready() -> None:
    saved: list[int] = []
    codec = Codec(
        3,
        train_samples=300,
        large_train_bytes=400_000,
        background=True,
        on_trained=lambda number, _data: saved.append(number),
    )
    payloads = [codec.compress(v) for v in small_docs(300)]
    # The 300th value handed the sample to the worker; nothing is installed yet.
    assert not codec.dictionaries and payloads[-1][0] in (RAW, PLAIN)
    codec.settle()
    assert set(codec.dictionaries) == {FIRST_DICT} and saved == [FIRST_DICT]
    later = codec.compress(small_docs(1, start=500)[0])
    assert later[0] == FIRST_DICT
    assert [codec.decompress(p) for p in payloads] == small_docs(300)


def test_a_finished_background_training_is_picked_up_by_the_next_compress() -> None:
    codec = Codec(3, train_samples=300, background=True)
    for value in small_docs(300):
        codec.compress(value)
    training = codec._small.training
    assert training is not None
    training.result(timeout=60)  # done on the worker thread; not yet installed
    assert not codec.dictionaries
    assert codec.compress(small_docs(1, start=900)[0])[0] == FIRST_DICT
