"""Lineage faithfulness of hierarchy discovery: discovered trees against known ones.

For every dataset with a known class tree, discover the tree with each criterion ("gaussian",
the default, and the paper's "cosine") and each linkage (single, average, complete) on the PCA
of log-normalised counts under both latent scalings the model offers (one global scale;
per-dimension standardisation), and score it against the known tree with
`scbranchdiff.hierarchy.tree_agreement`: rooted-triplet agreement (of the triplets the known
tree resolves, the fraction the discovered tree resolves the same way), rooted Robinson-Foulds
distance and the recall of the known groups; summarise per method; and give the spread of the
default's split heights in diffusion time t and in log-SNR lambda = log(a(t)^2 / s(t)^2).
Each latent is the first 10, 20 or 30 components of one PCA.

Known trees:

- ``pbmc_facs``: the annotation, lineage > subpop > celltype (bead-sorted populations):
  (lymphoid: (B, NK, T: (six T subsets)), CD14+ monocyte, CD34+ progenitor).
- ``paul15``: its obs holds cell types only, no grouping. As a partial reference this script
  uses the lineages the data README describes (erythroid/megakaryocyte vs GMP -> monocyte /
  neutrophil), on those five types only: ((Erythrocyte, Megakaryocytes), (GMP, Monocytes,
  Neutrophils)); Basophils and multipotent progenitors are left out.
- ``sim8``: `scbranchdiff.data.simulate_hierarchy` with its default 8-type, 3-level binary tree
  (200 cells per type), several seeds.
- ``sim14``: a 14-type tree with leaves at depths 1-4, multifurcations and four rare types
  (40-60 cells), several seeds.

No diffusion model is trained: discovery is numpy only. Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/lineage.py            # ~2 min on one core
    OMP_NUM_THREADS=1 python benchmarks/lineage.py --quick    # seconds
    OMP_NUM_THREADS=1 python benchmarks/lineage.py --write-docs   # tables into the docs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the thread settings)
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATASETS = ("pbmc_facs", "paul15", "sim8", "sim14")
SCALINGS = ("global", "per_dimension")
METHODS = tuple(
    (criterion, linkage)
    for criterion in ("gaussian", "cosine")
    for linkage in ("single", "average", "complete")
)
DEFAULT_METHOD = ("gaussian", "average")

SIM14_TREE = {
    "lymphoid": {
        "T": {"CD4": ["CD4_naive", "CD4_memory", "Treg"], "CD8": ["CD8_naive", "CD8_effector"]},
        "B": ["B_naive", "B_memory", "plasma"],
        "NK": None,
    },
    "myeloid": {"mono": ["mono_classical", "mono_nonclassical"], "DC": ["cDC", "pDC"]},
    "HSC": None,
}
SIM14_RARE = {"Treg": 50, "plasma": 60, "pDC": 40, "HSC": 50}
PAUL15_REFERENCE = (("Erythrocyte", "Megakaryocytes"), ("GMP", "Monocytes", "Neutrophils"))


# ---------------------------------------------------------------------------- latents
def pca_latent(adata, n_comps: int, n_hvg: int | None) -> np.ndarray:
    """Centred PCA of log-normalised counts (HVGs first when `n_hvg` is below the gene count)."""
    import scanpy as sc

    adata = adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if n_hvg is not None and adata.n_vars > n_hvg:
        sc.pp.highly_variable_genes(adata, n_top_genes=n_hvg, subset=True)
    sc.pp.pca(adata, n_comps=n_comps, random_state=0)
    latent = adata.obsm["X_pca"].astype(np.float64)
    return latent - latent.mean(0)


def scale(latent: np.ndarray, scaling: str) -> np.ndarray:
    """The model's two scalings (BranchedDiffusion(latent_scaling=...)) of a centred latent."""
    sd = latent.std(0)
    if scaling == "global":
        return latent / np.sqrt(np.mean(sd**2))
    return latent / np.maximum(sd, 1e-6)


