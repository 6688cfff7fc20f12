#!/usr/bin/env bash
# Create a fresh virtual environment (.venv-test), install segedge with every extra (torch pinned by
# constraints.txt), and run the whole test suite. Extra arguments go to pytest; `--heavy` runs only the
# real-shape tests that CI leaves out (SAM ViT-B's real shapes, a graph above 2 GiB: minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1            # ultralytics: never reach for the network
export CI="${CI:-true}"          # OpenVINO / ultralytics telemetry off
# Two workers share the two cores: idle threads sleep instead of spin-waiting on the core the other worker needs
# (PyTorch's OpenMP; ONNX Runtime's intra-op pool, segedge.runtime.backends.ort_spinning). Measured 1.3x faster.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export SEGEDGE_ORT_SPINNING="${SEGEDGE_ORT_SPINNING:-0}"
VENV="${SEGEDGE_TEST_VENV:-.venv-test}"
# The venv (torch) takes about 7.5 GB and a test run about 6 GB more at its peak (exported models): say what is free.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
tmp_kb=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
echo "disk free: $((free_kb / 1048576)) GB here, $((tmp_kb / 1048576)) GB in ${TMPDIR:-/tmp}" >&2
if [ "$free_kb" -lt 16000000 ] || [ "$tmp_kb" -lt 8000000 ]; then
    echo "warning: the test run needs about 8 GB here for the venv and 6 GB in ${TMPDIR:-/tmp}; tests may fail with 'No space left on device'" >&2
fi
# Most model tests need ../shared (the real checkpoint, photos, COCO data): without it they would skip and CI
# would go green on nothing. Every skip fails under SEGEDGE_REQUIRE_ALL=1 (tests/conftest.py).
export SEGEDGE_REQUIRE_ALL="${SEGEDGE_REQUIRE_ALL:-1}"
SHARED_DIR="${SEGEDGE_SHARED:-../shared}"
if [ "$SEGEDGE_REQUIRE_ALL" = 1 ] && [ ! -f "$SHARED_DIR/weights/yolov8n-seg-coco.pt" ]; then
    echo "error: $SHARED_DIR/weights/yolov8n-seg-coco.pt not found: the test data folder (shared/) must sit beside the checkout, or set SEGEDGE_SHARED" >&2
    exit 2
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[all]"
# SAM 2's reference for tests/test_sam2.py: the official sam2 package, built against the torch above and
# without its optional CUDA extension (an isolated build would fetch another torch).
"$VENV/bin/python" -m pip install -q -c constraints.txt "setuptools>=70.1" wheel
SAM2_BUILD_CUDA=0 "$VENV/bin/python" -m pip install -q --no-build-isolation -c constraints.txt "sam2==1.1.0"
# SAM 3's reference for tests/test_sam3.py: the official sam3 package without its pins (it pins numpy < 2.4, which
# segedge's extras are past; what its image model imports runs on this numpy), plus the one dependency it needs
# that the extras do not bring, and scikit-image, without which its click predictor skips filling small holes.
"$VENV/bin/python" -m pip install -q --no-deps -c constraints.txt "sam3==0.1.4" "einops>=0.8,<0.9"
"$VENV/bin/python" -m pip install -q -c constraints.txt "scikit-image>=0.24"
# EdgeTAM's reference for tests/test_edgetam.py: its official package (edgetam-dimos, pure Python) installs under the
# import name sam2, so it gets a venv of its own. A .pth line there puts the test venv's packages (torch, timm, hydra)
# after the venv's own, so `import sam2` in it is EdgeTAM's and nothing heavy is installed twice (27 MB, seconds).
ET_VENV="${SEGEDGE_EDGETAM_VENV:-.venv-edgetam}"
if [ ! -x "$ET_VENV/bin/python" ]; then
    python3 -m venv "$ET_VENV"
