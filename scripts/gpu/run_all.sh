#!/usr/bin/env bash
# Run every stage's GPU check in one go on a lent GPU machine (no network there).
# Usage (repo root, wheels in .whl/ — see scripts/gpu/README.md):  bash scripts/gpu/run_all.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp/gpu_checks}}
mkdir -p "$out"
source scripts/gpu/_env.sh gpu_checks
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
status=0
for stage in classify segment detect benchmark; do
  echo "=== $stage ($(date -u +%FT%TZ))"
  bash "scripts/gpu/${stage}_check.sh" 2>&1 | tee "$out/${stage}.log" || status=1
done
exit $status
