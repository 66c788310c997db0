#!/usr/bin/env bash
# GPU check, benchmark: every leaderboard row (three YOLO detectors, SAM vit_b base / fine-tuned /
# detector-prompted, YOLO-seg, the ResNet classifier) on a generated 1024x1024 category, on the GPU,
# through `defectkit benchmark`; prints the leaderboard, per-row cost and the device each stage used.
# Budget: <= 150 s on one H200. CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/benchmark_check.sh
set -euo pipefail
source "$(dirname "$0")/_env.sh" benchmark_check
exec timeout 150 python3 scripts/gpu/benchmark_check.py
