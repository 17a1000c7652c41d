"""Class hierarchies over diffusion time: the `Hierarchy` value type and its discovery from data.

Pure numpy / scipy / pandas: importable without torch.
"""

from ._agreement import robinson_foulds, tree_agreement, triplet_agreement
from ._discovery import crossover_times, discover_hierarchy, fit_split_times
from ._hierarchy import Branch, Hierarchy
from ._insert import insert_classes
from ._scale import SCALES, log_snr, time_at_log_snr
from ._spec import LABEL_GUIDED, HierarchySpec, is_label_guided, parse_hierarchy_spec
from ._topology import Topology

__all__ = [
    "LABEL_GUIDED",
    "SCALES",
    "Branch",
    "Hierarchy",
    "HierarchySpec",
    "Topology",
    "crossover_times",
    "discover_hierarchy",
    "fit_split_times",
    "insert_classes",
    "is_label_guided",
    "log_snr",
    "parse_hierarchy_spec",
    "robinson_foulds",
    "time_at_log_snr",
    "tree_agreement",
    "triplet_agreement",
]
