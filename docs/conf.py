"""Sphinx configuration of the desmarket documentation (``make docs``).

The site is built offline from the repository, with warnings as errors (``sphinx-build -W --keep-going``):

* pages are MyST Markdown (``*.md``) and the executed notebooks, rendered by myst-nb from their committed
  outputs (``nb_execution_mode = "off"``: nothing is executed, no pandoc is needed);
* the notebooks live in ``notebooks/``, outside this folder; each build copies them into
  ``docs/_generated/notebooks/`` (git-ignored), which the ``notebooks`` page lists;
* the API reference is autodoc of the library's docstrings (numpy style, read by napoleon);
* formulas use MathJax, served from the site itself (``sphinx-mathjax-offline`` copies MathJax 3.2.2 into
  ``_static/mathjax``), so they render without a network; the model page also states every equation in plain
  Unicode text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(DOCS / "_ext"))

import desmarket  # noqa: E402

# -- the executed notebooks, copied in (never executed) ---------------------------------------------------
GENERATED = DOCS / "_generated" / "notebooks"


def _copy_notebooks() -> None:
    """Mirror notebooks/NN_*.ipynb into _generated/notebooks/ (rewriting only what changed).

    The copy differs from the committed notebook in one way: papermill's ``injected-parameters`` cell (the
    values of the last run, which repeat the parameters cell for the reference run) gets myst-nb's
    ``remove-cell`` tag, so the page shows the parameters cell once. Outputs are kept as they are.
    """
    GENERATED.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
    for old in GENERATED.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name, src in wanted.items():
        nb = json.loads(src.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                cell["metadata"]["tags"] = [*tags, "remove-cell"]
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        dst = GENERATED / name
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            dst.write_text(text, encoding="utf-8")


_copy_notebooks()

# -- project ----------------------------------------------------------------------------------------------
project = "desmarket"
author = "the desmarket contributors"
copyright = "the desmarket contributors (code: MIT; the paper: CC BY 4.0, its authors)"
release = version = desmarket.__version__

extensions = [
    "myst_nb",                 # MyST Markdown pages and .ipynb notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax from _static/mathjax, not a CDN (the package's module name has dashes)
    "sphinx.ext.viewcode",
    "plaindocstrings",         # docs/_ext: the plain-text docstrings as valid reST (before napoleon)
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "README.md"]
language = "en"
nitpicky = False

# -- MyST and the notebooks -------------------------------------------------------------------------------
# no dollarmath: "$" is the currency of this project ("5.13 $/day"); formulas use {math} blocks and roles
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
nb_execution_mode = "off"            # render the committed outputs; never execute
nb_output_stderr = "show"
nb_merge_streams = True

# -- API reference ----------------------------------------------------------------------------------------
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# -- HTML -------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"desmarket {release}"
html_static_path = ["_static"]
html_css_files = ["desmarket.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}
