"""What an ``anomaly`` run is configured with: the models by name with their defaults
(``MODEL_REGISTRY``) and :class:`AnomalyTrainConfig`.

Plain data, apart from ``anomaly.models``, which builds each model with anomalib (torch, seconds to
import), so that ``anomaly --help`` lists every option and default without loading either.
tests/test_anomaly.py checks that every name here has a builder there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import list_images

BACKBONE_WEIGHTS = ("imagenet", "none")  # or a path


@dataclass
class AnomalyTrainConfig:
    """Everything an ``anomaly train`` run depends on; stored in model.pt and last.pt (plain types).

    Zero / empty values mean "the model's default" (:meth:`resolved` fills them in).

    >>> cfg = AnomalyTrainConfig(data="datasets/converted/wood", out="runs/anomaly/padim").resolved()
    >>> cfg.model, cfg.backbone, cfg.layers, cfg.epochs, cfg.batch
    ('padim', 'resnet18', ['layer1', 'layer2', 'layer3'], 1, 32)
    """

    data: str
    out: str = "runs/anomaly/train"
    model: str = "padim"
    backbone: str = ""
    layers: list[str] = field(default_factory=list)
    backbone_weights: str = "imagenet"
    imgsz: int = 256
    epochs: int = 0
    batch: int = 0
    n_features: int = 0  # padim: features kept after the random projection (0: anomalib's default)
    coreset_ratio: float = 0.1  # patchcore: the share of patch features kept in the memory bank
    anomaly_source: str = ""  # draem: "perlin" or a folder of texture images (required)
    teacher_weights: str = ""  # efficient_ad: the teacher's state dict ("": anomalib's file, fetched once)
    imagenet_dir: str = ""  # efficient_ad: ImageFolder tree of ImageNet(ette) images (required)
    model_size: str = "small"  # efficient_ad: small or medium
    seed: int = 0
    device: str = "auto"

    @property
    def spec(self) -> ModelSpec:
        try:
            return MODEL_REGISTRY[self.model]
        except KeyError:
            raise DefectkitError(f"--model {self.model}: choose one of {', '.join(MODEL_REGISTRY)}") from None

    def resolved(self) -> AnomalyTrainConfig:
        """A copy with the model's defaults filled in (backbone, layers, epochs, batch)."""
        spec = self.spec
        return replace(
            self,
            backbone=self.backbone or spec.backbone,
            layers=list(self.layers) or list(spec.layers),
            epochs=self.epochs or spec.epochs,
            batch=self.batch or spec.batch,
        )

    def check(self) -> None:
        """One-line errors for options that cannot work, before any data is read."""
        spec = self.spec
        for name in ("imgsz", "epochs", "batch"):
            if getattr(self, name) < 1:
                raise DefectkitError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.imgsz < 32:
            raise DefectkitError(f"--imgsz {self.imgsz}: below 32 px the backbones have no feature map left")
        if spec.one_pass and self.epochs != 1:
            raise DefectkitError(
                f"--epochs {self.epochs}: {self.model} fits its memory bank in one pass; drop --epochs"
            )
        if (
            spec.backbone
            and self.backbone_weights not in BACKBONE_WEIGHTS
            and not Path(self.backbone_weights).is_file()
        ):
            raise DefectkitError(
                f"{self.backbone_weights}: no such file (--backbone-weights takes imagenet, none or a state dict file)"
            )
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise DefectkitError(f"--coreset-ratio {self.coreset_ratio}: must be in (0, 1]")
        if self.model == "draem" and not self.anomaly_source:
            raise DefectkitError(
                "--model draem needs --anomaly-source: 'perlin' (noise only) or a folder of texture images "
                "(the paper's DTD: https://www.robots.ox.ac.uk/~vgg/data/dtd/)"
            )
        if self.model == "efficient_ad":
            self._check_efficient_ad()
        if self.model == "draem" and self.anomaly_source != "perlin":
            if not Path(self.anomaly_source).is_dir():
                raise DefectkitError(
                    f"{self.anomaly_source}: no such folder (--anomaly-source takes 'perlin' or a folder of texture images)"
                )
            list_images(self.anomaly_source)  # one-line error when no image is below it

    def _check_efficient_ad(self) -> None:
        if self.model_size not in ("small", "medium"):
            raise DefectkitError(f"--model-size {self.model_size}: choose small or medium")
        if self.batch != 1:
            raise DefectkitError(
                f"--batch {self.batch}: EfficientAD trains one image at a time (the paper's); drop --batch"
            )
        if self.imgsz < 256:
            raise DefectkitError(f"--imgsz {self.imgsz}: EfficientAD's autoencoder needs at least 256 px")
        if not self.imagenet_dir:
            raise DefectkitError(
                "--model efficient_ad needs --imagenet-dir: a folder of class folders of ImageNet images for its "
                "penalty loss (the paper's ImageNet; anomalib uses ImageNette: https://github.com/fastai/imagenette)"
            )
        folder = Path(self.imagenet_dir)
        classes = [d for d in sorted(folder.iterdir()) if d.is_dir()] if folder.is_dir() else []
        if not classes:
            raise DefectkitError(
                f"{folder}: not a folder of class folders (--imagenet-dir takes an ImageFolder tree)"
            )
        list_images(folder)
        if self.teacher_weights and not Path(self.teacher_weights).is_file():
            raise DefectkitError(f"{self.teacher_weights}: no such file (--teacher-weights)")

    def training_options(self) -> dict:
        """The options that decide what a run learns (all but where it runs: ``out`` and ``device``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "device")}

    @classmethod
    def from_dict(cls, values: dict) -> AnomalyTrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: a model's name and its defaults (``models.BUILDERS`` builds it). ``one_pass``:
    fitted in a single pass over the good images (a memory bank), so there are no epochs to resume."""

    name: str
    title: str
    backbone: str = ""
    layers: tuple[str, ...] = ()
    epochs: int = 1
    batch: int = 32
    one_pass: bool = False


# Defaults are anomalib's and the papers': backbones and layers, DRAEM's 700 epochs. On a CPU, PatchCore
# with --backbone resnet18 stores and searches about five times fewer features than wide_resnet50_2.
MODEL_REGISTRY: dict[str, ModelSpec] = {
    "padim": ModelSpec("padim", "PaDiM", "resnet18", ("layer1", "layer2", "layer3"), one_pass=True),
    "patchcore": ModelSpec(
        "patchcore", "PatchCore", "wide_resnet50_2", ("layer2", "layer3"), one_pass=True
    ),
    "draem": ModelSpec("draem", "DRAEM", epochs=700, batch=8),
    # 70 epochs: anomalib's 70,000 steps at batch 1 over MVTec wood's 247 good images would be 283; on
    # defectkit's split (80% of them) 70 epochs take about 14,000 steps, a fifth of the paper's budget.
    "efficient_ad": ModelSpec("efficient_ad", "EfficientAD", epochs=70, batch=1),
}