def datasets(names, n_comps: int, n_seeds: int, quick: bool):
    """Yield (dataset, replicate, latent, labels, known tree, compare-on classes or None)."""
    import anndata as ad

    from scbranchdiff.data import simulate_hierarchy
    from scbranchdiff.hierarchy import Topology

    for name in names:
        if name == "pbmc_facs":
            adata = ad.read_h5ad(SHARED_DATA / "pbmc_facs.h5ad")
            if quick:
                adata = adata[np.random.default_rng(0).permutation(adata.n_obs)[:1200]].copy()
            known = Topology.from_annotation(adata.obs, ["lineage", "subpop", "celltype"])
            latent = pca_latent(adata, n_comps, n_hvg=2000)
            yield name, 0, latent, adata.obs["celltype"].astype(str).to_numpy(), known, None
        elif name == "paul15":
            adata = ad.read_h5ad(SHARED_DATA / "paul15_myeloid.h5ad")
            latent = pca_latent(adata, n_comps, n_hvg=None)
            labels = adata.obs["cell_type"].astype(str).to_numpy()
            compare = [c for group in PAUL15_REFERENCE for c in group]
            yield name, 0, latent, labels, Topology(PAUL15_REFERENCE), compare
        elif name in ("sim8", "sim14"):
            tree = None if name == "sim8" else SIM14_TREE
            sizes = (200 if name == "sim8"
                     else {**dict.fromkeys(_leaves(SIM14_TREE), 200), **SIM14_RARE})
            if quick:
                sizes = 60 if name == "sim8" else {k: max(30, v // 4) for k, v in sizes.items()}
            for seed in range(1 if quick else n_seeds):
                adata, truth = simulate_hierarchy(
                    tree, n_cells_per_type=sizes, n_genes=300 if name == "sim8" else 600, seed=seed
                )
                latent = pca_latent(adata, n_comps, n_hvg=None)
                labels = adata.obs["cell_type"].astype(str).to_numpy()
                yield name, seed, latent, labels, Topology.from_nested(truth), None
        else:
            raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def _leaves(tree) -> list[str]:
    if isinstance(tree, dict):
        return [leaf for key, sub in tree.items()
                for leaf in ([key] if sub is None else _leaves(sub))]
    return [leaf for sub in tree for leaf in ([sub] if isinstance(sub, str) else _leaves(sub))]


# ---------------------------------------------------------------------------- scoring
def run(names, comps: list[int], n_seeds: int, quick: bool) -> pd.DataFrame:
    """One row per (dataset, replicate, PCA size, scaling, criterion, linkage)."""
    from scbranchdiff.diffusion import VPSDE
    from scbranchdiff.hierarchy import discover_hierarchy, log_snr, tree_agreement

    sde = VPSDE()
    rows = []
    n_times = 300 if quick else 1000
    for name, replicate, pcs, labels, known, compare in datasets(names, max(comps), n_seeds, quick):
        for n_comps in comps:
            for scaling in SCALINGS:
                z = scale(pcs[:, :n_comps], scaling)
                for criterion, linkage in METHODS:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        tree = discover_hierarchy(
                            z, labels, sde=sde, criterion=criterion, linkage=linkage,
                            n_times=n_times, seed=replicate,
                        )
                    scores = tree_agreement(tree, known, classes=compare)
                    times = np.array(sorted(tree.split_times().values()))
                    inner = [br for b, br in enumerate(tree.branches)
                             if tree.children(b) and br.t_end < 1.0]
                    rows.append({
                        "dataset": name, "replicate": replicate, "n_comps": n_comps,
                        "scaling": scaling, "criterion": criterion, "linkage": linkage,
                        "triplet": scores["triplet_agreement"],
                        "rf": scores["robinson_foulds"],
                        "clade_recall": scores["clade_recall"],
                        # every known group found and none contradicted (a binary refinement)
                        "recovered": float(scores["triplet_agreement"] == 1.0),
                        "t_first": times.min(), "t_last": times.max(),
                        "lam_first": float(log_snr(times.min(), sde)),
                        "lam_last": float(log_snr(times.max(), sde)),
                        "t_inner": min((br.length for br in inner), default=np.nan),
                        "lam_inner": min((float(log_snr(br.t_start, sde) - log_snr(br.t_end, sde))
                                          for br in inner), default=np.nan),
                    })
    return pd.DataFrame(rows)


def by_method(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows: criterion, linkage; columns: dataset / scaling; mean of `column` over the rest."""
    mean = results.groupby(["criterion", "linkage", "dataset", "scaling"], sort=False)[column].mean()
    table = mean.unstack(["dataset", "scaling"])
    table.columns = [f"{d} {'glob' if s == 'global' else 'perdim'}" for d, s in table.columns]
    return table


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per method, over the datasets whose tree is known (paul15's partial reference left out)."""
    known = results[results["dataset"] != "paul15"]
    cell = known.groupby(["criterion", "linkage", "dataset", "scaling", "n_comps"], sort=False)
    per = cell["triplet"].mean()
    out = pd.DataFrame({
        "triplet_mean": per.groupby(level=[0, 1], sort=False).mean(),
        "triplet_worst": per.groupby(level=[0, 1], sort=False).min(),
        "triplet_global": per.xs("global", level="scaling").groupby(level=[0, 1], sort=False).mean(),
        "triplet_perdim": per.xs("per_dimension", level="scaling").groupby(level=[0, 1], sort=False).mean(),
        "clade_recall": cell["clade_recall"].mean().groupby(level=[0, 1], sort=False).mean(),
    })
    sim = known[known["dataset"].str.startswith("sim")]
    hits = sim.groupby(["criterion", "linkage"], sort=False)["recovered"]
    out["sim_recovered"] = [f"{int(a)}/{int(b)}" for a, b in zip(hits.sum(), hits.size(), strict=True)]
    return out


def spread_table(results: pd.DataFrame) -> pd.DataFrame:
    """The default method's split heights: first/last split and shortest inner branch."""
    default = results[(results["criterion"] == DEFAULT_METHOD[0]) & (results["linkage"] == DEFAULT_METHOD[1])]
    grouped = default.groupby(["dataset", "scaling"], sort=False)
    table = grouped.agg(
        t_first=("t_first", "median"), t_last=("t_last", "median"), t_inner=("t_inner", "median"),
        lam_first=("lam_first", "median"), lam_last=("lam_last", "median"),
        lam_inner=("lam_inner", "median"),
    )
    return table


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    frame = df.reset_index()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(p) for p in col if str(p)) for col in frame.columns]

    def fmt(v):
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--comps", nargs="+", type=int, default=[10, 20, 30],
                        help="PCA sizes of the latent (the first k of one PCA)")
    parser.add_argument("--seeds", type=int, default=5, help="simulated replicates per tree")
    parser.add_argument("--quick", action="store_true", help="small data (smoke test)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the tables into docs/benchmarks.md (lineage section)")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    start = time.perf_counter()
    results = run(args.datasets, sorted(args.comps), args.seeds, args.quick)
    show = markdown if args.markdown else (lambda df: df.round(3).to_string())
    triplet_caption = (
        "Triplet agreement with the known tree (1 = every triplet it resolves recovered), "
        "mean over PCA sizes and replicates"
    )
    rf_caption = (
        "Rooted Robinson-Foulds distance to the known tree (0 = same topology; pbmc_facs and "
        "sim14 have multifurcations, so a binary tree is at least 6 and 4 away), same means"
    )
    summary_caption = (
        "Per method over the datasets with a known tree (pbmc_facs, sim8, sim14; each "
        "dataset x scaling x PCA size weighted equally; sim_recovered = simulated runs whose "
        "tree holds every true group and contradicts none)"
    )
    heights_caption = (
        f"Split heights of the default ({DEFAULT_METHOD[0]} + {DEFAULT_METHOD[1]}), median "
        "over PCA sizes and replicates: first and last split and shortest inner branch, in "
        "diffusion time t and in log-SNR lambda = log(a(t)^2 / s(t)^2)"
    )
    tables = [
        ("triplet", triplet_caption, by_method(results, "triplet")),
        ("robinson_foulds", rf_caption, by_method(results, "rf")),
        ("summary", summary_caption, summary_table(results)),
        ("heights", heights_caption, spread_table(results)),
    ]
    for name, caption, table in tables:
        print(f"## {name}\n{caption}\n")
        print(show(table) + "\n")
    elapsed = time.perf_counter() - start
    print(f"{len(results)} discoveries in {elapsed:.0f} s (PCA "
          f"{'/'.join(map(str, sorted(args.comps)))} comps; {args.seeds if not args.quick else 1} "
          "simulated replicates).", flush=True)
    if args.write_docs:
        from _common import write_section

        command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/lineage.py",
                            *(sys.argv[1:] if argv is None else argv)])
        stamp = time.strftime("%Y-%m-%d %H:%M %Z")
        body = [
            f"Run {stamp} on {_cpu()}, one thread: {len(results)} discoveries in {elapsed:.0f} s.",
            "",
            "```bash",
            command.replace(" --write-docs", ""),
            "```",
            "",
        ]
        for _, caption, table in tables:
            body += [caption + ".", "", markdown(table), ""]
        write_section("lineage", "\n".join(body))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
