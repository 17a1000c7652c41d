"""GPU benchmark in one command: training steps/s and cells/s, the default pipeline, generation.

Sections (every time from this one run, on the device given by ``--accelerator``):

1. ``train step``: ms per optimiser step of ``model.train`` (Lightning, the package's loop)
   at batch 256 and 4096, and latent cells/s of training throughput; beside it the bare step
   (``_common.bare_step_seconds``) on the same device;
2. ``pipeline``: the default ``model.train()`` (scVI + hierarchy + diffusion) on ~5k simulated
   cells of 11 types (500 genes), wall-clock per stage;
3. ``generate``: cells/s of the default ``generate`` (decoded to counts) for 10,000 cells per
   type.

Data: counts simulated from a tree of 11 types; section 1 uses a 10-dimensional PCA latent
(so only the diffusion is timed). Run on a GPU machine:
``python benchmarks/gpu.py --accelerator gpu --write-docs``; ``--accelerator cpu --quick`` is a
smoke test.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from _common import (
    QUIET,
    bare_step_seconds,
    epochs_for,
    header,
    markdown,
    simulated_eleven,
    single_thread,
    timed_train,
    write_section,
)


def device_sync(accelerator: str) -> None:
    import torch

    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def train_steps(adata, accelerator: str, batch_size: int, n_steps: int, seed: int) -> float:
    """Seconds per optimiser step of `model.train` at `batch_size` (PCA latent; set-up not timed)."""
    import scanpy as sc

    from scbranchdiff.model import BranchedDiffusion

    data = adata.copy()
    sc.pp.normalize_total(data, target_sum=1e4)
    sc.pp.log1p(data)
    BranchedDiffusion.setup_anndata(data, labels_key="cell_type")
    model = BranchedDiffusion(data, latent="pca")
    kwargs = dict(batch_size=batch_size, accelerator=accelerator, devices=1, seed=seed, **QUIET)
    model.train(max_epochs=1, **kwargs)  # latent, hierarchy, network and kernels outside the timing
    epochs = epochs_for(n_steps, data.n_obs, batch_size)
    steps = epochs * int(np.ceil(data.n_obs / batch_size))
    device_sync(accelerator)
    start = time.perf_counter()
    model.train(max_epochs=epochs, **kwargs)
    device_sync(accelerator)
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="gpu", help="'gpu' (default) or 'cpu'")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.accelerator == "cpu":
        single_thread()
    import torch

    import scbranchdiff as sbd

    cuda = args.accelerator in ("gpu", "cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--accelerator gpu: no CUDA GPU here (use --accelerator cpu for a smoke test).")
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    quick = args.quick
    sections = {}

    # 1. training steps ------------------------------------------------------------------------
    data = simulated_eleven(60 if quick else 2_000, 400 if quick else 500, args.seed)
    bare = bare_step_seconds("cuda" if cuda else "cpu", n_steps=20 if quick else 200)
    rows = {}
    for batch in (256, 4096):
        s = train_steps(data, args.accelerator, batch, 10 if quick else 400, args.seed)
        rows[f"batch {batch}"] = {"ms_per_step": 1000 * s, "steps_per_s": 1 / s, "cells_per_s": batch / s,
                                  "bare_steps_per_step": s / bare}
    sections["train"] = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model.train")
    sections["train"].attrs["caption"] = (
        f"Training steps through `model.train` ({data.n_obs} cells, 11 types, PCA latent, width 256); "
        f"bare step on this device: {1000 * bare:.2f} ms.")

    # 2. default pipeline on ~5k cells ----------------------------------------------------------
    data = simulated_eleven(50 if quick else 500, 400 if quick else 500, args.seed)
    sbd.model.BranchedDiffusion.setup_anndata(data, labels_key="cell_type", layer="counts")
    model = sbd.model.BranchedDiffusion(data)
    extra = {"max_epochs": 2, "latent_max_epochs": 2} if quick else {}
    total, latent_s = timed_train(model, accelerator=args.accelerator, devices=1, seed=args.seed, **extra, **QUIET)
    sections["pipeline"] = pd.DataFrame({"seconds": [total, latent_s, total - latent_s]},
                                        index=pd.Index(["train()", "scVI stage", "hierarchy + diffusion"], name="stage"))
    sections["pipeline"].attrs["caption"] = (f"Default `model.train()` on {data.n_obs} simulated cells x {data.n_vars} "
                                             f"genes, 11 types.")

    # 3. generation -------------------------------------------------------------------------------
    per_type = 100 if quick else 10_000
    model.generate(10, seed=args.seed)  # warm-up
    start = time.perf_counter()
    gen = model.generate(per_type, seed=args.seed, progress_bar=False)
    device_sync(args.accelerator)
    s = time.perf_counter() - start
    sections["generate"] = pd.DataFrame({"cells": [gen.n_obs], "seconds": [s], "cells_per_s": [gen.n_obs / s]},
                                        index=pd.Index(["default sampler, decoded to counts"], name="generate"))
    sections["generate"].attrs["caption"] = f"Generation of {per_type} cells of each of 11 types."

    intro = f"Device: {card}; torch {torch.__version__}."
    print(intro)
    for name, table in sections.items():
        print(f"\n## {name}\n{table.attrs['caption']}\n\n{table.round(3).to_string()}", flush=True)
    if args.write_docs:
        command = "python benchmarks/gpu.py " + " ".join(
            a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs")
        body = [header(command), intro, ""]
        for table in sections.values():
            body += [table.attrs["caption"], "", markdown(table), ""]
        write_section("gpu" if cuda else "gpu-cpu-smoke", "\n".join(body))


if __name__ == "__main__":
    main()
