import pytest

from shared_code.errors import ConfigError
from shared_code.settings import load_settings


def test_defaults(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    s = load_settings()
    assert s.retention_days == 730
    assert s.lake_url.startswith("file:///")
    assert s.ledger_schema == "archiver"
    assert s.dry_run is False


def test_every_problem_in_one_message(monkeypatch):
    monkeypatch.setenv("ARCHIVER_RETENTION_DAYS", "abc")
    monkeypatch.setenv("ARCHIVER_LAKE_URL", "s3://bucket/x")
    monkeypatch.setenv("ARCHIVER_PARALLEL_CHUNKS", "0")
    monkeypatch.setenv("ARCHIVER_RETENTION_OVERRIDES", "public.metrics=0")
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u:hunter2@h/db")
    monkeypatch.setenv("ARCHIVER_PARTITIONED_TABLES", "a.b.c")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("RETENTION_DAYS", "LAKE_URL", "PARALLEL_CHUNKS", "RETENTION_OVERRIDES", "PARTITIONED_TABLES"):
        assert f"ARCHIVER_{name}" in message
    assert "hunter2" not in message
    assert message.count("\n  - ") == 5


def test_missing_database_url():
    with pytest.raises(ConfigError, match="ARCHIVER_DATABASE_URL: is required"):
        load_settings()


def test_lists_and_maps_accept_csv_and_json(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("ARCHIVER_INCLUDE", "public.*, metrics.cpu")
    monkeypatch.setenv("ARCHIVER_EXCLUDE", '["public.tmp_*"]')
    monkeypatch.setenv("ARCHIVER_RETENTION_OVERRIDES", '{"public.events": 365}')
    monkeypatch.setenv("ARCHIVER_INTEGER_RETENTION", "public.counters=1000")
    s = load_settings()
    assert s.include == ["public.*", "metrics.cpu"]
    assert s.exclude == ["public.tmp_*"]
    assert s.retention_overrides == {"public.events": 365}
    assert s.integer_retention == {"public.counters": 1000}


def test_malformed_json_is_a_config_error(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("ARCHIVER_RETENTION_OVERRIDES", "{not json")
    with pytest.raises(ConfigError, match="ARCHIVER_RETENTION_OVERRIDES"):
        load_settings()


def test_relative_file_url_rejected(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("ARCHIVER_LAKE_URL", "file://relative/path")
    with pytest.raises(ConfigError, match="absolute"):
        load_settings()


def test_abfss_url_accepted(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("ARCHIVER_LAKE_URL", "abfss://archive@acct.dfs.core.windows.net/tsdb")
    assert load_settings().lake_url.startswith("abfss://")


def test_an_empty_drill_schedule_means_off(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://x@localhost/db")
    monkeypatch.setenv("ARCHIVER_DRILL_SCHEDULE", "  ")
    assert load_settings().drill_schedule is None
    monkeypatch.setenv("ARCHIVER_DRILL_SCHEDULE", "every sunday")
    with pytest.raises(ConfigError, match="drill_schedule|DRILL_SCHEDULE"):
        load_settings()
