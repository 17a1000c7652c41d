"""Continual learning of types the latent never saw: leave one type out, add it back.

For each dataset and each cell type with at least ``--min-cells`` cells: 30% of every type is
held out; a model is trained with the package defaults on the training cells of every *other*
type (so its scVI never sees the left-out type), then ``add_cell_types`` adds the training cells
of the left-out type (package defaults). Scored:

- ``new_label_ratio``: share of generated cells of the added type that a classifier trained on
  all real training cells (every type; logistic regression on a PCA of log-normalised counts,
  :func:`scbranchdiff.metrics.label_transfer_accuracy`) assigns to it, over the same share for
  its held-out real cells (1 = as often as real cells; the bar of the issue is 0.8).
  ``--n-generated`` cells of the type are generated (500: the share of generated cells is then
  known to +-0.02; the held-out real share rests on 30% of the type's cells);
- ``decoded_real_acc``: the same share for the held-out real cells of the type encoded and decoded
  by the model's latent (what the latent can represent of the type at best);
- ``new_auc`` / ``old_auc``: realism, as a two-sample classifier AUC (0.5: indistinguishable)
  between generated and held-out real cells in a PCA of log-normalised counts fitted on the
  real training cells (:func:`scbranchdiff.metrics.c2st_auc`), on equal numbers of cells per
  side (the smaller side's, mean over 5 draws of the larger; the kNN classifier's AUC is biased
  when one side outnumbers the other): of the added type (needs >= 10 held-out cells), and the
  mean over the old types in the same model (the bar: new types as good as old ones);
- ``old_identical``: whether the old types' generated latents and decoded counts are
  bit-identical before and after the addition, for the same seed;
- ``add_s`` / ``base_s``: seconds of the addition and of the base training (the same machine).

With ``--seeds 0 1 2`` every type is left out with three splits (and seeds of training and
addition); the table holds the means and the ratio of each seed.

Run: ``OMP_NUM_THREADS=1 python benchmarks/unseen_types.py --datasets pbmc68k paul15``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
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
# the latent of the models: "scvi" (the package default, on counts) or "pca" (--latent pca: the
# models see log-normalised expression, and so do the classifiers and AUCs)
LATENT = "scvi"


def _values() -> dict:
    """How the scores read the cells: counts for scVI models, log-normalised values for PCA ones."""
    return {"layer": "counts", "is_counts": True} if LATENT == "scvi" else {"layer": None, "is_counts": False}


def leave_one_out(
    adata, key: str, left_out: str, seed: int, residual: dict | None = None, n_generated: int = 500
) -> dict:
    held = stratified_split(adata.obs[key], HELD_OUT, seed)
    train, test = adata[~held].copy(), adata[held].copy()
    is_new = (train.obs[key].astype(str) == left_out).to_numpy()
    old, new = train[~is_new].copy(), train[is_new].copy()
    old.obs[key] = old.obs[key].astype(str).astype("category")
    model, base_s = trained_model(old, key, seed)
    old_types = list(model.classes)
    before = model.generate(50, seed=seed, progress_bar=False)
    add_s, _ = timed(lambda: model.add_cell_types(new, seed=seed, **(residual or {}), accelerator="cpu", devices=1, **QUIET))
    after = model.generate(50, seed=seed, progress_bar=False)  # old and new types together
    identical = same_rows(before, after, old_types, key)
    real = test[(test.obs[key].astype(str) == left_out).to_numpy()].copy()
    gen = model.generate({left_out: max(real.n_obs, n_generated)}, seed=seed, progress_bar=False)
    # the latent's own limit: held-out real cells of the type, encoded and decoded by the model
    decoded = model.decode_latent(model.get_latent_representation(real), [left_out] * real.n_obs, seed=seed)
    acc_real, acc_gen, acc_dec = (recognised(train, cells, key, seed) for cells in (real, gen, decoded))
    auc = realism(train, test, key, seed)
    return {"type": left_out, "n_cells": int((adata.obs[key].astype(str) == left_out).sum()),
            "real_acc": float(acc_real[left_out]), "generated_acc": float(acc_gen[left_out]),
            "decoded_real_acc": float(acc_dec[left_out]),
            "new_label_ratio": float(acc_gen[left_out] / acc_real[left_out]) if acc_real[left_out] else np.nan,
            "new_auc": auc(left_out, gen), "old_auc": float(np.nanmean([auc(t, after) for t in old_types])),
            "old_identical": identical, "base_s": base_s, "add_s": add_s}


def realism(train, test, key: str, seed: int, n_draws: int = 5):
    """``auc(cell_type, generated)``: two-sample AUC of a type's generated and held-out real cells.

    Both sides get the same number of cells (the smaller side's; the mean over `n_draws` draws
    of the larger side): the kNN classifier's AUC is biased when one side outnumbers the other.
    """
    from scbranchdiff.metrics import c2st_auc, fit_expression_pca

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = fit_expression_pca(train, **_values(), seed=seed)

    def auc(cell_type: str, generated) -> float:
        held = space.transform(test[(test.obs[key].astype(str) == cell_type).to_numpy()])
        fake = space.transform(generated[(generated.obs[key].astype(str) == cell_type).to_numpy()])
        m = min(len(held), len(fake))
        if m < 10:
            return np.nan
        rng = np.random.default_rng(seed)
        return float(np.mean([
            c2st_auc(held[rng.permutation(len(held))[:m]], fake[rng.permutation(len(fake))[:m]], seed=seed)
            for _ in range(n_draws)
        ]))

    return auc


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per type: means over seeds, identity in every seed, and each seed's label ratio."""
    grouped = rows.groupby("type", sort=False)
    table = grouped.mean(numeric_only=True).drop(columns="seed")
    table["old_identical"] = grouped["old_identical"].all()
    if rows["seed"].nunique() > 1:
        table["ratio_per_seed"] = grouped["new_label_ratio"].agg(lambda r: ", ".join(f"{v:.2f}" for v in r))
    table["n_cells"] = table["n_cells"].astype(int)
    return table


