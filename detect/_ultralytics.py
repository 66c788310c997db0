"""Every change defectkit makes to ultralytics, in this one module, applied only inside a context.

:func:`ultralytics_patched` applies them and undoes them on exit; the stage functions that run
ultralytics (train, val, predict, export, embed) enter it themselves, and nesting is free. Nothing is
changed when a module is imported. What the context does, and why:

- **a private config folder** ``<defectkit cache>/ultralytics`` (``$DEFECTKIT_CACHE`` moves it), never
  the user's own (``~/.config/Ultralytics`` or their ``$YOLO_CONFIG_DIR``): ``$YOLO_CONFIG_DIR`` points
  there for the first import of ultralytics and for its DDP worker processes, and when ultralytics was
  imported earlier, its ``SETTINGS`` object writes to the private ``settings.json`` while the context
  lasts; its in-memory values are restored on exit, so the user's settings file is never written.
  Settings in the context: ``sync=False`` (no analytics), integrations (MLflow, ClearML, Comet, DVC,
  W&B, Ray Tune, TensorBoard) off, weights in ``<defectkit cache>/ultralytics/weights``;
- **no network of ultralytics' own**: ``YOLO_OFFLINE=1`` (unless set otherwise; no DNS probe at
  import, no PyPI update check, no download by ultralytics), ``YOLO_AUTOINSTALL=false`` always (no
  ``pip install`` behind the user's back: a missing ``onnx`` or ``clip`` is a clear error); the same
  flags are set on an ultralytics imported earlier. Downloads defectkit needs go through
  ``defectkit.core.weights.fetch`` (timeout, clear error), e.g. :func:`resolve_model` for hub names;
- **fonts**: ultralytics' plots and data check call ``check_font("Arial.ttf")``, which downloads it when
  missing; matplotlib's DejaVu Sans is copied into the private folder under the names it asks for;
- **the AMP check** on CUDA loads ``yolo26n.pt`` (downloading it) just to compare fp32 and fp16:
  :func:`_check_amp_offline` runs the real check when that file is on disk, else keeps AMP on without a
  download (what ultralytics itself does when the download fails);
- **safe checkpoint loading**: ``ULTRALYTICS_SAFE_LOAD=1`` (unless set otherwise): ``.pt`` files load
  with ``torch.load(weights_only=True)`` and ultralytics' allow-list of its layer classes;
- **YOLO-World text embeddings** (``ultralytics_patched(text_embeddings=table)``):
  ``WorldModel.get_text_pe`` answers from a ``detect embed`` table instead of running CLIP;
- **quiet** (``ultralytics_patched(quiet=True)``, the stages' ``--quiet``): ultralytics' logger at
  WARNING, which silences its configuration dump, summaries and progress bars (its TQDM turns
  itself off above INFO); warnings and errors still show.

Trainers: ultralytics' DDP launcher starts new processes that rebuild the trainer from its class. The
trainer classes detect hands to ``YOLO.train`` (:func:`trainer_for`, and
``defectkit.detect.embeddings.FileTextWorldTrainer``) derive from :class:`PatchedTrainer`, whose
construction and ``train()`` enter the context, so a worker applies the patches for its run and
leaves them after it, as the parent does.

Supported: ultralytics :data:`SUPPORTED_RANGE` (the range pyproject allows and the tests cover).
Entering the context with another version, or one that lacks a patch point, is a one-line
DefectkitError; no patch is skipped silently.

ultralytics reads its environment once, when it is first imported, so this module and every detect
module import it inside functions that run within the context, never at module level.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import matplotlib

from defectkit.core.atomic import atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import check_torch_file
from defectkit.core.weights import cache_dir, fetch

if TYPE_CHECKING:
    import torch

# From the lowest release the tests pass on (installed by .ci/minimums.txt): ultralytics.nn.tasks.SAFE_LOAD
# appears in 8.4.67, YOLO-World checkpoints load under it from 8.4.95, and DDP workers get the trainer's
# callbacks and model from 8.4.140.
SUPPORTED_RANGE = ">=8.4.140,<8.5"
_SUPPORTED_FROM, _SUPPORTED_BELOW = (8, 4, 140), (8, 5, 0)
ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_MISSING = object()

# What the context changes in ultralytics, checked to exist on entry (module, attribute path).
PATCH_POINTS = (
    ("ultralytics.utils", "SETTINGS.file_path"),  # where the settings object saves itself
    ("ultralytics.utils", "SETTINGS.file"),
    ("ultralytics.utils", "WEIGHTS_DIR"),  # read when a weights file is looked up (AMP check, CLIP)
    ("ultralytics.utils.checks", "USER_CONFIG_DIR"),  # check_font looks for (and downloads) fonts there
    ("ultralytics.utils.checks", "ONLINE"),  # frozen at import: PyPI update check, auto-install
    ("ultralytics.utils.checks", "AUTOINSTALL"),  # frozen at import: pip install of missing packages
    ("ultralytics.utils.checks", "check_amp"),  # the real AMP check, called by _check_amp_offline
    ("ultralytics.utils.dist", "USER_CONFIG_DIR"),  # DDP writes its worker script and state there
    ("ultralytics.utils.events", "events.enabled"),  # frozen at import: analytics events
    ("ultralytics.engine.trainer", "check_amp"),  # the trainer's AMP check (it downloads yolo26n.pt)
    ("ultralytics.nn.tasks", "SAFE_LOAD"),  # frozen at import: weights_only checkpoint loading
    ("ultralytics.nn.tasks", "WorldModel.get_text_pe"),  # YOLO-World's CLIP call
)
# Settings while the context lasts (all of them exist in the supported range; checked on entry).
_INTEGRATIONS_OFF = ("clearml", "comet", "dvc", "mlflow", "wandb", "tensorboard", "raytune")

# True while an ultralytics_patched() context has the patches applied; only that context undoes them,
# so an inner context that outlives it (a generator closed late) cannot leave them half applied.
_applied = False


class TextLookup(Protocol):
    """What ``ultralytics_patched(text_embeddings=...)`` needs: ``detect.embeddings.TextEmbeddings``."""

    def lookup(self, texts: list[str]) -> torch.Tensor: ...


def config_dir() -> Path:
    """The private folder ``$YOLO_CONFIG_DIR`` points at inside the context: ``<defectkit cache>/ultralytics``."""
    return cache_dir() / "ultralytics"


def user_config_dir() -> Path:
    """Where ultralytics keeps settings.json and fonts in that folder (it appends ``Ultralytics``)."""
    return config_dir() / "Ultralytics"


def weights_dir() -> Path:
    """Where hub weights are cached: ``<defectkit cache>/ultralytics/weights``."""
    return config_dir() / "weights"


def _wanted_settings() -> dict[str, Any]:
    return {
        "sync": False,
        "weights_dir": str(weights_dir()),
        "vscode_msg": False,
        "openvino_msg": False,
        **{name: False for name in _INTEGRATIONS_OFF},
    }


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _version_tuple(version: str) -> tuple[int, int, int] | None:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def check_version(version: str) -> None:
    """Raise a one-line DefectkitError unless ``version`` is in :data:`SUPPORTED_RANGE`.

    >>> check_version("8.4.190")
    >>> check_version("8.4.139")
    Traceback (most recent call last):
    defectkit.core.errors.DefectkitError: ultralytics 8.4.139 is not supported: defectkit needs ultralytics>=8.4.140,<8.5 (pip install 'ultralytics>=8.4.140,<8.5')
    """
    parsed = _version_tuple(version)
    if parsed is None or not _SUPPORTED_FROM <= parsed < _SUPPORTED_BELOW:
        raise DefectkitError(
            f"ultralytics {version} is not supported: defectkit needs ultralytics{SUPPORTED_RANGE} "
            f"(pip install 'ultralytics{SUPPORTED_RANGE}')"
        )


def _resolve(module: str, path: str, version: str) -> tuple[Any, str]:
    """(object holding the last attribute of ``path``, its name); raises when any part is missing."""
    obj: Any = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in [*parents, name]:
        holder = obj
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            raise DefectkitError(
                f"ultralytics {version}: {module}.{path} is missing, so defectkit cannot keep ultralytics "
                f"offline and private; install ultralytics{SUPPORTED_RANGE}"
            )
    return holder, name


def _set(stack: contextlib.ExitStack, obj: Any, name: str, value: Any) -> None:
    """``setattr(obj, name, value)`` until ``stack`` closes (an attribute ``obj`` only inherited is deleted again)."""
    old = obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else getattr(obj, name)
    setattr(obj, name, value)
    if old is _MISSING:
        stack.callback(delattr, obj, name)
    else:
        stack.callback(setattr, obj, name, old)


def _set_env(stack: contextlib.ExitStack, name: str, value: str) -> None:
    old = os.environ.get(name)
    os.environ[name] = value
    if old is None:
        stack.callback(os.environ.pop, name, None)
    else:
        stack.callback(os.environ.__setitem__, name, old)


def _restore_dict(target: dict, saved: dict) -> None:
    dict.clear(target)  # the plain dict methods: ultralytics' own would save the file again
    dict.update(target, saved)


def _seed_private_settings(path: Path) -> None:
    """Before ultralytics' first import: its import-time reads (weights folder, analytics) see our settings."""
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current = current if isinstance(current, dict) else {}
    merged = {**current, **_wanted_settings()}
    if merged != current:
        atomic_write_json(path, merged)


