"""PostgreSQL -> Arrow/Parquet type mapping: what to SELECT per column and how to fix it up in Arrow.

Pure: takes catalog facts, returns plans. The README's type table is generated from MAPPING_DOC.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from .errors import UnsupportedTypeError

# Element types ADBC decodes natively inside one-dimensional arrays.
_NATIVE_ARRAY_ELEMENTS = {"bool", "int2", "int4", "int8", "float4", "float8", "text", "varchar", "bpchar"}
_NATIVE = {
    "bool", "int2", "int4", "int8", "float4", "float8", "text", "varchar", "bpchar", "name", "bytea", "json", "jsonb",
}
# Delta Lake (reader 1 / writer 2) has no UUID or TIME type: these keep their exact PostgreSQL text form.
_TEXT_FORM = {"inet", "cidr", "macaddr", "macaddr8", "timetz", "uuid", "time"}
DELTA_MAX_DECIMAL_PRECISION = 38
_INFINITE = {"timestamp", "timestamptz", "date"}

MAPPING_DOC: list[tuple[str, str, str]] = [
    ("bool", "BOOLEAN", ""),
    ("int2 / int4 / int8", "INT16 / INT32 / INT64", ""),
    ("float4 / float8", "FLOAT / DOUBLE", "NaN, Infinity and -Infinity kept"),
    ("numeric(p,s), p <= 38, 0 <= s <= p", "DECIMAL(p,s)", "NaN/Infinity cannot be stored: the job fails naming the column"),
    ("numeric (no typmod), or p > 38, or s < 0", "STRING, exact text",
     "NaN, Infinity kept; cast in the query (`::DECIMAL(38,10)`); Delta decimals stop at 38 digits"),
    ("text / varchar / char(n) / name", "STRING", "char(n) keeps its padding"),
    ("bytea", "BINARY", ""),
    ("uuid", "STRING", "canonical text; Delta has no UUID type (`::UUID` in DuckDB)"),
    ("json / jsonb", "STRING", "jsonb in PostgreSQL's normalised text"),
    ("date", "DATE", "+/-infinity -> +/-2147483647 days (DuckDB's infinity)"),
    ("time", "STRING", "PostgreSQL text form (`24:00:00` kept); Delta has no TIME type"),
    ("timetz", "STRING", "PostgreSQL text form, e.g. 12:00:00+02"),
    ("timestamp", "TIMESTAMP(us, UTC)", "the wall-clock value read as UTC (Delta's timestamp_ntz needs reader v3); "
     "+/-infinity -> +/-INT64_MAX us (DuckDB's infinity)"),
    ("timestamptz", "TIMESTAMP(us, UTC)", "+/-infinity -> +/-INT64_MAX us (DuckDB's infinity)"),
    ("interval", "STRING `N months N days N microseconds`", "exact; both PostgreSQL and DuckDB cast it back with `::interval`"),
    ("arrays of bool/int/float/text", "LIST<element>",
     "NULL elements kept. A value a list cannot hold exactly (several dimensions, or a lower bound other than 1, e.g. "
     "`{{1,2},{3,4}}`, `[0:1]={5,6}`) is NULL in the list column and kept as PostgreSQL's exact text in a column "
     "beside it, `<name>__pg_text`, added to the table (nullable) the first time a chunk needs it; restore puts the "
     "value back from that text"),
    ("arrays of other types", "LIST<STRING>", "elements in PostgreSQL text form; odd dimensions and bounds as above"),
    ("enum", "STRING", "the label"),
    ("inet / cidr / macaddr / macaddr8", "STRING", "PostgreSQL text form"),
    ("domains", "as the base type", ""),
    (
        "anything else (ranges, geometric, xml, bit, money, composite, ...)",
        "rejected",
        "the job fails before writing; ARCHIVER_UNSUPPORTED_AS_TEXT=true archives them (and their arrays) as STRING in "
        "PostgreSQL's text form; restore casts the text back to the recorded type",
    ),
]


@dataclass(frozen=True)
class SourceColumn:
    """Catalog facts about one column."""

    name: str
    type_display: str  # format_type(), e.g. numeric(10,2)
    base_type: str  # typname after resolving domains, e.g. numeric, _int4
    type_category: str  # pg_type.typcategory of the base type
    numeric_precision: int | None = None
    numeric_scale: int | None = None
    element_type: str | None = None  # typname of the array element
    is_domain: bool = False


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is selected and converted."""

    name: str  # the PostgreSQL name
    pg_type: str
    expression: str  # what to SELECT, already quoted (no alias)
    conversion: str = "none"  # none | decimal | infinite_timestamp | infinite_date
    precision: int | None = None
    scale: int | None = None
    check_infinite: bool = False
    check_ndims: bool = False
    notes: list[str] = field(default_factory=list)
    text_companion: str | None = None  # set when this chunk holds arrays a Parquet list cannot hold exactly
    lake_name: str = ""  # the column's name in the lake (lake_columns.py); empty: the PostgreSQL name

    @property
    def output(self) -> str:
        """The name the column has in the Arrow batches and the files."""
        return self.lake_name or self.name

    def ndims_column(self) -> str:
        return f"__tsarchive_ndims_{hashlib.sha1(self.name.encode()).hexdigest()[:10]}"


