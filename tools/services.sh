#!/usr/bin/env bash
# Starts/stops the local stack on loopback: PostgreSQL 15, Azurite, TimescaleDB (PGlite WASM). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$ROOT/.local"
PG_PORT="${TSARCHIVE_PG_PORT:-55432}"
TSDB_PORT="${TSARCHIVE_TSDB_PORT:-55433}"
NATIVE_PORT="${TSARCHIVE_NATIVE_PORT:-55434}"
POOLER_PORT="${TSARCHIVE_POOLER_PORT:-55435}"
APACHE_PORT="${TSARCHIVE_APACHE_PORT:-55436}"
AZURITE_BLOB_PORT="${TSARCHIVE_AZURITE_BLOB_PORT:-10000}"
AZURITE_QUEUE_PORT="${TSARCHIVE_AZURITE_QUEUE_PORT:-10001}"
AZURITE_TABLE_PORT="${TSARCHIVE_AZURITE_TABLE_PORT:-10002}"
PGBIN="$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v initdb)")"
mkdir -p "$STATE"

as_pg() {  # initdb/pg_ctl refuse to run as root
  if [ "$(id -u)" = "0" ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 120); do port_open "$1" && return 0; sleep 0.5; done
  echo "error: $2 did not start on port $1; see $3" >&2; exit 1
}

pg_data_dir() {  # [suffix]
  # The postgres user must be able to reach the data folder; a checkout under /root is not reachable.
  if [ "$(id -u)" = "0" ] && ! runuser -u postgres -- test -x "$STATE"; then
    echo "/var/lib/postgresql/tsarchive-$(echo "$ROOT" | md5sum | cut -c1-8)${1:-}"
  else
    echo "$STATE/pg${1:-}"
  fi
}

native_tsdb_installed() { ls "$($PGBIN/pg_config --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)"/timescaledb-2*.so >/dev/null 2>&1; }

# Native TimescaleDB (PostgreSQL 15 + the extension built by tools/timescaledb.sh): started only when installed.
start_native_tsdb() {  # [suffix port extra-options...]
  local suffix="${1:--tsdb}" port="${2:-$NATIVE_PORT}"; shift 2 2>/dev/null || true
  local data label="native-tsdb${suffix#-tsdb}"; data="$(pg_data_dir "$suffix")"
  if ! native_tsdb_installed; then echo "native TimescaleDB not installed (make tsdb-native builds it); skipped"; return; fi
  if port_open "$port"; then echo "$label already running on $port"; return; fi
  if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"; if [ "$(id -u)" = "0" ]; then chown postgres:postgres "$data"; fi
    as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$STATE/native$suffix-initdb.log" 2>&1
  fi
  # Many chunks per transaction (the 10,000-chunk bench) need a larger lock table.
  as_pg "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off \
        -c shared_preload_libraries=timescaledb -c max_locks_per_transaction=1024 -c timescaledb.telemetry_level=off \
        -c shared_buffers=${SHARED_BUFFERS:-512MB} $*" start >/dev/null
  wait_port "$port" "$label" "$data/server.log"
  echo "$label started on $port"
}

start_postgres() {
  local data; data="$(pg_data_dir)"
  if port_open "$PG_PORT"; then echo "postgres   already running on $PG_PORT"; return; fi
  if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"; if [ "$(id -u)" = "0" ]; then chown postgres:postgres "$data"; fi
    as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$STATE/pg-initdb.log" 2>&1
  fi
  as_pg "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off" start >/dev/null
  wait_port "$PG_PORT" postgres "$data/server.log"
  echo "postgres   started on $PG_PORT"
}

