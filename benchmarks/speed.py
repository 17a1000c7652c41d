"""Speed benchmark: training and generation throughput, shared-prefix sampling, ODE vs SDE,
continual learning vs retraining, peak memory. Every ratio comes from this one run.

Data: counts simulated from the default 8-type tree (400 cells per type, 30% held out),
log-normalised, in a 10-dimensional PCA latent fitted once and shared by every model (so only
the diffusion stage is timed). Networks: the package defaults (width 256, 3 trunk blocks, heads =
per-branch affine map + output layer, gathered per sample); branched = hierarchy discovered from the data, flat = one branch with a class
embedding (the paper's label-guided baseline).

Sections:

1. ``train``: cells/s of ``model.train`` for a fixed number of optimiser steps (batch 256),
   branched and flat alternated twice, best of two kept; and the same for the bare optimiser
   step (loss, backward, AdamW; no Lightning), which isolates what the heads cost.
2. ``generate``: cells/s of ``generate`` (SDE, 500 steps; latents only), branched and flat.
3. ``shared prefix``: all types in one call (each branch segment integrated once) vs one call
   per type, same cells and steps; and the rows each sends through the network (cells x steps),
   whose ratio bounds the speed-up where arithmetic is the cost.
4. ``samplers``: time and quality (kNN two-sample AUC in the latent against held-out real cells,
   mean over types; 0.5 = indistinguishable) of SDE and ODE at several step counts.
5. ``continual``: a branched model trained on 7 types, then ``add_cell_types`` with the 8th,
   vs training on all 8 from scratch: time ratio and old/new-type AUC before and after
   (benchmarks/continual.py has the full comparison, flat fine-tuning included).
6. Peak memory: RSS increase of the process during each timed call (psutil, every 5 ms).

Run: ``python benchmarks/speed.py`` (``--accelerator gpu`` on a GPU machine; ``--quick`` for a
smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from _common import (
    BATCH_SIZE,
    QUIET,
    PeakMemory,
    bare_step_seconds,
    epochs_for,
    header,
    markdown,
    per_type_auc,
    simulated_eleven,
    single_thread,
    stratified_split,
    write_section,
)

NEW_TYPE = "DC_plasmacytoid"


def measure(fn):
    """(seconds, peak RSS increase in MiB, result)."""
    with PeakMemory() as mem:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    return seconds, mem.peak_mb, out


def network_rows(model, fn):
    """(rows (cells x steps) that `fn` sends through `model`'s network, `fn`'s result)."""
    rows = [0]
    hook = model.module.register_forward_pre_hook(lambda _, inputs: rows.__setitem__(0, rows[0] + len(inputs[0])))
    try:
        out = fn()
    finally:
        hook.remove()
    return rows[0], out


def data(args):
    import scanpy as sc

    import scbranchdiff as sbd
    from scbranchdiff.latent import PCALatent

    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=args.cells, n_genes=300 if args.quick else 500, seed=args.seed)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    held = stratified_split(adata.obs["cell_type"], 0.3, args.seed)
    train, test = adata[~held].copy(), adata[held].copy()
    latent = PCALatent(n_latent=10)
    latent.fit(train, train.obs["cell_type"].to_numpy())
    return train, test, latent


def new_model(adata, latent, hierarchy):
    import copy

    from scbranchdiff.model import BranchedDiffusion

    adata = adata.copy()
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    return BranchedDiffusion(adata, latent=copy.deepcopy(latent), hierarchy=hierarchy)


def bare_steps(model, n_steps: int, device: str) -> float:
    """Seconds of `n_steps` bare optimiser steps (loss, backward, AdamW) of a trained model's network."""
    import torch

    from scbranchdiff.train import DiffusionTrainingPlan

    plan = DiffusionTrainingPlan(model.module, model.hierarchy, model.sde).to(device)
    model.module.train()
    opt = torch.optim.AdamW([p for p in model.module.parameters() if p.requires_grad], lr=1e-4)
    z = torch.as_tensor(model.get_latent_representation(scaled=True), device=device)
    labels = torch.as_tensor(model.hierarchy.class_index(model.adata.obs["cell_type"].astype(str).to_numpy()), device=device)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(z), (BATCH_SIZE,), generator=gen) for _ in range(n_steps)]
    for idx in batches[:5]:  # warm-up
        plan.loss(z[idx], labels[idx]).backward()
        opt.step()
        opt.zero_grad()
    _sync(device)
    start = time.perf_counter()
    for idx in batches:
        plan.loss(z[idx], labels[idx]).backward()
        opt.step()
        opt.zero_grad()
    _sync(device)
    model.module.eval()
    return time.perf_counter() - start


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generation_cost(args, unit: float) -> pd.DataFrame:
    """Cost of 200 cells of each of 11 types decoded to counts (scVI latent), old and new default sampler."""
    from scbranchdiff.model import BranchedDiffusion

    per_type = 20 if args.quick else 200
    adata = simulated_eleven(40 if args.quick else 300, 400 if args.quick else 500, args.seed)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type", layer="counts")
    model = BranchedDiffusion(adata)
    extra = {"max_epochs": 2, "latent_max_epochs": 2} if args.quick else {}
    model.train(accelerator=args.accelerator, devices=1, seed=args.seed, **extra, **QUIET)
    rows = {}
    for name, sampler in (("sde, 200 steps (default until 2026-11-30)", {"sampler": "sde", "n_steps": 200}),
                          ("ancestral, 50 steps (default)", {})):
        model.generate(per_type, seed=args.seed, **sampler)  # warm-up
        seconds = min(measure(lambda s=sampler: model.generate(per_type, seed=args.seed, **s))[0] for _ in range(2))
        n = per_type * len(model.classes)
        rows[name] = {"cells": n, "seconds": seconds, "cells_per_s": n / seconds, "bare_steps": seconds / unit}
    old, new = rows["sde, 200 steps (default until 2026-11-30)"], rows["ancestral, 50 steps (default)"]
    rows["new / old"] = {"cells": np.nan, "seconds": new["seconds"] / old["seconds"],
                         "cells_per_s": new["cells_per_s"] / old["cells_per_s"], "bare_steps": new["bare_steps"] / old["bare_steps"]}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("sampler")
    table.attrs["caption"] = (f"Generation decoded to counts: {per_type} cells of each of {len(model.classes)} simulated "
                              f"types (scVI latent, package defaults), best of 2; `bare_steps` in the unit "
                              f"({1000 * unit:.2f} ms).")
    return table


