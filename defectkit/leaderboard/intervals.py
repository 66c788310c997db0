"""Uncertainty on the leaderboard: every metric as ``{"value", "ci_low", "ci_high"}`` (a 95% bootstrap
interval over test images from ``defectkit.evaluation.bootstrap``), summarised over repeats and over
categories, and read for ties and for chance.

Small typed functions over those dicts; the resampling, the overlap and the chance test are the
evaluator's (a metric without an interval, ``--bootstrap 0``, is never called tied or at chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from defectkit.evaluation.bootstrap import indistinguishable_from_chance, intervals_overlap

Z95 = 1.959963984540054  # the normal 97.5% quantile
CHANCE_AUROC = 0.5


def interval(value: float | None, ci_low: float | None = None, ci_high: float | None = None) -> dict:
    """A metric as the leaderboard stores it (None bounds: no interval, e.g. ``--bootstrap 0``).

    >>> interval(0.8, 0.7, 0.9)
    {'value': 0.8, 'ci_low': 0.7, 'ci_high': 0.9}
    """
    return {"value": value, "ci_low": ci_low, "ci_high": ci_high}


def as_interval(metric: float | dict | None) -> dict:
    """A stored metric as an interval dict: a plain number (a row result from before intervals, or a
    metric without one) gets None bounds.

    >>> as_interval(0.5), as_interval({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6})["ci_low"]
    ({'value': 0.5, 'ci_low': None, 'ci_high': None}, 0.4)
    """
    if isinstance(metric, dict):
        return {**interval(None), **metric}
    return interval(metric)


def value_of(metric: float | dict | None) -> float | None:
    """The point value of a stored metric (a number or an interval dict).

    >>> value_of({"value": 0.75, "ci_low": 0.5, "ci_high": 1.0}), value_of(0.5), value_of(None)
    (0.75, 0.5, None)
    """
    return as_interval(metric)["value"]


def has_bounds(metric: dict | None) -> bool:
    """Whether a metric carries an interval.

    >>> has_bounds(interval(0.5, 0.4, 0.6)), has_bounds(interval(0.5)), has_bounds(None)
    (True, False, False)
    """
    return metric is not None and metric.get("ci_low") is not None and metric.get("ci_high") is not None


def at_chance(auroc: dict | None) -> bool:
    """An image AUROC not distinguishable from chance: its 95% interval contains 0.5 (never without
    an interval: ``--bootstrap 0`` makes no such call).

    >>> at_chance(interval(0.62, 0.41, 0.83)), at_chance(interval(0.95, 0.9, 1.0)), at_chance(interval(0.5))
    (True, False, False)
    """
    return has_bounds(auroc) and indistinguishable_from_chance(auroc, CHANCE_AUROC)


def overlap(a: dict | None, b: dict | None) -> bool:
    """Two intervals that share a point: the data cannot order the two rows (never without intervals).

    >>> overlap(interval(0.8, 0.7, 0.9), interval(0.65, 0.5, 0.72)), overlap(interval(0.8, 0.7, 0.9), interval(0.6, 0.5, 0.69))
    (True, False)
    """
    return has_bounds(a) and has_bounds(b) and intervals_overlap(a, b)


def tied_with(ranked: Sequence[dict | None]) -> list[list[int]]:
    """For each entry of a ranking (rank 1 first), the ranks whose intervals overlap its own.

    >>> tied_with([interval(0.9, 0.85, 0.95), interval(0.88, 0.8, 0.9), interval(0.6, 0.5, 0.7), None])
    [[2], [1], [], []]
    """
    return [[j + 1 for j, b in enumerate(ranked) if j != i and overlap(a, b)] for i, a in enumerate(ranked)]


def over_repeats(runs: Sequence[dict], seeds: Sequence[int]) -> dict:
    """One metric over repeated runs (seeds 0..R-1): value = the mean, ``std`` the spread across runs
    (ddof 1), ``repeats`` each run's own value and interval, and as the interval the runs' 95%
    bootstrap bounds averaged (one run's test-sample uncertainty, next to the run-to-run ``std``).

    >>> s = over_repeats([interval(0.8, 0.7, 0.9), interval(0.6, 0.5, 0.7)], [0, 1])
    >>> s["value"], round(s["std"], 4), s["ci_low"], s["ci_high"], [r["seed"] for r in s["repeats"]]
    (0.7, 0.1414, 0.6, 0.8, [0, 1])
    """
    values = [r["value"] for r in runs if r["value"] is not None]
    bounded = all(has_bounds(r) for r in runs)
    return {
        "value": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "ci_low": float(np.mean([r["ci_low"] for r in runs])) if bounded else None,
        "ci_high": float(np.mean([r["ci_high"] for r in runs])) if bounded else None,
        "repeats": [
            {"seed": s, **interval(r["value"], r["ci_low"], r["ci_high"])} for s, r in zip(seeds, runs)
        ],
    }


def mean_of_independent(metrics: Sequence[dict]) -> dict:
    """The mean of metrics measured on independent test sets (the categories): value = the mean, and
    an interval from the categories' intervals taken as independent normal errors, each side apart
    (a category's lower half-width / 1.96 is its standard error below; the mean's is the root sum
    of squares / n), so no resampling is repeated. None bounds when any category has none.

    >>> m = mean_of_independent([interval(0.8, 0.7, 0.9), interval(0.6, 0.5, 0.7)])
    >>> m["value"], round(m["ci_low"], 4), round(m["ci_high"], 4)
    (0.7, 0.6293, 0.7707)
    """
    values = [m["value"] for m in metrics]
    if not values or any(v is None for v in values):
        return interval(None)
    mean = float(np.mean(values))
    if not all(has_bounds(m) for m in metrics):
        return interval(mean)
    below = math.sqrt(sum((m["value"] - m["ci_low"]) ** 2 for m in metrics)) / len(metrics)
    above = math.sqrt(sum((m["ci_high"] - m["value"]) ** 2 for m in metrics)) / len(metrics)
    return interval(mean, mean - below, mean + above)


def format_metric(metric: dict | None, digits: int = 3) -> str:
    """A table cell: ``0.812 [0.700, 0.900]``; with repeats ``0.812 ± 0.030 [0.7, 0.9]``; ``n/a``.

    >>> format_metric(interval(0.8125, 0.7, 0.9)), format_metric(interval(0.5)), format_metric(None)
    ('0.812 [0.700, 0.900]', '0.500', 'n/a')
    """
    if metric is None or metric.get("value") is None:
        return "n/a"
    text = f"{metric['value']:.{digits}f}"
    if metric.get("std") is not None:
        text += f" ± {metric['std']:.{digits}f}"
    if has_bounds(metric):
        text += f" [{metric['ci_low']:.{digits}f}, {metric['ci_high']:.{digits}f}]"
    return text
