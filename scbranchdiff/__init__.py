"""scbranchdiff: hierarchically branched diffusion models for single cells.

Subpackages that need torch (model, module, diffusion, latent, train) are imported on first use, so
``scbranchdiff.hierarchy`` and ``scbranchdiff.data`` work without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import hierarchy
from ._version import __version__
from .hierarchy import Branch, Hierarchy

_SUBPACKAGES = ("data", "diffusion", "latent", "metrics", "model", "module", "pl", "train")

__all__ = ["Branch", "Hierarchy", "__version__", "hierarchy", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