fi
"$ET_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$ET_VENV/purelib.txt"
"$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$(cat "$ET_VENV/purelib.txt")/segedge_test_venv.pth"
"$ET_VENV/bin/python" -m pip install -q --no-deps "edgetam-dimos==1.0.1"
export SEGEDGE_EDGETAM_VENV="$(cd "$ET_VENV" && pwd)"
# A real Label Studio for tests/test_label_studio*.py, in its own venv: its Django and pydantic pins conflict with
# segedge's extras (one venv would not resolve). Made once; SEGEDGE_LABEL_STUDIO_VENV points elsewhere. Its
# dependencies are held at the versions it was tested with (scripts/label-studio-constraints.txt).
LS_VENV="${SEGEDGE_LABEL_STUDIO_VENV:-.venv-labelstudio}"
if [ ! -x "$LS_VENV/bin/label-studio" ]; then
    echo "installing Label Studio 1.23.2 into $LS_VENV for tests/test_label_studio.py" >&2
    python3 -m venv "$LS_VENV"
    "$LS_VENV/bin/python" -m pip install -q -c scripts/label-studio-constraints.txt "label-studio==1.23.2"
fi
# Its first start on a fresh data folder runs about a minute of Django migrations: run them once, here, into a
# template database that each test run copies (tests/label_studio_server.py; every label-studio command migrates
# its data folder first, `version` does nothing else). A venv made before this gets it now.
LS_TEMPLATE="$(cd "$LS_VENV" && pwd)/segedge-migrated"
if [ ! -f "$LS_TEMPLATE/label_studio.sqlite3" ]; then
    echo "migrating Label Studio's database once into $LS_TEMPLATE (about a minute)" >&2
    rm -rf "$LS_TEMPLATE.new"
    if ! LABEL_STUDIO_BASE_DATA_DIR="$LS_TEMPLATE.new" LATEST_VERSION_CHECK=false \
        "$LS_VENV/bin/label-studio" version --data-dir "$LS_TEMPLATE.new" >"$LS_TEMPLATE.log" 2>&1 \
        || [ ! -f "$LS_TEMPLATE.new/label_studio.sqlite3" ]; then
        tail -20 "$LS_TEMPLATE.log" >&2
        echo "error: Label Studio's migrations failed (log: $LS_TEMPLATE.log)" >&2
        exit 1
    fi
    rm -rf "$LS_TEMPLATE" && mv "$LS_TEMPLATE.new" "$LS_TEMPLATE"
fi
export SEGEDGE_LABEL_STUDIO_VENV="$LS_VENV"
# The browser test of `segedge serve` drives Debian's Chromium; install it when we can (root with apt-get).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for tests/test_serve_browser.py" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
      || echo "could not install chromium: the browser test will fail (it is required under SEGEDGE_REQUIRE_ALL=1)" >&2
fi
# Lint and format first: a violation fails CI in seconds, with the file and line (fix: ruff check --fix; ruff format).
"$VENV/bin/ruff" check . || { echo "error: ruff check found problems (see above)" >&2; exit 1; }
"$VENV/bin/ruff" format --check . >/dev/null || { "$VENV/bin/ruff" format --check . >&2; echo "error: files not formatted: run '$VENV/bin/ruff format .'" >&2; exit 1; }
# The suite runs in a random order: pytest-randomly prints "Using --randomly-seed=N" (repeat an order with
# --randomly-seed=N, file order with -p no:randomly), in two pytest-xdist workers that take a test file each at a
# time (SEGEDGE_TEST_WORKERS=0: one process; docs/development.md says what the two workers share; tests/worker_plan.py
# which files go first and which never run at the same time). A worker that crashes (the kernel kills it when the
# machine runs out of memory) ends the run with that test named, instead of a new worker re-running its whole file
# and crashing again until CI's time is gone.
exec "$VENV/bin/python" -m pytest -n "${SEGEDGE_TEST_WORKERS:-2}" --dist loadfile --max-worker-restart=0 "$@"
