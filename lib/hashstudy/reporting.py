"""Reports: metrics JSON, CSV tables, figures, and paper-vs-ours tables.

Each notebook writes under ``reports/<notebook>/<profile>/`` (or, for a named
ablation run, ``reports/<notebook>/runs/<run>/<profile>/``):

``metrics.json``
    A flat JSON object ``{"<dataset>/<method>/<bits>/<metric>": value}`` whose
    keys are stable: the summary notebook, the README table and outside checks
    read them.
``meta.json``
    What the numbers depend on: parameters, protocol records (name, seed,
    sizes), data sources, library versions, wall time.
``*.csv``, ``*.png``
    Tables and figures.

Every file is written atomically (see :mod:`hashstudy.cache`). Under the report
command (``python -m hashstudy.regenerate``) the files go to a staging folder
(:func:`hashstudy.config.written_dir`) and reach the report folder together, only when
the notebook has finished: an interrupted or failed run leaves the previous report
exactly as it was, with no table of the new run beside it.

The papers' own numbers live in one data file, ``paper_numbers.csv`` beside
this module, transcribed once with the table or figure they come from; see
:func:`paper_numbers` and :func:`compare_with_paper`.
"""
from __future__ import annotations

import io
import json
import math
import platform
import re
import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from . import cache, config, timing

__all__ = ["Report", "paper_numbers", "compare_with_paper", "metric_key", "load_metrics"]

_KEY_PART = re.compile(r"^[A-Za-z0-9_.@+\-]+$")


def metric_key(*parts) -> str:
    """Join key parts with ``/``, checking each is a plain token (no spaces or slashes)."""
    out = []
    for p in parts:
        p = str(p)
        if not _KEY_PART.match(p):
            raise ValueError(f"metric key part {p!r} must match {_KEY_PART.pattern}")
        out.append(p)
    return "/".join(out)


def _plain(value):
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"metric values must be numbers, got {type(value).__name__}: {value!r}")


