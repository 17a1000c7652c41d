"""The command line's promise: every bad file or argument, of every subcommand, ends with one
line on stderr and exit code 2, before any long work starts."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import scbranchdiff as sbd
from scbranchdiff.cli import main
from scbranchdiff.model import BranchedDiffusion

from conftest import FAST


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path}: a small .h5ad, a trained model, an existing output, a folder with files."""
    root = tmp_path_factory.mktemp("cli_errors")
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=30, n_genes=300, seed=0)
    adata.X = np.log1p(adata.X.toarray() if sp.issparse(adata.X) else adata.X).astype(np.float32)
    adata.write_h5ad(root / "cells.h5ad")
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = BranchedDiffusion(adata, latent="pca", n_latent=5, n_hidden=16, n_trunk_blocks=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **FAST)
    model.save(root / "model")
    (root / "existing.h5ad").write_bytes(b"a previous result")
    (root / "a_file").write_text("not a folder")
    (root / "proj").mkdir()
    (root / "proj" / "notes.txt").write_text("mine")
    (root / "demo_out" / "model").mkdir(parents=True)
    (root / "demo_out" / "model" / "notes.txt").write_text("mine")
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "notes.txt").write_text("mine")
    (root / "broken_model").mkdir()
    for name in ("model.json", "model.safetensors"):
        (root / "broken_model" / name).write_bytes((root / "model" / name).read_bytes())
    (root / "broken_model" / "model.json").write_text('{"format": "scbranchdiff", "format_version": 2, ')
    (root / "garbage.h5ad").write_text("cell,gene\n1,2\n")
    paths = {p.name.removesuffix(".h5ad"): str(p) for p in root.iterdir()}
    return paths | {"new": str(root / "new"), "root": str(root)}


def _cases():
    """(argv with {placeholders}, fragment of the error line)."""
    gen = ["generate", "{model}", "{cells}", "{new}.h5ad"]
    tra = ["transmute", "{model}", "{cells}", "{new}.h5ad", "--target", "T_CD4"]
    train = ["train", "{cells}", "{new}", "--labels-key", "cell_type", "--latent", "pca"]
    return [
        # demo
        (["demo", "--n-cells", "0"], "--n-cells"),
        (["demo", "--max-epochs", "-1"], "--max-epochs"),
        (["demo", "--seed", "-3"], "--seed"),
        (["demo", "--basis", "tsne"], "--basis"),
        (["demo", "--frobnicate"], "unrecognized arguments"),
        (["demo", "--out", "{a_file}"], "not a directory"),
        (["demo", "--out", "{demo_out}"], "not part of a scbranchdiff model"),
        # train
        ([*train, "--n-latent", "0"], "--n-latent"),
        ([*train, "--n-hidden", "abc"], "--n-hidden"),
        ([*train, "--batch-size", "-1"], "--batch-size"),
        ([*train, "--max-epochs", "0"], "--max-epochs"),
        ([*train, "--accelerator", "tpu"], "--accelerator"),
        ([*train, "--devices", "x"], "--devices"),
        ([*train, "--devices", "0"], "--devices"),
        ([*train, "--seed", "-1"], "--seed"),
        ([*train, "--resume"], "--checkpoint-dir"),
        (["train", "{cells}", "{new}"], "--labels-key"),
        (["train", "{cells}", "{a_file}", "--labels-key", "cell_type"], "already exists"),
        (["train", "{cells}", "{a_file}", "--labels-key", "cell_type", "--overwrite"], "not a directory"),
        (["train", "{cells}", "{proj}", "--labels-key", "cell_type", "--overwrite"], "notes.txt"),
        (["train", "{root}/absent.h5ad", "{new}", "--labels-key", "cell_type"], "absent.h5ad"),
        (["train", "{garbage}", "{new}", "--labels-key", "cell_type"], "cannot read"),
        (["train", "{cells}", "{new}", "--labels-key", "no_such_column"], "no_such_column"),
        # generate
        ([*gen, "--n-cells", "T_CD4=2,T_CD4=3"], "twice"),
        ([*gen, "--n-cells", "0"], "--n-cells"),
        ([*gen, "--n-cells", "T_CD4=0"], "--n-cells"),
        ([*gen, "--n-cells", "lots"], "--n-cells"),
        ([*gen, "--n-cells", "Alien=3"], "Alien"),
        ([*gen, "--batch-size", "-1"], "--batch-size"),
        ([*gen, "--n-steps", "0"], "--n-steps"),
        ([*gen, "--sampler", "euler"], "--sampler"),
        (["generate", "{model}", "{cells}", "{new}.csv"], ".h5ad"),
        (["generate", "{model}", "{cells}", "{existing}"], "already exists"),
        (["generate", "{model}", "{cells}", "{root}"], ".h5ad"),
        (["generate", "{root}/nowhere", "{cells}", "{new}.h5ad"], "nowhere"),
        (["generate", "{not_a_model}", "{cells}", "{new}.h5ad"], "not a scbranchdiff model directory"),
        (["generate", "{broken_model}", "{cells}", "{new}.h5ad"], "model.json is corrupted"),
        # transmute
        ([*tra, "--t", "0"], "--t"),
        ([*tra, "--t", "2"], "--t"),
        ([*tra, "--t", "nan"], "--t"),
        ([*tra, "--batch-size", "0"], "--batch-size"),
        ([*tra, "--seed", "-1"], "--seed"),
        ([*tra, "--method", "euler"], "--method"),
        (["transmute", "{model}", "{cells}", "{new}.h5ad"], "--target"),
        (["transmute", "{model}", "{cells}", "{existing}", "--target", "T_CD4"], "already exists"),
        ([*tra, "--source-types", "Alien"], "Alien"),
        (["transmute", "{model}", "{cells}", "{new}.h5ad", "--target", "Unicorn"], "Unicorn"),
    ]


