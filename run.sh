#!/usr/bin/env bash
# Set up (first time) and run the Hearsay app at http://127.0.0.1:7860 on the bundled demo clips.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