def text_companion(name: str, names: list[str]) -> str:
    """The column beside an array column that holds, as PostgreSQL's exact text, the values a Parquet list cannot:
    several dimensions, or a lower bound other than 1 (`[0:1]={1,2}`). Deterministic from the table's column names;
    unique ignoring case, as the lake's names are."""
    candidate, taken = f"{name}__pg_text", {n.casefold() for n in names}
    while candidate.casefold() in taken:
        candidate += "_"
    return candidate


def with_lake_names(plans: list[ColumnPlan], lake_names: dict[str, str]) -> list[ColumnPlan]:
    """The plans with each column's lake name (lake_columns.assign) set."""
    return [dataclasses.replace(p, lake_name=lake_names[p.name]) for p in plans]


def recorded_columns(plans: list[ColumnPlan]) -> list[dict[str, str]]:
    """The columns as the ledger, the manifest and the vault record them: PostgreSQL name, type, lake name."""
    return [{"name": p.name, "pg_type": p.pg_type, "lake_name": p.output} for p in plans]


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL does."""
    return '"' + name.replace('"', '""') + '"'


def plan_column(column: SourceColumn, *, unsupported_as_text: bool = False) -> ColumnPlan:
    """Decide how to archive one column; raise UnsupportedTypeError for anything unfaithful."""
    ident = quote_ident(column.name)
    name, shown = column.name, column.type_display
    base = column.base_type
    # Domains: select as the base type so ADBC sees the real type.
    source = f"{ident}::{base}" if column.is_domain else ident
    if base in _NATIVE or column.type_category == "E":
        return ColumnPlan(name, shown, source)
    if base == "numeric":
        precision, scale = column.numeric_precision, column.numeric_scale or 0
        if precision is None or precision > DELTA_MAX_DECIMAL_PRECISION or not 0 <= scale <= precision:
            return ColumnPlan(name, shown, f"{ident}::text")
        return ColumnPlan(
            name, shown, f"{ident}::text", conversion="decimal",
            precision=column.numeric_precision, scale=column.numeric_scale or 0,
        )
    if base in _INFINITE:
        return ColumnPlan(
            name, shown, source,
            conversion="infinite_date" if base == "date" else "infinite_timestamp", check_infinite=True,
        )
    if base == "interval":
        # PostgreSQL's own three fields, in a form PostgreSQL and DuckDB both parse (DuckDB rejects ISO 8601).
        expr = (
            f"CASE WHEN {ident} IS NOT NULL THEN format('%s months %s days %s microseconds', "
            f"(extract(year FROM {ident}) * 12 + extract(month FROM {ident}))::bigint, "
            f"extract(day FROM {ident})::bigint, "
            f"(extract(hour FROM {ident}) * 3600000000 + extract(minute FROM {ident}) * 60000000 "
            f"+ extract(microseconds FROM {ident}))::bigint) END"
        )
        return ColumnPlan(name, shown, expr)
    if base in _TEXT_FORM:
        return ColumnPlan(name, shown, f"{ident}::text")
    if column.type_category == "A" and column.element_type:
        if column.element_type in _NATIVE_ARRAY_ELEMENTS:
            return ColumnPlan(name, shown, ident, check_ndims=True)
        return ColumnPlan(name, shown, f"{ident}::text[]", check_ndims=True)
    if unsupported_as_text:
        return ColumnPlan(name, shown, f"{ident}::text", notes=["as text"])
    raise UnsupportedTypeError(
        f"column {column.name!r} has type {column.type_display}, which cannot be archived faithfully to Parquet. "
        "Cast it in a view you archive instead, or set ARCHIVER_UNSUPPORTED_AS_TEXT=true to archive "
        "such columns as their PostgreSQL text form."
    )


def plan_columns(columns: list[SourceColumn], *, unsupported_as_text: bool = False) -> list[ColumnPlan]:
    """Plan every column; report every unsupported column in one error."""
    plans, problems = [], []
    for column in columns:
        try:
            plans.append(plan_column(column, unsupported_as_text=unsupported_as_text))
        except UnsupportedTypeError as error:
            problems.append(str(error))
    if problems:
        raise UnsupportedTypeError("; ".join(problems))
    return plans


def schema_fingerprint(columns: list[SourceColumn]) -> str:
    """A stable digest of column names and types, to detect schema changes between archive and drop."""
    text = "\n".join(f"{c.name}\t{c.type_display}" for c in columns)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
