"""Command line: ``scbranchdiff demo | train | generate | transmute``, for batch jobs.

Every subcommand reads and writes plain files (.h5ad, saved model directories), shows progress
bars on long work (``--quiet`` hides them) and reports any error as one line on stderr with exit
code 2 (``--traceback`` shows the full traceback instead). Outputs are checked (writable, not
replacing anything without ``--overwrite``) before any long work starts, and written
atomically: on any failure a previous file is left as it was.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

# Errors a user causes with a file or an argument: reported as their message. Any other error
# is reported as one line too, with its type, since it needs --traceback to be understood.
USER_ERRORS = (
    ValueError, KeyError, TypeError, IndexError, OSError, RuntimeError, FloatingPointError,
)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# below this much free space an output location is refused before training
_MIN_FREE_BYTES = 16 << 20


class _ArgumentParser(argparse.ArgumentParser):
    """Reports a bad argument as one line (``prog: error: message``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())}\n")


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\s*\+?[0-9]+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not re.fullmatch(r"\s*\+?[0-9]+\s*", text):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _noise_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a time in (0, 1], got {text!r}")
    return value


def _devices(text: str) -> int | str | list[int]:
    """'auto', a number of devices (or -1: all), or device ids such as '0,1'."""
    text = text.strip()
    if text == "auto":
        return text
    if re.fullmatch(r"-1|[0-9]+", text) and int(text) != 0:
        return int(text)
    if "," in text and re.fullmatch(r"[0-9]+(,[0-9]+)*,?", text):  # ids ('1,' is the one device 1)
        ids = [int(part) for part in text.split(",") if part]
        if len(set(ids)) == len(ids):
            return ids
    raise argparse.ArgumentTypeError(f"expected 'auto', a number of devices or ids like '0,1', got {text!r}")


def _parse_counts(text: str) -> int | dict[str, int]:
    """'200' -> 200; 'CD19+ B=100,CD14+ Monocyte=50' -> mapping (each type once, n > 0)."""
    usage = f"--n-cells must be a positive integer or 'type=n,type=n', got {text!r}."
    text = text.strip()
    if re.fullmatch(r"[0-9]+", text):
        if int(text) < 1:
            raise ValueError(usage)
        return int(text)
    counts: dict[str, int] = {}
    for part in text.split(","):
        name, _, n = part.rpartition("=")
        name, n = name.strip(), n.strip()
        if not name or not re.fullmatch(r"[0-9]+", n) or int(n) < 1:
            raise ValueError(usage)
        if name in counts:
            raise ValueError(f"--n-cells names {name!r} twice ({text!r}); give each type once.")
        counts[name] = int(n)
    return counts


