"""Pure-torch modules: the branched score network and the (class, t) -> branch routing."""

from ._lookup import BranchLookup
from ._network import BranchedScoreNetwork

__all__ = ["BranchLookup", "BranchedScoreNetwork"]
