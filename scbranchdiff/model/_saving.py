"""Save and load: JSON metadata plus a safetensors file, so loading a model cannot run code.

A mixin of :class:`~scbranchdiff.model.BranchedDiffusion`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from anndata import AnnData

from .. import __version__
from .._checks import align_genes, check_anndata, check_labels
from ..hierarchy import Hierarchy
from ..latent import BACKENDS
from ..module import BranchedScoreNetwork
from . import _io

_MODEL_KEYS = frozenset(
    ("init_params", "setup_args", "var_names", "classes", "hierarchy", "is_flat", "network", "latent")
)


class SaveLoadMixin:
    """:meth:`save` and :meth:`load` for :class:`~scbranchdiff.model.BranchedDiffusion`."""

    def save(self, dir_path: str, overwrite: bool = False, save_anndata: bool = False, **_: Any) -> None:
        """Save the model (latent model, scaling, hierarchy, network) to a directory.

        The files are JSON and safetensors: loading them cannot run code. The save is atomic:
        it is written beside `dir_path` and renamed into place when complete.

        Parameters
        ----------
        dir_path
            Target directory.
        overwrite
            Replace an existing directory. Without it, an existing directory raises
            FileExistsError and is left as it was.
        save_anndata
            Not supported (AnnData is the user's to save); raises if True.

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
        }
        tensors = {f"network.{k}": v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}
        tensors.update({f"latent.{k}": v for k, v in backend_tensors.items()})
        tensors["scaling.mean"] = self.latent_mean_
        tensors["scaling.scale"] = self.latent_scale_
        bad = [k for k, v in tensors.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"The model has non-finite values in {bad[:5]}; refusing to save it.")
        _io.write_model_dir(dir_path, metadata, tensors, overwrite=overwrite)

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        **_: Any,
    ) -> Any:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            The saved directory.
        adata
            AnnData with the model's genes and cell types known to the model; it is set up
            with the saved ``setup_anndata`` arguments. When only the gene order differs, a
            copy reordered to the model's order is set up instead (with a warning).
        accelerator, device
            Where to put the network ("auto": a GPU when there is one).

        Returns
        -------
        The model, ready to generate.

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
        """
        from scvi.model._utils import parse_device_args

        metadata, tensors = _io.read_model_dir(dir_path)
        if adata is None:
            raise ValueError("`adata` is required to load a BranchedDiffusion model.")
        missing_keys = sorted(_MODEL_KEYS - set(metadata))
        if missing_keys:
            raise ValueError(f"{str(dir_path)!r} is corrupted: model.json lacks {missing_keys}.")
        check_anndata(adata)
        # same genes in another order: a reordered copy is set up (the given AnnData is untouched)
        adata = align_genes(adata, metadata["var_names"])
        setup = metadata["setup_args"]
        labels_key = setup["labels_key"]
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
        model = cls(adata, **init)
        model._restore(metadata, tensors)
        _, _, device = parse_device_args(accelerator, device, return_device="torch", validate_single_device=True)
        model.to_device(device)
        return model

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
        self.train_settings_ = metadata.get("train_settings", {})
        self.is_trained_ = True


def _plain_init_params(init_params: dict) -> dict:
    """Init arguments that are plain JSON values (hierarchy and latent are saved on their own)."""
    params = {**init_params["non_kwargs"], **init_params.get("kwargs", {}).get("kwargs", {})}
    params.pop("hierarchy", None)
    return {k: v for k, v in params.items() if isinstance(v, str | int | float | bool | dict | type(None))}
