#!/usr/bin/env bash
# The demo: seed ~3 years of sensor data into TimescaleDB, archive everything older than 730 days, show the result.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.venv/bin"
export ARCHIVER_DATABASE_URL="${ARCHIVER_DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:${TSARCHIVE_TSDB_PORT:-55433}/postgres?sslmode=disable}"
export ARCHIVER_LAKE_URL="${ARCHIVER_LAKE_URL:-file://$ROOT/.local/demo-lake}"
rm -rf "$ROOT/.local/demo-lake"

echo "== seeding TimescaleDB"
"$BIN/python" "$ROOT/tools/demo_seed.py"
echo "== tsarchive init"
"$BIN/tsarchive" init
echo "== tsarchive plan"
COLUMNS=160 "$BIN/tsarchive" plan
echo "== tsarchive run"
"$BIN/tsarchive" run
echo "== tsarchive status"
COLUMNS=160 "$BIN/tsarchive" status
echo "== tsarchive verify"
"$BIN/tsarchive" verify
echo "== tsarchive query: the archive as a Delta Lake table, read by DuckDB (no database needed)"
COLUMNS=160 "$BIN/tsarchive" query "
    SELECT year, month, count(*) AS rows, min(ts) AS first, max(ts) AS last, round(avg(temperature), 2) AS avg_temp
    FROM demo.sensor_readings GROUP BY ALL ORDER BY ALL"
FIRST_DAY="$("$BIN/tsarchive" query "SELECT min(ts) AS first FROM demo.sensor_readings" --json | "$BIN/python" -c \
  "import json, sys; print(json.load(sys.stdin)[0]['first'][:10])")"
NEXT_DAY="$("$BIN/python" -c "import datetime, sys; print(datetime.date.fromisoformat(sys.argv[1]) + datetime.timedelta(days=1))" "$FIRST_DAY")"
echo "== tsarchive restore: the first archived day back into PostgreSQL, proven equal to the archive"
"$BIN/tsarchive" restore --hypertable demo.sensor_readings --from "$FIRST_DAY" --to "$NEXT_DAY" --into demo.restored_day --dry-run
"$BIN/tsarchive" restore --hypertable demo.sensor_readings --from "$FIRST_DAY" --to "$NEXT_DAY" --into demo.restored_day
echo "== tsarchive query --live: the whole history as one table, rows still in TimescaleDB and archived rows, each once"
COLUMNS=160 "$BIN/tsarchive" query --live "
    SELECT date_part('year', ts) AS year, count(*) AS rows, min(ts) AS first, max(ts) AS last,
           round(avg(temperature), 2) AS avg_temp
    FROM demo.sensor_readings GROUP BY ALL ORDER BY ALL"
