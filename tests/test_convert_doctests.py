"""The docstring examples of the convert package and of the shared readers it uses are run, so they
stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "defectkit.convert.instances",
    "defectkit.core.layout",
    "defectkit.convert.pipeline",
    "defectkit.convert.reader",
    "defectkit.convert.registry",
    "defectkit.convert.split",
    "defectkit.convert.writers",
    "defectkit.core.imageio",
    "defectkit.core.rle",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
