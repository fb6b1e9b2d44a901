"""TimescaleDB archiver engine: plan, archive to Parquet, verify, drop."""

__version__ = "0.2.0"
