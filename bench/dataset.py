"""A deterministic, realistic JSON dataset: what services put in a cache.

Three kinds of record, one per size class, each serialised as compact JSON:

- ``small`` (~100 B): analytics events (ids, an enum, a timestamp, a few properties);
- ``medium`` (~1 KB): user profiles (name, email, address, preferences, tags, a short
  bio and the latest events);
- ``large`` (~4 KB): product records (description, attributes, stock per warehouse
  and reviews);
- ``xlarge`` (~64 KB): the same product records with many more reviews (a product
  page's worth of data).

Text comes from a small vocabulary, as in real data where the same words, field
names and enum values recur; every figure comes from one seeded ``random.Random``,
so the same seed always yields the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

#: The size classes and their target value sizes in bytes (each value is within ±20%).
SIZES = {"small": 100, "medium": 1024, "large": 4096, "xlarge": 65536}

_VOCABULARY = (
    "the a of and to in for with on fast cache memory cluster node data value key store "
    "service request latency user session page order product price cart search result "
    "model feature embedding vector agent prompt token batch stream queue event error "
    "retry timeout green blue red black white small large light heavy new used great good "
    "bad excellent poor quality delivery shipping return refund support team account "
    "payment card invoice email phone address city street country update profile setting "
    "notification message review rating star recommend would buy again works as expected "
    "broke after week month year easy hard install setup battery screen size color fit"
)
_WORDS = tuple(_VOCABULARY.split())
_FIRST = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger", "Donald", "Margaret", "Radia")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Knuth", "Hamilton")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "corp.example")
_CITIES = (
    ("Berlin", "DE"),
    ("Paris", "FR"),
    ("Lisbon", "PT"),
    ("Austin", "US"),
    ("Toronto", "CA"),
    ("Osaka", "JP"),
    ("Nairobi", "KE"),
    ("Sydney", "AU"),
)
_EVENT_TYPES = ("page_view", "click", "add_to_cart", "purchase", "login", "logout", "search")
_PLANS = ("free", "pro", "team", "enterprise")
_STATUSES = ("active", "suspended", "pending", "closed")
_LANGS = ("en", "de", "fr", "pt", "ja", "es")
_CATEGORIES = ("electronics", "home", "garden", "toys", "books", "sports", "fashion", "food")
_CURRENCIES = ("EUR", "USD", "GBP", "JPY")
_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def dumps(record: dict[str, Any]) -> bytes:
    """Compact JSON, as services usually store it."""
    return json.dumps(record, separators=(",", ":")).encode()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=words))


def _ts(rng: random.Random) -> int:
    return _EPOCH_MS + rng.randrange(90 * 86_400_000)


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms - _EPOCH_MS, 1000)
    days, rest = divmod(seconds, 86_400)
    month, day = divmod(days, 30)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{millis:03d}"
    return f"2026-{month + 1:02d}-{day + 1:02d}T{clock}Z"


def _event(rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"evt_{rng.getrandbits(40):010x}",
        "type": rng.choice(_EVENT_TYPES),
        "user": f"u{rng.randrange(10**7):07d}",
        "ts": _ts(rng),
        "props": {"page": "/" + rng.choice(_WORDS), "ms": rng.randrange(2000)},
    }


def _grow(record: dict[str, Any], field: str, target: int, make: Callable[[], Any]) -> None:
    """Append ``make()`` entries to ``record[field]`` until the JSON reaches ``target`` bytes."""
    size = len(dumps(record))
    entries = record[field]
    while size < target:
        entry = make()
        entries.append(entry)
        size += len(dumps(entry)) + 1


def small(rng: random.Random, i: int) -> dict[str, Any]:
    """An analytics event (~100 B); ``i`` is unused: event ids are random."""
    record = _event(rng)
    record.update(record.pop("props"))  # flat: page and ms at the top level
    return record


def medium(rng: random.Random, i: int) -> dict[str, Any]:
    """A user profile (~1 KB)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    city, country = rng.choice(_CITIES)
    created = _ts(rng)
    record: dict[str, Any] = {
        "id": f"u{i:07d}",
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@{rng.choice(_DOMAINS)}",
        "created_at": _iso(created),
        "plan": rng.choice(_PLANS),
        "status": rng.choice(_STATUSES),
        "address": {
            "street": f"{rng.randrange(1, 300)} {rng.choice(_WORDS).title()} Street",
            "city": city,
            "country": country,
            "zip": f"{rng.randrange(10000, 99999)}",
        },
        "preferences": {
            "lang": rng.choice(_LANGS),
            "newsletter": rng.random() < 0.4,
            "theme": rng.choice(("light", "dark", "system")),
        },
        "tags": rng.sample(_WORDS, rng.randrange(1, 5)),
        "bio": _text(rng, rng.randrange(8, 20)),
        "recent": [],
    }
    _grow(record, "recent", _target(rng, "medium"), lambda: _event(rng))
    return record


def large(rng: random.Random, i: int) -> dict[str, Any]:
    """A product record (~4 KB)."""
    return _product(rng, i, "large")


def xlarge(rng: random.Random, i: int) -> dict[str, Any]:
    """A product record with a long review list (~64 KB)."""
    return _product(rng, i, "xlarge")


def _product(rng: random.Random, i: int, size: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sku": f"SKU-{i:08d}",
        "title": _text(rng, 5).title(),
        "description": _text(rng, rng.randrange(40, 90)),
        "price": {"amount": rng.randrange(99, 99_999) / 100, "currency": rng.choice(_CURRENCIES)},
        "categories": rng.sample(_CATEGORIES, rng.randrange(1, 3)),
        "attributes": {
            "color": rng.choice(("red", "green", "blue", "black", "white")),
            "size": rng.choice(("S", "M", "L", "XL")),
            "weight_g": rng.randrange(50, 20_000),
        },
        "stock": [
            {"warehouse": city, "units": rng.randrange(500)} for city, _ in rng.sample(_CITIES, 4)
        ],
        "updated_at": _iso(_ts(rng)),
        "reviews": [],
    }
    _grow(
        record,
        "reviews",
        _target(rng, size),
        lambda: {
            "user": f"u{rng.randrange(10**7):07d}",
            "rating": rng.randrange(1, 6),
            "ts": _ts(rng),
            "verified": rng.random() < 0.7,
            "text": _text(rng, rng.randrange(10, 40)),
        },
    )
    return record


_MAKERS = {"small": small, "medium": medium, "large": large, "xlarge": xlarge}


def _target(rng: random.Random, size: str) -> int:
    return int(SIZES[size] * rng.uniform(0.8, 1.2))


def values(size: str, count: int, seed: int) -> list[bytes]:
    """``count`` JSON values of one size class; the same arguments give the same bytes."""
    rng = random.Random(f"{size}:{seed}")
    make = _MAKERS[size]
    return [dumps(make(rng, i)) for i in range(count)]
