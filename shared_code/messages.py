"""Versioned message schemas for archive requests and confirmations. Pure: parse, validate, build ids."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArchiverError

REQUEST_TYPE = "tsarchive.archive-request"
CONFIRMATION_TYPE = "tsarchive.archive-confirmation"
RESTORE_TYPE = "tsarchive.restore-request"
DRILL_TYPE = "tsarchive.drill-request"
SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"


class MessageError(ArchiverError):
    """A message that cannot be processed: malformed, unknown or of an unsupported version."""


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    traceparent: str | None = Field(default=None, max_length=128)
    # How often this message was re-sent after a transient failure (shared_code/redelivery.py); 0 as first sent.
    redelivery: int = Field(default=0, ge=0, le=1000)

    def to_json(self) -> str:
        return self.model_dump_json()

    def _id(self, base: str) -> str:
        """A re-send gets its own id: broker duplicate detection would drop it under the first one's."""
        return f"{base}-r{self.redelivery}" if self.redelivery else base


class _Message(_Envelope):
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=0)
    table: str = Field(min_length=1)
    chunk: str = Field(min_length=1)


class ArchiveRequest(_Message):
    """Archive one chunk."""

    type: Literal["tsarchive.archive-request"] = REQUEST_TYPE
    requested_at: datetime
    reason: str = "scheduled"

    @property
    def message_id(self) -> str:
        """Deterministic per job attempt, so broker duplicate detection drops re-sends."""
        return self._id(f"tsarchive-req-{self.job_id}-{self.attempt}")


class ArchiveConfirmation(_Message):
    """The outcome of archiving one chunk."""

    type: Literal["tsarchive.archive-confirmation"] = CONFIRMATION_TYPE
    status: Literal["archived", "failed"]
    lake_paths: list[str] = Field(default_factory=list)
    rows: int | None = None
    checksums: dict[str, str] = Field(default_factory=dict)
    error: str | None = None

    @property
    def message_id(self) -> str:
        return self._id(f"tsarchive-conf-{self.job_id}-{self.attempt}-{self.status}")


class RestoreRequest(_Envelope):
    """Restore a table's archived rows in [range_from, range_to), recorded as restore `restore_id` in the ledger."""

    type: Literal["tsarchive.restore-request"] = RESTORE_TYPE
    restore_id: int = Field(ge=1)
    table: str = Field(min_length=3, max_length=300)
    range_from: str | None = Field(default=None, max_length=64)
    range_to: str | None = Field(default=None, max_length=64)
    into: str | None = Field(default=None, max_length=300)
    allow_duplicates: bool = False
    skip_present: bool = False
    requested_at: datetime

    @property
    def message_id(self) -> str:
        return self._id(f"tsarchive-restore-{self.restore_id}")


class DrillRequest(_Envelope):
    """Run the recovery drill recorded as drill `drill_id` in the ledger, on `sample` archives (of `table`)."""

    type: Literal["tsarchive.drill-request"] = DRILL_TYPE
    drill_id: int = Field(ge=1)
    sample: int = Field(ge=1, le=100_000)
    table: str | None = Field(default=None, min_length=1, max_length=300)
    requested_at: datetime

    @property
    def message_id(self) -> str:
        return self._id(f"tsarchive-drill-{self.drill_id}")


_KINDS: dict[str, type[_Envelope]] = {REQUEST_TYPE: ArchiveRequest, CONFIRMATION_TYPE: ArchiveConfirmation,
                                      RESTORE_TYPE: RestoreRequest, DRILL_TYPE: DrillRequest}


def parse(body: bytes | str, expect: type[_Envelope] | tuple[type[_Envelope], ...]) -> Any:
    """Parse and validate a message body of one of the expected types; MessageError says exactly what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise MessageError(f"body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise MessageError("body must be a JSON object")
    expected = expect if isinstance(expect, tuple) else (expect,)
    names = " or ".join(repr(e.model_fields["type"].default) for e in expected)
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise MessageError(f"unknown message type {kind!r}; expected {names}")
    if _KINDS[kind] not in expected:
        raise MessageError(f"message type {kind!r} arrived on the queue for {names}")
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unsupported {kind} version {version!r}; this build reads version {SCHEMA_VERSION}")
    try:
        return _KINDS[kind].model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
        )
        raise MessageError(f"invalid {kind}: {problems}") from None
