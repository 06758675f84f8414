"""Package attributes imported on first use (PEP 562), so importing a package stays cheap.

A package whose submodules pull in torch, transformers or peft names them here instead of importing
them at the top: ``__getattr__ = lazy_attributes(__name__, {"name": "package.submodule", ...})``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that imports each name from the module ``modules`` gives for it."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
