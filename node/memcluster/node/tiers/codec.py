"""zstd compression for the warm and cold tiers, with a trained dictionary for small values.

Small values (JSON documents of a few hundred bytes, say) compress poorly one by one:
a dictionary trained on a sample of them restores most of the ratio. The codec
collects samples of small values until it has enough, trains once, and from then on
compresses small values with that dictionary. Every payload starts with one byte:
0 raw (compression did not pay), 1 plain zstd frame, n >= 2 a frame compressed with
dictionary number n. Compressor objects are made once and reused.
"""

from __future__ import annotations

from collections.abc import Callable

import zstandard

RAW = 0
PLAIN = 1
FIRST_DICT = 2
SMALL_VALUE = 2048  # values up to this size are sampled and use the dictionary
TRAIN_SAMPLES = 2000
DICT_SIZE = 16 * 1024
MAX_TRAINING_TRIES = 3

OnTrained = Callable[[int, bytes], None]


class Codec:
    """Compress/decompress values at one zstd level; single-threaded."""

    def __init__(
        self,
        level: int,
        *,
        train: bool = True,
        train_samples: int = TRAIN_SAMPLES,
        on_trained: OnTrained | None = None,
    ) -> None:
        self.level = level
        self._plain = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._decompress_plain = zstandard.ZstdDecompressor()
        self._dict_compressor: zstandard.ZstdCompressor | None = None
        self._dict_number = 0
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._dictionaries: dict[int, bytes] = {}
        self._samples: list[bytes | bytearray | memoryview] | None = [] if train else None
        self._train_samples = train_samples
        self._tries = 0
        self._on_trained = on_trained

    @property
    def dictionaries(self) -> dict[int, bytes]:
        """Dictionary number -> raw dictionary bytes (for persistence)."""
        return dict(self._dictionaries)

    def add_dictionary(self, number: int, data: bytes) -> None:
        """Install a dictionary (trained earlier, loaded from disk) and compress with it."""
        if not FIRST_DICT <= number <= 255:
            raise ValueError(f"dictionary number {number} outside {FIRST_DICT}..255")
        zdict = zstandard.ZstdCompressionDict(data)
        self._dictionaries[number] = data
        self._decompressors[number] = zstandard.ZstdDecompressor(dict_data=zdict)
        if number >= self._dict_number:
            self._dict_number = number
            self._dict_compressor = zstandard.ZstdCompressor(
                level=self.level, dict_data=zdict, write_content_size=True, write_dict_id=False
            )
            self._samples = None

    def compress(self, value: bytes) -> bytes:
        """The payload for ``value`` (never larger than ``value`` plus one byte)."""
        small = len(value) <= SMALL_VALUE
        if small and self._dict_compressor is not None:
            frame = self._dict_compressor.compress(value)
            prefix = self._dict_number
        else:
            if small and self._samples is not None:
                self._sample(value)
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

    def _sample(self, value: bytes) -> None:
        samples = self._samples
        assert samples is not None
        if value:
            samples.append(value)
        if len(samples) < self._train_samples * (1 << self._tries):
            return
        self._tries += 1
        try:
            trained = zstandard.train_dictionary(DICT_SIZE, samples, level=self.level)
        except zstandard.ZstdError:
            # Too few or too uniform samples: try again with more, then give up.
            if self._tries >= MAX_TRAINING_TRIES:
                self._samples = None
            return
        number = max(self._dict_number + 1, FIRST_DICT)
        if number > 255:
            self._samples = None
            return
        data = trained.as_bytes()
        if self._on_trained is not None:
            self._on_trained(number, data)
        self.add_dictionary(number, data)