def _split_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _read_h5ad(path: str, argument: str = "adata"):
    import anndata as ad

    if not Path(path).is_file():
        raise FileNotFoundError(f"{argument}: no such file: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as e:  # h5py/anndata raise many kinds for a file that is not .h5ad
        raise OSError(f"{argument}: cannot read {path} as .h5ad ({type(e).__name__}: {e})") from e


def _check_writable(path: Path, argument: str) -> None:
    """Refuse an output whose folder cannot be written (or is full), before any long work."""
    folder = path.absolute().parent
    existing = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), None)
    if existing is None or not existing.is_dir():
        raise NotADirectoryError(f"{argument}: {existing or folder} is not a directory; cannot write {path}.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".scbranchdiff-write-test-", dir=existing))
        free = shutil.disk_usage(existing).free
    except OSError as e:
        raise OSError(f"{argument}: cannot write into {existing} ({e.strerror or e}).") from None
    if free < _MIN_FREE_BYTES:
        raise OSError(f"{argument}: no space left in {existing} ({free} bytes free).")


def _check_out(path: str, overwrite: bool) -> None:
    """Refuse to replace a file (or write where it cannot be written) before any long work starts."""
    from . import _io

    if not path.endswith(".h5ad"):
        raise ValueError(f"out: the output file must end in '.h5ad', got {path!r}.")
    try:
        _io.check_file_target(path, overwrite=overwrite)
    except FileExistsError as e:
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f"out: {path} already exists; pass --overwrite to replace it.") from None
        raise FileExistsError(f"out: {e}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"out: {path} is a directory; give the path of an .h5ad file.") from None
    _check_writable(Path(path), "out")
    # temporaries of an earlier, killed run writing this file
    _io.remove_stale_temporaries(path)


def _check_model_out(path: str, overwrite: bool, argument: str = "model") -> None:
    """Refuse a model directory that cannot be written, or replaced, before training starts."""
    from . import _io

    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{argument}: {path} already exists; pass --overwrite to replace it.")
    state = _io.inspect_model_target(path)
    if state.exists and not state.is_dir:
        raise FileExistsError(f"{argument}: {path} exists and is not a directory; it is not replaced.")
    if state.foreign_model_files or state.other_entries:
        raise FileExistsError(
            f"{argument}: {path} holds files that are not part of a scbranchdiff model "
            f"({', '.join((state.foreign_model_files + state.other_entries)[:5])}); only a saved model is "
            "ever replaced: choose a new output directory."
        )
    _check_writable(Path(path), argument)


def _write_h5ad(adata: Any, path: str | Path, overwrite: bool, argument: str = "out") -> None:
    """Write `adata` atomically: on any failure a file already at `path` is left as it was."""
    from . import _io

    existed = os.path.lexists(path)
    try:
        with _io.atomic_file(path, overwrite=overwrite) as tmp:
            adata.write_h5ad(tmp)
    except Exception as e:
        kept = "the previous file is unchanged" if existed else "nothing was written"
        raise OSError(f"{argument}: could not write {path} ({_one_line(e)}); {kept}.") from e


def _load_model(model_dir: str, adata):
    import scbranchdiff as sbd

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model: no such model directory: {model_dir}")
    return sbd.model.BranchedDiffusion.load(model_dir, adata=adata)


def _trainer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"enable_progress_bar": not args.quiet}


def _total_cells(model: Any, n_cells: int | dict[str, int]) -> int:
    return n_cells * len(model.classes) if isinstance(n_cells, int) else sum(n_cells.values())


# ---------------------------------------------------------------------------- subcommands
def _cmd_demo(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import scbranchdiff as sbd
    from scbranchdiff import _io

    out = Path(args.out)
    # a demo replaces its own outputs, never anything else, and says so before training
    if os.path.lexists(out) and not out.is_dir():
        raise FileExistsError(f"--out: {out} exists and is not a directory.")
    _check_model_out(str(out / "model"), overwrite=True, argument="--out")
    try:
        _io.check_file_target(out / "generated.h5ad", overwrite=True)
    except (FileExistsError, IsADirectoryError) as e:
        raise FileExistsError(f"--out: {e}") from None
    _check_writable(out / "generated.h5ad", "--out")
    out.mkdir(parents=True, exist_ok=True)
    adata = sbd.data.pbmc68k()
    # a fifth of every type is held out, never trained on: the printed summary compares with it
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    train_rows, held_rows = sbd.train.stratified_split(labels, 1 - DEMO_HELD_OUT, None, args.seed)
    train, held_out = adata[train_rows].copy(), adata[held_rows].copy()
    sbd.model.BranchedDiffusion.setup_anndata(train, labels_key="bulk_labels", layer="counts")
    model = sbd.model.BranchedDiffusion(train)
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs, latent_max_epochs=args.latent_max_epochs, seed=args.seed,
        **_trainer_kwargs(args),
    )
    train_s = time.perf_counter() - start
    print(model)
    start = time.perf_counter()
    generated = model.generate(
        args.n_cells, n_steps=args.n_steps, seed=args.seed, progress_bar=not args.quiet
    )
    gen_s = time.perf_counter() - start
    _write_h5ad(generated, out / "generated.h5ad", overwrite=True, argument="--out")
    model.save(str(out / "model"), overwrite=True)
    # Path objects: a bare file name given as str is a scanpy suffix (saved into figdir)
    sbd.pl.hierarchy(model, show=False, save=out / "hierarchy.png")
    sbd.pl.generated_vs_real(  # panels and legend in the order of the tree's leaves
        sbd.pl.in_tree_order(adata, "bulk_labels", model), generated, "bulk_labels", layer="counts",
        basis=args.basis, per_type=True,
        show=False, save=out / "generated_vs_real.png",
    )
    print(
        f"Trained on {train.n_obs} cells in {train_s:.0f} s; generated {generated.n_obs} cells in "
        f"{gen_s:.1f} s ({generated.n_obs / gen_s:.0f} cells/s).\nWrote {out / 'generated.h5ad'}, "
        f"{out / 'model'}, {out / 'hierarchy.png'} and {out / 'generated_vs_real.png'}."
    )
    print(_held_out_summary(model, train, held_out, generated, "bulk_labels", args.seed))


