"""The layer rules of docs/ARCHITECTURE.md, checked on the source (an AST walk, no extra dependency)
and, for the lower layers, on what importing them really loads.

    defectkit.core                         imports no other defectkit package
    defectkit.convert, defectkit.evaluation  the core only
    defectkit.detect / segment / classify / anomaly  the core and evaluation; never convert, never each other,
                                           except segment -> detect's public predict API (--detector)
    defectkit.sample                       the core only (a sample writer every stage's tests use)
    defectkit.leaderboard, defectkit.cli   anything: they wire the stages together

Imports sit at the top of a module. A function-level import is allowed only where LAZY_IMPORTS lists
it with the reason: a heavy library in a CLI entry point (so ``--help`` stays fast), or ultralytics in
the modules that must set its environment before its first import. Each rule is one test, and a
failure lists every offending ``file:line``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# pyproject's [tool.setuptools.package-dir]: the card's top-level folders install as defectkit.<folder>.
# Read from pyproject, so a new stage folder is checked (and needs a layer in ALLOWED) from the start.
PACKAGE_DIRS = dict(
    re.findall(r'^"(defectkit(?:\.\w+)*)" = "(\w+)"$', (REPO / "pyproject.toml").read_text(), flags=re.M)
)
STAGES = tuple(folder for package, folder in PACKAGE_DIRS.items() if package != "defectkit")
# Scripts that are not part of the package but must follow the import rules too.
SCRIPT_DIRS = ("benchmarks", "scripts")

# Function-level imports allowed: (importing module, imported module or package) -> why. These kinds only:
# - a heavy module in a CLI entry point, imported by the subcommand that needs it, so `--help` and the
#   light subcommands stay fast (a first-party target is allowed only here, in a `cli` module);
# - pycocotools' COCO and COCOeval in evaluation.detection's reference backend (`--backend
#   pycocotools`, a cross-check), kept out of every default `evaluate detection` start;
# - numba in evaluation.bootstrap, which compiles the resampled COCO AP on first use (intervals only);
# - ultralytics (and the optional CLIP) in detect's modules: ultralytics fixes its config folder,
#   offline flag and settings file at its first import, so it is imported only inside
#   detect._ultralytics.ultralytics_patched(), after that environment is set.
_ULTRALYTICS_AT_RUN_TIME = "ultralytics reads its environment at first import: imported inside ultralytics_patched()"
_LEADERBOARD_IS_HEAVY = (
    "the leaderboard loads every stage (torch, ultralytics, segment-anything: seconds); "
    "`defectkit sample` and `defectkit --help` need none of it"
)
_STAGE_MODULES_ON_DEMAND = (
    "each subcommand imports the modules it runs (torch, ultralytics: seconds); `--help` and argument errors need none"
)
_ANOMALY_EXTRA = "optional and slow (~9 s): the [anomaly] extra, imported by the functions of anomaly._anomalib"
ANOMALY_EXTRA_LIBRARIES = ("anomalib", "lightning", "timm", "huggingface_hub", "safetensors")
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("defectkit.cli", "defectkit.leaderboard"): _LEADERBOARD_IS_HEAVY,
    ("defectkit.cli", "defectkit.detect.train"): _LEADERBOARD_IS_HEAVY,
    ("defectkit.cli", "torch"): _LEADERBOARD_IS_HEAVY,
    ("defectkit.detect._ultralytics", "ultralytics"): _ULTRALYTICS_AT_RUN_TIME,
    ("defectkit.detect.embeddings", "ultralytics"): _ULTRALYTICS_AT_RUN_TIME,
    ("defectkit.detect.models", "ultralytics"): _ULTRALYTICS_AT_RUN_TIME,
    ("defectkit.detect.embeddings", "clip"): "optional: only `detect embed` needs CLIP (the [clip] extra)",
    # anomalib (the [anomaly] extra) and what it brings, only inside anomaly._anomalib's functions: `import
    # anomalib.models` takes ~9 s, `anomaly --help` needs none of it, and the leaderboard imports the stage
    # without the extra to skip its rows with one line.
    **{
        ("defectkit.evaluation.detection", f"pycocotools.{module}"): "the reference backend only: pycocotools.coco "
        "imports urllib.request, http, ssl and email, 25 ms of every default `evaluate detection`"
        for module in ("coco", "cocoeval")
    },
    **{("defectkit.anomaly._anomalib", lib): _ANOMALY_EXTRA for lib in ANOMALY_EXTRA_LIBRARIES},
    # numba takes ~0.3 s to import and ~0.5 s more to load a compiled function: only the bootstrap's COCO AP uses it.
    ("defectkit.evaluation.bootstrap", "numba"): "compiled on first use: an evaluation without intervals never imports numba",
    # `detect --help` and a mistyped option load neither ultralytics nor torch: each subcommand imports its module.
    ("defectkit.detect.cli", "defectkit.detect"): _STAGE_MODULES_ON_DEMAND,
    ("defectkit.detect.cli", "defectkit.core.torchio"): _STAGE_MODULES_ON_DEMAND,
    ("defectkit.segment.cli", "defectkit.segment"): _STAGE_MODULES_ON_DEMAND,
    ("defectkit.classify.cli", "defectkit.classify"): _STAGE_MODULES_ON_DEMAND,
    ("defectkit.anomaly.cli", "defectkit.anomaly"): _STAGE_MODULES_ON_DEMAND,
    # `evaluate detection` loads only the COCO scorer: the anomaly and mask scorers bring OpenCV and tqdm.
    **{
        ("defectkit.evaluation.cli", f"defectkit.evaluation.{scorer}"): "each `evaluate` subcommand imports only its scorer"
        for scorer in ("anomaly", "classification", "detection", "masks")
    },
}


def _lazy_allowed(importer: str, target: str) -> bool:
    return any(
        importer == module and (target == allowed or target.startswith(allowed + "."))
        for module, allowed in LAZY_IMPORTS
    )


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    importer: str  # dotted name of the importing module (or the script's path)
    target: str  # absolute dotted name of what is imported (a module, or the module holding `names`)
    names: tuple[str, ...]  # the names taken by `from target import ...`; () for `import target`
    top_level: bool  # outside any function or class body

    def where(self) -> str:
        what = f"from {self.target} import {', '.join(self.names)}" if self.names else f"import {self.target}"
        return f"{self.file.relative_to(REPO)}:{self.line}: {self.importer}: {what}"


def _module_name(path: Path) -> str | None:
    """The dotted name a first-party file is installed under, or None for a file outside the package."""
    rel = path.relative_to(REPO)
    for package, folder in PACKAGE_DIRS.items():
        if rel.parts[0] == folder:
            parts = [package, *rel.with_suffix("").parts[1:]]
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    return None


def _package_files() -> list[Path]:
    return sorted(p for folder in PACKAGE_DIRS.values() for p in (REPO / folder).rglob("*.py"))


def _script_files() -> list[Path]:
    return sorted(p for folder in SCRIPT_DIRS for p in (REPO / folder).rglob("*.py"))


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


class _Collector(ast.NodeVisitor):
    def __init__(self, file: Path, importer: str, is_package: bool):
        self.file, self.importer, self.is_package = file, importer, is_package
        self.depth = 0  # function/class nesting
        self.found: list[Import] = []

    def _nested(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _nested

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self.found.append(Import(self.file, node.lineno, self.importer, alias.name, (), self.depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom):
        target = _resolve(node.module, node.level, self.importer, self.is_package)
        names = tuple(a.name for a in node.names)
        self.found.append(Import(self.file, node.lineno, self.importer, target, names, self.depth == 0))

    def visit_Call(self, node: ast.Call):
        # importlib.import_module("x"), pytest.importorskip("x"), __import__("x"): imports by string.
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "importorskip", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self.found.append(Import(self.file, node.lineno, self.importer, arg.value, (), self.depth == 0))
        self.generic_visit(node)


def _imports(files: list[Path]) -> list[Import]:
    found: list[Import] = []
    for file in files:
        importer = _module_name(file) or str(file.relative_to(REPO))
        collector = _Collector(file, importer, file.name == "__init__.py")
        collector.visit(ast.parse(file.read_text(), filename=str(file)))
        found += collector.found
    return found


PACKAGE_IMPORTS = _imports(_package_files())
SCRIPT_IMPORTS = _imports(_script_files())
TEST_IMPORTS = _imports(sorted((REPO / "tests").rglob("*.py")))
FIRST_PARTY = {_module_name(p) for p in _package_files()}


def _targets(imp: Import) -> list[str]:
    """The first-party modules an import reaches: `from defectkit import detect` reaches defectkit.detect."""
    if imp.target != "defectkit" and not imp.target.startswith("defectkit."):
        return []
    subs = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in FIRST_PARTY]
    return subs or [imp.target]


def _layer(module: str) -> str:
    """defectkit.core.rle -> core; defectkit.detect.cli -> detect; defectkit.leaderboard.rows -> leaderboard."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "defectkit"