def _fill(argv, files):
    return [part.format(**files) for part in argv]


@pytest.mark.parametrize(("argv", "fragment"), _cases(), ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_bad_argument_is_one_line_and_exit_code_2(files, argv, fragment, tmp_path, capsys):
    argv = _fill(argv, {**files, "new": str(tmp_path / "new")})
    try:
        code = main(["--quiet", *argv])
    except SystemExit as exit_info:  # argparse's own checks exit
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # argparse reports unknown options from the top-level parser
    assert lines[0].startswith((f"scbranchdiff {argv[0]}: error: ", "scbranchdiff: error: ")), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_existing_outputs_are_left_as_they_were(files, capsys):
    for argv in (
        ["generate", "{model}", "{cells}", "{existing}"],
        ["transmute", "{model}", "{cells}", "{existing}", "--target", "T_CD4"],
    ):
        assert main(_fill(argv, files)) == 2
    assert Path(files["existing"]).read_bytes() == b"a previous result"
    assert (Path(files["proj"]) / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is available here")
def test_a_missing_gpu_is_reported_before_the_data_is_read(files, capsys):
    code = main(["train", "{root}/absent.h5ad".format(**files), files["new"], "--labels-key", "x",
                 "--accelerator", "gpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err, err


def test_the_installed_command_exits_2_with_one_line(files):
    done = subprocess.run(
        [sys.executable, "-m", "scbranchdiff.cli", "train", files["cells"], files["new"],
         "--labels-key", "cell_type", "--n-latent", "0"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "scbranchdiff train: error: argument --n-latent: expected a positive integer, got '0'"
    ]


def test_an_unexpected_error_is_one_line_with_its_type(files, monkeypatch, capsys):
    from scbranchdiff import cli

    def crash(args):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(cli, "_cmd_generate", crash)
    parser_default = cli.build_parser

    def build_parser():
        parser = parser_default()
        sub = next(a for a in parser._actions if a.dest == "command").choices["generate"]
        sub.set_defaults(func=crash)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    code = cli.main(["generate", files["model"], files["cells"], files["new"] + ".h5ad"])
    err = capsys.readouterr().err
    assert code == 2
    expected = (
        "scbranchdiff generate: error: ZeroDivisionError: integer division or modulo by zero "
        "(--traceback shows where it happened)"
    )
    assert err.strip().splitlines() == [expected]
