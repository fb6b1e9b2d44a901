"""Lake column names: the name each source column has in the Delta table, one every promised reader accepts. Pure.

Spark's Delta reader (Databricks, Fabric notebooks, Synapse Spark) refuses the characters ` ,;{}()\\n\\t=` in a column
name unless the table enables column mapping, which Synapse serverless cannot read; Spark, Synapse and Fabric match
names ignoring case, and T-SQL names stop at 128 characters. So the lake's own names are made safe, and each field
keeps the PostgreSQL name in its metadata (`pg_name`). The rule, applied once per column and then never changed:

1. A column the lake table already has keeps its lake name (a table archived before this rule keeps its names).
2. A name of ASCII letters, digits and `_`, not starting with a digit, at most 100 characters and not taken by
   another column ignoring case, is kept as it is.
3. Any other name is derived: accents dropped, lowercased, each run of other characters becomes `_`, trimmed of `_`,
   `c_` in front if it is empty or starts with a digit, cut to 100 characters (`Start At` -> `start_at`,
   `Temp (C)` -> `temp_c`). A name taken ignoring case gets `_2`, `_3`... (`value` after `Value` -> `value_2`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_LENGTH = 100  # T-SQL readers (Synapse serverless, Fabric's SQL endpoint) stop at 128: room for `__pg_text` and a suffix
SPARK_INVALID = " ,;{}()\n\t="  # Delta on Spark without column mapping refuses these
PG_NAME = "pg_name"  # field metadata key: the PostgreSQL column name
_PORTABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def portable(name: str) -> bool:
    """Whether every promised reader takes this name unquoted and unchanged (uniqueness aside)."""
    return len(name) <= MAX_LENGTH and _PORTABLE.fullmatch(name) is not None


def derive(name: str) -> str:
    """The safe form of a name, before any collision suffix."""
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_only.lower()).strip("_")
    if not base or base[0].isdigit():
        base = f"c_{base}"
    return base[:MAX_LENGTH].rstrip("_") or "c"


def _free(base: str, taken: set[str]) -> str:
    candidate, n = base, 1
    while candidate.casefold() in taken:
        n += 1
        suffix = f"_{n}"
        candidate = base[:MAX_LENGTH - len(suffix)] + suffix
    return candidate


def assign(columns: Iterable[str], existing: dict[str, str] | None = None,
           reserved: Iterable[str] = ()) -> dict[str, str]:
    """PostgreSQL name -> lake name for `columns` (in table order), keeping `existing` names and clear of `reserved`
    (the table's partition columns and any other name already in it), unique ignoring case."""
    columns = list(columns)
    existing = existing or {}
    out = {name: existing[name] for name in columns if name in existing}
    taken = {n.casefold() for n in [*existing.values(), *reserved]}
    for name in columns:  # names that are fine as they are claim theirs first: they never get a suffix from a derived one
        if name not in out and portable(name) and name.casefold() not in taken:
            out[name] = name
            taken.add(name.casefold())
    for name in columns:
        if name not in out:
            out[name] = _free(derive(name), taken)
            taken.add(out[name].casefold())
    return {name: out[name] for name in columns}


def reader_problems(names: Iterable[str]) -> list[str]:
    """What Spark-based readers refuse in a table's column names: characters they reject, names equal ignoring case."""
    problems, seen = [], {}
    for name in names:
        bad = sorted({c for c in name if c in SPARK_INVALID})
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            problems.append(f"{name!r} holds {shown}")
        key = name.casefold()
        if key in seen:
            problems.append(f"{seen[key]!r} and {name!r} are the same name ignoring case")
        seen.setdefault(key, name)
    return problems