def trained_model(cells, key: str, seed: int):
    """A model with the package defaults trained on `cells` (counts layer), and train()'s seconds."""
    import scbranchdiff as sbd

    if LATENT == "pca":
        sbd.model.BranchedDiffusion.setup_anndata(cells, labels_key=key)
        model = sbd.model.BranchedDiffusion(cells, latent="pca")
    else:
        sbd.model.BranchedDiffusion.setup_anndata(cells, labels_key=key, layer="counts")
        model = sbd.model.BranchedDiffusion(cells)
    seconds, _ = timed(lambda: model.train(seed=seed, accelerator="cpu", devices=1, **QUIET))
    return model, seconds


def recognised(train, query, key: str, seed: int) -> pd.Series:
    """Per type of `query`: the share of its cells a classifier of the real `train` cells assigns to it."""
    from scbranchdiff.metrics import label_transfer_accuracy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return label_transfer_accuracy(train, query, key, **_values(), seed=seed)


def same_rows(a, b, types: list[str], key: str) -> bool:
    """Whether the cells of `types` in two generated AnnData have identical latents and counts."""
    rows_a, rows_b = a.obs[key].isin(types).to_numpy(), b.obs[key].isin(types).to_numpy()
    return bool(np.array_equal(a.obs[key].astype(str)[rows_a], b.obs[key].astype(str)[rows_b])
                and np.array_equal(a.obsm["X_latent"][rows_a], b.obsm["X_latent"][rows_b])
                and np.array_equal(_dense(a.X)[rows_a], _dense(b.X)[rows_b]))


def one_after_another(adata, key: str, added: list[str], seed: int, n_generated: int = 500,
                      residual: dict | None = None) -> pd.DataFrame:
    """Leave `added` out of the base model, add them back one per call; score after each call."""
    held = stratified_split(adata.obs[key], HELD_OUT, seed)
    train, test = adata[~held].copy(), adata[held].copy()
    train.obs[key] = train.obs[key].astype(str).astype("category")
    _, full_s = trained_model(train.copy(), key, seed)
    old = train[~train.obs[key].isin(added).to_numpy()].copy()
    old.obs[key] = old.obs[key].cat.remove_unused_categories()
    model, base_s = trained_model(old, key, seed)
    old_types = list(model.classes)
    samples = [model.generate(50, seed=seed, progress_bar=False)]
    acc_real = recognised(train, test, key, seed)
    rows = []
    for k, cell_type in enumerate(added):
        new = train[(train.obs[key] == cell_type).to_numpy()].copy()
        add_s, _ = timed(lambda new=new: model.add_cell_types(new, seed=seed, **(residual or {}), accelerator="cpu", devices=1, **QUIET))
        samples.append(model.generate(50, seed=seed, progress_bar=False))
        so_far = added[: k + 1]
        n_real = {t: int((test.obs[key].astype(str) == t).sum()) for t in so_far}
        gen = model.generate({t: max(n, n_generated) for t, n in n_real.items()}, seed=seed, progress_bar=False)
        acc_gen = recognised(train, gen, key, seed)
        ratios = {t: float(acc_gen[t] / acc_real[t]) for t in so_far}
        rows.append({
            "seed": seed, "step": k + 1, "added": cell_type,
            "label_ratios_so_far": ", ".join(f"{r:.2f}" for r in ratios.values()),
            "min_ratio": min(ratios.values()),
            "earlier_identical": same_rows(samples[-2], samples[-1], old_types + added[:k], key)
            and same_rows(samples[0], samples[-1], old_types, key),
            "add_s": add_s, "base_s": base_s, "full_retrain_s": full_s, "add_over_full": add_s / full_s,
        })
        print(rows[-1], flush=True)
    return pd.DataFrame(rows).set_index(["seed", "step"])


