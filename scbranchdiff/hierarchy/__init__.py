"""Class hierarchies over diffusion time: the `Hierarchy` value type and its discovery from data.

Pure numpy / scipy / pandas: importable without torch.
"""

from ._discovery import crossover_times, discover_hierarchy, fit_split_times
from ._hierarchy import Branch, Hierarchy
from ._insert import insert_classes
from ._spec import LABEL_GUIDED, HierarchySpec, is_label_guided, parse_hierarchy_spec
from ._topology import Topology

__all__ = [
    "LABEL_GUIDED",
    "Branch",
    "Hierarchy",
    "HierarchySpec",
    "Topology",
    "crossover_times",
    "discover_hierarchy",
    "fit_split_times",
    "insert_classes",
    "is_label_guided",
    "parse_hierarchy_spec",
]
