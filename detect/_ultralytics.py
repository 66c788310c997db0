"""Import ultralytics offline-safe. Every detect module gets ultralytics through this one.

What ultralytics would otherwise do on its own, and how it is stopped (all of it here, nowhere else):

- settings, fonts and downloaded weights go to a private config folder
  (``$YOLO_CONFIG_DIR``, default ``<defectkit cache>/ultralytics``), never ``~/.config/Ultralytics``;
  settings ``sync=False`` (no analytics/events), integrations (MLflow, ClearML, Comet, DVC, W&B) off;
- ``YOLO_OFFLINE=1`` (unless set otherwise): ultralytics' DNS probe at import (which can stall for
  many seconds where name resolution times out), its PyPI update check on every ``train`` and its
  own downloads are off; every download defectkit needs goes through ``defectkit.core.weights.fetch``
  (timeout, clear error). ``YOLO_AUTOINSTALL=false`` always: no ``pip install`` behind the user's
  back (missing ``onnx`` or ``clip`` becomes a clear error instead);
- fonts: ultralytics' plots and its data check call ``check_font("Arial.ttf")``, which downloads the
  font from GitHub when it is missing. matplotlib's bundled DejaVu Sans is copied into the private
  config folder under the two names ultralytics asks for, so the lookup succeeds on disk;
- the AMP check on CUDA loads ``yolo26n.pt`` (downloading it when absent) just to compare fp32 and
  fp16 outputs. :func:`_check_amp_offline` runs the real check when that file is on disk and otherwise
  keeps AMP on without a download, which is what ultralytics itself does when the download fails;
- checkpoints: ``ULTRALYTICS_SAFE_LOAD=1`` (unless set otherwise), so ``.pt`` files load with
  ``torch.load(weights_only=True)`` and ultralytics' allow-list of its layer classes, never arbitrary pickles;
- hub weight names (``yolov8s-worldv2.pt``) are resolved by :func:`resolve_model` through
  ``defectkit.core.weights.fetch`` (cache, or download with a timeout, or an offline error naming the
  fix) before ultralytics sees them, so its own silent download never runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from defectkit.core.errors import DefectkitError
from defectkit.core.weights import cache_dir

ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
MODEL_SUFFIXES = (".pt", ".yaml", ".yml")
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_configured = False


def _config_dir() -> Path:
    return Path(os.environ.get("YOLO_CONFIG_DIR") or cache_dir() / "ultralytics")


def weights_dir() -> Path:
    """Where hub weights are cached: ``<defectkit cache>/ultralytics/weights``."""
    return cache_dir() / "ultralytics" / "weights"


def _install_fonts(user_dir: Path) -> None:
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONT_NAMES:
        target = user_dir / name
        if not target.exists() and dejavu.is_file():
            shutil.copyfile(dejavu, target)


def _check_amp_offline(model) -> bool:
    """ultralytics' AMP check, minus its download: run it only when ``yolo26n.pt`` is on disk."""
    from ultralytics.utils import LOGGER, WEIGHTS_DIR, checks

    if (WEIGHTS_DIR / "yolo26n.pt").is_file() or next(model.parameters()).device.type != "cuda":
        return checks.check_amp(model)
    LOGGER.info("AMP: check skipped (it needs yolo26n.pt, not on disk); training with AMP on")
    return True


def configure() -> None:
    """Set the environment, import ultralytics once, and apply the settings above. Idempotent."""
    global _configured
    if _configured:
        return
    config = _config_dir()
    config.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config)
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "true")
    # Checkpoints load with torch.load(weights_only=True) plus ultralytics' allow-list of its own layer
    # classes: opening a .pt never runs arbitrary pickled code. ULTRALYTICS_SAFE_LOAD=0 turns it off.
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")
    # Online or not: ultralytics' own network use (DNS probe, update check, downloads) is never needed.
    os.environ.setdefault("YOLO_OFFLINE", "1")

    import ultralytics.utils as ultralytics_utils
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    wanted = {
        "sync": False,
        "weights_dir": str(weights_dir()),
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "wandb": False,
        "tensorboard": False,
        "raytune": False,
        "vscode_msg": False,
        "openvino_msg": False,
    }
    changed = {k: v for k, v in wanted.items() if SETTINGS.get(k) != v}
    if changed:
        SETTINGS.update(changed)
    _install_fonts(Path(USER_CONFIG_DIR))

    # ultralytics reads WEIGHTS_DIR from its settings once, at import: before the update above when
    # the private settings file is new. Point it at the private folder too (only ultralytics.utils holds
    # it at this point; later modules import the corrected value).
    ultralytics_utils.WEIGHTS_DIR = weights_dir()
    ultralytics_utils.WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)

    import ultralytics.engine.trainer as trainer_module

    trainer_module.check_amp = _check_amp_offline
    _configured = True


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
        return str(path)
    if path.parent != Path(".") or path.suffix.lower() != ".pt":
        raise DefectkitError(f"{text}: no such model file")
    from defectkit.core.weights import fetch

    local = fetch(
        f"{ASSETS_URL}/{path.name}",
        weights_dir() / path.name,
        timeout=20.0,
        hint=f"pass its path with --model /path/to/{path.name}",
    )
    return str(local)


configure()
