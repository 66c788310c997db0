#!/usr/bin/env bash
# The declared lower bounds, checked: a venv over the main environment (torch and torchvision come from
# there: only 2.14.1/0.29.1 builds are available offline) gets exactly the minimums of
# .ci/minimums.txt, and the fast tests of .ci/fast-tests.txt run on them.
# Usage: bash .ci/minimums.sh [VENV]   (default: a temporary folder, removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

venv="${1:-}"
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/minimums"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
fi
python3 -m venv --system-site-packages "$venv"
py="$venv/bin/python"

"$py" -m pip install -q -r .ci/minimums.txt
# ultralytics declares opencv-python, which shares the cv2 folder with the headless wheel and may be
# unpacked after it: put the declared headless minimum back on top so its cv2 is the one tested.
headless="$(grep -E '^opencv-python-headless==' .ci/minimums.txt)"
"$py" -m pip install -q --no-deps --force-reinstall "$headless"

# Fail here, not in a test, if the venv does not hold exactly the minimums (a system copy shadowing one).
"$py" - <<'EOF'
import importlib.metadata as md
import re
import sys

import cv2

wanted = {}
for line in open(".ci/minimums.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        wanted[name] = version
found = {name: md.version(name) for name in wanted}
wrong = {name: (version, found[name]) for name, version in wanted.items() if found[name] != version}
cv2_wanted = re.match(r"\d+\.\d+\.\d+", wanted["opencv-python-headless"])[0]
if not cv2.__version__.startswith(cv2_wanted):
    wrong["cv2"] = (cv2_wanted, cv2.__version__)
if wrong:
    sys.exit(f"minimums not installed (wanted, found): {wrong}")
print("minimums installed:", ", ".join(f"{n}=={v}" for n, v in found.items()))
EOF

mapfile -t fast < <(grep -vE '^\s*(#|$)' .ci/fast-tests.txt)
"$py" -m pytest -q -p no:cacheprovider "${fast[@]}"
