"""An order-independent content hash of a set of rows, computed from Arrow batches. Pure (numpy, no I/O).

Restore proves its work with it: the rows read from the lake and the rows read back from the database, both as the
archive's Arrow types, must give the same count and hash. Each row hashes to two 64-bit words (every value, keyed by
its column's name, so column order does not matter); the table's hash is their sum modulo 2^64 per word. A sum does
not depend on row order and is additive: hash(before + restored) = hash(before) + hash(restored).

It detects accidental differences (a changed value, a lost or extra row) with odds of about 2^-128; it is not meant
to resist someone crafting collisions. The lake side is protected against tampering by the SHA-256 of every file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

_U64 = np.uint64
_MASK = (1 << 64) - 1
_M1, _M2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_NULL = _U64(0x6A09E667F3BCC909)  # a NULL value, distinct from every value's hash with overwhelming odds
_POSITION, _LENGTH, _LANE = _U64(0x3C6EF372FE94F82B), _U64(0xA54FF53A5F1D36F1), _U64(0x510E527FADE682D1)
_NAN64 = np.frombuffer(np.array([np.nan], dtype="<f8").tobytes(), dtype="<u8")[0]
_NAN32 = np.frombuffer(np.array([np.nan], dtype="<f4").tobytes(), dtype="<u4")[0]
_SLICE = 1 << 20  # elements per step when hashing byte strings: bounds the temporary arrays (8 MiB each)


class UnhashableType(TypeError):
    """An Arrow type the row hash does not cover (the archive never produces it)."""


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit affects every output bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _M1
        x = x ^ (x >> _U64(27))
        x = x * _M2
        return x ^ (x >> _U64(31))


def _seed(name: str, lane: int) -> np.uint64:
    return _U64(int.from_bytes(hashlib.sha256(f"{lane}:{name}".encode()).digest()[:8], "little"))


def _offsets(array: pa.Array, width: str) -> np.ndarray:
    buffer = array.buffers()[1]
    values = np.frombuffer(buffer, dtype=width, count=array.offset + len(array) + 1)
    return values[array.offset:].astype(np.int64)


_TABLE_POSITIONS = 256
_byte_table: np.ndarray | None = None


def _keyed_bytes(data: np.ndarray, position: np.ndarray) -> np.ndarray:
    """mix(byte ^ mix(position + _POSITION)) for each byte of a string: looked up for the first 256 positions of
    each string (a 512 KiB table), computed beyond; the same words either way, at a fraction of the work."""
    global _byte_table
    if _byte_table is None:
        with np.errstate(over="ignore"):
            keys = _mix(np.arange(_TABLE_POSITIONS, dtype=_U64) + _POSITION)
            _byte_table = _mix(np.arange(256, dtype=_U64)[None, :] ^ keys[:, None]).ravel()
    near = position < _TABLE_POSITIONS
    if near.all():
        return _byte_table[position * 256 + data]
    words = np.empty(len(data), dtype=_U64)
    words[near] = _byte_table[position[near] * 256 + data[near]]
    far = ~near
    with np.errstate(over="ignore"):
        words[far] = _mix(data[far].astype(_U64) ^ _mix(position[far].astype(_U64) + _POSITION))
    return words


def _sequences(elements: np.ndarray, offsets: np.ndarray, *, raw_bytes: bool = False) -> np.ndarray:
    """One word per list/string from its elements' words, each keyed by its position; empty sequences differ from NULL.

    With raw_bytes, `elements` are a string's bytes (uint8) and are keyed by table lookup (_keyed_bytes)."""
    out = np.empty(len(offsets) - 1, dtype=_U64)
    start = 0
    while start < len(out):  # rows in slices of at most _SLICE elements (a single longer row is one slice)
        stop = start + 1
        limit = offsets[start] + _SLICE
        stop = max(stop, int(np.searchsorted(offsets, limit, side="right")) - 1)
        stop = min(stop, len(out))
        part = offsets[start:stop + 1]
        lo, hi = int(part[0]), int(part[-1])
        lengths = np.diff(part)
        position = np.arange(hi - lo, dtype=np.int64) - np.repeat(part[:-1] - lo, lengths)
        with np.errstate(over="ignore"):
            if raw_bytes:
                words = _keyed_bytes(elements[lo:hi].astype(np.int64), position)
            else:
                words = _mix(elements[lo:hi] ^ _mix(position.astype(_U64) + _POSITION))
            sums = np.concatenate([np.zeros(1, dtype=_U64), np.cumsum(words, dtype=_U64)])
            total = sums[part[1:] - lo] - sums[part[:-1] - lo]
            out[start:stop] = _mix(total ^ _mix(lengths.astype(_U64) + _LENGTH))
        start = stop
    return out


