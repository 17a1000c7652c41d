"""Pure-torch modules: the branched score network and its training plan."""

from ._network import BranchedScoreNetwork

__all__ = ["BranchedScoreNetwork"]
