"""Sphinx configuration: the Markdown pages through MyST, the API from the docstrings through autodoc,
the furo theme. ``make docs`` builds with ``-W`` (a warning is an error) and ``nitpicky`` (every
cross-reference into vae_pyro must resolve)."""

from __future__ import annotations

import importlib
import os
import re
import sys
from importlib.metadata import version as _version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "vae-pyro"
author = "the vae-pyro developers"
release = _version("vae-pyro")
version = release

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]  # myst_nb: MyST pages and notebooks
exclude_patterns = ["_build", "notebooks/.ipynb_checkpoints"]

# The notebooks (docs/notebooks links to ../notebooks, where they are stored without outputs) are
# executed at build time, in their fast mode, so the site shows them with their outputs; the cache
# (in _build) re-executes a notebook only when it changed. A failing cell fails the build.
# `make docs NOTEBOOKS=off` shows them without outputs (a quick build while writing pages).
os.environ["VAE_PYRO_FAST"] = "1"
nb_execution_mode = os.environ.get("VAE_PYRO_DOCS_NOTEBOOKS", "cache")
nb_execution_cache_path = str(Path(__file__).resolve().parent / "_build" / ".jupyter_cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
myst_heading_anchors = 3  # the pages link to sections by their GitHub-style anchors
myst_enable_extensions = ["dollarmath"]

html_theme = "furo"
html_title = f"vae-pyro {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures name torch and Pyro types, which this site does not document
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True, "ignore-module-all": True}
# the packages re-export their modules' names: their pages show the package docstring, each name is
# documented once, in the module that defines it


# Every reference into vae_pyro must resolve; references to other projects (torch, Pyro, the standard
# library) are not checked, as there is no network for intersphinx inventories.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!vae_pyro\b).*\..*"), (r"py:.*", r"(torch|pyro|np|Tensor|Path)")]
nitpick_ignore = [("py:obj", "vae_pyro.registry.T")]  # the TypeVar in Registry's base, Generic[T]
autodoc_inherit_docstrings = False  # torch.nn.Module.forward's docstring is torch's, not ours


# The docstrings are plain text with Sphinx roles (:func:, :class:, :mod:) and simple tables: math such
# as |z| or sigma * eps is written as it reads, not as reST markup, and a formula or a code example is
# an indented block. Before autodoc parses a docstring, _plain_text makes it the reST it reads as:
# an indented block (4 columns or more past the text before it) becomes a literal block, and outside
# literal blocks, ``literals`` and roles the characters reST would read as markup (| and unpaired *)
# become their one-character mathematical look-alikes (so simple tables keep their columns), with
# the blank lines reST wants where the indentation changes. A role is never touched: every
# cross-reference stays live.
_KEEP = re.compile(r"(``.+?``|:\w+:`[^`]+`|`[^`]+`_?)")
_PAIRED = re.compile(r"(?<![\w*\\])(\*\*?)(?=[^\s*])(.+?)(?<=[^\s*\\])\1(?![\w*])")
BAR, STAR = "\u2223", "\u2217"  # DIVIDES and ASTERISK OPERATOR
BORDER = re.compile(r"=+( +=+)*")


def _escape(text: str) -> str:
    out = []
    for i, piece in enumerate(_KEEP.split(text)):
        if i % 2:
            out.append(piece)
            continue
        kept = _PAIRED.split(piece)  # [text, marker, body, text, marker, body, ...]
        for j, part in enumerate(kept):
            if j % 3 == 0:
                out.append(part.replace("|", BAR).replace("*", STAR))
            elif j % 3 == 1:
                out.append(part)
            else:
                out.append(part.replace("|", BAR) + kept[j - 1])
    return "".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _plain_text(app, what, name, obj, options, lines):
    out, in_table, literal_at, text_at = [], False, None, 0
    for line in lines:
        stripped = line.strip()
        if literal_at is not None and stripped and _indent(line) <= literal_at:
            literal_at = None
            if out and out[-1].strip():
                out.append("")
        if BORDER.fullmatch(stripped):
            in_table = True
        elif not stripped and in_table and out and BORDER.fullmatch(out[-1].strip()):
            in_table = False  # a table ends with a border and a blank line
        if literal_at is None and not in_table and stripped:
            if _indent(line) >= text_at + 4 and out:
                out += ["", " " * text_at + "::", ""]  # an expanded "::" alone prints nothing
                literal_at = text_at
            elif out and out[-1].strip() and _indent(line) != _indent(out[-1]):
                out.append("")
        if literal_at is None and stripped:
            text_at = _indent(line)
        out.append(line if literal_at is not None else _escape(line))
        if literal_at is None and stripped.endswith("::"):
            literal_at = _indent(line)
    lines[:] = out


def _resolve(app, env, node, contnode):
    """A docstring names an object as its module sees it: unqualified (``NoClosedFormError``, imported
    from vae_pyro.errors) or through a package that re-exports it (``vae_pyro.checks.CheckResult``).
    Resolve such a name to the one place the object is documented: the object the name imports as,
    else the one documented object whose name ends with it. Anything else stays a warning."""
    if node.get("refdomain") != "py":
        return None
    target, domain = node["reftarget"], env.get_domain("py")
    candidates = [target]
    module = node.get("py:module") or ""
    for base in ([module, *_parents(module)] if "." not in target else []) + [""]:
        obj = _import(f"{base}.{target}" if base else target)
        if obj is not None and getattr(obj, "__module__", None) and getattr(obj, "__qualname__", None):
            candidates.append(f"{obj.__module__}.{obj.__qualname__}")
        elif obj is not None and getattr(obj, "__name__", "").startswith("vae_pyro"):
            candidates.append(obj.__name__)
    names = {name for name, *_ in domain.get_objects()}
    found = [c for c in candidates if c in names and c.startswith("vae_pyro")]
    if not found and "." not in target:
        found = sorted(n for n in names if n.endswith("." + target))
        if len(found) != 1:  # unknown, or ambiguous: a warning
            return None
    if not found:
        return None
    node["reftarget"] = found[0]
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found[0], node, contnode)


def _parents(module):
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _import(dotted):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _plain_text)
    app.connect("missing-reference", _resolve)
