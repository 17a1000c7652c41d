"""Continual learning of types the latent never saw: leave one type out, add it back.

For each dataset and each cell type with at least ``--min-cells`` cells: 30% of every type is
held out; a model is trained with the package defaults on the training cells of every *other*
type (so its scVI never sees the left-out type), then ``add_cell_types`` adds the training cells
of the left-out type (package defaults). Scored:

- ``new_label_ratio``: share of generated cells of the added type that a classifier trained on
  all real training cells (every type; logistic regression on a PCA of log-normalised counts,
  :func:`scbranchdiff.metrics.label_transfer_accuracy`) assigns to it, over the same share for
  its held-out real cells (1 = as often as real cells; the bar of the issue is 0.8);
- ``decoded_real_acc``: the same share for the held-out real cells of the type encoded and decoded
  by the model's latent (what the latent can represent of the type at best);
- ``old_identical``: whether the old types' generated latents and decoded counts are
  bit-identical before and after the addition, for the same seed;
- ``add_s`` / ``base_s``: seconds of the addition and of the base training (the same machine).

Run: ``OMP_NUM_THREADS=1 python benchmarks/unseen_types.py --datasets pbmc68k paul15``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from _common import (
    QUIET,
    header,
    load_dataset,
    markdown,
    single_thread,
    stratified_split,
    timed,
    write_section,
)

HELD_OUT = 0.3


def leave_one_out(adata, key: str, left_out: str, seed: int) -> dict:
    import scbranchdiff as sbd
    from scbranchdiff.metrics import label_transfer_accuracy

    held = stratified_split(adata.obs[key], HELD_OUT, seed)
    train, test = adata[~held].copy(), adata[held].copy()
    is_new = (train.obs[key].astype(str) == left_out).to_numpy()
    old, new = train[~is_new].copy(), train[is_new].copy()
    old.obs[key] = old.obs[key].astype(str).astype("category")
    sbd.model.BranchedDiffusion.setup_anndata(old, labels_key=key, layer="counts")
    model = sbd.model.BranchedDiffusion(old)
    base_s, _ = timed(lambda: model.train(seed=seed, accelerator="cpu", devices=1, **QUIET))
    old_types = list(model.classes)
    before = model.generate(50, seed=seed, progress_bar=False)
    add_s, _ = timed(lambda: model.add_cell_types(new, seed=seed, accelerator="cpu", devices=1, **QUIET))
    after = model.generate({t: 50 for t in old_types}, seed=seed, progress_bar=False)
    identical = bool(np.array_equal(before.obsm["X_latent"], after.obsm["X_latent"])
                     and np.array_equal(_dense(before.X), _dense(after.X)))
    real = test[(test.obs[key].astype(str) == left_out).to_numpy()].copy()
    gen = model.generate({left_out: max(real.n_obs, 50)}, seed=seed, progress_bar=False)
    # the latent's own limit: held-out real cells of the type, encoded and decoded by the model
    decoded = model.decode_latent(model.get_latent_representation(real), [left_out] * real.n_obs, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc_real = label_transfer_accuracy(train, real, key, layer="counts", is_counts=True, seed=seed)
        acc_gen = label_transfer_accuracy(train, gen, key, layer="counts", is_counts=True, seed=seed)
        acc_dec = label_transfer_accuracy(train, decoded, key, layer="counts", is_counts=True, seed=seed)
    return {"type": left_out, "n_cells": int((adata.obs[key].astype(str) == left_out).sum()),
            "real_acc": float(acc_real[left_out]), "generated_acc": float(acc_gen[left_out]),
            "decoded_real_acc": float(acc_dec[left_out]),
            "new_label_ratio": float(acc_gen[left_out] / acc_real[left_out]) if acc_real[left_out] else np.nan,
            "old_identical": identical, "base_s": base_s, "add_s": add_s}


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "paul15", "pbmc_facs"])
    parser.add_argument("--min-cells", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    single_thread()
    pd.set_option("display.width", 200)
    body = [header("OMP_NUM_THREADS=1 python benchmarks/unseen_types.py --datasets " + " ".join(args.datasets))]
    for name in args.datasets:
        adata, key = load_dataset(name)
        sizes = adata.obs[key].astype(str).value_counts()
        rows = []
        for left_out in [t for t, n in sizes.items() if n >= args.min_cells]:
            rows.append(leave_one_out(adata, key, left_out, args.seed))
            print(name, rows[-1], flush=True)
        table = pd.DataFrame(rows).set_index("type")
        caption = (f"**{name}**: each type with >= {args.min_cells} cells left out of the base model (and its "
                   f"scVI), then added; mean new_label_ratio {table['new_label_ratio'].mean():.2f}, "
                   f"{int((table['new_label_ratio'] >= 0.8).sum())} of {len(table)} types >= 0.8; old types "
                   f"identical in {int(table['old_identical'].sum())} of {len(table)}.")
        print(f"\n{caption}\n{table.round(3).to_string()}", flush=True)
        body += [caption, "", markdown(table), ""]
    if args.write_docs:
        write_section("unseen-types", "\n".join(body))


if __name__ == "__main__":
    main()