def _is_detect_public_predict_api(imp: Import) -> bool:
    """segment -> detect is allowed only as `from defectkit.detect[.predict] import <public names>`."""
    if imp.target not in ("defectkit.detect", "defectkit.detect.predict") or not imp.names:
        return False
    return not any(
        n.startswith("_") or f"{imp.target}.{n}" in FIRST_PARTY - {"defectkit.detect.predict"} for n in imp.names
    )


# layer -> the first-party layers it may import (besides itself and the bare `defectkit`, which holds
# only __version__). None: anything.
ALLOWED = {
    "defectkit": set(),  # defectkit/__init__.py: importing any defectkit.x runs it, so it imports nothing
    "core": set(),
    "convert": {"core"},
    "evaluation": {"core"},
    "detect": {"core", "evaluation"},
    "segment": {"core", "evaluation"},  # + detect's public predict API, below
    "classify": {"core", "evaluation"},
    "anomaly": {"core", "evaluation"},
    "sample": {"core"},
    "leaderboard": None,
    "cli": None,
}


def _layer_offenders(layer: str, imports: list[Import] = PACKAGE_IMPORTS) -> list[str]:
    offenders = []
    for imp in imports:
        if _layer(imp.importer) != layer or ALLOWED[layer] is None:
            continue
        for target in _targets(imp):
            to = _layer(target)
            if to in (layer, "defectkit") or to in ALLOWED[layer]:
                continue
            if layer == "segment" and to == "detect" and _is_detect_public_predict_api(imp):
                continue
            offenders.append(imp.where())
    return offenders


