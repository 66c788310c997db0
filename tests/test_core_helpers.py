"""The "one of each" helpers of the core: the image lister, the --device parser, the torchrun set-up,
the file digest, and the one report builder every stage and the leaderboard write through."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from defectkit.core.digest import sha256_file
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import IMAGE_EXTENSIONS, is_image_file, list_images
from defectkit.core.torchio import Device, init_distributed, parse_device, resolve_device
from defectkit.evaluation.report import Report

CUDA = torch.cuda.is_available()


# -- image lister ---------------------------------------------------------------------------------
def _touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_lister_recurses_sorts_and_takes_convert_extensions(tmp_path):
    _touch(tmp_path, "z.png", "b/2.JPEG", "b/1.tiff", "a/deep/er/3.bmp", "a.jpg", "notes.txt", "c.gif")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    # path parts order: a folder's files sort by name, then come the files of the next name
    assert found == ["a/deep/er/3.bmp", "a.jpg", "b/1.tiff", "b/2.JPEG", "z.png"]
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)
    assert not is_image_file("c.gif") and is_image_file("x.TIF")


def test_lister_skips_hidden_below_a_folder_but_takes_a_named_file(tmp_path):
    _touch(tmp_path, "good/000.png", "good/._000.png", ".cache/1.png", "good/.ipynb_checkpoints/2.png")
    assert [p.name for p in list_images(tmp_path)] == ["000.png"]
    assert list_images(tmp_path / "good" / "._000.png") == [tmp_path / "good" / "._000.png"]


def test_lister_keeps_the_order_of_a_list_of_sources(tmp_path):
    _touch(tmp_path, "one/b.png", "one/a.png", "two.png")
    got = list_images([tmp_path / "two.png", str(tmp_path / "one")])
    assert [p.name for p in got] == ["two.png", "a.png", "b.png"]


@pytest.mark.parametrize(
    "layout, source, message",
    [
        ((), "missing", "missing: no such file or folder"),
        (("empty/notes.txt",), "empty", "empty: no images in this folder or below"),
        (("notes.txt",), "notes.txt", "notes.txt: not an image file (expected .png, .jpg"),
    ],
)
def test_lister_errors_name_the_path(tmp_path, layout, source, message):
    _touch(tmp_path, *layout)
    with pytest.raises(DefectkitError, match=re.escape(message)):
        list_images(tmp_path / source)


# -- device parser --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kind, gpus, ultralytics, torch_name",
    [
        ("cpu", "cpu", (), "cpu", "cpu"),
        ("CPU ", "cpu", (), "cpu", "cpu"),
        ("mps", "mps", (), "mps", "mps"),
        ("0", "cuda", (0,), "0", "cuda:0"),
        (1, "cuda", (1,), "1", "cuda:1"),
        ("0,1", "cuda", (0, 1), "0,1", "cuda:0"),
        ("0, 1, 1", "cuda", (0, 1), "0,1", "cuda:0"),
        ("cuda", "cuda", (0,), "0", "cuda:0"),
        ("cuda:2", "cuda", (2,), "2", "cuda:2"),
        ("cuda:0,cuda:3", "cuda", (0, 3), "0,3", "cuda:0"),
    ],
)
def test_device_renderings(name, kind, gpus, ultralytics, torch_name):
    device = parse_device(name, check=False)
    assert device == Device(kind, gpus)
    assert (device.ultralytics, device.torch, device.multi_gpu) == (ultralytics, torch_name, len(gpus) > 1)


@pytest.mark.parametrize("name", ["auto", "", None])
def test_auto_is_the_first_gpu_or_the_cpu(name):
    assert parse_device(name) == (Device("cuda", (0,)) if CUDA else Device("cpu"))
    assert resolve_device(name).type == ("cuda" if CUDA else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "0,,1", "-1", "1.5", "cuda:0:1"])
def test_device_names_that_are_not_devices(name):
    with pytest.raises(DefectkitError, match=rf"^--device {re.escape(str(name))}: not a device \(cpu, 0, 0,1, cuda:N"):
        parse_device(name, check=False)


@pytest.mark.skipif(CUDA, reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("name", ["0", "0,1", "cuda:1"])
def test_a_gpu_this_machine_lacks_is_refused_up_front(name):
    with pytest.raises(DefectkitError, match=rf"--device {name}: no CUDA GPU on this machine; use --device cpu"):
        parse_device(name)
    parse_device(name, check=False)  # syntax alone is fine (a config written for another machine)


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_a_gpu_index_past_the_last_is_refused():
    count = torch.cuda.device_count()
    with pytest.raises(DefectkitError, match=f"GPU {count} does not exist"):
        parse_device(f"0,{count}")


def test_distributed_alone_is_rank_zero_on_the_parsed_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = init_distributed("cpu")
    assert (dist.world, dist.rank, dist.local_rank, dist.device, dist.main) == (1, 0, 0, torch.device("cpu"), True)
    dist.barrier()  # nothing to wait for when run alone
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed("cpu") == dist


# -- digest ---------------------------------------------------------------------------------------
def test_sha256_file_matches_hashlib_across_chunks(tmp_path, monkeypatch):
    import defectkit.core.digest as digest

    monkeypatch.setattr(digest, "CHUNK", 7)  # several chunks, the last one short
    data = bytes(range(256)) * 3
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(DefectkitError, match="missing: cannot read for its digest"):
        sha256_file(tmp_path / "missing")


# -- report builder -------------------------------------------------------------------------------
def _png() -> bytes:
    import cv2

    return cv2.imencode(".png", np.zeros((2, 2), np.uint8))[1].tobytes()


def test_one_report_writes_markdown_html_and_metrics(tmp_path):
    png = _png()
    report = (
        Report("bench: wood")
        .add_heading("Leaderboard")
        .add_text("scores `a < b` & more\n\n- one\n- `two`")
        .add_table(["approach", "AP"], [["x|y", 0.123456], ["z", None]], digits=3)
        .add_image("roc", png, "ROC `test`")
        .add_image("roc.png", png)  # same name: a second file, not a replaced one
        .add_bullets(["note `n`"])
        .add_code("defectkit benchmark wood\n")
        .add_metrics("m", {"v": np.float64(0.5)})
    )
    out = report.write(tmp_path / "rep", html=True, extra_files={"leaderboard.json": b"{}\n"})
    assert sorted(p.name for p in out.iterdir()) == [
        "leaderboard.json", "metrics.json", "report.html", "report.md", "roc.png", "roc_2.png",
    ]  # fmt: skip
    md = (out / "report.md").read_text()
    assert "| x\\|y | 0.123 |" in md and "| z | n/a |" in md and "![ROC `test`](roc.png)" in md
    assert "![roc_2.png](roc_2.png)" in md and "- note `n`" in md and "```\ndefectkit benchmark wood\n```" in md
    page = (out / "report.html").read_text()
    assert "<p>scores <code>a &lt; b</code> &amp; more</p>" in page
    assert "<ul><li>one</li><li><code>two</code></li></ul>" in page
    assert "<td>x|y</td><td>0.123</td>" in page and "<h2>Leaderboard</h2>" in page
    assert page.count(f'src="data:image/png;base64,{base64.b64encode(png).decode()}"') == 2
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # self-contained: nothing fetched from elsewhere
    assert json.loads((out / "metrics.json").read_text()) == {"m": {"v": 0.5}}


def test_report_without_metrics_or_html_writes_only_markdown(tmp_path):
    out = Report("plain").add_text("hello").write(tmp_path / "rep")
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == "# plain\n\nhello\n"


def test_report_table_rows_must_match_the_header():
    with pytest.raises(ValueError, match="table row has 1 cells, header has 2"):
        Report("t").add_table(["a", "b"], [["only"]])


# A fresh interpreter that makes 400 numpy arrays of 0.5-4 MB, four alive at a time (what a scorer's
# temporaries do): by default glibc maps many of them with mmap and faults their pages in each time;
# with keep_freed_memory() they come from a heap that keeps its freed pages. Prints the minor page
# faults of the loop (66,252 and 4,900 on the machine this was written on).
_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from defectkit.core.malloc import keep_freed_memory
    assert keep_freed_memory()
sizes = np.random.default_rng(0).integers(1 << 16, 1 << 19, 400).tolist()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
alive = []
for n in sizes:
    alive.append(np.ones(n))
    if len(alive) > 3:
        alive.pop(0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_refaulting_temporaries():
    faults = {
        mode: int(subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True,
                                 check=True).stdout)
        for mode in ("default", "tuned")
    }  # fmt: skip
    assert faults["tuned"] * 4 < faults["default"], faults


def test_crop_to_rle_is_pycocotools_encoding_of_the_whole_frame():
    """The crop's runs, shifted into the frame, compress to the very string pycocotools' encode gives
    for the full mask: empty, full, full-height (runs joined across columns) and random crops."""
    from defectkit.core.rle import crop_to_rle, mask_to_rle

    rng = np.random.default_rng(0)
    for case in range(600):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1, x1 = int(rng.integers(y0, height)) + 1, int(rng.integers(x0, width)) + 1
        if case % 3 == 0:
            y0, y1 = 0, height
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < (case % 5) / 4
        assert crop_to_rle(mask[y0:y1, x0:x1], x0, y0, height, width) == mask_to_rle(mask), case
