"""Error types; each carries a message a user can act on. One renderer turns any error into that message."""

import re


class ArchiverError(Exception):
    """Base for every error the archiver reports to a user."""


class TerminalError(ArchiverError):
    """Retrying cannot help (a bad setting, an unsupported type, a missing privilege): fail at once, spend no retries."""


class ConfigError(TerminalError):
    """Invalid settings; the message lists every problem."""


class UnsupportedTypeError(TerminalError):
    """A column type that cannot be archived faithfully."""


class DatabaseUnavailableError(ArchiverError):
    """The database could not be reached (down, restarting, failing over, network): a later attempt can succeed."""


class OfflineError(ArchiverError):
    """Lake files needed now are in the Archive tier (offline) or still rehydrating: not damaged, not readable yet."""


class ImmutableStorageError(TerminalError):
    """The live lake refused a rename, delete or overwrite because of an immutability (WORM) policy."""


IMMUTABLE_CODE = "BlobImmutableDueToPolicy"  # Azure's 409 for a rename, delete or overwrite under a WORM policy
IMMUTABLE_HINT = (
    "the blob is under an immutability (WORM) policy. The live Delta table must stay writable (publishing renames, "
    "re-archives replace files, checkpoints are rewritten): remove the policy from that filesystem and keep immutable "
    "copies in a separate container with ARCHIVER_VAULT_URL (docs/deploy.md, Immutable copies). No chunk was dropped")


def is_immutable_refusal(error: BaseException) -> bool:
    """Whether storage refused an operation because the blob is under an immutability (WORM) policy."""
    text = f"{getattr(error, 'error_code', '') or ''} {error}"
    return IMMUTABLE_CODE in text or "immutable due to a policy" in text


class LayoutError(ArchiverError):
    """A lake path could not be built from the given identity."""


class LakeError(ArchiverError):
    """The lake could not be reached or written."""


class VerificationError(ArchiverError):
    """An archive did not match what was extracted or what the database holds."""


class SourceChangedError(ArchiverError):
    """The chunk changed after its snapshot was archived."""


class JobStateError(ArchiverError):
    """A job is not in a state that allows the requested step."""


class RestoreRefused(ArchiverError):
    """The restore would put in rows the target already holds, or cannot put them where asked."""


class SchemaEvolutionError(TerminalError):
    """The source table's schema changed in a way the archive table cannot follow (no retry helps until someone
    changes the source or the target table: `tsarchive retry` then runs the job again)."""


# SQLSTATE classes no retry can fix: 0A feature not supported, 42 syntax error or access rule violation (missing
# privileges, undefined objects), 3D/3F invalid catalog/schema names. Not 22 (data exception): a parallel stream whose
# exporting connection was killed gets 22023 "invalid snapshot identifier", which the next attempt does not.
_TERMINAL_SQLSTATE_CLASSES = ("0A", "42", "3D", "3F")

_PRIVILEGE_HINTS = [
    (re.compile(r"permission denied for database (\S+)"),
     "grant CREATE ON DATABASE {0} to the archiver's role, or create its schemas for it: CREATE SCHEMA archiver (and "
     "archiver_restore) AUTHORIZATION <role> (docs/deploy.md, section 3)"),
    (re.compile(r"permission denied for schema (\S+)"), "GRANT USAGE ON SCHEMA {0} TO <role> (docs/deploy.md, section 3)"),
    (re.compile(r"permission denied for (?:table|materialized view|view|relation) (\S+)"),
     "make the archiver's role a member of the role owning {0} (GRANT <owner> TO <role>): it reads, locks and drops "
     "the chunks of the tables that role owns (docs/deploy.md, section 3)"),
    (re.compile(r"must be (?:the )?owner of (?:table|relation|materialized view|hypertable) (\S+)"),
     "dropping a chunk needs its owner's rights: GRANT <role owning {0}> TO <role> (docs/deploy.md, section 3)"),
    (re.compile(r"permission denied for function (\S+)"), "GRANT EXECUTE ON FUNCTION {0} TO <role>"),
]


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error (duck-typed: no driver import here)."""
    code = getattr(error, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_terminal(error: BaseException) -> bool:
    """True when retrying the same step cannot succeed."""
    if isinstance(error, TerminalError) or is_immutable_refusal(error):
        return True
    code = sqlstate(error)
    return bool(code) and code[:2] in _TERMINAL_SQLSTATE_CLASSES


# SQLSTATE classes a later attempt can get past: 08 connection exception, 53 insufficient resources, 57 operator
# intervention (admin shutdown, crash recovery, cannot connect now), 40 transaction rollback, 55P03 lock not available.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")
# Failures to reach a service, named rather than imported (psycopg, azure-core, azure-servicebus stay optional here).
_TRANSIENT_TYPE_NAMES = {"OperationalError", "ServiceRequestError", "ServiceResponseError", "ServiceBusConnectionError",
                         "OperationTimeoutError", "ServiceBusCommunicationError"}


def is_transient(error: BaseException) -> bool:
    """True when the same step can succeed later unchanged: the database, the lake or the broker was unreachable."""
    if is_terminal(error):
        return False
    if isinstance(error, DatabaseUnavailableError | LakeError | ConnectionError | TimeoutError):
        return True
    code = sqlstate(error)
    if code:
        return code[:2] in _TRANSIENT_SQLSTATE_CLASSES or code == "55P03"
    return any(kind.__name__ in _TRANSIENT_TYPE_NAMES for kind in type(error).__mro__)


def render_error(error: BaseException) -> str:
    """One readable line for any error, for the CLI, HTTP and the functions alike.

    Its first line (or its type when it has none); for a database error the server's DETAIL, and for a missing
    privilege the grant that is missing.
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if is_immutable_refusal(error) and not isinstance(error, ImmutableStorageError):
        return f"{line[:300]}: {IMMUTABLE_HINT}"
    diag = getattr(error, "diag", None)
    detail = getattr(diag, "message_detail", None) if sqlstate(error) else None
    if detail:
        line = f"{line} ({detail.splitlines()[0]})"
    if sqlstate(error) == "42501" or line.startswith("must be owner"):
        for pattern, hint in _PRIVILEGE_HINTS:
            match = pattern.search(line)
            if match:
                return f"{line}: {hint.format(match.group(1))}"
    return line