DEMO_HELD_OUT = 0.2  # share of every cell type the demo keeps out of training
_MIN_AUC_CELLS = 10  # held-out cells a type needs for its two-sample AUC in the summary


def _held_out_summary(model: Any, train: Any, held_out: Any, generated: Any, labels_key: str, seed: int) -> str:
    """Generated cells scored against real cells the model never saw, as a few printed lines.

    Two scores, averaged over types: how often a classifier trained on the real training cells
    assigns generated cells their type, relative to held-out real cells (1 = as often), and the
    kNN two-sample AUC between generated and held-out cells in the model's latent (0.5 = they
    cannot be told apart), on types with enough held-out cells.
    """
    import warnings

    import numpy as np

    from scbranchdiff.metrics import c2st_auc, label_transfer_accuracy

    with warnings.catch_warnings():  # types too small to score are skipped on purpose
        warnings.simplefilter("ignore")
        real = label_transfer_accuracy(train, held_out, labels_key, layer="counts", seed=seed)
        fake = label_transfer_accuracy(train, generated, labels_key, layer="counts", seed=seed)
    shared = real.index.intersection(fake.index)
    z_real = model.get_latent_representation(held_out)
    z_fake = generated.obsm["X_latent"]
    real_labels = held_out.obs[labels_key].astype(str).to_numpy()
    fake_labels = generated.obs[labels_key].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    aucs = {}
    for label in shared:
        x, y = z_real[real_labels == label], z_fake[fake_labels == label]
        if len(x) >= _MIN_AUC_CELLS:  # as many generated cells as held-out ones
            y = y[rng.choice(len(y), size=min(len(x), len(y)), replace=False)]
            aucs[label] = c2st_auc(x, y, seed=seed)
    ratio = float(fake[shared].mean() / real[shared].mean())
    lines = [
        f"Held-out check ({held_out.n_obs} real cells never trained on, {len(shared)} types):",
        f"  recognised as their type by a classifier trained on real cells: generated "
        f"{fake[shared].mean():.0%}, held-out real {real[shared].mean():.0%} (ratio {ratio:.2f}; 1 = as real)",
    ]
    if aucs:
        lines.append(
            f"  two-sample AUC in the latent, generated vs held-out real, mean over the "
            f"{len(aucs)} types with >= {_MIN_AUC_CELLS} held-out cells: "
            f"{np.mean(list(aucs.values())):.2f} (0.5 = indistinguishable, 1 = fully separable)"
        )
    return "\n".join(lines)


def _cmd_train(args: argparse.Namespace) -> None:
    import scbranchdiff as sbd

    _check_model_out(args.model, args.overwrite)
    if args.resume and args.checkpoint_dir is None:
        raise ValueError("--resume needs --checkpoint-dir (where the interrupted run wrote last.ckpt).")
    _check_accelerator(args.accelerator)
    adata = _read_h5ad(args.adata)
    sbd.model.BranchedDiffusion.setup_anndata(
        adata, labels_key=args.labels_key, layer=args.layer, batch_key=args.batch_key
    )
    hierarchy = args.hierarchy
    if hierarchy not in ("auto", "flat") and "(" not in hierarchy:
        hierarchy = _split_list(hierarchy)
    model = sbd.model.BranchedDiffusion(
        adata, latent=args.latent, n_latent=args.n_latent, hierarchy=hierarchy,
        n_hidden=args.n_hidden,
    )
    trainer_kwargs = _trainer_kwargs(args)
    if args.resume:
        trainer_kwargs["ckpt_path"] = "last"
    model.train(
        max_epochs=args.max_epochs,
        latent_max_epochs=args.latent_max_epochs,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        devices=args.devices,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        **trainer_kwargs,
    )
    _save_or_rescue(model, args)
    print(model)
    print(f"Saved the model to {args.model}")


