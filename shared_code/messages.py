"""Versioned message schemas for archive requests and confirmations. Pure: parse, validate, build ids."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArchiverError

REQUEST_TYPE = "tsarchive.archive-request"
CONFIRMATION_TYPE = "tsarchive.archive-confirmation"
SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"


class MessageError(ArchiverError):
    """A message that cannot be processed: malformed, unknown or of an unsupported version."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=0)
    table: str = Field(min_length=1)
    chunk: str = Field(min_length=1)
    traceparent: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json()


class ArchiveRequest(_Message):
    """Archive one chunk."""

    type: Literal["tsarchive.archive-request"] = REQUEST_TYPE
    requested_at: datetime
    reason: str = "scheduled"

    @property
    def message_id(self) -> str:
        """Deterministic per job attempt, so broker duplicate detection drops re-sends."""
        return f"tsarchive-req-{self.job_id}-{self.attempt}"


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
        return f"tsarchive-conf-{self.job_id}-{self.attempt}-{self.status}"


_KINDS: dict[str, type[_Message]] = {REQUEST_TYPE: ArchiveRequest, CONFIRMATION_TYPE: ArchiveConfirmation}


def parse(body: bytes | str, expect: type[_Message]) -> Any:
    """Parse and validate a message body; MessageError says exactly what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise MessageError(f"body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise MessageError("body must be a JSON object")
    kind = data.get("type")
    if kind not in _KINDS:
        raise MessageError(f"unknown message type {kind!r}; expected {expect.model_fields['type'].default!r}")
    if _KINDS[kind] is not expect:
        raise MessageError(f"message type {kind!r} arrived on the queue for {expect.model_fields['type'].default!r}")
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unsupported {kind} version {version!r}; this build reads version {SCHEMA_VERSION}")
    try:
        return expect.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
        )
        raise MessageError(f"invalid {kind}: {problems}") from None
