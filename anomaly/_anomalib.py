"""Every contact with anomalib (and the libraries it brings: lightning, timm, huggingface_hub,
safetensors) in this one module, imported inside the functions that need them.

Why here and why lazily: ``import anomalib.models`` takes about 9 s (it loads lightning, torchmetrics
and every model), and anomalib is an optional extra (``defectkit[anomaly]``). So ``anomaly --help``
stays fast, and the leaderboard can import the anomaly stage, ask :func:`anomalib_available` and skip
its rows with one line when the extra is missing. Every other anomaly module talks to anomalib
through the functions below.

What defectkit changes in how anomalib runs, and why:

- **raw scores**: the post-processor never normalises (anomalib's min-max normalisation clips scores
  to [0, 1] and makes ties) and never thresholds: defectkit picks its thresholds on the val split;
- **no evaluator, no visualiser**: the scores are evaluated by ``defectkit.evaluation``;
- **weights**: a backbone is always built with ``pre_trained=False`` (timm's download of ImageNet
  weights retries for about 47 s offline), then loaded from a file defectkit found or fetched itself
  (:func:`imagenet_weights_file`, :func:`load_backbone`; EfficientAD's teacher likewise,
  :func:`teacher_weights_file`), so an offline failure takes seconds and names the file;
- **Lightning** trains with no logger, no checkpoint callback and a temporary ``default_root_dir``
  removed afterwards, so nothing (no pickle, no ``v<N>`` folder) is written into the run folder or
  the current directory; DRAEM gets an explicit anomaly source instead of ``./datasets/dtd``, and
  EfficientAD an explicit ImageNet folder instead of a download into ``./datasets/imagenette``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import types
import urllib.parse
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import tqdm
from torch import nn

from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import LOAD_ERRORS, Device, load_weights_only
from defectkit.core.weights import fetch

MISSING_MESSAGE = 'anomalib is not installed; pip install "defectkit[anomaly]"'
# The anomalib release the stage is written and tested against (pyproject's `anomaly` extra).
SUPPORTED_RANGE = ">=2.7,<2.8"
# How long the reachability check of the Hugging Face hub may take before `imagenet` weights are
# declared unreachable (timm's own download retries for ~47 s offline).
HUB_CHECK_TIMEOUT_S = 3.0


def anomalib_available() -> bool:
    """Whether anomalib can be imported (its top-level package only: about a second, not the 9 s of
    its models). The leaderboard asks this before it runs an anomaly row.

    >>> isinstance(anomalib_available(), bool)
    True
    """
    try:
        import anomalib  # noqa: F401
    except ImportError:
        return False
    return True


def require_anomalib() -> None:
    """Raise the one-line DefectkitError of a missing ``anomaly`` extra (before any work starts)."""
    if not anomalib_available():
        raise DefectkitError(MISSING_MESSAGE)


@contextlib.contextmanager
def _anomalib_imported() -> Iterator[None]:
    """Turn an import failure inside anomalib (the extra missing, or half installed) into the one line."""
    try:
        yield
    except ImportError as exc:
        raise DefectkitError(f"{MISSING_MESSAGE} ({exc})") from None


def anomalib_version() -> str:
    with _anomalib_imported():
        import anomalib
    return str(anomalib.__version__)


@contextlib.contextmanager
def quiet_lightning(quiet: bool = True) -> Iterator[None]:
    """Lightning's and anomalib's INFO lines (accelerator summary, "Initializing Padim model", the
    few-workers hint) off while defectkit drives them; warnings about real problems still show."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "anomalib")
    saved = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        # What Lightning says about how defectkit runs it on purpose: our loaders read an in-memory
        # cache (more workers would only copy it), no val loop (thresholds are chosen afterwards), no
        # optimiser for the memory-bank models, anomalib's frozen backbones in eval mode; and the
        # deprecations inside anomalib and timm that its import prints.
        for message in (
            ".*does not have many workers.*",
            ".*validation_step.*no `val_dataloader`.*",
            ".*configure_optimizers.*returned `None`.*",
            ".*module\\(s\\) in eval mode.*",
            ".*LeafSpec.*",
            ".*Argument embeddings is deprecated.*",
            ".*transform `ToTensor\\(\\)` is deprecated.*",
            ".*'pin_memory' argument is set as true but no accelerator.*",
            ".*but have no logger configured.*",
            ".*infer the `batch_size` from an ambiguous collection.*",
            ".*Importing from timm.models.layers.*",
            ".*dinov2 package is deprecated.*",
        ):
            warnings.filterwarnings("ignore", message=message)
        if quiet:
            for name in names:
                logging.getLogger(name).setLevel(logging.WARNING)
        try:
            with _anomalib_bars_off() if quiet else contextlib.nullcontext():
                yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)