def _install_fonts(user_dir: Path) -> None:
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONT_NAMES:
        target = user_dir / name
        if not target.exists() and dejavu.is_file():
            shutil.copyfile(dejavu, target)


def _check_amp_offline(model) -> bool:
    """ultralytics' AMP check, minus its download: run it only when ``yolo26n.pt`` is on disk."""
    from ultralytics.utils import LOGGER, WEIGHTS_DIR, checks  # imported already: we run inside the context

    if (WEIGHTS_DIR / "yolo26n.pt").is_file() or next(model.parameters()).device.type != "cuda":
        return checks.check_amp(model)
    LOGGER.info("AMP: check skipped (it needs yolo26n.pt, not on disk); training with AMP on")
    return True


def _apply(stack: contextlib.ExitStack) -> None:
    """Everything the module docstring lists, each undone when ``stack`` closes."""
    user_dir = user_config_dir()
    user_dir.mkdir(parents=True, exist_ok=True)
    weights_dir().mkdir(parents=True, exist_ok=True)
    _set_env(stack, "YOLO_CONFIG_DIR", str(config_dir()))
    _set_env(stack, "YOLO_AUTOINSTALL", "false")
    _set_env(stack, "YOLO_OFFLINE", os.environ.get("YOLO_OFFLINE", "1"))
    # .pt files load with torch.load(weights_only=True) plus ultralytics' allow-list of its layer classes.
    _set_env(stack, "ULTRALYTICS_SAFE_LOAD", os.environ.get("ULTRALYTICS_SAFE_LOAD", "1"))
    if "ultralytics.utils" not in sys.modules:
        _seed_private_settings(user_dir / "settings.json")

    import ultralytics  # the first import, if it is one, sees the environment above

    version = str(ultralytics.__version__)
    check_version(version)
    points = {f"{m}.{p}": _resolve(m, p, version) for m, p in PATCH_POINTS}
    settings = points["ultralytics.utils.SETTINGS.file"][0]
    unknown = sorted(set(_wanted_settings()) - set(getattr(settings, "defaults", {})))
    if unknown:
        raise DefectkitError(
            f"ultralytics {version}: no setting {', '.join(unknown)}; install ultralytics{SUPPORTED_RANGE}"
        )

    # Settings: saved to the private file while we run, the previous values back in memory afterwards.
    _set(stack, settings, "file_path", user_dir / "settings.json")
    _set(stack, settings, "file", user_dir / "settings.json")
    stack.callback(_restore_dict, settings, dict(settings))
    changed = {k: v for k, v in _wanted_settings().items() if settings.get(k) != v}
    if changed:
        settings.update(changed)
    _install_fonts(user_dir)

    _set(stack, *points["ultralytics.utils.WEIGHTS_DIR"], weights_dir())
    _set(stack, *points["ultralytics.utils.checks.USER_CONFIG_DIR"], user_dir)
    _set(stack, *points["ultralytics.utils.dist.USER_CONFIG_DIR"], user_dir)
    _set(stack, *points["ultralytics.utils.checks.AUTOINSTALL"], False)
    if _env_true("YOLO_OFFLINE"):
        _set(stack, *points["ultralytics.utils.checks.ONLINE"], False)
    _set(stack, *points["ultralytics.utils.events.events.enabled"], False)
    _set(stack, *points["ultralytics.nn.tasks.SAFE_LOAD"], _env_true("ULTRALYTICS_SAFE_LOAD"))
    _set(stack, *points["ultralytics.engine.trainer.check_amp"], _check_amp_offline)


