"""Node configuration: frozen, typed settings read from a YAML/TOML file and the environment.

The settings are one tree of frozen dataclasses rooted at :class:`NodeConfig`. Inside the
tree sizes are bytes (int) and durations are seconds (float); outside it, in files and
environment variables, they are human strings such as ``"5GB"``, ``"1.5GiB"`` or ``"1h30m"``::

    server: {listen: "0.0.0.0:7400", grace_period: 30s}
    limits: {max_value_bytes: 32MiB}
    memory:
      tiers:
        hot:  {enabled: true, capacity: 5GB, ttl: 24h, cleanup_interval: 1h, eviction: lru}
        warm: {enabled: true, capacity: 20GB, compression_level: 3, ttl: 7d}
        cold: {enabled: true, capacity: 100GB, compression_level: 5, path: /data/cold}

:meth:`NodeConfig.load` layers the defaults, then the file, then ``MEMCLUSTER_*`` variables
(``MEMCLUSTER_MEMORY__TIERS__HOT__CAPACITY=5GB``: ``__`` separates levels). Fields are read
generically from their annotations. Every problem found is reported at once, in one
:class:`ConfigError` whose lines each start with the dotted key at fault.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeGuard, TypeVar

import yaml

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "NON_CONFIG_ENV",
    "ColdTierConfig",
    "ConfigError",
    "CoordinatorClusterConfig",
    "CoordinatorConfig",
    "CoordinatorServerConfig",
    "HotTierConfig",
    "LimitsConfig",
    "LoadConfig",
    "MemoryConfig",
    "NodeClusterConfig",
    "NodeConfig",
    "PressureConfig",
    "ServerConfig",
    "TiersConfig",
    "TopologyConfig",
    "WarmTierConfig",
    "etcd_endpoints",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

#: Environment variables under this prefix override the configuration file.
ENV_PREFIX = "MEMCLUSTER_"
#: Holds the configuration file's path; :meth:`NodeConfig.load` reads it when given no path.
CONFIG_FILE_ENV = "MEMCLUSTER_CONFIG"
#: ``MEMCLUSTER_*`` variables that are not settings, so :meth:`NodeConfig.from_env` allows them.
NON_CONFIG_ENV = frozenset({CONFIG_FILE_ENV})

_KB, _MB, _GB, _TB = (1000**i for i in range(1, 5))
_KIB, _MIB, _GIB, _TIB = (1024**i for i in range(1, 5))
_SIZE_UNITS = {"tib": _TIB, "tb": _TB, "gib": _GIB, "gb": _GB, "mib": _MIB, "mb": _MB}
_SIZE_UNITS |= {"kib": _KIB, "kb": _KB, "b": 1}
_SIZE_NAMES = {unit: name.upper().replace("I", "i") for name, unit in _SIZE_UNITS.items()}
_DURATION_UNITS: dict[str, int | Decimal] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_UNITS["ms"] = Decimal("0.001")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIZE_RE = re.compile(rf"({_NUMBER})\s*([a-z]*)", re.IGNORECASE)
_DURATION_PART_RE = re.compile(rf"\s*({_NUMBER})\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_HOST_PORT_RE = re.compile(r"(?:\[(?P<ip6>[^\]]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_NOT_A = {
    "size": "is not a size (examples: 512MB, 5GB, 1.5GiB)",
    "duration": "is not a duration (examples: 500ms, 30s, 10m, 24h, 7d, 1h30m)",
}

# Field annotations that tell the generic reader how to parse a human string.
_Size = Annotated[int, "size"]
_Duration = Annotated[float, "duration"]
_Path = tuple[str, ...]
_S = TypeVar("_S", bound="_Section")


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` holds one line per problem, key first."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = problems.splitlines() if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def parse_size(value: str | float) -> int:
    """Bytes from ``"5GB"`` (SI: KB = 1000), ``"1.5GiB"`` (IEC: KiB = 1024) or a plain number."""
    if isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())):
        unit = 1 if not m[2] else _SIZE_UNITS.get(m[2].lower())
        if unit is not None:
            return int((Decimal(m[1]) * unit).to_integral_value())
    elif _is_number(value) and math.isfinite(value) and value >= 0:
        return round(value)
    raise ValueError(f"{_show(value)} {_NOT_A['size']}")


def parse_duration(value: str | float) -> float:
    """Seconds from ``"24h"``, ``"1h30m"``, ``"500ms"`` (units ms s m h d w) or a plain number."""
    if isinstance(value, str):
        text, pos, total = value.strip(), 0, Decimal(0)
        if re.fullmatch(_NUMBER, text):
            return float(Decimal(text))
        while pos < len(text) and (m := _DURATION_PART_RE.match(text, pos)):
            total += Decimal(m[1]) * _DURATION_UNITS[m[2].lower()]
            pos = m.end()
        if text and pos == len(text):
            return float(total)  # summed in Decimal so that format_duration round-trips exactly
    elif _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    raise ValueError(f"{_show(value)} {_NOT_A['duration']}")


def format_size(n: int, *, exact: bool = False) -> str:
    """Bytes for people: ``"256MB"``, ``"32MiB"``, ``"1.5KiB"``, ``"1.23GB"``.

    An amount that a short unit writes exactly gets that unit; any other is rounded to
    three significant digits in SI units, unless ``exact``: then it is written in bytes,
    so that ``parse_size`` gives ``n`` back.
    """
    if n < 0:
        raise ValueError(f"{n} is not a size: sizes are not negative")
    if n == 0:
        return "0B"
    forms = [  # n written exactly, with at most two decimals
        f"{_plain(Decimal(n) / unit)}{name}"
        for unit, name in _SIZE_NAMES.items()
        if n >= unit and (Decimal(n) * 100 / unit) % 1 == 0
    ]
    best = min(forms, key=lambda form: (sum(c.isdigit() for c in form), len(form)))
    if exact or sum(c.isdigit() for c in best) <= 4:
        return best
    for unit in (1, _KB, _MB, _GB, _TB):
        value = Decimal(n) / unit
        shown = round(value, 2 if value < 10 else 1 if value < 100 else 0)
        if shown < 1000 or unit == _TB:
            break
    return f"{_plain(shown)}{_SIZE_NAMES[unit]}"


def format_duration(seconds: float) -> str:
    """Seconds for people, which ``parse_duration`` reads back exactly: ``"1h30m"``, ``"250ms"``."""
    if not (_is_number(seconds) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{seconds} is not a duration: durations are finite and not negative")
    rest, parts = Decimal(repr(float(seconds))), []
    for name in ("d", "h", "m"):
        count, rest = divmod(rest, _DURATION_UNITS[name])
        if count:
            parts.append(f"{_plain(count)}{name}")
    if rest or not parts:
        parts.append(f"{_plain(rest * 1000)}ms" if 0 < rest < 1 else f"{_plain(rest)}s")
    return "".join(parts)


class _Section:
    """Base of every settings dataclass: generic reading, writing and validation."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # every subclass is one

    def _check(self) -> list[tuple[str, str]]:
        """Cross-field problems of this section alone, as (field or "", message)."""
        return []

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every problem of this section and those below it."""
        reader = _Reader()
        reader.check(self, ())
        if reader.problems:
            raise ConfigError(reader.problems)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Read and validate plain data (parsed YAML/TOML); absent keys keep their defaults."""
        return _read(cls, data)

    def to_mapping(self) -> dict[str, Any]:
        """Plain data in the file's shape, with human sizes and durations (round-trips exactly)."""
        hints, out = _hints(type(self)), {}
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _kind(hints[f.name])
            if isinstance(value, _Section):
                value = value.to_mapping()
            elif kind == "size":
                value = format_size(value, exact=True)
            elif kind == "duration":
                value = format_duration(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class HotTierConfig(_Section):
    """The hot tier: plain items in RAM, demoted to warm when idle past ``ttl`` or when full."""

    enabled: bool = True
    capacity: _Size = 256 * _MB
    ttl: _Duration = 24 * 3600.0
    cleanup_interval: _Duration = 10.0
    eviction: Literal["lru", "lfu"] = "lru"

    def _check(self) -> list[tuple[str, str]]:
        problems = _tier_problems(self.enabled, self.capacity)
        if self.cleanup_interval <= 0:
            problems.append(("cleanup_interval", "must be above 0s"))
        return problems


@dataclass(frozen=True, slots=True)
class WarmTierConfig(_Section):
    """The warm tier: zstd-compressed items in RAM, demoted to cold when idle past ``ttl``."""

    enabled: bool = True
    capacity: _Size = 1 * _GB
    compression_level: int = 3
    ttl: _Duration = 7 * 86400.0

    def _check(self) -> list[tuple[str, str]]:
        return _tier_problems(self.enabled, self.capacity, self.compression_level)


@dataclass(frozen=True, slots=True)
class ColdTierConfig(_Section):
    """The cold tier: zstd-compressed items in an embedded store on disk under ``path``.

    ``fsync_interval``: how often committed writes are forced to disk. A process crash
    loses nothing either way; a power loss may lose the last interval. 0 fsyncs every
    commit (about 0.5 ms per cold write or promotion on ordinary disks).
    """

    enabled: bool = True
    capacity: _Size = 10 * _GB
    compression_level: int = 5
    path: str = "./data/cold"
    fsync_interval: _Duration = 1.0

    def _check(self) -> list[tuple[str, str]]:
        problems = _tier_problems(self.enabled, self.capacity, self.compression_level)
        if self.enabled and not self.path:
            problems.append(("path", "must not be empty when the tier is enabled"))
        return problems


@dataclass(frozen=True, slots=True)
class TiersConfig(_Section):
    """The three tiers of one node, hottest first."""

    hot: HotTierConfig = field(default_factory=HotTierConfig)
    warm: WarmTierConfig = field(default_factory=WarmTierConfig)
    cold: ColdTierConfig = field(default_factory=ColdTierConfig)

    def _check(self) -> list[tuple[str, str]]:
        if self.hot.enabled or self.warm.enabled or self.cold.enabled:
            return []
        return [("", "at least one tier must be enabled")]


@dataclass(frozen=True, slots=True)
class PressureConfig(_Section):
    """Adaptive sizing: when system memory in use (psutil) passes a watermark, shrink hot.

    Watermarks are fractions of system memory in use; ``min_hot_fraction`` is the share of
    the configured hot capacity below which the hot tier never shrinks.
    """

    enabled: bool = True
    check_interval: _Duration = 1.0
    high_watermark: float = 0.90
    critical_watermark: float = 0.95
    min_hot_fraction: float = 0.10

    def _check(self) -> list[tuple[str, str]]:
        fractions = ("high_watermark", "critical_watermark", "min_hot_fraction")
        problems = [
            (name, f"{getattr(self, name)} is outside (0, 1]: a fraction, such as 0.9")
            for name in fractions
            if not 0 < getattr(self, name) <= 1
        ]
        if not problems and self.high_watermark >= self.critical_watermark:
            message = f"{self.high_watermark} must be below critical_watermark"
            problems.append(("high_watermark", f"{message} ({self.critical_watermark})"))
        if self.check_interval <= 0:
            problems.append(("check_interval", "must be above 0s"))
        return problems


@dataclass(frozen=True, slots=True)
class MemoryConfig(_Section):
    """How a node holds items: its tiers, promotion, tombstones and memory pressure.

    ``promote_after``: the reads in warm or cold that move an item back to hot (when
    ``promote_on_read``): at 2, the first read serves it from where it is and the
    second promotes it, so that items read once stay down (node/admission.py); at 1,
    every such read promotes. ``promote_chance``: the probability that a read which
    would promote does; below 1, an item read once in a while stays where it is, and an
    item read often goes up after a few reads (like memcached's extstore recache rate).
    """

    tiers: TiersConfig = field(default_factory=TiersConfig)
    promote_on_read: bool = True
    promote_chance: float = 1.0
    promote_after: int = 2
    tombstone_ttl: _Duration = 3600.0
    cleanup_batch: int = 1000
    pressure: PressureConfig = field(default_factory=PressureConfig)

    def _check(self) -> list[tuple[str, str]]:
        problems = _at_least_1(self, "cleanup_batch", "promote_after")
        if not 0 < self.promote_chance <= 1:
            message = f"{self.promote_chance} is outside (0, 1]: a probability, such as 0.25"
            problems.append(("promote_chance", message + " (promote_on_read: false for none)"))
        if self.tombstone_ttl <= 0:
            problems.append(("tombstone_ttl", "must be above 0s, or deleted keys can come back"))
        return problems


@dataclass(frozen=True, slots=True)
class LimitsConfig(_Section):
    """Per-request limits; requests past them are refused with a clear error."""

    max_key_bytes: int = 1024
    max_value_bytes: _Size = 32 * _MIB
    max_batch_items: int = 10000

    def _check(self) -> list[tuple[str, str]]:
        problems = _at_least_1(self, "max_key_bytes", "max_value_bytes", "max_batch_items")
        if self.max_key_bytes > 65535:
            problems.append(("max_key_bytes", f"{self.max_key_bytes} is above 65535"))
        return problems


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class ServerConfig(_Section):
    """The node's addresses and shutdown.

    ``id`` empty: the node derives one from its hostname and port. ``advertise`` empty: peers
    and clients are given the listen address. ``frames_listen``: where the frame transport
    (memcluster.common.frames; the data requests without gRPC's per-call cost) listens:
    ``auto`` is the host of ``listen`` on a free port, ``off`` serves none (clients then
    use gRPC), else host:port; clients are told the advertised host with the bound port.
    ``metrics_listen`` empty: no Prometheus endpoint. ``grace_period``: how long SIGTERM
    waits for in-flight work to drain. ``event_loop``: ``uvloop`` (libuv's loop: a
    quarter fewer CPU microseconds per request than the standard one), ``asyncio`` (the
    standard library's), or ``auto``: uvloop where it is installed (it is a dependency
    wherever it builds), else asyncio.
    """

    id: str = ""
    listen: str = "127.0.0.1:7400"
    advertise: str = ""
    frames_listen: str = "auto"
    metrics_listen: str = "127.0.0.1:0"
    grace_period: _Duration = 30.0
    event_loop: str = "auto"

    def frames_bind(self) -> tuple[str, int] | None:
        """(host, port) for the frame transport, or None when it is off."""
        if self.frames_listen == "off":
            return None
        if self.frames_listen == "auto":
            return self.listen.rpartition(":")[0].strip("[]"), 0
        host, _, port = self.frames_listen.rpartition(":")
        return host.strip("[]"), int(port)

    def _check(self) -> list[tuple[str, str]]:
        problems = []
        if self.event_loop not in EVENT_LOOPS:
            problems.append(("event_loop", f"{self.event_loop!r} is not one of {EVENT_LOOPS}"))
        if self.frames_listen not in ("auto", "off") and (
            problem := _address_problem(self.frames_listen, 0)
        ):
            problems.append(("frames_listen", f"{problem} (or 'auto', 'off')"))
        for name, min_port in (("listen", 0), ("advertise", 1), ("metrics_listen", 0)):
            value = getattr(self, name)
            if (value or name == "listen") and (problem := _address_problem(value, min_port)):
                problems.append((name, problem))
        return problems


@dataclass(frozen=True, slots=True)
class NodeClusterConfig(_Section):
    """How a node joins a cluster. ``etcd`` empty: a standalone node, a cluster of one.

    ``etcd`` is a comma-separated list of host:port endpoints. The node registers under a
    lease of ``lease_ttl`` and keeps it alive; ``weight`` is its ring weight (1.0 a standard
    share). Writes wait ``replication_timeout`` for replica acknowledgements. Rebalancing
    streams items in batches of ``migration_batch`` at most ``migration_rate`` bytes/s,
    and slows down (to an eighth at the least) while the node's event-loop thread spends
    more than ``migration_cpu_wait`` of its time waiting for a CPU (Linux; 0: never).
    """

    name: str = "memcluster"
    etcd: str = ""
    lease_ttl: _Duration = 5.0
    weight: float = 1.0
    replication_timeout: _Duration = 2.0
    migration_rate: _Size = 8 * _MB
    migration_batch: int = 200
    migration_cpu_wait: float = 0.08
    load_interval: _Duration = 2.0

    def _check(self) -> list[tuple[str, str]]:
        problems = _etcd_problems(self.etcd, self.lease_ttl)
        if not 0 < self.weight <= 100:
            problems.append(("weight", f"{self.weight} is outside (0, 100]"))
        for name in ("replication_timeout", "load_interval"):
            if getattr(self, name) <= 0:
                problems.append((name, "must be above 0"))
        if not 0 <= self.migration_cpu_wait < 1:
            problems.append(("migration_cpu_wait", f"{self.migration_cpu_wait} is outside [0, 1)"))
        return problems + _at_least_1(self, "migration_rate", "migration_batch")


@dataclass(frozen=True, slots=True)
class CoordinatorClusterConfig(_Section):
    """The cluster a coordinator manages (same ``name`` and ``etcd`` as its nodes)."""

    name: str = "memcluster"
    etcd: str = "127.0.0.1:2379"
    lease_ttl: _Duration = 5.0

    def _check(self) -> list[tuple[str, str]]:
        if not self.etcd:
            return [("etcd", "a coordinator needs etcd endpoints (host:port, comma-separated)")]
        return _etcd_problems(self.etcd, self.lease_ttl)


@dataclass(frozen=True, slots=True)
class TopologyConfig(_Section):
    """Placement policy: replicas per key, partitions (fixed once the cluster exists), and
    ``down_after``: how long a node's lease may lapse before it leaves the ring."""

    replication_factor: int = 2
    partitions: int = 1024
    down_after: _Duration = 10.0

    def _check(self) -> list[tuple[str, str]]:
        problems = _at_least_1(self, "replication_factor", "partitions")
        if self.partitions > 65536:
            problems.append(("partitions", f"{self.partitions} is above 65536"))
        if self.down_after <= 0:
            problems.append(("down_after", "must be above 0"))
        return problems


@dataclass(frozen=True, slots=True)
class LoadConfig(_Section):
    """Load balancing: a node whose ops/s stays above ``overload_factor`` x the cluster mean
    for ``sustain`` checks loses ``step`` of ring weight (never below ``min_weight``), at most
    once per ``cooldown``; it regains weight once back under the mean."""

    enabled: bool = True
    check_interval: _Duration = 5.0
    overload_factor: float = 1.5
    sustain: int = 3
    step: float = 0.25
    min_weight: float = 0.25
    cooldown: _Duration = 60.0

    def _check(self) -> list[tuple[str, str]]:
        problems = _at_least_1(self, "sustain")
        if self.overload_factor <= 1:
            problems.append(("overload_factor", "must be above 1"))
        if not 0 < self.step < 1:
            problems.append(("step", "must be between 0 and 1"))
        if not 0 < self.min_weight <= 1:
            problems.append(("min_weight", "must be in (0, 1]"))
        return problems


class _ProcessConfig(_Section):
    """A whole process's settings: read from a file and ``MEMCLUSTER_*`` variables."""

    __slots__ = ()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """Read a ``.yaml``/``.yml`` or ``.toml`` file."""
        return cls.from_mapping(_read_file(path))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Self:
        """Read ``MEMCLUSTER_*`` variables only (``MEMCLUSTER_SERVER__LISTEN=0.0.0.0:7400``)."""
        data, origins = _env_mapping(env)
        return _read(cls, data, origins)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
    ) -> Self:
        """Defaults, overridden by the file (``path``, else ``$MEMCLUSTER_CONFIG``), then by env."""
        path = path if path is not None else env.get(CONFIG_FILE_ENV)
        data = _read_file(path) if path else {}
        overrides, origins = _env_mapping(env)
        return _read(cls, _merge(data, overrides), origins)


