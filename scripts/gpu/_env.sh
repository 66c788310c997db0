# Sourced by every scripts/gpu/*_check.sh: the environment of a lent GPU machine with no network.
# The packages it lacks (ultralytics, segment-anything, pycocotools, faster-coco-eval, supervision,
# polars, ...) travel as wheels in .whl/ at the repo root (see scripts/gpu/README.md); they are
# installed once into /tmp/site. A CPU smoke test (GPU_CHECK_SMOKE=1) uses what is installed here.
# Usage: source scripts/gpu/_env.sh <check-name>
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
if [ -z "${GPU_CHECK_SMOKE:-}" ] && [ -d .whl ] && [ ! -d /tmp/site/ultralytics ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DEFECTKIT_OFFLINE=1 PYTHONUNBUFFERED=1
export DEFECTKIT_CACHE="${DEFECTKIT_CACHE:-/tmp/${1:-gpu_check}/defectkit_cache}"
