"""Loading a chunk's lake rows straight into the target (COPY BINARY from Arrow), where no column needs a cast back.

The archive keeps most types as the very Arrow types PostgreSQL's binary COPY takes for the recorded column type; for
those, staging the rows and casting them with INSERT ... SELECT only costs a second copy. A chunk qualifies when every
recorded column type is in DIRECT_TYPES. jsonb goes in as its text behind the binary format's version byte. A date or
timestamp holding an infinity sentinel cannot (ADBC would shift it as a finite value): such a chunk stops with
NeedsStaging and is loaded through staging instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import ArchiverError
from .selection import Columns

if TYPE_CHECKING:
    import pyarrow as pa

    from ..row_hash import RowSetHash

DIRECT_TYPES = {"boolean", "smallint", "integer", "bigint", "real", "double precision", "text", "bytea", "date",
                "timestamp without time zone", "timestamp with time zone", "json", "jsonb"}
_SIZED = re.compile(r"^(character varying|character|numeric)\(\d+(,\d+)?\)$")
_INT64_MAX = 9_223_372_036_854_775_807
_INT32_MAX = 2_147_483_647


class NeedsStaging(ArchiverError):
    """The chunk holds a value the direct load cannot put in exactly (an infinity): load it through staging."""


def qualifies(columns: Columns) -> bool:
    """Whether every column can go in as archived: a type in DIRECT_TYPES, varchar(n), char(n) or numeric(p,s)."""
    return bool(columns) and all(c["pg_type"] in DIRECT_TYPES or _SIZED.match(c["pg_type"]) for c in columns)


def direct_batches(batches: Iterator[pa.RecordBatch], columns: Columns, hashed: RowSetHash
                   ) -> Iterator[pa.RecordBatch]:
    """The lake's batches as the target's COPY takes them, hashed (as archived) on the way."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {c["name"]: c["pg_type"] for c in columns}
    version = pa.scalar(b"\x01", pa.binary())
    for batch in batches:
        hashed.update(batch)
        arrays = []
        for field, column in zip(batch.schema, batch.columns, strict=True):
            if pa.types.is_timestamp(column.type) or pa.types.is_date32(column.type):
                top = _INT32_MAX if pa.types.is_date32(column.type) else _INT64_MAX
                bounds = pc.min_max(column.view(pa.int32() if top == _INT32_MAX else pa.int64()))
                if bounds["max"].as_py() == top or bounds["min"].as_py() == -top:
                    raise NeedsStaging(f"column {field.name!r} holds an infinity")
            elif kinds.get(field.name) == "jsonb":  # jsonb's binary input: a version byte, then the text
                column = pc.binary_join_element_wise(version, column.cast(pa.binary()), pa.scalar(b"", pa.binary()))
            arrays.append(column)
        yield pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def first_batch(batches: Iterator[pa.RecordBatch]) -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
    """The first batch and an iterator over all of them (a stream needs its schema before its rows)."""
    first = next(batches, None)

    def chained() -> Iterator[pa.RecordBatch]:
        if first is not None:
            yield first
            yield from batches
    return first, chained()
