"""Old defaults vs new defaults: the whole default pipeline, cost and held-out quality.

For each dataset and seed, 30% of the cells of every type are held out; the rest go through
exactly what a user's ``model.train()`` + ``model.generate()`` does, once with today's defaults
and once with those of 2026-11-30, given explicitly:

- ``old``: scVI with scvi-tools' epoch heuristic (400 epochs below 20k cells, batch 128,
  lr 1e-3), diffusion ~8,000 optimiser steps at lr 2e-3 (at least 50 epochs), Euler-Maruyama 200 steps
  (version 0.2.0 trained the same way and sampled with 50 ancestral steps);
- ``new``: ``model.train()`` and ``model.generate()`` with no arguments (version 0.3).

Each model produces as many cells of each type as were held out and is scored against them:

- ``auc_latent``: kNN two-sample AUC in the model's own latent (generated latents vs the model's
  encodings of the held-out cells), mean over types with >= 10 held-out cells (0.5 = ideal);
- ``auc_pca``: the same in a 30-PC PCA of log-normalised counts fitted on the training cells;
- ``label_ratio``: share of generated cells a classifier trained on real training cells assigns
  to their type, over the same share for the held-out cells (1 = as real);
- ``recon``: the scVI's reconstruction loss (negative log-likelihood per cell) of the held-out
  cells: lower is a better autoencoder;
- costs in *bare steps* (``_common.bare_step_seconds``, measured in this process before every
  dataset), so that runs under different loads compare: ``train`` (all of ``train()``),
  ``latent`` (its scVI stage), ``diffusion`` (the rest: hierarchy and diffusion stage) and
  ``generate`` (the held-out number of cells, decoded to counts).

Every row is mean +- SEM over seeds. Run:
``OMP_NUM_THREADS=1 python benchmarks/defaults.py --datasets pbmc68k paul15 --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from _common import (
    DATASETS,
    QUIET,
    bare_step_seconds,
    header,
    load_dataset,
    markdown,
    mean_sem,
    per_type_auc,
    single_thread,
    stratified_split,
    timed_train,
    write_section,
)

HELD_OUT = 0.3
MIN_AUC_CELLS = 10
OLD_DIFFUSION_STEPS = 8000
OLD_SAMPLER = {"sampler": "sde", "n_steps": 200}
SCORES = ("auc_latent", "auc_pca", "label_ratio", "recon")
COSTS = ("train", "latent", "diffusion", "generate")


def old_settings(n_cells: int) -> dict:
    """The training defaults of 2026-11-30, spelled out: scVI's heuristic epochs, ~8,000 diffusion steps."""
    from scbranchdiff.train import epochs_for_steps

    scvi_epochs = int(min(round(20_000 / n_cells * 400), 400))  # scvi-tools' get_max_epochs_heuristic
    return {
        "latent_max_epochs": scvi_epochs,
        "latent_kwargs": {"batch_size": 128, "plan_kwargs": {"lr": 1e-3}},
        "max_epochs": epochs_for_steps(n_cells, 256, OLD_DIFFUSION_STEPS, min_epochs=50),
        "lr": 2e-3,
    }


def reconstruction(backend, adata) -> float:
    """Mean reconstruction loss (NLL per cell) of `adata`'s counts under the model's scVI."""
    from anndata import AnnData

    counts = AnnData(X=adata.layers["counts"], obs=pd.DataFrame(index=adata.obs_names))
    counts.var_names = adata.var_names
    return float(backend.model.get_reconstruction_error(counts)["reconstruction_loss"])


def held_out_reference(train, test, key: str, seed: int) -> dict:
    """What every version is compared with on one split: computed once per seed."""
    from scbranchdiff.metrics import fit_expression_pca, label_transfer_accuracy

    space = fit_expression_pca(train, n_pcs=30, layer="counts", is_counts=True, seed=seed)
    return {"space": space, "pcs": space.transform(test),
            "accuracy": label_transfer_accuracy(train, test, key, layer="counts", is_counts=True, seed=seed)}


