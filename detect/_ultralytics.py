"""Import ultralytics offline-safe. Every detect module gets ultralytics through this one.

What ultralytics would otherwise do on its own, and how it is stopped (all of it here, nowhere else):

- settings, fonts and downloaded weights go to a private config folder
  (``$YOLO_CONFIG_DIR``, default ``<defectkit cache>/ultralytics``), never ``~/.config/Ultralytics``;
  settings ``sync=False`` (no analytics/events), integrations (MLflow, ClearML, Comet, DVC, W&B) off;
- ``YOLO_OFFLINE=1`` when ``DEFECTKIT_OFFLINE`` is set: ultralytics' DNS probe and PyPI update check
  are skipped; ``YOLO_AUTOINSTALL=false`` always: no ``pip install`` behind the user's back (missing
  ``onnx`` or ``clip`` becomes a clear error instead);
- fonts: ultralytics' plots and its data check call ``check_font("Arial.ttf")``, which downloads the
  font from GitHub when it is missing. matplotlib's bundled DejaVu Sans is copied into the private
  config folder under the two names ultralytics asks for, so the lookup succeeds on disk;
- the AMP check on CUDA loads ``yolo26n.pt`` (downloading it when absent) just to compare fp32 and
  fp16 outputs. :func:`_check_amp_offline` runs the real check when that file is on disk and otherwise
  keeps AMP on without a download, which is what ultralytics itself does when the download fails;
- checkpoints: ``ULTRALYTICS_SAFE_LOAD=1`` (unless set otherwise), so ``.pt`` files load with
  ``torch.load(weights_only=True)`` and ultralytics' allow-list of its layer classes, never arbitrary pickles;
- hub weight names (``yolov8s-worldv2.pt``) are resolved by :func:`resolve_model` through
  ``defectkit.weights.fetch`` (cache, or download with a timeout, or an offline error naming the
  fix) before ultralytics sees them, so its own silent download never runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from defectkit.errors import DefectkitError
from defectkit.weights import cache_dir

ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
MODEL_SUFFIXES = (".pt", ".yaml", ".yml")
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_configured = False


def _offline() -> bool:
    return os.environ.get("DEFECTKIT_OFFLINE", "") not in ("", "0")


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
    if _offline():
        os.environ["YOLO_OFFLINE"] = "1"

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

    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import WEIGHTS_DIR

    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    trainer_module.check_amp = _check_amp_offline
    _configured = True


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
    if path.is_file():
        return str(path)
    if path.suffix.lower() != ".pt" and path.suffix.lower() not in (".onnx", ".engine", ".torchscript"):
        raise DefectkitError(
            f"{text}: not a model file; give a .pt checkpoint, a hub name such as yolov8s-worldv2.pt, "
            "or an architecture such as yolov8s-worldv2.yaml"
        )
    if path.parent != Path(".") or path.suffix.lower() != ".pt":
        raise DefectkitError(f"{text}: no such model file")
    from defectkit.weights import fetch

    local = fetch(
        f"{ASSETS_URL}/{path.name}",
        weights_dir() / path.name,
        timeout=20.0,
        hint=f"pass its path with --model /path/to/{path.name}",
    )
    return str(local)


configure()
