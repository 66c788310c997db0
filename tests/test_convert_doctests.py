"""The docstring examples of the convert package and of the shared readers it uses are run, so they
stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "convert.instances",
    "convert.layout",
    "convert.pipeline",
    "convert.reader",
    "convert.registry",
    "convert.split",
    "convert.writers",
    "defectkit.imageio",
    "defectkit.rle",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