def test_every_package_module_has_a_layer():
    """A new package (a stage folder added to pyproject's package-dir) needs its row in ALLOWED."""
    assert {"convert", "evaluation", "detect", "segment", "classify"} <= set(STAGES), PACKAGE_DIRS  # pyproject read
    assert {_layer(m) for m in FIRST_PARTY} <= set(ALLOWED), sorted({_layer(m) for m in FIRST_PARTY} - set(ALLOWED))


@pytest.mark.parametrize("layer", [layer for layer, allowed in ALLOWED.items() if allowed is not None])
def test_layer_imports_only_the_layers_below(layer):
    offenders = _layer_offenders(layer)
    allowed = ", ".join(sorted(ALLOWED[layer] | {layer})) if ALLOWED[layer] else "nothing first-party"
    assert not offenders, f"defectkit.{layer} may import only {allowed}; offenders:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "importer, code, allowed",
    [
        ("defectkit.segment.cli", "from defectkit.detect import predict_images", True),
        ("defectkit.segment.cli", "from defectkit.detect.predict import predict_images", True),
        ("defectkit.segment.cli", "from defectkit.detect import predict", True),
        ("defectkit.segment.cli", "from defectkit.detect.predict import _flat_name", False),  # private
        ("defectkit.segment.cli", "from defectkit.detect import train", False),  # not the predict API
        ("defectkit.segment.cli", "from defectkit.detect.data import load_data", False),
        ("defectkit.segment.cli", "import defectkit.detect.predict", False),
        ("defectkit.detect.predict", "from defectkit.segment.predict import Segmenter", False),  # one way only
        ("defectkit.detect.data", "from defectkit.convert.writers import WRITERS", False),
        ("defectkit.detect.val", "from defectkit.evaluation import evaluate_detection", True),
        ("defectkit.classify.cli", "from defectkit import detect", False),
        ("defectkit.convert.cli", "from defectkit.evaluation import report", False),
        ("defectkit.convert.cli", "from ..core import rle", True),  # relative, resolved
        ("defectkit.core.rle", "from defectkit.evaluation.coco_io import load_json", False),
        ("defectkit.sample", "from defectkit.leaderboard import rows", False),
        ("defectkit.leaderboard.rows", "from defectkit.convert import convert_category", True),
    ],
)
def test_the_checker_itself(importer, code, allowed):
    """Each rule flags what it should and only that (a check of the check)."""
    collector = _Collector(REPO / "example.py", importer, False)
    collector.visit(ast.parse(code))
    offenders = _layer_offenders(_layer(importer), collector.found)
    assert (not offenders) == allowed, offenders


