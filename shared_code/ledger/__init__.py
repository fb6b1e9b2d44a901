"""The ledger, in the source database: the jobs table and its transitions and claims (`jobs`), the drills and restores
tables (`records`), and their schema (`migrations`). All SQL on these tables lives in this package."""

from .jobs import Job, JobState, Ledger

__all__ = ["Job", "JobState", "Ledger"]
