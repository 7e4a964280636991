"""The layer types: one module each, every module in this package imported and registered.

`REGISTRY` maps each section name and alias to its layer class (see base.py).
Adding a layer type is adding one module here; nothing else names it.
"""

from __future__ import annotations

import importlib
import pkgutil

from darkbp.layers.base import REGISTRY, Layer, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Layer", "register"]
