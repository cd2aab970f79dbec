"""Sphinx configuration for the dustgp documentation (``make docs``; warnings are errors)."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from dustgp import config
from dustgp._version import __version__
from dustgp.cli import build_parser

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "dustgp"

project = "dustgp"
author = "dustgp developers"
copyright = "2026, dustgp developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "generated"]  # generated/ pages are included by others

html_theme = "furo"
html_title = f"dustgp {release}"
html_static_path = ["_static"]

# Docstrings are numpydoc; their type lines name numpy and astropy types that are not cross-linked (the build
# runs offline, so no intersphinx inventories are fetched).
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # the numpydoc sections carry types and units; signatures stay short


def _public_modules() -> dict[str, list[str]]:
    """Every public module and package, in file order, each with its public submodules (a package's page documents
    the names it exports, then says what each of its modules holds): the API reference follows the code."""
    found: dict[str, list[str]] = {}
    for path in sorted([*SRC.glob("*.py"), *SRC.glob("*/__init__.py")]):
        if path.parent == SRC and path.name == "__init__.py":
            continue  # the package root: its names are those of the modules below
        package = path.name == "__init__.py"
        name = path.parent.name if package else path.stem
        if name.startswith("_"):
            continue
        ast.parse(path.read_text())  # a syntax error shows here, not as a confusing autodoc warning
        found[name] = []
        if package:
            for sub in sorted(path.parent.glob("*.py")):
                if not sub.stem.startswith("_"):
                    ast.parse(sub.read_text())
                    found[name].append(sub.stem)
    return dict(sorted(found.items()))


def _api_page(name: str, submodules: list[str]) -> str:
    title = f"dustgp.{name}"
    text = f"{title}\n{'=' * len(title)}\n\n.. automodule:: dustgp.{name}\n"
    if not submodules:
        return text
    # the package's own names (its __all__), documented once here under their public path
    text += "   :imported-members:\n\nModules\n-------\n"
    for sub in submodules:
        text += f"\n.. automodule:: dustgp.{name}.{sub}\n   :no-members:\n"
    return text


def _write_api_pages() -> None:
    out = HERE / "api" / "generated"
    out.mkdir(parents=True, exist_ok=True)
    modules = _public_modules()
    for name, submodules in modules.items():
        text = _api_page(name, submodules)
        page = out / f"{name}.rst"
        if not page.exists() or page.read_text() != text:  # unchanged pages keep their time stamps
            page.write_text(text)
    for stale in out.glob("*.rst"):
        if stale.stem not in modules:
            stale.unlink()


_write_api_pages()


# ----- the CLI and run-file references are generated from the code, so they cannot drift from it ---------------
def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _cli_reference() -> str:
    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:  # argparse keeps its sub-parsers here and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += [f"### dustgp {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def _describe(tp: object) -> str:
    if isinstance(tp, dict):
        return "a table: " + ", ".join(f"`{k}` ({_describe(v)})" for k, v in tp.items())
    return config._expected(tp)


def _toml_reference() -> str:
    tables = {
        "catalog": config.catalog_keys(),
        "catalog (source = \"gaia-dr3\")": config.gaia_catalog_keys(),
        "simulate": config.simulate_keys(),
        "grid": config.GRID_KEYS,
        "fit": config.fit_keys(),
        "predict": config.PREDICT_KEYS,
        "output": config.OUTPUT_KEYS,
    }
    parts = []
    for table, keys in tables.items():
        parts += [f"### [{table}]", "", "| key | value |", "| --- | --- |"]
        parts += [f"| `{key}` | {_describe(tp).replace('|', '/')} |" for key, tp in keys.items()]
        parts.append("")
    return "\n".join(parts)


_write_text(HERE / "generated" / "cli.md", _cli_reference())
_write_text(HERE / "generated" / "toml.md", _toml_reference())
