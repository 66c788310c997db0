"""One leaderboard for every approach: ``defectkit benchmark`` and ``defectkit demo``.

Each approach is a row in a registry (``defectkit.leaderboard.rows.ROWS``): it trains and predicts
through its stage's Python API (detect, segment, classify) on the one split convert-mvtec made, is
scored by the shared evaluator, and gives an image-level defective score so all rows rank on one
column. ``run_benchmark`` runs them (resumable row by row) and writes report.md + a self-contained
report.html.

>>> from defectkit.leaderboard import BenchmarkConfig, run_benchmark, DEMO_ROWS  # doctest: +SKIP
>>> run_benchmark(BenchmarkConfig("datasets/sample", "wood", "runs/demo", list(DEMO_ROWS)))  # doctest: +SKIP
"""

from defectkit.leaderboard.context import BenchmarkConfig
from defectkit.leaderboard.rows import ALL_ROWS, DEMO_ROWS, ROWS
from defectkit.leaderboard.runner import run_benchmark

__all__ = ["ALL_ROWS", "DEMO_ROWS", "ROWS", "BenchmarkConfig", "run_benchmark"]
