"""Package attributes that load their module on first use (PEP 562), so that importing one
submodule of a stage, as its command-line entry point does, does not load all the others.

A stage's ``__init__`` re-exports its public names for ``from defectkit.detect import ...``; done
with plain imports, ``detect --help`` would first load ultralytics and torch (seconds) only to
print its options.

>>> __all__, __getattr__, __dir__ = lazy_exports("defectkit.core", {"DefectkitError": "defectkit.core.errors"})
>>> __all__, __getattr__("DefectkitError").__name__
(['DefectkitError'], 'DefectkitError')
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(
    package: str, names: dict[str, str]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """(``__all__``, ``__getattr__``, ``__dir__``) for ``package``: each name in ``names`` (name ->
    module) is imported from its module the first time it is read, then kept in the package's namespace."""

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # once: later lookups do not come back here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return sorted(names), __getattr__, __dir__
