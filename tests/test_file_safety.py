"""Files are never lost: overwrite replaces only a model's own files, the overwrite check holds
when the files are put in place, every write is atomic (a full disk keeps the previous file
and the trained model), temporaries of killed processes are cleaned up, permissions follow the
umask, and model.json is integrity-checked and validated against the tensors before loading
builds anything."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scbranchdiff as sbd
from scbranchdiff import _io
from scbranchdiff.cli import main
from scbranchdiff.model import BranchedDiffusion

from conftest import FAST

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics")


@pytest.fixture(scope="module")
def tiny():
    """A PCA-latent model on simulated, log-normalised counts: trained for one epoch."""
    adata, _ = sbd.data.simulate_hierarchy(n_cells_per_type=30, n_genes=300, seed=0)
    adata.X = np.log1p(adata.X.toarray() if sp.issparse(adata.X) else adata.X).astype(np.float32)
    BranchedDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = BranchedDiffusion(adata, latent="pca", n_latent=5, n_hidden=16, n_trunk_blocks=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **FAST)
    return model


@pytest.fixture
def saved(tiny, tmp_path):
    path = tmp_path / "model"
    tiny.save(path)
    return path


@pytest.fixture(scope="module")
def data_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cells.h5ad"
    _fresh_adata(tiny).write_h5ad(path)
    return path


def _fresh_adata(model):
    adata = model.adata.copy()
    for key in [k for k in adata.uns if k.startswith("_scvi")]:
        del adata.uns[key]
    return adata


def _load(path, model):
    return BranchedDiffusion.load(path, adata=_fresh_adata(model))


def _tree(path):
    return {p.name: (p.read_bytes() if p.is_file() else "<dir>") for p in sorted(path.iterdir())}


def _dot_entries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _one_error_line(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------- 1. overwrite keeps other files
def test_overwrite_refuses_a_directory_that_holds_other_files(tiny, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "data.h5ad").write_bytes(b"the input data")
    (project / "notes.txt").write_text("x")
    before = _tree(project)
    with pytest.raises(FileExistsError, match=r"not part of a scbranchdiff model \(data.h5ad, notes.txt\)"):
        tiny.save(project, overwrite=True)
    assert _tree(project) == before
    assert _dot_entries(tmp_path) == []


def test_cli_train_overwrite_into_the_data_folder_keeps_the_data(tiny, data_file, tmp_path, capsys):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "data.h5ad").write_bytes(data_file.read_bytes())
    (project / "notes.txt").write_text("x")
    before = _tree(project)
    code = main(["--quiet", "train", str(project / "data.h5ad"), str(project), "--labels-key", "cell_type",
                 "--latent", "pca", "--n-hidden", "16", "--max-epochs", "1", "--overwrite"])
    _one_error_line(capsys, code, "not part of a scbranchdiff model", "data.h5ad")
    assert _tree(project) == before


def test_other_files_are_kept_when_allowed_explicitly(tiny, saved, tmp_path):
    metadata, tensors = _io.read_model_dir(saved)
    body = {k: v for k, v in metadata.items() if k not in ("format", "format_version", *_io._CHECKSUM_KEYS)}
    project = tmp_path / "proj"
    project.mkdir()
    (project / "data.h5ad").write_bytes(b"the input data")
    for _ in range(2):  # written into the folder, then replaced there
        _io.write_model_dir(project, body, tensors, overwrite=True, allow_other_files=True)
        assert sorted(os.listdir(project)) == ["data.h5ad", "model.json", "model.safetensors"]
        assert (project / "data.h5ad").read_bytes() == b"the input data"
        assert _load(project, tiny).is_trained
    assert _dot_entries(tmp_path) == []


def test_a_model_json_of_another_tool_is_never_replaced(tiny, tmp_path):
    target = tmp_path / "other_tool"
    target.mkdir()
    (target / "model.json").write_text('{"name": "not ours"}')
    metadata, tensors = {"note": 1}, {"w": np.zeros(3, dtype=np.float32)}
    with pytest.raises(FileExistsError, match="not part of a scbranchdiff model"):
        _io.write_model_dir(target, metadata, tensors, overwrite=True, allow_other_files=True)
    assert _tree(target) == {"model.json": b'{"name": "not ours"}'}


def test_overwrite_replaces_a_saved_model(tiny, saved):
    tiny.save(saved, overwrite=True)
    assert sorted(os.listdir(saved)) == ["model.json", "model.safetensors"]
    assert _load(saved, tiny).is_trained
    assert _dot_entries(saved.parent) == []


# ---------------------------------------------------------------- 2. the check holds at the rename
def _during_save(monkeypatch, action):
    """Run `action` once, while a save writes its tensors (after its first checks)."""
    import safetensors.numpy

    real, done = safetensors.numpy.save_file, []

    def save_file(*args, **kwargs):
        real(*args, **kwargs)
        if not done:
            done.append(True)
            action()

    monkeypatch.setattr(safetensors.numpy, "save_file", save_file)


def test_a_directory_created_during_a_save_is_left_alone(tiny, tmp_path, monkeypatch):
    target = tmp_path / "model"

    def someone_else():
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")

    _during_save(monkeypatch, someone_else)
    with pytest.raises(FileExistsError):
        tiny.save(target)
    assert _tree(target) == {"theirs.txt": b"theirs"}
    assert _dot_entries(tmp_path) == []


def test_two_saves_to_one_path_do_not_both_succeed(tiny, tmp_path, monkeypatch):
    target = tmp_path / "model"
    _during_save(monkeypatch, lambda: tiny.save(target))  # a second process, faster
    with pytest.raises(FileExistsError):
        tiny.save(target)
    monkeypatch.undo()
    assert _load(target, tiny).is_trained
    assert _dot_entries(tmp_path) == []


def test_a_file_put_into_the_model_during_an_overwrite_is_kept(tiny, saved, monkeypatch):
    before = _tree(saved)
    _during_save(monkeypatch, lambda: (saved / "notes.txt").write_text("mine"))
    with pytest.raises(FileExistsError, match="notes.txt"):
        tiny.save(saved, overwrite=True)
    assert _tree(saved) == {**before, "notes.txt": b"mine"}
    assert _dot_entries(saved.parent) == []


def test_atomic_file_without_overwrite_never_replaces_a_file_created_meanwhile(tmp_path):
    target = tmp_path / "out.h5ad"
    with pytest.raises(FileExistsError, match="created while"), _io.atomic_file(target, overwrite=False) as tmp:
        tmp.write_bytes(b"new")
        target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert _dot_entries(tmp_path) == []


# ---------------------------------------------------------------- 3. atomic writes, full disks
def _small_anndata() -> ad.AnnData:
    """2 x 2 cells with object-dtype names: anndata 0.12 refuses to write pandas 3's string index."""
    names = pd.Index(["a", "b"], dtype=object)
    return ad.AnnData(np.ones((2, 2), dtype=np.float32), obs=pd.DataFrame(index=names), var=pd.DataFrame(index=names))


