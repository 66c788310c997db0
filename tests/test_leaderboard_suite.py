"""``defectkit benchmark all`` / ``a,b,c``: the category table every paper prints (categories plus a
mean row, approach x metric columns) in report.md, report.html and leaderboard.json; the same table
from shards joined by ``benchmark merge``; ``--repeats`` (mean ± std) and ``--shots`` (the
label-efficiency curve); 95% intervals that hold their point estimate, and a row at chance marked.

Cheap rows only: ``yolo-world-zs`` and ``sam-gt-random`` do not train, the classifier trains one epoch
at 64 px, on three small synthetic categories.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from defectkit.cli import main
from defectkit.leaderboard.rows import ROWS as ROW_SPECS
from defectkit.leaderboard.suite import SuitePlan
from defectkit.sample import write_category

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CATEGORIES = ("board_a", "board_b", "board_c")
ROWS = "yolo-world-zs,sam-gt-random,classifier"


def _run(argv: list) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(a) for a in argv]) == 0
    return printed.getvalue()


def _bench(root: Path, what: str, out: Path, *extra) -> list:
    return ["benchmark", what, "--root", root, "--out", out, "--fast", "--rows", ROWS, "--batch", "8",
            "--bootstrap", "200", "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def root3(tmp_path_factory) -> Path:
    """Three small categories in the MVTec AD layout (and a folder that is not one, skipped by 'all')."""
    root = tmp_path_factory.mktemp("root3")
    for i, name in enumerate(CATEGORIES):
        write_category(root, name, size=(96, 96), seed=10 + i)
    (root / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def single(root3, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "suite"
    printed = _run(_bench(root3, "all", out))
    assert f"report: {out / 'report' / 'report.html'}" in printed
    assert (
        "split defectkit, mean over 3 categories:" in printed
        and "yolo-world-zs  0.500 [0.500, 0.500] ~chance" in printed
    )
    return out


@pytest.fixture(scope="module")
def merged(root3, single, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("shards")
    for i in (1, 2):
        assert "report:" not in _run(
            _bench(root3, ",".join(CATEGORIES), base / f"shard{i}", "--shard", f"{i}/2")
        )
    _run(["benchmark", "merge", base / "shard1", base / "shard2", "--out", base / "merged"])
    return base


def _board(folder: Path) -> dict:
    return json.loads((folder / "report" / "leaderboard.json").read_text())


def test_all_writes_the_category_table_with_a_mean_row(single):
    board = _board(single)
    assert board["plan"]["categories"] == list(CATEGORIES)  # 'notes' has no train/good and test/
    table = board["protocols"]["defectkit"]["table"]
    assert [tuple(c) for c in table["columns"]] == [
        ("yolo-world-zs", "image_auroc"), ("yolo-world-zs", "box_AP"), ("yolo-world-zs", "agnostic_box_AP50"),
        ("sam-gt-random", "mask_mIoU"), ("sam-gt-random", "agnostic_segm_AP50"),
        ("classifier", "image_auroc"), ("classifier", "balanced_accuracy"),
    ]  # fmt: skip
    for row, metric in table["columns"]:
        values = [table["categories"][c][row][metric]["value"] for c in CATEGORIES]
        assert table["mean"][row][metric]["value"] == pytest.approx(np.mean(values))
        # each category's number is its own run's (<out>/<category>/, a plain benchmark run folder)
        for c in CATEGORIES:
            result = json.loads((single / c / "rows" / row / "result.json").read_text())
            stored = (
                result["image_level"]["test_auroc"] if metric == "image_auroc" else result["metrics"][metric]
            )
            assert stored["value"] == table["categories"][c][row][metric]["value"]
    md = (single / "report" / "report.md").read_text()
    header = ("| category | yolo-world-zs: image AUROC | yolo-world-zs: box AP | yolo-world-zs: class-agnostic box AP50 "
              "| sam-gt-random: mask mIoU | sam-gt-random: class-agnostic mask AP50 |")
    assert header in md
    for name in (*CATEGORIES, "mean"):
        assert re.search(rf"^\| {name} \| \d\.\d{{3}}", md, re.MULTILINE), name
    html = (single / "report" / "report.html").read_text()
    assert "<th>yolo-world-zs: image AUROC</th>" in html and "<td>mean</td>" in html
    assert all(f"<td>{c}</td>" in html for c in CATEGORIES)


def test_runs_record_the_protocol_and_the_commands(single):
    run = json.loads((single / "board_a" / "run.json").read_text())
    assert run["config"]["protocol"] == "defectkit" and run["config"]["bootstrap"] == 200
    convert = run["data"]["commands"][0]
    assert (
        convert[:2] == ["convert-mvtec", "board_a"]
        and convert[convert.index("--protocol") + 1] == "defectkit"
    )
    assert set(run["rows"]) == {"yolo-world-zs", "sam-gt-random", "classifier"}
    suite = json.loads((single / "suite.json").read_text())
    assert len(suite["units"]) == 3 * 3 and suite["shard"] is None


def test_shards_merged_give_the_single_runs_table(single, merged):
    one, joined = _board(single), _board(merged / "merged")
    assert joined["protocols"] == one["protocols"]  # every number, interval, rank and tie
    units = [json.loads((merged / f"shard{i}" / "suite.json").read_text())["units"] for i in (1, 2)]
    assert [len(u) for u in units] == [5, 4]  # 9 units (3 categories x 3 row groups) in two equal parts
    md = (merged / "merged" / "report" / "report.md").read_text()
    assert md.split("## Per category")[1].split("## Reproduce")[0] == (single / "report" / "report.md").read_text().split(
        "## Per category")[1].split("## Reproduce")[0]  # fmt: skip


def test_a_suite_resumes_and_refuses_other_settings(single, root3, capsys):
    """--resume loads every finished category and row (nothing reruns) and writes the same table; a
    changed setting that changes numbers (the split protocol, the bootstrap) is refused, per run too."""
    results = sorted(single.glob("*/rows/*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    board = _board(single)
    _run(_bench(root3, "all", single, "--resume"))
    assert {p: p.stat().st_mtime_ns for p in results} == before and _board(single)["protocols"] == board[
        "protocols"
    ]
    for extra, message in (
        (["--bootstrap", "100"], "this suite used bootstrap=200, not 100"),
        (["--protocol", "anomalydiffusion"], "this run used protocol='defectkit', not 'anomalydiffusion'"),
    ):
        what, out = ("all", single) if "--bootstrap" in extra else ("board_a", single / "board_a")
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in _bench(root3, what, out, "--resume", *extra)])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_shards_are_contiguous_equal_parts():
    plan = SuitePlan(["a", "b", "c"], ["defectkit"], [0, 1], ["yolo-world-ft", "sam-det", "classifier"])
    parts = [plan.shard(i, 4) for i in range(1, 5)]
    assert [len(p) for p in parts] == [3, 3, 3, 3] and sum(parts, []) == plan.units()
    # a row stays with the rows it needs: sam-det is never cut from yolo-world-ft
    assert all(u.rows in (("yolo-world-ft", "sam-det"), ("classifier",)) for u in plan.units())
    assert [len(p) for p in (plan.shard(i, 5) for i in range(1, 6))] == [3, 3, 2, 2, 2]


def _metrics(result: dict) -> dict[str, dict]:
    """Every metric of a row result: its task metrics and the common column."""
    level = result["image_level"] or {}
    return {**result["metrics"], **{k: level[k] for k in ("test_auroc", "test_accuracy") if k in level}}


def test_every_metric_has_an_interval_holding_its_value(single):
    for category in CATEGORIES:
        for row in ("yolo-world-zs", "sam-gt-random", "classifier"):
            result = json.loads((single / category / "rows" / row / "result.json").read_text())
            assert result["bootstrap"] == {
                "resamples": 200,
                "seed": 0,
                "confidence": 0.95,
                "unit": "test image",
            }
            shown = {
                *ROW_SPECS[row].metrics,
                *(["test_auroc", "test_accuracy"] if result["image_level"] else []),
            }
            for name, m in _metrics(result).items():
                if m["value"] is None or name not in shown:
                    continue  # n/a (e.g. no defect of a class), or kept in result.json only (AR100)
                assert m["ci_low"] <= m["value"] + 1e-12 and m["value"] <= m["ci_high"] + 1e-12, (
                    category,
                    row,
                    name,
                    m,
                )
    # the classifier's accuracies are classify val's own numbers, the interval drawn around them
    result = json.loads((single / "board_a" / "rows" / "classifier" / "result.json").read_text())
    own = json.loads((single / "board_a" / "rows" / "classifier" / "eval" / "metrics.json").read_text())[
        "classification"
    ]
    assert result["metrics"]["balanced_accuracy"]["value"] == own["balanced_accuracy"]
    # the recorded evaluate commands carry the bootstrap, so a replay rebuilds the intervals too
    run = json.loads((single / "board_a" / "run.json").read_text())
    evaluate = run["rows"]["yolo-world-zs"]["commands"][-1]
    assert evaluate[:2] == ["evaluate", "detection"] and evaluate[evaluate.index("--bootstrap") + 1] == "200"
    metrics = json.loads((single / "board_a" / run["rows"]["yolo-world-zs"]["metrics"]).read_text())
    assert metrics["bbox"]["ci"]["AP"] == result_ci(single, "yolo-world-zs", "box_AP")


def result_ci(run_folder: Path, row: str, metric: str) -> dict:
    return json.loads((run_folder / "board_a" / "rows" / row / "result.json").read_text())["metrics"][metric]


def test_a_row_at_chance_is_marked(single):
    """Random YOLO-World weights and text embeddings score every image alike: AUROC 0.5 with an
    interval that holds 0.5, called 'not distinguishable from chance' in both reports."""
    result = json.loads((single / "board_a" / "rows" / "yolo-world-zs" / "result.json").read_text())
    assert result["image_level"]["at_chance"] and any(
        "not distinguishable from chance" in n for n in result["notes"]
    )
    classifier = json.loads((single / "board_a" / "rows" / "classifier" / "result.json").read_text())
    auroc = classifier["image_level"]["test_auroc"]
    assert classifier["image_level"]["at_chance"] == (auroc["ci_low"] <= 0.5 <= auroc["ci_high"])
    for report in (single / "board_a" / "report", single / "report"):
        md, html = (report / "report.md").read_text(), (report / "report.html").read_text()
        line = next(x for x in md.splitlines() if "`yolo-world-zs`" in x and x.startswith("| "))
        assert "not distinguishable from chance" in line
        assert "<td>not distinguishable from chance</td>" in html
    ranked = _board(single)["protocols"]["defectkit"]["leaderboard"]
    zero_shot = next(e for e in ranked if e["row"] == "yolo-world-zs")
    assert zero_shot["at_chance"] and zero_shot["image_auroc"]["value"] == 0.5


@pytest.fixture(scope="module")
def repeats_and_shots(root3, tmp_path_factory) -> Path:
    """Two seeds of the fewshot:1 split and of AnomalyDiffusion's ('all' is --protocol's split)."""
    out = tmp_path_factory.mktemp("shots") / "suite"
    argv = ["benchmark", "board_a", "--root", root3, "--out", out, "--fast", "--rows", "yolo-world-zs,classifier",
            "--repeats", "2", "--shots", "1,all", "--protocol", "anomalydiffusion", "--bootstrap", "200",
            "--quiet"]  # fmt: skip
    _run(argv)
    return out


def _split(suite: Path, shots: str, seed: int) -> dict:
    path = suite / f"shots-{shots}" / "board_a" / f"seed-{seed}" / "data" / "board_a" / "split.json"
    return json.loads(path.read_text())


def test_repeats_give_mean_and_std_over_the_seeds(repeats_and_shots):
    board = _board(repeats_and_shots)
    assert board["plan"]["seeds"] == [0, 1]
    cell = board["protocols"]["anomalydiffusion"]["table"]["categories"]["board_a"]["classifier"][
        "balanced_accuracy"
    ]
    runs = [json.loads((repeats_and_shots / "shots-all" / "board_a" / f"seed-{s}" / "rows" / "classifier" /
                        "result.json").read_text())["metrics"]["balanced_accuracy"] for s in (0, 1)]  # fmt: skip
    assert [r["seed"] for r in cell["repeats"]] == [0, 1]
    assert [r["value"] for r in cell["repeats"]] == [r["value"] for r in runs]
    assert cell["value"] == pytest.approx(np.mean([r["value"] for r in runs]))
    assert cell["std"] == pytest.approx(np.std([r["value"] for r in runs], ddof=1))
    assert " ± " in (repeats_and_shots / "report" / "report.md").read_text()
    # a new split where the protocol draws one (fewshot's shots), the rule's own test set otherwise
    assert (
        _split(repeats_and_shots, "1", 0)["splits"]["train"]
        != _split(repeats_and_shots, "1", 1)["splits"]["train"]
    )
    fixed = [_split(repeats_and_shots, "all", s) for s in (0, 1)]
    assert (
        fixed[0]["protocol"] == "anomalydiffusion"
        and fixed[0]["splits"]["test"] == fixed[1]["splits"]["test"]
    )
    run = json.loads((repeats_and_shots / "shots-all" / "board_a" / "seed-1" / "run.json").read_text())
    assert run["config"]["protocol"] == "anomalydiffusion" and run["config"]["seed"] == 1


def test_shots_plot_the_label_efficiency_curve(repeats_and_shots):
    board = _board(repeats_and_shots)
    assert list(board["protocols"]) == ["fewshot:1", "anomalydiffusion"]
    x = board["label_efficiency"]["x"]
    shots = [sum(not n.startswith("train/good/") for n in _split(repeats_and_shots, k, s)["splits"]["train"])
             for k in ("1", "all") for s in (0, 1)]  # fmt: skip
    assert x == {"1": 1, "all": np.mean(shots[2:])} and shots[:2] == [1, 1] and x["all"] > 1
    curves = board["label_efficiency"]["curves"]
    assert set(curves["image AUROC"]) == {"yolo-world-zs", "classifier"}
    assert [p[0] for p in curves["image AUROC"]["classifier"]] == [x["1"], x["all"]]
    md = (repeats_and_shots / "report" / "report.md").read_text()
    html = (repeats_and_shots / "report" / "report.html").read_text()
    for name in ("label_efficiency_image_AUROC.png", "label_efficiency_main_metric.png"):
        assert f"]({name})" in md and (repeats_and_shots / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert html.count('src="data:image/png;base64,') == 2
