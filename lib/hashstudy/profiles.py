"""What ``smoke``, ``quick`` and ``paper`` mean for each notebook, in one table.

Every notebook takes a ``profile`` parameter and looks its sizes up in a table
of the three profiles: training images, queries, epochs, network widths and so
on. Notebooks 03 and 06 keep that table in the library
(``autoencoder.PROFILE_SIZES``, ``crosspaper.PROFILE_SIZES``); the others
define it in their setup cell as ``SIZES = {...}``. This module reads both
(the notebooks' tables as literals from their source, nothing is executed) and
prints them side by side::

    python -m hashstudy.profiles                 # every notebook, Markdown
    python -m hashstudy.profiles 04_ddh 06_cross_paper
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
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


def notebook_sizes(notebook: str) -> dict:
    """``{profile: {setting: value}}`` of ``notebook`` (a name under ``notebooks/``).

    Raises ``ValueError`` naming the notebooks that exist when there is no such
    notebook, and when the notebook has no ``SIZES`` table.
    """
    folder = config.repo_root() / "notebooks"
    names = sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb"))
    config.check_choice("notebook", notebook, names)
    cells = json.loads((folder / f"{notebook}.ipynb").read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            node = _sizes_node("".join(cell["source"]))
        except SyntaxError:  # a cell with shell escapes: no table there
            continue
        if node is None:
            continue
        if isinstance(node, ast.Subscript):  # SIZES = {...}[profile] or module.PROFILE_SIZES[...]
            node = node.value
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = importlib.import_module(f"hashstudy.{node.value.id}")
            return {p: dict(v) for p, v in getattr(module, node.attr).items()}
        return _value(node)
    raise ValueError(f"{notebook} defines no SIZES table of its profiles")


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
