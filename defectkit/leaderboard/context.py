"""What every row of a benchmark shares: its settings, the converted data set, the ground truth of
the scored splits, and where each row writes.

Run folder layout (``--out``)::

    run.json                  settings, command, versions, split manifest hash (written first)
    data/<category>/          convert-mvtec's output (split.json, yolo/, yolo-seg/, coco/, sam/, classify/)
    rows/<row>/               a row's training run, predictions, evaluator reports ...
    rows/<row>/result.json    ... and its result, written atomically last: the "finished" marker
    cache/                    SAM embeddings and classifier images, shared by the rows
    report/                   report.md, report.html (self-contained), leaderboard.json, PNGs
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.core.layout import GOOD, class_of
from defectkit.core.torchio import parse_device


@dataclass
class BenchmarkConfig:
    """The settings of one benchmark (or demo) run; stored in ``run.json``."""

    root: Path
    category: str
    out: Path
    rows: list[str]
    device: str = "cpu"  # cpu, 0, 1, cuda:0 ... (mapped for ultralytics and torch)
    detector: str = "yolov8s-worldv2.pt"  # YOLO-World: .pt weights, hub name, or .yaml (random start)
    closed_detector: str = "yolov8n.pt"
    seg_detector: str = "yolov8n-seg.pt"
    text_embeddings: str | None = None  # None: the data set's file from `detect embed`; "random"; a path
    prompts: str | None = None
    sam_model: str = "vit_b"
    sam_checkpoint: str | None = None
    sam_random_weights: bool = False  # official SAM size with random weights (speed checks only)
    sam_lr: float | None = None  # SAM decoder learning rate; None: segment train's default
    yolo_args: list[str] = field(default_factory=list)  # further ultralytics training args, KEY=VALUE
    classifier_arch: str = "resnet18"
    classifier_weights: str = "imagenet"  # imagenet | none | path
    anomaly_backbone_weights: str = "imagenet"  # PaDiM/PatchCore features: imagenet | none | path
    anomaly_source: str = "perlin"  # DRAEM's synthetic anomalies: perlin or a folder of texture images
    epochs: int = 30  # every trained row, unless its family has its own below
    epochs_detector: int | None = None  # YOLO-World, closed-set YOLO, YOLO-seg (and sam-det's detector)
    epochs_sam: int | None = None  # SAM decoder fine-tuning
    epochs_classifier: int | None = None  # the ResNet baseline
    epochs_anomaly: int | None = None  # the anomaly models that train by epochs (DRAEM)
    imgsz: int = 640
    batch: int = 16
    seed: int = 0
    val_frac: float = 0.2
    test_frac: float = 0.2  # the defectkit protocol's; the others fix their test set by their rule
    protocol: str = "defectkit"  # convert-mvtec --protocol: defectkit, anomalydiffusion, fewshot:K
    bootstrap: int = 1000  # resamples of the test images per metric's 95% interval; 0: no intervals
    gallery: int = 6  # worst validation images drawn
    mask_score_threshold: float = 0.25  # results kept in a predicted mask union (detector-prompted rows)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    command: list[str] = field(default_factory=list)

    def epochs_for(self, family: str) -> int:
        """Training epochs of a row family (``detector``, ``sam``, ``classifier``): its own or ``epochs``."""
        own = getattr(self, f"epochs_{family}")
        return self.epochs if own is None else own

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    # -- devices: one --device, spelled the way each library wants it --------------------------------
    @property
    def ultralytics_device(self) -> str:
        """``cpu`` or a GPU index list (``0``) as ultralytics takes it.

        >>> BenchmarkConfig(Path("."), "wood", Path("o"), [], device="cuda:1").ultralytics_device
        '1'
        """
        return parse_device(self.device, check=False).ultralytics  # checked once, by the runner

    @property
    def torch_device(self) -> str:
        """``cpu`` or ``cuda:N`` as torch takes it.

        >>> BenchmarkConfig(Path("."), "wood", Path("o"), [], device="0").torch_device
        'cuda:0'
        """
        return parse_device(self.device, check=False).torch


@dataclass
class SplitTruth:
    """The ground truth of one split, from convert-mvtec's ``coco/<split>.json``."""

    split: str
    coco_path: Path
    coco: dict
    image_root: Path

    @cached_property
    def images(self) -> list[dict]:
        return sorted(self.coco["images"], key=lambda im: im["id"])

    @property
    def image_ids(self) -> list[int]:
        return [im["id"] for im in self.images]

    @property
    def file_names(self) -> list[str]:
        return [im["file_name"] for im in self.images]

    @cached_property
    def labels(self) -> list[int]:
        """1 for an image from a defect folder, 0 for a good one (MVTec's image-level label)."""
        return [int(class_of(name) != GOOD) for name in self.file_names]

    def path(self, file_name: str) -> Path:
        return self.image_root / file_name

    @property
    def paths(self) -> list[Path]:
        return [self.path(n) for n in self.file_names]

    @cached_property
    def annotations(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {i: [] for i in self.image_ids}
        for ann in self.coco["annotations"]:
            out.setdefault(ann["image_id"], []).append(ann)
        return out

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.coco["categories"], key=lambda c: c["id"])]


@dataclass
class RunContext:
    """Handed to every row: the settings, the converted data, the scored splits, earlier results."""

    config: BenchmarkConfig
    data: Path  # <out>/data/<category>
    results: dict[str, dict] = field(default_factory=dict)  # finished rows, by name

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def row_dir(self, name: str) -> Path:
        return self.out / "rows" / name

    @property
    def cache_dir(self) -> Path:
        return self.out / "cache"

    @cached_property
    def truth(self) -> dict[str, SplitTruth]:
        out = {}
        for split in ("val", "test"):
            path = self.data / "coco" / f"{split}.json"
            try:
                coco = json.loads(path.read_text())
            except FileNotFoundError:
                raise DefectkitError(f"{path}: missing; the converted data set is incomplete") from None
            out[split] = SplitTruth(split, path, coco, Path(coco["info"]["image_root"]))
        return out

    @property
    def yolo_yaml(self) -> Path:
        return self.data / "yolo" / "data.yaml"

    @property
    def yolo_seg_yaml(self) -> Path:
        return self.data / "yolo-seg" / "data.yaml"

    @property
    def sam_dir(self) -> Path:
        return self.data / "sam"

    @property
    def classify_dir(self) -> Path:
        return self.data / "classify"

    def rel(self, path: str | Path) -> str:
        """A path inside the run folder, relative to it (what result.json stores)."""
        return Path(path).resolve().relative_to(self.out.resolve()).as_posix()
