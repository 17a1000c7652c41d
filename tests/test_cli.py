"""The command line: help for every option, one-line errors, and train -> generate -> transmute."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pytest

from scbranchdiff.cli import build_parser, main

SUBCOMMANDS = ["demo", "train", "generate", "transmute"]


def _options(subcommand: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[subcommand]
    return [s for action in sub._actions for s in action.option_strings if s.startswith("--")]


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_help_of_every_subcommand_explains_every_option(subcommand, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in _options(subcommand):
        assert option in text, option
    # every option has a help text, not just its name and metavar
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[subcommand]
    assert all(action.help for action in sub._actions)


def test_top_level_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for subcommand in SUBCOMMANDS:
        assert subcommand in text


def _assert_one_line_error(capsys, code: int, *fragments: str) -> str:
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_input_file_is_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(["train", str(tmp_path / "absent.h5ad"), str(tmp_path / "m"), "--labels-key", "x"])
    _assert_one_line_error(capsys, code, "scbranchdiff train: error:", "absent.h5ad")


def test_file_that_is_not_h5ad_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("cell,gene\n1,2\n")
    code = main(["train", str(bad), str(tmp_path / "m"), "--labels-key", "x"])
    _assert_one_line_error(capsys, code, "cannot read", "bad.h5ad")


def test_traceback_flag_raises_the_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--traceback", "train", str(tmp_path / "absent.h5ad"), str(tmp_path / "m"), "--labels-key", "x"])


def test_bad_argument_value_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "m", "a.h5ad", "o.h5ad", "--sampler", "euler"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture(scope="module")
def simulated_file(tmp_path_factory, simulated):
    """The session's simulated counts, log-normalised into layers['lognorm'], as an .h5ad file."""
    import scanpy as sc

    adata = simulated[0].copy()
    adata.layers["lognorm"] = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4, layer="lognorm")
    sc.pp.log1p(adata, layer="lognorm")
    path = tmp_path_factory.mktemp("cli") / "sim.h5ad"
    adata.write_h5ad(path)
    return path, adata


@pytest.fixture(scope="module")
def trained_dir(simulated_file, tmp_path_factory):
    path, _ = simulated_file
    model_dir = tmp_path_factory.mktemp("cli_model") / "model"
    code = main([
        "--quiet", "train", str(path), str(model_dir), "--labels-key", "cell_type",
        "--layer", "lognorm", "--latent", "pca", "--n-hidden", "64",
        "--hierarchy", "level_1,level_2,cell_type", "--max-epochs", "20",
    ])
    assert code == 0
    return model_dir


def test_train_writes_a_model_that_loads(trained_dir, simulated_file, capsys):
    import scbranchdiff as sbd

    model = sbd.model.BranchedDiffusion.load(str(trained_dir), adata=simulated_file[1])
    assert set(model.classes) == set(simulated_file[1].obs["cell_type"])
    assert model.latent_backend.kind == "pca"


def test_train_refuses_to_overwrite_a_model(trained_dir, simulated_file, capsys):
    code = main(["train", str(simulated_file[0]), str(trained_dir), "--labels-key", "cell_type"])
    _assert_one_line_error(capsys, code, "already exists", "--overwrite")


def test_generate_writes_the_requested_cells(trained_dir, simulated_file, tmp_path, capsys):
    out = tmp_path / "gen.h5ad"
    types = sorted(simulated_file[1].obs["cell_type"].unique())
    request = f"{types[0]}=30,{types[1]}=12"
    code = main(["generate", str(trained_dir), str(simulated_file[0]), str(out),
                 "--n-cells", request, "--sampler", "ode", "--n-steps", "20", "--seed", "3"])
    assert code == 0
    assert "Wrote 42 generated cells" in capsys.readouterr().out
    generated = ad.read_h5ad(out)
    assert generated.obs["cell_type"].value_counts()[[types[0], types[1]]].tolist() == [30, 12]
    assert generated.n_vars == simulated_file[1].n_vars
    assert np.isfinite(generated.obsm["X_latent"]).all()
    # the output is never overwritten silently
    code = main(["generate", str(trained_dir), str(simulated_file[0]), str(out)])
    _assert_one_line_error(capsys, code, "already exists")
    code = main(["generate", str(trained_dir), str(simulated_file[0]), str(tmp_path / "dpm.h5ad"),
                 "--n-cells", request, "--sampler", "dpm++", "--n-steps", "20"])
    assert code == 0 and ad.read_h5ad(tmp_path / "dpm.h5ad").uns["scbranchdiff"]["sampler"] == "dpm++"


