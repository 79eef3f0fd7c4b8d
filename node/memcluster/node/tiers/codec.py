"""zstd compression for the warm and cold tiers, with trained dictionaries.

A JSON document compressed on its own starts with no context: its field names,
enum values and common words are spelt out in full at least once. A dictionary
trained on a sample of similar values supplies that context. The codec keeps two
classes of dictionary, because one trained on small values does little for large
ones and the reverse (measured in bench/compression.py):

- *small* values (up to ``SMALL_VALUE`` bytes): the first ``TRAIN_SAMPLES`` of them
  are sampled whole; a ``DICT_SIZE`` dictionary trained on them roughly doubles the
  ratio of ~100 B to ~1 KB documents;
- *large* values: the first ``LARGE_SAMPLE_HEAD`` bytes of each are sampled until
  ``LARGE_TRAIN_BYTES`` are collected (a dictionary helps the start of a value most,
  where a frame has no history of its own, and heads keep training quick); a
  ``LARGE_DICT_SIZE`` dictionary trained on them takes ~4 KB documents from 2.5x to
  ~3.7x.

Each class trains once, on the values the codec first sees, and from then on
compresses its values with that dictionary. Training takes a few hundred
milliseconds, once per class: a codec made with ``background=True`` (the tiers')
trains on a worker thread (zstd's trainer releases the GIL, so the node's event loop
goes on serving) and keeps compressing without the dictionary until a later
``compress`` finds it ready; otherwise training happens inside ``compress``.

Every payload starts with one byte that says how to read it, so payloads written
by any version of the codec stay readable: 0 raw (compression did not pay), 1 a
plain zstd frame, n >= 2 a frame compressed with dictionary number n (frames carry
their content size, not the dictionary id). Numbers ``FIRST_DICT``..127 are small
dictionaries, ``FIRST_LARGE_DICT``..255 large ones; earlier versions trained only
small dictionaries, numbered from 2, so a cold tier written by them loads as it
was and trains its large dictionary next to the old one. Compressor objects are
made once and reused.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeAlias

import zstandard

RAW = 0
PLAIN = 1
FIRST_DICT = 2
FIRST_LARGE_DICT = 128
LAST_DICT = 255
SMALL_VALUE = 2048  # values up to this size use the small dictionary, larger ones the large
TRAIN_SAMPLES = 2000  # small values sampled before the small dictionary is trained
DICT_SIZE = 16 * 1024
LARGE_SAMPLE_HEAD = 16 * 1024  # bytes sampled from the start of each large value
LARGE_TRAIN_BYTES = 4 << 20  # sampled bytes before the large dictionary is trained
LARGE_DICT_SIZE = 64 * 1024
MAX_TRAINING_TRIES = 3

OnTrained = Callable[[int, bytes], None]
_Samples: TypeAlias = list[bytes | bytearray | memoryview]
#: One worker for every codec of the process: trainings are rare and short.
_TRAINER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memcluster-zstd-train")


@dataclass
class _Class:
    """One class of values: its sampling, its training budget and its dictionary."""

    first: int  # dictionary numbers first..last belong to this class
    last: int
    dict_size: int
    samples_wanted: int  # train once this many samples ... (0: no count limit)
    bytes_wanted: int  # ... or this many sampled bytes are collected (0: no byte limit)
    head: int  # bytes sampled from the start of each value
    samples: _Samples | None = field(default_factory=list)  # None: sampling is over
    sampled_bytes: int = 0
    tries: int = 0
    number: int = 0  # the dictionary compressing this class (0: none yet)
    compressor: zstandard.ZstdCompressor | None = None
    training: Future[zstandard.ZstdCompressionDict] | None = None  # on the worker thread

    def owns(self, number: int) -> bool:
        return self.first <= number <= self.last

    def full(self) -> bool:
        """Whether enough has been sampled for the next training try."""
        scale = 1 << self.tries  # each failed try asks for twice as much
        assert self.samples is not None
        if self.samples_wanted and len(self.samples) >= self.samples_wanted * scale:
            return True
        return bool(self.bytes_wanted) and self.sampled_bytes >= self.bytes_wanted * scale


class Codec:
    """Compress/decompress values at one zstd level; single-threaded."""

    def __init__(
        self,
        level: int,
        *,
        train: bool = True,
        train_samples: int = TRAIN_SAMPLES,
        large_train_bytes: int = LARGE_TRAIN_BYTES,
        on_trained: OnTrained | None = None,
        background: bool = False,
    ) -> None:
        self.level = level
        self._background = background
        self._plain = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._decompress_plain = zstandard.ZstdDecompressor()
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._dictionaries: dict[int, bytes] = {}
        self._small = _Class(FIRST_DICT, FIRST_LARGE_DICT - 1, DICT_SIZE, train_samples, 0, 0)
        self._large = _Class(
            FIRST_LARGE_DICT, LAST_DICT, LARGE_DICT_SIZE, 0, large_train_bytes, LARGE_SAMPLE_HEAD
        )
        if not train:
            self._small.samples = self._large.samples = None
        self._on_trained = on_trained

    @property
    def dictionaries(self) -> dict[int, bytes]:
        """Dictionary number -> raw dictionary bytes (for persistence)."""
        return dict(self._dictionaries)

    def add_dictionary(self, number: int, data: bytes) -> None:
        """Install a dictionary (trained earlier, loaded from disk) and compress with it.

        Its number says its class (see the module docstring); the highest number of a
        class compresses that class's values, and a class with a dictionary stops sampling.
        """
        if not FIRST_DICT <= number <= LAST_DICT:
            raise ValueError(f"dictionary number {number} outside {FIRST_DICT}..{LAST_DICT}")
        zdict = zstandard.ZstdCompressionDict(data)
        self._dictionaries[number] = data
        self._decompressors[number] = zstandard.ZstdDecompressor(dict_data=zdict)
        cls = self._small if self._small.owns(number) else self._large
        if number >= cls.number:
            # Digest the dictionary once for this level rather than on every frame.
            zdict.precompute_compress(level=self.level)
            cls.number = number
            cls.compressor = zstandard.ZstdCompressor(
                level=self.level, dict_data=zdict, write_content_size=True, write_dict_id=False
            )
            cls.samples = None

    def compress(self, value: bytes) -> bytes:
        """The payload for ``value`` (never larger than ``value`` plus one byte)."""
        cls = self._small if len(value) <= SMALL_VALUE else self._large
        if cls.training is not None and cls.training.done():
            self._trained(cls, cls.training)
        if cls.compressor is not None:
            frame = cls.compressor.compress(value)
            prefix = cls.number
        else:
            if cls.samples is not None and cls.training is None:
                self._sample(cls, value)
            frame = self._plain.compress(value)
            prefix = PLAIN
        if len(frame) >= len(value):
            return bytes((RAW,)) + value
        return bytes((prefix,)) + frame

    def decompress(self, payload: bytes) -> bytes:
        """The value a payload holds."""
        kind = payload[0]
        if kind == RAW:
            return payload[1:]
        if kind == PLAIN:
            return self._decompress_plain.decompress(payload[1:])
        decompressor = self._decompressors.get(kind)
        if decompressor is None:
            raise ValueError(f"payload needs zstd dictionary {kind}, which this codec lacks")
        return decompressor.decompress(payload[1:])

    def _sample(self, cls: _Class, value: bytes) -> None:
        samples = cls.samples
        assert samples is not None
        if value:
            sample = bytes(value[: cls.head]) if cls.head else value
            samples.append(sample)
            cls.sampled_bytes += len(sample)
        if not cls.full():
            return
        cls.tries += 1
        if self._background:
            cls.training = _TRAINER.submit(
                zstandard.train_dictionary, cls.dict_size, list(samples), level=self.level
            )
            return
        done: Future[zstandard.ZstdCompressionDict] = Future()
        try:
            done.set_result(zstandard.train_dictionary(cls.dict_size, samples, level=self.level))
        except zstandard.ZstdError as exc:
            done.set_exception(exc)
        self._trained(cls, done)

    def settle(self) -> None:
        """Wait for trainings on the worker thread and put their dictionaries to use."""
        for cls in (self._small, self._large):
            if cls.training is not None:
                cls.training.exception()  # waits
                self._trained(cls, cls.training)

    def _trained(self, cls: _Class, outcome: Future[zstandard.ZstdCompressionDict]) -> None:
        cls.training = None
        try:
            trained = outcome.result()
        except zstandard.ZstdError:
            # Too few or too uniform samples: try again with more, then give up.
            if cls.tries >= MAX_TRAINING_TRIES:
                cls.samples = None
            return
        number = max(cls.number + 1, cls.first)
        if number > cls.last:
            cls.samples = None
            return
        data = trained.as_bytes()
        if self._on_trained is not None:
            self._on_trained(number, data)
        self.add_dictionary(number, data)
