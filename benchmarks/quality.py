"""Quality benchmark: generated vs held-out real cells, branched diffusion against baselines.

For each dataset, 40% of the cells of every type are held out and split in two halves: the
*reference* half R (what every method is compared with) and the *floor* half F (fresh real
cells). Every method then produces |R_t| cells of each type t, and they are scored per type
against R:

- ``auc_latent``: kNN two-sample AUC (:func:`scbranchdiff.metrics.c2st_auc`, 5-fold) in the
  model's scVI latent (scANVI: in its own latent, against its own encodings of R); 0.5 means
  indistinguishable from real held-out cells, 1.0 fully separable.
- ``auc_pca``: the same AUC in an independent expression space: 30-PC PCA of log-normalised
  counts fitted on the real training cells only (:func:`scbranchdiff.metrics.fit_expression_pca`).
- ``label_ratio``: :func:`scbranchdiff.metrics.label_transfer_accuracy` (logistic regression on
  that PCA, trained on real training cells) of the method's cells divided by that of R:
  1.0 = recognised as often as held-out real cells.

Types are averaged within groups: ``common`` (>= 100 cells in the dataset) and ``rare``
(< 100 cells); a type needs 5 cells in R for an AUC (tiny types are skipped).

Methods (all share one scVI, trained once on the training cells by the branched model):

- ``branched``: BranchedDiffusion, hierarchy discovered from the data;
- ``flat``: the same network (trunk, width, steps, seed) with one branch and a class embedding;
- ``gmm``: per type a Gaussian mixture (1-5 full-covariance components, chosen by BIC) fitted
  on the training latents, decoded by the same scVI decoder;
- ``scanvi``: scANVI initialised from that scVI (``SCANVI.from_scvi_model``), trained with
  the labels; z ~ p(z | y) = int N(z; f(u, y)) N(u; 0, I) du (its ``decoder_z1_z2``), decoded
  by its own decoder with library sizes drawn from real cells of the type;
- ``decoded_real``: the scVI latents of F decoded (the floor for anything decoded by the
  same autoencoder);
- ``real``: F itself (the split-half floor: what a perfect generator would score);
- ``cfgen`` (with ``--cfgen PATH``, a checkout of theislab/CFGen, and its requirements
  installed): the published peer, trained from its own code with its published settings on the
  same training cells (``benchmarks/_cfgen.py``); it has its own autoencoder, so its
  ``auc_latent`` is NaN. ``--peers-only`` runs it alone on the same splits (for runs in parallel);
  ``--from-csv`` merges the ``--raw`` rows of such runs into one table per dataset.

The peers' protocol (:func:`scbranchdiff.metrics.peer_protocol`: 2,000 seurat_v3 genes and a
30-PC PCA of the held-out real cells R, per type with >= 20 cells in R) gives three more
columns, means over those types: ``w2`` (exact W2), ``mmd`` (RBF-MMD, kernels summed over
bandwidths 0.01-100) and ``knn_f1`` (macro-F1 of a 5-NN classifier trained on R).

Run: ``python benchmarks/quality.py`` (all datasets) or ``--quick --datasets simulated``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from _common import (
    BATCH_SIZE,
    DATASETS,
    QUIET,
    RARE_CELLS,
    epochs_for,
    group_mean,
    header,
    load_dataset,
    markdown,
    mean_sem,
    per_type_auc,
    single_thread,
    stratified_split,
    timed,
    write_section,
)

METHODS = ("branched", "flat", "gmm", "scanvi", "decoded_real", "real")
COLUMNS = ("auc_latent", "auc_latent_rare", "auc_pca", "auc_pca_rare", "label_ratio", "label_ratio_rare",
           "w2", "mmd", "knn_f1", "fit_s")


def gmm_sample(z_train: np.ndarray, labels: np.ndarray, counts: dict[str, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-type Gaussian mixtures (1-5 components by BIC) in the latent; samples of each type."""
    from sklearn.mixture import GaussianMixture

    zs, ts = [], []
    for i, (t, n) in enumerate(counts.items()):
        x = z_train[labels == t]
        best = None
        for k in range(1, min(5, max(1, len(x) // 20)) + 1):
            g = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(x)
            if best is None or g.bic(x) < best.bic(x):
                best = g
        best.random_state = seed + i
        zs.append(best.sample(n)[0].astype(np.float32))
        ts += [t] * n
    return np.concatenate(zs), np.asarray(ts)


def train_scanvi(backend, train, labels_key: str, epochs: int, seed: int):
    """scANVI from the branched model's internal scVI, trained with the training labels."""
    import scvi
    from anndata import AnnData

    scvi.settings.seed = seed
    base = backend.model
    data = AnnData(X=base.adata.X, obs=pd.DataFrame(index=base.adata.obs_names))
    data.var_names = base.adata.var_names
    data.obs[labels_key] = train.obs[labels_key].astype(str).to_numpy()
    model = scvi.model.SCANVI.from_scvi_model(base, "Unknown", labels_key=labels_key, adata=data)
    model.train(max_epochs=epochs, batch_size=128, accelerator="cpu", **QUIET)
    return model


def scanvi_minimal(model, adata, labels_key: str):
    from anndata import AnnData

    data = AnnData(X=adata.layers["counts"], obs=pd.DataFrame(index=adata.obs_names))
    data.var_names = adata.var_names
    data.obs[labels_key] = adata.obs[labels_key].astype(str).to_numpy()
    return data


def scanvi_sample(model, backend, counts: dict[str, int], labels_key: str, var, seed: int):
    """z from scANVI's label-conditional prior and counts from its decoder."""
    import torch
    from anndata import AnnData
    from scvi import REGISTRY_KEYS

    module = model.module
    module.eval()
    mapping = list(model.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    types = np.repeat(list(counts), list(counts.values()))
    y = torch.as_tensor([mapping.index(t) for t in types], dtype=torch.long)[:, None]
    lib = np.concatenate([rng.choice(backend.library[t], size=n) for t, n in counts.items()])
    with torch.no_grad():
        u = torch.randn(len(types), module.n_latent)
        mean, var_ = module.decoder_z1_z2(u, y)
        z = torch.distributions.Normal(mean, var_.sqrt()).sample()
        out = module.generative(z=z, library=torch.as_tensor(lib, dtype=torch.float32)[:, None],
                                batch_index=torch.zeros(len(types), 1, dtype=torch.long), y=y)
        x = out["px"].sample().numpy().astype(np.float32)
    gen = AnnData(X=x, obs=pd.DataFrame({labels_key: types}, index=[f"scanvi-{i}" for i in range(len(types))]), var=var.copy())
    gen.layers["counts"] = gen.X
    return z.numpy(), gen


def peer_scores(ref, gen, key: str, seed: int) -> dict[str, float]:
    """The peers' protocol against the reference cells: mean W2, MMD and kNN macro-F1 over types."""
    from scbranchdiff.metrics import peer_protocol

    try:
        table = peer_protocol(ref, gen, key, layer="counts", seed=seed)
    except ValueError as error:  # no type with 20 reference cells (tiny data)
        if "No cell type has" not in str(error):
            raise
        return dict.fromkeys(("w2", "mmd", "knn_f1"), np.nan)
    return {c: float(table.loc["overall", c]) for c in ("w2", "mmd", "knn_f1")}


def fit_ours(train, ref, floor, key: str, counts: dict[str, int], args, seed: int):
    """Branched, flat, GMM, scANVI and the decoded/real floors on one shared scVI.

    Returns (outputs, fit_s, scvi_s, epochs): outputs[method] = a list, one entry per generation
    draw (``args.draws`` of them; one for the real floors), of (latent, latent labels, latent
    reference, reference labels, AnnData of cells).
    """
    import scbranchdiff as sbd
    from scbranchdiff.latent import SCVILatent

    # None: the package's defaults (what a user's `train()` and `generate()` do)
    train_kwargs = dict(batch_size=BATCH_SIZE, seed=seed, accelerator="cpu", devices=1, **QUIET)
    if args.steps is not None:
        train_kwargs["max_epochs"] = epochs_for(args.steps, train.n_obs)
    network = {} if args.width is None else {"n_hidden": args.width}
    sampler = {"seed": seed, **({} if args.sampler is None else {"sampler": args.sampler}),
               **({} if args.n_steps is None else {"n_steps": args.n_steps})}

    BD = sbd.model.BranchedDiffusion
    # the shared scVI is trained once, timed apart, and given to both diffusion models
    backend = SCVILatent(n_latent=10)
    scvi_s, _ = timed(lambda: backend.fit(
        train, train.obs[key].astype(str).to_numpy(), layer="counts", max_epochs=args.latent_epochs,
        seed=seed, accelerator="cpu", devices=1, enable_progress_bar=False))
    fit_s = {}
    models = {}
    for method, hierarchy in (("branched", "auto"), ("flat", "flat")):
        data = train.copy()
        BD.setup_anndata(data, labels_key=key, layer="counts")
        models[method] = BD(data, latent=backend, hierarchy=hierarchy, **network)
        fit_s[method], _ = timed(lambda m=models[method]: m.train(**train_kwargs))
    branched, flat = models["branched"], models["flat"]
    data_b = branched.adata
    z_train = branched.get_latent_representation()
    z_ref = branched.get_latent_representation(ref)
    z_floor = branched.get_latent_representation(floor)
    ref_labels = ref.obs[key].astype(str).to_numpy()
    floor_labels = floor.obs[key].astype(str).to_numpy()

    # each draw: fresh cells from the same trained methods (a rare type's score from one draw of
    # a dozen cells is noisy: draws average that noise out; seeds add the training's variation)
    draws = [seed + 1000 * k for k in range(args.draws)]
    outputs = {method: [] for method in ("branched", "flat", "gmm", "scanvi")}
    for method, model in (("branched", branched), ("flat", flat)):
        for s in draws:
            gen = model.generate(counts, **{**sampler, "seed": s})
            outputs[method].append((gen.obsm["X_latent"], gen.obs[key], z_ref, ref_labels, gen))

    def gmm(s: int):
        z, t = gmm_sample(z_train, data_b.obs[key].astype(str).to_numpy(), counts, s)
        return z, t, branched.decode_latent(z, t, seed=s)

    # the mixture is fitted anew with each draw's seed (fit and sampling take under a second);
    # fit_s is the first draw's
    for s in draws:
        seconds, (z, t, gen) = timed(lambda s=s: gmm(s))
        fit_s.setdefault("gmm", seconds)
        outputs["gmm"].append((z, t, z_ref, ref_labels, gen))

    fit_s["scanvi"], scanvi = timed(lambda: train_scanvi(backend, data_b, key, args.scanvi_epochs, seed))
    z_ref_s = scanvi.get_latent_representation(scanvi_minimal(scanvi, ref, key))
    for s in draws:
        z_s, gen = scanvi_sample(scanvi, backend, counts, key, train.var, s)
        outputs["scanvi"].append((z_s, gen.obs[key], z_ref_s, ref_labels, gen))

    decoded = branched.decode_latent(z_floor, floor_labels, seed=seed)
    outputs["decoded_real"] = [(z_floor, floor_labels, z_ref, ref_labels, decoded)]
    outputs["real"] = [(z_floor, floor_labels, z_ref, ref_labels, floor)]

    return outputs, fit_s, scvi_s, branched.train_settings_["max_epochs"]


def run_dataset(name: str, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """Every method's scores on one split of `name` (the split and all training seeded by `seed`).

    Returns the table (a row per method) and what the caption says about the data and budget.
    """
    import scanpy as sc  # noqa: F401  (import cost outside the timings)

    from scbranchdiff.metrics import fit_expression_pca, label_transfer_accuracy

    t0 = time.perf_counter()
    adata, key = load_dataset(name, args.quick)
    labels = adata.obs[key].astype(str).to_numpy()
    sizes = pd.Series(labels).value_counts()
    held = stratified_split(labels, 0.4, seed)
    train = adata[~held].copy()
    held_idx = np.flatnonzero(held)
    half = stratified_split(labels[held_idx], 0.5, seed + 1)
    ref, floor = adata[held_idx[~half]].copy(), adata[held_idx[half]].copy()
    types = [t for t in adata.obs[key].astype("category").cat.categories if t in set(labels)]
    groups = {"common": [t for t in types if sizes[t] >= RARE_CELLS], "rare": [t for t in types if sizes[t] < RARE_CELLS]}
    counts = {t: int((ref.obs[key].astype(str) == t).sum()) for t in types}
    counts = {t: n for t, n in counts.items() if n > 0}

    ref_labels = ref.obs[key].astype(str).to_numpy()
    outputs, fit_s, scvi_s, epochs = {}, {}, np.nan, np.nan
    methods = []
    if not args.peers_only:
        outputs, fit_s, scvi_s, epochs = fit_ours(train, ref, floor, key, counts, args, seed)
        methods = list(METHODS)
    if args.cfgen is not None:
        import _cfgen

        why_not = _cfgen.available(args.cfgen)
        if why_not:
            print(f"cfgen skipped: {why_not}", flush=True)
        else:
            budget = {"encoder_epochs": 2, "fm_epochs": 2} if args.quick else {}
            fit_s["cfgen"], gen = timed(lambda: _cfgen.fit_and_sample(train, key, counts, args.cfgen, seed=seed,
                                                                      **budget))
            outputs["cfgen"] = [(None, gen.obs[key], None, ref_labels, gen)]
            methods.append("cfgen")

    space = fit_expression_pca(train, n_pcs=30, layer="counts", is_counts=True, seed=seed)
    pcs_ref = space.transform(ref)
    acc_ref = label_transfer_accuracy(train, ref, key, layer="counts", is_counts=True, seed=seed)
    rows = {}
    for method in methods:
        scores = []
        for z, zl, zr, rl, gen in outputs[method]:
            auc_lat = (per_type_auc(zr, rl, np.asarray(z), zl, types, seed) if z is not None
                       else pd.Series(np.nan, index=types))
            auc_pca = per_type_auc(pcs_ref, ref_labels, space.transform(gen), gen.obs[key], types, seed)
            acc = label_transfer_accuracy(train, gen, key, layer="counts", is_counts=True, seed=seed)
            lat, pca = group_mean(auc_lat, groups), group_mean(auc_pca, groups)
            num, den = group_mean(acc, groups), group_mean(acc_ref, groups)
            scores.append({
                "auc_latent": lat["common"], "auc_latent_rare": lat["rare"],
                "auc_pca": pca["common"], "auc_pca_rare": pca["rare"],
                "label_ratio": num["common"] / den["common"] if den["common"] else np.nan,
                "label_ratio_rare": num["rare"] / den["rare"] if den["rare"] else np.nan,
                **peer_scores(ref, gen, key, seed),
            })
        rows[method] = {**pd.DataFrame(scores).mean().to_dict(), "fit_s": fit_s.get(method, np.nan)}
    table = pd.DataFrame.from_dict(rows, orient="index")[list(COLUMNS)]
    table.index.name = "method"
    info = {
        "n_cells": adata.n_obs, "n_genes": adata.n_vars, "n_types": len(types), "n_rare": len(groups["rare"]),
        "n_rare_scored": sum(1 for t in groups["rare"] if counts.get(t, 0) >= 5),
        "n_train": train.n_obs, "n_ref": ref.n_obs, "n_floor": floor.n_obs, "epochs": epochs,
        "steps": epochs * int(np.ceil(train.n_obs / BATCH_SIZE)), "scvi_s": scvi_s, "total_s": time.perf_counter() - t0,
        "cfgen_s": fit_s.get("cfgen", np.nan),
    }
    return table, info


def caption(name: str, info: dict, seeds) -> str:
    """What a table is about: the data, the split, the budget, the seeds."""
    seeds = sorted({int(s) for s in seeds})
    return (
        f"**{name}**: {info['n_cells']} cells x {info['n_genes']} genes, {info['n_types']} types "
        f"({info['n_rare']} rare, {info['n_rare_scored']} of them with >= 5 reference cells); "
        f"{info['n_train']} training / {info['n_ref']} reference / {info['n_floor']} floor cells; "
        + (f"{info['epochs']} epochs = {info['steps']} steps per diffusion model; "
           f"shared scVI {info['scvi_s']:.0f} s (not in fit_s); " if np.isfinite(info["epochs"]) else "")
        + f"{info['total_s']:.0f} s in all"
        + (f" (mean over seeds {', '.join(map(str, seeds))})." if len(seeds) > 1 else f"; seed {seeds[0]}.")
    )


def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    """Mean +- SEM over seeds of every method's scores (one dataset); `fit_s` as a mean."""
    out = {}
    for method, part in raw.groupby("method", sort=False):
        out[method] = {c: mean_sem(part[c], digits=1 if c == "fit_s" else 3) for c in COLUMNS}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "method"
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="one split and one training per seed; tables give mean +- SEM over seeds")
    parser.add_argument("--draws", type=int, default=1,
                        help="generation draws per trained method (scores are their mean; CFGen: one draw)")
    parser.add_argument("--quick", action="store_true", help="tiny data and budgets (smoke test)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps of both diffusion models (default: the package's)")
    parser.add_argument("--width", type=int, default=None, help="n_hidden of both networks (default: the package's)")
    parser.add_argument("--latent-epochs", type=int, default=None, help="epochs of the shared scVI (default 50)")
    parser.add_argument("--scanvi-epochs", type=int, default=None, help="epochs of scANVI (default 10)")
    parser.add_argument("--sampler", default=None, help="sampler of both diffusion models (default: the package's)")
    parser.add_argument("--n-steps", type=int, default=None, help="sampler steps (default: the sampler's)")
    parser.add_argument("--cfgen", default=None, metavar="PATH",
                        help="a checkout of theislab/CFGen: also train and score CFGen (skipped when absent)")
    parser.add_argument("--peers-only", action="store_true",
                        help="only the peers (--cfgen), on the same splits; merge with the others' --raw files")
    parser.add_argument("--raw", default=None, help="write every (dataset, seed, method) row to this CSV file")
    parser.add_argument("--from-csv", nargs="+", default=None,
                        help="make the tables from the --raw files of earlier runs instead of running")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--section", default="quality", help="the docs section to write (default: quality)")
    args = parser.parse_args(argv)
    if args.peers_only:
        import _cfgen

        why_not = _cfgen.available(args.cfgen)
        if why_not:
            parser.error(f"--peers-only needs a peer to run: {why_not}")
    quick = {"steps": 30, "width": 32, "latent_epochs": 2, "scanvi_epochs": 1, "n_steps": 10}
    for name, full in (("latent_epochs", 50), ("scanvi_epochs", 10)):
        if getattr(args, name) is None:
            setattr(args, name, quick[name] if args.quick else full)
    if args.quick:
        for name in ("steps", "width", "n_steps"):
            if getattr(args, name) is None:
                setattr(args, name, quick[name])
    pd.set_option("display.width", 250)
    if args.from_csv:
        raw = pd.concat([pd.read_csv(path) for path in args.from_csv], ignore_index=True)
    else:
        single_thread()
        rows = []
        for name in args.datasets:
            for seed in args.seeds:
                table, info = run_dataset(name, args, seed)
                print(f"\n## {name}, seed {seed}\n{caption(name, info, [seed])}\n")
                print(table.round(3).to_string(), flush=True)
                rows += [{"dataset": name, "seed": seed, "method": method, **info, **row}
                         for method, row in table.to_dict("index").items()]
                if args.raw:  # as they come: a long run stopped early keeps what it measured
                    pd.DataFrame(rows).to_csv(args.raw, index=False)
        raw = pd.DataFrame(rows)
    tables = {}
    for name, part in raw.groupby("dataset", sort=False):
        table = summarise(part)
        info = part.drop(columns=["dataset", "seed", "method"]).mean(numeric_only=True).to_dict()
        ours = part[part["method"] != "cfgen"]  # the time in all of a run without peers (when there is one)
        info["total_s"] = (ours if len(ours) else part)["total_s"].mean()
        info.update({k: int(round(info[k])) for k in info if (k.startswith("n_") or k in ("epochs", "steps"))
                     and np.isfinite(info[k])})
        table.attrs["caption"] = caption(name, info, part["seed"])
        tables[name] = table
        print(f"\n## {name}\n{table.attrs['caption']}\n\n{table.to_string()}\n", flush=True)
    if args.write_docs:
        command = "OMP_NUM_THREADS=1 python benchmarks/quality.py " + " ".join(
            a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs")
        command = command.replace(f" --section {args.section}", "")
        if args.cfgen is not None:
            command = command.replace(args.cfgen, "PATH/TO/CFGen")
        budget = ("the package's default budget" if args.steps is None
                  else f"{args.steps} optimiser steps (batch {BATCH_SIZE})")
        settings = (f"Diffusion models (branched and flat): {budget}, width "
                    f"{'the default' if args.width is None else args.width}, sampler "
                    f"{args.sampler or 'the default'}{'' if args.n_steps is None else f' with {args.n_steps} steps'}; "
                    f"shared scVI {args.latent_epochs} epochs; scANVI {args.scanvi_epochs} epochs from that scVI. "
                    "Every seed draws its own split and trains every method anew; "
                    + ("each run's generation draws are as its command says"
                       if args.from_csv else f"each trained method generates {args.draws} time(s)")
                    + " (scores: the mean over draws; CFGen and the floors: one); cells are mean +- SEM over seeds.")
        if "cfgen" in set(raw["method"]):
            import _cfgen

            settings += (f" CFGen: its published settings (autoencoder {_cfgen.ENCODER['dims']} "
                         f"{_cfgen.ENCODER_EPOCHS} epochs, flow matching `resnet_big` {_cfgen.FM_EPOCHS} epochs, "
                         f"batch {_cfgen.BATCH_SIZE}, guidance weight 1); its own autoencoder, no shared scVI.")
        body = [header(command), settings, ""]
        for table in tables.values():
            body += [table.attrs["caption"], "", markdown(table), ""]
        write_section(args.section, "\n".join(body))


if __name__ == "__main__":
    main()
