"""CFGen (Palma et al., ICLR 2025) run from its own code: a peer for benchmarks/quality.py.

Nothing of CFGen is copied here: given the path of a checkout of https://github.com/theislab/CFGen
(and its requirements: pytorch-lightning, torchdyn, muon, scvi-tools), this module builds its
autoencoder (``cfgen.models.base.encoder_model.EncoderModel``) and its latent flow-matching model
(``cfgen.models.fm.fm.FM`` with ``MLPTimeStep``) through their Python classes, with the settings
the authors published in their configs (``configs/configs_encoder``, ``configs/configs_sccfm``
with ``denoising_module=resnet_big`` as in their training scripts), trains them with a
pytorch-lightning ``Trainer`` as their ``CfgenEstimator`` does, and samples each requested cell
type with its ``batched_sample`` (classifier-free guidance weight 1, ``dopri5``), conditioned on
library sizes of training cells of that type.

Deviations, all for this machine: CPU; no wandb logger, checkpoints or validation loader (all
training cells train; the authors hold 10% out to monitor the loss); ``detect_anomaly`` off
(a debugging aid that only slows training); a dataset smaller than one batch is not dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

# The authors' settings (configs/configs_encoder/{encoder,trainer}/default.yaml,
# configs/configs_sccfm/{generative_model,trainer,training_config}/default.yaml,
# denoising_module/resnet_big.yaml, dataset/*.yaml)
ENCODER = {"dims": [512, 256, 50], "batch_norm": True, "dropout": False, "dropout_p": 0.0}
ENCODER_LR, ENCODER_WD, ENCODER_EPOCHS = 1e-3, 1e-5, 300
FM_LR, FM_WD, FM_SIGMA, FM_EPOCHS = 1e-4, 1e-6, 1e-4, 1500
DENOISER = {"hidden_dim": 64, "dropout_prob": 0.0, "n_blocks": 3, "embedding_dim": 100,
            "normalization": "none", "conditional": True, "embed_size_factor": False,
            "guided_conditioning": True}
BATCH_SIZE, GRADIENT_CLIP, SAMPLE_STEPS = 256, 1.0, 2


def available(path: str | None) -> str | None:
    """None when CFGen can run from `path`, else why not."""
    if not path:
        return "no --cfgen checkout given"
    if not (Path(path) / "cfgen" / "models" / "fm" / "fm.py").exists():
        return f"{path} is not a CFGen checkout"
    missing = []
    for module in ("pytorch_lightning", "torchdyn", "muon"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return f"CFGen's requirements are missing: {missing}" if missing else None


def fit_and_sample(train, key: str, counts: dict[str, int], path: str, *, seed: int = 0,
                   encoder_epochs: int = ENCODER_EPOCHS, fm_epochs: int = FM_EPOCHS):
    """Train CFGen on `train` (raw counts in ``layers["counts"]``); `counts[t]` cells of each type t.

    Returns an AnnData of sampled counts with ``obs[key]``.
    """
    import anndata as ad
    import pytorch_lightning as pl
    import torch

    sys.path.insert(0, str(Path(path).resolve()))
    from cfgen.data.scrnaseq_loader import RNAseqLoader
    from cfgen.models.base.encoder_model import EncoderModel
    from cfgen.models.featurizers.category_featurizer import CategoricalFeaturizer
    from cfgen.models.fm.denoising_model import MLPTimeStep
    from cfgen.models.fm.fm import FM

    pl.seed_everything(seed, verbose=False)
    data = ad.AnnData(train.layers["counts"].copy(), obs=train.obs[[key]].astype(str).copy(), var=train.var[[]].copy())
    dataset = RNAseqLoader(data, layer_key="X_counts", covariate_keys=[key], normalization_type="log_gexp")
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True,
                                         drop_last=len(dataset) > BATCH_SIZE)
    n_types = len(dataset.id2cov[key])

    def trainer(epochs: int):
        return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          gradient_clip_val=GRADIENT_CLIP, limit_val_batches=0)

    encoder = EncoderModel(in_dim={"rna": data.n_vars}, encoder_kwargs={"rna": dict(ENCODER)},
                           learning_rate=ENCODER_LR, weight_decay=ENCODER_WD, covariate_specific_theta=False,
                           conditioning_covariate=key, n_cat=n_types, is_binarized=False)
    trainer(encoder_epochs).fit(encoder, train_dataloaders=loader)
    encoder.requires_grad_(False)
    encoder.eval()

    embeddings = {key: CategoricalFeaturizer(n_types, False, "cpu", embedding_dimensions=DENOISER["embedding_dim"])}
    latent_dim = ENCODER["dims"][-1]
    denoiser = MLPTimeStep(in_dim=latent_dim, size_factor_min=dataset.min_size_factor,
                           size_factor_max=dataset.max_size_factor, covariate_list=[key], is_binarized=False,
                           modality_list=["rna"], **DENOISER)
    model = FM(encoder_model=encoder, denoising_model=denoiser, feature_embeddings=embeddings, plotting_folder=None,
               in_dim={"rna": latent_dim},
               size_factor_statistics={"mean": dataset.log_size_factor_mu, "sd": dataset.log_size_factor_sd},
               covariate_list=[key], theta_covariate=key, size_factor_covariate=key, is_binarized=False,
               modality_list=["rna"], guidance_weights={key: 1}, learning_rate=FM_LR, weight_decay=FM_WD,
               antithetic_time_sampling=True, sigma=FM_SIGMA, use_ot=False)
    trainer(fm_epochs).fit(model, train_dataloaders=loader)
    model.eval()

    rng = np.random.default_rng(seed)
    log_library = np.log(np.asarray(data.X.sum(axis=1)).ravel())
    labels = data.obs[key].to_numpy()
    pieces, names = [], []
    for cell_type, n in counts.items():
        if n == 0:
            continue
        # its denoiser squeezes the time tensor, which fails for a batch of one cell: draw two
        m = max(n, 2)
        sizes = torch.as_tensor(rng.choice(log_library[labels == cell_type], size=m), dtype=torch.float32)
        ids = torch.full((m,), dataset.id2cov[key][cell_type], dtype=torch.long)
        with torch.no_grad():
            x = model.batched_sample(batch_size=m, repetitions=1, n_sample_steps=SAMPLE_STEPS, theta_covariate=key,
                                     size_factor_covariate=key, conditioning_covariates=[key],
                                     covariate_indices={key: ids}, log_size_factor={"rna": sizes[:, None]})
        pieces.append(x["rna"].numpy().astype(np.float32)[:n])
        names += [cell_type] * n
    generated = ad.AnnData(np.concatenate(pieces), obs=pd.DataFrame({key: names}, index=[f"cfgen-{i}" for i in range(len(names))]),
                           var=train.var[[]].copy())
    generated.layers["counts"] = generated.X
    return generated
