"""Sphinx configuration: MyST pages and notebooks, API pages from numpy-style docstrings."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
from datetime import date
from pathlib import Path

from sphinx.application import Sphinx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import scbranchdiff  # noqa: E402

project = "scbranchdiff"
author = "scbranchdiff developers"
copyright = f"{date.today().year}, {author}"
version = release = scbranchdiff.__version__  # scbranchdiff/_version.py, the one source

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",  # after napoleon, so it sees the parsed sections
    "matplotlib.sphinxext.plot_directive",
]

templates_path = ["_templates"]
html_static_path = ["_static"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
master_doc = "index"

# -- MyST / notebooks --------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist", "amsmath"]
myst_heading_anchors = 3
# Tutorials are executed by the test suite (small mode); the docs render them as stored.
nb_execution_mode = "off"
nb_merge_streams = True

# -- API pages ---------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
typehints_defaults = "comma"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_custom_sections = [("Params", "Parameters")]

# -- cross-links to the scverse stack (needs network: opt in with SCBRANCHDIFF_DOCS_INTERSPHINX=1)
intersphinx_mapping = (
    {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
    }
    if os.environ.get("SCBRANCHDIFF_DOCS_INTERSPHINX") == "1"
    else {}
)

# -- figures made at build time (concepts page) ------------------------------------------
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 150)]
plot_rcparams = {"savefig.bbox": "tight"}  # keep rotated cell-type names inside the image

# -- HTML: the scverse look ----------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "scbranchdiff"
html_theme_options = {
    # no repository button: the package has no public repository address to point to yet
    "use_repository_button": False,
    "navigation_with_keys": False,
}
pygments_style = "default"

# -- tutorials: notebooks live in ../tutorials (run by the tests); copied here for the build
TUTORIALS_SOURCE = ROOT / "tutorials"
TUTORIALS_COPY = HERE / "tutorials"

# -- the API page lists every public name: a name in some __all__ but not on the page fails
PUBLIC_MODULES = ["scbranchdiff", "scbranchdiff.model", "scbranchdiff.hierarchy",
                  "scbranchdiff.data", "scbranchdiff.metrics", "scbranchdiff.pl",
                  "scbranchdiff.diffusion", "scbranchdiff.latent", "scbranchdiff.module"]


def copy_tutorials(app: Sphinx) -> None:
    """Mirror ../tutorials/*.ipynb into docs/tutorials/ (a build copy, ignored by git)."""
    if TUTORIALS_COPY.exists():
        shutil.rmtree(TUTORIALS_COPY)
    notebooks = sorted(TUTORIALS_SOURCE.glob("*.ipynb"))
    if notebooks:
        TUTORIALS_COPY.mkdir()
        for notebook in notebooks:
            shutil.copy2(notebook, TUTORIALS_COPY / notebook.name)


def check_api_page_lists_every_public_name(app: Sphinx) -> None:
    """Warn (an error under -W) about public names missing from api/index.md."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    page = (HERE / "api" / "index.md").read_text()
    listed = set(re.findall(r"^\s*([A-Za-z_][\w.]*)\s*$", page, flags=re.MULTILINE))
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            if name.startswith("__") or isinstance(getattr(module, name), type(module)):
                continue
            short = f"{module_name.removeprefix('scbranchdiff.')}.{name}"
            if module_name == "scbranchdiff":
                short = name
            if short not in listed:
                logger.warning(
                    f"api/index.md does not list the public name {module_name}.{name} "
                    f"(add `{short}` to an autosummary)."
                )


def drop_pages_not_written_yet(app: Sphinx, docname: str, source: list[str]) -> None:
    """Leave the benchmarks page and the tutorials out of the navigation until they exist.

    (Sphinx 9 cannot silence an empty toctree glob, and -W turns it into an error.)
    """
    if docname == "index" and not (HERE / "benchmarks.md").exists():
        source[0] = re.sub(r"^benchmarks\n", "", source[0], flags=re.MULTILINE)
    if docname == "tutorials" and not any(TUTORIALS_COPY.glob("*.ipynb")):
        source[0] = re.sub(
            r"```\{toctree\}.*?```", "The first notebooks are being written.", source[0],
            flags=re.DOTALL,
        )


def reread_pages_that_depend_on_files(app: Sphinx, env, added, changed, removed) -> list[str]:
    """Re-read the pages `drop_pages_not_written_yet` edits: their output depends on other files.

    (An incremental build would otherwise keep a tutorials page read before the notebooks
    existed.)
    """
    return [name for name in ("index", "tutorials") if name in env.found_docs]


def describe_constants(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """A public constant without a docstring of its own shows its value, not dict's docstring."""
    builtin_doc = type(obj).__doc__
    is_builtin_doc = bool(builtin_doc) and "\n".join(lines).strip() == builtin_doc.strip()
    if what in ("data", "attribute") and is_builtin_doc:
        value = repr(obj)
        lines[:] = [f"Value: ``{value if len(value) <= 200 else value[:197] + '...'}``"]


def setup(app: Sphinx) -> None:
    app.connect("source-read", drop_pages_not_written_yet)
    app.connect("env-get-outdated", reread_pages_that_depend_on_files)
    app.connect("autodoc-process-docstring", describe_constants)
    app.connect("builder-inited", copy_tutorials)
    app.connect("builder-inited", check_api_page_lists_every_public_name)