def latent_auc(model, gen, test, seed=0) -> pd.Series:
    z_test = model.latent_backend.encode(test)
    types = list(gen.obs["cell_type"].astype(str).unique())
    return per_type_auc(z_test, test.obs["cell_type"], gen.obsm["X_latent"], gen.obs["cell_type"], types, seed)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    parser.add_argument("--accelerator", default="cpu", help="'cpu' or 'gpu'")
    parser.add_argument("--cells", type=int, default=None, help="simulated cells per type")
    parser.add_argument("--train-steps", type=int, default=None, help="optimiser steps per throughput measurement")
    parser.add_argument("--model-steps", type=int, default=None, help="training steps of the models that generate")
    parser.add_argument("--gen-cells", type=int, default=None, help="generated cells per type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    for name, full, small in (("cells", 400, 40), ("train_steps", 200, 4), ("model_steps", 1000, 10),
                              ("gen_cells", 100, 10)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    sde_steps = 10 if args.quick else 500
    single_thread()
    import torch

    device = "cuda" if args.accelerator == "gpu" else "cpu"
    card = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    trainer = dict(accelerator=args.accelerator, devices=1, seed=args.seed, **QUIET)
    train, test, latent = data(args)
    n_types = train.obs["cell_type"].nunique()
    unit = bare_step_seconds(device)  # the machine-independent unit (see _common)
    sections: dict[str, pd.DataFrame] = {}

    # 1. training throughput ------------------------------------------------------------------
    steps_per_epoch = int(np.ceil(train.n_obs / BATCH_SIZE))
    epochs = epochs_for(args.train_steps, train.n_obs)
    n_steps = epochs * steps_per_epoch
    models = {k: new_model(train, latent, h) for k, h in (("branched", "auto"), ("flat", "flat"))}
    for m in models.values():  # hierarchy discovery, scaling and network set-up outside the timings
        m.train(max_epochs=1, **trainer)
    best, mem = {}, {}
    for _ in range(1 if args.quick else 2):
        for kind, m in models.items():
            s, peak, _ = measure(lambda m=m: m.train(max_epochs=epochs, **trainer))
            best[kind] = min(best.get(kind, np.inf), s)
            mem[kind] = max(mem.get(kind, 0.0), peak)
    bare = {kind: min(bare_steps(m, n_steps, device) for _ in range(1 if args.quick else 2)) for kind, m in models.items()}
    rows = {}
    for kind, m in models.items():
        rows[kind] = {"heads": len(m.module.heads), "train_cells_per_s": n_steps * BATCH_SIZE / best[kind],
                      "bare_step_cells_per_s": n_steps * BATCH_SIZE / bare[kind],
                      "ms_per_step": 1000 * best[kind] / n_steps,
                      "loop_overhead": best[kind] / bare[kind],
                      "unit_bare_steps_per_step": best[kind] / n_steps / unit, "peak_mem_mb": mem[kind]}
    rows["branched / flat"] = {"heads": np.nan,
                               "train_cells_per_s": rows["branched"]["train_cells_per_s"] / rows["flat"]["train_cells_per_s"],
                               "bare_step_cells_per_s": rows["branched"]["bare_step_cells_per_s"] / rows["flat"]["bare_step_cells_per_s"],
                               "ms_per_step": np.nan, "loop_overhead": np.nan, "unit_bare_steps_per_step": np.nan,
                               "peak_mem_mb": np.nan}
    sections["train"] = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
    sections["train"].attrs["caption"] = (
        f"Training throughput: {n_steps} optimiser steps of batch {BATCH_SIZE} ({epochs} epochs of "
        f"{train.n_obs} cells, {n_types} types), best of 2. `loop_overhead`: a step through "
        "`model.train` (Lightning, EMA, logging, data module) over a bare step (loss, backward, AdamW) "
        "of the same network; `unit_bare_steps_per_step`: the step in the unit of these benchmarks "
        f"(one bare step of a plain width-256 MLP, {1000 * unit:.2f} ms here).")

    # models that generate: trained to a fixed budget
    gen_models = {k: new_model(train, latent, h) for k, h in (("branched", "auto"), ("flat", "flat"))}
    fit_s = {}
    for kind, m in gen_models.items():
        fit_s[kind], _, _ = measure(lambda m=m: m.train(max_epochs=epochs_for(args.model_steps, train.n_obs), **trainer))

    # 2. generation throughput --------------------------------------------------------------------
    classes = list(gen_models["branched"].classes)
    n_gen = args.gen_cells * len(classes)
    rows = {}
    for kind, m in gen_models.items():
        s, peak, gen = measure(lambda m=m: m.generate(args.gen_cells, seed=args.seed))
        rows[kind] = {"cells": n_gen, "seconds": s, "cells_per_s": n_gen / s, "peak_mem_mb": peak,
                      "auc_latent": float(latent_auc(m, gen, test).mean())}
    rows["branched / flat"] = {"cells": np.nan, "seconds": rows["branched"]["seconds"] / rows["flat"]["seconds"],
                               "cells_per_s": rows["branched"]["cells_per_s"] / rows["flat"]["cells_per_s"],
                               "peak_mem_mb": np.nan, "auc_latent": np.nan}
    sections["generate"] = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
    sections["generate"].attrs["caption"] = (f"Generation: {args.gen_cells} cells of each of {len(classes)} types, default "
                                             f"sampler (ancestral, 50 steps; PCA latent); models trained "
                                             f"{args.model_steps} steps; auc_latent vs held-out real (0.5 = ideal).")

    # 3. shared prefix -----------------------------------------------------------------------------
    branched = gen_models["branched"]
    # the work itself, counted in the timed calls (one hook call per network call): rows through
    # the network, the bound on the speed-up
    rows_all, (s_all, _, _) = network_rows(branched, lambda: measure(
        lambda: branched.generate(args.gen_cells, seed=args.seed)))
    rows_one, (s_one, _, _) = network_rows(branched, lambda: measure(
        lambda: [branched.generate({c: args.gen_cells}, seed=args.seed) for c in classes]))
    s_flat_one, _, _ = measure(lambda: [gen_models["flat"].generate({c: args.gen_cells}, seed=args.seed)
                                        for c in classes]) if not args.quick else (np.nan, 0, None)
    sections["prefix"] = pd.DataFrame({
        "seconds": [s_all, s_one, s_flat_one, s_one / s_all],
        "network_rows": [rows_all, rows_one, np.nan, rows_one / rows_all],
    }, index=pd.Index(["branched, all types in one call", "branched, one call per type",
                       "flat, one call per type", "speed-up of shared prefixes"], name="sampling"))
    sections["prefix"].attrs["caption"] = (
        f"Shared-prefix sampling of {len(classes)} types x {args.gen_cells} cells, default sampler "
        f"({branched.hierarchy.n_branches} branches). `network_rows`: rows evaluated by the network "
        "in all (one row = one cell at one step); their ratio bounds the speed-up where the "
        "network's arithmetic dominates, as on a CPU.")

    # 4. samplers at equal quality ----------------------------------------------------------------
    configs = [("sde", 10), ("ode", 5)] if args.quick else [("sde", 500), ("sde", 100), ("ode", 100), ("ode", 25)]
    rows = {}
    for kind, m in gen_models.items():
        for sampler, steps in configs:
            s, _, gen = measure(lambda m=m, sampler=sampler, steps=steps: m.generate(args.gen_cells, sampler=sampler, n_steps=steps, seed=args.seed))
            rows[f"{kind}, {sampler} {steps}"] = {"seconds": s, "cells_per_s": n_gen / s,
                                                  "auc_latent": float(latent_auc(m, gen, test).mean())}
    sections["samplers"] = pd.DataFrame.from_dict(rows, orient="index").rename_axis("sampler")
    sections["samplers"].attrs["caption"] = (f"Samplers: {n_gen} cells ({args.gen_cells} per type), auc_latent = kNN "
                                             "two-sample AUC vs held-out real latents, mean over types.")

    # 5. continual learning --------------------------------------------------------------------------
    old_cells = train[train.obs["cell_type"] != NEW_TYPE].copy()
    old_cells.obs["cell_type"] = old_cells.obs["cell_type"].cat.remove_unused_categories()
    new_cells = train[train.obs["cell_type"] == NEW_TYPE].copy()
    old_types = list(old_cells.obs["cell_type"].cat.categories)
    base = new_model(old_cells, latent, "auto")
    t_base, _, _ = measure(lambda: base.train(max_epochs=epochs_for(args.model_steps, old_cells.n_obs), **trainer))
    before = latent_auc(base, base.generate(args.gen_cells, sampler="sde", n_steps=sde_steps, seed=args.seed), test)
    add_steps = max(1, args.model_steps // 4)  # as the package defaults: 2,000 added vs 8,000 full steps
    t_add, m_add, _ = measure(lambda: base.add_cell_types(new_cells, epochs_for(add_steps, new_cells.n_obs), **trainer))
    after = latent_auc(base, base.generate(args.gen_cells, sampler="sde", n_steps=sde_steps, seed=args.seed), test)
    retrained = gen_models["branched"]  # trained from scratch on all 8 types, same budget as the base
    full = latent_auc(retrained, retrained.generate(args.gen_cells, sampler="sde", n_steps=sde_steps, seed=args.seed), test)
    sections["continual"] = pd.DataFrame({
        "train_s": [t_base, t_add, fit_s["branched"]],
        "time_vs_retrain": [t_base / fit_s["branched"], t_add / fit_s["branched"], 1.0],
        "old_auc_latent": [before.reindex(old_types).mean(), after.reindex(old_types).mean(), full.reindex(old_types).mean()],
        "new_auc_latent": [np.nan, after.get(NEW_TYPE, np.nan), full.get(NEW_TYPE, np.nan)],
        "peak_mem_mb": [np.nan, m_add, np.nan],
    }, index=pd.Index([f"base (7 types, {args.model_steps} steps)", f"+ add_cell_types({NEW_TYPE}, {add_steps} steps)",
                       f"retrained on 8 types ({args.model_steps} steps)"], name="model"))
    sections["continual"].attrs["caption"] = ("Continual learning of one new type vs retraining (old-type samples stay "
                                              "bit-identical by construction; AUC in the latent vs held-out real).")

    # 6. generation decoded to counts, in bare steps ----------------------------------------------
    sections["counts"] = generation_cost(args, unit)

    pd.set_option("display.width", 200)
    intro = f"Device: {card}; {train.n_obs} training cells of {n_types} simulated types."
    print(intro)
    for name, table in sections.items():
        print(f"\n## {name}\n{table.attrs['caption']}\n")
        print(table.round(3).to_string(), flush=True)
    if args.write_docs:
        command = "OMP_NUM_THREADS=1 python benchmarks/speed.py " + " ".join(a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs")
        body = [header(command), intro, ""]
        for table in sections.values():
            body += [table.attrs["caption"], "", markdown(table), ""]
        write_section("speed-gpu" if device == "cuda" else "speed", "\n".join(body))


if __name__ == "__main__":
    main()
