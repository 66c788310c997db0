"""Every docstring example in the defectkit namespace runs, so the examples stay true.

Each module is imported by its installed name (``defectkit.convert.pipeline``) and run through
``doctest.testmod``. ``pytest --doctest-modules convert/ detect/ ...`` cannot do this here: it
imports a file by its folder, so ``convert/cli.py`` would become a top-level ``convert`` package,
which is not installed (pyproject's package-dir installs the folder as ``defectkit.convert``), and
its ``from defectkit.convert...`` imports would load a second copy of every module.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The stages live in their own folders and join the namespace through pyproject's package-dir: in an
# editable install they are not under defectkit.__path__, so each is walked from its own __path__.
STAGE_PACKAGES = (
    "defectkit.convert", "defectkit.evaluation", "defectkit.detect", "defectkit.segment", "defectkit.classify",
    "defectkit.anomaly",
)  # fmt: skip
# Modules whose examples are not run, with the reason. Only for examples that need heavy setup
# (weights, a GPU, a trained run); mark a single example `# doctest: +SKIP` rather than listing a module.
SKIP: dict[str, str] = {}


def _namespace_modules() -> list[str]:
    names = {"defectkit"}
    for root in ("defectkit", *STAGE_PACKAGES):
        package = importlib.import_module(root)
        names.add(root)
        names |= {info.name for info in pkgutil.walk_packages(package.__path__, f"{root}.")}
    # `python -m defectkit.evaluation` runs the CLI on import: an entry point, not a module of examples.
    return sorted(n for n in names if not n.endswith(".__main__"))


MODULES = _namespace_modules()


def run_examples(module: types.ModuleType) -> doctest.TestResults:
    return doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)


def test_the_walk_covers_every_package_pyproject_installs():
    pyproject = (REPO / "pyproject.toml").read_text()
    installed = set(re.findall(r'^"(defectkit(?:\.\w+)*)" = "\w+"$', pyproject, flags=re.M))
    assert installed == {"defectkit", *STAGE_PACKAGES}, "STAGE_PACKAGES differs from pyproject's package-dir"
    assert {"defectkit.core.rle", "defectkit.convert.pipeline", "defectkit.detect.predict",
            "defectkit.segment.prompts", "defectkit.classify.longtail", "defectkit.leaderboard.scoring"} <= set(MODULES)  # fmt: skip
    assert set(SKIP) <= set(MODULES), f"stale SKIP entries: {sorted(set(SKIP) - set(MODULES))}"


@pytest.mark.parametrize("name", [m for m in MODULES if m not in SKIP])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes it here
    result = run_examples(importlib.import_module(name))
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see the output above)"


def test_a_failing_example_fails():
    """The runner reports a wrong example (a check of the check)."""
    module = types.ModuleType("defectkit_doctest_probe")
    module.__doc__ = ">>> 1 + 1\n3\n"
    assert run_examples(module) == doctest.TestResults(failed=1, attempted=1)
