"""scbranchdiff: hierarchically branched diffusion models for single cells.

Subpackages that need torch (model, module, diffusion, latent, train) are imported on first use, so
``scbranchdiff.hierarchy`` and ``scbranchdiff.data`` work without loading torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("scbranchdiff")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from . import hierarchy  # noqa: E402
from .hierarchy import Branch, Hierarchy  # noqa: E402

_SUBPACKAGES = ("data", "diffusion", "latent", "metrics", "model", "module", "pl", "train")

__all__ = ["Branch", "Hierarchy", "__version__", "hierarchy", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
