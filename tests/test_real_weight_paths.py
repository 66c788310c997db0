"""The paths a user with internet takes on their first command, run offline on official-format files.

No pretrained weights are reachable here, so these files hold random weights, but each is written in
the official format and placed where the user's command looks for it:

- ultralytics hub checkpoints ``yolov8s-worldv2.pt``, ``yolov8n.pt``, ``yolov8n-seg.pt``: a model built
  from ultralytics' own yaml, saved as ultralytics finishes a hub file (``strip_optimizer``: the
  ``model`` module in half precision, ``train_args``, ``date``, ``version`` ...), in the weights cache
  ``resolve_model`` reads (``<$DEFECTKIT_CACHE>/ultralytics/weights``);
- SAM's ``sam_vit_b_01ec64.pth``: the state dict of segment-anything's ``vit_b``, in
  ``$DEFECTKIT_CACHE`` where ``--model vit_b`` fetches it;
- torchvision's ImageNet ResNet-18, ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``;
- CLIP ViT-B/32 (``ViT-B-32.pt``, a state dict ``clip.load`` reads) in the weights cache's ``clip/``.
  Its text tower has ViT-B/32's exact sizes (what YOLO-World reads); its image tower, which nothing
  here runs, is shrunk to keep the file small.

Then ``detect embed`` (with the clip extra), ``detect train --model yolov8s-worldv2.pt``, ``classify
train --weights imagenet``, ``segment train --model vit_b`` and ``defectkit benchmark --fast`` with
those names run offline (``DEFECTKIT_OFFLINE=1``, see conftest.py), on a small category: vit_b
encodes each 1024-px image for tens of seconds on a CPU, so the data set has one defect image per
split, and ``segment train`` reads the embeddings the benchmark's SAM rows cached for the same image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from segment_anything import sam_model_registry

from defectkit.classify.cli import main as classify_main
from defectkit.cli import main as defectkit_main
from defectkit.convert import convert_category
from defectkit.detect import embeddings as emb
from defectkit.detect._ultralytics import resolve_model, ultralytics_patched, weights_dir
from defectkit.detect.cli import main as detect_main
from defectkit.sample import write_category
from defectkit.segment.cli import main as segment_main
from defectkit.segment.models import CHECKPOINT_URLS, checkpoint_fingerprint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HUB_MODELS = {  # hub name: the architecture it is built from
    "yolov8s-worldv2.pt": "yolov8s-worldv2.yaml",
    "yolov8n.pt": "yolov8n.yaml",
    "yolov8n-seg.pt": "yolov8n-seg.yaml",
}
RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1 file name
PROMPTS = "hole=a hole in wood"


# --------------------------------------------------------------- official-format files, random weights


def save_hub_checkpoint(architecture: str, dest: Path) -> Path:
    """A hub checkpoint as ultralytics releases one: trained on COCO's 80 classes, then finished by
    ``strip_optimizer`` (EMA model as ``model``, half precision, ``train_args``, date, version)."""
    with ultralytics_patched():
        from ultralytics.cfg import DEFAULT_CFG_DICT
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel, WorldModel
        from ultralytics.utils import ROOT, YAML
        from ultralytics.utils.torch_utils import strip_optimizer

        kind = (
            WorldModel
            if "world" in architecture
            else SegmentationModel
            if "seg" in architecture
            else DetectionModel
        )
        torch.manual_seed(0)
        model = kind(architecture, nc=80, verbose=False)
        model.names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
        task = "segment" if kind is SegmentationModel else "detect"
        train_args = {
            **DEFAULT_CFG_DICT,
            "task": task,
            "model": architecture,
            "data": "coco.yaml",
            "epochs": 300,
        }
        model.args = train_args
        dest.parent.mkdir(parents=True, exist_ok=True)
        # What the trainer's last epoch leaves (see BaseTrainer.save_model), then the release step.
        torch.save({"epoch": 299, "best_fitness": 0.5, "model": None, "ema": model, "updates": 1,
                    "optimizer": None, "train_args": train_args}, dest)  # fmt: skip
        strip_optimizer(dest)
    return dest


def save_sam_vit_b(dest: Path) -> Path:
    """``sam_vit_b_01ec64.pth``: the plain state dict of segment-anything's vit_b."""
    torch.manual_seed(0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam_model_registry["vit_b"]().state_dict(), dest)
    return dest


