"""Verification: one archive checked against the ledger and the lake (`archive_check`), and verify runs and drills
over many (`verification`)."""
