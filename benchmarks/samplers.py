"""Sampler benchmark: few-step samplers against 500 Euler-Maruyama steps, per dataset.

For each dataset one branched model is trained (scVI latent, package defaults unless given),
25% of the cells of every type held out. Every sampler then generates as many cells of each
type as are held out, with 5 seeds, and is scored per type by the kNN two-sample AUC
(:func:`scbranchdiff.metrics.c2st_auc`) in the model's latent against the held-out cells
(0.5 = indistinguishable); the table gives the mean over types (mean +- SEM over seeds),
network evaluations per cell (NFE) and generation time. The reference is ``sde`` with 500
steps; a few-step sampler is good enough when its AUC is within 0.01 of it.

Run: ``python benchmarks/samplers.py --datasets pbmc68k simulated`` (``--quick``: tiny).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from _common import (
    QUIET,
    header,
    load_dataset,
    markdown,
    per_type_auc,
    single_thread,
    stratified_split,
    write_section,
)

SAMPLERS = [
    ("sde", 500), ("sde", 200), ("ancestral", 49), ("ancestral", 50), ("ancestral", 25), ("dpm++", 49), ("dpm++", 25),
    ("ode", 100),
]
N_SEEDS = 5  # generation seeds per sampler (the model and the held-out cells are shared)


def nfe(sampler: str, n_steps: int) -> int:
    """Network evaluations per cell: Heun's ODE steps take two, the others one; +1 final denoise."""
    return (2 * n_steps - 1 if sampler == "ode" else n_steps) + 1


def run(name: str, args) -> pd.DataFrame:
    from scbranchdiff.model import BranchedDiffusion

    adata, key = load_dataset(name, quick=args.quick)
    held = stratified_split(adata.obs[key], 0.25, args.seed)
    train, test = adata[~held].copy(), adata[held].copy()
    BranchedDiffusion.setup_anndata(train, labels_key=key, layer="counts")
    model = BranchedDiffusion(train, n_hidden=args.width)
    start = time.perf_counter()
    model.train(max_epochs=args.epochs, latent_max_epochs=args.latent_epochs, seed=args.seed, **QUIET)
    train_s = time.perf_counter() - start
    z_test = model.get_latent_representation(test)
    labels = test.obs[key].astype(str).to_numpy()
    counts = {t: int(n) for t, n in pd.Series(labels).value_counts().items()}
    rows = []
    for sampler, n_steps in SAMPLERS:
        aucs, secs = [], []
        for seed in range(N_SEEDS):
            start = time.perf_counter()
            gen = model.generate(counts, sampler=sampler, n_steps=n_steps, seed=seed, progress_bar=False)
            secs.append(time.perf_counter() - start)
            auc = per_type_auc(z_test, labels, gen.obsm["X_latent"], gen.obs[key], list(counts), seed=seed)
            aucs.append(float(auc.mean()))
        rows.append({
            "dataset": name, "sampler": f"{sampler}-{n_steps}", "nfe": nfe(sampler, n_steps),
            "auc_latent": np.mean(aucs), "sem": np.std(aucs, ddof=1) / np.sqrt(len(aucs)),
            "generate_s": np.mean(secs), "train_s": train_s,
        })
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "simulated"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None, help="diffusion epochs (default: the package's)")
    parser.add_argument("--latent-epochs", type=int, default=None)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.latent_epochs, args.width = args.epochs or 5, args.latent_epochs or 5, 32
    single_thread()
    table = pd.concat([run(name, args) for name in args.datasets]).set_index("dataset")
    reference = table[table["sampler"] == "sde-500"]["auc_latent"]
    table["vs_sde500"] = table["auc_latent"] - reference.reindex(table.index).to_numpy()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = header(f"python benchmarks/samplers.py {command}") + "\n" + markdown(table)
    print(text)
    if args.write_docs:
        write_section("samplers", text)


if __name__ == "__main__":
    main()
