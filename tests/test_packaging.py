"""What pyproject promises is checked: Python 3.10 (requires-python) and the lower bounds (.ci/minimums.txt).

The lower bounds themselves are exercised by `.ci/minimums.sh`, which installs .ci/minimums.txt and runs
the fast tests of .ci/fast-tests.txt; these tests keep those files and pyproject from drifting apart.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# The folders pyproject installs as the defectkit package (package-dir).
PACKAGE_FOLDERS = ("defectkit", "convert", "detect", "segment", "classify", "anomaly", "evaluation")
# Libraries whose lower bound cannot be installed and tested here: only one torch build is offline.
UNTESTED_MINIMUMS = {"torch", "torchvision"}
# vermin takes these for Python 2 names (bytes.decode for str.decode, Tensor.long() for long); a file where it
# sees one cannot be given a minimum version, and then a real 3.11 call in that file goes unreported.
VERMIN_PY2_FALSE_POSITIVES = ("str.decode", "long")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the package itself needs none of this
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _lines(path: Path) -> list[str]:
    """The non-comment, non-blank lines of a list file."""
    return [
        line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()
    ]


def _minimums() -> dict[str, str]:
    pins = {}
    for line in _lines(REPO / ".ci" / "minimums.txt"):
        name, sep, version = line.partition("==")
        assert sep and version, f".ci/minimums.txt: {line!r} is not NAME==VERSION"
        pins[name.strip().lower()] = version.strip()
    return pins


def _vermin(*paths: str) -> subprocess.CompletedProcess:
    # vermin has no __main__ module, so `python -m vermin` cannot run it; its entry point can.
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, vermin; sys.exit(vermin.main())",
            "--no-tips",
            "--violations",
            "-t=3.10-",
            "--eval-annotations",
            *[arg for name in VERMIN_PY2_FALSE_POSITIVES for arg in ("--exclude", name)],
            *paths,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_package_code_runs_on_python_310():
    """requires-python says 3.10: no stdlib module, function or syntax of a later Python in the package
    (``hashlib.file_digest`` was one, 3.11). vermin reads the code; ruff's target-version is py310 too."""
    assert _pyproject()["project"]["requires-python"] == ">=3.10"
    assert _pyproject()["tool"]["ruff"]["target-version"] == "py310"
    proc = _vermin(*PACKAGE_FOLDERS)
    assert proc.returncode == 0, f"needs a Python newer than 3.10:\n{proc.stdout}{proc.stderr}"
    # Otherwise a file was skipped in effect: exclude the name vermin misreads (VERMIN_PY2_FALSE_POSITIVES).
    assert "incompatible versions" not in proc.stdout, proc.stdout


def test_the_python_310_check_catches_a_311_function(tmp_path):
    """The check above can fail: the same vermin call on a module using hashlib.file_digest (3.11),
    beside the names vermin misreads as Python 2 (which used to hide it)."""
    module = tmp_path / "uses_311.py"
    module.write_text(
        "import hashlib\n\n\ndef digest(f, counts, t):\n"
        "    return hashlib.file_digest(f, 'sha256'), counts.decode('ascii'), t.long()\n"
    )
    proc = _vermin(str(module))
    assert proc.returncode == 1 and "hashlib.file_digest" in proc.stdout, proc.stdout


def _python_310() -> str | None:
    """A Python 3.10 interpreter on this machine (pyenv's, where it has one), or None."""
    candidates = [
        shutil.which("python3.10"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
    ]
    for exe in filter(None, candidates):
        probe = subprocess.run(
            [exe, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return exe
    return None


def test_every_module_compiles_on_python_310():
    """The syntax half, by Python 3.10 itself (no torch there: compiling needs no imports). compile()
    in memory, so no __pycache__ of 3.10 is left in the tree."""
    exe = _python_310()
    if exe is None:
        pytest.skip("no Python 3.10 interpreter on this machine (vermin's check above still runs)")
    files = sorted(str(p) for folder in PACKAGE_FOLDERS for p in (REPO / folder).rglob("*.py"))
    script = (
        "import sys\n"
        "bad = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
        "    except SyntaxError as exc:\n"
        "        bad.append(f'{path}:{exc.lineno}: {exc.msg}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([exe, "-c", script, *files], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"not Python 3.10 syntax:\n{proc.stdout}{proc.stderr}"


def test_minimums_are_pyprojects_lower_bounds():
    """Every dependency but torch/torchvision has its lower bound in .ci/minimums.txt, the same version
    (so the CI step installs what pyproject declares), and the pin is inside the declared range."""
    declared = {}
    for text in _pyproject()["project"]["dependencies"]:
        req = Requirement(text)
        lower = [spec.version for spec in req.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"pyproject: {text!r} needs one '>=' lower bound"
        declared[req.name.lower()] = (lower[0], req.specifier)
    pins = _minimums()
    assert set(pins) == set(declared) - UNTESTED_MINIMUMS, (
        "minimums.txt and pyproject name different libraries"
    )
    for name, version in pins.items():
        lower, specifier = declared[name]
        assert version == lower, f"{name}: pyproject says >={lower}, .ci/minimums.txt installs {version}"
        assert specifier.contains(version), f"{name}=={version} is outside pyproject's {specifier}"


def test_fast_tests_name_tests_that_exist():
    """.ci/fast-tests.txt: every file exists and every named test is defined in it (a renamed test would
    otherwise make the minimums step fail on a missing node, or silently shrink)."""
    entries = _lines(REPO / ".ci" / "fast-tests.txt")
    assert entries
    for entry in entries:
        path, _, name = entry.partition("::")
        source = REPO / path
        assert source.is_file(), f".ci/fast-tests.txt: no file {path}"
        if name:
            assert re.search(rf"^def {re.escape(name)}\(", source.read_text(), re.MULTILINE), (
                f"no test {entry}"
            )


def test_ci_runs_the_minimums_step():
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash .ci/minimums.sh" in ci
