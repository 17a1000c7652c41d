"""Where the scVI stage's time goes on CPU: scvi-tools' training against the module's own arithmetic.

``train()`` spends most of its time in the scVI stage (docs/benchmarks.md, "Default budget").
This script tells what of it a different training loop could save and what is the model's own
arithmetic. Per dataset, with the package's settings (``SCVILatent``: scvi-tools' defaults,
batch 128, its train/validation split):

- ``scvi_tools_ms``: ms per optimiser step of ``SCVILatent.fit`` (scvi-tools' ``SCVI.train``,
  a Lightning loop), timed by a callback from the second epoch to the last (set-up and the first
  epoch left out);
- ``plain_ms``: ms per step of a plain PyTorch loop over the same module (forward with the loss,
  backward, Adam with scvi-tools' training-plan settings) on dense minibatches already in
  memory: no Lightning, no data loader, no metric logging;
- ``loop_overhead``: their ratio, what any training loop could save at most;
- ``gamma_share``: share of the plain step's CPU time (torch.profiler, self time) spent in
  ``lgamma`` and ``digamma``: the ZINB log-likelihood and its gradient, scvi-tools' model code;
  ``matmul_share`` in the linear layers' matrix products;
- ``bare_steps_per_step``: the plain step in the benchmarks' unit of cost.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/scvi_stage.py --write-docs   # ~3 min
    OMP_NUM_THREADS=1 python benchmarks/scvi_stage.py --quick        # seconds
"""

from __future__ import annotations

import argparse
import time

from _common import bare_step_seconds, header, load_dataset, markdown, single_thread, write_section

COMMAND = "OMP_NUM_THREADS=1 python benchmarks/scvi_stage.py"
SECTION = "scvi-stage"
BATCH = 128  # SCVILatent.fit's default, scvi-tools' too
GAMMA_OPS = ("aten::lgamma", "aten::digamma")
MATMUL_OPS = ("aten::mm", "aten::addmm")


def plain_loop(module, counts, n_steps: int, seed: int = 0):
    """(seconds per step, profiler averages) of a plain PyTorch loop over the scVI module."""
    import torch
    from scvi import REGISTRY_KEYS
    from torch.profiler import ProfilerActivity, profile

    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, eps=0.01, weight_decay=1e-6)
    gen = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(BATCH, 1)

    def step() -> None:
        rows = torch.randint(0, counts.shape[0], (BATCH,), generator=gen)
        tensors = {REGISTRY_KEYS.X_KEY: counts[rows], REGISTRY_KEYS.BATCH_KEY: zeros, REGISTRY_KEYS.LABELS_KEY: zeros}
        _, _, loss = module(tensors, loss_kwargs={"kl_weight": 1.0})
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    seconds = (time.perf_counter() - start) / n_steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(max(5, n_steps // 4)):
            step()
    return seconds, prof.key_averages()


def epoch_clock():
    """A Lightning callback timing the steps from the second training epoch to the last."""
    from lightning.pytorch import Callback

    class EpochClock(Callback):
        start = end = None
        first_step = last_step = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                self.start, self.first_step = time.perf_counter(), trainer.global_step

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.end, self.last_step = time.perf_counter(), trainer.global_step

        def seconds_per_step(self) -> float:
            return (self.end - self.start) / (self.last_step - self.first_step)

    return EpochClock()


def run_dataset(name: str, quick: bool, epochs: int, n_steps: int) -> dict:
    import numpy as np
    import torch

    import scbranchdiff as sbd

    adata, key = load_dataset(name, quick=quick)
    backend = sbd.latent.SCVILatent(n_latent=10)
    labels = adata.obs[key].astype(str).to_numpy()
    clock = epoch_clock()
    backend.fit(adata, labels, layer="counts", seed=0, max_epochs=epochs, batch_size=BATCH,
                enable_progress_bar=False, enable_model_summary=False, logger=False, callbacks=[clock])
    scvi_s = clock.seconds_per_step()
    counts = adata.layers["counts"]
    counts = torch.as_tensor(counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts),
                             dtype=torch.float32)
    plain_s, averages = plain_loop(backend.model.module, counts, n_steps)
    total = sum(e.self_cpu_time_total for e in averages)
    share = lambda names: sum(e.self_cpu_time_total for e in averages if e.key in names) / total  # noqa: E731
    bare = bare_step_seconds()
    return {
        "dataset": name, "cells": adata.n_obs, "genes": adata.n_vars,
        "steps_timed": clock.last_step - clock.first_step, "scvi_tools_ms": 1000 * scvi_s,
        "plain_ms": 1000 * plain_s, "loop_overhead": scvi_s / plain_s, "gamma_share": share(GAMMA_OPS),
        "matmul_share": share(MATMUL_OPS), "bare_steps_per_step": plain_s / bare,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "paul15", "simulated", "pbmc_facs"])
    parser.add_argument("--epochs", type=int, default=20, help="epochs of scvi-tools' loop timed per dataset")
    parser.add_argument("--steps", type=int, default=200, help="steps of the plain loop timed per dataset")
    parser.add_argument("--quick", action="store_true", help="simulated data, 3 epochs, 20 steps")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    single_thread()
    import pandas as pd

    datasets = ["simulated"] if args.quick else args.datasets
    epochs, steps = (3, 20) if args.quick else (args.epochs, args.steps)
    table = pd.DataFrame([run_dataset(name, args.quick, epochs, steps) for name in datasets]).set_index("dataset")
    text = markdown(table, digits=2)
    print(text)
    if args.write_docs and not args.quick:
        write_section(SECTION, f"{header(COMMAND)}\n{text}\n")


if __name__ == "__main__":
    main()
