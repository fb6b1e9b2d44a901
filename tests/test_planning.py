from datetime import UTC, datetime, timedelta

from shared_code.planning import (
    AggregateGuard,
    Chunk,
    ChunkKind,
    Decision,
    TablePolicy,
    cutoff_for,
    decide,
    plan,
    table_selected,
)

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def chunk(start_days_ago: int, end_days_ago: int, table: str = "t") -> Chunk:
    return Chunk(ChunkKind.HYPERTABLE_CHUNK, "public", table, "_timescaledb_internal", f"c{start_days_ago}",
                 NOW - timedelta(days=start_days_ago), NOW - timedelta(days=end_days_ago))


def test_whole_range_must_be_older_than_cutoff():
    policy = TablePolicy(cutoff=cutoff_for("public.t", NOW, 730, {}))
    assert decide(chunk(800, 731), policy).decision == Decision.DUE
    assert decide(chunk(800, 730), policy).decision == Decision.DUE  # end == cutoff, as drop_chunks(older_than)
    assert decide(chunk(735, 729), policy).decision == Decision.HOT


def test_override_by_table():
    assert cutoff_for("public.t", NOW, 730, {"public.t": 30}) == NOW - timedelta(days=30)
    assert cutoff_for("public.t", NOW, 730, {"other.t": 30}) == NOW - timedelta(days=730)


def test_cagg_refresh_window_blocks():
    guard = AggregateGuard("public.daily", refresh_start=NOW - timedelta(days=800), has_policy=True, watermark=NOW)
    entry = decide(chunk(900, 790), TablePolicy(cutoff=NOW - timedelta(days=730), guards=[guard]))
    assert entry.decision == Decision.BLOCKED
    assert "refresh window" in entry.reason and "public.daily" in entry.reason
    assert decide(chunk(900, 810), TablePolicy(cutoff=NOW - timedelta(days=730), guards=[guard])).decision == Decision.DUE


def test_cagg_watermark_blocks():
    guard = AggregateGuard("public.daily", refresh_start=None, has_policy=False, watermark=NOW - timedelta(days=850))
    entry = decide(chunk(900, 800), TablePolicy(cutoff=NOW - timedelta(days=730), guards=[guard]))
    assert entry.decision == Decision.BLOCKED and "watermark" in entry.reason
    unmaterialized = AggregateGuard("v", refresh_start=None, has_policy=False, watermark=None)
    assert decide(chunk(900, 800), TablePolicy(NOW, guards=[unmaterialized])).decision == Decision.BLOCKED


def test_policy_without_start_offset_blocks_everything():
    guard = AggregateGuard("v", refresh_start=None, has_policy=True, watermark=NOW)
    entry = decide(chunk(2000, 1990), TablePolicy(cutoff=NOW, guards=[guard]))
    assert entry.decision == Decision.BLOCKED and "whole range" in entry.reason


def test_skip_and_open_ranges():
    assert decide(chunk(900, 800), TablePolicy(cutoff=None, skip_reason="integer")).decision == Decision.SKIPPED
    open_ended = Chunk(ChunkKind.PARTITION, "public", "t", "public", "t_default", None, None)
    assert decide(open_ended, TablePolicy(cutoff=NOW)).decision == Decision.SKIPPED


def test_include_exclude_globs():
    assert table_selected("public.metrics", [], [])
    assert table_selected("public.metrics", ["public.*"], [])
    assert not table_selected("audit.log", ["public.*"], [])
    assert not table_selected("public.tmp_x", ["public.*"], ["public.tmp_*"])


def test_plan_orders_oldest_first_and_ignores_unselected_tables():
    entries = plan([chunk(800, 790), chunk(900, 890), chunk(950, 940, table="other")],
                   {"public.t": TablePolicy(cutoff=NOW - timedelta(days=730))})
    assert [e.chunk.chunk_name for e in entries] == ["c900", "c800"]
