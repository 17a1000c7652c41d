"""Peak memory and speed of generating a large population straight to disk (issue 6).

Trains a small model on pbmc68k (765 genes, 10 types; quality is irrelevant here), saves it, then
in a fresh process loads it and streams `--n-cells` cells into an .h5ad with
`BranchedDiffusion.generate_to_file`, reporting the process's peak RSS (resource.getrusage),
the time and the cells per second, and checking the file (opens with anndata, right labels and
counts per type). Run with OMP_NUM_THREADS=1:

    OMP_NUM_THREADS=1 python benchmarks/streaming.py --n-cells 1000000 --sampler ode --n-steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def train_and_save(model_dir: Path) -> None:
    import scbranchdiff as sbd

    adata = sbd.data.pbmc68k()
    sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    model = sbd.model.BranchedDiffusion(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=3, latent_max_epochs=5, enable_progress_bar=False, enable_model_summary=False)
    model.save(model_dir, overwrite=True)


def measure(model_dir: Path, out: Path, n_cells: int, sampler: str, n_steps: int, batch_size: int) -> dict:
    import anndata as ad
    import numpy as np

    import scbranchdiff as sbd

    adata = sbd.data.pbmc68k()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sbd.model.BranchedDiffusion.load(model_dir, adata=adata, accelerator="cpu")
    rss_loaded = _peak_rss_mb()
    per_type = n_cells // len(model.classes)
    start = time.perf_counter()
    path = model.generate_to_file(
        out, per_type, sampler=sampler, n_steps=n_steps, seed=0, batch_size=batch_size, overwrite=True
    )
    seconds = time.perf_counter() - start
    rss_peak = _peak_rss_mb()
    backed = ad.read_h5ad(path, backed="r")
    counts = backed.obs["bulk_labels"].value_counts()
    ok = bool((counts == per_type).all()) and len(counts) == len(model.classes)
    x = backed.X[:1000]
    integer = bool(np.array_equal(x.data, np.round(x.data)))
    return {
        "n_cells": int(backed.n_obs),
        "n_genes": int(backed.n_vars),
        "sampler": sampler,
        "n_steps": n_steps,
        "batch_size_per_type": batch_size,
        "seconds": round(seconds, 1),
        "cells_per_second": round(backed.n_obs / seconds),
        "peak_rss_mb_after_load": round(rss_loaded),
        "peak_rss_mb": round(rss_peak),
        "file_gb": round(Path(path).stat().st_size / 1e9, 2),
        "labels_and_counts_ok": ok,
        "x_is_integer_counts": integer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=1_000_000)
    parser.add_argument("--sampler", default="ode")
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10_000, help="cells per type per chunk")
    parser.add_argument("--workdir", default=None, help="where the model and the .h5ad go")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sbd-streaming-"))
    model_dir, out = workdir / "model", workdir / "generated.h5ad"
    if args.measure:
        result = measure(Path(args.measure), out, args.n_cells, args.sampler, args.n_steps, args.batch_size)
        print("RESULT " + json.dumps(result))
        return
    if not model_dir.exists():
        train_and_save(model_dir)
    # a fresh process, so the peak RSS is that of loading + streaming, not of training
    cmd = [sys.executable, __file__, "--measure", str(model_dir), "--workdir", str(workdir),
           "--n-cells", str(args.n_cells), "--sampler", args.sampler, "--n-steps", str(args.n_steps),
           "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(proc.stderr[-5000:])
    print(json.dumps(json.loads(lines[-1][len("RESULT "):]), indent=1))
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
