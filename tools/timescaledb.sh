#!/usr/bin/env bash
# Builds and installs native TimescaleDB for PostgreSQL 15 from its public source archive (idempotent; root; ~5 min).
# The archive is looked for in $TSARCHIVE_TIMESCALEDB_TARBALL, then ../shared/timescaledb/, then downloaded from
# GitHub; its SHA-256 is checked either way. FORCE=1 rebuilds.
set -euo pipefail
VERSION=2.28.3
SHA256=ec2f7de0ba53a473c01e0a57e09053898c6b1f7487228caff0f1d31c8cb2dedb
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/bin/pg_config}"
export DEBIAN_FRONTEND=noninteractive

libdir="$("$PG_CONFIG" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)"
if [ -f "$libdir/timescaledb-$VERSION.so" ] && [ -z "${FORCE:-}" ]; then
  echo "timescaledb $VERSION already installed in $libdir"; exit 0
fi
[ "$(id -u)" = "0" ] || { echo "error: building TimescaleDB installs into PostgreSQL's folders: run as root" >&2; exit 1; }

need=()
[ -x "$PG_CONFIG" ] && [ -d "$("$PG_CONFIG" --includedir-server 2>/dev/null || echo /nonexistent)" ] || need+=(postgresql-server-dev-15)
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
libdir="$("$PG_CONFIG" --pkglibdir)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tarball=""
for candidate in "${TSARCHIVE_TIMESCALEDB_TARBALL:-}" "$ROOT/../shared/timescaledb/timescaledb-$VERSION.tar.gz" \
                 "$ROOT/.local/timescaledb-$VERSION.tar.gz"; do
  if [ -n "$candidate" ] && [ -f "$candidate" ]; then tarball="$candidate"; break; fi
done
if [ -z "$tarball" ]; then
  tarball="$work/timescaledb-$VERSION.tar.gz"
  curl -fsSL -o "$tarball" "https://github.com/timescale/timescaledb/archive/refs/tags/$VERSION.tar.gz" || {
    echo "error: TimescaleDB $VERSION source not found locally and not downloadable; set TSARCHIVE_TIMESCALEDB_TARBALL" >&2; exit 1; }
fi
echo "$SHA256  $tarball" | sha256sum -c --quiet - || { echo "error: $tarball is not the TimescaleDB $VERSION archive (SHA-256)" >&2; exit 1; }

mkdir -p "$work/src"
tar -xzf "$tarball" -C "$work/src" --strip-components=1
cd "$work/src"
./bootstrap -DPG_CONFIG="$PG_CONFIG" -DCMAKE_BUILD_TYPE=Release -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
  -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF >"$work/bootstrap.log" 2>&1 || { tail -20 "$work/bootstrap.log"; exit 1; }
make -C build -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log"; exit 1; }
make -C build install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; exit 1; }
echo "timescaledb $VERSION installed in $libdir"
