#!/usr/bin/env bash
# GPU check, segment stage: fine-tune SAM vit_b (random weights) on a generated 1024x1024 set for a
# few hundred decoder steps; prints encoder images/s, decoder steps/s and peak GPU memory.
# Budget: <= 150 s on one H200. CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/segment_check.sh
set -euo pipefail
source "$(dirname "$0")/_env.sh" segment_check
exec timeout 150 python3 scripts/gpu/segment_check.py