def _disk_full():
    return OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.h5ad"
    target.write_bytes(b"previous good file")
    with pytest.raises(OSError, match="No space"), _io.atomic_file(target, overwrite=True) as tmp:
        tmp.write_bytes(b"half a fi")
        raise _disk_full()
    assert target.read_bytes() == b"previous good file"
    assert _dot_entries(tmp_path) == []


def test_transmute_overwrite_on_a_full_disk_keeps_the_previous_file(tiny, saved, data_file, tmp_path,
                                                                    monkeypatch, capsys):
    out = tmp_path / "transmuted.h5ad"
    _small_anndata().write_h5ad(out)
    previous = out.read_bytes()

    def write_until_full(self, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\x89HDF partial")
        raise _disk_full()

    monkeypatch.setattr(ad.AnnData, "write_h5ad", write_until_full)
    source, target = tiny.classes[0], tiny.classes[-1]
    code = main(["--quiet", "transmute", str(saved), str(data_file), str(out), "--target", target,
                 "--source-types", source, "--n-steps", "4", "--overwrite"])
    _one_error_line(capsys, code, "No space left on device", "previous file is unchanged")
    assert out.read_bytes() == previous
    assert _dot_entries(tmp_path) == []


def test_training_onto_a_full_disk_keeps_the_trained_model(tiny, data_file, tmp_path, monkeypatch, capsys):
    import safetensors.numpy
    from safetensors import SafetensorError

    full = tmp_path / "full_disk"
    real = safetensors.numpy.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if str(filename).startswith(str(full)):
            raise SafetensorError(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                'message: "No space left on device" })'
            )
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "save_file", save_file)
    code = main(["--quiet", "train", str(data_file), str(full / "model"), "--labels-key", "cell_type",
                 "--latent", "pca", "--n-latent", "5", "--n-hidden", "16", "--max-epochs", "1",
                 "--checkpoint-dir", str(tmp_path / "ckpt")])
    line = _one_error_line(capsys, code, "No space left on device", "was saved to")
    rescued = line.rsplit("was saved to ", 1)[1].removesuffix(" instead.")
    assert rescued.startswith(str(tmp_path / "ckpt"))
    monkeypatch.undo()
    assert _load(rescued, tiny).is_trained
    assert not (full / "model").exists()
    assert _dot_entries(full) == []


