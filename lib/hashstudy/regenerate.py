"""Regenerate the study's reports: every notebook through papermill, then the summary.

Usage (``make reports`` runs the first form)::

    python -m hashstudy.regenerate --profile quick --jobs 2
    python -m hashstudy.regenerate --only 01_dsth_mm2015 -p k 50 --run k50
    python -m hashstudy.regenerate --force            # ignore the up-to-date check

What it does:

- runs ``notebooks/[0-9]*.ipynb`` (all but ``99_summary``) at the chosen
  profile, ``--jobs`` at a time, each in its own papermill process with the
  machine's cores shared between them; ``99_summary`` runs last;
- writes each executed notebook beside its report
  (``reports/<notebook>/<profile>/<notebook>.ipynb``, or
  ``reports/<notebook>/runs/<run>/<profile>/`` for a named ablation run, which
  never overwrites the profile's report nor another profile's run of the same
  name);
- checks every ``-p NAME VALUE`` against the notebook's ``parameters`` cell
  before anything runs: an unknown name is refused (with the closest known
  one), and VALUE is converted to the type of the parameter's default
  (``true``/``false``, integers, numbers, text as it is, lists and dicts as
  JSON or Python literals) or refused; see :func:`check_params`;
- skips a notebook whose inputs have not changed since its last successful
  run: the notebook file, the library's source, the parameters, and a
  fingerprint of the data root (names, sizes and modification times of its
  files two levels deep);
- keeps going when a notebook fails, and ends with a table of what ran, what
  was skipped (and why, including parts a notebook skipped itself, such as a
  dataset that is not present) and what failed; the exit status is 1 if
  anything failed;
- writes each report in two steps: the notebook runs with its
  :class:`hashstudy.reporting.Report` writing into ``<report folder>/.staging/``
  (:func:`hashstudy.config.written_dir`), and only when it has finished are its
  files moved into the report folder, the files the previous run wrote and this
  one did not are removed, and the executed notebook and the up-to-date record
  (``.inputs.json``, which lists the report's files) are written last. A failed
  or interrupted notebook therefore leaves its previous report exactly as it
  was: no new table beside old ones, no partial executed notebook;
- on Ctrl-C (or SIGTERM) stops the running notebooks, with the same guarantee.

A mistake on the command line (an unknown notebook or parameter, a value of
the wrong type, ``-p`` without ``--only`` and ``--run``) is reported as one
``error: ...`` line on stderr with exit status 2, before anything runs.
``python -m hashstudy.compare`` compares an ablation run with the default
report.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

from . import cache, config

SUMMARY = "99_summary"
RESERVED = {"profile": "--profile", "run": "--run"}  # parameters set by their own options
_RUN_NAME = re.compile(r"^[A-Za-z0-9_.@+\-]+$")  # a plain token, as reporting's metric keys


class UsageError(ValueError):
    """A mistake in how the report command was called (notebook, parameter, value, option).

    The command line prints it as one ``error: ...`` line and exits with status 2."""


@dataclass
class Outcome:
    notebook: str
    status: str  # "ran", "up to date", "failed", "interrupted"
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)  # timings of the shared-inputs step
    detail: str = ""
    skipped_parts: dict = field(default_factory=dict)


def _closest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word``, or ``""``."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _folder(folder: Optional[Path]) -> Path:
    return Path(folder) if folder else config.repo_root() / "notebooks"


def available(folder: Optional[Path] = None) -> list[Path]:
    """Every study notebook (``NN_name.ipynb``) in ``folder`` (default ``notebooks/``)."""
    return sorted(_folder(folder).glob("[0-9][0-9]_*.ipynb"))


def find_notebook(name: str, folder: Optional[Path] = None) -> Path:
    """The notebook called ``name`` (``04_ddh`` or ``04_ddh.ipynb``).

    Raises :class:`UsageError` naming the closest notebook and every available one."""
    found = {p.stem: p for p in available(folder)}
    stem = name[:-len(".ipynb")] if name.endswith(".ipynb") else name
    if stem in found:
        return found[stem]
    raise UsageError(f"unknown notebook {name!r}{_closest(stem, found)}; "
                     f"available: {', '.join(found) or f'none in {_folder(folder)}'}")


def notebooks(only: Optional[list[str]] = None, folder: Optional[Path] = None) -> list[Path]:
    """The study's notebooks in run order (summary last), optionally filtered by name."""
    found = available(folder)
    if only:
        found = list({p: None for p in (find_notebook(n, folder) for n in only)})
    return sorted(found, key=lambda p: (p.stem == SUMMARY, p.stem))


# -- parameters ----------------------------------------------------------------

_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list",
          dict: "dict"}
