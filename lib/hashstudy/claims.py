"""The claims ledger: does each paper's claim hold, claim by claim?

``claims.csv`` beside this module lists every claim of the five papers, one
row each: where the paper makes it, the claim in one sentence, the report
that holds the evidence and a *rule* that decides it from that report's
``metrics.json`` (and, for numbers printed in a paper, from
``paper_numbers.csv``). :func:`evaluate` applies the rules and gives every
claim one of four verdicts (:data:`VERDICTS`):

``reproduced``
    every comparison of the rule holds;
``partly``
    some hold and some do not, or every difference is too small to call
    (inside the rule's margin or the seed spread);
``not reproduced``
    no comparison holds (and at least one fails);
``not tested``
    the evidence does not exist, and the reason says why: the report is
    absent (the profile has not been run), the data is absent (the
    notebook recorded a skip in ``meta.json``), keys are missing from the
    report, no benchmark has been run yet, the paper's number is not
    transcribed, or the claim cannot be tested here at all (a fixed reason
    in the ledger).

Tolerances and margins are part of the ledger and were fixed from the
paper's claim, not from the numbers a run happened to produce, so a
regenerated report can change a verdict.

The ledger's columns
--------------------
``id``
    short stable slug (lower case, digits, ``.`` and ``-``), unique.
``paper``
    the notebook that reproduces the paper (``01_dsth_mm2015``, ...).
``where``, ``claim``
    where the paper makes the claim; the claim in one sentence.
``notebook``, ``profile``
    the report that holds the evidence, ``reports/<notebook>/<profile>/``.
    ``notebook`` may also be ``benchmarks`` (timing measurements, written to
    ``reports/benchmarks/<profile>/``). ``profile`` is the smallest profile
    whose reports can decide the claim: evaluating at a smaller profile
    (``smoke`` for a ``quick`` claim) gives "not tested".
``rule`` and its arguments ``keys``, ``than``, ``value``, ``source``,
``over``, ``tol``, ``margin``, ``by``, ``needs``, ``reason``
    see below.
``note``
    the setting: what differs from the paper.

The rule language
-----------------
Every rule compares *our* numbers, named by metric keys (``keys``), with a
reference: the paper's number for the same key (``value = paper``), a fixed
number (``value = 0.9``), or other keys of the same report (``than``).

Keys are written with two kinds of braces. ``{a,b,c}`` (with commas) stands
for each of the alternatives, so ``cifar10/{lsh,itq}/32/map@1000`` names two
keys. ``{name}`` (no comma) is a variable of ``over``: ``over = bits=16 32 64``
makes one comparison per value, and several variables
(``ds=mnist cifar10; bits=16 48``) are taken in step, the i-th values
together. Within one step, every key of ``keys`` is compared with every key
of ``than``. ``keys`` and ``than`` may hold several templates separated by
spaces.

``within``
    ``|ours - reference| <= tol``. The reference defaults to the paper.
``at_least`` / ``at_most``
    ``ours >= reference - tol`` / ``ours <= reference + tol``.
``above``
    ours is ahead of the reference by more than ``by`` (default 0):
    ``d = ours - reference - by``. The comparison holds when
    ``d > margin``, fails when ``d < -margin`` and is *undecided* in
    between. When the report holds seed-spread keys (``<key>_std``, the
    standard deviation over seeds) for either side, the margin is at least
    twice their combined spread (the root of the sum of their squares),
    so spread keys added to a report later are used without changing the
    ledger. A notebook's seed sweeps (``python -m hashstudy.sweep NOTEBOOK
    --seeds 0,1,2``, written to ``reports/<nb>/sweeps/<name>/<profile>/
    summary.csv``) supply such keys: for every metric they hold, the verdict
    compares the *mean over seeds* and widens the margin by their standard
    deviations.
``faster``
    as ``above`` for timings, where lower is better:
    ``d = reference - ours - by``.
``until_recall``
    an "above until recall" key (the largest recall up to which one
    precision-recall curve is at or above another) reaches the recall the
    paper claims: ``ours >= reference - tol`` (``tol`` defaults to 0, the
    reference to the paper).
``not_tested``
    always "not tested", for the fixed ``reason`` (e.g. the data set is not
    on this machine and no notebook can run it); ``keys`` may name what
    would decide it.

The paper's number for a key is its row in ``paper_numbers.csv`` under the
claim's paper or evidence notebook; ``source`` picks one when several
sources print a number for the key (e.g. ``Table 2``). ``needs`` lists data parts (names used in
``meta.json``'s ``skipped``) without which the claim is not tested; a key
whose first part is a skipped data set is treated the same way.

A rule with several comparisons gives ``reproduced`` when all hold,
``partly`` when at least one holds but not all (or when all are
undecided), and ``not reproduced`` when none holds and at least one fails.

Use :func:`load` for the validated ledger, :func:`evaluate` for the
verdicts, :func:`for_notebook` inside a paper's notebook, :func:`markdown`
for the README and :func:`html` for the summary page;
``python -m hashstudy.claims`` prints the verdict table.
"""
from __future__ import annotations

import html as _html
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import config, reporting

