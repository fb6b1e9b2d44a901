"""Seed the demo: ~3 years of sensor readings in a TimescaleDB hypertable, some chunks compressed, one cagg."""

import os
import sys
import time

import psycopg

DSN = os.environ["ARCHIVER_DATABASE_URL"]

SQL = """
DROP SCHEMA IF EXISTS demo CASCADE;
DROP SCHEMA IF EXISTS archiver CASCADE;
CREATE SCHEMA demo;
CREATE TABLE demo.sensor_readings (
    ts          timestamptz NOT NULL,
    device_id   integer     NOT NULL,
    temperature double precision,
    humidity    real,
    status      text,
    attrs       jsonb
);
SELECT create_hypertable('demo.sensor_readings', by_range('ts', INTERVAL '30 days'));
INSERT INTO demo.sensor_readings
SELECT t, d,
       20 + 5 * sin(extract(epoch FROM t) / 86400.0) + d * 0.1,
       (40 + (d % 7) * 3)::real,
       CASE WHEN d % 11 = 0 THEN 'maintenance' ELSE 'ok' END,
       jsonb_build_object('fw', 'v' || (d % 3 + 1), 'site', 'site-' || (d % 4))
FROM generate_series(now() - INTERVAL '1095 days', now(), INTERVAL '30 minutes') AS t,
     generate_series(1, 10) AS d;
ALTER TABLE demo.sensor_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id');
SELECT count(compress_chunk(c)) FROM show_chunks('demo.sensor_readings', older_than => INTERVAL '900 days') c;
CREATE MATERIALIZED VIEW demo.sensor_daily WITH (timescaledb.continuous) AS
  SELECT time_bucket('1 day', ts) AS day, device_id, avg(temperature) AS avg_temp
  FROM demo.sensor_readings GROUP BY 1, 2 WITH NO DATA;
CALL refresh_continuous_aggregate('demo.sensor_daily', NULL, now() - INTERVAL '1 day');
SELECT add_continuous_aggregate_policy('demo.sensor_daily', start_offset => INTERVAL '90 days',
       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 day');
"""

started = time.monotonic()
with psycopg.connect(DSN, autocommit=True) as conn:
    conn.execute("SET client_min_messages = warning")
    for statement in [s.strip() for s in SQL.split(";\n") if s.strip()]:
        conn.execute(statement)
    rows = conn.execute("SELECT count(*) FROM demo.sensor_readings").fetchone()[0]
    chunks = conn.execute("SELECT count(*) FROM show_chunks('demo.sensor_readings')").fetchone()[0]
print(f"seeded demo.sensor_readings: {rows} rows in {chunks} chunks ({time.monotonic() - started:.1f}s)", file=sys.stderr)