# ---------------------------------------------------------------- 4. stale temporaries, permissions
def _dead_pid() -> int:
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(done.stdout)


@posix_only
def test_temporaries_of_dead_or_long_gone_processes_are_removed(tiny, tmp_path):
    host, dead, alive = _io._host_tag(), _dead_pid(), os.getppid()
    stale_dir = tmp_path / f".model.tmp-{host}.{dead}.0123abcd"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"470 MB of half a model")
    stale_stream = tmp_path / f".gen.h5ad.tmp-{dead}"  # generate_to_file's temporary
    stale_stream.write_bytes(b"half a file")
    old = tmp_path / f".cells.h5ad.tmp-{host}.{alive}.89abcdef.h5ad"
    old.write_bytes(b"untouched for two days")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    running = tmp_path / f".other.h5ad.tmp-{host}.{alive}.fedcba98.h5ad"  # another process, now
    running.write_bytes(b"being written")
    users = tmp_path / ".notes.tmp-mine"
    users.write_text("not ours")
    tiny.save(tmp_path / "model")
    # the stream temporary is of another name: cleaned when that file is written
    with _io.atomic_file(tmp_path / "gen.h5ad", overwrite=False) as tmp:
        tmp.write_bytes(b"cells")
    assert _dot_entries(tmp_path) == sorted([running.name, users.name])


@posix_only
def test_a_save_killed_with_sigkill_leaves_nothing_after_the_next_save(tmp_path):
    target = tmp_path / "model"
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        import safetensors.numpy
        from scbranchdiff import _io
        real = safetensors.numpy.save_file
        def slow(*args, **kwargs):
            real(*args, **kwargs)
            print("writing", flush=True)
            time.sleep(120)
        safetensors.numpy.save_file = slow
        _io.write_model_dir({str(target)!r}, {{"note": 1}}, {{"w": np.zeros(1000, dtype=np.float32)}}, overwrite=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(_dot_entries(tmp_path)) == 1 and not target.exists()
    _io.write_model_dir(target, {"note": 2}, {"w": np.ones(10, dtype=np.float32)}, overwrite=False)
    assert _dot_entries(tmp_path) == []
    assert _io._parse_json((target / "model.json").read_text())["note"] == 2


@posix_only
@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o027, 0o750, 0o640), (0o002, 0o775, 0o664)])
def test_saved_files_follow_the_umask(tiny, tmp_path, umask, dir_mode, file_mode):
    previous = os.umask(umask)
    try:
        tiny.save(tmp_path / "model")
        with _io.atomic_file(tmp_path / "cells.h5ad", overwrite=False) as tmp:
            _small_anndata().write_h5ad(tmp)
    finally:
        os.umask(previous)
    assert (tmp_path / "model").stat().st_mode & 0o777 == dir_mode
    for name in ("model.json", "model.safetensors"):
        assert (tmp_path / "model" / name).stat().st_mode & 0o777 == file_mode, name
    assert (tmp_path / "cells.h5ad").stat().st_mode & 0o777 == file_mode


# ---------------------------------------------------------------- 7. model.json is integrity-checked
def _edit_json(path, edit):
    metadata = json.loads((path / "model.json").read_text())
    edit(metadata)
    (path / "model.json").write_text(json.dumps(metadata, indent=1))


def _reverse_classes(m):
    m["classes"].reverse()
    m["hierarchy"]["classes"].reverse()


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["var_names"].reverse(),
        _reverse_classes,
        lambda m: m["hierarchy"]["branches"][1].update(t_start=m["hierarchy"]["branches"][1]["t_start"] * 0.5),
        lambda m: m["train_settings"].update(seed=12345),
    ],
    ids=["reversed_var_names", "reversed_classes", "moved_split_time", "edited_settings"],
)
def test_editing_model_json_alone_is_refused(tiny, saved, edit):
    _edit_json(saved, edit)
    with pytest.raises(ValueError, match="model.json does not match its checksum"):
        _load(saved, tiny)


