"""Crash points for recovery tests: TSARCHIVE_CRASH_AT=<name> kills the process there, as a power cut would."""

import os

CRASH_POINTS = (
    "after_claim",
    "after_temp_write",
    "mid_publish",
    "before_commit",
    "after_commit",
    "after_manifest",
    "after_seal",
    "after_archived",
    "before_drop_commit",
)


def crash_point(name: str) -> None:
    """Exit at once, without cleanup, when the environment asks for a crash here."""
    if os.environ.get("TSARCHIVE_CRASH_AT") == name:
        os._exit(137)
