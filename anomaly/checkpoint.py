"""What an ``anomaly train`` run keeps: ``model.pt`` (the fitted model, its configuration and the
thresholds chosen on val) and, for models trained for epochs, ``last.pt`` (also the optimiser and
schedule states, to resume). Both are plain dicts of tensors, numbers and strings: they load with
``torch.load(path, weights_only=True)``. anomalib's Lightning checkpoints (pickles) are never written.

``model.pt``::

    {"format": "defectkit-anomaly-model", "config": {...AnomalyTrainConfig...},
     "state_dict": {...the Lightning module's tensors: backbone, PaDiM Gaussian / PatchCore memory
                    bank / DRAEM networks...},
     "thresholds": {"image": t, "pixel": t, "rule": ..., ...}, "epochs": n, "anomalib": "2.7.0"}
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from defectkit.anomaly import _anomalib
from defectkit.anomaly.config import AnomalyTrainConfig
from defectkit.anomaly.models import build_model
from torch import nn

from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import atomic_torch_save, load_weights_only

MODEL_FORMAT = "defectkit-anomaly-model"
LAST_FORMAT = "defectkit-anomaly-last"
MODEL_FILE, LAST_FILE = "model.pt", "last.pt"


def model_file(run: str | Path) -> Path:
    """``RUN/model.pt`` for a run folder, or the file itself."""
    run = Path(run)
    if run.is_dir():
        path = run / MODEL_FILE
        if not path.is_file():
            raise DefectkitError(f"{run}: no {MODEL_FILE} in this run folder (did anomaly train finish?)")
        return path
    return run


def save_model(path: Path, cfg: AnomalyTrainConfig, module: nn.Module, thresholds: dict, epochs: int) -> Path:
    return atomic_torch_save(
        {
            "format": MODEL_FORMAT,
            "config": asdict(cfg),
            "state_dict": _anomalib.module_state(module),
            "thresholds": thresholds,
            "epochs": epochs,
            "anomalib": _anomalib.anomalib_version(),
        },
        path,
    )


def save_last(
    path: Path, cfg: AnomalyTrainConfig, module: nn.Module, epoch: int, states: dict, history: list
) -> Path:
    return atomic_torch_save(
        {
            "format": LAST_FORMAT,
            "config": asdict(cfg),
            "state_dict": _anomalib.module_state(module),
            "epoch": epoch,
            "optimizers": states["optimizers"],
            "schedulers": states["schedulers"],
            "history": history,
        },
        path,
    )


def read(path: str | Path, kind: str = MODEL_FORMAT) -> dict:
    """A model.pt / last.pt, checked to be one (weights_only load; one-line errors naming the file)."""
    ckpt = load_weights_only(path, "anomaly model" if kind == MODEL_FORMAT else "anomaly last.pt")
    if not isinstance(ckpt, dict) or ckpt.get("format") != kind:
        what = (
            "an anomaly model.pt (written by anomaly train)" if kind == MODEL_FORMAT else "an anomaly last.pt"
        )
        raise DefectkitError(f"{path}: not {what}")
    return ckpt


def load_model(run: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The fitted model of a run (folder or model.pt) on ``device``, and the checkpoint dict."""
    path = model_file(run)
    ckpt = read(path)  # a wrong file is named before anomalib is needed
    cfg = AnomalyTrainConfig.from_dict(ckpt["config"])
    # The weights come from the file: no backbone download, and DRAEM's anomaly source (training only)
    # need not exist where the model is used.
    if cfg.model == "draem":
        cfg.anomaly_source = "perlin"
    module = build_model(cfg)
    _anomalib.load_module_state(module, ckpt["state_dict"], str(path))
    return module.to(device).eval(), ckpt
