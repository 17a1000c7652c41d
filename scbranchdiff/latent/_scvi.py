"""scVI as the latent backend: posterior means in, expected expression and sampled counts out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from .._checks import check_counts
from ._base import DecodedCells, LatentBackend, per_type_rngs
from ._residual import CountOffset, CountResidual, count_residual_from_tensors, fit_count_residual

_SUPPORTED_SETUP_ARGS = {"layer", "batch_key"}


def counts_matrix(adata: AnnData, layer: str | None) -> Any:
    """The count matrix of `adata` (a layer or X), without copying (float16 is upcast)."""
    x = adata.X if layer is None else adata.layers[layer]
    if getattr(x, "dtype", None) == np.float16:  # torch layers and scVI's likelihoods need float32
        x = x.astype(np.float32)
    return x


class SCVILatent(LatentBackend):
    """An `scvi.model.SCVI` trained on the counts (or given already trained).

    Parameters
    ----------
    model
        An already trained SCVI model to reuse (not retrained). If None, one is trained on
        the registered counts by `fit`.
    n_latent
        Latent dimension of the SCVI trained by `fit`.
    scvi_kwargs
        Other arguments of `scvi.model.SCVI` (e.g. n_hidden, n_layers, gene_likelihood).

    Notes
    -----
    The internal model is set up on a minimal AnnData that shares the user's count matrix
    and batch column, so training it writes nothing into the user's AnnData.
    Library sizes (and batches) of generated cells are drawn from the training cells of the
    requested type, so generated cells have the depth distribution of real cells of that type.

    Examples
    --------
    The default backend of :class:`~scbranchdiff.model.BranchedDiffusion` (``latent="scvi"``);
    an scVI model trained elsewhere is wrapped as is:

    >>> import scvi
    >>> import scbranchdiff as sbd
    >>> adata = sbd.data.pbmc68k()
    >>> scvi.model.SCVI.setup_anndata(adata, layer="counts")
    >>> vae = scvi.model.SCVI(adata, n_latent=10)
    >>> vae.train(max_epochs=2, enable_progress_bar=False)
    >>> backend = sbd.latent.SCVILatent(vae)
    >>> backend.is_fitted, backend.encode(adata).shape
    (True, (700, 10))
    """

    kind = "scvi"

    def __init__(
        self,
        model: Any | None = None,
        n_latent: int = 10,
        scvi_kwargs: dict | None = None,
    ) -> None:
        import scvi

        if model is not None:
            if not isinstance(model, scvi.model.SCVI):
                raise TypeError(f"`latent` must be a scvi.model.SCVI, got {type(model).__name__}.")
            if not model.is_trained:
                raise ValueError("The scvi.model.SCVI given as `latent` has not been trained.")
        self.model = model
        self.external = model is not None
        self._n_latent = int(model.module.n_latent) if model is not None else int(n_latent)
        self.scvi_kwargs = _check_scvi_kwargs(scvi_kwargs) if model is None else dict(scvi_kwargs or {})
        self.setup_args: dict = {}
        # per cell type: log library sizes and batch codes of the training cells
        self.library: dict[str, np.ndarray] = {}
        self.library_batch: dict[str, np.ndarray] = {}
        # per added cell type: its residual on top of the frozen decoder (see add_cell_types)
        self.residuals: dict[str, CountResidual | CountOffset] = {}

    @property
    def n_latent(self) -> int:
        return self._n_latent

    @property
    def is_fitted(self) -> bool:
        return self.model is not None and self.model.is_trained

    @property
    def needs_fit(self) -> bool:
        # a given trained SCVI still needs the library sizes of the registered cell types
        return not (self.is_fitted and self.library)

    def _scvi_adata(self, adata: AnnData, layer: str | None, batch_key: str | None) -> AnnData:
        """A minimal AnnData sharing the count matrix, for the internal SCVI."""
        obs = pd.DataFrame(index=adata.obs_names.copy())
        if batch_key is not None:
            obs[batch_key] = adata.obs[batch_key].astype(str).values
        minimal = AnnData(X=counts_matrix(adata, layer), obs=obs)
        minimal.var_names = adata.var_names.copy()
        return minimal

    def fit(
        self,
        adata: AnnData,
        labels: np.ndarray,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        seed: int = 0,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | str = "auto",
        batch_size: int = 128,
        **train_kwargs: Any,
    ) -> None:
        """Train the internal SCVI (unless one was given) and record library sizes per type."""
        import scvi

        if not self.external:
            self.setup_args = {"layer": layer, "batch_key": batch_key}
            minimal = self._scvi_adata(adata, layer, batch_key)
            scvi.model.SCVI.setup_anndata(minimal, batch_key=batch_key)
            # the weights' initialisation and the minibatch order come from torch's global
            # generator: seeded here, the same `seed` gives the same scVI whatever ran before
            # (`BranchedDiffusion.train` seeds it with `seed` already, so its results are unchanged)
            torch.manual_seed(seed)
            self.model = scvi.model.SCVI(minimal, n_latent=self._n_latent, **self.scvi_kwargs)
            self.model.train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                batch_size=batch_size,
                **_seeded_split(minimal.n_obs, seed, train_kwargs),
            )
        self.library, self.library_batch, self.residuals = {}, {}, {}
        self.add_cell_types(adata, np.asarray(labels), layer)

    def _batch_codes(self, adata: AnnData) -> np.ndarray:
        if self.model.module.n_batch <= 1:
            return np.zeros(adata.n_obs, dtype=np.int64)
        data = adata if self.external else self._scvi_adata(adata, **self.setup_args)
        with _internal_setup_quiet():
            data = self.model._validate_anndata(data)
        manager = self.model.get_anndata_manager(data, required=True)
        return np.asarray(manager.get_from_registry("batch")).ravel().astype(np.int64)

    def check_values(self, adata: AnnData, layer: str | None, needed_by: str) -> None:
        """Raise unless the cells hold raw counts (what the scVI encoder was trained on)."""
        check_counts(adata, layer, needed_by, report_silent_genes=False)

    def encode(self, adata: AnnData, batch_size: int | None = None) -> np.ndarray:
        if self.external:
            return np.asarray(self.model.get_latent_representation(adata, batch_size=batch_size))
        with _internal_setup_quiet():
            data = self._scvi_adata(adata, **self.setup_args)
            return np.asarray(self.model.get_latent_representation(data, batch_size=batch_size))

    @torch.no_grad()
    def decode(
        self, latent: np.ndarray, cell_types: np.ndarray, rng: np.random.Generator
    ) -> DecodedCells:
        """Counts from latents: library sizes (and batches) drawn from real cells of each type.

        Each cell type is decoded on its own, with random numbers of its own (`per_type_rngs`),
        so a type's cells do not depend on which other types are decoded with them. Types added
        with a residual (`add_cell_types`) are decoded through it; the others never are.
        """
        module = self.model.module
        module.eval()
        device = next(module.parameters()).device
        cell_types = np.asarray(cell_types).astype(str)
        n = latent.shape[0]
        log_library = np.empty(n, dtype=np.float32)
        batch = np.zeros(n, dtype=np.int64)
        pieces = []
        for cell_type, type_rng in per_type_rngs(cell_types, rng).items():
            rows = np.nonzero(cell_types == cell_type)[0]
            pool = self.library[cell_type]
            pick = type_rng.integers(0, len(pool), size=len(rows))
            log_library[rows] = pool[pick]
            batch[rows] = self.library_batch[cell_type][pick]
            seed = int(type_rng.integers(0, 2**31 - 1))
            pieces.append((rows, *self._sample(latent[rows], log_library[rows], batch[rows],
                                               self.residuals.get(cell_type), seed, device)))
        if pieces:
            order = np.argsort(np.concatenate([p[0] for p in pieces]), kind="stable")
            counts = sp.vstack([p[1] for p in pieces], format="csr")[order]
            expected = np.concatenate([p[2] for p in pieces])[order]
        else:  # no cells: empty matrices with the model's genes
            n_genes = int(module.decoder.px_scale_decoder[0].out_features)
            counts, expected = sp.csr_matrix((0, n_genes), dtype=np.float32), np.zeros((0, n_genes), np.float32)
        obs = {"library_size": np.exp(log_library).round()}
        if module.n_batch > 1:
            # the batch each cell was decoded in, under the training data's batch column
            manager = self.model.adata_manager
            names = np.asarray(manager.get_state_registry("batch").categorical_mapping, dtype=object)
            key = manager.registry["setup_args"].get("batch_key") or "batch"
            obs[key] = pd.Categorical(names[batch], categories=pd.Index(names, dtype=object))
        return DecodedCells(X=counts, layers={"expected": expected}, obs=obs)

    def _sample(
        self, latent: np.ndarray, log_library: np.ndarray, batch: np.ndarray, residual: CountResidual | CountOffset | None,
        seed: int, device: torch.device,
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Sampled counts and expected expression of cells of one type (torch seeded by `seed`)."""
        if residual is not None:
            residual.to(device)
        expected, counts = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(latent), 4096):
                sl = slice(start, start + 4096)
                z = torch.as_tensor(latent[sl], dtype=torch.float32, device=device)
                lib = torch.as_tensor(log_library[sl, None], device=device)
                b = torch.as_tensor(batch[sl, None], device=device)
                px = self.model.module.generative(z, lib, b)["px"]
                if residual is not None:
                    px = residual(px, residual.sample_codes(len(z)))
                # NB/ZINB: the NB mean; Poisson: its rate
                expected.append((px.mu if hasattr(px, "mu") else px.mean).cpu().numpy().astype(np.float32))
                counts.append(sp.csr_matrix(px.sample().cpu().numpy().astype(np.float32)))
        return sp.vstack(counts, format="csr"), np.concatenate(expected)

    def config(self) -> dict:
        init = self.model.init_params_
        setup = self.model.adata_manager._get_setup_method_args()["setup_args"]
        extra = {k for k, v in setup.items() if v is not None} - _SUPPORTED_SETUP_ARGS
        if extra:
            raise ValueError(
                f"Cannot save an SCVI latent set up with {sorted(extra)}: only `layer` and "
                "`batch_key` are supported in saved scbranchdiff models."
            )
        batch_categories = None
        if self.model.module.n_batch > 1:
            mapping = self.model.adata_manager.get_state_registry("batch").categorical_mapping
            batch_categories = [str(c) for c in mapping]
        return {
            "n_latent": self._n_latent,
            "init_params": {**init["non_kwargs"], **init["kwargs"].get("kwargs", {})},
            "setup_args": self.setup_args
            if not self.external
            else {"layer": setup.get("layer"), "batch_key": setup.get("batch_key")},
            "batch_categories": batch_categories,
            "cell_types": list(self.library),
            **({"residual_types": list(self.residuals)} if self.residuals else {}),
        }

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"module.{k}": v.detach().cpu().numpy() for k, v in self.model.module.state_dict().items()}
        for i, cell_type in enumerate(self.library):
            out[f"library.{i}"] = self.library[cell_type].astype(np.float32)
            out[f"library_batch.{i}"] = self.library_batch[cell_type].astype(np.int64)
        for i, residual in enumerate(self.residuals.values()):
            out.update({f"residual.{i}.{k}": v.detach().cpu().numpy() for k, v in residual.state_dict().items()})
        return out

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray], adata: AnnData) -> SCVILatent:
        """Rebuild a saved backend; `adata` supplies the genes (and batch column)."""
        import scvi

        scvi_kwargs = {k: v for k, v in config["init_params"].items() if k != "n_latent"}
        backend = cls(n_latent=config["n_latent"], scvi_kwargs=scvi_kwargs)
        backend.setup_args = dict(config["setup_args"])
        minimal = backend._scvi_adata(adata, **backend.setup_args)
        if config["batch_categories"] is not None:
            key = backend.setup_args["batch_key"]
            minimal.obs[key] = pd.Categorical(minimal.obs[key], categories=config["batch_categories"])
        scvi.model.SCVI.setup_anndata(minimal, batch_key=backend.setup_args["batch_key"])
        backend.model = scvi.model.SCVI(minimal, n_latent=config["n_latent"], **backend.scvi_kwargs)
        state = {k[len("module."):]: torch.as_tensor(v) for k, v in tensors.items() if k.startswith("module.")}
        try:
            backend.model.module.load_state_dict(state)
        except RuntimeError as error:  # shapes that disagree with the saved settings
            first = str(error).strip().splitlines()[-1].strip()
            raise ValueError(f"model.safetensors is corrupted: latent.module: {first}") from None
        backend.model.module.eval()
        backend.model.is_trained_ = True
        for i, cell_type in enumerate(config["cell_types"]):
            backend.library[cell_type] = tensors[f"library.{i}"]
            backend.library_batch[cell_type] = tensors[f"library_batch.{i}"]
        for i, cell_type in enumerate(config.get("residual_types", [])):
            prefix = f"residual.{i}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            backend.residuals[cell_type] = count_residual_from_tensors(own)
        return backend

    def add_cell_types(
        self, adata: AnnData, labels: np.ndarray, layer: str | None, *, n_residual: int | None = None,
        seed: int = 0,
    ) -> None:
        """Record what decoding new cell types needs; the scVI model itself stays frozen.

        Records the types' library sizes (and batches). With ``n_residual=0`` each type also
        gets a `CountOffset`, with ``n_residual > 0`` a `CountResidual` with codes of that
        dimension, fitted on its cells on top of the frozen decoder: its generated cells are
        decoded with it, every other type's are not.
        All or nothing: the records change only when every type's values were computed.
        """
        counts = counts_matrix(adata, layer)
        log_library = np.log(np.asarray(counts.sum(axis=1)).ravel().clip(min=1.0))
        batches = self._batch_codes(adata)
        types = [str(c) for c in np.unique(labels)]
        library = {c: log_library[labels == c] for c in types}
        library_batch = {c: batches[labels == c] for c in types}
        residuals = {}
        if n_residual is not None:
            z = self.encode(adata)
            for k, c in enumerate(types):
                rows = np.nonzero(labels == c)[0]
                residuals[c] = fit_count_residual(
                    self.model.module, counts[rows], log_library[rows].astype(np.float32), batches[rows], z[rows],
                    n_dims=n_residual, seed=seed + k,
                )
        self.library.update(library)
        self.library_batch.update(library_batch)
        self.residuals.update(residuals)