_EXPECTS = {"bool": "a boolean (true/false)", "int": "an integer", "float": "a number",
            "str": "a string", "list": "a list (JSON or Python, e.g. [16, 32])",
            "dict": 'a dict (JSON or Python, e.g. {"a": 1})'}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Parameter:
    """One assignment of a notebook's ``parameters`` cell.

    ``default`` is the assigned value when it is a Python literal (else the
    expression's source, with ``literal`` False); ``help`` is the line's comment."""
    name: str
    default: object
    help: str = ""
    literal: bool = True

    @property
    def kind(self) -> str:
        """``bool``, ``int``, ``float``, ``str``, ``list``, ``dict``, or ``any`` (a default
        of ``None`` or an expression): the type a value given for it must have."""
        return _KINDS.get(type(self.default), "any") if self.literal else "any"

    @property
    def item_kind(self) -> Optional[str]:
        """For a list default whose items share one scalar type: that type's kind."""
        if self.kind != "list" or not self.default:
            return None
        kinds = {_KINDS.get(type(v)) for v in self.default}
        if kinds == {"int", "float"}:
            return "float"
        kind = kinds.pop() if len(kinds) == 1 else None
        return kind if kind in ("bool", "int", "float", "str") else None

    def expects(self) -> str:
        if self.kind == "list" and self.item_kind:
            words = {"bool": "booleans", "int": "integers", "float": "numbers", "str": "strings"}
            return f"a list of {words[self.item_kind]} (JSON or Python, e.g. {self.default!r})"
        return _EXPECTS.get(self.kind, "a JSON or Python literal")


