#!/usr/bin/env bash
# GPU check, segment stage: fine-tune SAM vit_b (random weights) on a generated 1024x1024 set for a
# few hundred decoder steps; prints encoder images/s, decoder steps/s and peak GPU memory.
# Budget: <= 150 s on one H200. CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/segment_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# (the CPU smoke test, GPU_CHECK_SMOKE=1, uses the packages already installed)
if [ -z "${GPU_CHECK_SMOKE:-}" ] && [ -d .whl ] && [ ! -d /tmp/site/ultralytics ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DEFECTKIT_OFFLINE=1
export DEFECTKIT_CACHE="${DEFECTKIT_CACHE:-/tmp/segment_check/defectkit_cache}"
exec timeout 150 python3 scripts/gpu/segment_check.py