def save_resnet18(dest: Path) -> Path:
    """torchvision's ImageNet ResNet-18 file: the state dict of ``torchvision.models.resnet18()``."""
    torch.manual_seed(0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18().state_dict(), dest)
    return dest


def save_clip_vit_b32(dest: Path) -> Path:
    """A CLIP state dict with ViT-B/32's text tower (width 512, 12 layers, 8 heads, 77 tokens, the BPE
    vocabulary, 512-d output), fp16 as OpenAI ships it; the unused image tower is one small layer."""
    clip = emb._import_clip()
    torch.manual_seed(0)
    model = clip.model.CLIP(
        embed_dim=512, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
        context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12,
    )  # fmt: skip
    clip.model.convert_weights(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), dest)
    return dest


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Every official-format file where the user's commands look, in a private cache and torch home."""
    root = tmp_path_factory.mktemp("official")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEFECTKIT_CACHE", str(root / "cache"))
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        files = {name: save_hub_checkpoint(arch, weights_dir() / name) for name, arch in HUB_MODELS.items()}
        files["sam"] = save_sam_vit_b(root / "cache" / Path(CHECKPOINT_URLS["vit_b"]).name)
        files["resnet18"] = save_resnet18(Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE)
        files["clip"] = save_clip_vit_b32(weights_dir() / "clip" / Path(emb.CLIP_WEIGHTS_URL).name)
        yield files


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """One defect type, three defect images: one each in train, val and test after convert's split."""
    root = tmp_path_factory.mktemp("small")
    write_category(
        root, "wood", size=(64, 64), n_train_good=3, n_test_good=3, n_per_defect=3, defects=("hole",)
    )
    return root


