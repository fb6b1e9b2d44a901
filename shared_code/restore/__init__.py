"""Restore archived rows from the lake, and prove them: one job into a new table, or a table's time range anywhere.

The package's stages, each a module: `selection` (which jobs and files, each proven against the ledger), `target`
(the table written into), `staging` (lake rows into a table the server can cast from), `proof` (the read-back row
hash), `duplicates` (refusing rows the target already holds), `loading` (one chunk in one checked transaction), and
the entry points `ranges.restore_range`, `single_job.restore` and `rehydration.rehydrate_range`, which take an
engine or a `RestoreContext`.
"""

from ..errors import RestoreRefused
from .bounds import TimeFilter, parse_bound
from .context import RestoreContext
from .loading import ChunkRestore
from .ranges import RangeRestoreResult, restore_estimate, restore_range
from .rehydration import rehydrate_range
from .single_job import RestoreResult, restore
from .target import RESTORE_SCHEMA

__all__ = ["RESTORE_SCHEMA", "ChunkRestore", "RangeRestoreResult", "RestoreContext", "RestoreRefused",
           "RestoreResult", "TimeFilter", "parse_bound", "rehydrate_range", "restore", "restore_estimate",
           "restore_range"]