def _spread(sizes: pd.Series, n: int, min_cells: int) -> list[str]:
    """`n` types of at least `min_cells` cells, from the smallest to the largest."""
    eligible = sizes[sizes >= min_cells].sort_values()
    picks = np.unique(np.linspace(0, len(eligible) - 1, n).round().astype(int))
    return [str(t) for t in eligible.index[picks]]


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "paul15", "pbmc_facs"])
    parser.add_argument("--min-cells", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="split/training seeds; every type is left out once per seed (means reported)")
    parser.add_argument("--n-generated", type=int, default=500, help="generated cells of the added type")
    parser.add_argument("--residual", choices=["offset", "codes", "none"], default=None,
                        help="add_cell_types(residual=...); default: the package default (offset)")
    parser.add_argument("--n-residual", type=int, default=None, help="add_cell_types(n_residual=...), with codes")
    parser.add_argument("--types", nargs="+", default=None, help="only these left-out types")
    parser.add_argument("--one-after-another", type=int, default=0, metavar="N",
                        help="instead: leave N types out (smallest to largest) and add them back one per call")
    parser.add_argument("--latent", choices=["scvi", "pca"], default="scvi",
                        help="the models' latent: scVI on counts (default) or PCA of log-normalised expression")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--section", default=None,
                        help="docs section to write (default: unseen-types, or unseen-types-sequential)")
    args = parser.parse_args(argv)
    single_thread()
    pd.set_option("display.width", 200)
    residual = {k: v for k, v in (("residual", args.residual), ("n_residual", args.n_residual)) if v is not None}
    # the command that reproduces the numbers: the arguments without the ones that write docs
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs"]
    if "--section" in given:
        del given[given.index("--section") : given.index("--section") + 2]
    body = [header("OMP_NUM_THREADS=1 python benchmarks/unseen_types.py " + shlex.join(given))]
    global LATENT
    LATENT = args.latent
    for name in args.datasets:
        adata, key = load_dataset(name)
        if LATENT == "pca":
            import scanpy as sc

            sc.pp.normalize_total(adata, target_sum=1e4)
            sc.pp.log1p(adata)
        sizes = adata.obs[key].astype(str).value_counts()
        if args.one_after_another:
            added = _spread(sizes, args.one_after_another, args.min_cells)
            table = pd.concat([one_after_another(adata, key, added, seed, args.n_generated, residual)
                               for seed in args.seeds])
            table = table.reset_index(level="seed")
            caption = (f"**{name}**: {', '.join(added)} left out of the base model (and its scVI), then added "
                       "one per `add_cell_types` call; after each call, the label ratio of every type added so "
                       "far, whether every earlier type (old and added before) generated identical latents and "
                       "counts, and the call's time against a full retraining on all types.")
            print(f"\n{caption}\n{table.round(3).to_string()}", flush=True)
            body += [caption, "", markdown(table), ""]
            continue
        rows = []
        for seed in args.seeds:
            for left_out in [t for t, n in sizes.items() if n >= args.min_cells and (not args.types or t in args.types)]:
                rows.append({"seed": seed, **leave_one_out(adata, key, left_out, seed, residual, args.n_generated)})
                print(name, rows[-1], flush=True)
        table = summary(pd.DataFrame(rows))
        seeds = f"{len(args.seeds)} seeds" if len(args.seeds) > 1 else f"seed {args.seeds[0]}"
        caption = (f"**{name}**: each type with >= {args.min_cells} cells left out of the base model (and its "
                   f"{'scVI' if LATENT == 'scvi' else 'PCA'}), then added ({seeds}); mean new_label_ratio {table['new_label_ratio'].mean():.2f}, "
                   f"{int((table['new_label_ratio'] >= 0.8).sum())} of {len(table)} types >= 0.8"
                   f"{' (mean over seeds)' if len(args.seeds) > 1 else ''}; old types identical in "
                   f"{int(table['old_identical'].sum())} of {len(table)} types"
                   f"{' (every seed)' if len(args.seeds) > 1 else ''}.")
        print(f"\n{caption}\n{table.round(3).to_string()}", flush=True)
        body += [caption, "", markdown(table), ""]
    if args.write_docs:
        default = "unseen-types-sequential" if args.one_after_another else "unseen-types"
        write_section(args.section or default, "\n".join(body))


if __name__ == "__main__":
    main()