# anomalib's own progress bars (PatchCore's coreset selection, EfficientAD's statistics passes) take
# no `disable` argument; quiet runs swap the tqdm these modules call for one that is off.
_ANOMALIB_BARS = (
    ("anomalib.models.components.sampling.k_center_greedy", "tqdm", False),
    ("anomalib.models.image.efficient_ad.lightning_model", "tqdm", True),  # the module, called as tqdm.tqdm
)


@contextlib.contextmanager
def _anomalib_bars_off() -> Iterator[None]:
    off = functools.partial(tqdm.tqdm, disable=True)
    saved = []
    for module_name, attribute, is_module in _ANOMALIB_BARS:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            saved.append((module, attribute, getattr(module, attribute)))
            setattr(module, attribute, types.SimpleNamespace(tqdm=off) if is_module else off)
    try:
        yield
    finally:
        for module, attribute, value in saved:
            setattr(module, attribute, value)


# ---------------------------------------------------------------------------------------------------
# Models


def _post_processor():
    from anomalib.post_processing import PostProcessor

    # Raw scores: no min-max normalisation (it clips and ties scores), no anomalib threshold.
    return PostProcessor(enable_normalization=False, enable_thresholding=False)


def _components() -> dict[str, Any]:
    return {"post_processor": _post_processor(), "evaluator": False, "visualizer": False}


def _feature_model(name: str, backbone: str, layers: list[str], image_size: int, **options: Any) -> nn.Module:
    """anomalib's PaDiM or PatchCore (``name``) on a random ``backbone``: defectkit loads the weights
    (:func:`load_backbone`). An unknown backbone or layer is a one-line error."""
    with _anomalib_imported(), quiet_lightning():
        from anomalib.models import Padim, Patchcore

        model_class = {"padim": Padim, "patchcore": Patchcore}[name]
        try:
            return model_class(
                backbone=backbone, layers=list(layers), pre_trained=False, **options, **_components(),
                pre_processor=model_class.configure_pre_processor((image_size, image_size)),
            )  # fmt: skip
        except (ValueError, RuntimeError, KeyError) as exc:  # unknown backbone or layer, bad n_features
            raise DefectkitError(f"--model {name} --backbone {backbone}: {_first_line(exc)}") from None


def build_padim(backbone: str, layers: list[str], image_size: int, n_features: int | None) -> nn.Module:
    return _feature_model("padim", backbone, layers, image_size, n_features=n_features)


def build_patchcore(backbone: str, layers: list[str], image_size: int, coreset_ratio: float) -> nn.Module:
    return _feature_model("patchcore", backbone, layers, image_size, coreset_sampling_ratio=coreset_ratio)


def build_draem(anomaly_source: str, image_size: int) -> nn.Module:
    """anomalib's ``Draem`` with an explicit anomaly source: ``perlin`` (Perlin noise shapes filled
    with noise, no texture images) or a folder of texture images (the paper uses DTD).

    anomalib's default ``dtd_dir="./datasets/dtd"`` downloads DTD into the current directory, and an
    empty folder left there makes the next run train on Perlin noise alone without saying so; here
    the folder is either the user's (checked to hold images) or an empty temporary one."""
    with _anomalib_imported(), quiet_lightning():
        from anomalib.models import Draem

        pre = Draem.configure_pre_processor((image_size, image_size))
        if anomaly_source == "perlin":
            with tempfile.TemporaryDirectory(prefix="defectkit-perlin-") as empty:
                model = Draem(dtd_dir=empty, pre_processor=pre, **_components())
            if model.augmenter.anomaly_source_paths:  # pragma: no cover - an empty folder has none
                raise DefectkitError("draem: the Perlin-only anomaly source unexpectedly found images")
            return model
        source = Path(anomaly_source)  # checked to be a folder of images by AnomalyTrainConfig.check
        model = Draem(dtd_dir=source, pre_processor=pre, **_components())
        if not model.augmenter.anomaly_source_paths:
            # anomalib matches lower-case suffixes only (torchvision's IMG_EXTENSIONS).
            raise DefectkitError(
                f"{source}: anomalib found no texture images here (it reads lower-case .jpg/.png/.bmp/.tif names)"
            )
        return model


