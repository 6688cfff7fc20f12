#!/usr/bin/env bash
# Create a fresh virtual environment (.venv-test), install segedge with every extra (torch pinned by
# constraints.txt), and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1            # ultralytics: never reach for the network
export CI="${CI:-true}"          # OpenVINO / ultralytics telemetry off
VENV="${SEGEDGE_TEST_VENV:-.venv-test}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[all]"
exec "$VENV/bin/python" -m pytest "$@"
