"""Peak memory of training the diffusion stage on 1,000,000 latent cells (issue 6).

The latent is a given embedding (obsm, 10-d, 10 types), so the figure is that of the diffusion
stage alone: hierarchy discovery (on a per-type subsample), the in-memory latent dataset and
training. Reports the process's peak RSS before and after training and the optimiser steps per
second. Run with OMP_NUM_THREADS=1:

    OMP_NUM_THREADS=1 python benchmarks/large_training.py --n-cells 1000000 --max-epochs 1
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=1_000_000)
    parser.add_argument("--n-types", type=int, default=10)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    from scbranchdiff.model import BranchedDiffusion

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(args.n_types, args.n_latent))
    types = rng.integers(0, args.n_types, size=args.n_cells)
    latent = (centres[types] + rng.normal(size=(args.n_cells, args.n_latent))).astype(np.float32)
    adata = ad.AnnData(
        X=np.zeros((args.n_cells, 1), np.float32),
        obs=pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types])}),
    )
    adata.obsm["X_latent"] = latent
    del latent
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = BranchedDiffusion(adata, latent="X_latent")
    rss_data = _peak_rss_mb()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(
            max_epochs=args.max_epochs, batch_size=args.batch_size, accelerator="cpu",
            enable_progress_bar=False, enable_model_summary=False,
        )
    seconds = time.perf_counter() - start
    steps = args.max_epochs * int(np.ceil(args.n_cells / args.batch_size))
    print(json.dumps({
        "n_cells": args.n_cells,
        "n_latent": args.n_latent,
        "epochs": args.max_epochs,
        "steps": steps,
        "seconds": round(seconds, 1),
        "steps_per_second": round(steps / seconds, 1),
        "peak_rss_mb_with_data": round(rss_data),
        "peak_rss_mb_after_training": round(_peak_rss_mb()),
        "hierarchy": model.hierarchy.to_newick(),
    }, indent=1))


if __name__ == "__main__":
    main()