def build_efficient_ad(image_size: int, model_size: str, imagenet_dir: str) -> nn.Module:
    """anomalib's ``EfficientAd``, its teacher still random (:func:`load_teacher` loads it). Its
    ImageNet penalty images come from ``imagenet_dir`` (an ImageFolder tree: class folders of
    images), never from anomalib's download of ImageNette into ``./datasets/imagenette``."""
    with _anomalib_imported(), quiet_lightning():
        from anomalib.models import EfficientAd

        model = EfficientAd(
            imagenet_dir=imagenet_dir, model_size=model_size, **_components(),
            pre_processor=EfficientAd.configure_pre_processor((image_size, image_size)),
        )  # fmt: skip
    # anomalib loads the teacher from its own cache when training starts (downloading it when
    # missing); defectkit has loaded it already, from the file it resolved and checked.
    model.prepare_pretrained_model = lambda: None
    return model


def teacher_weights_file(model_size: str) -> Path:
    """EfficientAD's pre-trained teacher (``pretrained_teacher_<size>.pth``) in anomalib's cache,
    fetched with anomalib's zip (checked against its hash) when missing. Offline it fails within
    seconds naming the file and ``--teacher-weights PATH`` (``defectkit.core.weights.fetch``)."""
    require_anomalib()
    with _anomalib_imported():
        from anomalib.data.utils.download import check_hash
        from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO
        from anomalib.utils.path import get_pretrained_weights_dir

    folder = get_pretrained_weights_dir()
    path = folder / "efficientad_pretrained_weights" / f"pretrained_teacher_{model_size}.pth"
    if path.is_file():
        return path
    archive = fetch(
        WEIGHTS_DOWNLOAD_INFO.url, folder / WEIGHTS_DOWNLOAD_INFO.name, timeout=HUB_CHECK_TIMEOUT_S,
        hint=f"unpack it into {folder}, or pass --teacher-weights PATH ({path.name})",
    )  # fmt: skip
    try:
        check_hash(archive, WEIGHTS_DOWNLOAD_INFO.hashsum)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(folder)
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        archive.unlink(missing_ok=True)
        raise DefectkitError(
            f"{archive}: not anomalib's EfficientAD weights archive ({_first_line(exc)})"
        ) from None
    if not path.is_file():
        raise DefectkitError(
            f"{path}: not in anomalib's EfficientAD weights archive; pass --teacher-weights PATH"
        )
    return path


def load_teacher(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load EfficientAD's pre-trained teacher (a state dict of its patch description network)."""
    try:
        module.model.teacher.load_state_dict(state)
    except RuntimeError as exc:
        raise DefectkitError(
            f"{source}: not an EfficientAD teacher of this size ({_first_line(exc)})"
        ) from None


@torch.no_grad()
def after_fit(module: nn.Module, val_loader: Any, progress: bool = False) -> None:
    """What anomalib does at the start of validation and defectkit's training has no validation loop
    for: EfficientAD's map quantiles, from the val split's good images (``map_norm_quantiles``)."""
    with _anomalib_imported():
        from anomalib.models import EfficientAd
    if isinstance(module, EfficientAd):
        if not any(int(label) == 0 for batch in val_loader for label in batch.gt_label):
            raise DefectkitError(
                "efficient_ad: the val split has no good image; EfficientAD scales its maps by quantiles of "
                "the val split's good images (convert with a larger --val-frac)"
            )
        module.eval()
        with quiet_lightning(not progress):
            module.model.quantiles.update(module.map_norm_quantiles(val_loader))


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def feature_extractor(module: nn.Module) -> nn.Module:
    """The timm network inside a PaDiM / PatchCore backbone (the module backbone weights load into)."""
    return module.model.feature_extractor.feature_extractor


# ---------------------------------------------------------------------------------------------------
# Backbone weights


def _hub_file(backbone: str) -> tuple[str, str]:
    """(Hugging Face repo, file) of timm's default ImageNet weights for ``backbone``."""
    with _anomalib_imported():
        import timm

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None or not cfg.hf_hub_id:
        raise DefectkitError(
            f"--backbone {backbone}: timm has no ImageNet weights for it on the Hugging Face hub; "
            "pass --backbone-weights PATH or none"
        )
    return cfg.hf_hub_id, "model.safetensors"


def _hub_reachable(endpoint: str, timeout: float) -> str | None:
    """None when a TCP connection to the hub opens within ``timeout`` seconds, else why not.

    The name lookup runs in a thread with the same deadline: ``getaddrinfo`` has no timeout of its
    own, and it is what makes an offline machine wait."""
    parsed = urllib.parse.urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme != "http" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}: {exc.strerror or exc}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"{host}: no answer within {timeout:g} s"