__all__ = ["VERDICTS", "RULES", "PAPERS", "NOTEBOOKS", "COLUMNS", "COLOURS", "load", "evaluate",
           "for_notebook", "style", "markdown", "html", "expand", "keys_of", "main"]

VERDICTS = ("reproduced", "partly", "not reproduced", "not tested")
RULES = ("within", "at_least", "at_most", "above", "faster", "until_recall", "not_tested")
PAPERS = ("01_dsth_mm2015", "02_latent_layer_cnn", "03_tanh_autoencoder", "04_ddh",
          "05_dsth_tcyb2018")
BENCHMARKS = "benchmarks"
NOTEBOOKS = ("00_baselines",) + PAPERS + ("06_cross_paper", BENCHMARKS)
COLUMNS = ("id", "paper", "where", "claim", "notebook", "profile", "rule", "keys", "than", "value",
           "source", "over", "tol", "margin", "by", "needs", "reason", "note")
OUTPUT_COLUMNS = ["id", "paper", "where", "claim", "verdict", "compared", "reason", "notebook",
                  "profile"]
COLOURS = {"reproduced": "#d4edda", "partly": "#fff3cd", "not reproduced": "#f8d7da",
           "not tested": "#e2e3e5"}
SPREAD_FACTOR = 2.0  # an "above" margin is at least this many combined seed standard deviations
LEDGER = Path(__file__).with_name("claims.csv")

_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_BRACE = re.compile(r"\{([^{}]*)\}")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# what each rule needs besides keys: a reference and numeric arguments
_NEEDS_REF = {"at_least", "at_most", "above", "faster"}  # within, until_recall: paper by default
_NEEDS_TOL = {"within", "at_least", "at_most"}
_NEEDS_MARGIN = {"above", "faster"}


# -- ledger ----------------------------------------------------------------

def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _number(text: str, what: str, problems: list, minimum: Optional[float] = None):
    if text == "":
        return None
    try:
        x = float(text)
    except ValueError:
        problems.append(f"{what} must be a number, got {text!r}")
        return None
    if math.isnan(x) or (minimum is not None and x < minimum):
        problems.append(f"{what} must be a number >= {minimum:g}, got {text!r}")
        return None
    return x


def _parse_over(text: str) -> dict:
    """``"bits=16 32; ds=a b"`` -> ``{"bits": ["16", "32"], "ds": ["a", "b"]}`` (checked)."""
    out = {}
    if not text:
        return out
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq or not _VAR.match(name):
            raise ValueError(f"over: {part!r} is not 'name=value value ...'")
        if name in out:
            raise ValueError(f"over: variable {name!r} given twice")
        vals = values.split()
        if not vals:
            raise ValueError(f"over: variable {name!r} has no values")
        out[name] = vals
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise ValueError("over: variables taken in step must have as many values each, got "
                         + ", ".join(f"{k} ({len(v)})" for k, v in out.items()))
    return out


def _variables(templates: list[str]) -> set:
    names = set()
    for t in templates:
        for inner in _BRACE.findall(t):
            if "," not in inner:
                names.add(inner)
    return names


def expand(template: str, assignment: Optional[dict] = None) -> list[str]:
    """Expand one key template of the ledger into metric keys.

    Parameters
    ----------
    template : str
        A key with ``{name}`` variables and ``{a,b,...}`` alternatives.
    assignment : dict, optional
        The value of each variable (one step of a row's ``over``).

    Returns
    -------
    list of str
        One key per combination of alternatives, in order.

    Raises
    ------
    ValueError
        When a variable has no value or a key comes out malformed.

    Examples
    --------
    >>> expand("cifar10/{lsh,itq}/{bits}/map@1000", {"bits": "32"})
    ['cifar10/lsh/32/map@1000', 'cifar10/itq/32/map@1000']
    """
    assignment = assignment or {}

    def var(match):
        inner = match.group(1)
        if "," in inner:
            return match.group(0)
        if inner not in assignment:
            raise ValueError(f"key {template!r} uses {{{inner}}}, which 'over' does not define")
        return str(assignment[inner])

    text = _BRACE.sub(var, template)
    pieces = re.split(r"(\{[^{}]*\})", text)
    options = [p[1:-1].split(",") if p.startswith("{") and p.endswith("}") else [p] for p in pieces]
    out = ["".join(combo) for combo in itertools.product(*options)]
    for key in out:
        if "{" in key or "}" in key or not key or any(not part for part in key.split("/")):
            raise ValueError(f"key template {template!r} expands to a malformed key {key!r}")
    return out


