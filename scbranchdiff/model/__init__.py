"""The scvi-tools model class."""

from ._model import BranchedDiffusion

__all__ = ["BranchedDiffusion"]
