import numpy as np

from defectkit.core.imageio import read_image, read_mask
from defectkit.sample import WOOD_DEFECTS, write_category


def test_sample_layout(sample_root):
    wood = sample_root / "wood"
    assert sorted(p.name for p in (wood / "test").iterdir()) == sorted(("good",) + WOOD_DEFECTS)
    for defect in WOOD_DEFECTS:
        images = sorted((wood / "test" / defect).glob("*.png"))
        assert images, defect
        for img in images:
            mask = read_mask(wood / "ground_truth" / defect / f"{img.stem}_mask.png")
            assert mask.shape == read_image(img).shape[:2]
            assert mask.any(), f"{img}: empty mask"
    gray = read_image(sample_root / "wood_gray" / "test" / "hole" / "000.png", mode="unchanged")
    assert gray.ndim == 2 and gray.shape == (192, 256)


def test_sample_is_deterministic(tmp_path):
    a = write_category(tmp_path / "a", "wood", size=(64, 64), n_train_good=1, n_test_good=1, n_per_defect=1)
    b = write_category(tmp_path / "b", "wood", size=(64, 64), n_train_good=1, n_test_good=1, n_per_defect=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_sample_hard_cases(sample_root):
    """The sample holds what the converters must get right: a ring, border cuts, multi-component masks."""
    import cv2

    gt = sample_root / "wood" / "ground_truth"
    n_components, holes, border = [], 0, 0
    for mask_path in gt.rglob("*_mask.png"):
        mask = read_mask(mask_path).astype(np.uint8)
        n, _ = cv2.connectedComponents(mask, connectivity=8)
        n_components.append(n - 1)
        _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        holes += int((hierarchy[0][:, 3] >= 0).sum()) if hierarchy is not None else 0
        border += int(mask[:, 0].any() or mask[0].any() or mask[:, -1].any() or mask[-1].any())
    assert max(n_components) >= 3 and holes >= 1 and border >= 1


def test_read_image_reports_damaged_files_without_decoder_noise(tmp_path, capfd):
    """Each damaged file ends in one DefectkitError naming it, and nothing from libpng, libjpeg
    or OpenCV's log reaches stderr (capfd sees the C-level stream)."""
    import cv2
    import pytest

    from defectkit.core.errors import DefectkitError

    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    encoded = {ext: cv2.imencode(ext, img)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".tif")}
    png, jpg = encoded[".png"], encoded[".jpg"]
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0x01
    garbled = bytearray(jpg)
    garbled[20:40] = bytes(b ^ 0x5A for b in garbled[20:40])
    cases = {
        "flip.png": (bytes(flipped), "corrupt PNG (CRC error in chunk IDAT"),
        "cut.png": (png[: len(png) // 2], "truncated PNG"),
        "cut.jpg": (jpg[: len(jpg) // 2], "truncated JPEG"),
        "garbled.jpg": (bytes(garbled), "corrupt JPEG"),
        "cut.bmp": (encoded[".bmp"][: len(encoded[".bmp"]) // 2], "not a readable image"),
        "cut.tif": (encoded[".tif"][: len(encoded[".tif"]) // 2], "not a readable image"),
    }
    opencv_log = getattr(cv2.utils, "logging", cv2)  # OpenCV < 4.13 keeps getLogLevel on cv2 itself
    level = opencv_log.getLogLevel()
    for name, (data, problem) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DefectkitError) as err:
            read_image(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: {problem}"), str(err.value)
    assert capfd.readouterr().err == ""
    assert opencv_log.getLogLevel() == level  # the decoder log is quiet only while decoding
    for ext, data in encoded.items():  # whole files still decode, to the same pixels (bar JPEG loss)
        (tmp_path / f"ok{ext}").write_bytes(data)
        assert read_image(tmp_path / f"ok{ext}").shape == img.shape
    assert (read_image(tmp_path / "ok.png") == img[..., ::-1]).all()


def test_cli_entry_stops_quietly_on_a_closed_pipe(tmp_path):
    """`convert-mvtec ... | head -1` must not end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    script = tmp_path / "many_lines.py"
    script.write_text(
        "from defectkit.core.errors import cli_entry\n"
        "@cli_entry\n"
        "def main():\n"
        "    for i in range(200000):\n"
        "        print('line', i)\n"
        "main()\n"
    )
    run = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} {script} | head -1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout == "line 0\n" and run.stderr == "", run.stderr
    assert run.returncode == 141