def _use_text_embeddings(stack: contextlib.ExitStack, table: TextLookup) -> None:
    """``WorldModel.get_text_pe`` answers from ``table``: set_classes, the EMA copy, validators, reloads."""
    from ultralytics.nn.tasks import WorldModel  # imported already: we run inside the context

    def get_text_pe(self, text, batch=80, cache_clip_model=False):  # the signature of ultralytics' method
        device = next(self.model.parameters()).device
        return table.lookup(list(text)).to(device).reshape(1, len(text), -1)

    _set(stack, WorldModel, "get_text_pe", get_text_pe)


def _quiet(stack: contextlib.ExitStack) -> None:
    """ultralytics' logger at WARNING until ``stack`` closes: no configuration dump, no INFO lines, and
    no progress bars (ultralytics' TQDM disables itself when its logger is above INFO)."""
    from ultralytics.utils import LOGGER  # imported already: we run inside the context

    old = LOGGER.level
    LOGGER.setLevel(max(logging.WARNING, old))
    stack.callback(LOGGER.setLevel, old)


@contextlib.contextmanager
def ultralytics_patched(text_embeddings: TextLookup | None = None, *, quiet: bool = False) -> Iterator[None]:
    """Run ultralytics offline-safe and private (see the module docstring); undone on exit.

    The outermost context applies the patches (checking the ultralytics version and every patch
    point first) and undoes them; inner ones only add ``text_embeddings`` (YOLO-World: ``get_text_pe`` answers from
    this table instead of CLIP) and ``quiet`` (ultralytics logs warnings and errors only). Also a decorator.
    Process-wide: not for concurrent threads.

    >>> import os
    >>> before = os.environ.get("YOLO_CONFIG_DIR")
    >>> with ultralytics_patched():
    ...     from ultralytics.utils import SETTINGS
    ...     SETTINGS["sync"], os.environ["YOLO_CONFIG_DIR"] == str(config_dir())
    (False, True)
    >>> os.environ.get("YOLO_CONFIG_DIR") == before
    True
    """
    global _applied
    with contextlib.ExitStack() as stack:
        if not _applied:
            _apply(stack)
            _applied = True
            stack.callback(globals().__setitem__, "_applied", False)
        if text_embeddings is not None:
            _use_text_embeddings(stack, text_embeddings)
        if quiet:
            _quiet(stack)
        yield