@dataclass(frozen=True, slots=True)
class NodeConfig(_ProcessConfig):
    """Everything a node process is configured with."""

    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    cluster: NodeClusterConfig = field(default_factory=NodeClusterConfig)


@dataclass(frozen=True, slots=True)
class CoordinatorServerConfig(ServerConfig):
    """A coordinator's addresses: like a node's, with the coordinator's port by default."""

    listen: str = "127.0.0.1:7500"
    metrics_listen: str = ""


@dataclass(frozen=True, slots=True)
class CoordinatorConfig(_ProcessConfig):
    """Everything a coordinator process is configured with."""

    server: CoordinatorServerConfig = field(default_factory=CoordinatorServerConfig)
    cluster: CoordinatorClusterConfig = field(default_factory=CoordinatorClusterConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    balancing: LoadConfig = field(default_factory=LoadConfig)


def etcd_endpoints(etcd: str) -> list[str]:
    """The endpoints of a comma-separated ``etcd`` setting."""
    return [e.strip() for e in etcd.split(",") if e.strip()]


def _etcd_problems(etcd: str, lease_ttl: float) -> list[tuple[str, str]]:
    problems = [
        ("etcd", f"{endpoint!r}: {problem}")
        for endpoint in etcd_endpoints(etcd)
        if (problem := _address_problem(endpoint, 1))
    ]
    if not 1 <= lease_ttl <= 3600:
        problems.append(
            ("lease_ttl", f"{lease_ttl}s is outside 1s..1h (etcd leases are whole seconds)")
        )
    return problems


class _Reader:
    """Builds a settings tree from plain data, collecting every problem rather than the first."""

    def __init__(self, origins: Mapping[_Path, str] | None = None) -> None:
        self.problems: list[str] = []
        self._origins = origins or {}  # which environment variable set a path

    def problem(self, path: _Path, message: str) -> None:
        key = ".".join(path) or "(top level)"
        if path in self._origins:
            key += f" (from {self._origins[path]})"
        self.problems.append(f"{key}: {message}")

    def cross_field(self, section: _Section, path: _Path) -> None:
        for key, message in section._check():
            self.problem((*path, key) if key else path, message)

    def section(self, cls: type[_S], data: object, path: _Path) -> _S:
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a table of settings, got {_show(data)}")
            return cls()
        hints, names = _hints(cls), [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = (
                    f"did you mean {close[0]}?" if close else f"expected one of {', '.join(names)}"
                )
                self.problem((*path, str(key)), f"unknown key ({hint})")
        values: dict[str, object] = {}
        parsed = True
        for name in (name for name in names if name in data):
            tp, at = hints[name], (*path, name)
            if isinstance(tp, type) and issubclass(tp, _Section):
                values[name] = self.section(tp, data[name], at)
                continue
            try:
                values[name] = _parse(tp, data[name])
            except ValueError as exc:
                self.problem(at, str(exc))
                parsed = False
        result = cls(**values)
        if parsed:  # a cross-field check of a field that did not parse would only add noise
            self.cross_field(result, path)
        return result

    def check(self, section: _Section, path: _Path) -> None:
        self.cross_field(section, path)
        for f in dataclasses.fields(section):
            if isinstance(child := getattr(section, f.name), _Section):
                self.check(child, (*path, f.name))


def _read(cls: type[_S], data: object, origins: Mapping[_Path, str] | None = None) -> _S:
    reader = _Reader(origins)
    result = reader.section(cls, data, ())
    if reader.problems:
        raise ConfigError(reader.problems)
    return result


def _parse(tp: Any, raw: object) -> object:
    """One field's value from plain data, by its annotation; ValueError says what is wrong."""
    if (kind := _kind(tp)) is not None:
        if isinstance(raw, str) or _is_number(raw):
            return parse_size(raw) if kind == "size" else parse_duration(raw)
        raise ValueError(f"{_show(raw)} {_NOT_A[kind]}")
    if typing.get_origin(tp) is Literal:
        if isinstance(raw, str) and raw.strip().lower() in typing.get_args(tp):
            return raw.strip().lower()
        raise ValueError(f"expected one of {', '.join(typing.get_args(tp))}, got {_show(raw)}")
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise ValueError(f"expected true/false, got {_show(raw)}")
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"\s*[-+]?\d+\s*", raw):
            return int(raw)
        raise ValueError(f"expected a whole number, got {_show(raw)}")
    if tp is float:
        if _is_number(raw) or (
            isinstance(raw, str) and re.fullmatch(rf"\s*[-+]?{_NUMBER}\s*", raw)
        ):
            return float(raw)
        raise ValueError(f"expected a number, got {_show(raw)}")
    if isinstance(raw, str):
        return raw
    raise ValueError(f"expected a string, got {_show(raw)}")


def _read_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"{file}: unsupported config file type (use .yaml, .yml or .toml)")
    try:
        text = file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text.decode()) if suffix == ".toml" else yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}{where}: invalid YAML ({exc.problem})") from exc
    except (yaml.YAMLError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise ConfigError(f"{file}: invalid {suffix[1:].upper()} ({exc})") from exc
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: expected a table of settings, got {type(data).__name__}")
    return data


def _env_mapping(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[_Path, str]]:
    """``MEMCLUSTER_*`` variables as nested data, and which variable set each path."""
    data: dict[str, Any] = {}
    origins: dict[_Path, str] = {}
    names = [name for name in env if name.startswith(ENV_PREFIX) and name not in NON_CONFIG_ENV]
    # Deepest first: a variable naming a whole section then replaces it and gets reported.
    for name in sorted(names, key=lambda name: -name.count("__")):
        path = tuple(name.removeprefix(ENV_PREFIX).lower().split("__"))
        node = data
        for depth, part in enumerate(path[:-1], 1):
            origins.setdefault(path[:depth], name)
            node = node.setdefault(part, {})
        node[path[-1]] = env[name]
        origins[path] = name
    return data, origins


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, new in override.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            new = _merge(old, new)  # noqa: PLW2901  # a nested section: merge key by key
        merged[key] = new
    return merged


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _kind(tp: Any) -> str | None:
    """``"size"`` or ``"duration"`` for the annotated aliases, else None."""
    return str(tp.__metadata__[0]) if typing.get_origin(tp) is Annotated else None


def _tier_problems(enabled: bool, capacity: int, level: int | None = None) -> list[tuple[str, str]]:
    problems = []
    if enabled and capacity <= 0:
        problems.append(("capacity", "must be above 0 when the tier is enabled"))
    if level is not None and not 1 <= level <= 22:
        problems.append(("compression_level", f"{level} is outside zstd's range 1..22"))
    return problems


def _at_least_1(section: _Section, *names: str) -> list[tuple[str, str]]:
    values = ((name, getattr(section, name)) for name in names)
    return [(name, f"{value} must be at least 1") for name, value in values if value < 1]


def _address_problem(address: str, min_port: int) -> str | None:
    example = "(examples: 127.0.0.1:7400, [::1]:7400, node-1.example:7400)"
    m = _HOST_PORT_RE.fullmatch(address)
    if m is None:
        return f"{_show(address)} is not host:port {example}"
    if m["ip6"] is not None:
        try:
            ipaddress.IPv6Address(m["ip6"])
        except ValueError:
            return f"{_show(address)}: {m['ip6']} is not an IPv6 address"
    if not min_port <= int(m["port"]) <= 65535:
        return f"{_show(address)}: port {int(m['port'])} is outside {min_port}..65535"
    return None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: ``1.5``, ``100``."""
    return format(number.normalize(), "f")


def _show(value: object) -> str:
    """A value as a user would write it: strings quoted, booleans true/false."""
    if isinstance(value, str | bool) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return str(value)
