"""scbranchdiff: hierarchically branched diffusion models for single cells."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scbranchdiff")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from . import data, diffusion, hierarchy, latent, metrics, model, module, pl  # noqa: E402
from .hierarchy import Branch, Hierarchy  # noqa: E402

__all__ = [
    "Branch",
    "Hierarchy",
    "__version__",
    "data",
    "diffusion",
    "hierarchy",
    "latent",
    "metrics",
    "model",
    "module",
    "pl",
]
