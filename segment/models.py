"""SAM model registry: the official ``vit_b`` / ``vit_l`` / ``vit_h`` and a small random ``vit_tiny``.

Like segment-anything's ``sam_model_registry``: a name maps to a builder. The official builders come
from segment-anything itself; ``vit_tiny`` is assembled from the same classes (ImageEncoderViT,
PromptEncoder, MaskDecoder with a TwoWayTransformer) at a 256-pixel input, so tests and demos run
every code path of vit_b (Sam.preprocess, ResizeLongestSide, postprocess_masks) in seconds on a CPU.

A model's *identity* (name + a fingerprint of its weights) keys the embedding cache and is stored in
fine-tuned checkpoints, so a decoder is never paired with an encoder it was not trained against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.build_sam import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import load_weights_only
from defectkit.core.weights import fetch
from defectkit.segment.catalog import CHECKPOINT_URLS

FINETUNE_FORMAT = "defectkit-sam-finetune"  # the "format" key of a fine-tuned checkpoint

# The image encoder's width tells the official models apart (used to name a wrong checkpoint).
_ENCODER_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


@dataclass(frozen=True)
class SamSpec:
    """What a registry name builds: the sizes that decide which weights fit."""

    name: str
    img_size: int
    encoder_embed_dim: int
    prompt_embed_dim: int
    official: bool  # True: weights come from an official checkpoint (or --random-weights)


def _build_vit_tiny() -> Sam:
    """A ~0.56M-parameter SAM: the real classes at 256 px input, 16x16 embeddings, 64-d prompts."""
    img_size, patch, prompt_dim = 256, 16, 64
    grid = img_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=96,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=8,  # windowed + global attention, as in vit_b
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=256, num_heads=4),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=64,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


MODEL_REGISTRY: dict[str, tuple[SamSpec, Callable[[], Sam]]] = {
    "vit_tiny": (SamSpec("vit_tiny", 256, 96, 64, official=False), _build_vit_tiny),
    "vit_b": (SamSpec("vit_b", 1024, 768, 256, official=True), lambda: sam_model_registry["vit_b"]()),
    "vit_l": (SamSpec("vit_l", 1024, 1024, 256, official=True), lambda: sam_model_registry["vit_l"]()),
    "vit_h": (SamSpec("vit_h", 1024, 1280, 256, official=True), lambda: sam_model_registry["vit_h"]()),
}


@dataclass
class LoadedSam:
    """A built SAM plus what it is: ``identity`` names the exact weights (for caches and checks)."""

    sam: Sam
    spec: SamSpec
    identity: str
    random_init: bool = False  # random weights (vit_tiny, --random-weights), not a checkpoint

    def config(self) -> dict:
        return {**asdict(self.spec), "identity": self.identity}


def model_names() -> list[str]:
    return list(MODEL_REGISTRY)


def checkpoint_fingerprint(path: str | Path) -> str:
    """A cheap identity for a weights file: size + SHA-256 of its first and last MiB.

    Hashing a 2.5 GB vit_h file fully would cost seconds on every start; the ends and the size
    change whenever the weights do.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > (2 << 20):
            fh.seek(-(1 << 20), 2)
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def _spec_of_state_dict(state: dict) -> str | None:
    """Which registry model a SAM state dict fits, judged by the encoder's patch-embedding width."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor):
        return None
    if w.shape[0] == MODEL_REGISTRY["vit_tiny"][0].encoder_embed_dim:
        return "vit_tiny"
    return _ENCODER_WIDTH.get(int(w.shape[0]))


def load_state_checked(sam: Sam, spec: SamSpec, path: Path) -> None:
    """Load a full SAM state dict into ``sam``, with one-line errors for the usual mistakes."""
    state = load_weights_only(path, "SAM checkpoint")
    if isinstance(state, dict) and state.get("format") == FINETUNE_FORMAT:
        raise DefectkitError(
            f"{path}: a defectkit fine-tuned decoder, not a SAM checkpoint; pass it as --finetuned "
            f"and the base weights as --checkpoint"
        )
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # some trainers nest the weights
    if not isinstance(state, dict) or not any(str(k).startswith("image_encoder.") for k in state):
        raise DefectkitError(f"{path}: not a SAM checkpoint (no image_encoder.* weights)")
    found = _spec_of_state_dict(state)
    if found != spec.name:
        what = f"a SAM {found} checkpoint" if found else "a SAM checkpoint of an unknown size"
        fix = f"; pass --model {found}" if found else ""
        raise DefectkitError(f"{path}: {what}, but --model is {spec.name}{fix}")
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DefectkitError(
            f"{path}: does not fit {spec.name} ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {(missing or unexpected)[0]})"
        )



def build_sam(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LoadedSam:
    """Build a registry model, with weights.

    - ``checkpoint`` given: load it (must be a SAM checkpoint of this model type).
    - official model, no checkpoint, not ``random_weights``: download the official file to the
      defectkit cache (fails fast offline with the address and ``--checkpoint PATH`` advice).
    - ``vit_tiny`` or ``random_weights``: deterministic random weights from ``seed`` (tests,
      benchmarks, GPU checks; such masks mean nothing until fine-tuned).

    >>> m = build_sam("vit_tiny")  # doctest: +SKIP
    >>> m.sam.image_encoder.img_size, m.identity  # doctest: +SKIP
    (256, 'vit_tiny:random-0')
    """
    if name not in MODEL_REGISTRY:
        raise DefectkitError(f"--model {name}: unknown SAM model; known: {', '.join(MODEL_REGISTRY)}")
    spec, builder = MODEL_REGISTRY[name]
    if checkpoint is None and spec.official and not random_weights:
        checkpoint = fetch(CHECKPOINT_URLS[name], hint="pass --checkpoint PATH (or --random-weights)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = builder()
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise DefectkitError(f"{checkpoint}: no such checkpoint file")
        load_state_checked(sam, spec, checkpoint)
        identity = f"{name}:{checkpoint_fingerprint(checkpoint)}"
    else:
        identity = f"{name}:random-{seed}"
    sam.eval()
    sam.requires_grad_(False)
    return LoadedSam(sam.to(device), spec, identity, random_init=checkpoint is None)


def trainable_state(sam: Sam, train_prompt_encoder: bool) -> dict[str, dict[str, torch.Tensor]]:
    """The weights a fine-tune changes (CPU copies): the mask decoder, plus the prompt encoder if trained."""
    out = {"mask_decoder": {k: v.detach().cpu().clone() for k, v in sam.mask_decoder.state_dict().items()}}
    if train_prompt_encoder:
        out["prompt_encoder"] = {k: v.detach().cpu().clone() for k, v in sam.prompt_encoder.state_dict().items()}
    return out


def load_finetuned(path: str | Path) -> dict:
    """Read a fine-tuned checkpoint (``weights_only``) and check it is one."""
    path = Path(path)
    ckpt = load_weights_only(path, "fine-tuned checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FINETUNE_FORMAT:
        raise DefectkitError(f"{path}: not a defectkit fine-tuned SAM checkpoint (written by `segment train`)")
    return ckpt


def apply_finetuned(model: LoadedSam, ckpt: dict, path: str | Path) -> None:
    """Put a fine-tuned decoder (and prompt encoder) into ``model``; refuse a different base model."""
    cfg = ckpt["config"]
    if cfg["name"] != model.spec.name:
        raise DefectkitError(f"{path}: fine-tuned on {cfg['name']}, but --model is {model.spec.name}")
    if cfg["identity"] != model.identity:
        raise DefectkitError(
            f"{path}: fine-tuned on base weights {cfg['identity']}, but the loaded base is {model.identity}; "
            f"pass the same --checkpoint (or --random-weights/--seed) used for training"
        )
    model.sam.mask_decoder.load_state_dict(ckpt["mask_decoder"])
    if "prompt_encoder" in ckpt:
        model.sam.prompt_encoder.load_state_dict(ckpt["prompt_encoder"])
