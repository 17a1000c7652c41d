"""Continual learning of cell types the latent model never saw: residual latents.

The base models' latents (PCA, scVI) are fitted on the old types only, so they cannot express
the genes only a new type uses (each simulated leaf type up-regulates a program of its own).
`add_cell_types` gives every new type a residual (default: an offset of the frozen decoder; the
third PCA addition uses residual codes); the tests check that the new types' generated cells are
recognised as often as real ones, that the frozen latent alone does not get there (so the
residual is what does it), and that every earlier type - old or added before - keeps its
generated latents and decoded expression bit for bit, through three additions and a save/load.
About 60 s on 2 CPU cores.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

NEW_TYPES = ["T_CD8", "DC_plasmacytoid", "B_memory"]  # added one after another
RESIDUALS = [None, "offset", "codes"]  # the default (offset), the offset by name, residual codes
SEED = 4


def _split(simulated, log_normalise: bool):
    import scanpy as sc

    from conftest import stratified_split

    adata = simulated[0].copy()
    if log_normalise:
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    test = stratified_split(adata.obs["cell_type"], 1 / 3, seed=0)
    train, heldout = adata[~test].copy(), adata[test].copy()
    is_new = train.obs["cell_type"].isin(NEW_TYPES).to_numpy()
    old = train[~is_new].copy()
    old.obs["cell_type"] = old.obs["cell_type"].cat.remove_unused_categories()
    return train, heldout, old


def _cells_of(adata, cell_type):
    return adata[(adata.obs["cell_type"] == cell_type).to_numpy()].copy()


def _ratios(train, heldout, generated, types, *, is_counts, layer=None) -> dict[str, float]:
    """Per type: share of generated cells a real-cell classifier assigns to it, over real cells'."""
    import scbranchdiff as sbd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = sbd.metrics.label_transfer_accuracy(train, heldout, "cell_type", layer=layer, is_counts=is_counts)
        fake = sbd.metrics.label_transfer_accuracy(train, generated, "cell_type", layer=layer, is_counts=is_counts)
    return {t: float(fake[t] / real[t]) for t in types}


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _same_rows(a, b, types) -> bool:
    rows_a = a.obs["cell_type"].isin(types).to_numpy()
    rows_b = b.obs["cell_type"].isin(types).to_numpy()
    return bool(
        np.array_equal(a.obs["cell_type"].astype(str)[rows_a], b.obs["cell_type"].astype(str)[rows_b])
        and np.array_equal(a.obsm["X_latent"][rows_a], b.obsm["X_latent"][rows_b])
        and np.array_equal(_dense(a.X)[rows_a], _dense(b.X)[rows_b])
    )


@pytest.fixture(scope="module")
def three_additions(simulated, tmp_path_factory):
    """PCA of the old types only; T_CD8, then DC_plasmacytoid, then B_memory added."""
    import scbranchdiff as sbd

    from conftest import FAST

    train, heldout, old = _split(simulated, log_normalise=True)
    sbd.model.BranchedDiffusion.setup_anndata(old, labels_key="cell_type")
    model = sbd.model.BranchedDiffusion(old, latent="pca", n_latent=10, n_hidden=64, n_trunk_blocks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=150, batch_size=128, **FAST)
        base = tmp_path_factory.mktemp("unseen") / "base"
        model.save(str(base))
        samples = [model.generate(40, seed=SEED, n_steps=50, progress_bar=False)]
        for cell_type, residual in zip(NEW_TYPES, RESIDUALS, strict=True):
            model.add_cell_types(_cells_of(train, cell_type), max_epochs=200, residual=residual, **FAST)
            samples.append(model.generate(40, seed=SEED, n_steps=50, progress_bar=False))
        frozen = sbd.model.BranchedDiffusion.load(str(base), old.copy(), accelerator="cpu")
        frozen.add_cell_types(_cells_of(train, NEW_TYPES[0]), max_epochs=200, residual="none", **FAST)
    return {"model": model, "frozen": frozen, "samples": samples, "train": train, "heldout": heldout,
            "old_types": list(sbd.model.BranchedDiffusion.load(str(base), old.copy()).classes)}


def test_unseen_types_are_generated_as_recognisably_as_real_cells(three_additions):
    model, train, heldout = (three_additions[k] for k in ("model", "train", "heldout"))
    generated = model.generate({t: 150 for t in NEW_TYPES}, seed=0, n_steps=50, progress_bar=False)
    ratios = _ratios(train, heldout, generated, NEW_TYPES, is_counts=False)
    assert all(r >= 0.8 for r in ratios.values()), ratios
    # the residual is what does it: the frozen PCA alone decodes T_CD8 like its sibling T_CD4
    alone = three_additions["frozen"].generate({"T_CD8": 150}, seed=0, n_steps=50, progress_bar=False)
    without = _ratios(train, heldout, alone, ["T_CD8"], is_counts=False)["T_CD8"]
    assert without < 0.5 and ratios["T_CD8"] - without >= 0.3, (without, ratios)


def test_every_earlier_type_stays_bit_identical_through_three_additions(three_additions):
    samples, old_types = three_additions["samples"], three_additions["old_types"]
    for k in range(1, len(samples)):
        earlier = old_types + NEW_TYPES[: k - 1]  # every type the model knew before addition k
        assert _same_rows(samples[k - 1], samples[k], earlier), k
        assert _same_rows(samples[0], samples[k], old_types), k
    # a type's cells do not depend on how many cells of other types are asked for
    model = three_additions["model"]
    uneven = model.generate({**dict.fromkeys(old_types, 40), "T_CD8": 40, "DC_plasmacytoid": 73, "B_memory": 11},
                            seed=SEED, n_steps=50, progress_bar=False)
    assert _same_rows(samples[-1], uneven, old_types + NEW_TYPES[:1])
    settings = model.train_settings_["added_cell_types"]
    assert [s["cell_types"] for s in settings] == [[t] for t in NEW_TYPES]
    assert [(s["residual"], s["n_residual"]) for s in settings] == [("offset", 0), ("offset", 0), ("codes", 10)]
    assert [r.n_dims for r in model.latent_backend.residuals.values()] == [0, 0, 10]


