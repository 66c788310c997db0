#!/usr/bin/env bash
# GPU check, benchmark: every leaderboard row (three YOLO detectors, SAM vit_b base / fine-tuned /
# detector-prompted, YOLO-seg, the ResNet classifier) on a generated 1024x1024 category, on the GPU,
# through `defectkit benchmark`; prints the leaderboard, per-row cost and the device each stage used.
# Budget: <= 150 s on one H200. CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/benchmark_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# (the CPU smoke test, GPU_CHECK_SMOKE=1, uses the packages already installed)
if [ -z "${GPU_CHECK_SMOKE:-}" ] && [ -d .whl ] && [ ! -d /tmp/site/ultralytics ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DEFECTKIT_OFFLINE=1
export DEFECTKIT_CACHE="${DEFECTKIT_CACHE:-/tmp/benchmark_check/defectkit_cache}"
exec timeout 150 python3 scripts/gpu/benchmark_check.py
