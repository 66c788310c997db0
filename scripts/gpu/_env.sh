# Sourced by every scripts/gpu/*_check.sh: the environment of a lent GPU machine with no network.
# The packages it lacks (ultralytics, segment-anything, pycocotools, faster-coco-eval, supervision,
# polars, ...) travel as wheels in .whl/ at the repo root (see scripts/gpu/README.md); they are
# installed once into /tmp/site. A CPU smoke test (GPU_CHECK_SMOKE=1) uses what is installed here.
# Usage: source scripts/gpu/_env.sh <check-name>
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
if [ -z "${GPU_CHECK_SMOKE:-}" ] && [ -d .whl ] && [ ! -d /tmp/site/ultralytics ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
# defectkit is not installed there, and its import names are not the checkout's folders (pyproject's
# package-dir installs convert/ as defectkit.convert, ...): a tree of links in /tmp/defectkit_src gives
# the installed names. The checkout itself stays off the path, where a bare `import convert` would work.
rm -rf /tmp/defectkit_src && mkdir -p /tmp/defectkit_src/defectkit || exit 1
ln -s "$PWD"/defectkit/* /tmp/defectkit_src/defectkit/ || exit 1
for stage in convert detect segment classify evaluation; do ln -s "$PWD/$stage" "/tmp/defectkit_src/defectkit/$stage" || exit 1; done
export PYTHONPATH="/tmp/site:/tmp/defectkit_src${PYTHONPATH:+:$PYTHONPATH}"
export DEFECTKIT_OFFLINE=1 PYTHONUNBUFFERED=1
export DEFECTKIT_CACHE="${DEFECTKIT_CACHE:-/tmp/${1:-gpu_check}/defectkit_cache}"