@pytest.fixture(scope="module")
def small_data(small_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_converted")
    convert_category(small_root, "wood", out, to=("all",), progress=False)
    return out / "wood"


def run(main, argv) -> None:
    code = main([str(a) for a in argv])
    assert code in (0, None)


# ----------------------------------------------------------------------------------------- the tests


def test_hub_names_resolve_to_the_weights_cache_and_open(official):
    with ultralytics_patched():
        from ultralytics import YOLO

        for name, task in (
            ("yolov8s-worldv2.pt", "detect"),
            ("yolov8n.pt", "detect"),
            ("yolov8n-seg.pt", "segment"),
        ):
            path = resolve_model(name)
            assert Path(path) == official[name]
            yolo = YOLO(path)
            assert yolo.task == task and len(yolo.names) == 80
            released = torch.load(path, map_location="cpu", weights_only=False)  # ultralytics' own pickle
            assert {"model", "train_args", "date", "version", "epoch"} <= set(released)
            assert released["optimizer"] is None and released["epoch"] == -1
            assert next(released["model"].parameters()).dtype == torch.float16  # as released: half precision


@pytest.fixture(scope="module")
def clip_embeddings_file(official, small_data, tmp_path_factory) -> Path:
    """``detect embed`` with the clip extra, CLIP read from the weights cache (offline)."""
    out = tmp_path_factory.mktemp("embed") / "text_embeddings.pt"
    run(
        detect_main,
        ["embed", "--data", small_data / "yolo" / "data.yaml", "--prompts", PROMPTS, "--out", out],
    )
    return out


def clip_text_tower(state: dict, tokens: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's text encoder written out from its state dict (fp32): token and position
    embeddings, pre-LN residual blocks (causal multi-head attention, QuickGELU MLP), final LN, the
    end-of-text token's feature projected, unit length. Independent of any `clip` package's code."""
    w = {k: v.float() for k, v in state.items()}
    width, heads = w["ln_final.weight"].shape[0], w["ln_final.weight"].shape[0] // 64
    layers = len({k.split(".")[2] for k in w if k.startswith("transformer.resblocks.")})
    x = w["token_embedding.weight"][tokens] + w["positional_embedding"]
    n, length, _ = x.shape
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps=1e-5)
        q, k, v = F.linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, -1).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, length, width)
        x = x + F.linear(a, w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"])
        h = F.layer_norm(x, (width,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps=1e-5)
        h = F.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + F.linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (width,), w["ln_final.weight"], w["ln_final.bias"], eps=1e-5)
    out = x[torch.arange(n), tokens.argmax(dim=-1)] @ w["text_projection"]
    return out / out.norm(dim=-1, keepdim=True)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # inside clip.load
def test_clip_extra_gives_the_embeddings_of_ultralytics_text_model(official, clip_embeddings_file):
    table = emb.load(clip_embeddings_file)
    assert table.model == emb.CLIP_VARIANT and table.prompts == ["a hole in wood"]
    with ultralytics_patched():
        from ultralytics.nn.text_model import CLIP  # YOLO-World's own text encoder, on the same file

        theirs = CLIP(str(official["clip"]), torch.device("cpu"))
        expected = theirs.encode_text(theirs.tokenize(table.prompts)).float()
    torch.testing.assert_close(table.embeddings, expected)
    state = torch.load(official["clip"], map_location="cpu", weights_only=True)
    reference = clip_text_tower(state, emb._import_clip().tokenize(table.prompts))
    torch.testing.assert_close(table.embeddings, reference, atol=1e-4, rtol=1e-4)


@pytest.fixture()
def fake_clip(tmp_path, monkeypatch):
    """The package index's `clip` (a clipboard manager) installed in place of OpenAI's."""
    package = tmp_path / "site" / "clip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A clipboard manager."""\n\ndef copy(text):\n    return text\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "clip", raising=False)
    return package


def test_a_wrong_clip_module_is_named_with_the_package_to_install(fake_clip, small_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        detect_main(
            ["embed", "--data", str(small_data / "yolo" / "data.yaml"), "--out", str(tmp_path / "e.pt")]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert str(fake_clip / "__init__.py") in err and "clipboard manager" in err
    assert 'pip install "defectkit[clip]"' in err and "\n" not in err
    assert not (tmp_path / "e.pt").exists()


def test_without_clip_the_error_names_the_extra(monkeypatch, small_data, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "clip", None)  # what `import clip` finds when it is not installed
    with pytest.raises(SystemExit):
        detect_main(
            ["embed", "--data", str(small_data / "yolo" / "data.yaml"), "--out", str(tmp_path / "e.pt")]
        )
    assert 'CLIP is not installed: pip install "defectkit[clip]"' in capsys.readouterr().err


def test_world_hub_checkpoint_trains_with_the_clip_embeddings(
    official, clip_embeddings_file, small_data, tmp_path
):
    project = tmp_path / "runs"
    run(detect_main, ["train", "--data", small_data / "yolo" / "data.yaml", "--model", "yolov8s-worldv2.pt",
                      "--text-embeddings", clip_embeddings_file, "--prompts", PROMPTS, "--epochs", "1",
                      "--imgsz", "64", "--batch", "4", "--device", "cpu", "--project", project, "--name", "world",
                      "--quiet", "workers=0", "plots=False", "warmup_epochs=0", "freeze=1"])  # fmt: skip
    run_dir = project / "world"
    ckpt = torch.load(run_dir / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["train_args"]["model"] == str(official["yolov8s-worldv2.pt"])  # found in the weights cache
    hub = torch.load(official["yolov8s-worldv2.pt"], map_location="cpu", weights_only=False)
    frozen = "model.0.conv.weight"  # freeze=1 keeps layer 0 as loaded: the hub weights were transferred
    torch.testing.assert_close(ckpt["model"].state_dict()[frozen], hub["model"].state_dict()[frozen])
    assert ckpt["model"].names == {0: "hole"}
    used = emb.load(run_dir / emb.RUN_FILE)
    torch.testing.assert_close(used.embeddings, emb.load(clip_embeddings_file).embeddings)


def test_quiet_train_prints_no_ultralytics_configuration(official, small_data, tmp_path, capfd):
    run(detect_main, ["train", "--data", small_data / "yolo" / "data.yaml", "--model", "yolov8n.pt", "--epochs", "1",
                      "--imgsz", "64", "--batch", "4", "--device", "cpu", "--project", tmp_path, "--name", "v8",
                      "--quiet", "workers=0", "plots=False", "val=False"])  # fmt: skip
    out = capfd.readouterr()
    assert "engine/trainer" not in out.out + out.err and "Epoch" not in out.out + out.err
    assert (tmp_path / "v8" / "weights" / "last.pt").is_file()


def test_classify_train_from_the_imagenet_file_in_torch_hub(official, small_data, tmp_path):
    out = tmp_path / "cls"
    run(classify_main, ["train", "--data", small_data / "classify", "--out", out, "--weights", "imagenet",
                        "--freeze", "fc", "--epochs", "1", "--batch", "4", "--image-size", "32", "--device", "cpu",
                        "--quiet"])  # fmt: skip
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    imagenet = torch.load(official["resnet18"], map_location="cpu", weights_only=True)
    torch.testing.assert_close(best["model"]["conv1.weight"], imagenet["conv1.weight"])  # frozen backbone


@pytest.fixture(scope="module")
def benchmark_run(official, small_root, tmp_path_factory) -> Path:
    """``defectkit benchmark --fast`` naming the official models: hub detectors, SAM vit_b from the
    cache, ImageNet ResNet-18, YOLO-World's prompts embedded by CLIP (the data set's default file);
    every supervised row."""
    out = tmp_path_factory.mktemp("bench") / "run"
    # The supervised rows, whose official files this module fakes; the anomaly rows' weight paths
    # (timm's ImageNet files, EfficientAD's teacher) are tests/test_anomaly.py's.
    rows = "yolo-world-ft,yolo-world-zs,yolo-closed,sam-gt-base,sam-gt-ft,sam-det,yolo-seg,classifier"
    run(defectkit_main, ["benchmark", "wood", "--root", small_root, "--out", out, "--fast", "--rows", rows,
                         "--detector", "yolov8s-worldv2.pt", "--closed-detector", "yolov8n.pt",
                         "--seg-detector", "yolov8n-seg.pt", "--sam-model", "vit_b", "--classifier-weights",
                         "imagenet", "--prompts", PROMPTS, "--imgsz", "64", "--batch", "4", "--device", "cpu",
                         "--quiet"])  # fmt: skip
    return out


def test_benchmark_fast_runs_every_row_on_the_official_names(official, benchmark_run):
    config = json.loads((benchmark_run / "run.json").read_text())["config"]
    assert (config["detector"], config["sam_model"], config["classifier_weights"]) == (
        "yolov8s-worldv2.pt", "vit_b", "imagenet")  # fmt: skip
    board = json.loads((benchmark_run / "report" / "leaderboard.json").read_text())
    rows = board["rows"]
    assert set(rows) == {"yolo-world-ft", "yolo-world-zs", "yolo-closed", "sam-gt-base", "sam-gt-ft", "sam-det",
                         "yolo-seg", "classifier"}  # fmt: skip
    text = benchmark_run / "data" / "wood" / "yolo" / emb.default_path("").name
    assert emb.load(text).model == emb.CLIP_VARIANT  # made once by CLIP from the cached file
    world = torch.load(benchmark_run / "rows" / "yolo-world-ft" / "train" / "weights" / "last.pt",
                       map_location="cpu", weights_only=False)  # fmt: skip
    assert world["train_args"]["model"] == str(official["yolov8s-worldv2.pt"])
    sam = torch.load(benchmark_run / "rows" / "sam-gt-ft" / "train" / "last.pt", map_location="cpu", weights_only=True)
    assert sam["config"]["identity"] == f"vit_b:{checkpoint_fingerprint(official['sam'])}"  # the cached file


def test_segment_train_vit_b_from_the_official_checkpoint(official, benchmark_run, tmp_path):
    """One image, one step, with the encoder's output the benchmark cached for the same image and
    weights (vit_b takes tens of seconds an image on a CPU); the cache key holds the file's fingerprint."""
    data = benchmark_run / "data" / "wood" / "sam"
    cache = benchmark_run / "cache" / "sam_embeddings"
    out = tmp_path / "sam"
    before = sorted(p.name for p in cache.rglob("*.npy"))
    assert before, "the benchmark cached no SAM embeddings"
    run(segment_main, ["train", "--data", data, "--model", "vit_b", "--checkpoint", official["sam"],
                       "--epochs", "1", "--max-steps", "1", "--no-val", "--cache-dir", cache, "--out", out,
                       "--device", "cpu", "--quiet"])  # fmt: skip
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["config"]["identity"] == f"vit_b:{checkpoint_fingerprint(official['sam'])}"
    assert sorted(p.name for p in cache.rglob("*.npy")) == before  # the benchmark's entries, same key
