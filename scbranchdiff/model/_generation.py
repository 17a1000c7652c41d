"""Generation: the model's tree sampler, cells of requested types, in memory or streamed to disk.

A mixin of :class:`~scbranchdiff.model.BranchedDiffusion`; it adds no state.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import __version__
from .._checks import check_positive_int, check_seed
from .._frames import plain_strings
from ..diffusion import SAMPLERS, TreeSampler
from ._streaming import H5adAppender

DEFAULT_SAMPLER = "ancestral"
# Measured (docs/concepts.md, "Choosing a sampler"; benchmarks/samplers.py): ancestral sampling
# with 49 steps (50 network evaluations with the final denoising) scored a latent AUC equal to or
# better than the former default (Euler-Maruyama, 200 steps) and than 500 Euler-Maruyama steps on
# pbmc68k, pbmc_facs, paul15 and simulated data, generating ~4x faster than the former default.
DEFAULT_N_STEPS = {"sde": 200, "ode": 100, "ancestral": 49, "dpm++": 49}
# More steps than this change nothing measurable (docs/concepts.md) and take hours.
MAX_STEPS = 10_000
# An in-memory generation larger than this share of the available memory is refused.
_MEMORY_SHARE = 0.5


@contextmanager
def cells_bar(total: int, description: str, show: bool | None) -> Iterator[Callable[[int], None]]:
    """A progress bar over cells; yields its ``update``. None shows it at scvi's INFO verbosity."""
    import scvi
    from tqdm.auto import tqdm

    if show is None:
        show = scvi.settings.verbosity <= logging.INFO
    bar = tqdm(total=total, desc=description, unit="cells", disable=not show, file=sys.stderr)
    try:
        yield bar.update
    finally:
        bar.close()


