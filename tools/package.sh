#!/usr/bin/env bash
# Local build of the function app's packages for Linux x86-64, Python 3.11, into the folder the Functions worker puts
# on sys.path (default .python_packages/lib/site-packages), for `func azure functionapp publish <app> --no-build`.
# Wheels only (--only-binary): nothing is compiled here, so what is built on this machine runs on the platform's
# image (glibc 2.28 or newer for the manylinux_2_28 wheels).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${1:-$ROOT/.python_packages/lib/site-packages}"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
rm -rf "$TARGET"
mkdir -p "$TARGET"
"$PIP" install --quiet --disable-pip-version-check --no-compile --target "$TARGET" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --python-version 3.11 --implementation cp --only-binary=:all: -r "$ROOT/requirements.txt"
echo "built $(ls -d "$TARGET"/*.dist-info | wc -l) distributions, $(du -sm "$TARGET" | cut -f1) MiB, in $TARGET"