@pytest.mark.parametrize(
    "where, imports",
    [("package", PACKAGE_IMPORTS), ("benchmarks and scripts", SCRIPT_IMPORTS), ("tests", TEST_IMPORTS)],
    ids=["package", "scripts", "tests"],
)
def test_nobody_imports_the_bare_stage_names(where, imports):
    """convert, detect, ... are installed only as defectkit.convert, defectkit.detect, ...: a bare
    `import detect` finds another distribution's package, or nothing."""
    offenders = [imp.where() for imp in imports if imp.target.split(".")[0] in STAGES]
    assert not offenders, f"bare stage imports in the {where} (use defectkit.<stage>):\n" + "\n".join(offenders)


def _function_level_offenders(imports: list[Import]) -> list[str]:
    offenders = []
    for imp in imports:
        if imp.top_level:
            continue
        if _lazy_allowed(imp.importer, imp.target):
            continue
        offenders.append(imp.where())
    return offenders


@pytest.mark.parametrize(
    "where, imports", [("package", PACKAGE_IMPORTS), ("benchmarks and scripts", SCRIPT_IMPORTS)], ids=["package", "scripts"]
)
def test_imports_sit_at_the_top_of_each_module(where, imports):
    offenders = _function_level_offenders(imports)
    assert not offenders, (
        f"function-level imports in the {where}: move them to the top of the module (heavy optional libraries "
        "in a CLI entry point go in LAZY_IMPORTS with the reason):\n" + "\n".join(offenders)
    )


def test_lazy_import_allowlist_is_narrow_and_still_used():
    lazy = [imp for imp in PACKAGE_IMPORTS if not imp.top_level]
    for (module, allowed), reason in LAZY_IMPORTS.items():
        assert reason
        if allowed.split(".")[0] == "defectkit":
            assert module.rsplit(".", 1)[-1] in ("cli", "__main__"), f"{module}: first-party lazy imports only in a CLI"
        else:
            assert (
                module.rsplit(".", 1)[-1] in ("cli", "__main__")
                or allowed in ("ultralytics", "clip")
                or (module == "defectkit.anomaly._anomalib" and allowed in ANOMALY_EXTRA_LIBRARIES)
                or (module == "defectkit.evaluation.detection" and allowed in ("pycocotools.coco", "pycocotools.cocoeval"))
                or (module == "defectkit.evaluation.bootstrap" and allowed == "numba")
            ), (
                f"{module}: lazy {allowed} is neither in a CLI entry point, ultralytics' containment, the anomaly "
                "extra's, the reference COCO backend nor the bootstrap's compiled kernel"
            )
        assert any(
            imp.importer == module and (imp.target == allowed or imp.target.startswith(allowed + ".")) for imp in lazy
        ), f"stale LAZY_IMPORTS entry: {module} no longer imports {allowed} lazily"


