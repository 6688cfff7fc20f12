#!/usr/bin/env bash
# Create .venv, install segedge (export + both backends, torch pinned by constraints.txt), export the
# default FastSAM model folder, and segment a sample image. Usage: scripts/demo.sh [IMAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE="${YOLO_OFFLINE:-1}"
python3 -m venv .venv
.venv/bin/python -m pip install -q -c constraints.txt -e ".[export,openvino,onnxruntime]"

# The real YOLOv8-seg checkpoint beside the project when present (FastSAM's architecture, 80 classes);
# otherwise the official FastSAM-s weights, downloaded once into ~/.cache/segedge/weights.
CKPT=../shared/weights/yolov8n-seg-coco.pt
[ -f "$CKPT" ] || CKPT=FastSAM-s
IMAGE="${1:-../shared/images/ultralytics_bus.jpg}"
[ -f "$IMAGE" ] || IMAGE="$(.venv/bin/python -c 'from ultralytics.utils import ASSETS; print(ASSETS / "bus.jpg")')"

[ -f models/fastsam/segedge.json ] || .venv/bin/segedge export fastsam --checkpoint "$CKPT" --out models/fastsam
.venv/bin/segedge info models/fastsam
.venv/bin/segedge segment "$IMAGE" --model models/fastsam --out out/
echo "overlay and JSON written to out/"
