#!/usr/bin/env bash
# The long fuzz run: every property in tests/test_fuzz.py with 10,000 random (not derandomized)
# examples each. Needs the test venv (bash scripts/test.sh makes it). Extra arguments go to pytest,
# e.g. `-k image_bytes`. Took 7 min on 2 cores (AMD EPYC), most of it in the CLI and manifest properties.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 CI="${CI:-true}" SEGEDGE_FUZZ_EXAMPLES="${SEGEDGE_FUZZ_EXAMPLES:-10000}"
exec "${SEGEDGE_TEST_VENV:-.venv-test}/bin/python" -m pytest tests/test_fuzz.py -p no:cacheprovider \
    --hypothesis-show-statistics "$@"