def test_a_downgraded_format_version_is_refused(tiny, saved):
    def downgrade(m):
        m["format_version"] = 1
        del m["metadata_sha256"]
        m["var_names"].reverse()

    _edit_json(saved, downgrade)
    with pytest.raises(ValueError, match="model.json does not match its checksum"):
        _load(saved, tiny)


def test_format_1_files_still_load_with_a_warning(tiny, saved):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(saved / "model.safetensors"))
    save_file(tensors, str(saved / "model.safetensors"))  # no header metadata, as version 1 wrote

    def as_version_1(m):
        m["format_version"] = 1
        del m["metadata_sha256"]
        m["tensors_sha256"] = _io._sha256(saved / "model.safetensors")

    _edit_json(saved, as_version_1)
    with pytest.warns(UserWarning, match="format version 1"):
        loaded = _load(saved, tiny)
    np.testing.assert_array_equal(
        loaded.generate(3, seed=0, n_steps=5).obsm["X_latent"], tiny.generate(3, seed=0, n_steps=5).obsm["X_latent"]
    )


@pytest.fixture(scope="module")
def tiny_scvi(tmp_path_factory):
    adata = sbd.data.pbmc68k()
    BranchedDiffusion.setup_anndata(adata, labels_key="bulk_labels", layer="counts")
    model = BranchedDiffusion(adata, n_latent=4, n_hidden=16, n_trunk_blocks=1, scvi_kwargs={"n_hidden": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, latent_max_epochs=1, **FAST)
    path = tmp_path_factory.mktemp("scvi") / "model"
    model.save(path)
    return model, path


def _copy(path, tmp_path):
    import shutil

    return shutil.copytree(path, tmp_path / "copy")


def test_reversed_latent_cell_types_are_refused(tiny_scvi, tmp_path):
    model, path = tiny_scvi
    path = _copy(path, tmp_path)
    _edit_json(path, lambda m: m["latent"]["config"]["cell_types"].reverse())
    with pytest.raises(ValueError, match="model.json does not match its checksum"):
        _load(path, model)


# ---------------------------------------------------------------- 8, 9. validated before building
def _rehash(path, edit=None, edit_tensors=None):
    """Edit a saved model and write it again with matching checksums (a deliberate forgery)."""
    from safetensors.numpy import load_file

    metadata = json.loads((path / "model.json").read_text())
    tensors = {k: v.copy() for k, v in load_file(str(path / "model.safetensors")).items()}
    body = {k: v for k, v in metadata.items() if k not in ("format", "format_version", *_io._CHECKSUM_KEYS)}
    if edit is not None:
        edit(body)
    if edit_tensors is not None:
        edit_tensors(tensors)
    _io.write_model_dir(path, body, tensors, overwrite=True)


def _set(dotted, value):
    def edit(m):
        *parents, last = dotted.split(".")
        for key in parents:
            m = m[key]
        m[last] = value
    return edit


def _deep(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("network.n_branches", 1e8), "network.n_branches: 100000000.0 is not an integer"),
        (_set("network.n_branches", 2000), "network.n_branches: 2000, but the tensors hold 15"),
        (_set("network.n_hidden", "16"), "network.n_hidden: '16' is not an integer"),
        (_set("classes", 5), "classes: 5 is not a list of strings"),
        (_set("latent", None), "latent: null is not a mapping"),
        (_set("latent.kind", "__class__"), "latent.kind: '__class__' is not one of"),
        (_set("latent.config.n_latent", 6), "latent.config.n_latent: 6, but the network takes 5"),
        (lambda m: m["var_names"].pop(), "var_names: 299 genes"),
        (lambda m: m["var_names"].__setitem__(1, m["var_names"][0]), "var_names: repeats"),
        (lambda m: m["hierarchy"]["classes"].reverse(), "hierarchy.classes: differ"),
        (lambda m: m["hierarchy"]["branches"].pop(), "hierarchy.branches: 14 branches, but the network has 15 heads"),
        (_set("setup_args.labels_key", 3), "setup_args.labels_key: 3 is not a string"),
        (_set("init_params.evil", 1), "init_params: evil is not an argument of BranchedDiffusion"),
        (_set("is_flat", "no"), "is_flat: 'no' is not true or false"),
        (_set("extra", _deep(100)), "(file): values nested more than"),
    ],
)
def test_every_malformed_field_is_one_clear_error(tiny, saved, edit, field):
    _rehash(saved, edit)
    with pytest.raises(ValueError) as info:
        _load(saved, tiny)
    message = str(info.value)
    assert message.startswith(f"{saved} model.json is corrupted: {field}"), message
    assert "\n" not in message


