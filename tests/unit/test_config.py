"""Node configuration: human units, file and env loading, and messages that name the key."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcluster.common import config as config_module
from memcluster.common.config import (
    ColdTierConfig,
    ConfigError,
    HotTierConfig,
    LimitsConfig,
    NodeConfig,
    PressureConfig,
    ServerConfig,
    TiersConfig,
    WarmTierConfig,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

GB = 1000**3

DESIGN_YAML = """\
memory:
  tiers:
    hot:  {enabled: true, capacity: "5GB",  ttl: "24h", cleanup_interval: "1h", eviction: lfu}
    warm: {enabled: true, capacity: "20GB", compression_level: 3, ttl: "7d"}
    cold: {enabled: true, capacity: "100GB", compression_level: 5, path: "/data/cold"}
"""

DESIGN_TOML = """\
[server]
listen = "0.0.0.0:7400"
grace_period = "1m"

[memory.tiers.hot]
capacity = "5GB"
ttl = "24h"
eviction = "lfu"

[memory.tiers.cold]
capacity = 107374182400
path = "/data/cold"
"""


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(data)
    return info.value.problems


def tiers(**sections: dict[str, Any]) -> dict[str, Any]:
    return {"memory": {"tiers": sections}}


# --- human units -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        (1024, 1024),
        ("512B", 512),
        ("1KB", 1000),
        ("5GB", 5 * GB),
        ("5 gb", 5 * GB),
        ("2TB", 2 * 1000**4),
        ("1KiB", 1024),
        ("32MiB", 32 * 1024**2),
        ("1.5GiB", 1536 * 1024**2),
        ("1.5GB", 1_500_000_000),
        (".5kb", 500),
        ("  7 mib ", 7 * 1024**2),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "  ", "-5GB", "5 gigs", "GB", "1.2.3MB", "5XB", "5G", "1e3", -1, math.inf, True]
)
def test_parse_size_rejects(bad: str | float) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("1.5", 1.5),
        (90, 90.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("24h", 86400.0),
        ("24H", 86400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
        ("1m500ms", 60.5),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "-1s", "forever", "1m30", "h", "1hh", "1 hour", "1y", -0.5, math.nan, False]
)
def test_parse_duration_rejects(bad: str | float) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("n", "human", "exact"),
    [
        (0, "0B", "0B"),
        (999, "999B", "999B"),
        (1000, "1KB", "1KB"),
        (1024, "1KiB", "1KiB"),
        (1536, "1.5KiB", "1.5KiB"),
        (256 * 1000**2, "256MB", "256MB"),
        (32 * 1024**2, "32MiB", "32MiB"),
        (12345, "12.3KB", "12345B"),
        (999_999, "1MB", "999999B"),
        (1_234_567_891, "1.23GB", "1234567891B"),
    ],
)
def test_format_size(n: int, human: str, exact: str) -> None:
    assert format_size(n) == human
    assert format_size(n, exact=True) == exact


@pytest.mark.parametrize(
    ("seconds", "human"),
    [(0, "0s"), (0.25, "250ms"), (1.5, "1.5s"), (90, "1m30s"), (5400, "1h30m"), (604800, "7d")],
)
def test_format_duration(seconds: float, human: str) -> None:
    assert format_duration(seconds) == human


def test_format_rejects_negatives() -> None:
    with pytest.raises(ValueError):
        format_size(-1)
    with pytest.raises(ValueError):
        format_duration(-1.0)


@given(st.integers(min_value=0, max_value=2**60))
def test_format_size_round_trips_within_rounding(n: int) -> None:
    assert parse_size(format_size(n, exact=True)) == n
    assert parse_size(format_size(n)) == pytest.approx(n, rel=0.005, abs=0)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_format_duration_round_trips_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- defaults, immutability, round trip --------------------------------------------------


def test_defaults_are_valid() -> None:
    config = NodeConfig()
    config.validate()
    assert NodeConfig.from_mapping({}) == config
    assert config.memory.tiers.hot.capacity == 256 * 1000**2
    assert config.memory.tiers.hot.ttl == 86400.0
    assert config.limits.max_value_bytes == 32 * 1024**2


def test_config_is_frozen_with_slots() -> None:
    config = NodeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.memory.tiers.hot.capacity = 1  # type: ignore[misc]
    assert not hasattr(config.memory.tiers.hot, "__dict__")


def test_to_mapping_round_trips() -> None:
    config = NodeConfig(
        server=ServerConfig(id="n1", listen="[::1]:0", grace_period=2.5),
        limits=LimitsConfig(max_value_bytes=1_234_567),
        memory=dataclasses.replace(
            NodeConfig().memory,
            tombstone_ttl=3600.1,
            tiers=TiersConfig(hot=HotTierConfig(capacity=5 * GB, eviction="lfu")),
            pressure=PressureConfig(high_watermark=0.8),
        ),
    )
    plain = config.to_mapping()
    assert plain["memory"]["tiers"]["hot"]["capacity"] == "5GB"
    assert plain["server"]["grace_period"] == "2.5s"
    assert NodeConfig.from_mapping(plain) == config


# --- files and env -----------------------------------------------------------------------


def test_yaml_file_in_the_design_shape(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(DESIGN_YAML)
    hot = NodeConfig.from_file(path).memory.tiers.hot
    assert hot == HotTierConfig(
        capacity=5 * GB, ttl=86400.0, cleanup_interval=3600.0, eviction="lfu"
    )
    cold = NodeConfig.from_file(path).memory.tiers.cold
    assert cold == ColdTierConfig(capacity=100 * GB, path="/data/cold")


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(DESIGN_TOML)
    config = NodeConfig.from_file(path)
    assert config.server.listen == "0.0.0.0:7400"
    assert config.server.grace_period == 60.0
    assert config.memory.tiers.hot.eviction == "lfu"
    assert config.memory.tiers.cold.capacity == 100 * 1024**3
    assert config.memory.tiers.warm == WarmTierConfig()


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yml"
    path.write_text("")
    assert NodeConfig.from_file(path) == NodeConfig()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.yaml", None, "missing.yaml: config file not found"),
        ("node.ini", "", "unsupported config file type"),
        ("bad.yaml", "memory:\n  tiers: [\n", "bad.yaml, line 3"),
        ("bad.toml", "[memory\n", "bad.toml: invalid TOML"),
        ("list.yaml", "- 1\n- 2\n", "expected a table of settings, got list"),
    ],
)
def test_file_errors_name_the_file(
    tmp_path: Path, name: str, text: str | None, expected: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        NodeConfig.from_file(path)


def test_env_overrides_beat_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(DESIGN_YAML)
    env = {
        "MEMCLUSTER_MEMORY__TIERS__HOT__CAPACITY": "1.5GiB",
        "MEMCLUSTER_MEMORY__TIERS__COLD__ENABLED": "no",
        "MEMCLUSTER_MEMORY__PRESSURE__HIGH_WATERMARK": "0.5",
        "MEMCLUSTER_LIMITS__MAX_BATCH_ITEMS": "7",
        "HOME": "/root",
    }
    config = NodeConfig.load(path, env=env)
    hot = config.memory.tiers.hot
    assert hot.capacity == 1536 * 1024**2
    assert hot.ttl == 86400.0  # from the file
    assert hot.eviction == "lfu"  # from the file
    assert config.memory.tiers.cold.enabled is False
    assert config.memory.tiers.cold.path == "/data/cold"  # from the file
    assert config.memory.pressure.high_watermark == 0.5
    assert config.limits.max_batch_items == 7


def test_load_reads_the_file_named_by_memcluster_config(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(DESIGN_YAML)
    config = NodeConfig.load(env={"MEMCLUSTER_CONFIG": str(path)})
    assert config.memory.tiers.hot.capacity == 5 * GB
    assert NodeConfig.load(env={}) == NodeConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False)],
)
def test_env_bools(text: str, expected: bool) -> None:
    config = NodeConfig.from_env({"MEMCLUSTER_MEMORY__PROMOTE_ON_READ": text})
    assert config.memory.promote_on_read is expected


def test_env_problems_name_the_key_and_the_variable() -> None:
    env = {
        "MEMCLUSTER_MEMORY__TIERS__HOT__CAPCITY": "5GB",
        "MEMCLUSTER_MEMORY__TIERS__WARM__COMPRESSION_LEVEL": "high",
        "MEMCLUSTER_CONFIG": "",  # allowed: not a setting
    }
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_env(env)
    assert info.value.problems == [
        "memory.tiers.hot.capcity (from MEMCLUSTER_MEMORY__TIERS__HOT__CAPCITY): "
        "unknown key (did you mean capacity?)",
        "memory.tiers.warm.compression_level"
        " (from MEMCLUSTER_MEMORY__TIERS__WARM__COMPRESSION_LEVEL):"
        ' expected a whole number, got "high"',
    ]


def test_unknown_env_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^log_level \(from MEMCLUSTER_LOG_LEVEL\): unknown key"):
        NodeConfig.from_env({"MEMCLUSTER_LOG_LEVEL": "debug"})


# --- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            tiers(warm={"compression_level": 30}),
            "memory.tiers.warm.compression_level: 30 is outside zstd's range 1..22",
        ),
        (
            tiers(hot={"capacity": "5 gigs"}),
            'memory.tiers.hot.capacity: "5 gigs" is not a size (examples: 512MB, 5GB, 1.5GiB)',
        ),
        (
            tiers(hot={"enabled": "maybe"}),
            'memory.tiers.hot.enabled: expected true/false, got "maybe"',
        ),
        (
            tiers(hot={"eviction": "fifo"}),
            'memory.tiers.hot.eviction: expected one of lru, lfu, got "fifo"',
        ),
        (tiers(hot={"ttl": "forever"}), 'memory.tiers.hot.ttl: "forever" is not a duration'),
        (tiers(hot={"capacity": 0}), "memory.tiers.hot.capacity: must be above 0"),
        (tiers(hot={"cleanup_interval": 0}), "memory.tiers.hot.cleanup_interval: must be above 0s"),
        (tiers(cold={"path": 7}), "memory.tiers.cold.path: expected a string, got 7"),
        (tiers(cold={"path": ""}), "memory.tiers.cold.path: must not be empty"),
        (
            tiers(hot={"enabled": False}, warm={"enabled": False}, cold={"enabled": False}),
            "memory.tiers: at least one tier must be enabled",
        ),
        ({"memory": {"cleanup_batch": 0}}, "memory.cleanup_batch: 0 must be at least 1"),
        ({"memory": {"tombstone_ttl": 0}}, "memory.tombstone_ttl: must be above 0s"),
        (
            {"memory": {"promote_chance": 0}},
            "memory.promote_chance: 0.0 is outside (0, 1]: a probability, such as 0.25"
            " (promote_on_read: false for none)",
        ),
        ({"memory": {"promote_chance": 1.5}}, "memory.promote_chance: 1.5 is outside (0, 1]"),
        ({"memory": {"promote_after": 0}}, "memory.promote_after: 0 must be at least 1"),
        ({"memory": {"tiers": "big"}}, 'memory.tiers: expected a table of settings, got "big"'),
        (
            {"memory": {"pressure": {"high_watermark": 0.97}}},
            "memory.pressure.high_watermark: 0.97 must be below critical_watermark (0.95)",
        ),
        (
            {"memory": {"pressure": {"critical_watermark": 1.5}}},
            "memory.pressure.critical_watermark: 1.5 is outside (0, 1]",
        ),
        ({"memory": {"pressure": {"min_hot_fraction": 0}}}, "memory.pressure.min_hot_fraction: 0"),
        ({"memory": {"pressure": {"check_interval": "0s"}}}, "memory.pressure.check_interval"),
        ({"limits": {"max_key_bytes": 70000}}, "limits.max_key_bytes: 70000 is above 65535"),
        (
            {"cluster": {"migration_cpu_wait": 1}},
            "cluster.migration_cpu_wait: 1.0 is outside [0, 1)",
        ),
        ({"limits": {"max_value_bytes": "0B"}}, "limits.max_value_bytes: 0 must be at least 1"),
        ({"limits": {"max_batch_items": 1.5}}, "limits.max_batch_items: expected a whole number"),
        ({"server": {"listen": "7400"}}, 'server.listen: "7400" is not host:port'),
        ({"server": {"listen": "::1:7400"}}, 'server.listen: "::1:7400" is not host:port'),
        (
            {"server": {"listen": "[nope]:7400"}},
            'server.listen: "[nope]:7400": nope is not an IPv6',
        ),
        ({"server": {"metrics_listen": "x:65536"}}, 'server.metrics_listen: "x:65536": port 65536'),
        (
            {"server": {"advertise": "node-1:0"}},
            'server.advertise: "node-1:0": port 0 is outside 1',
        ),
        ({"server": {"grace_period": []}}, "server.grace_period: [] is not a duration"),
    ],
)
def test_every_problem_names_its_key(data: dict[str, Any], expected: str) -> None:
    problems = problems_of(data)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_addresses_that_are_fine() -> None:
    server = ServerConfig(listen="[::]:7400", advertise="node-1.example:7400", metrics_listen="")
    server.validate()
    assert NodeConfig.from_mapping({"server": {"listen": "0.0.0.0:0"}}).server.listen == "0.0.0.0:0"


def test_unknown_keys_suggest_the_closest() -> None:
    assert problems_of(tiers(hot={"capcity": "5GB"})) == [
        "memory.tiers.hot.capcity: unknown key (did you mean capacity?)"
    ]
    assert problems_of({"zzz": 1}) == [
        "zzz: unknown key (expected one of server, limits, memory, cluster)"
    ]


def test_all_problems_are_collected_in_one_error() -> None:
    data = {
        "server": {"listen": "nowhere"},
        "limits": {"max_key_bytes": 0},
        "memory": {
            "tiers": {"hot": {"capcity": 1, "enabled": "maybe"}, "warm": {"compression_level": 30}},
            "promote_on_read": "sometimes",
        },
    }
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(data)
    keys = [problem.split(":")[0] for problem in info.value.problems]
    assert keys == [
        "server.listen",
        "limits.max_key_bytes",
        "memory.tiers.hot.capcity",
        "memory.tiers.hot.enabled",
        "memory.tiers.warm.compression_level",
        "memory.promote_on_read",
    ]
    assert str(info.value) == "\n".join(info.value.problems)
    assert isinstance(info.value, ValueError)


def test_validate_catches_directly_built_configs() -> None:
    config = NodeConfig(memory=dataclasses.replace(NodeConfig().memory, cleanup_batch=0))
    with pytest.raises(ConfigError, match=r"^memory\.cleanup_batch: 0 must be at least 1$"):
        config.validate()
    with pytest.raises(ConfigError, match=r"^compression_level: 0 is outside"):
        WarmTierConfig(compression_level=0).validate()


def test_config_error_keeps_its_problems_through_a_string() -> None:
    error = ConfigError("a: one\nb: two")
    assert error.problems == ["a: one", "b: two"]


def test_public_names_are_exported_and_documented() -> None:
    public = {
        name
        for name, value in vars(config_module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == config_module.__name__
    }
    assert public <= set(config_module.__all__)
    for name in config_module.__all__:
        value = getattr(config_module, name)
        if callable(value):
            assert value.__doc__, name