class PatchedTrainer:
    """Mixin for an ultralytics trainer class: its construction and ``train()`` run in the context.

    ultralytics' DDP launcher rebuilds the trainer from its class in each worker process; through this
    mixin the worker applies the patches for its run and leaves them afterwards. ``text_table``
    (YOLO-World) is the table ``get_text_pe`` answers from.
    """

    text_table: TextLookup | None = None

    def __init__(self, *args, **kwargs):
        with ultralytics_patched(text_embeddings=self.text_table):
            super().__init__(*args, **kwargs)

    def train(self):
        with ultralytics_patched(text_embeddings=self.text_table):
            return super().train()


# ultralytics' trainer of each task detect trains, wrapped by PatchedTrainer as Patched<name>.
_TRAINERS = {
    "detect": ("ultralytics.models.yolo.detect", "DetectionTrainer"),
    "segment": ("ultralytics.models.yolo.segment", "SegmentationTrainer"),
}


def __getattr__(name: str) -> type:
    """``PatchedDetectionTrainer`` / ``PatchedSegmentationTrainer``, made on first use (they subclass an
    ultralytics class, so they cannot exist before ultralytics is imported in the context). A module
    attribute, so DDP workers find them by name."""
    for module, base in _TRAINERS.values():
        if name == f"Patched{base}":
            with ultralytics_patched():
                base_class = getattr(importlib.import_module(module), base)
            cls = type(name, (PatchedTrainer, base_class), {"__module__": __name__, "__qualname__": name})
            globals()[name] = cls
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def trainer_for(task: str) -> type:
    """The trainer class to hand to ``YOLO.train(trainer=...)`` for a ``detect`` or ``segment`` model."""
    return getattr(sys.modules[__name__], f"Patched{_TRAINERS[task][1]}")