class GenerationMixin:
    """Generation for :class:`~scbranchdiff.model.BranchedDiffusion`."""

    def _sampler(
        self, sampler: str, n_steps: int | None, seed: int, progress: Callable[[int], None] | None = None
    ) -> TreeSampler:
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        n_steps = DEFAULT_N_STEPS[sampler] if n_steps is None else check_positive_int("n_steps", n_steps)
        if n_steps > MAX_STEPS:
            raise ValueError(
                f"`n_steps={n_steps}` is more than {MAX_STEPS:,} steps (the default is "
                f"{DEFAULT_N_STEPS[sampler]}); more steps change nothing measurable and take "
                "hours: pass at most that many."
            )
        network = self.module
        network.eval()

        def eps_model(x, t, branch, cell_type):
            return network(x, t, branch, cell_type)

        return TreeSampler(
            eps_model=eps_model,
            hierarchy=self.hierarchy,
            sde=self.sde,
            n_steps=n_steps,
            method=sampler,
            seed=seed,
            class_conditional=network.class_conditional,
            n_latent=network.n_latent,
            device=self.device,
            progress=progress,
        )

    def _requested_counts(self, n_cells: int | Mapping[str, int]) -> dict[int, int]:
        if isinstance(n_cells, Mapping):
            unknown = [c for c in n_cells if c not in self.classes]
            if unknown:
                raise KeyError(f"Unknown cell types {unknown}; the model knows {list(self.classes)}.")
            counts = {str(c): n for c, n in n_cells.items()}
        elif isinstance(n_cells, int | np.integer) and not isinstance(n_cells, bool):
            counts = {c: int(n_cells) for c in self.classes}
        else:
            raise TypeError(
                f"`n_cells` must be an int or a mapping of cell type -> int, got {type(n_cells).__name__}."
            )
        bad = {
            c: n for c, n in counts.items()
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0
        }
        if bad:
            raise ValueError(f"`n_cells` must be positive integers, got {bad}.")
        if not counts:
            raise ValueError("`n_cells` requests no cells.")
        index = self.hierarchy.class_index(list(counts))
        return {int(k): int(n) for k, n in zip(index, counts.values(), strict=True)}

    def generate(
        self,
        n_cells: int | Mapping[str, int],
        *,
        sampler: str = DEFAULT_SAMPLER,
        n_steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 10_000,
        progress_bar: bool | None = None,
    ) -> AnnData:
        """Generate synthetic cells of the requested types.

        Cells of all requested types are sampled together: each branch segment is integrated
        once and its children start from its states (shared prefixes).

        Parameters
        ----------
        n_cells
            Cells per type: one int for every type, or a mapping ``{cell_type: n}``.
        sampler
            "ancestral" (default: each step draws from the Gaussian posterior
            q(x_s | x_t, x0_hat), on an EDM time grid: few steps), "dpm++" (stochastic
            DPM-Solver++(2M): ancestral steps with a second-order estimate of x0, same grid),
            "sde" (Euler-Maruyama on the reverse SDE) or "ode" (Heun on the probability-flow
            ODE: deterministic). See docs/concepts.md, "Choosing a sampler".
        n_steps
            Steps from t = 1 to 0 (default 200 for "sde", 49 for "ancestral" and "dpm++", 100
            for "ode"); each step costs one network evaluation (two for "ode"), plus one for
            the final denoising.
        seed
            Seed; the same seed gives the same cells. None draws one (recorded in ``uns``).
        batch_size
            At most this many cells per type are integrated at once.
        progress_bar
            Show a progress bar over cells (None: at scvi-tools' INFO verbosity,
            ``scvi.settings.verbosity``).

        Returns
        -------
        AnnData with ``var`` of the training data: ``X`` sampled counts (scVI latent; decoded
        expression for PCA; no genes for an obsm latent), ``layers["expected"]`` the decoded
        mean expression, ``obs[labels_key]`` the type, ``obs["generated"] = True``,
        ``obsm["X_latent"]`` the latent and ``uns["scbranchdiff"]`` the settings and seed.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> cells = model.generate({"CD14+ Monocyte": 30, "CD19+ B": 20}, seed=0)
        >>> cells.obs["bulk_labels"].value_counts()[["CD14+ Monocyte", "CD19+ B"]].tolist()
        [30, 20]
        >>> cells.X.shape[1] == model.adata.n_vars
        True
        """
        self._check_trained()
        counts = self._requested_counts(n_cells)
        check_positive_int("batch_size", batch_size)
        seed = _resolve_seed(seed)
        self._check_in_memory_size(sum(counts.values()))
        latents: dict[int, list[np.ndarray]] = {k: [] for k in counts}
        with cells_bar(sum(counts.values()), "Generating", progress_bar) as update:
            tree = self._sampler(sampler, n_steps, seed, progress=update)
            for _, chunk_latents in self._latent_chunks(tree, counts, batch_size):
                for k, z in chunk_latents.items():
                    latents[k].append(z)
        order = sorted(counts)
        z = np.concatenate([np.concatenate(latents[k]) for k in order])
        types = np.repeat([self.hierarchy.classes[k] for k in order], [counts[k] for k in order])
        out = self._to_anndata(z, types, seed)
        out.uns["scbranchdiff"] = self._provenance(sampler=sampler, n_steps=tree.n_steps, seed=seed)
        return out

    def _check_in_memory_size(self, n_total: int) -> None:
        """Refuse a generation whose AnnData would not fit in memory, with the estimate."""
        n_genes = self.adata.n_vars if self.latent_backend.can_decode else 0
        # latents + dense expected expression + counts (sparse, counted as dense: worst case)
        estimate = n_total * (self.latent_backend.n_latent + 3 * n_genes) * 4
        available = _available_memory()
        if available is not None and estimate > _MEMORY_SHARE * available:
            raise MemoryError(
                f"Generating {n_total:,} cells in memory needs about {estimate / 2**30:.1f} GiB; "
                f"{available / 2**30:.1f} GiB are available. Use `generate_to_file`, which "
                "streams the cells to disk chunk by chunk, or request fewer cells."
            )

    def _latent_chunks(
        self, tree: TreeSampler, counts: Mapping[int, int], batch_size: int
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Latents (unscaled) in chunks of at most `batch_size` cells per type, chunk by chunk."""
        n_chunks = int(np.ceil(max(counts.values()) / batch_size))
        for chunk in range(n_chunks):
            chunk_counts = {
                k: min(batch_size, n - chunk * batch_size) for k, n in counts.items() if n > chunk * batch_size
            }
            latents = tree.generate(chunk_counts, chunk=chunk)
            yield chunk, {k: self._unscale(x.cpu().numpy()) for k, x in sorted(latents.items())}

    def generate_to_file(
        self,
        path: str | Path,
        n_cells: int | Mapping[str, int],
        *,
        sampler: str = DEFAULT_SAMPLER,
        n_steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 10_000,
        expected: bool = False,
        overwrite: bool = False,
        progress_bar: bool | None = None,
    ) -> Path:
        """Generate cells straight into an .h5ad file, chunk by chunk, with bounded memory.

        For populations too large to hold in memory (a million cells and more): each chunk of
        at most `batch_size` cells per type is sampled, decoded and appended to the file before
        the next starts. The file is written beside `path` and renamed when complete. Open it
        with ``anndata.read_h5ad(path, backed="r")`` to read it without loading X.

        Parameters
        ----------
        path
            Target file, ending in ".h5ad".
        n_cells, sampler, n_steps, seed
            As in :meth:`generate`. For a given seed, the latents of each type are those
            :meth:`generate` returns with the same `batch_size`; counts are drawn per chunk.
        batch_size
            Cells per type in one chunk: peak memory grows with it.
        expected
            Also write ``layers["expected"]`` (dense decoded means: 4 bytes per cell and gene).
        overwrite
            Replace an existing file.
        progress_bar
            As in :meth:`generate`.

        Returns
        -------
        The path of the file: ``X`` sampled counts (CSR; decoded expression for a PCA latent,
        absent for an obsm latent), ``obs[labels_key]``, ``obs["generated"]``, per-cell decoding
        values such as ``obs["library_size"]``, ``obsm["X_latent"]`` and ``uns["scbranchdiff"]``.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import anndata as ad
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5ad")
        >>> _ = model.generate_to_file(path, 20, n_steps=50, seed=0)
        >>> ad.read_h5ad(path, backed="r").n_obs  # 20 cells of each of 10 types
        200
        """
        self._check_trained()
        counts = self._requested_counts(n_cells)
        check_positive_int("batch_size", batch_size)
        seed = _resolve_seed(seed)
        backend = self.latent_backend
        classes = list(self.classes)
        codes: list[np.ndarray] = []
        extra_obs: dict[str, list[np.ndarray]] = {}
        with (
            H5adAppender(path, overwrite=overwrite) as out,
            cells_bar(sum(counts.values()), "Generating", progress_bar) as update,
        ):
            tree = self._sampler(sampler, n_steps, seed, progress=update)
            for chunk, latents in self._latent_chunks(tree, counts, int(batch_size)):
                z = np.concatenate(list(latents.values()))
                types = np.repeat([self.hierarchy.classes[k] for k in latents], [len(v) for v in latents.values()])
                codes.append(pd.Categorical(types, categories=classes).codes.astype(np.int16))
                out.append("obsm/X_latent", z)
                if not backend.can_decode:
                    continue
                decoded = backend.decode(z, types, np.random.default_rng([seed, chunk]))
                out.append("X", decoded.X)
                if self.layer is not None and self.layer not in decoded.layers:
                    out.append(f"layers/{self.layer}", decoded.X)  # the training data's layout
                if expected and "expected" in decoded.layers:
                    out.append("layers/expected", decoded.layers["expected"])
                for key, value in decoded.obs.items():
                    extra_obs.setdefault(key, []).append(np.asarray(value))
            n_total = sum(len(c) for c in codes)
            call_id = uuid.uuid4().hex[:8]
            obs = pd.DataFrame(index=pd.Index([f"gen-{call_id}-{i}" for i in range(n_total)], dtype=object))
            obs[self.labels_key] = pd.Categorical.from_codes(np.concatenate(codes), categories=classes)
            obs["generated"] = True
            for key, values in extra_obs.items():
                obs[key] = np.concatenate(values)
            var = self.adata.var.copy() if backend.can_decode else pd.DataFrame(index=pd.Index([], dtype=object))
            out.finish(plain_strings(obs), plain_strings(var), {"scbranchdiff": self._provenance(sampler=sampler, n_steps=tree.n_steps, seed=seed)})
        return Path(path)

    def _provenance(self, **settings: Any) -> dict[str, Any]:
        return {
            "version": __version__,
            "model": "flat" if self.is_label_guided else "branched",
            "latent": self.latent_backend.kind,
            "hierarchy_newick": self.hierarchy.to_newick(),
            **settings,
        }

    def decode_latent(self, latent: np.ndarray, cell_types: Sequence[str], *, seed: int = 0) -> AnnData:
        """Cells from latent coordinates (the backend's space), as :meth:`generate` returns them.

        Useful to decode latents made elsewhere (e.g. by another generator, or real cells'
        latents) exactly as the model decodes its own.

        Parameters
        ----------
        latent
            Coordinates, cells x ``latent_backend.n_latent``, in the backend's (unscaled) space.
        cell_types
            The cell type of every row (types the model knows): scVI draws library sizes and
            batches from the training cells of that type.
        seed
            Seed of the decoding (library sizes, sampled counts).

        Returns
        -------
        AnnData like :meth:`generate`'s.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example), real cells decoded by the model:

        >>> z = model.get_latent_representation()[:5]
        >>> cells = model.decode_latent(z, model.adata.obs["bulk_labels"][:5].astype(str), seed=0)
        >>> cells.n_obs, cells.n_vars == model.adata.n_vars
        (5, True)
        """
        self._check_trained()
        latent = np.asarray(latent, dtype=np.float32)
        n_latent = self.latent_backend.n_latent
        if latent.ndim != 2 or latent.shape[1] != n_latent or not np.isfinite(latent).all():
            raise ValueError(
                f"`latent` must be a finite array of shape (n_cells, {n_latent}), got shape "
                f"{latent.shape}."
            )
        types = np.asarray([str(c) for c in cell_types], dtype=object)
        if len(types) != len(latent):
            raise ValueError(f"`cell_types` has {len(types)} entries for {len(latent)} latent rows.")
        unknown = sorted(set(types) - set(self.classes))
        if unknown:
            raise KeyError(f"Unknown cell types {unknown}; the model knows {list(self.classes)}.")
        return self._to_anndata(latent, types, check_seed(seed))

    def _to_anndata(self, z: np.ndarray, types: np.ndarray, seed: int) -> AnnData:
        """Decode latents into a new AnnData with `var` of the training data.

        ``X`` holds the decoded cells (counts for scVI) and the registered layer a copy of
        them, so a scanpy workflow that normalises ``X`` in place keeps the counts. Cells are
        named ``gen-<call id>-<i>``: names stay unique when outputs of several calls are
        concatenated.
        """
        rng = np.random.default_rng(seed)
        decoded = self.latent_backend.decode(z, types, rng)
        call_id = uuid.uuid4().hex[:8]
        obs = pd.DataFrame(index=pd.Index([f"gen-{call_id}-{i}" for i in range(len(z))], dtype=object))
        obs[self.labels_key] = pd.Categorical(types, categories=list(self.classes))
        obs["generated"] = True
        for key, value in decoded.obs.items():
            obs[key] = value
        if decoded.X is None:
            out = AnnData(obs=plain_strings(obs))
        else:
            out = AnnData(X=decoded.X, obs=plain_strings(obs), var=plain_strings(self.adata.var.copy()))
            for key, value in decoded.layers.items():
                out.layers[key] = value
            if self.layer is not None and self.layer not in out.layers:
                # mirror the training data's layout: the registered layer holds the same values
                out.layers[self.layer] = out.X.copy()
        out.obsm["X_latent"] = z
        return out


def _resolve_seed(seed: int | None) -> int:
    """`seed` checked, or a fresh one when None (recorded by the caller in ``uns``)."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    return check_seed(seed)


def _available_memory() -> int | None:
    """Bytes of memory available to this process (None where the system does not say)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None