# What importing a lower layer (every module of it) may load at run time, besides the bare `defectkit`
# package; the AST rules above miss dynamic imports. `defectkit` itself is imported alone: walking it
# would import the leaderboard and the CLI too.
_LOADS_ONLY = {
    "defectkit": (),
    "defectkit.core": ("defectkit.core",),
    "defectkit.convert": ("defectkit.core", "defectkit.convert"),
    "defectkit.evaluation": ("defectkit.core", "defectkit.evaluation"),
    "defectkit.sample": ("defectkit.core", "defectkit.sample"),
}
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
root = sys.argv[1]
package = importlib.import_module(root)
if root != "defectkit":
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), root + "."):
        if not info.name.endswith(".__main__"):  # `python -m` entry points run their CLI on import
            importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m.startswith("defectkit."))
print(json.dumps(loaded))
"""


@pytest.mark.parametrize("root", list(_LOADS_ONLY))
def test_importing_a_lower_layer_loads_no_stage_above_it(root):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, root],
        cwd=REPO / "tests",  # not the repo root, where convert/ would be importable as a bare name
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [m for m in loaded if not any(m == a or m.startswith(a + ".") for a in _LOADS_ONLY[root])]
    assert not bad, f"importing all of {root} also loaded:\n" + "\n".join(bad)
    expected = {m for m in FIRST_PARTY if (m == root or m.startswith(root + ".")) and not m.endswith(".__main__")}
    expected = expected if root != "defectkit" else set()
    assert expected <= set(loaded), f"the walk missed {sorted(expected - set(loaded))}"


def test_installing_defectkit_adds_only_the_defectkit_namespace(tmp_path):
    """Run from outside the checkout (where convert/ is not on sys.path): the stage folders are importable
    only as defectkit.<stage>, and the installed distribution declares no other top-level package."""
    probe = (
        "import importlib, importlib.metadata as md, json\n"
        "bare = {}\n"
        "for name in ('convert', 'detect', 'segment', 'classify', 'evaluation'):\n"
        "    try:\n"
        "        importlib.import_module(name); bare[name] = 'importable'\n"
        "    except ModuleNotFoundError:\n"
        "        bare[name] = 'missing'\n"
        "staged = [importlib.import_module('defectkit.' + n).__name__ for n in ('convert', 'evaluation')]\n"
        "top = (md.distribution('defectkit').read_text('top_level.txt') or 'defectkit').split()\n"
        "print(json.dumps({'bare': bare, 'staged': staged, 'top': top}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert set(found["bare"].values()) == {"missing"}, found["bare"]
    assert found["staged"] == ["defectkit.convert", "defectkit.evaluation"]
    assert found["top"] == ["defectkit"], found["top"]


# Entry points whose `--help` (and any argument error) must come without the heavy libraries: their
# subcommands import what they run, their options come from plain-data modules.
_LIGHT_HELP = (
    "defectkit.cli", "defectkit.convert.cli", "defectkit.evaluation.cli", "defectkit.detect.cli", "defectkit.segment.cli",
    "defectkit.classify.cli", "defectkit.anomaly.cli",
)  # fmt: skip
_HEAVY_LIBRARIES = ("torch", "ultralytics", "segment_anything", "anomalib", "supervision", "matplotlib")
_BUILD_PARSERS = """
import importlib, json, sys
for name in sys.argv[1:]:
    parser = importlib.import_module(name).build_parser()
    parser.format_help()
    for action in parser._actions:  # every subcommand's help too
        if isinstance(action.choices, dict):
            for subparser in action.choices.values():
                subparser.format_help()
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_help_of_the_light_entry_points_loads_no_heavy_library():
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_PARSERS, *_LIGHT_HELP],
        cwd=REPO / "tests",  # not the repo root, where convert/ would be importable as a bare name
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & set(_HEAVY_LIBRARIES), sorted(loaded & set(_HEAVY_LIBRARIES))