class Report:
    """Collects one notebook run's results and writes them atomically.

    Parameters
    ----------
    notebook : str
        Notebook name, e.g. ``"00_baselines"``.
    profile : {"smoke", "quick", "paper"}
    run : str, optional
        Name of an ablation run; its outputs go to ``runs/<run>/<profile>/`` so
        neither the profile's default report nor the same run at another
        profile is ever overwritten.
    """

    def __init__(self, notebook: str, profile: str, run: Optional[str] = None):
        config.check_profile(profile)
        if run is not None and run != "" and (not _KEY_PART.match(run) or set(run) == {"."}):
            raise ValueError(f"run name {run!r} must be a plain token (letters, digits, _.-)")
        self.notebook = notebook
        self.profile = profile
        self.run = run or None
        parts = (notebook, "runs", self.run, profile) if self.run else (notebook, profile)
        self.dir = config.reports_dir(*parts)  # where a reader finds the report
        self._out = config.written_dir(self.dir)  # where it is written (a staging folder)
        self._out.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, float] = {}
        self.meta: dict = {"notebook": notebook, "profile": profile, "run": self.run,
                           "protocols": {}, "parameters": {}, "sources": {}, "skipped": {}}
        self._t0 = time.time()
        self._steps0, self._counts0 = timing.totals(), timing.counts()
        self._loaded0 = set(timing.trainings_loaded())

    # -- numbers -----------------------------------------------------------
    def add(self, key: str, value) -> None:
        """Record one metric under a ``a/b/c`` key (checked)."""
        metric_key(*key.split("/"))
        self.metrics[key] = _plain(value)

    def add_many(self, prefix: str, values: Mapping[str, float]) -> None:
        """Record ``{name: value}`` under ``prefix/name``."""
        for name, value in values.items():
            self.add(f"{prefix}/{name}", value)

    def parameters(self, **params) -> None:
        """Record the run's parameters in ``meta.json``."""
        self.meta["parameters"].update(json.loads(json.dumps(params, default=str)))

    def protocol(self, split, prefix: Optional[str] = None) -> None:
        """Record a split's protocol (``Split.record()``) in ``meta.json``.

        ``prefix`` names the metric keys evaluated under this split (default
        ``"<dataset>/"``); the summary uses it to compare only numbers measured
        under the same protocol.
        """
        rec = split.record()
        self.meta["protocols"][f"{rec['dataset']}/{rec['protocol']}"] = rec
        prefix = prefix if prefix is not None else f"{rec['dataset']}/"
        self.meta.setdefault("key_protocols", {})[prefix] = {
            "protocol": rec["protocol"], "seed": rec["seed"], "n_query": rec["n_query"],
            "n_database": rec["n_database"]}

    def source(self, name: str, description: str) -> None:
        """Record where a dataset or backbone came from."""
        self.meta["sources"][name] = description

    def skip(self, part: str, reason: str) -> None:
        """Record that ``part`` (e.g. ``"stl10"``) was not run, and why; printed too."""
        self.meta["skipped"][part] = reason
        print(f"SKIPPED {part}: {reason}")

    # -- files -------------------------------------------------------------
    def path(self, name: str) -> Path:
        """Where the file ``name`` of this report is found once the run has finished."""
        return self.dir / name

    def _target(self, name: str) -> Path:
        return self._out / name

    def table(self, name: str, frame, index: bool = False) -> Path:
        """Write a pandas DataFrame as ``<name>.csv``."""
        buf = io.StringIO()
        frame.to_csv(buf, index=index, float_format="%.6g")
        return cache.write_text(self._target(f"{name}.csv"), buf.getvalue())

    def figure(self, name: str, fig, svg: bool = False, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``<name>.png`` (and ``.svg``); in a notebook, show it.

        Inside a Jupyter kernel the saved PNG is displayed once, as the output
        of the calling cell, and the figure is closed, so that the inline
        backend does not show it a second time at the end of the cell (a later
        ``plt.show()`` shows nothing). Elsewhere (scripts, tests) nothing is
        displayed and the figure stays open.
        """
        out = self._target(f"{name}.png")
        with cache.atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        if svg:
            with cache.atomic_path(self._target(f"{name}.svg")) as tmp:
                fig.savefig(tmp, format="svg", bbox_inches="tight")
        try:
            from IPython import get_ipython
        except ImportError:  # no IPython: certainly not a notebook
            return out
        shell = get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None:  # a Jupyter kernel
            import matplotlib.pyplot as plt
            from IPython.display import Image, display

            display(Image(data=out.read_bytes(), format="png"))
            plt.close(fig)
        return out

    def text(self, name: str, content: str) -> Path:
        """Write a Markdown or text file."""
        return cache.write_text(self._target(name), content)

    def save(self) -> Path:
        """Write ``metrics.json`` and ``meta.json``; returns the metrics path."""
        import numpy
        import torch

        self.meta["wall_time_s"] = round(time.time() - self._t0, 1)
        # where the time went (hashstudy.timing): seconds per step of this process, the rest
        # as "other"; cache hits and misses tell a cold run from a warm one
        steps = {k: round(v - self._steps0.get(k, 0.0), 1) for k, v in timing.totals().items()}
        steps = {k: v for k, v in steps.items() if v > 0}
        steps["other"] = round(max(0.0, self.meta["wall_time_s"] - sum(steps.values())), 1)
        self.meta["step_seconds"] = steps
        self.meta["cache"] = {k: v - self._counts0.get(k, 0) for k, v in timing.counts().items()}
        # trainings this run loaded from the cache, with what they took when they ran (in an
        # earlier run, or in earlier sessions of a resumed one): wall_time_s plus their sum is
        # what the report cost from an empty model cache (cached features and graphs aside)
        loaded = {k: (None if v is None else round(v, 1))
                  for k, v in sorted(timing.trainings_loaded().items()) if k not in self._loaded0}
        self.meta["trainings_loaded"] = loaded
        self.meta["trainings_loaded_seconds"] = round(sum(v for v in loaded.values() if v), 1)
        threads = getattr(torch, "get_num_threads", None)  # torch's intra-op threads
        self.meta["threads"] = threads() if callable(threads) else None
        self.meta["versions"] = {"python": platform.python_version(), "numpy": numpy.__version__,
                                 "torch": torch.__version__}
        cache.write_json(self._target("meta.json"), self.meta)
        return cache.write_json(self._target("metrics.json"), self.metrics)


def load_metrics(notebook: str, profile: str = "quick") -> dict:
    """Read ``reports/<notebook>/<profile>/metrics.json`` ({} if absent)."""
    path = config.written_dir(config.reports_dir(notebook, profile)) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def paper_numbers(paper: Optional[str] = None):
    """The papers' own numbers as a DataFrame.

    Columns: ``paper`` (notebook name), ``key`` (the metrics.json key it
    corresponds to), ``value``, ``source`` (table or figure), ``note``.
    """
    import pandas as pd

    frame = pd.read_csv(Path(__file__).with_name("paper_numbers.csv"), comment="#")
    if paper is not None:
        frame = frame[frame["paper"] == paper].reset_index(drop=True)
    return frame


def compare_with_paper(metrics: Mapping[str, float], paper: str, why: Mapping[str, str] | None = None):
    """Paper-vs-ours table for every transcribed number of ``paper``.

    Returns a DataFrame with ``key, paper, ours, difference, source, note``;
    ``ours`` is NaN where the study has no measurement for that key, and
    ``why`` (key prefix -> sentence) explains differences.
    """
    import pandas as pd

    rows = []
    for rec in paper_numbers(paper).itertuples():
        ours = metrics.get(rec.key)
        ours = float("nan") if ours is None else float(ours)
        note = rec.note if isinstance(rec.note, str) else ""
        for prefix, sentence in (why or {}).items():
            if rec.key.startswith(prefix):
                note = f"{note} {sentence}".strip()
        rows.append({"key": rec.key, "paper": float(rec.value), "ours": ours,
                     "difference": ours - float(rec.value), "source": rec.source, "note": note})
    return pd.DataFrame(rows, columns=["key", "paper", "ours", "difference", "source", "note"])
