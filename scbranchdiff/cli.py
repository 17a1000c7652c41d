"""Command line: `scbranchdiff demo | train | generate`, for notebooks-free batch jobs.

Errors in files or arguments are printed as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _parse_counts(text: str) -> int | dict[str, int]:
    """'200' -> 200; 'CD19+ B=100,CD14+ Monocyte=50' -> mapping."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    counts = {}
    for part in text.split(","):
        if "=" not in part:
            raise ValueError(f"--n-cells must be an integer or 'type=n,type=n', got {text!r}.")
        name, n = part.rsplit("=", 1)
        counts[name.strip()] = int(n)
    return counts


def _read_h5ad(path: str):
    import anndata as ad

    if not Path(path).exists():
        raise FileNotFoundError(f"No such file: {path}")
    return ad.read_h5ad(path)


def _trainer_kwargs(args: argparse.Namespace) -> dict:
    return {"enable_progress_bar": not args.quiet}


def _cmd_demo(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import scbranchdiff as sbd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = sbd.data.pbmc68k()
    sbd.model.BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    model = sbd.model.BranchedDiffusion(adata)
    start = time.perf_counter()
    model.train(max_epochs=args.max_epochs, latent_max_epochs=args.latent_max_epochs, **_trainer_kwargs(args))
    train_s = time.perf_counter() - start
    print(model)
    start = time.perf_counter()
    generated = model.generate(args.n_cells, seed=args.seed)
    gen_s = time.perf_counter() - start
    generated.write_h5ad(out / "generated.h5ad")
    model.save(str(out / "model"), overwrite=True)
    sbd.pl.hierarchy(model, show=False, save=str(out / "hierarchy.png"))
    sbd.pl.generated_vs_real(adata, generated, "bulk_labels", show=False, save=str(out / "generated_vs_real.png"))
    print(
        f"Trained in {train_s:.0f} s; generated {generated.n_obs} cells in {gen_s:.1f} s "
        f"({generated.n_obs / gen_s:.0f} cells/s).\nWrote {out / 'generated.h5ad'}, "
        f"{out / 'model'}, {out / 'hierarchy.png'} and {out / 'generated_vs_real.png'}."
    )


def _cmd_train(args: argparse.Namespace) -> None:
    import scbranchdiff as sbd

    adata = _read_h5ad(args.adata)
    sbd.model.BranchedDiffusion.setup_anndata(
        adata, labels_key=args.labels_key, layer=args.layer, batch_key=args.batch_key
    )
    hierarchy = args.hierarchy
    if hierarchy not in ("auto", "flat"):
        hierarchy = [c.strip() for c in hierarchy.split(",")] if "(" not in hierarchy else hierarchy
    model = sbd.model.BranchedDiffusion(
        adata, latent=args.latent, n_latent=args.n_latent, hierarchy=hierarchy
    )
    model.train(
        max_epochs=args.max_epochs,
        latent_max_epochs=args.latent_max_epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        seed=args.seed,
        **_trainer_kwargs(args),
    )
    model.save(args.model, overwrite=args.overwrite)
    print(model)
    print(f"Saved the model to {args.model}")


def _cmd_generate(args: argparse.Namespace) -> None:
    import scbranchdiff as sbd

    adata = _read_h5ad(args.adata)
    model = sbd.model.BranchedDiffusion.load(args.model, adata=adata)
    generated = model.generate(
        _parse_counts(args.n_cells), sampler=args.sampler, n_steps=args.n_steps, seed=args.seed
    )
    generated.write_h5ad(args.out)
    print(f"Wrote {generated.n_obs} generated cells to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `scbranchdiff` command."""
    parser = argparse.ArgumentParser(
        prog="scbranchdiff",
        description="Hierarchically branched diffusion models for single cells.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train on the bundled pbmc68k data, generate cells, plot")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--n-cells", type=int, default=200, help="cells per type (default: 200)")
    demo.add_argument("--max-epochs", type=int, default=None, help="diffusion epochs (default: model default)")
    demo.add_argument("--latent-max-epochs", type=int, default=None, help="scVI epochs (default: scvi-tools heuristic)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train", help="train a model on an .h5ad file and save it")
    train.add_argument("adata", help="input .h5ad with cell-type labels")
    train.add_argument("model", help="output model directory")
    train.add_argument("--labels-key", required=True, help="obs column with cell types")
    train.add_argument("--layer", default=None, help="layer with counts (default: X)")
    train.add_argument("--batch-key", default=None, help="obs column with batches")
    train.add_argument("--latent", default="scvi", help="'scvi', 'pca' or an obsm key (default: scvi)")
    train.add_argument("--n-latent", type=int, default=10, help="latent dimension (default: 10)")
    train.add_argument(
        "--hierarchy", default="auto",
        help="'auto', 'flat', comma-separated obs columns coarse to fine, or a Newick string",
    )
    train.add_argument("--max-epochs", type=int, default=None, help="diffusion epochs")
    train.add_argument("--latent-max-epochs", type=int, default=None, help="scVI epochs")
    train.add_argument("--accelerator", default="auto", help="'auto', 'cpu', 'gpu' (default: auto)")
    train.add_argument("--devices", default="auto", help="devices, e.g. 'auto', 1, 4 (default: auto)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    train.set_defaults(func=_cmd_train)

    gen = sub.add_parser("generate", help="generate cells with a saved model")
    gen.add_argument("model", help="model directory")
    gen.add_argument("adata", help=".h5ad the model was trained on (or with the same genes)")
    gen.add_argument("out", help="output .h5ad")
    gen.add_argument("--n-cells", default="200", help="cells per type, or 'type=n,type=n'")
    gen.add_argument("--sampler", default="sde", choices=["sde", "ode"], help="sampler (default: sde)")
    gen.add_argument("--n-steps", type=int, default=None, help="integration steps")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gen.set_defaults(func=_cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if args.traceback:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"scbranchdiff {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
