"""LoadMeter: request rate with injected times, key sampling with an injected rng, decay."""

from __future__ import annotations

import random

import pytest

from memcluster.node.load import MAX_TRACKED, SAMPLE_EVERY, LoadMeter


class AlwaysSample(random.Random):
    """Every observed key is sampled."""

    def random(self) -> float:
        return 0.0


class NeverCalled(random.Random):
    def random(self) -> float:
        raise AssertionError("the rng was consulted")


def test_rate_is_zero_on_the_first_call() -> None:
    meter = LoadMeter()
    meter.observe(500)
    assert meter.rate(100.0) == 0.0


def test_rate_counts_operations_since_the_previous_call() -> None:
    meter = LoadMeter()
    meter.rate(100.0)
    meter.observe(60)
    meter.observe(40)
    assert meter.rate(102.0) == 50.0
    assert meter.rate(104.0) == 0.0  # nothing since
    meter.observe(30)
    assert meter.rate(104.5) == 60.0
    assert meter.ops == 130  # the running total is not reset


def test_rate_without_time_passing_is_zero() -> None:
    meter = LoadMeter()
    meter.rate(100.0)
    meter.observe(10)
    assert meter.rate(100.0) == 0.0
    assert meter.rate(99.0) == 0.0


def test_observing_without_a_key_does_not_sample() -> None:
    meter = LoadMeter(rng=NeverCalled())
    meter.observe(1000)
    assert meter.ops == 1000
    assert meter.hot_keys() == []


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_about_one_request_in_sample_every_is_sampled(seed: int) -> None:
    meter = LoadMeter(rng=random.Random(seed))
    n = 16_000
    for i in range(n):
        meter.observe(1, f"k{i}".encode())
    # Same seed, same draws: exactly these requests were sampled.
    draws = random.Random(seed)
    expected = [f"k{i}".encode() for i in range(n) if draws.random() < 1 / SAMPLE_EVERY]
    sampled = meter.hot_keys(top=n)
    assert sorted(sampled) == sorted(expected)
    assert n / SAMPLE_EVERY * 0.8 < len(sampled) < n / SAMPLE_EVERY * 1.2
    assert meter.ops == n


def test_hot_keys_rank_by_sampled_count() -> None:
    meter = LoadMeter(rng=random.Random(7))
    for _ in range(4000):
        meter.observe(1, b"hot")
    for _ in range(1000):
        meter.observe(1, b"warm")
    for _ in range(100):
        meter.observe(1, b"cool")
    assert meter.hot_keys(top=2) == [b"hot", b"warm"]


def test_hot_keys_halve_every_count_at_each_report() -> None:
    meter = LoadMeter(rng=AlwaysSample())
    for key, count in ((b"a", 8), (b"b", 3), (b"c", 1)):
        for _ in range(count):
            meter.observe(1, key)
    assert meter.hot_keys() == [b"a", b"b", b"c"]  # then a 4, b 1, c gone
    assert meter.hot_keys() == [b"a", b"b"]  # then a 2, b gone
    assert meter.hot_keys() == [b"a"]  # then a 1
    assert meter.hot_keys() == [b"a"]  # then gone
    assert meter.hot_keys() == []


def test_recent_popularity_overtakes_old_popularity() -> None:
    meter = LoadMeter(rng=AlwaysSample())
    for _ in range(8):
        meter.observe(1, b"old")
    meter.hot_keys()  # old: 4
    for _ in range(5):
        meter.observe(1, b"new")
    assert meter.hot_keys(top=1) == [b"new"]


def test_tracked_keys_are_bounded() -> None:
    meter = LoadMeter(rng=AlwaysSample())
    for _ in range(3):
        meter.observe(1, b"popular")
    for i in range(2 * MAX_TRACKED):  # one more than 2 x MAX_TRACKED distinct keys
        meter.observe(1, f"k{i}".encode())
    kept = meter.hot_keys(top=10 * MAX_TRACKED)
    assert len(kept) == MAX_TRACKED
    assert kept[0] == b"popular"
