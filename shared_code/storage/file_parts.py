"""A Parquet file as parts a reader can verify one at a time: its head, each row group, its tail (the footer).

The archive records every part's SHA-256 in the ledger when it reads the file back. A restore then reads only the
parts it needs (the footer and the row groups whose time statistics overlap its range) and decodes nothing but bytes
it has just checked against the ledger, in the same read: a range of a big file costs that range, not the file, and
no one can swap the file between the check and the decode.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..errors import VerificationError

Part = tuple[int, int]  # offset, length
RecordedPart = list  # [offset, length, sha256 hex], as the ledger keeps it (JSON)
_CACHED_PARTS = 1  # row groups kept decoded-from at once: memory stays one or two row groups, not a file


def part_bounds(metadata: Any, size: int) -> list[Part]:
    """Contiguous parts covering [0, size): the head, one per row group (up to the next one's start), the tail.

    `metadata` is the file's pyarrow FileMetaData. A file whose row groups are not laid out in order is one part."""
    starts, end = [], 0
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        first = None
        for j in range(group.num_columns):
            chunk = group.column(j)
            offset = chunk.dictionary_page_offset if chunk.has_dictionary_page and chunk.dictionary_page_offset \
                else chunk.data_page_offset
            first = offset if first is None else min(first, offset)
            end = max(end, offset + chunk.total_compressed_size)
        if first is None:
            return [(0, size)]
        starts.append(first)
    if not starts or starts != sorted(set(starts)) or starts[0] < 4 or end > size:
        return [(0, size)]
    cuts = [0, *starts, end, size]
    return [(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]


def digest_parts(blocks: Callable[[], bytes], parts: list[Part]) -> tuple[str, list[str]]:
    """One pass over a file's bytes (`blocks()` returns the next block, b"" at the end): its SHA-256 and each part's."""
    whole = hashlib.sha256()
    digests, index, position = [], 0, 0
    current = hashlib.sha256()
    while block := blocks():
        whole.update(block)
        view = memoryview(block)
        while view:
            end = parts[index][0] + parts[index][1] if index < len(parts) else position + len(view)
            take = min(len(view), end - position)
            current.update(view[:take])
            view, position = view[take:], position + take
            if position == end and index < len(parts):
                digests.append(current.hexdigest())
                current, index = hashlib.sha256(), index + 1
    return whole.hexdigest(), digests


def recorded(parts: list[Part], digests: list[str]) -> list[RecordedPart]:
    return [[offset, length, digest] for (offset, length), digest in zip(parts, digests, strict=True)]


class VerifiedFile(io.RawIOBase):
    """A lake file, readable only through parts whose SHA-256 matches the ledger's: each part is read once when first
    touched, checked, and served from memory (at most a couple at a time). A part that differs stops the read."""

    def __init__(self, path: str, size: int, parts: list[RecordedPart], read_range: Callable[[int, int], bytes]) -> None:
        super().__init__()
        self.path, self.size, self.read_range = path, size, read_range
        self.parts = [(int(o), int(n), str(d)) for o, n, d in parts]
        if not self.parts or self.parts[0][0] != 0 or sum(n for _, n, _ in self.parts) != size or any(
                a[0] + a[1] != b[0] for a, b in zip(self.parts, self.parts[1:], strict=False)):
            raise VerificationError(f"{path}: the ledger's parts do not cover its {size} bytes; not reading it")
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._tail: tuple[int, bytes] | None = None  # the footer part stays: every row group's read needs it
        self._position = 0

    def part_bytes(self, index: int) -> bytes:
        """A part's bytes, read from the lake and checked against the ledger's SHA-256 the first time."""
        if self._tail and self._tail[0] == index:
            return self._tail[1]
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        offset, length, digest = self.parts[index]
        data = self.read_range(offset, length)
        if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
            what = "the footer" if index == len(self.parts) - 1 else "the head" if index == 0 else f"row group {index - 1}"
            raise VerificationError(f"{self.path}: {what} (bytes {offset}-{offset + length}) differs from what was "
                                    "archived (its SHA-256 is not the ledger's); not restoring from it")
        if index == len(self.parts) - 1:
            self._tail = (index, data)
        else:
            self._cache[index] = data
            while len(self._cache) > _CACHED_PARTS:
                self._cache.popitem(last=False)
        return data

    def footer(self) -> bytes:
        return self.part_bytes(len(self.parts) - 1)

    # -- the file interface pyarrow reads through ----------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        end = self.size if size is None or size < 0 else min(self.size, self._position + size)
        out = bytearray()
        while self._position < end:
            index = self._part_at(self._position)
            offset, length, _ = self.parts[index]
            data = self.part_bytes(index)
            take = min(end, offset + length) - self._position
            out += data[self._position - offset:self._position - offset + take]
            self._position += take
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _part_at(self, position: int) -> int:
        low, high = 0, len(self.parts) - 1
        while low < high:  # the last part whose offset is <= position
            middle = (low + high + 1) // 2
            if self.parts[middle][0] <= position:
                low = middle
            else:
                high = middle - 1
        return low