def _check_row(row: dict) -> list[str]:
    """Problems of one ledger row (empty when it is valid)."""
    problems = []
    for col in ("id", "paper", "where", "claim", "notebook", "profile", "rule"):
        if not row[col]:
            problems.append(f"'{col}' is empty")
    if row["id"] and not _ID.match(row["id"]):
        problems.append(f"id {row['id']!r} must be lower-case letters, digits, '.' and '-'")
    if row["paper"] and row["paper"] not in PAPERS:
        problems.append(f"unknown paper {row['paper']!r}; known: {', '.join(PAPERS)}")
    if row["notebook"] and row["notebook"] not in NOTEBOOKS:
        problems.append(f"unknown notebook {row['notebook']!r}; known: {', '.join(NOTEBOOKS)}")
    if row["profile"] and row["profile"] not in config.PROFILES:
        problems.append(f"unknown profile {row['profile']!r}; known: {', '.join(config.PROFILES)}")
    rule = row["rule"]
    if rule and rule not in RULES:
        problems.append(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        return problems
    keys, than, value = row["keys"].split(), row["than"].split(), row["value"]
    if rule == "not_tested":
        if not row["reason"]:
            problems.append("rule 'not_tested' needs a 'reason'")
    else:
        if row["reason"]:
            problems.append(f"'reason' is only for rule 'not_tested', not {rule!r}")
        if not keys:
            problems.append(f"rule {rule!r} needs 'keys'")
    if than and value:
        problems.append("give either 'than' (keys) or 'value' (a number or 'paper'), not both")
    if rule in _NEEDS_REF and not than and not value:
        problems.append(f"rule {rule!r} needs a reference: 'than' (keys) or 'value' "
                        "(a number or 'paper')")
    if than and rule == "until_recall":
        problems.append("rule 'until_recall' compares with a recall ('value'), "
                        "not with keys ('than')")
    if value and value != "paper":
        _number(value, "'value'", problems)
    if rule in _NEEDS_TOL and row["tol"] == "":
        problems.append(f"rule {rule!r} needs 'tol'")
    if rule in _NEEDS_MARGIN and row["margin"] == "":
        problems.append(f"rule {rule!r} needs 'margin'")
    _number(row["tol"], "'tol'", problems, minimum=0.0)
    _number(row["margin"], "'margin'", problems, minimum=0.0)
    _number(row["by"], "'by'", problems)
    for col, rules in (("by", _NEEDS_MARGIN), ("margin", _NEEDS_MARGIN),
                       ("tol", _NEEDS_TOL | {"until_recall"})):
        if row[col] and rule != "not_tested" and rule not in rules:
            problems.append(f"'{col}' is only for rule(s) {', '.join(sorted(rules))}, not {rule!r}")
    if row["source"] and not (value == "paper" or (rule in ("within", "until_recall") and not value
                                                   and not than)):
        problems.append("'source' picks a paper number: it needs value 'paper'")
    try:
        over = _parse_over(row["over"])
    except ValueError as err:
        problems.append(str(err))
        return problems
    used = _variables(keys + than)
    if used - set(over):
        problems.append("keys use " + ", ".join(f"{{{v}}}" for v in sorted(used - set(over)))
                        + ", which 'over' does not define")
    elif set(over) - used:
        problems.append("'over' defines " + ", ".join(sorted(set(over) - used))
                        + ", which no key uses")
    else:
        try:
            for step in _steps(over):
                for t in keys + than:
                    expand(t, step)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _steps(over: dict) -> list[dict]:
    if not over:
        return [{}]
    n = len(next(iter(over.values())))
    return [{k: v[i] for k, v in over.items()} for i in range(n)]


def _validate(frame):
    missing = [c for c in ("id", "paper", "where", "claim", "notebook", "profile", "rule", "keys")
               if c not in frame.columns]
    if missing:
        raise ValueError(f"claims ledger lacks the column(s) {', '.join(missing)}")
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
    for col in frame.columns:
        frame[col] = [_text(v) for v in frame[col]]
    seen = set()
    for i, row in enumerate(frame.to_dict("records")):
        name = row["id"] or f"<row {i + 1}>"
        problems = _check_row(row)
        if row["id"] in seen:
            problems.insert(0, "the id is used by an earlier row too")
        seen.add(row["id"])
        if problems:
            raise ValueError(f"claims ledger row {name!r}: " + "; ".join(problems))
    return frame.reset_index(drop=True)


def load(path=None):
    """The claims ledger as a validated DataFrame.

    Parameters
    ----------
    path : str or Path, optional
        A ledger CSV; default ``claims.csv`` beside this module.

    Returns
    -------
    pandas.DataFrame
        One row per claim, every column a string (empty where not given).

    Raises
    ------
    ValueError
        Naming the first bad row's id and what is wrong with it: duplicate
        id, unknown paper, notebook, profile or rule, a missing or malformed
        argument, a key template that does not expand.
    """
    import pandas as pd

    frame = pd.read_csv(path or LEDGER, dtype=str, keep_default_na=False)
    return _validate(frame)


# -- evidence --------------------------------------------------------------

@dataclass
class _Outcome:
    status: str  # "pass", "fail" or "undecided"
    text: str
    slack: float  # signed distance from the decision boundary (for the tightest comparison)


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x: float) -> str:
    """A number as printed in ``compared``: 3 decimals (2 significant digits below 0.01)."""
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if 0 < a < 0.01:
        return f"{x:.2g}"
    return f"{x:.3f}"


def _short_source(source: str) -> str:
    m = re.search(r"(Table [IVX\d]+|Fig\. ?\d+)", source)
    return m.group(1) if m else source


def _labeller(keys: list[str]):
    """Short labels for the keys of one claim: the parts in which they differ."""
    split = [k.split("/") for k in keys]
    if len({len(s) for s in split}) == 1:
        keep = [i for i in range(len(split[0])) if len({s[i] for s in split}) > 1]
        return lambda k: "/".join(k.split("/")[i] for i in keep)
    common = set.intersection(*(set(s) for s in split))
    return lambda k: "/".join(part for part in k.split("/") if part not in common)


