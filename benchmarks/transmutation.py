"""Transmutation: how often transmuted cells are recognised as their target type.

For each dataset: hold out 30% of every type, train the package defaults on the rest, then turn
every held-out cell of every other type into each target type with ``model.transmute`` ("ode",
the default, and "sde", the paper's version), with the split-time moment matching (``match=True``,
the default) and without it (the paper's version). A classifier trained on the real training cells
(logistic regression on 30 PCs of log-normalised counts, as in ``metrics.label_transfer_accuracy``)
assigns every cell; each rate is divided by the rate of held-out real cells of the target type.

Columns per target type:

- ``real``: fraction of held-out real cells of the type assigned to it (the denominator);
- ``decoded``: held-out real cells encoded and decoded by the latent model, as a ratio: what the
  decoder allows (a transmuted cell is decoded from a latent too);
- ``gen_ode`` / ``gen_sde``: ``model.generate`` with the sampler that transmutation uses, as a
  ratio: what the model makes of the type from noise;
- ``ode`` / ``sde``: transmuted cells of all other types (pooled), with moment matching;
  ``*_nomatch``: without it;
- ``sibling_*``: from the type that splits from the target last (closest in the tree), the hard
  case; ``sibling``: that type.
- ``kept``: what the ODE keeps of each cell: correlation of within-type latent deviations of the
  source and transmuted cells, averaged over latent dimensions (sibling source, matched).

Run from the repository root (one training of the package defaults per dataset and seed)::

    OMP_NUM_THREADS=1 python benchmarks/transmutation.py --datasets pbmc_facs   # ~20 min
    OMP_NUM_THREADS=1 python benchmarks/transmutation.py --quick                # simulated, ~1 min
    OMP_NUM_THREADS=1 python benchmarks/transmutation.py --write-docs           # into the docs
"""

from __future__ import annotations

import argparse
import time

from _common import header, load_dataset, markdown, single_thread, stratified_split, write_section

COMMAND = "OMP_NUM_THREADS=1 python benchmarks/transmutation.py"
SECTION = "transmutation"  # one section per dataset: transmutation-<dataset>
HELD_OUT = 0.3
MIN_HELD_OUT = 10  # held-out real cells a target type needs (fewer: its real rate is noise)


def classifier(train, key: str):
    """(predict(adata) -> labels) trained on the real training cells, as label_transfer_accuracy's."""
    from scbranchdiff.metrics._classifiers import fit_label_classifier
    from scbranchdiff.metrics._representation import fit_expression_pca

    space = fit_expression_pca(train, n_pcs=30, layer="counts", seed=0)
    clf = fit_label_classifier(space.transform(train), train.obs[key].astype(str).to_numpy(), seed=0)
    return lambda adata: clf.predict(space.transform(adata))


def rates(predicted, labels):
    """Fraction of cells of each label predicted as that label (metrics' per_type_accuracy)."""
    import numpy as np

    from scbranchdiff.metrics._classifiers import per_type_accuracy

    labels = np.asarray(labels).astype(str)
    return per_type_accuracy(predicted, labels, np.unique(labels))


def within_type_correlation(source, out) -> float:
    """Mean over dimensions of the correlation of within-type deviations (one source type)."""
    import numpy as np

    a, b = source - source.mean(0), out - out.mean(0)
    return float(np.mean([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])]))