def test_generate_with_an_unknown_type_is_one_line(trained_dir, simulated_file, tmp_path, capsys):
    code = main(["generate", str(trained_dir), str(simulated_file[0]), str(tmp_path / "g.h5ad"),
                 "--n-cells", "no such type=5"])
    _assert_one_line_error(capsys, code, "no such type")


def test_generate_from_a_missing_model_is_one_line(simulated_file, tmp_path, capsys):
    code = main(["generate", str(tmp_path / "nowhere"), str(simulated_file[0]), str(tmp_path / "g.h5ad")])
    _assert_one_line_error(capsys, code, "model", "nowhere")


def test_transmute_turns_the_selected_cells_into_the_target(trained_dir, simulated_file, tmp_path, capsys):
    path, adata = simulated_file
    types = sorted(adata.obs["cell_type"].unique())
    source, target = types[0], types[-1]
    out = tmp_path / "tr.h5ad"
    code = main(["transmute", str(trained_dir), str(path), str(out), "--target", target,
                 "--source-types", source, "--n-steps", "20"])
    assert code == 0
    assert re.search(rf"Wrote {(adata.obs['cell_type'] == source).sum()} cells transmuted", capsys.readouterr().out)
    result = ad.read_h5ad(out)
    assert (result.obs["source_type"] == source).all()
    assert (result.obs["target_type"] == target).all()
    assert (result.obs["cell_type"] == target).all()
    expected = adata.obs_names[adata.obs["cell_type"] == source]
    assert list(result.obs["source_cell"]) == list(expected)
    assert (result.obs["t_split"] > 0).all()
    assert bool(result.uns["scbranchdiff"]["match"]) is True
    # --no-match: the paper's version, states at the split used as they are
    plain = tmp_path / "plain.h5ad"
    assert main(["transmute", str(trained_dir), str(path), str(plain), "--target", target,
                 "--source-types", source, "--n-steps", "20", "--no-match", "--quiet"]) == 0
    unmatched = ad.read_h5ad(plain)
    assert bool(unmatched.uns["scbranchdiff"]["match"]) is False
    assert not np.allclose(unmatched.obsm["X_latent"], result.obsm["X_latent"])


def test_transmute_into_an_unknown_type_is_one_line(trained_dir, simulated_file, tmp_path, capsys):
    code = main(["transmute", str(trained_dir), str(simulated_file[0]), str(tmp_path / "t.h5ad"),
                 "--target", "Unicorn"])
    _assert_one_line_error(capsys, code, "Unicorn")


def test_demo_runs_in_small_settings(tmp_path, capsys):
    """The README's `make demo`, with tiny training: files written, figures non-empty."""
    out = tmp_path / "demo"
    code = main(["--quiet", "demo", "--out", str(out), "--max-epochs", "2",
                 "--latent-max-epochs", "2", "--n-cells", "10", "--n-steps", "20", "--basis", "pca"])
    assert code == 0
    for name in ["generated.h5ad", "hierarchy.png", "generated_vs_real.png", "model/model.json"]:
        assert (out / name).exists(), name
    assert ad.read_h5ad(out / "generated.h5ad").n_obs == 10 * 10
    assert (out / "generated_vs_real.png").stat().st_size > 10_000
    # trained on 80% of each type; the printed check scores against the other 20%
    printed = capsys.readouterr().out
    assert "Trained on 558 cells" in printed
    assert "Held-out check (142 real cells never trained on, 10 types)" in printed
    assert re.search(r"ratio \d\.\d\d", printed) and re.search(r"types with >= 10 held-out cells: 0\.\d\d", printed)


def test_version_flag_prints_the_version(capsys):
    import scbranchdiff

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"scbranchdiff {scbranchdiff.__version__}"