def _profile_rank(profile: str) -> int:
    return config.PROFILES.index(profile)


class _Context:
    """Reports and paper numbers, each read once per evaluation."""

    def __init__(self, profile: str, folders: Optional[dict] = None):
        self.profile = profile
        self.root = config.reports_dir()
        self.folders = {nb: Path(f) for nb, f in (folders or {}).items()}
        self._reports = {}
        self.papers = reporting.paper_numbers()

    def where(self, notebook: str) -> str:
        """The report's ``metrics.json`` as a reader finds it: ``reports/<nb>/<profile>/...``."""
        folder = self.folders.get(notebook)
        if folder is None:
            return f"reports/{notebook}/{self.profile}/metrics.json"
        try:
            return f"reports/{(folder / 'metrics.json').relative_to(self.root).as_posix()}"
        except ValueError:
            return str(folder / "metrics.json")

    def report(self, notebook: str):
        """``(metrics or None, meta)`` of ``reports/<notebook>/<profile>/`` (nothing is created)."""
        if notebook not in self._reports:
            folder = self.folders.get(notebook, self.root / notebook / self.profile)
            folder = config.written_dir(folder)  # a running notebook reads its own new report
            metrics = _read_json(folder / "metrics.json")
            if metrics is not None and notebook not in self.folders:
                metrics = {**_seed_sweeps(self.root / notebook, self.profile), **metrics}
            self._reports[notebook] = (metrics, _read_json(folder / "meta.json") or {})
        return self._reports[notebook]

    def paper_value(self, row: dict, key: str):
        """(value, source) of the paper's number for ``key``, or (None, why)."""
        p = self.papers
        sel = p[(p["key"] == key) & p["paper"].isin([row["paper"], row["notebook"]])]
        if row["source"]:
            sel = sel[sel["source"].str.contains(row["source"], regex=False)]
        values = sorted(set(float(v) for v in sel["value"]))
        if not values:
            return None, "missing"
        if len(values) > 1:
            return None, "ambiguous (" + ", ".join(f"{s}: {v:g}" for s, v in
                                                  zip(sel["source"], sel["value"])) + ")"
        return values[0], _short_source(str(sel["source"].iloc[0]))


def _seed_sweeps(folder: Path, profile: str) -> dict:
    """``<key>_mean``, ``<key>_std``, ``<key>_n`` from the notebook's seed sweeps.

    A seed sweep (``python -m hashstudy.sweep NOTEBOOK --seeds 0,1,2``, no grid)
    writes ``sweeps/<name>/<profile>/summary.csv`` with one row per metric;
    when several sweeps hold a key, the one with most seeds wins.
    """
    import csv

    out, best = {}, {}
    for path in sorted(folder.glob(f"sweeps/*/{profile}/summary.csv")):
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if sorted(reader.fieldnames or []) != ["mean", "metric", "n", "std"]:
                continue  # a grid sweep: its cells are other settings, not seeds
            for rec in reader:
                try:
                    n = int(float(rec["n"]))
                    mean, std = float(rec["mean"]), float(rec["std"])
                except (TypeError, ValueError):
                    continue
                key = rec["metric"]
                if n < 2 or n <= best.get(key, 0) or math.isnan(std):
                    continue
                best[key] = n
                out.update({f"{key}_mean": mean, f"{key}_std": std, f"{key}_n": n})
    return out


def _value(metrics: dict, key: str) -> tuple[float, str]:
    """A key's value for a verdict: the mean over seeds where a seed sweep has one."""
    n = metrics.get(f"{key}_n")
    if _is_number(metrics.get(f"{key}_mean")) and _is_number(n) and n >= 2:
        return float(metrics[f"{key}_mean"]), f" (mean of {int(n)} seeds)"
    return float(metrics[key]), ""


def _reference(row: dict):
    """The reference of a row: ``"key"``, ``"number"`` or ``"paper"``."""
    if row["than"]:
        return "key"
    if row["value"] and row["value"] != "paper":
        return "number"
    return "paper"


def _comparisons(row: dict) -> list[tuple[str, tuple]]:
    """Every (our key, reference) pair of a row.

    A reference is ``("key", k)``, ``("number", x)`` or ``("paper",)``.
    """
    kind = _reference(row)
    pairs = []
    for step in _steps(_parse_over(row["over"])):
        keys = [k for t in row["keys"].split() for k in expand(t, step)]
        if kind == "key":
            refs = [("key", k) for t in row["than"].split() for k in expand(t, step)]
        elif kind == "number":
            refs = [("number", float(row["value"]))]
        else:
            refs = [("paper",)]
        pairs += [(k, r) for k in keys for r in refs]
    return pairs


def keys_of(row) -> list[str]:
    """Every metric key one ledger row names, ``keys`` and ``than``, expanded, in order.

    Parameters
    ----------
    row : dict or pandas.Series
        A row of :func:`load`.
    """
    row = {c: _text(row.get(c, "")) for c in COLUMNS}
    out = []
    for step in _steps(_parse_over(row["over"])):
        for template in row["keys"].split() + row["than"].split():
            out += expand(template, step)
    return list(dict.fromkeys(out))


