"""Save and load: JSON metadata plus a safetensors file, so loading a model cannot run code.

A mixin of :class:`~scbranchdiff.model.BranchedDiffusion`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .. import __version__, _io
from .._checks import align_genes, check_anndata, check_labels
from ..hierarchy import Hierarchy
from ..latent import BACKENDS
from ..module import BranchedScoreNetwork


class SaveLoadMixin:
    """:meth:`save` and :meth:`load` for :class:`~scbranchdiff.model.BranchedDiffusion`."""

    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        *,
        allow_other_files: bool = False,
        **kwargs: Any,
    ) -> None:
        """Save the model (latent model, scaling, hierarchy, network, history) to a directory.

        The files are JSON and safetensors: loading them cannot run code. The save is atomic:
        it is written beside `dir_path` and renamed into place when complete; each file
        carries a checksum of the other, so an edited or mismatched pair is refused at load.

        Parameters
        ----------
        dir_path
            Target directory.
        prefix
            Prefix of the file names (``<prefix>model.json``, ``<prefix>model.safetensors``),
            as in scvi-tools: several models can then share `dir_path` with other files; only
            the files of this prefix are replaced (with `overwrite`).
        overwrite
            Replace a model saved there before. Without it, an existing directory (or prefixed
            file) raises FileExistsError and is left as it was. Only a model's own files are
            replaced: a directory holding anything else is refused unless `allow_other_files`.
        save_anndata
            Not supported (AnnData is the user's to save); raises if True.
        allow_other_files
            With `overwrite`, write the model files into a directory that holds other files
            too (they are kept).
        **kwargs
            scvi-tools' other saving options are not supported: any raises TypeError.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pbmc_model")
        >>> model.save(path)
        >>> sorted(os.listdir(path))
        ['model.json', 'model.safetensors']
        """
        if kwargs:
            raise TypeError(f"`save` got unsupported arguments {sorted(kwargs)}.")
        self._check_trained()
        if save_anndata:
            raise ValueError("`save_anndata` is not supported: save the AnnData with `adata.write_h5ad`.")
        backend = self.latent_backend
        backend_config, backend_tensors = backend.state()
        metadata = {
            "scbranchdiff_version": __version__,
            "init_params": _plain_init_params(self.init_params_),
            "setup_args": {"labels_key": self.labels_key, "layer": self.layer, "batch_key": self.batch_key},
            "var_names": [str(v) for v in self.adata.var_names],
            "classes": list(self.classes),
            "hierarchy": self.hierarchy.to_dict(),
            "is_flat": self.is_label_guided,
            "sde": self.sde.to_dict(),
            "network": {**self.network_config, "n_latent": self.module.n_latent,
                        "n_branches": len(self.module.heads),
                        "n_classes": len(self.classes) if self.is_label_guided else 0},
            "latent": {"kind": backend.kind, "config": backend_config},
            "latent_scaling": self.latent_scaling,
            "train_settings": self.train_settings_,
            "extra": {},
            "history": _plain_history(getattr(self, "history_", None)),
        }
        tensors = {f"network.{k}": v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}
        tensors.update({f"latent.{k}": v for k, v in backend_tensors.items()})
        tensors["scaling.mean"] = self.latent_mean_
        tensors["scaling.scale"] = self.latent_scale_
        if self.class_mean_ is not None:
            tensors["scaling.class_mean"] = self.class_mean_
            tensors["scaling.class_cov"] = self.class_cov_
        bad = [k for k, v in tensors.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"The model has non-finite values in {bad[:5]}; refusing to save it.")
        _io.write_model_dir(
            dir_path, metadata, tensors, overwrite=overwrite, allow_other_files=allow_other_files,
            prefix=prefix or "",
        )

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            The saved directory.
        adata
            AnnData with the model's genes and cell types known to the model; it is set up
            with the saved ``setup_anndata`` arguments. When only the gene order differs, a
            copy reordered to the model's order is set up instead (with a warning). None: the
            model is set up on a placeholder with its genes and cell types (everything needed
            to generate is in the files); calls that read real cells (`train`, `transmute`
            and `get_latent_representation` without an AnnData, `add_cell_types`) then
            ask for one.
        accelerator, device
            Where to put the network ("auto": a GPU when there is one).
        prefix
            The prefix the model was saved with.
        backup_url
            Not supported (nothing is downloaded); raises if given.
        **kwargs
            Any other argument raises TypeError.

        Returns
        -------
        The model, ready to generate, with its training history.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pbmc_model")
        >>> model.save(path)
        >>> loaded = sbd.model.BranchedDiffusion.load(path, adata=model.adata)
        >>> loaded.hierarchy == model.hierarchy
        True
        >>> alone = sbd.model.BranchedDiffusion.load(path)  # no AnnData: generation only
        >>> alone.generate(5, n_steps=20).n_obs == 5 * len(model.classes)
        True
        """
        from scvi.model._utils import parse_device_args

        if kwargs:
            raise TypeError(f"`load` got unsupported arguments {sorted(kwargs)}.")
        if backup_url is not None:
            raise ValueError("`backup_url` is not supported: download the model directory first.")
        metadata, tensors = _io.read_model_dir(dir_path, prefix=prefix or "")
        setup = metadata["setup_args"]
        labels_key = setup["labels_key"]
        placeholder = adata is None
        if placeholder:
            adata = _placeholder_anndata(metadata)
        else:
            check_anndata(adata)
            # same genes in another order: a reordered copy is set up (the given AnnData is untouched)
            adata = align_genes(adata, metadata["var_names"])
            check_labels(adata, labels_key)
            unknown = sorted(set(adata.obs[labels_key].astype(str)) - set(metadata["classes"]))
            if unknown:
                raise ValueError(
                    f"adata.obs[{labels_key!r}] has cell types the saved model does not know: {unknown}."
                )
        cls.setup_anndata(adata, **setup)
        kind = metadata["latent"]["kind"]
        sub = {k[len("latent."):]: v for k, v in tensors.items() if k.startswith("latent.")}
        backend = BACKENDS[kind].from_state(metadata["latent"]["config"], sub, adata)
        init = dict(metadata["init_params"])
        init["latent"] = backend
        hierarchy = Hierarchy.from_dict(metadata["hierarchy"])
        init["hierarchy"] = hierarchy
        with warnings.catch_warnings():
            if placeholder:  # the placeholder has one cell per type, on purpose
                warnings.simplefilter("ignore", UserWarning)
            model = cls(adata, **init)
        model._restore(metadata, tensors)
        model.has_placeholder_adata = placeholder
        _, _, device = parse_device_args(accelerator, device, return_device="torch", validate_single_device=True)
        model.to_device(device)
        return model

    @classmethod
    def load_registry(cls, dir_path: str, prefix: str | None = None) -> dict:
        """The setup of a saved model (scvi-tools' registry view), read from its model.json.

        Parameters
        ----------
        dir_path, prefix
            As in :meth:`load`.

        Returns
        -------
        A dict with "model_name", "scbranchdiff_version" and "setup_args".

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pbmc_model")
        >>> model.save(path)
        >>> sbd.model.BranchedDiffusion.load_registry(path)["setup_args"]["labels_key"]
        'bulk_labels'
        """
        metadata, _ = _io.read_model_dir(dir_path, prefix=prefix or "")
        return {
            "model_name": cls.__name__,
            "scbranchdiff_version": metadata.get("scbranchdiff_version"),
            "setup_args": dict(metadata["setup_args"]),
        }

    @classmethod
    def view_setup_args(cls, dir_path: str, prefix: str | None = None) -> None:
        """Print the ``setup_anndata`` arguments of a saved model (scvi-tools' view).

        Parameters
        ----------
        dir_path, prefix
            As in :meth:`load`.

        Examples
        --------
        With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
        its example):

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pbmc_model")
        >>> model.save(path)
        >>> sbd.model.BranchedDiffusion.view_setup_args(path)
        labels_key: bulk_labels
        layer: counts
        batch_key: None
        """
        for key, value in cls.load_registry(dir_path, prefix)["setup_args"].items():
            print(f"{key}: {value}")

    def _restore(self, metadata: dict, tensors: dict) -> None:
        """Restore trained state saved by :meth:`save` (after `__init__`)."""
        self.is_label_guided = bool(metadata["is_flat"])
        net = metadata["network"]
        self.module = BranchedScoreNetwork(
            n_latent=net["n_latent"], n_branches=net["n_branches"], n_classes=net["n_classes"],
            n_hidden=net["n_hidden"], n_trunk_blocks=net["n_trunk_blocks"], n_head_blocks=net["n_head_blocks"],
        )
        state = {k[len("network."):]: torch.as_tensor(v) for k, v in tensors.items() if k.startswith("network.")}
        self.module.load_state_dict(state)
        self.module.eval()
        self.latent_mean_ = tensors["scaling.mean"]
        self.latent_scale_ = tensors["scaling.scale"]
        # absent from files of 0.5 and earlier: transmutation then computes them from the cells
        self.class_mean_ = tensors.get("scaling.class_mean")
        self.class_cov_ = tensors.get("scaling.class_cov")
        self.train_settings_ = metadata.get("train_settings", {})
        self.history_ = _history_frames(metadata.get("history"))
        self.is_trained_ = True


def _plain_init_params(init_params: dict) -> dict:
    """Init arguments that are plain JSON values (hierarchy and latent are saved on their own)."""
    params = {**init_params["non_kwargs"], **init_params.get("kwargs", {}).get("kwargs", {})}
    params.pop("hierarchy", None)
    return {k: v for k, v in params.items() if isinstance(v, str | int | float | bool | dict | type(None))}


def _plain_history(history: dict | None) -> dict[str, dict[str, list]]:
    """The training history (scvi-tools: one DataFrame per logged value) as JSON lists."""
    out: dict[str, dict[str, list]] = {}
    for key, frame in (history or {}).items():
        if isinstance(frame, pd.DataFrame) and frame.shape[1] == 1:
            values = pd.to_numeric(frame.iloc[:, 0], errors="coerce").astype(float)
            out[str(key)] = {
                "epoch": [int(i) for i in frame.index],
                "value": [None if not np.isfinite(v) else float(v) for v in values],
            }
    return out


def _history_frames(history: dict | None) -> dict[str, pd.DataFrame]:
    """What :func:`_plain_history` saved, as scvi-tools' history DataFrames."""
    return {
        key: pd.DataFrame(
            {key: np.asarray([np.nan if v is None else v for v in record["value"]], dtype=float)},
            index=pd.Index(record["epoch"], name="epoch"),
        )
        for key, record in (history or {}).items()
    }


def _placeholder_anndata(metadata: dict) -> AnnData:
    """One empty cell per type with the model's genes: what setup needs when no AnnData is given."""
    import scipy.sparse as sp

    setup = metadata["setup_args"]
    classes = [str(c) for c in metadata["classes"]]
    obs = pd.DataFrame(
        {setup["labels_key"]: pd.Categorical(classes, categories=classes)},
        index=pd.Index([f"placeholder-{i}" for i in range(len(classes))], dtype=object),
    )
    if setup.get("batch_key") is not None:
        batches = metadata["latent"].get("config", {}).get("batch_categories") or ["batch"]
        obs[setup["batch_key"]] = pd.Categorical([batches[0]] * len(classes), categories=batches)
    var = pd.DataFrame(index=pd.Index([str(v) for v in metadata["var_names"]], dtype=object))
    empty = sp.csr_matrix((len(classes), len(var)), dtype=np.float32)
    adata = AnnData(X=empty, obs=obs, var=var)
    if setup.get("layer") is not None:
        adata.layers[setup["layer"]] = empty.copy()
    return adata
