"""segment: SAM fine-tuning, embedding cache, predict and val, on the converted sample with the small
random ``vit_tiny`` (the real segment-anything classes), offline and on the CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import read_image, read_mask
from defectkit.core.rle import mask_to_rle, rle_to_mask

TINY = ["--model", "vit_tiny", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sam_cache")


@pytest.fixture(scope="module")
def sam_dir(converted) -> Path:
    return converted / "sam"


def _cli(argv):
    from defectkit.segment.cli import main

    return main([str(a) for a in argv])


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        _cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def trained_run(sam_dir, cache_dir, tmp_path_factory) -> Path:
    """One epoch of `segment train` on the sample with the default lr and loss (the end-to-end test and
    later tests share it)."""
    out = tmp_path_factory.mktemp("segrun") / "run"
    _cli(["train", "--data", sam_dir, *TINY, "--epochs", 1, "--out", out,
          "--cache-dir", cache_dir, "--quiet"])
    return out


def _train_subset(sam_dir: Path, tmp_path: Path, n_images: int) -> Path:
    """A sam/ folder whose train.jsonl holds the first ``n_images`` training images with defects."""
    subset = tmp_path / "sam"
    subset.mkdir()
    lines = [ln for ln in (sam_dir / "train.jsonl").read_text().splitlines() if json.loads(ln)["instances"]]
    (subset / "train.jsonl").write_text("\n".join(lines[:n_images]) + "\n")
    return subset


def _first_image_with_instances(sam_dir: Path, split: str = "val"):
    from defectkit.segment.data import read_sam_jsonl

    return next(r for r in read_sam_jsonl(sam_dir / f"{split}.jsonl") if r.instances)


# ---------------------------------------------------------------- models


def test_registry_builds_real_sam_classes_and_offline_checkpoint_fails_fast(tmp_path, monkeypatch):
    from segment_anything.modeling import MaskDecoder, Sam

    from defectkit.segment.models import build_sam

    tiny = build_sam("vit_tiny")
    assert isinstance(tiny.sam, Sam) and isinstance(tiny.sam.mask_decoder, MaskDecoder)
    assert tiny.sam.image_encoder.img_size == 256
    # Random weights are a function of the seed: the identity (cache key) is honest.
    again = build_sam("vit_tiny")
    assert tiny.identity == again.identity == "vit_tiny:random-0"
    assert torch.equal(tiny.sam.mask_decoder.iou_token.weight, again.sam.mask_decoder.iou_token.weight)
    monkeypatch.setenv("DEFECTKIT_CACHE", str(tmp_path))
    with pytest.raises(DefectkitError, match="sam_vit_b_01ec64.pth.*--checkpoint PATH"):
        build_sam("vit_b")


def test_the_cli_s_model_names_are_the_registry_s():
    """segment.catalog (plain data, read by `segment --help`) and the builders name the same models."""
    from defectkit.segment.catalog import CHECKPOINT_URLS, MODEL_NAMES
    from defectkit.segment.models import MODEL_REGISTRY

    assert tuple(MODEL_REGISTRY) == MODEL_NAMES
    assert {name for name, (spec, _) in MODEL_REGISTRY.items() if spec.official} == set(CHECKPOINT_URLS)


def test_wrong_checkpoints_get_clear_errors(tmp_path, trained_run):
    from defectkit.segment.models import build_sam

    vit_b_like = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, vit_b_like)
    with pytest.raises(DefectkitError, match="a SAM vit_b checkpoint, but --model is vit_tiny; pass --model vit_b"):
        build_sam("vit_tiny", vit_b_like)
    with pytest.raises(DefectkitError, match="fine-tuned decoder, not a SAM checkpoint; pass it as --finetuned"):
        build_sam("vit_tiny", trained_run / "last.pt")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DefectkitError, match="not a loadable SAM checkpoint"):
        build_sam("vit_tiny", junk)
    tiny_full = tmp_path / "tiny.pth"
    torch.save(build_sam("vit_tiny", seed=3).sam.state_dict(), tiny_full)
    loaded = build_sam("vit_tiny", tiny_full)
    assert loaded.identity.startswith("vit_tiny:") and "random" not in loaded.identity


# ---------------------------------------------------------------- embedding cache


def test_cached_embeddings_give_the_same_masks_as_fresh_ones(sam_dir, tmp_path):
    from defectkit.segment.embeddings import EmbeddingCache, ImageEncoder
    from defectkit.segment.models import build_sam
    from defectkit.segment.predict import Segmenter

    model = build_sam("vit_tiny", seed=1)
    rec = _first_image_with_instances(sam_dir)
    boxes = np.array([i.box_xyxy for i in rec.instances])
    fresh = Segmenter(ImageEncoder(model, cache=None))
    emb, osz, isz = fresh.encoder.embed(rec.image)
    fresh_masks, fresh_scores = fresh.masks_for(emb, osz, isz, boxes=boxes)

    cache = EmbeddingCache(tmp_path, model.identity, model.spec.img_size)
    writer = ImageEncoder(model, cache)
    writer.embed(rec.image)
    assert (writer.misses, writer.hits) == (1, 0)
    stored = np.load(next(cache.dir.glob("*.npy")))
    assert stored.dtype == np.float16 and stored.shape == tuple(emb.shape[1:])

    reader = Segmenter(ImageEncoder(model, cache))
    emb2, osz2, isz2 = reader.encoder.embed(rec.image)
    assert (reader.encoder.hits, reader.encoder.misses) == (1, 0) and (osz2, isz2) == (osz, isz)
    cached_masks, cached_scores = reader.masks_for(emb2, osz2, isz2, boxes=boxes)
    for a, b in zip(fresh_masks, cached_masks):
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union > 0.99
    np.testing.assert_allclose(fresh_scores, cached_scores, atol=1e-2)
    # A different model identity never reads these entries.
    other = ImageEncoder(build_sam("vit_tiny", seed=2), EmbeddingCache(tmp_path, "vit_tiny:random-2", 256))
    other.embed(rec.image)
    assert other.misses == 1


# ---------------------------------------------------------------- training


def test_one_epoch_end_to_end_writes_loadable_checkpoints(trained_run, capsys):
    last = torch.load(trained_run / "last.pt", map_location="cpu", weights_only=True)
    assert last["format"] == "defectkit-sam-finetune" and last["epoch"] == 0
    assert last["config"]["name"] == "vit_tiny" and "mask_decoder" in last and "prompt_encoder" not in last
    assert not any(k.startswith("image_encoder") for k in last["mask_decoder"])
    base, val = last["base_metrics"], last["metrics"]
    for m in (base, val):
        assert 0 <= m["mean_iou"] <= 1 and 0 <= m["segm_AP"] <= 1 and m["n_instances"] > 0
    rows = (trained_run / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and "train_loss" in rows[0] and "val_mean_iou" in rows[0]
    assert (trained_run / "curves.png").stat().st_size > 0
    # best.pt exists exactly when the fine-tune beat base SAM on validation.
    best = trained_run / "best.pt"
    assert best.is_file() == (val["mean_iou"] > base["mean_iou"])
    # A random decoder gets the random-init learning rate by default (see the next test).
    assert last["train_config"]["lr"] == 3e-3
    if best.is_file():
        ckpt = torch.load(best, map_location="cpu", weights_only=True)
        assert "optimizer" not in ckpt and ckpt["metrics"]["mean_iou"] == val["mean_iou"]


def test_default_loss_and_lr_do_not_collapse_to_empty_masks(sam_dir, cache_dir, tmp_path):
    from defectkit.segment.train import TrainConfig, train

    # The former defaults (lr 1e-4, foreground weight capped at 20) ended epoch 2 at a train area
    # ratio of 0.14 and val IoU 0 on this sample (segment/README.md, "Why these defaults").
    summary = train(TrainConfig(data=sam_dir, out=tmp_path / "run", model="vit_tiny", device="cpu", epochs=2,
                                cache_dir=cache_dir, progress=False))
    for row in summary["history"]:
        assert row["train_area_ratio"] > 0.2 and row["val_empty_frac"] == 0, row
    assert summary["history"][-1]["val_mean_iou"] > 0


def test_resume_continues_epoch_counter_and_optimizer_state(trained_run, sam_dir, cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    first = torch.load(run / "last.pt", weights_only=True)
    steps_per_epoch = int(next(iter(first["optimizer"]["state"].values()))["step"])
    assert steps_per_epoch > 0
    _cli(["train", "--data", sam_dir, *TINY, "--epochs", 2, "--lr", 3e-3, "--out", run,
          "--cache-dir", cache_dir, "--quiet", "--resume"])
    assert "resumed" in capsys.readouterr().out
    second = torch.load(run / "last.pt", weights_only=True)
    assert second["epoch"] == 1 and [h["epoch"] for h in second["history"]] == [1, 2]
    # Adam's step count carried on from the first run: the optimizer state was restored.
    assert int(next(iter(second["optimizer"]["state"].values()))["step"]) == 2 * steps_per_epoch
    assert second["scheduler"]["last_epoch"] == 2 * steps_per_epoch
    assert second["base_metrics"] == first["base_metrics"]
    # Without --resume an existing run is protected.
    err = _cli_error(capsys, ["train", "--data", sam_dir, *TINY, "--out", run, "--quiet"])
    assert "already exists; pass --resume" in err


def test_loss_falls_on_a_tiny_fixed_set(sam_dir, cache_dir, tmp_path):
    from defectkit.segment.train import TrainConfig, train

    tiny = _train_subset(sam_dir, tmp_path, 2)
    summary = train(TrainConfig(data=tiny, out=tmp_path / "run", model="vit_tiny", device="cpu", epochs=12,
                                lr=3e-3, box_jitter=0.0, validate=False, cache_dir=cache_dir, progress=False))
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert summary["history"][-1]["train_dice_loss"] < summary["history"][0]["train_dice_loss"]


def test_bad_jsonl_lines_are_one_line_errors(sam_dir, tmp_path, capsys):
    bad = tmp_path / "sam"
    bad.mkdir()
    rec = json.loads((sam_dir / "train.jsonl").read_text().splitlines()[0])
    good_masks = [inst["mask"] for inst in rec["instances"]]
    rec["width"] = rec["width"] * 2  # the line (and its masks) say twice the image's width
    for inst, mask in zip(rec["instances"], good_masks):
        inst["mask"] = mask_to_rle(np.hstack([rle_to_mask(mask)] * 2))
    (bad / "train.jsonl").write_text(json.dumps(rec) + "\n")
    err = _cli_error(capsys, ["train", "--data", bad, *TINY, "--out", tmp_path / "r", "--no-val"])
    assert "train.jsonl:1" in err and "but the line says" in err
    rec["width"] //= 2
    for inst, mask in zip(rec["instances"], good_masks):
        inst["mask"] = mask
    rec["image"] = str(tmp_path / "gone.png")
    (bad / "train.jsonl").write_text(json.dumps(rec) + "\n")
    err = _cli_error(capsys, ["train", "--data", bad, *TINY, "--out", tmp_path / "r", "--no-val"])
    assert "gone.png does not exist" in err


def test_points_focal_and_prompt_encoder_training(sam_dir, cache_dir, tmp_path):
    from defectkit.segment.train import TrainConfig, train

    data = _train_subset(sam_dir, tmp_path, 3)
    out = tmp_path / "run"
    summary = train(TrainConfig(data=data, out=out, model="vit_tiny", device="cpu", epochs=1, points=2, neg_points=1,
                                loss="dice+focal", train_prompt_encoder=True, validate=False, cache_dir=cache_dir,
                                progress=False))
    assert np.isfinite(summary["history"][0]["train_loss"])
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert "prompt_encoder" in ckpt and ckpt["train_config"]["points"] == 2
    # The trained prompt encoder is what predict loads with --finetuned.
    from defectkit.segment.models import apply_finetuned, build_sam

    model = build_sam("vit_tiny")
    before = model.sam.prompt_encoder.point_embeddings[1].weight.clone()
    apply_finetuned(model, ckpt, out / "last.pt")
    assert not torch.equal(before, model.sam.prompt_encoder.point_embeddings[1].weight)
    with pytest.raises(DefectkitError, match="fine-tuned on base weights vit_tiny:random-0"):
        apply_finetuned(build_sam("vit_tiny", seed=5), ckpt, out / "last.pt")


def test_sampled_points_and_jitter_stay_valid():
    from defectkit.segment.prompts import jitter_boxes, sample_points

    rng = np.random.default_rng(0)
    mask = np.zeros((40, 40), bool)
    mask[10:14, 5:30] = True
    coords, labels = sample_points(mask, 3, 2, rng, np.array([5, 10, 30, 14]))
    assert labels.tolist() == [1, 1, 1, 0, 0]
    assert all(mask[int(y), int(x)] for x, y in coords[:3]) and not any(mask[int(y), int(x)] for x, y in coords[3:])
    boxes = jitter_boxes(np.array([[5.0, 10, 30, 14]] * 200), 0.05, rng, 40, 40)
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes >= 0).all() and (boxes[:, [0, 2]] <= 40).all()
    assert 0 < np.abs(boxes - [5, 10, 30, 14]).mean() < 2


# ---------------------------------------------------------------- point-sampled loss and image batching


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(48, 128), width=st.integers(48, 128), cx=st.floats(0.3, 0.7), cy=st.floats(0.3, 0.7),
    radius=st.floats(0.15, 0.35), sharpness=st.floats(0.5, 4.0), seed=st.integers(0, 2**16),
)
@example(height=48, width=48, cx=0.65625, cy=0.65625, radius=0.15, sharpness=1.0, seed=0)  # the smallest mask
def test_point_loss_estimates_the_full_loss_on_a_smooth_case(height, width, cx, cy, radius, sharpness, seed):
    """Uniform points (importance 0) estimate the full-resolution loss: the point reading of the
    low-res logits matches ``postprocess_masks``' upsampling, and the target is read at full resolution."""
    from defectkit.segment.decoder import PointSampling, full_mask_terms, point_mask_terms, upscale_logits
    from defectkit.segment.models import build_sam

    sam = build_sam("vit_tiny").sam
    img = sam.image_encoder.img_size
    scale = img / max(height, width)
    input_size = (round(height * scale), round(width * scale))
    # A smooth logit map in the padded low-res frame: a blob centred on (cx, cy) of the image.
    low = torch.zeros(1, img // 4, img // 4)
    ys, xs = torch.meshgrid(torch.arange(img // 4) + 0.5, torch.arange(img // 4) + 0.5, indexing="ij")
    u, v = xs / (img // 4) * img / input_size[1], ys / (img // 4) * img / input_size[0]
    low[0] = sharpness * (radius - ((u - cx) ** 2 + (v - cy) ** 2).sqrt()) * 20
    full = upscale_logits(sam, low[:, None], input_size, (height, width))[:, 0]
    py, px = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    target = ((((px / width - cx) ** 2 + (py / height - cy) ** 2).sqrt() < radius)[None]).to(torch.uint8)
    extent = (input_size[1] / img, input_size[0] / img)
    sampling = PointSampling(num_points=20000, oversample=1.0, importance=0.0)
    pts = point_mask_terms(low, target, extent, sampling=sampling, generator=torch.Generator().manual_seed(seed))
    ref = full_mask_terms(full, target)
    assert abs(float(pts["dice_loss"] - ref["dice_loss"])) < 0.05
    assert abs(float(pts["pixel_loss"] - ref["pixel_loss"])) < 0.15 * float(ref["pixel_loss"]) + 0.02
    # Points fall anywhere in a pixel, the full loss reads pixel centres: they disagree within about
    # half a pixel of the mask's edge, a share of the mask of about 0.5 / its radius in pixels
    # (0.07 for the smallest, 7 px; hypothesis found 0.083 there against a flat 0.08).
    radius_px = radius * min(height, width)
    assert abs(float(pts["iou"] - ref["iou"])) < 0.05 + 0.5 / radius_px
    assert abs(float(pts["pred_area"] / ref["pred_area"].clamp(min=1)) - 1) < 0.1 or float(ref["pred_area"]) < 20


def test_uncertain_points_gather_on_the_predicted_boundary():
    from defectkit.segment.decoder import PointSampling, point_sample, uncertain_points

    low = torch.linspace(-10, 10, 64).expand(2, 64, 64).clone()
    pts, cand, cand_logits = uncertain_points(low, (0.5, 1.0), PointSampling(400, 3.0, 0.75), torch.Generator().manual_seed(1))
    assert pts.shape == (2, 400, 2) and cand.shape == (2, 1200, 2)
    assert float(pts.min()) >= 0 and float(pts.max()) <= 1
    # The image covers the left half of the map: logit 0 sits at its right edge (x = 1 of the image).
    assert float((1 - pts[:, :300, 0]).abs().mean()) < 0.15
    torch.testing.assert_close(cand_logits, point_sample(low, cand * torch.tensor([0.5, 1.0])))


def test_several_images_in_one_decoder_call_equal_one_call_each():
    from defectkit.segment.decoder import PromptDecoder
    from defectkit.segment.models import build_sam

    sam = build_sam("vit_tiny", seed=4).sam
    decoder = PromptDecoder(sam).eval()
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(3, sam.prompt_encoder.embed_dim, 16, 16, generator=gen)
    boxes = torch.tensor([[10.0, 10, 90, 80], [5, 40, 60, 200], [100, 100, 250, 240], [0, 0, 30, 30], [20, 30, 40, 50]])
    coords = torch.rand(5, 2, 2, generator=gen) * 256
    labels = torch.tensor([[1, 0], [1, 1], [1, -1], [0, 1], [1, 0]], dtype=torch.int)
    index = torch.tensor([0, 0, 1, 2, 2])
    with torch.no_grad():
        masks, iou = decoder(emb, boxes, coords, labels, image_index=index)
        for i in range(3):
            sel = index == i
            one_masks, one_iou = decoder(emb[i : i + 1], boxes[sel], coords[sel], labels[sel])
            torch.testing.assert_close(masks[sel], one_masks, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(iou[sel], one_iou, rtol=1e-5, atol=1e-5)


def test_point_loss_with_batched_images_learns_on_a_tiny_fixed_set(sam_dir, cache_dir, tmp_path):
    from defectkit.segment.train import TrainConfig, train

    tiny = _train_subset(sam_dir, tmp_path, 2)
    # 24 epochs of one step: the same 24 optimizer steps as the full-resolution test above takes.
    summary = train(TrainConfig(data=tiny, out=tmp_path / "run", model="vit_tiny", device="cpu", epochs=24,
                                lr=3e-3, box_jitter=0.0, validate=False, cache_dir=cache_dir, progress=False,
                                mask_loss="points", mask_points=2048, images_per_step=2))
    history = summary["history"]
    assert [h["steps"] for h in history] == [1] * 24  # both images' prompts in one decoder call
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < 0.85 * losses[0], losses  # 1.70 -> 1.37 (the full-resolution test: < 0.8)
    assert history[-1]["train_dice_loss"] < history[0]["train_dice_loss"]


def test_resume_with_point_loss_and_batched_images(sam_dir, cache_dir, tmp_path, capsys):
    data = _train_subset(sam_dir, tmp_path, 3)
    run = tmp_path / "run"
    common = ["train", "--data", data, *TINY, "--out", run, "--cache-dir", cache_dir, "--quiet", "--no-val",
              "--mask-loss", "points", "--mask-points", 1024, "--images-per-step", 2]
    _cli([*common, "--epochs", 1])
    first = torch.load(run / "last.pt", weights_only=True)
    assert first["train_config"]["mask_loss"] == "points" and first["train_config"]["images_per_step"] == 2
    _cli([*common, "--epochs", 2, "--resume"])
    assert "resumed" in capsys.readouterr().out
    second = torch.load(run / "last.pt", weights_only=True)
    assert second["epoch"] == 1 and [h["steps"] for h in second["history"]] == [2, 2]  # 3 images, 2 per step
    assert int(next(iter(second["optimizer"]["state"].values()))["step"]) == 4
    err = _cli_error(capsys, ["train", "--data", data, *TINY, "--out", tmp_path / "r2", "--mask-points", 0, "--quiet"])
    assert "--mask-points must be >= 1" in err


# ---------------------------------------------------------------- predict


def _check_outputs(out: Path, stem: str, image: Path, n_masks: int) -> list[dict]:
    h, w = read_image(image).shape[:2]
    mask = read_mask(out / "masks" / f"{stem}.png")
    assert mask.shape == (h, w)
    assert read_image(out / "overlays" / f"{stem}.png").shape == (h, w, 3)
    results = json.loads((out / "results.json").read_text())
    assert len(results) == n_masks
    union = np.zeros((h, w), bool)
    for r in results:
        m = rle_to_mask(r["segmentation"])
        assert m.shape == (h, w) and 0 <= r["score"] <= 1 and r["area"] == int(m.sum())
        union |= m
    assert np.array_equal(union, mask)
    return results


def test_predict_box_and_point_with_finetuned_decoder(trained_run, sam_dir, tmp_path):
    ckpt = trained_run / ("best.pt" if (trained_run / "best.pt").is_file() else "last.pt")
    rec = _first_image_with_instances(sam_dir)
    box = ",".join(str(v) for v in rec.instances[0].box_xyxy)
    out = tmp_path / "box"
    _cli(["predict", "--image", rec.image, "--box", box, "--box", "0,0,40,30", "--finetuned", ckpt,
          "--device", "cpu", "--out", out, "--category-id", 3])
    results = _check_outputs(out, rec.image.stem, rec.image, 2)
    assert {r["category_id"] for r in results} == {3} and {r["image_id"] for r in results} == {1}
    out = tmp_path / "point"
    x, y = rec.instances[0].points[0]
    _cli(["predict", "--image", rec.image, "--point", f"{x},{y}", "--point", "2,2,0", *TINY, "--out", out])
    _check_outputs(out, rec.image.stem, rec.image, 1)


def test_predict_boxes_from_results_on_a_folder_keeps_ids(converted, sample_root, tmp_path):
    coco = json.loads((converted / "coco" / "test.json").read_text())
    folder = sample_root / "wood" / "test" / "hole"
    files = sorted(folder.glob("*.png"))
    by_name = {e["file_name"]: e["id"] for e in coco["images"]}
    known = [p for p in files if f"test/hole/{p.name}" in by_name]
    assert known, "the test split holds some hole images"
    target = by_name[f"test/hole/{known[0].name}"]
    preds = [{"image_id": target, "category_id": 4, "bbox": [10, 20, 30, 40], "score": 0.9},
             {"image_id": target, "category_id": 4, "bbox": [50, 60, 10, 10], "score": 0.1}]
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(preds))
    out = tmp_path / "out"
    image_dir = tmp_path / "imgs"
    (image_dir / "test" / "hole").mkdir(parents=True)
    for p in known:
        shutil.copy(p, image_dir / "test" / "hole" / p.name)
    # Copies are matched by their path ending in the COCO file_name.
    _cli(["predict", "--image", image_dir, "--boxes-from", pred_file, "--coco", converted / "coco" / "test.json",
          "--min-score", 0.5, *TINY, "--out", out, "--quiet"])
    results = json.loads((out / "results.json").read_text())
    # One box kept (--min-score); its mask scores the detector's 0.9 x SAM's predicted IoU.
    assert [(r["image_id"], r["category_id"]) for r in results] == [(target, 4)]
    assert 0 <= results[0]["score"] <= 0.9
    assert len(list((out / "masks").glob("*.png"))) == len(known)


def test_predict_with_detector(sample_root, tmp_path):
    from ultralytics import YOLO

    weights = tmp_path / "det.pt"
    YOLO("yolov8n.yaml").save(weights)  # random weights: scores are tiny, hence --conf 1e-9
    image = sample_root / "wood" / "test" / "hole" / "000.png"
    out = tmp_path / "out"
    _cli(["predict", "--image", image, "--detector", weights, "--conf", 1e-9, *TINY, "--out", out])
    results = json.loads((out / "results.json").read_text())
    assert results and all(r["image_id"] == 1 for r in results)
    _check_outputs(out, "000", image, len(results))


def test_predict_bad_inputs_are_one_line_errors(sample_root, tmp_path, capsys):
    image = sample_root / "wood" / "test" / "hole" / "000.png"
    base = ["predict", "--image", image, *TINY]
    assert "box [200, 0, 300, 50] is outside the 256x256 image" in _cli_error(
        capsys, base + ["--box", "200,0,300,50", "--out", tmp_path / "a"])
    assert "point (10, 256) is outside the 256x256 image" in _cli_error(
        capsys, base + ["--point", "10,256", "--out", tmp_path / "b"])
    assert "expected x1,y1,x2,y2" in _cli_error(capsys, base + ["--box", "1,2,3", "--out", tmp_path / "c"])
    # A negative coordinate reaches the check (argparse alone would take it for an option).
    assert "box [-1, 0, 5, 5] is outside the 256x256 image" in _cli_error(
        capsys, base + ["--box", "-1,0,5,5", "--out", tmp_path / "c"])
    assert "point (-2, 1) is outside" in _cli_error(capsys, base + ["--point", "-2,1,0", "--out", tmp_path / "c"])
    vit_b_like = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, vit_b_like)
    assert "a SAM vit_b checkpoint, but --model is vit_tiny" in _cli_error(
        capsys, base + ["--box", "0,0,5,5", "--checkpoint", vit_b_like, "--out", tmp_path / "c"])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    err = _cli_error(capsys, ["predict", "--image", text, "--box", "0,0,5,5", *TINY, "--out", tmp_path / "d"])
    assert "notes.png" in err and "not a readable image" in err
    assert "one kind of prompt" in _cli_error(capsys, base + ["--out", tmp_path / "e"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()  # nothing half-written


# ---------------------------------------------------------------- val


def test_val_reports_base_and_finetuned_side_by_side(trained_run, sam_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "val"
    _cli(["val", "--data", sam_dir, "--split", "test", "--finetuned", trained_run / "last.pt",
          "--device", "cpu", "--cache-dir", cache_dir, "--out", out])
    printed = capsys.readouterr().out
    assert "base SAM   test" in printed and "fine-tuned test" in printed
    report = (out / "report.md").read_text()
    assert "| metric | base SAM | fine-tuned | change |" in report and "segm_AP" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"base", "finetuned"}
    assert metrics["base"]["n_instances"] == metrics["finetuned"]["n_instances"] > 0
    assert metrics["base"] != metrics["finetuned"]
    # Base SAM's side is really base SAM (the fine-tuned weights were swapped out, not kept).
    base_run = tmp_path / "base"
    _cli(["val", "--data", sam_dir, "--split", "test", *TINY, "--cache-dir", cache_dir, "--out", base_run])
    assert json.loads((base_run / "metrics.json").read_text())["base"] == metrics["base"]


def test_split_predicted_once_scores_like_score_split(sam_dir, cache_dir, converted):
    from defectkit.segment.data import read_sam_jsonl
    from defectkit.segment.embeddings import EmbeddingCache, ImageEncoder
    from defectkit.segment.models import build_sam
    from defectkit.segment.predict import Segmenter
    from defectkit.segment.val import category_ids, predict_split, score_predictions, score_split

    model = build_sam("vit_tiny")
    segmenter = Segmenter(ImageEncoder(model, EmbeddingCache(cache_dir, model.identity, model.spec.img_size)))
    records, coco = read_sam_jsonl(sam_dir / "test.jsonl"), converted / "coco" / "test.json"
    predicted = predict_split(segmenter, records, category_ids(coco))
    assert len(predicted.results) == len(predicted.gt_masks) == sum(len(r.instances) for r in records)
    assert score_predictions(predicted, coco) == score_split(segmenter, records, coco)