def _test_text(row: dict) -> str:
    """What decides a row, in words, with its key templates (for 'not tested' reasons)."""
    keys = " and ".join(row["keys"].split())
    kind = _reference(row)
    ref = {"key": " and ".join(row["than"].split()), "number": row["value"],
           "paper": "the paper's number"}[kind]
    tol, by = row["tol"] or "0", row["by"]
    return {"within": f"{keys} within {tol} of {ref}",
            "at_least": f"{keys} at least {ref}" + (f" - {tol}" if tol != "0" else ""),
            "at_most": f"{keys} at most {ref}" + (f" + {tol}" if tol != "0" else ""),
            "above": f"{keys} above {ref}" + (f" by more than {by}" if by else ""),
            "faster": f"{keys} below {ref}" + (f" by more than {by}" if by else ""),
            "until_recall": f"{keys} reaching {ref}"}[row["rule"]]


def _clauses(row: dict) -> tuple[str, str]:
    """(holds, fails): what one comparison of the row asserts, and its negation."""
    ref = {"key": "the reference key", "number": row["value"], "paper": "the paper's number"}[
        _reference(row)]
    tol = row["tol"] or "0"
    by = f" by more than {row['by']} plus the margin" if row["by"] else " by more than the margin"
    minus = f" minus {tol}" if tol != "0" else ""
    plus = f" plus {tol}" if tol != "0" else ""
    return {"within": (f"ours is within {tol} of {ref}", f"ours is not within {tol} of {ref}"),
            "at_least": (f"ours reaches {ref}{minus}", f"ours falls short of {ref}{minus}"),
            "at_most": (f"ours stays at or below {ref}{plus}", f"ours exceeds {ref}{plus}"),
            "above": (f"ours leads {ref}{by}", f"ours does not lead {ref}{by}"),
            "faster": (f"ours is faster than {ref}{by}", f"ours is not faster than {ref}{by}"),
            "until_recall": ("ours stays above the other curve up to the claimed recall",
                             "ours falls below the other curve before the claimed recall"),
            }[row["rule"]]


def _spread(metrics: dict, key: str) -> Optional[float]:
    v = metrics.get(f"{key}_std")
    return float(v) if _is_number(v) else None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _data_absent(parts: list[str], skipped: dict):
    parts = list(dict.fromkeys(parts))
    why = str(skipped[parts[0]]).strip().rstrip(".")
    return ("not tested", "", f"Data absent ({', '.join(parts)}): {why}.")


def _judge(row: dict, ctx: _Context):
    """(verdict, compared, reason) of one validated ledger row."""
    rule, nb = row["rule"], row["notebook"]
    if rule == "not_tested":
        return "not tested", "", row["reason"]
    if _profile_rank(ctx.profile) < _profile_rank(row["profile"]):
        return ("not tested", "", f"The claim is decided on {row['profile']} reports or larger; "
                f"{ctx.profile} reports are too small to decide it.")
    metrics, meta = ctx.report(nb)
    where = ctx.where(nb)
    if metrics is None:
        if nb == BENCHMARKS:
            return ("not tested", "", f"No benchmark has been run yet: {where} does not exist; "
                    f"it would be decided by {_test_text(row)}.")
        return ("not tested", "", f"No {ctx.profile} report for {nb}: {where} does not exist "
                f"(the {ctx.profile} profile has not been run).")
    skipped = meta.get("skipped") or {}
    needed = [part for part in row["needs"].split() if part in skipped]
    if needed:
        return _data_absent(needed, skipped)
    pairs = _comparisons(row)
    ours = list(dict.fromkeys([k for k, _ in pairs] + [r[1] for _, r in pairs if r[0] == "key"]))
    missing = [k for k in ours if not _is_number(metrics.get(k))]
    if missing:
        absent = [k.split("/")[0] for k in missing if k.split("/")[0] in skipped]
        if absent:
            return _data_absent(absent, skipped)
        shown = ", ".join(missing[:3])
        if len(missing) > 3:
            shown += f" (+{len(missing) - 3} more)"
        return "not tested", "", f"Keys missing from {where}: {shown}."
    paper = {}
    for k, r in pairs:
        if r[0] == "paper" and k not in paper:
            value, info = ctx.paper_value(row, k)
            if value is None:
                return ("not tested", "",
                        f"The paper's number for {k} is {info} in paper_numbers.csv.")
            paper[k] = (value, info)

    label = _labeller(ours)
    tol = float(row["tol"] or 0)
    margin = float(row["margin"] or 0)
    by = float(row["by"] or 0)
    outcomes, spread_used = [], False
    for k, r in pairs:
        (a, sa), la = _value(metrics, k), label(k)
        if r[0] == "key":
            b, sb = _value(metrics, r[1])
            left, right = f"{la or k} {_fmt(a)}{sa}", f"{label(r[1]) or r[1]} {_fmt(b)}{sb}"
        else:
            b = r[1] if r[0] == "number" else paper[k][0]
            left = f"{la + ': ' if la else ''}ours {_fmt(a)}{sa}"
            right = f"{b:g}" if r[0] == "number" else f"paper {_fmt(b)} ({paper[k][1]})"
        if rule == "within":
            d = abs(a - b)
            ok = d <= tol + 1e-12
            text = f"{left} vs {right}, |diff| {_fmt(d)} {'<=' if ok else '>'} {tol:g}"
            outcomes.append(_Outcome("pass" if ok else "fail", text, tol - d))
        elif rule in ("at_least", "until_recall"):
            ok = a >= b - tol - 1e-12
            if rule == "until_recall":
                name = la.removeprefix("above_").removesuffix("_until_recall")
                left = f"{name + ': ' if name else ''}above until recall {a:g}"
                right = f"claimed {b:g}" + (f" ({paper[k][1]})" if r[0] == "paper" else "")
            text = f"{left} {'>=' if ok else '<'} {right}" + (f" - {tol:g}" if tol else "")
            outcomes.append(_Outcome("pass" if ok else "fail", text, a - b + tol))
        elif rule == "at_most":
            ok = a <= b + tol + 1e-12
            text = f"{left} {'<=' if ok else '>'} {right}" + (f" + {tol:g}" if tol else "")
            outcomes.append(_Outcome("pass" if ok else "fail", text, b + tol - a))
        else:  # above, faster: a lead beyond the margin, widened by any seed spread
            lead = (a - b) if rule == "above" else (b - a)
            d = lead - by
            spreads = [s for s in (_spread(metrics, k),
                                   _spread(metrics, r[1]) if r[0] == "key" else None)
                       if s is not None]
            m = margin
            if spreads:
                spread_used = True
                m = max(margin, SPREAD_FACTOR * math.sqrt(sum(s * s for s in spreads)))
            status = "pass" if d > m else "fail" if d < -m else "undecided"
            text = (f"{left} vs {right}: {lead:+.3g}{' faster' if rule == 'faster' else ''}"
                    + (f", needs {by:+g}" if by else "")
                    + f" (margin {m:.2g}{', undecided' if status == 'undecided' else ''})")
            outcomes.append(_Outcome(status, text, d - m))
    return _aggregate(row, outcomes, margin, spread_used)


