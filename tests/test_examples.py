"""Every public function and class has an Examples section in its docstring, and it runs.

The examples are the API reference's; they run here as doctests. Model examples that start
from "``model`` a trained BranchedDiffusion" get the session's `pbmc68k_model`; the others
build what they need (simulated data, tiny training).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import logging
import warnings

import matplotlib.pyplot as plt
import pytest

PUBLIC_MODULES = ["scbranchdiff", "scbranchdiff.model", "scbranchdiff.hierarchy",
                  "scbranchdiff.data", "scbranchdiff.metrics", "scbranchdiff.pl",
                  "scbranchdiff.diffusion", "scbranchdiff.latent", "scbranchdiff.module",
                  "scbranchdiff.train"]
MODEL_METHODS = ["setup_anndata", "train", "generate", "generate_to_file", "transmute",
                 "sample_intermediates", "add_cell_types", "get_latent_representation",
                 "save", "load", "decode_latent", "load_registry", "view_setup_args"]


def _public_objects() -> dict[str, object]:
    found: dict[str, object] = {}
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            # constants (documented by value) and submodules have no docstring of their own
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            found[f"{module_name}.{name}"] = obj
    from scbranchdiff.model import BranchedDiffusion

    for method in MODEL_METHODS:
        found[f"BranchedDiffusion.{method}"] = getattr(BranchedDiffusion, method)
    from scbranchdiff import cli

    found["scbranchdiff.cli.build_parser"] = cli.build_parser
    found["scbranchdiff.cli.main"] = cli.main
    return found


PUBLIC = _public_objects()


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_has_an_examples_section(name):
    assert "Examples\n--------" in (inspect.getdoc(PUBLIC[name]) or ""), name


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_example_runs(name, request, tmp_path, monkeypatch):
    import numpy as np

    import scbranchdiff as sbd

    obj = PUBLIC[name]
    doc = inspect.getdoc(obj) or ""
    globs = {"sbd": sbd, "np": np}
    if "``model`` a trained" in doc:
        globs["model"] = request.getfixturevalue("pbmc68k_model")
    monkeypatch.chdir(tmp_path)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(doc, globs, name, None, 0)
    assert test.examples, f"{name}: no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    import scvi

    monkeypatch.setattr(scvi.settings, "verbosity", logging.WARNING)  # no INFO lines in the output
    with warnings.catch_warnings(), np.printoptions(legacy="1.25"):  # True, not np.True_
        warnings.simplefilter("ignore")
        runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
    plt.close("all")
    assert runner.summarize(verbose=False).failed == 0
