#!/usr/bin/env bash
# GPU check for classify: a short real ResNet-50 fine-tune (random init) on a generated 1024x1024
# set, then images/s and peak GPU memory, then the cached-vs-ImageFolder benchmark. <= 150 s on an H200.
# CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/classify_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -d .whl ] && [ ! -d /tmp/site/ultralytics ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DEFECTKIT_OFFLINE=1 PYTHONUNBUFFERED=1
export DEFECTKIT_CACHE="${DEFECTKIT_CACHE:-/tmp/defectkit-cache}"
exec timeout 150 python3 scripts/gpu/classify_check.py
