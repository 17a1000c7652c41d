"""Generated-vs-real metrics per cell type, with a split-half real-vs-real reference.

Start with :func:`evaluate`; the metric functions it uses are public and take arrays.
"""

from ._classifiers import c2st_auc, fit_label_classifier, label_transfer_accuracy
from ._distances import MMD_BANDWIDTH_FACTORS, energy_distance, mmd_rbf, wasserstein2
from ._evaluate import METRICS, evaluate
from ._expression import marker_genes, marker_overlap, mean_var_correlation
from ._peers import PEER_METRICS, PEER_MMD_SIGMAS, peer_mmd, peer_protocol
from ._representation import ExpressionPCA, fit_expression_pca, log_normalise

__all__ = [
    "METRICS",
    "MMD_BANDWIDTH_FACTORS",
    "PEER_METRICS",
    "PEER_MMD_SIGMAS",
    "ExpressionPCA",
    "c2st_auc",
    "energy_distance",
    "evaluate",
    "fit_expression_pca",
    "fit_label_classifier",
    "label_transfer_accuracy",
    "log_normalise",
    "marker_genes",
    "marker_overlap",
    "mean_var_correlation",
    "mmd_rbf",
    "peer_mmd",
    "peer_protocol",
    "wasserstein2",
]