def _compared(outcomes: list[_Outcome]) -> str:
    if len(outcomes) <= 4:
        return "; ".join(o.text for o in outcomes)
    n_pass = sum(o.status == "pass" for o in outcomes)
    others = [o for o in outcomes if o.status != "pass"]
    if not others:
        tight = min(outcomes, key=lambda o: o.slack)
        return f"all {len(outcomes)} hold; tightest: {tight.text}"
    shown = "; ".join(o.text for o in others[:3])
    more = f"; +{len(others) - 3} more not holding" if len(others) > 3 else ""
    return f"{n_pass} of {len(outcomes)} hold; {shown}{more}"


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def _aggregate(row: dict, outcomes: list[_Outcome], margin: float, spread_used: bool):
    n = len(outcomes)
    p = sum(o.status == "pass" for o in outcomes)
    f = sum(o.status == "fail" for o in outcomes)
    u = n - p - f
    holds, fails = _clauses(row)
    spread = (f"at least {SPREAD_FACTOR:g} x the seed spread of the report's _std keys"
              if spread_used else
              f"the stated margin {margin:g} stands for the seed and numerical spread; the report "
              "has no seed-spread key")
    inside = f"inside the margin ({spread})"
    every = "both" if n == 2 else f"all {n}"
    if p == n:
        verdict = "reproduced"
        reason = f"{holds[0].upper()}{holds[1:]}." if n == 1 else f"In {every} comparisons {holds}."
    elif u == n:
        verdict = "partly"
        reason = ("Undecided: the difference is " if n == 1 else
                  f"Undecided: in {every} comparisons the difference is ") + f"{inside}."
    elif p == 0:
        verdict = "not reproduced"
        if n == 1:
            reason = f"{fails[0].upper()}{fails[1:]}."
        else:
            reason = (("In neither comparison " if n == 2 else f"In none of the {n} comparisons ")
                      + holds
                      + (f"; {_count(u, 'is', 'are')} {inside}" if u else "") + ".")
    else:
        verdict = "partly"
        reason = (f"In {p} of {n} comparisons {holds}"
                  + (f"; {_count(f, 'fails', 'fail')}" if f else "")
                  + (f"; {_count(u, 'is', 'are')} undecided, {inside}" if u else "") + ".")
    return verdict, _compared(outcomes), reason


def _ledger(ledger):
    if ledger is None:
        return load()
    if isinstance(ledger, (str, Path)):
        return load(ledger)
    return _validate(ledger.copy())