def run_dataset(name: str, seed: int, quick: bool, n_latent: int | None = None):
    import numpy as np
    import pandas as pd

    import scbranchdiff as sbd

    adata, key = load_dataset(name, quick=quick)
    held = stratified_split(adata.obs[key], HELD_OUT, seed)
    train, test = adata[~held].copy(), adata[held].copy()
    sbd.model.BranchedDiffusion.setup_anndata(train, labels_key=key, layer="counts")
    options = ({"n_hidden": 64} if quick else {}) | ({} if n_latent is None else {"n_latent": n_latent})
    model = sbd.model.BranchedDiffusion(train, **options)
    quiet = {"enable_progress_bar": False}
    start = time.perf_counter()
    model.train(seed=seed, **({"max_epochs": 30, "latent_max_epochs": 30} if quick else {}), **quiet)
    train_s = time.perf_counter() - start
    predict = classifier(train, key)
    labels = test.obs[key].astype(str).to_numpy()
    real = rates(predict(test), labels)
    z_test = model.latent_backend.encode(test)
    decoded = model._to_anndata(z_test.astype(np.float32), labels.astype(object), seed)
    decoded_rate = rates(predict(decoded), labels)
    generated_rate = {}
    for sampler in ("ode", "sde"):
        generated = model.generate(300 if not quick else 100, sampler=sampler, seed=seed, progress_bar=False)
        generated_rate[sampler] = rates(predict(generated), generated.obs[key].astype(str).to_numpy())
    hierarchy = model.hierarchy
    scaled = model._scale(z_test)
    rows, seconds = [], 0.0
    counts = pd.Series(labels).value_counts()
    # a ratio needs real cells that are recognised: types with few held-out cells are left out
    skipped = [c for c in hierarchy.classes if counts.get(c, 0) < MIN_HELD_OUT or real.get(c, 0.0) == 0.0]
    for target in hierarchy.classes:
        if target in skipped:
            continue
        others = [c for c in hierarchy.classes if c != target and c not in skipped]
        sibling = min(others, key=lambda c: hierarchy.split_time(c, target))
        sources = np.flatnonzero(np.isin(labels, others))
        row = {"type": target, "real": real[target], "decoded": decoded_rate[target] / real[target],
               "gen_ode": generated_rate["ode"][target] / real[target],
               "gen_sde": generated_rate["sde"][target] / real[target], "sibling": sibling,
               "t_split": hierarchy.split_time(sibling, target)}
        for sampler in ("ode", "sde"):
            for match in (True, False):
                t0 = time.perf_counter()
                out = model.transmute(test, target, indices=sources, sampler=sampler, seed=seed,
                                      match=match, progress_bar=False)
                seconds += time.perf_counter() - t0
                predicted = predict(out)
                from_type = out.obs["source_type"].astype(str).to_numpy()
                suffix = "" if match else "_nomatch"
                row[f"{sampler}{suffix}"] = float(np.mean(predicted == target)) / real[target]
                near = from_type == sibling
                row[f"sibling_{sampler}{suffix}"] = float(np.mean(predicted[near] == target)) / real[target]
                if sampler == "ode" and match:
                    row["kept"] = within_type_correlation(
                        scaled[sources][near], model._scale(out.obsm["X_latent"][near])
                    )
        rows.append(row)
    table = pd.DataFrame(rows).set_index("type")
    order = ["real", "decoded", "gen_ode", "gen_sde", "ode", "sde", "ode_nomatch", "sde_nomatch", "sibling", "t_split",
             "sibling_ode", "sibling_sde", "sibling_ode_nomatch", "sibling_sde_nomatch", "kept"]
    info = {"cells": adata.n_obs, "types": len(table), "train_s": train_s, "transmute_s": seconds,
            "held_out": int(held.sum()), "skipped": skipped}
    return table[order], info


def summary(table) -> str:
    """How many target types reach 0.9x real, and the lowest ratios."""
    lines = []
    for col in ("ode", "sde", "ode_nomatch", "sde_nomatch", "sibling_ode", "sibling_sde", "sibling_ode_nomatch",
                "sibling_sde_nomatch"):
        v = table[col]
        lines.append(f"`{col}`: {int((v >= 0.9).sum())} of {len(v)} types >= 0.9x real (lowest {v.min():.2f}, "
                     f"mean {v.mean():.2f})")
    for sampler in ("ode", "sde"):
        reached = table[sampler] >= 0.9 * table[[f"gen_{sampler}", "decoded"]].max(axis=1)
        lines.append(f"`{sampler}`: {int(reached.sum())} of {len(table)} types >= 0.9x the better of the model's own "
                     f"{sampler.upper()} cells of the type and decoded real cells")
    return "\n".join(f"- {line}" for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc_facs", "pbmc68k", "paul15", "simulated"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="simulated data, tiny model")
    parser.add_argument("--n-latent", type=int, default=None,
                        help="latent dimensions (default: the package's); the docs section gets its own name")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    single_thread()
    import pandas as pd

    pd.set_option("display.width", 250)
    datasets = ["simulated"] if args.quick else args.datasets
    for name in datasets:
        table, info = run_dataset(name, args.seed, args.quick, args.n_latent)
        caption = (f"**{name}**: {info['cells']} cells, {info['types']} types, {info['held_out']} held out "
                   f"(seed {args.seed}); training {info['train_s']:.0f} s, all transmutations "
                   f"{info['transmute_s']:.0f} s.")
        if info["skipped"]:
            caption += (f" Left out as targets and sources (under {MIN_HELD_OUT} held-out cells, or none "
                        f"recognised): {', '.join(info['skipped'])}.")
        print(f"## {name}\n{caption}\n")
        print(table.round(3).to_string())
        print()
        print(summary(table), flush=True)
        if args.write_docs and not args.quick:  # written as each dataset finishes
            command = f"{COMMAND} --datasets {name} --seed {args.seed}"
            section = f"{SECTION}-{name}"
            if args.n_latent is not None:
                command += f" --n-latent {args.n_latent}"
                section += f"-latent{args.n_latent}"
            write_section(section, f"{header(command)}\n{caption}\n\n{markdown(table)}\n\n{summary(table)}\n")


if __name__ == "__main__":
    main()
