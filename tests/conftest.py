"""Shared fixtures: the bundled synthetic sample, written once per test session, and its conversion.

Every stage's tests run on these, offline and on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Never touch the network from tests: weight fetches fail at once with a clear message.
os.environ.setdefault("DEFECTKIT_OFFLINE", "1")


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A data root holding the bundled sample: ``wood`` (RGB 256x256) and ``wood_gray`` (192x256)."""
    from defectkit.sample import write_sample

    root = tmp_path_factory.mktemp("sample")
    write_sample(root)
    return root


@pytest.fixture(scope="session")
def converted(sample_root, tmp_path_factory) -> Path:
    """``convert-mvtec wood --to all`` on the sample; returns ``<out>/wood`` (split.json, yolo/, coco/, ...)."""
    from defectkit.convert import convert_category

    out = tmp_path_factory.mktemp("converted")
    convert_category(sample_root, "wood", out, to=("all",), progress=False)
    return out / "wood"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module: on a small shared box, two threads fighting other
    jobs for two cores run tiny models several times slower than one (use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