def _fixed(array: pa.Array, width: int) -> np.ndarray:
    """The little-endian words of a fixed-width value (ints, floats, dates, timestamps, decimals)."""
    buffer = array.buffers()[1]
    if width <= 8:
        raw = np.frombuffer(buffer, dtype=f"<u{width}", count=array.offset + len(array))[array.offset:]
        return raw.astype(_U64)
    lanes = width // 8
    raw = np.frombuffer(buffer, dtype="<u8", count=(array.offset + len(array)) * lanes)[array.offset * lanes:]
    raw = raw.reshape(len(array), lanes)
    out = np.zeros(len(array), dtype=_U64)
    with np.errstate(over="ignore"):
        for lane in range(lanes):
            out = _mix(out ^ raw[:, lane] + _U64(lane + 1))
    return out


def value_words(array: pa.Array) -> np.ndarray:
    """One 64-bit word per value of `array`; NULL has its own word."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if isinstance(array.type, pa.BaseExtensionType):
        array = array.storage
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), _NULL, dtype=_U64)
    if pa.types.is_boolean(kind):
        words = np.asarray(pc.fill_null(array, False).cast(pa.uint8())).astype(_U64) + _U64(1)
    elif pa.types.is_floating(kind):
        width = kind.bit_width // 8
        words = _fixed(array, width)
        nan = np.isnan(np.asarray(pc.fill_null(array, 0)))
        words[nan] = _NAN64 if width == 8 else _NAN32  # one NaN: PostgreSQL and Arrow may spell it differently
    elif (pa.types.is_integer(kind) or pa.types.is_temporal(kind) or pa.types.is_decimal(kind)) \
            and kind.bit_width % 8 == 0 and not pa.types.is_interval(kind):
        words = _fixed(array, kind.bit_width // 8)
    elif pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) \
            or pa.types.is_large_binary(kind):
        words = _string_words(array)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = _offsets(array, "<i8" if pa.types.is_large_list(kind) else "<i4")
        words = _sequences(value_words(array.values), offsets)
    else:
        raise UnhashableType(f"no row hash for Arrow type {kind}")
    if array.null_count:
        words[np.asarray(array.is_null())] = _NULL
    return words


_SAMPLE = 4096


def _string_words(array: pa.Array) -> np.ndarray:
    """One word per string. A column that repeats its values (a label, a status, a small JSON document) is hashed
    once per distinct value: a tenth of the work or less, the same words."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(array) > 2 * _SAMPLE and pc.count_distinct(array.slice(0, _SAMPLE)).as_py() <= _SAMPLE // 4:
        encoded = pc.dictionary_encode(array)
        indices = np.asarray(encoded.indices.fill_null(0))
        return _string_words(encoded.dictionary)[indices] if len(encoded.dictionary) else \
            np.full(len(array), _NULL, dtype=_U64)
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offsets = _offsets(array, "<i8" if large else "<i4")
    data = array.buffers()[2]
    size = int(offsets[-1]) if len(offsets) else 0
    raw = np.frombuffer(data, dtype=np.uint8, count=size) if data is not None and size else np.zeros(0, np.uint8)
    return _sequences(raw, offsets, raw_bytes=True)


@dataclass
class RowSetHash:
    """Count and order-independent hash of a multiset of rows."""

    rows: int = 0
    words: list[int] = field(default_factory=lambda: [0, 0])

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add every row of `batch`; columns are matched by name, not position."""
        lanes = [np.zeros(batch.num_rows, dtype=_U64) for _ in self.words]
        with np.errstate(over="ignore"):
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                words = value_words(column)
                for lane, acc in enumerate(lanes):
                    acc += _mix(words ^ _seed(name, lane))
            for lane, acc in enumerate(lanes):
                self.words[lane] = (self.words[lane] + int(_mix(acc + _LANE * _U64(lane + 1)).sum(dtype=_U64))) & _MASK
        self.rows += batch.num_rows

    def row_words(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The first word of each row's hash: enough to find which rows a table already holds."""
        acc = np.zeros(batch.num_rows, dtype=_U64)
        with np.errstate(over="ignore"):
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                acc += _mix(value_words(column) ^ _seed(name, 0))
            return _mix(acc + _LANE)

    def __add__(self, other: RowSetHash) -> RowSetHash:
        return RowSetHash(self.rows + other.rows, [(a + b) & _MASK for a, b in zip(self.words, other.words, strict=True)])

    def __sub__(self, other: RowSetHash) -> RowSetHash:
        return RowSetHash(self.rows - other.rows, [(a - b) & _MASK for a, b in zip(self.words, other.words, strict=True)])

    @property
    def hexdigest(self) -> str:
        return "rows128:" + "".join(f"{w:016x}" for w in self.words)