# PgBouncer in transaction mode in front of PostgreSQL 15, as Azure Database for PostgreSQL's built-in pooler on
# port 6432 runs: the tests check that tsarchive refuses it (session advisory locks would not guard claims).
start_pgbouncer() {
  command -v pgbouncer >/dev/null 2>&1 || { echo "pgbouncer  not installed (its tests are skipped)"; return; }
  if port_open "$POOLER_PORT"; then echo "pgbouncer  already running on $POOLER_PORT"; return; fi
  local dir; dir="$(pg_data_dir -pgbouncer)"
  mkdir -p "$dir"; if [ "$(id -u)" = "0" ]; then chown postgres:postgres "$dir"; fi
  as_pg sh -c "printf '\"postgres\" \"\"\\n' > '$dir/userlist.txt'"
  as_pg sh -c "cat > '$dir/pgbouncer.ini'" <<INI
[databases]
* = host=127.0.0.1 port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $POOLER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options,application_name
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  as_pg pgbouncer -d "$dir/pgbouncer.ini" >/dev/null 2>&1 || true
  wait_port "$POOLER_PORT" pgbouncer "$dir/pgbouncer.log"
  echo "pgbouncer  started on $POOLER_PORT (transaction mode, in front of PostgreSQL 15)"
}

start_node_service() {  # name port logfile command...
  local name="$1" port="$2" log="$3"; shift 3
  if port_open "$port"; then
    if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "$name already running on $port"
    else
      echo "warning: port $port is taken by a process this checkout did not start; using it as $name" >&2
    fi
    return
  fi
  nohup "$@" >"$log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  wait_port "$port" "$name" "$log"
  echo "$name started on $port"
}

start() {
  [ -d "$ROOT/tools/node_modules" ] || { echo "error: run 'make setup' first (tools/node_modules missing)" >&2; exit 1; }
  start_postgres
  start_pgbouncer
  mkdir -p "$STATE/azurite"
  start_node_service azurite "$AZURITE_BLOB_PORT" "$STATE/azurite.log" \
    "$ROOT/tools/node_modules/.bin/azurite" --silent --location "$STATE/azurite" --skipApiVersionCheck --loose \
    --blobHost 127.0.0.1 --blobPort "$AZURITE_BLOB_PORT" --queueHost 127.0.0.1 --queuePort "$AZURITE_QUEUE_PORT" \
    --tableHost 127.0.0.1 --tablePort "$AZURITE_TABLE_PORT"
  start_node_service tsdb "$TSDB_PORT" "$STATE/tsdb.log" node "$ROOT/tools/tsdb-server.mjs" "$TSDB_PORT"
  start_native_tsdb
  # The Apache-2 edition Azure Database for PostgreSQL runs: no compression, no continuous aggregates, no policies.
  SHARED_BUFFERS=64MB start_native_tsdb -apache "$APACHE_PORT" -c timescaledb.license=apache
  cat <<URLS
PostgreSQL 15 : postgresql://postgres@127.0.0.1:$PG_PORT/postgres
TimescaleDB   : postgresql://postgres:postgres@127.0.0.1:$TSDB_PORT/postgres?sslmode=disable (WASM)
TimescaleDB   : postgresql://postgres@127.0.0.1:$NATIVE_PORT/postgres (native, when installed)
TimescaleDB   : postgresql://postgres@127.0.0.1:$APACHE_PORT/postgres (native, Apache-2 edition, when installed)
PgBouncer     : postgresql://postgres@127.0.0.1:$POOLER_PORT/postgres (transaction mode, when installed)
Azurite blob  : http://127.0.0.1:$AZURITE_BLOB_PORT/devstoreaccount1
Azurite queue : http://127.0.0.1:$AZURITE_QUEUE_PORT/devstoreaccount1
URLS
}

stop() {
  for name in tsdb azurite; do
    if [ -f "$STATE/$name.pid" ]; then kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true; rm -f "$STATE/$name.pid"; echo "$name stopped"; fi
  done
  local data suffix pid
  pid="$(pg_data_dir -pgbouncer)/pgbouncer.pid"
  if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; rm -f "$pid"; echo "pgbouncer stopped"; fi
  for suffix in "" -tsdb -apache; do
    data="$(pg_data_dir "$suffix")"
    if [ -s "$data/PG_VERSION" ]; then as_pg "$PGBIN/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 && echo "postgres$suffix stopped" || true; fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