def evaluate(profile: str = "quick", ledger=None, folders: Optional[dict] = None, *,
             largest: bool = False):
    """The verdict of every claim on the reports of one profile.

    Parameters
    ----------
    profile : {"smoke", "quick", "paper"}
        Which reports to read: ``reports/<notebook>/<profile>/metrics.json``
        and ``meta.json`` under :func:`hashstudy.config.reports_dir` (which
        honours ``HASHSTUDY_REPORTS``). A claim whose ledger profile is larger
        than this is "not tested".
    ledger : pandas.DataFrame or str or Path, optional
        The ledger (validated again) or a path to one; default :func:`load`.
    folders : {notebook: folder}, optional
        Read these notebooks' reports from the given folders instead (an
        ablation run's folder, for example), at the same profile.
    largest : bool, default False
        Judge each claim on the largest profile, from ``profile`` up, whose
        report of the claim's notebook exists and holds the claim's evidence (a
        committed ``paper`` report decides a claim before the ``quick`` one); a
        profile's scale run (:mod:`hashstudy.scale`, part of the profile that
        fits this machine) is read after the profile's own report. The
        ``profile`` column names the report each verdict comes from:
        ``"paper"``, or ``"paper (run main-config)"`` for a scale run.

    Returns
    -------
    pandas.DataFrame
        One row per claim, in ledger order, with columns ``id, paper, where,
        claim, verdict, compared, reason, notebook, profile``: ``verdict`` is
        one of :data:`VERDICTS`, ``compared`` the numbers compared (empty when
        not tested), ``reason`` one sentence saying why, ``profile`` the
        profile read.
    """
    import pandas as pd

    config.check_profile(profile)
    frame = _ledger(ledger)
    contexts = {p: _Context(p, folders) for p in config.PROFILES
                if _profile_rank(p) >= _profile_rank(profile)}
    run_contexts: dict = {}  # (notebook, run name, profile) -> _Context of a scale run
    rows = []
    for row in frame.to_dict("records"):
        used, ctx, judged = profile, contexts[profile], None
        if largest and row["rule"] != "not_tested":
            used, ctx, judged = _largest(row, contexts, run_contexts, folders)
        verdict, compared, reason = judged or _judge(row, ctx)
        rows.append({"id": row["id"], "paper": row["paper"], "where": row["where"],
                     "claim": row["claim"], "verdict": verdict, "compared": compared,
                     "reason": reason, "notebook": row["notebook"], "profile": used})
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def _largest(row, contexts: dict, run_contexts: dict, folders: Optional[dict]):
    """``(label, context, judged or None)``: the largest report that decides ``row``.

    Candidates, largest profile first: the profile's own report of the claim's
    notebook, then its scale runs (:data:`hashstudy.scale.SCALE_RUNS`: a named
    run of part of the profile); a run ``closer_than_report`` (it follows the
    paper's setting more closely, e.g. fine-tunes where the report does not) comes
    before the profile's report; a run that names its ``claims`` is a candidate for
    those only. The first candidate that exists and holds the
    claim's evidence (its verdict is not "not tested") decides; when none does,
    the largest existing one that names absent data speaks (the data, not a
    restricted run, is what is missing), else the largest existing one (and says
    what it lacks).
    """
    from . import scale

    nb = row["notebook"]
    first = absent = None
    for p in sorted(contexts, key=_profile_rank, reverse=True):
        if _profile_rank(p) < _profile_rank(row["profile"]):
            continue
        closer, after = [], []  # the profile's scale runs, either side of its own report
        if not folders or nb not in folders:
            for run in scale.runs_for(nb, p):
                if run.claims and row["id"] not in run.claims:
                    continue
                key = (nb, run.run, p)
                if key not in run_contexts:
                    run_contexts[key] = _Context(p, {nb: scale.report_folder(run)})
                (closer if run.closer_than_report else after).append((run.label,
                                                                      run_contexts[key]))
        candidates = closer + [(p, contexts[p])] + after
        for label, ctx in candidates:
            if ctx.report(nb)[0] is None:
                continue
            judged = _judge(row, ctx)
            if judged[0] != "not tested":
                return label, ctx, judged
            first = first or (label, ctx, judged)
            if absent is None and str(judged[2]).startswith("Data absent"):
                absent = (label, ctx, judged)
    if first is not None:  # set whenever ``absent`` is
        return absent or first
    return min(contexts, key=_profile_rank), contexts[min(contexts, key=_profile_rank)], None


# -- presentation ----------------------------------------------------------

def _counts(frame) -> str:
    counts = frame["verdict"].value_counts()
    return ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS)


def style(frame):
    """Colour a verdict table by verdict.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows of :func:`evaluate` (any columns, ``verdict`` among them).

    Returns
    -------
    pandas.io.formats.style.Styler
        Each row's background: reproduced green, partly amber, not
        reproduced red, not tested grey (:data:`COLOURS`); no index.
    """
    def colour(row):
        return [f"background-color: {COLOURS.get(row['verdict'], '')}"] * len(row)

    return frame.style.apply(colour, axis=1).hide(axis="index")