def _nan_weight(t):
    t["network.input.weight"] = np.full_like(t["network.input.weight"], np.nan)


def _set_tensor(name, value):
    return lambda t: t.update({name: value})


@pytest.mark.parametrize(
    ("edit_tensors", "field"),
    [
        (_set_tensor("scaling.scale", np.float32(1.0)), "scaling.scale: has shape ()"),
        (_set_tensor("scaling.scale", np.zeros(5, np.float32)), "scaling.scale: has values <= 0"),
        (_nan_weight, "network.input.weight: holds NaN"),
        (lambda t: t.pop("network.heads.3.out.bias"), "network.heads.3.out.bias: missing"),
        (lambda t: t.update({"latent.components": t["latent.components"].T.copy()}),
         "latent.components: has shape (300, 5)"),
        (_set_tensor("network.heads.0.out.weight", np.zeros((5, 17), np.float32)),
         "network.heads.0.out.weight: has shape (5, 17)"),
        (_set_tensor("evil.payload", np.zeros(3, np.float32)), "evil.payload: is not a tensor of the model"),
        (lambda t: t.pop("scaling.class_cov"), "scaling.class_cov: missing (the file has scaling.class_mean)"),
        (lambda t: t.update({"scaling.class_mean": t["scaling.class_mean"][:-1].copy()}),
         "scaling.class_mean: has shape (7, 5), expected (8, 5)"),
        (lambda t: t.update({"scaling.class_cov": -t["scaling.class_cov"] - np.eye(5, dtype=np.float32)}),
         "scaling.class_cov: is not a set of covariance matrices"),
    ],
    ids=["scalar_scale", "zero_scale", "nan_weights", "missing_head_tensor", "transposed_components",
         "wrong_head_shape", "unknown_tensor", "half_of_the_moments", "moments_of_too_few_types",
         "negative_covariance"],
)
def test_tensors_that_disagree_with_the_json_are_refused(tiny, saved, edit_tensors, field):
    _rehash(saved, edit_tensors=edit_tensors)
    with pytest.raises(ValueError) as info:
        _load(saved, tiny)
    assert str(info.value).startswith(f"{saved} model.safetensors is corrupted: {field}"), str(info.value)


def test_a_huge_size_is_refused_without_allocating(saved):
    metadata, tensors = _io.read_model_dir(saved)
    metadata["network"]["n_branches"] = 10**8
    start = time.perf_counter()
    with pytest.raises(ValueError, match="network.n_branches: 100000000, but the tensors hold 15"):
        _io.validate_model_metadata(metadata, tensors)
    assert time.perf_counter() - start < 5


def test_scvi_sizes_are_checked_against_its_tensors(tiny_scvi, tmp_path):
    model, path = tiny_scvi
    path = _copy(path, tmp_path)
    for value, why in [(10**6, "1000000, but the scVI tensors have 16"), (1e6, "1000000.0 is not an integer")]:
        _rehash(path, _set("latent.config.init_params.n_hidden", value))
        with pytest.raises(ValueError, match=f"latent.config.init_params.n_hidden: {why}"):
            _load(path, model)
        _rehash(path, _set("latent.config.init_params.n_hidden", 16))
    assert _load(path, model).is_trained


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": "scbranchdiff", "format_version": NaN}', "NaN is not a JSON number"),
        ('{"format": "scbranchdiff", "format": "x"}', "repeated keys"),
        ('{"format": "scbranchdiff", "n": 1e999}', "out of range"),
    ],
    ids=["deep_nesting", "nan", "repeated_keys", "infinite_number"],
)
def test_garbage_json_is_one_clear_error(tiny, saved, text, why):
    (saved / "model.json").write_text(text)
    with pytest.raises(ValueError, match=f"model.json is corrupted: \\(file\\): not valid JSON: .*{why}"):
        _load(saved, tiny)


@posix_only
@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_a_fifo_in_place_of_a_model_file_is_refused_before_opening_it(tiny, saved, name):
    (saved / name).unlink()
    os.mkfifo(saved / name)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening the FIFO blocked"))
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match=f"{name} is a FIFO, not a regular file"):
            _load(saved, tiny)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_directory_in_place_of_model_json_is_refused(tiny, saved):
    (saved / "model.json").unlink()
    (saved / "model.json").mkdir()
    with pytest.raises(ValueError, match="model.json is a directory, not a regular file"):
        _load(saved, tiny)