def parameters(notebook: Union[str, Path], folder: Optional[Path] = None) -> dict[str, Parameter]:
    """The parameters of a notebook (a path, or a name looked up in ``folder``), in order.

    Read from the code cell tagged ``parameters`` with :mod:`ast`: every plain
    assignment ``name = value  # help``. A notebook without that cell has none."""
    path = _notebook_path(notebook, folder)
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    tagged = [c for c in cells if c.get("cell_type") == "code"
              and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return {}
    source = tagged[0].get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    comments = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        try:
            default, literal = ast.literal_eval(value), True
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            default, literal = ast.get_source_segment(source, value), False
        help_ = comments.get(node.end_lineno, comments.get(node.lineno, ""))
        out[target.id] = Parameter(target.id, default, help_, literal)
    return out


def _notebook_path(notebook: Union[str, Path], folder: Optional[Path] = None) -> Path:
    path = Path(notebook)
    if isinstance(notebook, Path) or path.suffix == ".ipynb" and path.exists():
        if not path.is_file():
            raise UsageError(f"no notebook at {path}")
        return path
    return find_notebook(str(notebook), folder)


def _literal(text: str):
    """``text`` read as JSON, else as a Python literal; raises ``ValueError``."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(text) from err


def _conform(p: Parameter, value, notebook: str, shown: str):
    """``value`` as the type of ``p``'s default, or :class:`UsageError` (``shown`` is the
    value as the user wrote it)."""
    def refuse():
        return UsageError(f"parameter {p.name} of {notebook} expects {p.expects()}, got {shown}")

    kind = p.kind
    if kind == "any":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise refuse()
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse()
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise refuse()
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise refuse()
        return value
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise refuse()
        samples = {"bool": False, "int": 0, "float": 0.0, "str": ""}
        item = Parameter(p.name, samples[p.item_kind]) if p.item_kind else None
        try:
            return [_conform(item, v, notebook, shown) if item else v for v in value]
        except UsageError:
            raise refuse() from None
    if kind == "dict":
        if not isinstance(value, dict):
            raise refuse()
        return value
    return value


def _from_text(p: Parameter, text: str, notebook: str):
    """Convert a command-line VALUE for parameter ``p`` (see :func:`check_params`)."""
    shown = repr(text)
    kind = p.kind
    word = text.strip().lower()
    if kind == "bool":
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        value = text  # refused below
    elif kind == "int":
        try:
            value = int(text.strip())
        except ValueError:
            value = text
    elif kind == "float":
        try:
            value = float(text.strip())
        except ValueError:
            value = text
    elif kind == "str":
        value = text
    else:
        try:
            value = _literal(text)
        except ValueError:
            if kind != "any":
                raise UsageError(f"parameter {p.name} of {notebook} expects {p.expects()}, "
                                 f"got {shown}") from None
            value = text  # a documented free-form value stays a string
    return _conform(p, value, notebook, shown)


def check_params(notebook: Union[str, Path], pairs, folder: Optional[Path] = None) -> dict:
    """Validate parameter overrides against a notebook's ``parameters`` cell.

    ``notebook`` is a path or a notebook name; ``pairs`` is a sequence of
    ``(NAME, VALUE)`` as typed on the command line (VALUE a string), or a mapping
    of already-typed values. Returns ``{name: value}`` with every value of the
    type of the parameter's default:

    - booleans: ``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case;
    - integers; numbers (an integer is fine); strings as they are (no quotes needed);
    - lists and dicts as JSON or Python literals (``[16, 32]``, ``['a', 'b']``), whose
      items must have the type of the default's items;
    - a parameter whose default is ``None`` takes whatever its comment documents:
      a JSON or Python literal, else the string.

    Raises :class:`UsageError` (a ``ValueError``) for an unknown name (naming the
    closest and listing the notebook's parameters), ``profile`` or ``run`` (set by
    their own options), a name given twice, or a value that does not convert.
    """
    path = _notebook_path(notebook, folder)
    known = parameters(path)
    typed = isinstance(pairs, Mapping)
    items = list(pairs.items()) if typed else [tuple(p) for p in pairs]
    out: dict = {}
    for item in items:
        if len(item) != 2:
            raise UsageError(f"a parameter override is NAME VALUE, got {' '.join(map(str, item))!r}")
        name, value = item
        if name in RESERVED:
            raise UsageError(f"{name} is not set with -p: use {RESERVED[name]}")
        if name not in known:
            listed = ", ".join(n for n in known if n not in RESERVED) or "none"
            raise UsageError(f"unknown parameter {name!r} of {path.stem}{_closest(name, known)}; "
                             f"its parameters: {listed}")
        if name in out:
            raise UsageError(f"parameter {name} is given twice")
        p = known[name]
        out[name] = (_conform(p, value, path.stem, repr(value)) if typed
                     else _from_text(p, str(value), path.stem))
    return out


def _data_fingerprint() -> list:
    root = config.data_root()
    entries = []
    if root.is_dir():
        for first in sorted(root.iterdir()):
            if first.name == "cache":
                continue
            children = sorted(first.iterdir()) if first.is_dir() else [first]
            for child in children:
                st = child.stat()
                entries.append([str(child.relative_to(root)), st.st_size, int(st.st_mtime)])
    return [str(root), entries]


def _imported_modules(source: str, package: str = "") -> set[str]:
    """Library modules that Python source imports (anywhere, also inside functions), as
    dotted names below ``hashstudy`` (``"dsth"``, ``"plots"``, ``"plots.ddh"``):
    ``from hashstudy import a``, ``import hashstudy.b``, ``from hashstudy.c import x``,
    relative imports (``from . import d``, ``from .e import y``, ``from .. import f``,
    resolved against ``package``, the dotted name of the package the source is in, ``""``
    for the top level), and a literal ``"hashstudy.g"`` passed to ``importlib``
    (docstrings and comments do not count). ``from P import n`` yields both ``P`` and
    ``P.n``, since ``n`` may be a submodule; callers keep the names that exist."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    found: set[str] = set()

    def below(dotted: str) -> Optional[str]:  # "hashstudy.x.y" -> "x.y"; "hashstudy" -> ""
        if dotted == "hashstudy":
            return ""
        return dotted[len("hashstudy."):] if dotted.startswith("hashstudy.") else None

    def add(name: str) -> None:
        parts = [p for p in name.split(".") if p]
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts, up = (package.split(".") if package else []), node.level - 1
                if up > len(parts):  # above the library: not ours
                    continue
                parent = ".".join(parts[:len(parts) - up] + ([node.module] if node.module else []))
            else:
                parent = below(node.module or "")
                if parent is None:
                    continue
            if parent:
                add(parent)
            for alias in node.names:
                add(f"{parent}.{alias.name}" if parent else alias.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                name = below(a.name)
                if name:
                    add(name)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and node.args[0].value.startswith("hashstudy."):
            add(node.args[0].value[len("hashstudy."):])
    return found


def _library_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of the library: ``"dsth"``, ``"plots"`` (the
    package's ``__init__``), ``"plots.ddh"``, and ``"__init__"`` for the top package."""
    lib = Path(__file__).resolve().parent
    files = {}
    for path in lib.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(lib).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def library_modules(nb: Path) -> list[str]:
    """The library modules ``nb`` depends on: those its code names, and everything they
    import from the library in turn (transitively), always with ``__init__``; modules of a
    subpackage by dotted name (``plots.ddh``), with the package itself.

    Read from the source's syntax tree, so an import inside a function counts too."""
    files = _library_files()
    cells = json.loads(nb.read_text()).get("cells", [])
    code = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")
    todo = (_imported_modules(code) & set(files)) | {"__init__"}
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        seen.add(mod)
        todo |= module_imports(mod, files) - seen
    return sorted(seen)


def module_imports(mod: str, files: Optional[dict] = None) -> set[str]:
    """The library modules that library module ``mod`` (a dotted name of
    :func:`_library_files`) imports, itself excluded."""
    files = files if files is not None else _library_files()
    path = files[mod]
    # the package a module's relative imports start from
    package = mod if path.name == "__init__.py" and mod != "__init__" else \
        ("" if mod == "__init__" else mod.rpartition(".")[0])
    return (_imported_modules(path.read_text(), package) & set(files)) - {mod}


def _library_digest(nb: Optional[Path] = None) -> str:
    """Hash of the library files ``nb`` depends on (:func:`library_modules`) and of the
    package's data files (CSV, JSON); of every library file when ``nb`` is None."""
    h = hashlib.sha256()
    lib = Path(__file__).resolve().parent
    files = _library_files()
    wanted = None if nb is None else {files[m] for m in library_modules(nb)}
    for path in sorted(lib.rglob("*")):
        if "__pycache__" in path.parts or path.suffix not in {".py", ".csv", ".json"}:
            continue
        if wanted is not None and path.suffix == ".py" and path not in wanted:
            continue
        h.update(str(path.relative_to(lib)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _read_reports(nb: Path, profile: str) -> list[Path]:
    """Other reports whose numbers ``nb`` shows: for the summary, every notebook's and
    benchmark's ``metrics.json`` and seed-sweep summaries at ``profile``; for a notebook
    that shows verdicts (it uses ``claims``), the benchmarks and its own sweeps."""
    root = config.reports_dir()
    if nb.stem == SUMMARY:
        found = [p for p in root.glob(f"*/{profile}/metrics.json") if p.parts[-3] != SUMMARY]
        found += root.glob(f"*/sweeps/*/{profile}/summary.csv")
    elif "claims" in library_modules(nb):
        found = [root / "benchmarks" / profile / "metrics.json"]
        found += root.glob(f"{nb.stem}/sweeps/*/{profile}/summary.csv")
    else:
        found = []
    return sorted(p for p in found if p.is_file())


def inputs_key(nb: Path, profile: str, params: dict, run: Optional[str]) -> str:
    """What a notebook's report depends on: the notebook, the library modules it uses
    (:func:`library_modules`), the profile, parameters, run name, the data root's
    fingerprint and the other reports it shows (:func:`_read_reports`). A change to
    another method's module does not make it stale; a new benchmark or sweep result
    makes the notebooks and the summary that show its verdicts stale."""
    reports = [(str(p.relative_to(config.reports_dir())), hashlib.sha256(p.read_bytes()).hexdigest())
               for p in _read_reports(nb, profile)]
    return cache.key(hashlib.sha256(nb.read_bytes()).hexdigest(), _library_digest(nb), profile,
                     params, run, _data_fingerprint(), reports)


def output_dir(nb: Path, profile: str, run: Optional[str]) -> Path:
    """Where ``nb`` writes at ``profile``: ``reports/<nb>/<profile>/``, or for an ablation
    run ``reports/<nb>/runs/<run>/<profile>/`` (as :class:`hashstudy.reporting.Report`)."""
    if run:
        return config.reports_dir(nb.stem, "runs", run, profile)
    return config.reports_dir(nb.stem, profile)


def _state_path(nb: Path, profile: str, run: Optional[str]) -> Path:
    return output_dir(nb, profile, run) / ".inputs.json"


def staging_dir(nb: Path, profile: str, run: Optional[str]) -> Path:
    """Where ``nb``'s report is written while it runs (see :func:`publish`)."""
    return output_dir(nb, profile, run) / config.STAGING_NAME


def publish(nb: Path, profile: str, run: Optional[str], executed: Path, key: str) -> list[str]:
    """Move a finished run's report from :func:`staging_dir` into the report folder.

    The staged files replace those of the same name; files that the previous run wrote (as
    listed in ``.inputs.json``) and this one did not are removed, while files that other
    commands put there are kept; then the executed notebook is moved into place and
    ``.inputs.json`` (the inputs' key and this run's files) is written last, so that a run
    stopped in between is not taken as up to date. Returns the report's file names.
    """
    out_dir, staging = output_dir(nb, profile, run), staging_dir(nb, profile, run)
    state = _state_path(nb, profile, run)
    try:
        previous = set(json.loads(state.read_text()).get("files", []))
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        previous = set()
    files = sorted(p.name for p in staging.iterdir()
                   if p.is_file() and not p.name.startswith(".")) if staging.is_dir() else []
    state.unlink(missing_ok=True)  # not up to date while the folder is half old, half new
    for name in files:
        os.replace(staging / name, out_dir / name)
    for name in sorted(previous - set(files)):
        if "/" not in name and not name.startswith("."):
            (out_dir / name).unlink(missing_ok=True)
    os.replace(executed, out_dir / f"{nb.stem}.ipynb")
    cache.write_json(state, {"key": key, "files": files})
    shutil.rmtree(staging, ignore_errors=True)
    return files


def up_to_date(nb: Path, profile: str, params: dict, run: Optional[str]) -> bool:
    state = _state_path(nb, profile, run)
    if not state.exists() or not (output_dir(nb, profile, run) / f"{nb.stem}.ipynb").exists():
        return False
    try:
        return json.loads(state.read_text()).get("key") == inputs_key(nb, profile, params, run)
    except (json.JSONDecodeError, OSError):
        return False


def _skipped_parts(nb: Path, profile: str, run: Optional[str]) -> dict:
    meta = output_dir(nb, profile, run) / "meta.json"
    try:
        return json.loads(meta.read_text()).get("skipped", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _terminal_text(text: str) -> str:
    """What a terminal shows for ``text``: each line keeps what follows its last carriage
    return, cursor escapes go, and lines left empty by them are dropped."""
    lines = []
    for line in _ANSI.sub("", text).split("\n"):
        shown = line.rstrip("\r").rsplit("\r", 1)[-1]
        if shown.strip() or line == "":
            lines.append(shown)
    out = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", out)


def compact_streams(path: Path) -> None:
    """Rewrite an executed notebook's text streams as a terminal would show them.

    Progress bars redraw themselves with carriage returns; stored verbatim, every
    redraw stays in the notebook (megabytes per report). Jupyter renders the same
    final text either way."""
    nb = json.loads(Path(path).read_text())
    changed = False
    for cell in nb.get("cells", []):
        merged = []  # consecutive writes to one stream form one output, as Jupyter shows them
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                last = merged[-1] if merged else None
                if last is not None and last.get("output_type") == "stream" \
                        and last["name"] == out["name"]:
                    last["text"] += text
                    changed = True
                    continue
                out = dict(out, text=text)
            merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and ("\r" in out["text"] or "\x1b[" in out["text"]):
                out["text"] = _terminal_text(out["text"])
                changed = True
        if "outputs" in cell:
            cell["outputs"] = merged
    if changed:
        cache.write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


#: Expensive inputs that several notebooks of a profile share, computed once with all
#: cores before the notebooks start (each notebook would otherwise compute them on its
#: share of the cores while the others wait on the cache lock): (dataset, split,
#: backbone, input size) of :func:`hashstudy.features.dataset_features`. The paper profile
#: runs the backbone at its native 224 px (the papers resize to 224-256 px).
SHARED_FEATURES = {
    "smoke": [],
    "quick": [("cifar10", split, "efficientnet_lite0", 128) for split in ("train", "test")],
    "paper": [("cifar10", split, "efficientnet_lite0", 224) for split in ("train", "test")],
}
#: The notebooks that read :data:`SHARED_FEATURES` (nothing is prepared for the others).
SHARED_USERS = ("00_baselines", "02_latent_layer_cnn", "04_ddh", "05_dsth_tcyb2018", "06_cross_paper")


def prepare_shared(profile: str, echo=print) -> dict:
    """Compute the profile's :data:`SHARED_FEATURES` (a cached set is only loaded).

    Returns ``{"seconds": wall, "step_seconds": {...}, "cache": {...}}`` for the
    timings report; a dataset that is not on this machine is skipped (the
    notebooks say so themselves).
    """
    from . import data, features, timing

    timing.reset()
    t0 = time.time()
    for name, split, backbone, size in SHARED_FEATURES[profile]:
        if not data.available(name, split):
            echo(f"      shared inputs: {name}/{split} not found, skipped")
            continue
        echo(f"      shared inputs: {backbone} features of {name}/{split} at {size} px")
        features.dataset_features(name, split, backbone, size, progress=False)
    steps = timing.totals()
    wall = time.time() - t0
    steps["other"] = round(max(0.0, wall - sum(steps.values())), 1)
    return {"seconds": wall, "step_seconds": steps, "cache": timing.counts()}


def timings_table(outcomes: list, profile: str, run: Optional[str] = None):
    """One row per notebook that ran (and one for the shared inputs): its wall time in
    the run and the seconds per step its report recorded (``meta.json["step_seconds"]``)."""
    import pandas as pd

    from .timing import STEPS

    rows = []
    for o in outcomes:
        if o.status != "ran":
            continue
        if o.notebook == "(shared inputs)":
            meta = o.meta
        else:
            path = config.reports_dir(o.notebook, *(("runs", run) if run else ()), profile) \
                / "meta.json"
            meta = json.loads(path.read_text()) if path.exists() else {}
        steps = meta.get("step_seconds", {})
        rows.append({"notebook": o.notebook, "wall_s": round(o.seconds, 1),
                     **{k: round(float(steps.get(k, 0.0)), 1) for k in (*STEPS, "other")},
                     "cache_hits": int(meta.get("cache", {}).get("cache_hits", 0)),
                     "cache_misses": int(meta.get("cache", {}).get("cache_misses", 0))})
    return pd.DataFrame(rows)


def cache_entries() -> int:
    """How many entries the cache folder holds (lock files aside): 0 before a cold run."""
    root = config.cache_dir()
    if not root.exists():
        return 0
    return sum(1 for f in root.rglob("*") if f.is_file() and not f.name.endswith(".lock"))


def write_timings(outcomes: list, profile: str, total_seconds: float, jobs: int,
                  echo=print, entries_at_start: Optional[int] = None) -> Optional[Path]:
    """Write ``reports/regeneration/<profile>/``: ``timings.csv`` (per notebook and
    step), ``timings.md`` and ``timings.png``, and ``meta.json`` (total wall time, jobs,
    cores, whether the run was cold). Returns the folder, or None if nothing ran.

    ``entries_at_start`` is :func:`cache_entries` before the run: with 0 the run is
    cold even though its notebooks load what the run itself cached (the shared
    features, say); without it, the run is cold only if nothing was loaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .timing import STEPS

    table = timings_table(outcomes, profile)
    if table.empty:
        return None
    out = config.reports_dir("regeneration", profile)
    cols = [*STEPS, "other"]
    misses, hits = int(table.cache_misses.sum()), int(table.cache_hits.sum())
    if entries_at_start == 0 or hits == 0:
        state = "cold"
    else:
        state = "warm" if misses == 0 else "partly cached"
    cache.write_text(out / "timings.csv", table.to_csv(index=False))
    totals = table[["wall_s", *cols]].sum()
    lines = [f"# Regeneration timings ({profile})", "",
             f"`python -m hashstudy.regenerate --profile {profile} --jobs {jobs}`: "
             f"{total_seconds / 60:.1f} min of wall time on {os.cpu_count()} cores, "
             f"{jobs} notebook(s) at a time; caches: {state} ({misses} computed, {hits} loaded"
             + ("; the cache folder was empty at the start, so every load is of an entry "
                "this run computed" if entries_at_start == 0 else "") + ").",
             "", "Seconds per notebook and step (notebooks run in parallel, so the sum of the "
             "notebooks' times exceeds the wall time):", "",
             "| notebook | wall | " + " | ".join(cols) + " | cache computed | cache loaded |",
             "|---" * (len(cols) + 4) + "|"]
    for r in table.itertuples():
        lines.append(f"| {r.notebook} | {r.wall_s:.0f} | "
                     + " | ".join(f"{getattr(r, c):.0f}" for c in cols)
                     + f" | {r.cache_misses} | {r.cache_hits} |")
    lines.append("| **sum** | " + f"{totals.wall_s:.0f} | "
                 + " | ".join(f"{totals[c]:.0f}" for c in cols) + f" | {misses} | {hits} |")
    cache.write_text(out / "timings.md", "\n".join(lines) + "\n")
    cache.write_json(out / "meta.json", {"profile": profile, "jobs": jobs, "cores": os.cpu_count(),
                                         "wall_seconds": round(total_seconds, 1), "caches": state,
                                         "cache_computed": misses, "cache_loaded": hits,
                                         "cache_entries_at_start": entries_at_start,
                                         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(table) + 1.6))
    left = np.zeros(len(table))
    colours = plt.get_cmap("tab10").colors
    for i, c in enumerate(cols):
        ax.barh(table.notebook, table[c] / 60, left=left, color=colours[i], label=c)
        left += table[c].to_numpy() / 60
    ax.invert_yaxis()
    ax.set(xlabel="minutes", title=f"Where regeneration spends its time ({profile}, {state} "
           f"caches; wall time {total_seconds / 60:.1f} min with {jobs} jobs)")
    ax.legend(ncol=len(cols), fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with cache.atomic_path(out / "timings.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    echo(f"timings: {out / 'timings.md'}")
    return out


def longest_first(nbs: list[Path], profile: str, run: Optional[str] = None) -> list[Path]:
    """``nbs`` ordered by the wall time of their last report at ``profile``, longest first
    (notebooks never run keep their order, first): with several jobs, starting the long
    ones first shortens the whole run (the classic longest-processing-time rule)."""
    def last(nb: Path) -> float:
        meta = output_dir(nb, profile, run) / "meta.json"
        try:
            return float(json.loads(meta.read_text()).get("wall_time_s", math.inf))
        except (OSError, ValueError, TypeError):
            return math.inf
    return sorted(nbs, key=lambda nb: -last(nb))


def _papermill_command(nb: Path, out: Path, profile: str, params: dict, run: Optional[str]) -> list:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(nb.parent),
           "-p", "profile", profile, "--no-progress-bar", "--log-level", "WARNING"]
    if run:
        cmd += ["-p", "run", run]
    for name, value in params.items():
        cmd += ["-y", json.dumps({name: value})]
    return cmd


def regenerate(profile: str = "quick", jobs: int = 2, only: Optional[list[str]] = None,
               params: Optional[dict] = None, run: Optional[str] = None, force: bool = False,
               echo=print, folder: Optional[Path] = None) -> list[Outcome]:
    """Run the notebooks; see the module docstring. Returns one :class:`Outcome` each."""
    config.check_profile(profile)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if run is not None and run != "":
        _check_run(run)
    todo = notebooks(only, folder)
    params = dict(params or {})
    for nb in todo:  # the same checks as the command line's, on typed values
        params = check_params(nb, params) if params else params
    main = longest_first([nb for nb in todo if nb.stem != SUMMARY], profile, run)
    summary = [nb for nb in todo if nb.stem == SUMMARY]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads), HASHSTUDY_THREADS=str(threads),
               PYTHONUNBUFFERED="1", TQDM_MININTERVAL="10")  # few progress updates in reports
    outcomes: list[Outcome] = []
    running: dict = {}
    total = len(todo)
    started = 0

    def start(nb: Path) -> None:
        nonlocal started
        started += 1
        if not force and up_to_date(nb, profile, params, run):
            outcomes.append(Outcome(nb.stem, "up to date", detail="inputs unchanged since last run",
                                    skipped_parts=_skipped_parts(nb, profile, run)))
            echo(f"[{started}/{total}] {nb.stem}: up to date, skipped")
            return
        out_dir = output_dir(nb, profile, run)
        key = inputs_key(nb, profile, params, run)  # the inputs this run starts from
        staging = staging_dir(nb, profile, run)
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed outright
        tmp = out_dir / f".{nb.stem}.running.ipynb"
        log = open(out_dir / f".{nb.stem}.log", "w")
        proc = subprocess.Popen(_papermill_command(nb, tmp, profile, params, run),
                                env=dict(env, **{config.STAGING_ENV: str(staging)}),
                                stdout=log, stderr=subprocess.STDOUT)
        running[nb] = (proc, tmp, log, time.time(), key)
        echo(f"[{started}/{total}] {nb.stem}: running (profile {profile}"
             f"{', run ' + run if run else ''})")

    def finish(nb: Path) -> None:
        proc, tmp, log, t0, key = running.pop(nb)
        log.close()
        seconds = time.time() - t0
        out_dir = output_dir(nb, profile, run)
        log_path = out_dir / f".{nb.stem}.log"
        if proc.returncode == 0:
            compact_streams(tmp)
            publish(nb, profile, run, tmp, key)
            log_path.unlink(missing_ok=True)
            outcomes.append(Outcome(nb.stem, "ran", seconds,
                                    skipped_parts=_skipped_parts(nb, profile, run)))
            echo(f"      {nb.stem}: done in {seconds:.0f} s")
        else:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(staging_dir(nb, profile, run), ignore_errors=True)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            outcomes.append(Outcome(nb.stem, "failed", seconds,
                                    detail=f"see {log_path}: " + " | ".join(tail)[-600:]))
            echo(f"      {nb.stem}: FAILED after {seconds:.0f} s (log: {log_path})")

    def drain(limit: int) -> None:
        while len(running) >= limit:
            for nb, (proc, *_rest) in list(running.items()):
                if proc.poll() is not None:
                    finish(nb)
            if len(running) >= limit:
                time.sleep(0.5)

    stale = [nb for nb in main if force or not up_to_date(nb, profile, params, run)]
    if any(nb.stem in SHARED_USERS for nb in stale) and SHARED_FEATURES[profile]:
        echo("[0] shared inputs: computed once with all cores")
        t0 = time.time()
        shared = prepare_shared(profile, echo)
        outcomes.append(Outcome("(shared inputs)", "ran", time.time() - t0, meta=shared))
    try:
        for nb in main:
            drain(jobs)
            start(nb)
        drain(1)
        for nb in summary:
            start(nb)
            drain(1)
            if outcomes[-1].status in ("ran", "up to date") and not run:
                publish_summary(profile, output_dir(nb, profile, run) / f"{nb.stem}.ipynb", echo)
    except KeyboardInterrupt:
        # a second Ctrl-C or SIGTERM must not cut the clean-up short: `timeout` sends SIGTERM
        # to its command and then to the command's whole process group, a user presses twice
        with _signals_held():
            for nb, (proc, *_rest) in list(running.items()):
                proc.send_signal(signal.SIGINT)
            for nb, (proc, tmp, log, t0, _key) in list(running.items()):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()
                tmp.unlink(missing_ok=True)
                shutil.rmtree(staging_dir(nb, profile, run), ignore_errors=True)
                outcomes.append(Outcome(nb.stem, "interrupted", time.time() - t0))
            running.clear()
            echo("interrupted: finished reports are intact; unfinished notebooks left no files "
                 "and their previous reports as they were")
        raise
    return outcomes


@contextlib.contextmanager
def _signals_held():
    """Ignore Ctrl-C (SIGINT) and SIGTERM within the block, then restore their handlers.

    Outside the main thread, where handlers cannot be set, nothing changes."""
    held = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in held}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def summary_page(profile: str) -> Path:
    """Where the static summary page of ``profile`` is written."""
    name = "summary.html" if profile == "quick" else f"summary-{profile}.html"
    return config.reports_dir() / name


def publish_summary(profile: str, executed: Path, echo=print) -> None:
    """Render the executed summary notebook to HTML and refresh the README's results."""
    from . import summary

    page = summary.render_html(executed, summary_page(profile))
    echo(f"      summary page: {page}")
    if profile == "quick":
        changed = summary.update_readme(profile)
        echo(f"      README results section {'updated' if changed else 'unchanged'}")


def summary_table(outcomes: list[Outcome]) -> str:
    lines = [f"{'notebook':<24} {'status':<12} {'time':>7}  notes"]
    for o in outcomes:
        notes = [o.detail] if o.detail else []
        notes += [f"skipped {part}: {why}" for part, why in o.skipped_parts.items()]
        lines.append(f"{o.notebook:<24} {o.status:<12} {o.seconds:>6.0f}s  {'; '.join(notes)}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ran", "up to date", "failed")}
    lines.append(f"{counts['ran']} ran, {counts['up to date']} up to date, {counts['failed']} failed")
    return "\n".join(lines)


def _check_run(run: str) -> str:
    if not _RUN_NAME.match(run) or set(run) == {"."}:
        raise UsageError(f"run name {run!r} must be a plain token (letters, digits, _.@+-)")
    return run


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes raise :class:`UsageError` instead of exiting."""

    def error(self, message):
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hashstudy.regenerate", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=config.PROFILES,
                        help="smoke, quick (default) or paper")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="override a parameter of the --only notebook; VALUE is converted "
                             "to the type of the parameter's default (true/false, numbers, "
                             "text as is, lists and dicts as JSON or Python)")
    parser.add_argument("--run", help="name of an ablation run: outputs go to "
                                      "reports/<nb>/runs/<run>/<profile>/")
    parser.add_argument("--force", action="store_true", help="run even if inputs are unchanged")
    return parser


@dataclass
class Command:
    """A checked report command: what :func:`regenerate` will be called with."""
    profile: str
    jobs: int
    only: Optional[list[str]]
    params: dict
    run: Optional[str]
    force: bool
    notebooks: list[Path]


def parse_command(argv: list[str], folder: Optional[Path] = None) -> Command:
    """Parse and check the report command's arguments without running anything.

    Checks the options, the notebook names, every ``-p`` parameter and value
    (:func:`check_params`) and the run name; raises :class:`UsageError` with
    one line of explanation. ``main`` runs what this returns."""
    args = _parser().parse_args(argv)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.run is not None:
        _check_run(args.run)
    if (args.param or args.run) and not args.only:
        raise UsageError("-p and --run need --only NOTEBOOK")
    todo = notebooks(args.only, folder) if args.only else []
    params: dict = {}
    for nb in todo:
        mine = check_params(nb, args.param)
        for name, value in mine.items():
            if name in params and params[name] != value:
                raise UsageError(f"parameter {name} means {params[name]!r} in one notebook and "
                                 f"{value!r} in {nb.stem}: run them separately")
            params[name] = value
    if params and not args.run:
        raise UsageError("-p needs --run NAME, so the profile's default report is not overwritten")
    only = [nb.stem for nb in todo] if args.only else None
    return Command(args.profile, args.jobs, only, params, args.run, args.force, todo)


@contextlib.contextmanager
def interrupted_by_sigterm():
    """Within the block, SIGTERM interrupts like Ctrl-C (a ``KeyboardInterrupt``).

    ``kill PID``, a job scheduler's stop and a container's shutdown send
    SIGTERM; without this, Python would die at once and leave an unfinished
    notebook (``.<name>.running.ipynb``) and its kernel behind. With it, the
    same clean-up as Ctrl-C runs: each running notebook is interrupted, its
    partial files are removed, and finished reports stay intact. The previous
    handler is restored on leaving (only the main thread may set handlers).
    """
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    try:
        cmd = parse_command(sys.argv[1:] if argv is None else list(argv))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t0 = time.time()
    entries_at_start = cache_entries()
    try:
        with interrupted_by_sigterm():
            outcomes = regenerate(cmd.profile, cmd.jobs, cmd.only, cmd.params, cmd.run,
                                  cmd.force)
    except KeyboardInterrupt:
        return 130
    print()
    print(summary_table(outcomes))
    wall = time.time() - t0
    print(f"total wall time: {wall:.0f} s")
    if cmd.only is None and not cmd.run:
        write_timings(outcomes, cmd.profile, wall, cmd.jobs, entries_at_start=entries_at_start)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