def test_residuals_survive_save_and_load(three_additions, tmp_path):
    import scbranchdiff as sbd
    from scbranchdiff import _io

    model = three_additions["model"]
    model.save(str(tmp_path / "m"))
    loaded = sbd.model.BranchedDiffusion.load(str(tmp_path / "m"), model.adata.copy(), accelerator="cpu")
    assert list(loaded.latent_backend.residuals) == NEW_TYPES
    a = model.generate(20, seed=1, n_steps=20, progress_bar=False)
    b = loaded.generate(20, seed=1, n_steps=20, progress_bar=False)
    assert _same_rows(a, b, list(model.classes))
    # a residual whose shapes disagree with the genes is refused with the field named
    metadata, tensors = _io.read_model_dir(tmp_path / "m")
    tensors["latent.residual.1.components"] = tensors["latent.residual.1.components"][:, :5].copy()
    with pytest.raises(ValueError, match="latent.residual.1.components: of 'DC_plasmacytoid' has shape"):
        _io.validate_model_metadata(metadata, tensors)
    metadata, tensors = _io.read_model_dir(tmp_path / "m")
    metadata["latent"]["config"]["residual_types"] = ["T_CD8", "not a class"]
    with pytest.raises(ValueError, match="residual_types: are not among the model's `classes`"):
        _io.validate_model_metadata(metadata, tensors)


def test_bad_residual_choices_are_refused_before_anything_changes(three_additions):
    model, train = three_additions["model"], three_additions["train"]
    classes = model.classes
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="`n_residual` must be a non-negative integer"):
            model.add_cell_types(_cells_of(train, "T_CD4").copy(), cell_types=None, n_residual=bad)
    for residual, n_residual, message in (("bogus", None, "`residual` must be 'offset', 'codes' or 'none'"),
                                          ("offset", 3, "`n_residual` is for residual='codes'"),
                                          ("none", 2, "`n_residual` is for residual='codes'"),
                                          ("codes", 0, "needs `n_residual` >= 1")):
        with pytest.raises(ValueError, match=message):
            model.add_cell_types(_cells_of(train, "T_CD4").copy(), residual=residual, n_residual=n_residual)
    assert model.classes == classes


def test_scvi_latent_gets_room_for_a_type_it_never_saw(simulated, tmp_path):
    import scbranchdiff as sbd

    from conftest import FAST

    train, heldout, old = _split(simulated, log_normalise=False)
    old = old[old.obs["cell_type"] != "T_CD4"].copy()  # keep the test small: 4 old types
    old.obs["cell_type"] = old.obs["cell_type"].cat.remove_unused_categories()
    sbd.model.BranchedDiffusion.setup_anndata(old, labels_key="cell_type", layer="counts")
    model = sbd.model.BranchedDiffusion(old, n_latent=8, n_hidden=64, n_trunk_blocks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=150, batch_size=128, latent_max_epochs=100, **FAST)
        old_types = list(model.classes)
        before = model.generate(40, seed=SEED, n_steps=30, progress_bar=False)
        model.add_cell_types(_cells_of(train, "T_CD8"), max_epochs=200, **FAST)
    both = model.generate({**dict.fromkeys(old_types, 40), "T_CD8": 67}, seed=SEED, n_steps=30, progress_bar=False)
    # latents and sampled counts of the old types, generated alone and beside the new type
    assert _same_rows(before, both, old_types)
    generated = model.generate({"T_CD8": 150}, seed=0, n_steps=30, progress_bar=False)
    ratio = _ratios(train, heldout, generated, ["T_CD8"], is_counts=True, layer="counts")["T_CD8"]
    assert ratio >= 0.8
    assert isinstance(model.latent_backend.residuals["T_CD8"], sbd.latent.CountOffset)
    # a second type with residual codes; T_CD8 and the old types stay as they were
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_cell_types(_cells_of(train, "B_memory"), max_epochs=100, residual="codes", n_residual=4, **FAST)
    codes = model.latent_backend.residuals["B_memory"]
    assert isinstance(codes, sbd.latent.CountResidual) and codes.n_dims == 4
    three = model.generate({**dict.fromkeys(old_types, 40), "T_CD8": 67, "B_memory": 30}, seed=SEED, n_steps=30,
                           progress_bar=False)
    assert _same_rows(both, three, [*old_types, "T_CD8"])
    # saved and loaded, both residuals decode the same counts; a missing offset tensor is refused
    from scbranchdiff import _io

    model.save(str(tmp_path / "scvi"))
    loaded = sbd.model.BranchedDiffusion.load(str(tmp_path / "scvi"), model.adata.copy(), accelerator="cpu")
    again = loaded.generate({**dict.fromkeys(old_types, 40), "T_CD8": 67, "B_memory": 30}, seed=SEED, n_steps=30,
                            progress_bar=False)
    assert _same_rows(three, again, list(model.classes))
    metadata, tensors = _io.read_model_dir(tmp_path / "scvi")
    del tensors["latent.residual.0.zi"]
    with pytest.raises(ValueError, match="latent.residual.0.zi: of 'T_CD8': missing"):
        _io.validate_model_metadata(metadata, tensors)
