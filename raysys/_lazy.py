"""Lazy package exports (PEP 562).

`raysys.eval.config` or `raysys.models.config` are light, but importing them runs their
package's `__init__`; with eager re-exports that pulled in sklearn and torchvision (~3.5 s),
which every Ray worker paid at start-up. A lazy `__getattr__` imports a name's module on
first use instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """`(__getattr__, __all__)` for `package`; `exports` maps a name to its submodule."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__, sorted(exports)