def imagenet_weights_file(backbone: str) -> Path:
    """timm's ImageNet weights of ``backbone``: the Hugging Face cache's copy, else downloaded.

    Offline (``DEFECTKIT_OFFLINE`` / ``HF_HUB_OFFLINE`` set, or the hub unreachable within
    :data:`HUB_CHECK_TIMEOUT_S`) this fails in seconds with a message that names the file and the
    option that takes a local copy, instead of timm's retries (about 47 s)."""
    require_anomalib()
    repo, filename = _hub_file(backbone)
    with _anomalib_imported():
        import huggingface_hub
        from huggingface_hub import constants

    for name in (filename, "pytorch_model.bin"):
        cached = huggingface_hub.try_to_load_from_cache(repo, name)
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    where = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    advice = (
        f"download {filename} of https://huggingface.co/{repo} into the Hugging Face cache "
        f"(`hf download {repo} {filename}`), or pass --backbone-weights PATH (a timm/torchvision {backbone} "
        "state dict) or --backbone-weights none (random init)"
    )
    offline = [v for v in ("DEFECTKIT_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(v, "") not in ("", "0")]
    if offline:
        raise DefectkitError(
            f"{where}: timm's ImageNet weights for {backbone} are not cached and {offline[0]} is set; {advice}"
        )
    problem = _hub_reachable(constants.ENDPOINT, HUB_CHECK_TIMEOUT_S)
    if problem is not None:
        raise DefectkitError(
            f"{where}: timm's ImageNet weights for {backbone} are not cached and the hub is unreachable ({problem}); {advice}"
        )
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename, etag_timeout=HUB_CHECK_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds (HTTP, timeouts, missing entry)
        raise DefectkitError(
            f"{where}: could not download {repo}/{filename} ({_first_line(exc)}); {advice}"
        ) from None


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a file ``torch.save`` wrote (loaded with
    ``weights_only=True``); a checkpoint holding it under ``state_dict`` or ``model`` is unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with _anomalib_imported():
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        if not path.is_file():
            raise DefectkitError(f"{path}: no such {what}")
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, *LOAD_ERRORS) as exc:
            raise DefectkitError(f"{path}: not a loadable {what} ({_first_line(exc)})") from None
    state = load_weights_only(path, what)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DefectkitError(f"{path}: not a {what} (expected a dict of tensors)")
    return state


def load_backbone(network: nn.Module, state: dict[str, torch.Tensor], source: str, backbone: str) -> None:
    """Load a timm / torchvision state dict of the whole classifier into the feature network that
    anomalib built from it (which keeps only the layers it extracts; ``fc`` and later layers in the
    file are not needed). Every tensor the network has must be in the file with its shape; a
    ``module.`` prefix (DataParallel) is dropped. timm's feature wrapper names nested modules with
    ``_`` for ``.`` (``blocks_0``), so both spellings are looked up."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    wanted = network.state_dict()
    found, used, missing, wrong = {}, set(), [], []
    for key, tensor in wanted.items():
        head, _, rest = key.partition(".")
        candidates = (key, f"{head.replace('_', '.')}.{rest}" if rest else head.replace("_", "."))
        name = next((c for c in candidates if c in state), None)
        if name is None:
            missing.append(key)
        elif state[name].shape != tensor.shape:
            wrong.append(f"{key} {tuple(state[name].shape)} != {tuple(tensor.shape)}")
        else:
            found[key], _ = state[name], used.add(name)
    # A deeper network of the same family (resnet34 for resnet18) holds every tensor asked for; its
    # extra blocks inside the kept layers give it away.
    heads = {key.partition(".")[0] for key in wanted}
    extra = [
        k
        for k in state
        if k not in used and (k.split(".")[0] in heads or "_".join(k.split(".")[:2]) in heads)
    ]
    if missing or wrong or extra:
        problem = (
            f"missing {', '.join(missing[:3])}" if missing
            else f"wrong shapes: {', '.join(wrong[:2])}" if wrong
            else f"it has layers {backbone} has not: {', '.join(extra[:3])}"
        )  # fmt: skip
        raise DefectkitError(
            f"{source}: not a {backbone} state dict ({problem}); pass the weights of --backbone {backbone}"
        )
    network.load_state_dict(found)


# ---------------------------------------------------------------------------------------------------
# Module state (defectkit's model.pt holds a plain state dict, never anomalib's Lightning pickle)


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``module.state_dict()`` saved by :func:`module_state`. Fitted buffers that start empty
    (PaDiM's Gaussian, PatchCore's memory bank) are given the saved shapes first."""
    own = module.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape and own[key].numel() == 0:
            owner_name, _, name = key.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            if name in owner._buffers:
                owner._buffers[name] = torch.empty_like(tensor)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise DefectkitError(
            f"{source}: the weights do not fit the model it names ({_first_line(exc)})"
        ) from None


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors, on the CPU (what model.pt and last.pt keep)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------
# Batches, training, inference


def image_batch(items: list[dict]) -> Any:
    """Collate :class:`defectkit.anomaly.data.ImageDataset` items into anomalib's ``ImageBatch``."""
    from anomalib.data import ImageBatch

    return ImageBatch(
        image=torch.stack([item["image"] for item in items]),
        gt_label=torch.tensor([item["label"] for item in items], dtype=torch.long),
        gt_mask=torch.stack([item["mask"] for item in items]),
        image_path=[item["path"] for item in items],
    )


def lightning_device(device: Device) -> dict[str, Any]:
    """Lightning's ``accelerator`` and ``devices`` for a parsed ``--device``."""
    if device.kind == "cuda":
        return {"accelerator": "gpu", "devices": [device.gpus[0]]}
    return {"accelerator": device.kind, "devices": 1}


def fit(
    module: nn.Module,
    loader: Any,
    *,
    epochs: int,
    device: Device,
    progress: bool,
    resume: dict | None = None,
    epoch_done: Callable[[int, dict], None] | None = None,
) -> None:
    """Train ``module`` with a Lightning ``Trainer`` for ``epochs`` epochs (PaDiM / PatchCore: their
    single pass, which fits the memory bank at its end).

    ``resume``: ``{"epoch": n, "optimizers": [...], "schedulers": [...]}`` from a last.pt: the
    optimiser and schedule states are put back when training starts and ``epochs`` more run.
    ``epoch_done(epoch, states)`` is called after each epoch (1-based, counting resumed ones) with
    the optimiser and scheduler states (for last.pt) and the epoch's logged ``metrics`` (the loss).
    Nothing is written anywhere else: no logger, no checkpoint callback, and Lightning's root folder
    is a temporary one removed afterwards."""
    with _anomalib_imported():
        from lightning.pytorch import Callback, Trainer

    done_before = int(resume["epoch"]) if resume else 0

    class _Epochs(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            if resume:
                for optimizer, saved in zip(trainer.optimizers, resume["optimizers"]):
                    optimizer.load_state_dict(saved)
                for config, saved in zip(trainer.lr_scheduler_configs, resume["schedulers"]):
                    config.scheduler.load_state_dict(saved)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if epoch_done is not None:
                epoch_done(
                    done_before + trainer.current_epoch + 1,
                    {
                        "optimizers": [o.state_dict() for o in trainer.optimizers],
                        "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
                        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                    },
                )

    own = {
        k: v for k, v in module.trainer_arguments.items() if k not in ("max_epochs", "devices", "max_steps")
    }
    with tempfile.TemporaryDirectory(prefix="defectkit-lightning-") as root, quiet_lightning(not progress):
        trainer = Trainer(**{
            **own, **lightning_device(device), "max_epochs": epochs, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": progress, "enable_model_summary": False, "default_root_dir": root,
            "num_sanity_val_steps": 0, "limit_val_batches": 0, "callbacks": [_Epochs()],
        })  # fmt: skip
        with _ctrl_c_stays_ctrl_c():
            trainer.fit(module, datamodule=_datamodule(loader))


def _datamodule(loader: Any) -> Any:
    """The train loader as a LightningDataModule: EfficientAD reads its batch size and loader from
    ``trainer.datamodule`` (its training is at batch 1, and its schedule counts the loader's steps)."""
    from lightning.pytorch import LightningDataModule

    class _Loader(LightningDataModule):
        train_batch_size = loader.batch_size

        def train_dataloader(self):
            return loader

    return _Loader()


@contextlib.contextmanager
def _ctrl_c_stays_ctrl_c() -> Iterator[None]:
    """Lightning answers Ctrl-C with ``sys.exit(1)`` and ignores SIGINT from then on; defectkit's
    commands end an interrupted run with their own message and status 130 (``cli_entry``), so the
    KeyboardInterrupt is given back and the SIGINT handler restored."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


@torch.inference_mode()
def infer(module: nn.Module, images: torch.Tensor, sizes: list[tuple[int, int]], device: torch.device):
    """Raw image scores and anomaly maps of a batch, each map resized (bilinear) from the model's
    input size back to its image's own ``(height, width)``.

    Returns ``(scores: float64 array (N,), maps: list of float32 HxW arrays)``."""
    module.eval()
    out = module(images.to(device))
    maps = out.anomaly_map
    if maps.ndim == 3:
        maps = maps[:, None]
    scores = out.pred_score.reshape(-1).double().cpu().numpy()
    full = [
        F.interpolate(maps[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
        .cpu()
        .numpy()
        for i, size in enumerate(sizes)
    ]
    return scores, full
