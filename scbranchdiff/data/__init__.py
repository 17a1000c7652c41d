"""Demo data: the bundled PBMC dataset and a count simulator with a known cell-type tree."""

from __future__ import annotations

from ._pbmc68k import pbmc68k
from ._simulate import DEFAULT_TREE, simulate_hierarchy

__all__ = ["DEFAULT_TREE", "pbmc68k", "simulate_hierarchy"]