def run_one(version: str, train, test, key: str, seed: int, bare_s: float, reference: dict) -> dict:
    import scbranchdiff as sbd
    from scbranchdiff.metrics import label_transfer_accuracy

    data = train.copy()
    sbd.model.BranchedDiffusion.setup_anndata(data, labels_key=key, layer="counts")
    model = sbd.model.BranchedDiffusion(data)
    settings = old_settings(data.n_obs) if version == "old" else {}
    backend = model.latent_backend
    train_s, latent_s = timed_train(model, seed=seed, accelerator="cpu", devices=1, **settings, **QUIET)
    types = list(data.obs[key].cat.categories)
    counts = test.obs[key].astype(str).value_counts().reindex(types).dropna().astype(int)
    counts = {t: int(n) for t, n in counts.items() if n > 0}
    sampler = OLD_SAMPLER if version == "old" else {}
    start = time.perf_counter()
    gen = model.generate(counts, seed=seed, **sampler)
    gen_s = time.perf_counter() - start

    test_labels = test.obs[key].astype(str).to_numpy()
    big = [t for t in counts if counts[t] >= MIN_AUC_CELLS]
    z_test = model.get_latent_representation(test)
    auc_lat = per_type_auc(z_test, test_labels, gen.obsm["X_latent"], gen.obs[key], big, seed)
    space, acc_real = reference["space"], reference["accuracy"]
    auc_pca = per_type_auc(reference["pcs"], test_labels, space.transform(gen), gen.obs[key], big, seed)
    acc_gen = label_transfer_accuracy(train, gen, key, layer="counts", is_counts=True, seed=seed)
    shared = acc_real.index.intersection(acc_gen.index)
    return {
        "auc_latent": float(auc_lat.mean()), "auc_pca": float(auc_pca.mean()),
        "label_ratio": float(acc_gen[shared].mean() / acc_real[shared].mean()),
        "recon": reconstruction(backend, test),
        "train": train_s / bare_s, "latent": latent_s / bare_s, "diffusion": (train_s - latent_s) / bare_s,
        "generate": gen_s / bare_s, "train_s": train_s,
        "scvi_epochs": int(backend.model.history["elbo_train"].shape[0]),
        "diffusion_epochs": int(model.train_settings_["max_epochs"]),
    }


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean +- SEM over seeds per version, and the new/old ratio of every cost."""
    out = {}
    for version, part in rows.groupby("version", sort=False):
        line = {}
        for col in (*SCORES, *COSTS):
            line[col] = mean_sem(part[col], digits=3 if col in SCORES else 0)
        line["scvi_epochs"] = f"{part['scvi_epochs'].iloc[0]}"
        line["diffusion_epochs"] = f"{part['diffusion_epochs'].iloc[0]}"
        out[version] = line
    if {"old", "new"} <= set(rows["version"]):
        old, new = (rows[rows["version"] == v][list(COSTS)].mean() for v in ("old", "new"))
        out["new / old"] = {**{c: "" for c in SCORES}, **{c: f"{new[c] / old[c]:.3f}" for c in COSTS},
                            "scvi_epochs": "", "diffusion_epochs": ""}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "defaults"
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--versions", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--raw", default=None, help="write every run's row to this CSV file")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--from-csv", nargs="+", default=None,
                        help="make the tables from the --raw files of earlier runs instead of running")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 250)
    if args.from_csv:
        raw = pd.concat([pd.read_csv(path) for path in args.from_csv], ignore_index=True).to_dict("records")
    else:
        single_thread()
        raw = []
        for name in args.datasets:
            adata, key = load_dataset(name)
            for seed in args.seeds:
                held = stratified_split(adata.obs[key], HELD_OUT, seed)
                train, test = adata[~held].copy(), adata[held].copy()
                reference = held_out_reference(train, test, key, seed)
                for version in args.versions:  # interleaved, so both see the same load
                    bare_s = bare_step_seconds()
                    row = {"dataset": name, "seed": seed, "version": version, "bare_step_ms": 1000 * bare_s,
                           "n_cells": adata.n_obs, "n_genes": adata.n_vars, "n_types": adata.obs[key].nunique(),
                           "n_train": train.n_obs, "n_held_out": test.n_obs,
                           **run_one(version, train, test, key, seed, bare_s, reference)}
                    raw.append(row)
                    print(pd.Series(row).to_dict(), flush=True)
                    if args.raw:  # as they come: a long run stopped early keeps what it measured
                        pd.DataFrame(raw).to_csv(args.raw, index=False)
    tables = {}
    for name, rows in pd.DataFrame(raw).groupby("dataset", sort=False):
        table = summarise(rows)
        first = rows.iloc[0]
        table.attrs["caption"] = (
            f"**{name}**: {first['n_cells']} cells x {first['n_genes']} genes, {first['n_types']} types; "
            f"{first['n_train']} training / {first['n_held_out']} held-out cells; seeds "
            f"{', '.join(map(str, sorted(rows['seed'].unique())))}; bare step "
            f"{rows['bare_step_ms'].mean():.1f} ms on average; old defaults train in "
            f"{rows[rows['version'] == 'old']['train_s'].mean():.0f} s, new in "
            f"{rows[rows['version'] == 'new']['train_s'].mean():.0f} s (mean wall-clock)."
        )
        tables[name] = table
        print(f"\n## {name}\n{table.attrs['caption']}\n\n{table.to_string()}\n", flush=True)
    if args.write_docs:
        command = "OMP_NUM_THREADS=1 python benchmarks/defaults.py " + " ".join(
            a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs")
        body = [header(command)]
        for table in tables.values():
            body += [table.attrs["caption"], "", markdown(table), ""]
        write_section("defaults", "\n".join(body))


if __name__ == "__main__":
    main()
