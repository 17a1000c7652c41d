"""Continual learning benchmark: add cell types to a trained model vs the alternatives.

Simulated counts from the default 8-type tree (log-normalised), two leaf types held out of the
first training (T_CD8, DC_plasmacytoid: one per lineage). All models share one frozen PCA
latent fitted on the training cells of all 8 types (the role an atlas-level scVI plays).

Compared, each scored on held-out real cells with `metrics.evaluate` (kNN two-sample AUC: 0.5 =
indistinguishable from real; label accuracy: fraction recognised as their type by a classifier
trained on real cells), for the old 6 types and the 2 new ones:

- branched, base: trained on the 6 old types;
- branched + add_cell_types: the base model after `add_cell_types(new cells)`;
- branched, retrained: trained from scratch on all 8 types (the cost add_cell_types avoids);
- flat, base / fine-tuned on the new types alone / retrained on all 8: the label-guided
  baseline; fine-tuning it on the new cells only (class embedding grown by two rows, every
  weight trained) shows how much it forgets the old types.

Times are wall-clock seconds of the training calls only (same machine, one run: read ratios).
Default budgets are the package defaults (8,000 steps for a full training, 2,000 for an
addition); ``--scale`` multiplies both.

Run: ``OMP_NUM_THREADS=1 python benchmarks/continual.py --scale 0.25``.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import pandas as pd
import scanpy as sc
import torch

import scbranchdiff as sbd
from scbranchdiff.hierarchy import Hierarchy
from scbranchdiff.latent import PCALatent
from scbranchdiff.model import DEFAULT_CONTINUAL_STEPS, DEFAULT_TRAIN_STEPS, BranchedDiffusion
from scbranchdiff.train import DiffusionTrainingPlan, fit_plan

from _common import BATCH_SIZE as BATCH
from _common import QUIET, epochs_for

NEW_TYPES = ["T_CD8", "DC_plasmacytoid"]


def data(n_cells: int, seed: int):
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=n_cells, n_genes=500, seed=seed)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    rng = np.random.default_rng(seed)
    test = np.zeros(adata.n_obs, dtype=bool)
    for c in adata.obs["cell_type"].unique():
        idx = np.flatnonzero(adata.obs["cell_type"] == c)
        test[rng.choice(idx, size=len(idx) // 2, replace=False)] = True
    train, heldout = adata[~test].copy(), adata[test].copy()
    is_new = train.obs["cell_type"].isin(NEW_TYPES).to_numpy()
    old = train[~is_new].copy()
    old.obs["cell_type"] = old.obs["cell_type"].cat.remove_unused_categories()
    return train, old, train[is_new].copy(), heldout


def new_model(adata, latent, hierarchy, width):
    adata = adata.copy()
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    return BranchedDiffusion(adata, latent=copy.deepcopy(latent), hierarchy=hierarchy, n_hidden=width)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def finetune_flat(model: BranchedDiffusion, cells, max_epochs: int, seed: int = 0) -> None:
    """The naive route: grow the class embedding, train every weight on the new cells only."""
    new_types = [c for c in pd.unique(cells.obs["cell_type"].astype(str)) if c not in model.classes]
    classes = model.classes + tuple(new_types)
    old_emb = model.module.class_embedding
    emb = torch.nn.Embedding(len(classes), old_emb.embedding_dim)
    with torch.no_grad():
        emb.weight[: old_emb.num_embeddings] = old_emb.weight
        emb.weight[old_emb.num_embeddings :] = old_emb.weight.mean(0)
    model.module.class_embedding = emb
    model.classes = classes
    model.hierarchy_ = Hierarchy.flat(classes)
    z = model.get_latent_representation(cells, scaled=True)
    cell_type = model.hierarchy_.class_index(cells.obs["cell_type"].astype(str).to_numpy())
    plan = DiffusionTrainingPlan(model.module, model.hierarchy_, model.sde)
    fit_plan(
        model, plan, z, cell_type, batch_size=BATCH, max_epochs=max_epochs, seed=seed,
        accelerator="cpu", devices=1, **QUIET,
    )


def score(model, heldout, types, n_steps, seed=0):
    gen = model.generate({c: 200 for c in types}, sampler="sde", seed=seed, n_steps=n_steps)
    real = heldout[heldout.obs["cell_type"].isin(types).to_numpy()].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = sbd.metrics.evaluate(real, gen, "cell_type", is_counts=False, seed=seed)
    rows = df.drop(index="overall")
    return float(rows["c2st_auc"].mean()), float(rows["label_accuracy"].mean()), df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies both step budgets")
    parser.add_argument("--cells", type=int, default=400, help="cells per type (half held out)")
    parser.add_argument("--width", type=int, default=128, help="n_hidden of every network")
    parser.add_argument("--n-steps", type=int, default=200, help="sampler steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    train, old, new, heldout = data(args.cells, args.seed)
    old_types = [c for c in train.obs["cell_type"].cat.categories if c not in NEW_TYPES]
    latent = PCALatent(n_latent=10)
    latent.fit(train, train.obs["cell_type"].to_numpy())
    full_steps = int(DEFAULT_TRAIN_STEPS * args.scale)
    add_steps = int(DEFAULT_CONTINUAL_STEPS * args.scale)
    rows = []

    def record(name, model, seconds, **extra):
        old_auc, old_acc, _ = score(model, heldout, old_types, args.n_steps)
        new_types = [c for c in NEW_TYPES if c in model.classes]
        new_auc, new_acc = score(model, heldout, new_types, args.n_steps)[:2] if new_types else (np.nan, np.nan)
        rows.append({"model": name, "train_s": seconds, "old_c2st_auc": old_auc,
                     "old_label_acc": old_acc, "new_c2st_auc": new_auc, "new_label_acc": new_acc,
                     **extra})
        print(rows[-1], flush=True)

    for kind in ("branched", "flat"):
        hierarchy = "auto" if kind == "branched" else "flat"
        base = new_model(old, latent, hierarchy, args.width)
        t_base = timed(lambda m=base: m.train(epochs_for(full_steps, old.n_obs), seed=args.seed, **QUIET))
        reference = base.generate({c: 200 for c in old_types}, sampler="sde", seed=1, n_steps=args.n_steps)
        record(f"{kind}, base (6 types)", base, t_base)
        epochs_add = epochs_for(add_steps, new.n_obs)
        if kind == "branched":
            t_add = timed(lambda m=base, e=epochs_add: m.add_cell_types(new, e, seed=args.seed, **QUIET))
            name = "branched + add_cell_types"
        else:
            t_add = timed(lambda m=base, e=epochs_add: finetune_flat(m, new, e, seed=args.seed))
            name = "flat, fine-tuned on new only"
        after = base.generate({c: 200 for c in old_types}, sampler="sde", seed=1, n_steps=args.n_steps)
        same = bool(np.array_equal(reference.obsm["X_latent"], after.obsm["X_latent"]))
        record(name, base, t_add, old_samples_identical=same)
        full = new_model(train, latent, hierarchy, args.width)
        t_full = timed(lambda m=full: m.train(epochs_for(full_steps, train.n_obs), seed=args.seed, **QUIET))
        record(f"{kind}, retrained (8 types)", full, t_full)
        rows[-2]["time_vs_retrain"] = t_add / t_full
        rows[-1]["time_vs_retrain"] = 1.0

    table = pd.DataFrame(rows).set_index("model")
    pd.set_option("display.width", 160)
    print(f"\nsteps: full training {full_steps}, addition {add_steps}; cells per type "
          f"{args.cells} (half held out); width {args.width}; sampler steps {args.n_steps}")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