def _seeded_split(n_cells: int, seed: int, train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`train_kwargs` with scVI's train/validation split drawn from `seed`.

    scvi-tools draws the split from its global ``scvi.settings.seed``, which is None unless a
    user sets it: the same `seed` then gave another scVI (and other generated cells) in every
    process. The split has scvi-tools' sizes (``train_size``, default 0.9, rounded up;
    ``validation_size``, default the rest) and is passed as ``external_indexing``. A split the
    user passes in ``datasplitter_kwargs`` is kept as it is.
    """
    kwargs = dict(train_kwargs)
    splitter = dict(kwargs.pop("datasplitter_kwargs", None) or {})
    if "external_indexing" in splitter:
        return {**kwargs, "datasplitter_kwargs": splitter}
    train_size = kwargs.pop("train_size", None)
    train_size = 0.9 if train_size is None else float(train_size)
    validation_size = kwargs.pop("validation_size", None)
    if not 0.0 < train_size <= 1.0:
        raise ValueError(f"`train_size` of the scVI stage must lie in (0, 1], got {train_size}.")
    n_train = int(np.ceil(train_size * n_cells))
    if validation_size is None:
        n_val = n_cells - n_train
    elif not 0.0 <= float(validation_size) < 1.0 or train_size + float(validation_size) > 1.0:
        raise ValueError(
            "`validation_size` of the scVI stage must lie in [0, 1) with train_size + "
            f"validation_size <= 1, got {validation_size}."
        )
    else:
        n_val = int(np.floor(float(validation_size) * n_cells))
    order = np.random.default_rng(seed).permutation(n_cells)
    splitter["external_indexing"] = [order[n_val : n_val + n_train], order[:n_val], order[n_val + n_train :]]
    return {**kwargs, "datasplitter_kwargs": splitter}


_SCVI_LIKELIHOODS = ("zinb", "nb", "poisson")
# set by the backend itself (or from the data), not by scvi_kwargs
_SCVI_FIXED = {"self", "adata", "registry", "kwargs", "n_input", "n_batch", "n_labels", "n_latent",
               "n_continuous_cov", "n_cats_per_cov", "library_log_means", "library_log_vars"}


def _check_scvi_kwargs(scvi_kwargs: dict | None) -> dict:
    """`scvi_kwargs` checked before anything trains: known names, supported values."""
    import inspect

    import scvi

    kwargs = dict(scvi_kwargs or {})
    allowed = (
        set(inspect.signature(scvi.model.SCVI.__init__).parameters)
        | set(inspect.signature(scvi.module.VAE.__init__).parameters)
    ) - _SCVI_FIXED
    if "n_latent" in kwargs:
        raise ValueError("Pass the latent dimension as `n_latent=`, not in `scvi_kwargs`.")
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"`scvi_kwargs` has arguments scvi.model.SCVI does not take: {unknown}.")
    likelihood = kwargs.get("gene_likelihood", "zinb")
    if likelihood not in _SCVI_LIKELIHOODS:
        raise ValueError(
            f"`scvi_kwargs['gene_likelihood']` must be one of {_SCVI_LIKELIHOODS} (count "
            f"likelihoods that generation can sample from), got {likelihood!r}."
        )
    for name in ("n_hidden", "n_layers"):
        value = kwargs.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"`scvi_kwargs['{name}']` must be a positive integer, got {value!r}.")
    dropout = kwargs.get("dropout_rate", 0.1)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"`scvi_kwargs['dropout_rate']` must lie in [0, 1), got {dropout!r}.")
    return kwargs


@contextmanager
def _internal_setup_quiet() -> Iterator[None]:
    """Hide scvi-tools' INFO "attempting to transfer AnnData setup" for our private AnnData.

    The internal scVI reads a minimal AnnData we build on every call (it shares the user's
    counts); transferring its setup is expected, so the message only clutters notebooks.
    """
    logger = logging.getLogger("scvi")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
