"""Packaging facts that are easy to let drift: one version, typed marker, pins, citation, bounds."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import scbranchdiff

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_the_installed_metadata_agrees():
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "scbranchdiff/_version.py"
    # a stale editable install (version bumped, not reinstalled) fails here
    assert importlib.metadata.version("scbranchdiff") == scbranchdiff.__version__
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^version: (\S+)$", citation, re.MULTILINE)[1] == scbranchdiff.__version__


def test_the_package_is_marked_as_typed_and_licensed():
    assert (Path(scbranchdiff.__file__).parent / "py.typed").exists()
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()


def test_pre_commit_runs_the_ruff_version_of_the_dev_extra():
    pinned = [
        r for r in PYPROJECT["project"]["optional-dependencies"]["dev"] if r.startswith("ruff")
    ]
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    rev = re.search(r"ruff-pre-commit\n\s+rev: v(\S+)", config)[1]
    assert pinned == [f"ruff=={rev}"]


def test_lowest_constraints_pin_every_runtime_bound_but_torch():
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "lowest_constraints.py"), "--skip", "torch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = [re.split(r"[<>=\[; ]", r, maxsplit=1)[0] for r in PYPROJECT["project"]["dependencies"]]
    assert [pin.split("==")[0] for pin in out] == [n for n in names if n != "torch"]
    assert "anndata==0.11" in out  # anndata.io appeared in 0.11
    assert "scvi-tools==1.3.1.post1" in out  # BaseModelClass(adata, registry) is from 1.3.1
