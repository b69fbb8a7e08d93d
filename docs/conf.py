"""Sphinx configuration of the documentation site: ``sphinx-build -W --keep-going -b html docs site``.

Pages are Markdown (MyST); the API reference is autodoc over the installed packages' docstrings; the notebook is
rendered by MyST-NB without executing it (the test suite executes it)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, installed or not

project = "hwnas"
copyright = "the hwnas authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "conf.py"]
html_theme = "furo"
html_title = "hwnas"
html_static_path: list[str] = []

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve (and are checked) like GitHub's anchors
nb_execution_mode = "off"  # tests/ executes experiments/*.ipynb; the site shows it as committed

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
suppress_warnings: list[str] = []