def _check_accelerator(accelerator: str) -> None:
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--accelerator {accelerator}: no CUDA GPU is available here (use 'auto' or 'cpu').")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("--accelerator mps: Apple's MPS is not available here (use 'auto' or 'cpu').")


def _save_or_rescue(model: Any, args: argparse.Namespace) -> None:
    """Save the trained model; when that fails (full disk, ...) save it elsewhere, never lose it."""
    try:
        model.save(args.model, overwrite=args.overwrite)
        return
    except OSError as e:
        failure = e
    folders = [args.checkpoint_dir] if args.checkpoint_dir else []
    for folder in [*folders, tempfile.gettempdir()]:
        try:
            rescue = Path(tempfile.mkdtemp(prefix=f"scbranchdiff-rescued-{Path(args.model).name}-", dir=folder))
            model.save(str(rescue / "model"))
        except Exception as e:  # noqa: BLE001 - any failure here: try the next folder
            failure.add_note(f"Saving to {folder} failed too: {e}")
            continue
        raise OSError(
            f"model: could not save the model to {args.model} ({_one_line(failure)}); the trained "
            f"model was saved to {rescue / 'model'} instead."
        ) from failure
    raise OSError(f"model: could not save the model to {args.model} ({_one_line(failure)}).") from failure


def _cmd_generate(args: argparse.Namespace) -> None:
    n_cells = _parse_counts(args.n_cells)
    _check_out(args.out, args.overwrite)
    adata = _read_h5ad(args.adata)
    model = _load_model(args.model, adata)
    start = time.perf_counter()
    path = model.generate_to_file(
        args.out, n_cells, sampler=args.sampler, n_steps=args.n_steps, seed=args.seed,
        batch_size=args.batch_size, expected=args.expected, overwrite=args.overwrite,
        progress_bar=not args.quiet,
    )
    total = _total_cells(model, n_cells)
    print(f"Wrote {total} generated cells to {path} in {time.perf_counter() - start:.1f} s")


