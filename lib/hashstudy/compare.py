"""Compare two reports' metrics: an ablation run against the default report, say.

Usage::

    python -m hashstudy.compare 04_ddh 04_ddh/runs/k1_5
    python -m hashstudy.compare 04_ddh:smoke 04_ddh/runs/k1_5:smoke --prefix cifar10/ddh --top 10
    python -m hashstudy.compare reports/04_ddh/quick /tmp/other/04_ddh/quick --csv diff.csv

A and B are report folders (holding ``metrics.json``; the file itself is fine
too) or shorthands under the reports folder (``HASHSTUDY_REPORTS``, default
``reports/``): ``NOTEBOOK[:PROFILE]`` for the profile's default report and
``NOTEBOOK/runs/RUN[:PROFILE]`` for an ablation run; the profile defaults to
``quick`` (``NOTEBOOK/PROFILE`` and ``NOTEBOOK/runs/RUN/PROFILE``, the folders'
own names, work too).

Prints the parameters that differ between the two runs (from ``meta.json``),
then every metric key the two reports share with A's value, B's value and
B - A, largest absolute change first, and how many keys only one of them has.
``--prefix`` keeps the keys that start with a prefix (repeatable), ``--top N``
keeps the N largest changes, ``--csv PATH`` writes the same rows as a CSV file.
A missing report is one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from . import cache, config

__all__ = ["Comparison", "ReportNotFound", "compare", "resolve", "main"]


class ReportNotFound(ValueError):
    """A report that does not exist (or has no readable ``metrics.json``)."""


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _listing(folder: Path, what: str, keep=lambda name: True) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and keep(p.name)) \
        if folder.is_dir() else []
    return f"; {what}: {', '.join(names)}" if names else ""


def resolve(spec: Union[str, Path]) -> Path:
    """The folder of the report that ``spec`` names (see the module docstring).

    Raises :class:`ReportNotFound` with what does exist nearby."""
    spec_text = str(spec)
    path = Path(spec_text).expanduser()
    if path.name == "metrics.json" and path.is_file():
        return path.parent
    if (path / "metrics.json").is_file():
        return path
    explicit = spec_text.startswith(("/", ".", "~"))
    if not explicit:
        try:
            return _shorthand(spec_text)
        except ReportNotFound:
            if not path.is_dir():
                raise
    if path.is_dir():
        raise ReportNotFound(f"{_shown(path)} has no metrics.json"
                             f"{_listing(path, 'its folders')}")
    raise ReportNotFound(f"no report folder {spec_text} (no such folder)")


def _shorthand(spec_text: str) -> Path:
    root = config.reports_dir()
    name, _, given = spec_text.partition(":")
    profile = given or "quick"
    parts = [p for p in name.strip("/").split("/") if p]
    if profile not in config.PROFILES:
        raise ReportNotFound(f"no report {spec_text!r}: unknown profile {profile!r} "
                             f"(one of {', '.join(config.PROFILES)})")
    if len(parts) in (2, 4) and parts[-1] in config.PROFILES and not given:
        *parts, profile = parts  # NOTEBOOK/PROFILE, NOTEBOOK/runs/RUN/PROFILE: the folders' names
    if len(parts) == 1:
        notebook, folder = parts[0], root / parts[0] / profile
    elif len(parts) == 3 and parts[1] == "runs":
        notebook, folder = parts[0], root.joinpath(*parts, profile)
    else:
        raise ReportNotFound(f"no report {spec_text!r}: neither a report folder nor "
                             "NOTEBOOK[:PROFILE] or NOTEBOOK/runs/RUN[:PROFILE]")
    if (folder / "metrics.json").is_file():
        return folder
    if not (root / notebook).is_dir():
        known = [p.name for p in root.iterdir() if p.is_dir()]
        close = difflib.get_close_matches(notebook, known, n=1, cutoff=0.6)
        hint = (f" (did you mean {close[0]!r}?)" if close else "") + \
            _listing(root, f"reports in {_shown(root)}")
    elif len(parts) == 3 and (folder.parent).is_dir():
        hint = _listing(folder.parent, f"profiles of run {parts[2]}")
    elif len(parts) == 3:
        hint = _listing(root / notebook / "runs", f"runs of {notebook}")
    else:
        hint = _listing(root / notebook, f"profiles of {notebook}",
                        lambda n: n in config.PROFILES)
    raise ReportNotFound(f"no report at {_shown(folder)} (no metrics.json){hint}")


def _load(folder: Path, name: str) -> dict:
    try:
        data = json.loads((folder / name).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ReportNotFound(f"cannot read {_shown(folder / name)}: {err}") from None
    if not isinstance(data, dict):
        raise ReportNotFound(f"{_shown(folder / name)} is not a JSON object")
    return data


def _number(value) -> Optional[float]:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


@dataclass
class Comparison:
    """Two reports' metrics side by side.

    ``rows`` holds ``(key, a, b, b - a)`` for the shared keys, largest absolute
    change first (a change that cannot be computed, e.g. a missing value, last);
    ``only_a`` and ``only_b`` the keys one report has and the other lacks."""
    a: Path
    b: Path
    rows: list = field(default_factory=list)
    only_a: list = field(default_factory=list)
    only_b: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)  # name -> (value in A, value in B)
    shared: int = 0  # keys both reports have (before ``top``)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["key", "a", "b", "difference"])
        for key, a, b, diff in self.rows:
            writer.writerow([key] + ["" if v is None else repr(v) for v in (a, b, diff)])
        return buf.getvalue()

    def table(self) -> str:
        def cell(v) -> str:
            if v is None:
                return "-"
            if isinstance(v, bool):
                return str(v).lower()
            return f"{v:.4f}" if isinstance(v, float) else str(v)

        def change(v) -> str:
            return "-" if v is None else f"{v:+.4f}"

        width = max([len("key")] + [len(r[0]) for r in self.rows])
        lines = [f"{'key':<{width}}  {'A':>10}  {'B':>10}  {'B - A':>10}"]
        for key, a, b, diff in self.rows:
            lines.append(f"{key:<{width}}  {cell(a):>10}  {cell(b):>10}  {change(diff):>10}")
        return "\n".join(lines)


def compare(a: Union[str, Path], b: Union[str, Path], prefix: Union[str, Sequence[str], None] = None,
            top: Optional[int] = None) -> Comparison:
    """Compare the metrics of reports ``a`` and ``b`` (folders or shorthands, see :func:`resolve`).

    ``prefix`` (one or several) keeps the keys starting with it; ``top`` keeps
    the ``top`` largest changes."""
    fa, fb = resolve(a), resolve(b)
    ma, mb = _load(fa, "metrics.json"), _load(fb, "metrics.json")
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix or [])
    if prefixes:
        ma = {k: v for k, v in ma.items() if any(k.startswith(p) for p in prefixes)}
        mb = {k: v for k, v in mb.items() if any(k.startswith(p) for p in prefixes)}
    rows = []
    for key in ma.keys() & mb.keys():
        va, vb = ma[key], mb[key]
        na, nb = _number(va), _number(vb)
        rows.append((key, va, vb, None if na is None or nb is None else nb - na))
    rows.sort(key=lambda r: (r[3] is None, -abs(r[3]) if r[3] is not None else 0.0, r[0]))
    shared = len(rows)
    if top is not None:
        rows = rows[:max(top, 0)]
    pa = _load(fa, "meta.json").get("parameters", {})
    pb = _load(fb, "meta.json").get("parameters", {})
    missing = object()
    params = {name: (pa.get(name, missing), pb.get(name, missing))
              for name in sorted(pa.keys() | pb.keys()) if pa.get(name, missing) != pb.get(name, missing)}
    params = {n: tuple(None if v is missing else v for v in pair) for n, pair in params.items()}
    return Comparison(fa, fb, rows, sorted(ma.keys() - mb.keys()), sorted(mb.keys() - ma.keys()),
                      params, shared)


def _brief(value, width: int = 60) -> str:
    text = "(absent)" if value is None else json.dumps(value)
    return text if len(text) <= width else text[:width - 3] + "..."


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ReportNotFound(message)


def main(argv=None) -> int:
    parser = _Parser(prog="python -m hashstudy.compare", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", metavar="A", help="report folder, NOTEBOOK[:PROFILE] or "
                                               "NOTEBOOK/runs/RUN[:PROFILE]")
    parser.add_argument("b", metavar="B", help="the report to compare with A (B - A is shown)")
    parser.add_argument("--top", type=int, metavar="N", help="only the N largest changes")
    parser.add_argument("--prefix", action="append", metavar="P",
                        help="only keys starting with P (repeatable)")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="also write the rows as CSV")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        if args.top is not None and args.top < 1:
            raise ReportNotFound(f"--top must be at least 1, got {args.top}")
        result = compare(args.a, args.b, prefix=args.prefix, top=args.top)
    except ReportNotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"A: {_shown(result.a)}")
    print(f"B: {_shown(result.b)}")
    if result.parameters:
        print("parameters that differ (A -> B):")
        for name, (va, vb) in result.parameters.items():
            print(f"  {name}: {_brief(va)} -> {_brief(vb)}")
    print()
    if result.rows:
        print(result.table())
    else:
        print("no shared metric keys" + (" with that prefix" if args.prefix else ""))
    shown = f"{result.shared} shared key{'s' if result.shared != 1 else ''}"
    if len(result.rows) < result.shared:
        shown += f" ({len(result.rows)} largest changes shown)"
    print(f"\n{shown}; {len(result.only_a)} only in A, {len(result.only_b)} only in B")
    if args.csv:
        cache.write_text(args.csv, result.csv())
        print(f"table written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
