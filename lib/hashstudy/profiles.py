"""What ``smoke``, ``quick`` and ``paper`` mean for each notebook, in one table.

Every notebook takes a ``profile`` parameter and looks its sizes up in a table
of the three profiles: training images, queries, epochs, network widths and so
on. Each paper's table lives in its library module as ``PROFILE_SIZES``
(``baseline_study``, ``dsth``, ``latent``, ``autoencoder``, ``ddh``,
``dsth_journal``, ``crosspaper``), and its notebook names it in its setup cell
(``SIZES = <module>.PROFILE_SIZES``); a notebook may instead define ``SIZES =
{...}`` itself, read as a literal from its source (nothing is executed). This
module finds either and prints them side by side::

    python -m hashstudy.profiles                 # every notebook, Markdown
    python -m hashstudy.profiles 04_ddh 06_cross_paper
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
from pathlib import Path
from typing import Optional, Sequence

from . import config

__all__ = ["PROFILES", "notebook_sizes", "table", "markdown", "main"]

PROFILES = ("smoke", "quick", "paper")


def _value(node: ast.AST):
    """A literal, or ``dict(key=literal, ...)``, as a Python value."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args:
        return {kw.arg: _value(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(v) for v in node.elts]
    return ast.literal_eval(node)


def _sizes_node(source: str) -> Optional[ast.AST]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SIZES"
                                                for t in node.targets):
            return node.value
    return None


def _library_table(source: str) -> Optional[str]:
    """The module of the first ``<module>.PROFILE_SIZES`` that ``source`` names, where
    ``<module>`` is a library module it imports (``from hashstudy import dsth_journal as dj``
    and ``dj.PROFILE_SIZES`` give ``"dsth_journal"``)."""
    tree = ast.parse(source)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "hashstudy":
            aliases.update({a.asname or a.name: a.name for a in node.names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "PROFILE_SIZES" \
                and isinstance(node.value, ast.Name) and node.value.id in aliases:
            return aliases[node.value.id]
    return None


def notebook_sizes(notebook: str) -> dict:
    """``{profile: {setting: value}}`` of ``notebook`` (a name under ``notebooks/``, or the
    path of a notebook file).

    The table is the ``PROFILE_SIZES`` of the library module the notebook names
    (``<module>.PROFILE_SIZES``), or else a literal ``SIZES = {...}`` in its code.
    Raises ``ValueError`` naming the notebooks that exist when there is no such
    notebook, and when the notebook has neither.
    """
    path = Path(notebook)
    if path.suffix != ".ipynb":
        folder = config.repo_root() / "notebooks"
        names = sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb"))
        config.check_choice("notebook", notebook, names)
        path = folder / f"{notebook}.ipynb"
    cells = json.loads(path.read_text())["cells"]
    sources = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            ast.parse("".join(cell["source"]))
        except SyntaxError:  # a cell with shell escapes: no table there
            continue
        sources.append("".join(cell["source"]))
    module = _library_table("\n".join(sources))
    if module is not None:
        table = getattr(importlib.import_module(f"hashstudy.{module}"), "PROFILE_SIZES")
        return {p: dict(v) for p, v in table.items()}
    for source in sources:
        node = _sizes_node(source)
        if node is None:
            continue
        if isinstance(node, ast.Subscript):  # SIZES = {...}[profile]
            node = node.value
        return _value(node)
    raise ValueError(f"{path.stem} names no <module>.PROFILE_SIZES and defines no SIZES table "
                     "of its profiles")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):  # an empty table adds no row: its settings are the defaults
            out.update(_flat(v, f"{name}."))
        else:
            out[name] = v
    return out


def table(notebooks: Optional[Sequence[str]] = None):
    """One row per notebook and setting, one column per profile.

    A cell is empty where that profile does not set the setting (the notebook's
    parameter or default applies); ``None`` is printed as the notebooks write
    it (their comments say what it means there, e.g. "the whole training split").
    """
    import pandas as pd

    folder = config.repo_root() / "notebooks"
    notebooks = notebooks or sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb")
                                    if not p.stem.startswith("99_"))
    rows = []
    for nb in notebooks:
        sizes = notebook_sizes(nb)
        flat = {p: _flat(sizes.get(p, {})) for p in PROFILES}
        settings = list(dict.fromkeys(k for p in PROFILES for k in flat[p]))
        for s in settings:
            rows.append({"notebook": nb, "setting": s,
                         **{p: _text(flat[p][s]) if s in flat[p] else "" for p in PROFILES}})
    return pd.DataFrame(rows, columns=["notebook", "setting", *PROFILES])


def _text(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v)


def markdown(notebooks: Optional[Sequence[str]] = None) -> str:
    """:func:`table` as Markdown, one section per notebook."""
    t = table(notebooks)
    parts = []
    for nb, group in t.groupby("notebook", sort=False):
        lines = [f"### {nb}", "", "| setting | " + " | ".join(PROFILES) + " |",
                 "|---|" + "---|" * len(PROFILES)]
        lines += ["| " + " | ".join([r.setting, *(getattr(r, p) for p in PROFILES)]) + " |"
                  for r in group.itertuples()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hashstudy.profiles",
                                     description="What smoke, quick and paper mean for each notebook.")
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: every notebook)")
    args = parser.parse_args(argv)
    try:
        print(markdown(args.notebooks or None), end="")
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