def _cmd_transmute(args: argparse.Namespace) -> None:
    import numpy as np

    _check_out(args.out, args.overwrite)
    adata = _read_h5ad(args.adata)
    model = _load_model(args.model, adata)
    indices = None
    if args.source_types is not None:
        wanted = _split_list(args.source_types)
        labels = adata.obs[model.labels_key].astype(str)
        unknown = sorted(set(wanted) - set(model.classes))
        if unknown:
            raise ValueError(
                f"--source-types: the model does not know {unknown} (known: {list(model.classes)})."
            )
        indices = np.flatnonzero(labels.isin(wanted).to_numpy())
        if len(indices) == 0:
            raise ValueError(f"--source-types: {args.adata} has no cells of {wanted}.")
    start = time.perf_counter()
    out = model.transmute(
        target=args.target, indices=indices, t=args.t, sampler=args.sampler,
        n_steps=args.n_steps, seed=args.seed, batch_size=args.batch_size,
        progress_bar=not args.quiet, match=not args.no_match,
    )
    _write_h5ad(out, args.out, overwrite=args.overwrite)
    print(f"Wrote {out.n_obs} cells transmuted into {args.target!r} to {args.out} in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------------------- parser
_EPILOG_ERRORS = (
    "A bad file or argument ends the command with one line on stderr and exit code 2; "
    "--traceback shows the full traceback."
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it has one worth reading (not None, not a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.required:
            return action.help or ""
        return super()._get_help_string(action)


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # On subcommands the defaults are SUPPRESS so `scbranchdiff --quiet train ...` still works.
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument(
        "--traceback", action="store_true", default=default,
        help="show the full Python traceback on errors instead of one line",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scbranchdiff`` command.

    Returns
    -------
    An :class:`argparse.ArgumentParser` with the subcommands ``demo``, ``train``,
    ``generate`` and ``transmute``.

    Examples
    --------
    >>> from scbranchdiff.cli import build_parser
    >>> args = build_parser().parse_args(["generate", "model_dir", "data.h5ad", "out.h5ad"])
    >>> args.command, args.n_cells, args.sampler
    ('generate', '200', 'ancestral')
    """
    fmt = _HelpFormatter
    parser = _ArgumentParser(
        prog="scbranchdiff",
        description="Hierarchically branched diffusion models for single cells: train on an "
        ".h5ad with cell types, then generate or transmute cells into new .h5ad files.",
        epilog=_EPILOG_ERRORS,
        formatter_class=fmt,
    )
    _common_options(parser, top=True)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", formatter_class=fmt, epilog=_EPILOG_ERRORS,
        help="train on the bundled pbmc68k data, generate cells and plot them",
        description="Train a model on the bundled pbmc68k PBMCs (scVI latent, discovered "
        "hierarchy), generate cells of every type and write OUT/generated.h5ad, OUT/model/, "
        "OUT/hierarchy.png and OUT/generated_vs_real.png.",
    )
    demo.add_argument("--out", default="demo_output", help="output folder")
    demo.add_argument("--n-cells", type=_positive_int, default=200, help="generated cells per type")
    demo.add_argument("--max-epochs", type=_positive_int, default=None, help="diffusion epochs (None: the model's default, about 800 steps)")
    demo.add_argument("--latent-max-epochs", type=_positive_int, default=None, help="scVI epochs (None: scvi-tools' heuristic)")
    demo.add_argument("--n-steps", type=_positive_int, default=None, help="sampler steps from t = 1 to 0 (None: 49 for the default ancestral sampler)")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="random seed of training and generation")
    demo.add_argument(
        "--basis", default="umap", choices=["umap", "pca"],
        help="embedding of generated_vs_real.png (fitted on the real cells)",
    )
    _common_options(demo, top=False)
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser(
        "train", formatter_class=fmt, epilog=_EPILOG_ERRORS,
        help="train a model on an .h5ad file and save it",
        description="Train a BranchedDiffusion model on ADATA (cell types in obs) and save it "
        "to the directory MODEL.",
    )
    train.add_argument("adata", help="input .h5ad with raw counts and a cell-type column")
    train.add_argument("model", help="output model directory")
    train.add_argument("--labels-key", required=True, help="obs column with the cell types")
    train.add_argument("--layer", default=None, help="layer with the counts (None: X)")
    train.add_argument("--batch-key", default=None, help="obs column with batches (scVI latent)")
    train.add_argument(
        "--latent", default="scvi",
        help="latent space: 'scvi' (trained here), 'pca' (of log-normalised data) or an obsm key",
    )
    train.add_argument("--n-latent", type=_positive_int, default=10, help="latent dimension for 'scvi' and 'pca'")
    train.add_argument(
        "--hierarchy", default="auto",
        help="'auto' (discovered), 'flat' (label-guided baseline), comma-separated obs columns "
        "from coarse to fine, or a Newick string",
    )
    train.add_argument("--n-hidden", type=_positive_int, default=256, help="width of the score network")
    train.add_argument("--max-epochs", type=_positive_int, default=None, help="diffusion epochs (None: about 800 steps)")
    train.add_argument("--latent-max-epochs", type=_positive_int, default=None, help="scVI epochs (None: scvi-tools' heuristic)")
    train.add_argument("--batch-size", type=_positive_int, default=256, help="minibatch size of the diffusion")
    train.add_argument(
        "--accelerator", default="auto", choices=ACCELERATORS,
        help="'auto', 'cpu', 'gpu' (or 'cuda') or 'mps'; checked before the data is read",
    )
    train.add_argument("--devices", default="auto", type=_devices, help="'auto', a number of devices, or ids like '0,1'")
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    train.add_argument(
        "--checkpoint-dir", default=None,
        help="write last.ckpt there after every diffusion epoch (for preemptible jobs)",
    )
    train.add_argument("--resume", action="store_true", help="resume from CHECKPOINT_DIR/last.ckpt")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    _common_options(train, top=False)
    train.set_defaults(func=_cmd_train)

    gen = sub.add_parser(
        "generate", formatter_class=fmt, epilog=_EPILOG_ERRORS,
        help="generate cells with a saved model into an .h5ad file",
        description="Generate cells with the model in MODEL and stream them, chunk by chunk, "
        "into OUT (bounded memory, so millions of cells are fine). ADATA sets the model up: "
        "the .h5ad it was trained on, or one with the same genes and known cell types.",
    )
    gen.add_argument("model", help="saved model directory")
    gen.add_argument("adata", help=".h5ad with the model's genes (e.g. the training data)")
    gen.add_argument("out", help="output .h5ad")
    gen.add_argument("--n-cells", default="200", help="cells per type, or 'type=n,type=n'")
    gen.add_argument(
        "--sampler", default="ancestral", choices=["ancestral", "dpm++", "sde", "ode"],
        help="ancestral (few-step posterior sampling), dpm++ (ancestral with a second-order x0 estimate), reverse SDE (Euler-Maruyama) or probability-flow ODE",
    )
    gen.add_argument("--n-steps", type=_positive_int, default=None, help="steps from t = 1 to 0 (None: 49 ancestral and dpm++, 200 sde, 100 ode)")
    gen.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    gen.add_argument("--batch-size", type=_positive_int, default=10_000, help="cells per type in one chunk (peak memory)")
    gen.add_argument("--expected", action="store_true", help="also write layers['expected'] (dense decoded means)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _common_options(gen, top=False)
    gen.set_defaults(func=_cmd_generate)

    tra = sub.add_parser(
        "transmute", formatter_class=fmt, epilog=_EPILOG_ERRORS,
        help="turn cells of an .h5ad file into another cell type",
        description="Transmute the cells of ADATA (the model's genes and labels column) into "
        "cells of --target with the model in MODEL and write them to OUT (one row per source "
        "cell, with obs source_cell, source_type, target_type and t_split).",
    )
    tra.add_argument("model", help="saved model directory")
    tra.add_argument("adata", help=".h5ad with the cells to transmute")
    tra.add_argument("out", help="output .h5ad")
    tra.add_argument("--target", required=True, help="cell type to turn the cells into")
    tra.add_argument("--source-types", default=None, help="comma-separated types to transmute (None: every cell)")
    tra.add_argument(
        "--sampler", "--method", dest="sampler", default="ode", choices=["ode", "sde", "ancestral", "dpm++"],
        help="'ode' keeps each cell's shared features; 'sde' (the paper's) draws fresher cells",
    )
    tra.add_argument("--t", type=_noise_time, default=None, help="noise time in (0, 1] (None: each type's split time)")
    tra.add_argument("--n-steps", type=_positive_int, default=None, help="steps of a full path (None: 100 ode, 200 sde, 49 ancestral and dpm++)")
    tra.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (sde)")
    tra.add_argument("--no-match", action="store_true",
                     help="use the states at the split time as they are (the paper's version), without "
                     "moving them onto the target type's noised distribution")
    tra.add_argument("--batch-size", type=_positive_int, default=10_000, help="cells integrated at once")
    tra.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _common_options(tra, top=False)
    tra.set_defaults(func=_cmd_transmute)
    return parser


def _one_line(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(message).split()) or type(error).__name__


def _describe(error: Exception) -> str:
    """One line for any error: the message of a user's error, the type too for anything else."""
    if isinstance(error, USER_ERRORS):
        return _one_line(error)
    return f"{type(error).__name__}: {_one_line(error)} (--traceback shows where it happened)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``scbranchdiff`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name (None: ``sys.argv[1:]``).

    Returns
    -------
    The exit code: 0 on success, 2 for any error (one line on stderr), 130 when interrupted.
    A bad option value exits through argparse (SystemExit with code 2, one line on stderr).

    Examples
    --------
    >>> from scbranchdiff.cli import main
    >>> main(["generate", "no_model", "no_data.h5ad", "out.h5ad"])  # doctest: +SKIP
    scbranchdiff generate: error: adata: no such file: no_data.h5ad
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print(f"scbranchdiff {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # the promise: every error is one line and exit code 2
        if args.traceback:
            raise
        print(f"scbranchdiff {args.command}: error: {_describe(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