def for_notebook(notebook: str, profile: str = "quick", styled: bool = False, ledger=None,
                 report_dir=None):
    """The verdicts of one paper's claims, ready to show in its notebook.

    Parameters
    ----------
    notebook : str
        A notebook name (``"04_ddh"``); its claims are those of its paper and
        those whose evidence it holds.
    profile : str
        Reports to read (see :func:`evaluate`).
    styled : bool
        Return a colour-coded Styler (see :func:`style`) instead of the frame.
    ledger : optional
        As in :func:`evaluate`.
    report_dir : path, optional
        Where this notebook's own report is (a notebook passes its
        ``Report.dir``, so that an ablation run is judged on its own numbers);
        default ``reports/<notebook>/<profile>/``.

    Returns
    -------
    pandas.DataFrame or pandas.io.formats.style.Styler
        Columns ``id, where, claim, verdict, compared, reason``.
    """
    config.check_choice("notebook", notebook, NOTEBOOKS)
    frame = evaluate(profile, ledger, {notebook: report_dir} if report_dir else None)
    sel = frame[(frame["paper"] == notebook) | (frame["notebook"] == notebook)]
    sel = sel[["id", "where", "claim", "verdict", "compared", "reason"]].reset_index(drop=True)
    return style(sel) if styled else sel


def _md(text: str) -> str:
    return str(text).replace("\n", " ").replace("|", "\\|")


def markdown(profile: str = "quick", ledger=None) -> str:
    """The verdict table as Markdown, for the README.

    Parameters
    ----------
    profile, ledger
        As in :func:`evaluate`.

    Returns
    -------
    str
        A header, a separator and one row per claim: id, paper, where, the
        claim, the verdict, the numbers compared, the reason (``|``
        escaped) and the profile of the report that decided it (the largest
        one at or above ``profile`` that exists: ``evaluate(largest=True)``).
    """
    frame = evaluate(profile, ledger, largest=True)
    lines = ["| claim | paper | where | statement | verdict | compared | reason | profile |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in frame.itertuples():
        lines.append(f"| `{r.id}` | {r.paper} | {_md(r.where)} | {_md(r.claim)} | "
                     f"**{r.verdict}** | {_md(r.compared)} | {_md(r.reason)} | {r.profile} |")
    return "\n".join(lines)


def html(profile: str = "quick", ledger=None) -> str:
    """The verdict table as HTML, for the summary page.

    Parameters
    ----------
    profile, ledger
        As in :func:`evaluate`.

    Returns
    -------
    str
        A one-line count of each verdict (``<p class="verdict-counts">``),
        then ``<table id="verdicts">`` with one
        ``<tr data-claim="<id>" class="verdict-<verdict>">`` per claim
        (spaces in the verdict become ``-``: ``verdict-not-tested``),
        coloured by inline CSS (:data:`COLOURS`); the claim's cell carries
        the ledger's note as its ``title``; the last cell names the profile
        whose report decided the claim (``evaluate(largest=True)``).
    """
    led = _ledger(ledger)
    frame = evaluate(profile, led, largest=True)
    notes = dict(zip(led["id"], led["note"]))
    esc = _html.escape
    out = [f'<p class="verdict-counts">Claims on the {esc(profile)} reports (or a larger '
           f'profile\'s, where one exists; the last column names it): '
           + " &middot; ".join(
               f'<span class="count-{v.replace(" ", "-")}" style="background:{COLOURS[v]};'
               f'padding:0 0.4em">{int((frame.verdict == v).sum())} {v}</span>' for v in VERDICTS)
           + "</p>",
           '<table id="verdicts" style="border-collapse:collapse;font-size:90%">',
           "<thead><tr>" + "".join(f'<th style="text-align:left;border-bottom:1px solid #999;'
                                   f'padding:2px 6px">{h}</th>'
                                   for h in ("claim", "paper", "where", "statement", "verdict",
                                             "compared", "reason", "profile"))
           + "</tr></thead>",
           "<tbody>"]
    cell = 'style="text-align:left;vertical-align:top;padding:2px 6px;border-bottom:1px solid #ddd"'
    for r in frame.itertuples():
        cls = "verdict-" + r.verdict.replace(" ", "-")
        title = f' title="{esc(notes[r.id])}"' if notes.get(r.id) else ""
        out.append(
            f'<tr data-claim="{esc(r.id)}" class="{cls}" style="background:{COLOURS[r.verdict]}">'
            f"<td {cell}><code>{esc(r.id)}</code></td><td {cell}>{esc(r.paper)}</td>"
            f"<td {cell}>{esc(r.where)}</td>"
            f"<td {cell}{title}>{esc(r.claim)}</td>"
            f"<td {cell}><strong>{esc(r.verdict)}</strong></td><td {cell}>{esc(r.compared)}</td>"
            f"<td {cell}>{esc(r.reason)}</td><td {cell}>{esc(r.profile)}</td></tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def main(argv=None) -> int:
    """``python -m hashstudy.claims [--profile quick] [--format text|markdown|html]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hashstudy.claims",
                                     description="Print the verdict of every claim of the study.")
    parser.add_argument("--profile", default="quick", choices=config.PROFILES)
    parser.add_argument("--format", default="text", choices=["text", "markdown", "html"])
    args = parser.parse_args(argv)
    if args.format == "markdown":
        print(markdown(args.profile))
    elif args.format == "html":
        print(html(args.profile))
    else:
        frame = evaluate(args.profile)
        width = max(len(i) for i in frame["id"])
        for r in frame.itertuples():
            detail = r.compared if r.verdict != "not tested" else r.reason
            print(f"{r.id:<{width}}  {r.verdict:<14}  {detail}")
        print(f"\n{len(frame)} claims on the {args.profile} reports: {_counts(frame)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
