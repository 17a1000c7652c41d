"""`BranchedDiffusion`: the AnnData-facing scvi-tools model. It wires the parts, no maths here."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass

from .._checks import (
    align_genes,
    check_anndata,
    check_labels,
    check_non_negative_int,
    check_positive_int,
    expression_matrix,
)
from ..diffusion import VPSDE
from ..hierarchy import Hierarchy, HierarchySpec, is_label_guided, parse_hierarchy_spec
from ..latent import make_backend
from ..module import BranchedScoreNetwork
from ._continual import ContinualLearningMixin
from ._generation import GenerationMixin
from ._saving import SaveLoadMixin
from ._training import TrainingMixin
from ._transmute import TransmutationMixin

logger = logging.getLogger(__name__)


class BranchedDiffusion(
    TrainingMixin,
    GenerationMixin,
    TransmutationMixin,
    ContinualLearningMixin,
    SaveLoadMixin,
    BaseModelClass,
):
    """Hierarchically branched diffusion model of single cells (Tseng et al., TMLR 2024).

    Learns a cell-type hierarchy from the data, trains one reverse-diffusion branch per part
    of it in a latent space (scVI by default) and generates, transmutes and interpolates cells.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    registry
        Registry of a saved model (used by :meth:`load`; leave None).
    latent
        Where the diffusion runs: "scvi" (an SCVI trained on the counts by :meth:`train`),
        an already trained :class:`scvi.model.SCVI` (reused as is), "pca" (PCA of
        log-normalised data) or the name of an ``adata.obsm`` key (a precomputed embedding;
        generation then returns latents only).
    n_latent
        Latent dimension for "scvi" and "pca".
    hierarchy
        "auto" (discovered from the data, in the scaled latent, with the training SDE),
        "flat" (one branch with a class embedding: the paper's label-guided baseline), a list
        of obs columns from coarse to fine (topology from the annotation, split times from the
        data), a nested dict or Newick string (topology by hand; Newick with branch lengths
        fixes the times too), or a :class:`~scbranchdiff.Hierarchy`.
    n_hidden
        Width of the score network.
    n_trunk_blocks
        Residual blocks shared by every branch.
    n_head_blocks
        Residual blocks in each branch's head before its per-branch affine map and output
        layer. 0 (default) evaluates all heads of a batch in one gathered operation, so
        branched training costs about as much as flat training; see
        :class:`~scbranchdiff.module.BranchedScoreNetwork`.
    latent_scaling
        "global" (centre, one scale for all dimensions: keeps the latent geometry) or
        "per_dimension" (standardise each dimension).
    beta_min, beta_max
        Linear noise schedule of the VP SDE (beta_max = 20 reaches the N(0, I) prior).
    discovery_kwargs
        Passed to :func:`~scbranchdiff.hierarchy.discover_hierarchy`.
    scvi_kwargs
        Passed to :class:`scvi.model.SCVI` when ``latent="scvi"``.

    Examples
    --------
    >>> import scbranchdiff as sbd
    >>> adata = sbd.data.pbmc68k()
    >>> sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    >>> model = sbd.model.BranchedDiffusion(adata)
    >>> model.train()  # doctest: +SKIP
    >>> cells = model.generate(200, seed=0)  # doctest: +SKIP
    """

    _module_cls = BranchedScoreNetwork

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        latent: str | Any = "scvi",
        n_latent: int = 10,
        hierarchy: HierarchySpec = "auto",
        n_hidden: int = 256,
        n_trunk_blocks: int = 3,
        n_head_blocks: int = 0,
        latent_scaling: str = "global",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        discovery_kwargs: dict | None = None,
        scvi_kwargs: dict | None = None,
    ) -> None:
        check_positive_int("n_latent", n_latent)
        check_positive_int("n_hidden", n_hidden)
        check_non_negative_int("n_trunk_blocks", n_trunk_blocks)
        check_non_negative_int("n_head_blocks", n_head_blocks)
        super().__init__(adata, registry)
        if latent_scaling not in ("global", "per_dimension"):
            raise ValueError(
                f"`latent_scaling` must be 'global' or 'per_dimension', got {latent_scaling!r}."
            )
        self.sde = VPSDE(beta_min=beta_min, beta_max=beta_max)
        self.classes: tuple[str, ...] = self._registered_classes()
        self.latent_backend = make_backend(
            latent, self.adata, layer=self.layer, n_latent=n_latent, scvi_kwargs=scvi_kwargs
        )
        self._hierarchy_spec = parse_hierarchy_spec(
            hierarchy, self.classes, obs=self.adata.obs, labels_key=self.labels_key
        )
        # the paper's flat baseline: one branch, the class is an input of the network
        self.is_label_guided = is_label_guided(hierarchy)
        self.hierarchy_: Hierarchy | None = None
        if isinstance(hierarchy, Hierarchy):
            # a given hierarchy fixes the class order (e.g. a saved model's, new types last)
            self.hierarchy_ = hierarchy
            self.classes = hierarchy.classes
        self.network_config = {
            "n_hidden": int(n_hidden),
            "n_trunk_blocks": int(n_trunk_blocks),
            "n_head_blocks": int(n_head_blocks),
        }
        self.latent_scaling = latent_scaling
        self.discovery_kwargs = dict(discovery_kwargs or {})
        self.latent_mean_: np.ndarray | None = None
        self.latent_scale_: np.ndarray | None = None
        # per-class mean and covariance of the scaled latent (transmutation's moment matching)
        self.class_mean_: np.ndarray | None = None
        self.class_cov_: np.ndarray | None = None
        self.module: BranchedScoreNetwork | None = None
        self.train_settings_: dict[str, Any] = {}
        # loaded without an AnnData: set up on one empty cell per type (generation only)
        self.has_placeholder_adata = False
        self._model_summary_string = "BranchedDiffusion"
        self.init_params_ = self._get_init_params(locals())
        if not isinstance(latent, str):
            # an SCVI instance or backend is not a plain value: record what it is
            self.init_params_["non_kwargs"]["latent"] = self.latent_backend.kind

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str,
        layer: str | None = None,
        batch_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Register the AnnData fields the model uses (scvi-tools convention).

        Parameters
        ----------
        adata
            Cells x genes. Counts (for ``latent="scvi"``) or log-normalised values.
        labels_key
            obs column with the cell type of every cell (no missing values).
        layer
            Layer with the expression to use; None uses ``adata.X``.
        batch_key
            obs column with batches, passed to the internal scVI model.

        Notes
        -----
        Like every scvi-tools model, this writes the registry into ``adata.uns`` and scvi-tools'
        internal columns into ``adata.obs``. Bad input raises before anything is written.

        Examples
        --------
        >>> import scbranchdiff as sbd
        >>> adata = sbd.data.pbmc68k()
        >>> sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
        """
        check_anndata(adata)
        check_labels(adata, labels_key)
        for name, key in (("labels_key", labels_key), ("batch_key", batch_key)):
            if isinstance(key, str) and key.startswith("_scvi"):
                raise ValueError(
                    f"`{name}={key!r}`: columns starting with '_scvi' are scvi-tools' own (setup "
                    "would overwrite it); copy it to a column of another name."
                )
        expression_matrix(adata, layer)
        if batch_key is not None and batch_key not in adata.obs:
            raise KeyError(f"`batch_key={batch_key!r}` is not a column of adata.obs.")
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @property
    def labels_key(self) -> str:
        """The obs column with cell types."""
        return self.adata_manager.registry["setup_args"]["labels_key"]

    @property
    def layer(self) -> str | None:
        """The layer with expression (None: X)."""
        return self.adata_manager.registry["setup_args"]["layer"]

    @property
    def batch_key(self) -> str | None:
        """The obs column with batches, if any."""
        return self.adata_manager.registry["setup_args"]["batch_key"]

    def _registered_classes(self) -> tuple[str, ...]:
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping
        present = set(self.adata.obs[self.labels_key].astype(str).unique())
        classes = tuple(str(c) for c in mapping if str(c) in present)
        unused = [str(c) for c in mapping if str(c) not in present]
        if unused:
            warnings.warn(f"Ignoring cell types with no cells: {unused}.", UserWarning, stacklevel=3)
        return classes

    # ------------------------------------------------------------------ properties
    @property
    def hierarchy(self) -> Hierarchy:
        """The branches of the model (discovered or given)."""
        if self.hierarchy_ is None:
            raise RuntimeError("The hierarchy is not known yet: call `train()` first.")
        return self.hierarchy_

    def __repr__(self) -> str:
        lines = [
            f"BranchedDiffusion of {len(self.classes)} cell types "
            f"({'flat, label-guided' if self.is_label_guided else 'branched'}), "
            f"latent: {self.latent_backend.kind} (n_latent={self._n_latent_or_none()}), "
            f"trained: {self.is_trained}",
        ]
        if self.module is not None:
            n_params = sum(p.numel() for p in self.module.parameters())
            lines.append(
                f"Score network: {n_params:,} parameters, {len(self.module.heads)} heads, "
                f"width {self.network_config['n_hidden']}."
            )
        if self.hierarchy_ is not None:
            lines.append(repr(self.hierarchy_))
        return "\n".join(lines)

    def _n_latent_or_none(self) -> int | None:
        try:
            return self.latent_backend.n_latent
        except RuntimeError:
            return None

    # ------------------------------------------------------------------ latent space
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        *,
        scaled: bool = False,
    ) -> np.ndarray:
        """Latent coordinates of cells (the backend's space, before scaling).

        Parameters
        ----------
        adata
            AnnData with the same genes; None uses the registered one.
        indices
            Cells to encode; None encodes all.
        batch_size
            Minibatch size for the encoder.
        scaled
            Return the centred and scaled coordinates the diffusion runs on (needs a trained
            model) instead of the backend's.

        Returns
        -------
        Array of shape (n_cells, n_latent).

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> z = model.get_latent_representation()  # cells x n_latent
        >>> z.shape == (model.adata.n_obs, model.latent_backend.n_latent)
        True
        """
        self._check_latent_ready()
        if adata is None:
            self._check_real_cells("`get_latent_representation()`")
            adata = self.adata
        else:
            # checked and reordered by gene name without registering it: nothing is written into
            # it, so views and never set-up AnnData are fine
            if not isinstance(adata, AnnData):
                raise TypeError(f"`adata` must be an AnnData or None, got {type(adata).__name__}.")
            adata = align_genes(adata, self.adata.var_names)
            expression_matrix(adata, self.layer)
        if indices is not None:
            adata = adata[np.asarray(indices)]
        if scaled:
            self._check_trained()
            return self._scale(self.latent_backend.encode(adata, batch_size=batch_size))
        return self.latent_backend.encode(adata, batch_size=batch_size)

    def _check_real_cells(self, what: str) -> None:
        """Raise when `what` would read the registered cells of a model loaded without any."""
        if self.has_placeholder_adata:
            raise ValueError(
                f"{what} reads the registered cells, but the model was loaded without an AnnData: "
                "pass the cells (`adata=`), or load the model with `adata=`."
            )

    def _check_trained(self) -> None:
        if self.module is None or not self.is_trained:
            raise RuntimeError("The model is not trained: call `train()` before generating.")

    def _check_latent_ready(self) -> None:
        if not self.latent_backend.is_fitted:
            raise RuntimeError("The latent model is not trained yet: call `train()` first.")

    def _scale(self, z: np.ndarray) -> np.ndarray:
        return ((z - self.latent_mean_) / self.latent_scale_).astype(np.float32)

    def _unscale(self, z: np.ndarray) -> np.ndarray:
        return (z * self.latent_scale_ + self.latent_mean_).astype(np.float32)

    def _fit_scaling(self, z: np.ndarray) -> None:
        self.latent_mean_ = z.mean(axis=0).astype(np.float32)
        sd = z.std(axis=0).astype(np.float32)
        if self.latent_scaling == "global":
            # one scale for every dimension: the latent's geometry is kept (per-dimension
            # standardisation blurs the tree: docs/concepts.md, "Where the splits come from")
            sd = np.full_like(sd, float(np.sqrt(np.mean(sd**2))))
        self.latent_scale_ = np.maximum(sd, 1e-6)

    # ------------------------------------------------------------------ training
