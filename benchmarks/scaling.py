"""Scaling benchmark: training and generation cost vs number of cells and number of cell types.

Simulated 10-dimensional latents (``latent=obsm key``, so no autoencoder is timed): K types on a
balanced binary tree, each type's mean the sum of Gaussian offsets of its ancestors, cells
scattered around it. The hierarchy is given (Newick with split times evenly spaced by depth), so
no discovery is timed. Network: package defaults (width 256, 3 trunk blocks, heads = per-branch affine + output layer),
batch 256.

What is measured (wall clock, one process, one run):

- training: ``model.train(max_epochs=1, max_steps=S)`` for S = S1 and S2 steps; the time per
  step is the slope (t(S2) - t(S1)) / (S2 - S1), the fixed cost per call (set-up, data module) is
  the rest. ``epoch_s`` = time per step x ceil(n / 256) steps + fixed cost: an
  extrapolation from S2 steps, not a timed full epoch (a full epoch of 1M cells is 3,907 steps).
- generation: ``model.generate`` of n cells (split evenly over types) with an SDE of G steps;
  ``gen_s_500_steps`` extrapolates linearly to the default 500 steps (the cost of a step is the
  same at every step: one network call on every cell).

Run: ``python benchmarks/scaling.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from _common import BATCH_SIZE, QUIET, header, markdown, single_thread, write_section

N_LATENT = 10


def tree_newick(types: list[str]) -> str:
    depth = int(np.ceil(np.log2(max(len(types), 2))))

    def split_time(d: int) -> float:
        return (depth - d) / (depth + 1)

    def node(members: list[str], d: int, parent: float) -> str:
        if len(members) == 1:
            return f"{members[0]}:{parent!r}"
        here = split_time(d)
        mid = len(members) // 2
        inner = f"({node(members[:mid], d + 1, here)},{node(members[mid:], d + 1, here)})"
        return f"{inner}:{parent - here!r}"

    return node(types, 0, 1.0) + ";"


def latents(n_cells: int, n_types: int, seed: int):
    """AnnData (one dummy gene) with obsm["X_sim"] latents and obs["cell_type"]."""
    from anndata import AnnData
    from scipy import sparse

    rng = np.random.default_rng(seed)
    types = [f"t{i:03d}" for i in range(n_types)]
    depth = int(np.ceil(np.log2(max(n_types, 2))))
    # type i's mean: offsets of its ancestors in the binary tree of indices (prefixes of i's path)
    means = np.zeros((n_types, N_LATENT))
    for d in range(1, depth + 1):
        groups = np.arange(n_types) * (2**d) // n_types
        offsets = rng.normal(0, 2.0 / d, size=(2**d, N_LATENT))
        means += offsets[groups]
    label = rng.integers(0, n_types, size=n_cells)
    z = (means[label] + rng.normal(0, 0.5, size=(n_cells, N_LATENT))).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.asarray(types)[label], categories=types)},
                       index=pd.RangeIndex(n_cells).astype(str))
    adata = AnnData(X=sparse.csr_matrix(np.ones((n_cells, 1), dtype=np.float32)), obs=obs)
    adata.obsm["X_sim"] = z
    return adata, types


def build(adata, types, hierarchy):
    from scbranchdiff.hierarchy import Hierarchy
    from scbranchdiff.model import BranchedDiffusion

    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    spec = "flat" if hierarchy == "flat" else Hierarchy.from_newick(tree_newick(types), classes=types)
    return BranchedDiffusion(adata, latent="X_sim", hierarchy=spec)


def measure(adata, types, hierarchy, args) -> dict:
    model = build(adata, types, hierarchy)
    kwargs = dict(accelerator=args.accelerator, devices=1, seed=args.seed, **QUIET)
    t1 = _time(lambda: model.train(max_epochs=1, max_steps=args.s1, **kwargs))
    t2 = _time(lambda: model.train(max_epochs=1, max_steps=args.s2, **kwargs))
    per_step = (t2 - t1) / (args.s2 - args.s1)
    fixed = max(0.0, t2 - per_step * args.s2)
    steps_per_epoch = int(np.ceil(adata.n_obs / BATCH_SIZE))
    per_type = max(1, adata.n_obs // len(types))
    n_gen = per_type * len(types)
    # generation beyond --gen-max-cells is not timed (see benchmarks/streaming.py for 1M cells)
    gen = (_time(lambda: model.generate(per_type, sampler="sde", n_steps=args.gen_steps, seed=args.seed))
           if n_gen <= args.gen_max_cells else np.nan)
    return {
        "cells": adata.n_obs, "types": len(types), "model": "flat" if hierarchy == "flat" else "branched",
        "branches": model.hierarchy.n_branches,
        "step_ms": 1e3 * per_step, "fixed_s": fixed, "epoch_s": per_step * steps_per_epoch + fixed,
        f"gen_s_{args.gen_steps}_steps": gen, "gen_s_500_steps": gen * 500 / args.gen_steps,
        "gen_us_per_cell_step": 1e6 * gen / (n_gen * args.gen_steps),
    }


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--cells", type=int, nargs="+", default=None, help="cells, at 10 types")
    parser.add_argument("--types", type=int, nargs="+", default=None, help="types, at --type-cells cells")
    parser.add_argument("--type-cells", type=int, default=None)
    parser.add_argument("--s1", type=int, default=None)
    parser.add_argument("--s2", type=int, default=None)
    parser.add_argument("--gen-steps", type=int, default=None)
    parser.add_argument("--gen-max-cells", type=int, default=100_000, help="largest population whose generation is timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    defaults = {"cells": ([10_000, 100_000, 1_000_000], [2_000, 5_000]), "types": ([10, 50, 200], [4, 16]),
                "type_cells": (50_000, 2_000), "s1": (20, 3), "s2": (80, 8), "gen_steps": (4, 2)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    single_thread()
    rows = []
    for n in args.cells:
        adata, types = latents(n, 10, args.seed)
        rows.append(measure(adata, types, "tree", args))
        print(rows[-1], flush=True)
    for k in args.types:
        adata, types = latents(args.type_cells, k, args.seed)
        for hierarchy in ("tree", "flat"):
            rows.append(measure(adata.copy(), types, hierarchy, args))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    by_cells = table.iloc[: len(args.cells)].set_index("cells").drop(columns=["types", "model"])
    by_types = table.iloc[len(args.cells):].set_index(["types", "model"]).drop(columns=["cells"])
    by_types.index = [f"{k} types, {m}" for k, m in by_types.index]
    by_types.index.name = "types"
    captions = (
        f"Cost vs cells (10 types, branched): per-step time from {args.s1} and {args.s2} training steps; "
        f"epoch_s extrapolated; generation timed at {args.gen_steps} SDE steps (up to {args.gen_max_cells} cells), "
        "500 steps extrapolated.",
        f"Cost vs types ({args.type_cells} cells, branched vs flat), same measurements.",
    )
    pd.set_option("display.width", 200)
    for caption, t in zip(captions, (by_cells, by_types), strict=True):
        print(f"\n{caption}\n\n{t.round(3).to_string()}")
    if args.write_docs:
        command = "OMP_NUM_THREADS=1 python benchmarks/scaling.py " + " ".join(
            a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs")
        body = [header(command)]
        for caption, t in zip(captions, (by_cells, by_types), strict=True):
            body += [caption, "", markdown(t), ""]
        write_section("scaling", "\n".join(body))


if __name__ == "__main__":
    main()
