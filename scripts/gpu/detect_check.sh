#!/usr/bin/env bash
# GPU check for detect: fine-tune yolov8s-worldv2 (random start, random text embeddings) on a generated
# 1024x1024 set at imgsz 640 for a few epochs; prints images/s per epoch and peak GPU memory, then scores it
# with `detect val` and exports ONNX. Offline. Budget: <= 150 s on one H200.
# CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/detect_check.sh
set -euo pipefail
source "$(dirname "$0")/_env.sh" detect_check
exec timeout 300 python3 scripts/gpu/detect_check.py