@ultralytics_patched()
def clip_text_model(weights: str | Path, device: torch.device):
    """ultralytics' CLIP text model (the wrapper YOLO-World encodes its prompts with), built from the
    CLIP file ``weights``.

    The file is handed to ``clip.load`` by path, as the wrapper's ``size``: by name (``ViT-B/32``),
    clip.load compares the file's SHA-256 with OpenAI's and downloads it again, without a timeout,
    when they differ. defectkit fetches the file itself (``defectkit.core.weights.fetch``) first.
    """
    from ultralytics.nn import text_model  # imports the optional `clip` package: callers check it first

    if not hasattr(text_model, "CLIP"):
        raise DefectkitError(
            f"ultralytics: ultralytics.nn.text_model.CLIP is missing; install ultralytics{SUPPORTED_RANGE}"
        )
    return text_model.CLIP(str(weights), device)


@ultralytics_patched()
def check_args(
    args: dict[str, Any], *, reserved: tuple[str, ...] = (), what: str = "training"
) -> dict[str, Any]:
    """Check ultralytics keyword arguments before ultralytics sees them; returns them (types normalised).

    Each key must be one of ultralytics' settings (``ultralytics.cfg.DEFAULT_CFG_DICT``) and not one
    defectkit sets itself (``reserved``, which have their own option); each value must pass
    ultralytics' own type and range check (``check_cfg``), so a bad value is a one-line error here
    instead of a traceback from deep inside the trainer or predictor.

    >>> check_args({"max_det": 100, "lr0": 0.001})
    {'max_det': 100, 'lr0': 0.001}
    >>> check_args({"learning_rate": 3})
    Traceback (most recent call last):
    defectkit.core.errors.DefectkitError: learning_rate=3: 'learning_rate' is not an ultralytics training argument
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in reserved:
            raise DefectkitError(
                f"{key}={value}: detect sets '{key}' itself; use its own option (--{key.replace('_', '-')}) "
                "or argument instead"
            )
        if key not in DEFAULT_CFG_DICT:
            raise DefectkitError(f"{key}={value}: '{key}' is not an ultralytics {what} argument")
        checked = {key: value}
        try:
            check_cfg(checked)
        except (TypeError, ValueError) as exc:
            problem = str(exc).splitlines()[0]  # ultralytics' messages start with 'key=value' already
            raise DefectkitError(
                problem if problem.startswith(f"'{key}=") else f"{key}={value}: {problem}"
            ) from None
        out.update(checked)
    return out


def resolve_model(model: str | Path) -> str:
    """A model argument ultralytics can open without touching the network.

    ``*.yaml`` names (``yolov8n.yaml``, ``yolov8s-worldv2.yaml``) are architectures ultralytics ships:
    returned as they are. An existing ``.pt`` path is returned as it is. A bare hub name
    (``yolov8s-worldv2.pt``) is looked up in the weights cache and downloaded from the official
    ultralytics assets release when online; offline it fails at once, naming the file to fetch.

    >>> resolve_model("yolov8n.yaml")
    'yolov8n.yaml'
    """
    text = str(model)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        return text
    if path.suffix.lower() not in (".pt", ".onnx", ".engine", ".torchscript"):
        # Checked before opening: ultralytics guesses a task for any file and fails late on an assert.
        raise DefectkitError(
            f"{text}: not a model file; give a .pt checkpoint, a hub name such as yolov8s-worldv2.pt, "
            "or an architecture such as yolov8s-worldv2.yaml"
        )
    if path.is_file():
        if path.suffix.lower() == ".pt":  # a text file would fail deep in torch.load ("pop from empty list")
            check_torch_file(path, "YOLO checkpoint")
        return str(path)
    if path.parent != Path(".") or path.suffix.lower() != ".pt":
        raise DefectkitError(f"{text}: no such model file")
    local = fetch(
        f"{ASSETS_URL}/{path.name}",
        weights_dir() / path.name,
        timeout=20.0,
        hint=f"pass its path with --model /path/to/{path.name}",
    )
    check_torch_file(local, "YOLO checkpoint")  # the cache holds whatever was put there
    return str(local)
