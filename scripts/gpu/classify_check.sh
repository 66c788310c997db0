#!/usr/bin/env bash
# GPU check for classify: a short real ResNet-50 fine-tune (random init) on a generated 1024x1024
# set, then images/s and peak GPU memory, then the cached-vs-ImageFolder benchmark. <= 150 s on an H200.
# CPU smoke test: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 scripts/gpu/classify_check.sh
set -euo pipefail
source "$(dirname "$0")/_env.sh" classify_check
exec timeout 150 python3 scripts/gpu/classify_check.py
