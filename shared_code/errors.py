"""Error types; each carries a message a user can act on."""


class ArchiverError(Exception):
    """Base for every error the archiver reports to a user."""


class ConfigError(ArchiverError):
    """Invalid settings; the message lists every problem."""


class UnsupportedTypeError(ArchiverError):
    """A column type that cannot be archived faithfully."""


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


class SchemaEvolutionError(ArchiverError):
    """The source table's schema changed in a way the archive table cannot follow."""


def render_error(error: BaseException) -> str:
    """One readable line for any error: its first line, or its type when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
