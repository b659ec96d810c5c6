"""Figures shared by the notebooks: curves, bars, retrieval grids and the papers' own values.

All functions return a matplotlib ``Figure`` (or draw on a given ``Axes``) and
never write files; :meth:`hashstudy.reporting.Report.figure` saves a figure
and, in a notebook, shows it once below the cell that drew it.

The module does not choose a backend: without a display matplotlib falls back
to the non-interactive Agg backend by itself, and a Jupyter kernel uses its
inline backend.

Conventions of the study's figures:

* every method has one colour and one marker in every figure
  (:data:`METHOD_STYLES`); series that are not one of the shallow baselines
  (the deep methods of a notebook, configurations, rules) get strong colours
  that differ from every other colour of the same figure (:func:`styles`);
* precision, mAP and F-measure axes run from 0 to 1 (``ylim=(0, 1)``); a
  figure that zooms in says so in its title;
* legends sit outside the axes (right of a single panel, below a row of
  panels: :func:`figure_legend`), never over the curves;
* the papers' own numbers are open black-edged markers labelled
  ``paper (<table or figure>)`` (:func:`mark_paper`), or a dashed black line
  for a level the paper states in its text (:func:`mark_paper_level`).
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb

__all__ = ["METHOD_STYLES", "PR_YLABEL", "style", "styles", "curves", "figure_legend",
           "mark_paper", "mark_paper_level", "paper_values", "retrieval_grid", "bar_table"]

# One colour and marker per shallow baseline and competitor, the same in every figure.
# The hues are far apart, so that no two methods of a figure look alike.
METHOD_STYLES = {
    "lsh": ("#7f7f7f", "v"),      # grey
    "sklsh": ("#bcbd22", "<"),    # olive
    "pcah": ("#8c564b", ">"),     # brown
    "sh": ("#e6ab02", "s"),       # gold
    "itq": ("#1f77b4", "o"),      # blue
    "cca_itq": ("#17becf", "P"),  # cyan
    "sph": ("#2ca02c", "D"),      # green
    "kmh": ("#e377c2", "X"),      # pink
    "sth": ("#9467bd", "^"),      # lavender
    "cnnh": ("#ff7f0e", "h"),     # orange
}
# Strong colours for every other series (deep methods, configurations, rules), in order of
# appearance; a candidate too close to a colour already in the figure is passed over.
_STRONG = [("#d62728", "*"), ("#08306b", "p"), ("#c51b7d", "d"), ("#00441b", "8"),
           ("#3f007d", "H"), ("#7f2704", "*"), ("#4d4d4d", "p"), ("#01665e", "d"),
           ("#67001f", "8"), ("#b8860b", "H")]
_MIN_DISTANCE = 0.25  # smallest RGB distance between two colours of one figure

PR_YLABEL = "precision (answered queries)"
"""y label of the Hamming-radius PR curves of :func:`hashstudy.evaluation.curves_by_method`:
at each radius, a query with no database item within that radius is left out of the
precision average (recall still averages over every query)."""

# paper marks: one marker shape per legend label within an axes, in this order
_PAPER_MARKERS = ["*", "D", "P", "s", "^", "v"]
_PAPER_SIZES = {"*": 13, "D": 8, "P": 9, "s": 8, "^": 9, "v": 9}


def _key(label: str) -> str:
    """The method name a series label starts with ("itq (supervised)" -> "itq")."""
    return str(label).split(" ")[0].lower()


def style(method: str, i: int = 0) -> dict:
    """Line style of one series: the method's own style, else the ``i``-th strong colour."""
    if _key(method) in METHOD_STYLES:
        color, marker = METHOD_STYLES[_key(method)]
        return dict(color=color, marker=marker, lw=1.4, ms=4)
    color, marker = _STRONG[i % len(_STRONG)]
    return dict(color=color, marker=marker, lw=2.2, ms=6)


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(to_rgb(a), to_rgb(b))))


def styles(labels: Sequence[str]) -> dict:
    """``{label: style}`` for the series of one figure, every colour distinct.

    Baselines keep their study-wide style; other labels get strong colours in
    order of appearance, skipping any colour close to one already used (by a
    baseline or an earlier label). A label seen twice gets the same style.
    """
    labels = list(dict.fromkeys(str(v) for v in labels))
    out, used = {}, []
    for label in labels:
        if _key(label) in METHOD_STYLES:
            out[label] = style(label)
            used.append(out[label]["color"])
    for label in labels:
        if label in out:
            continue
        for j in range(len(_STRONG)):
            candidate = style(label, j)
            if all(_distance(candidate["color"], c) >= _MIN_DISTANCE for c in used):
                break
        else:  # more series than strong colours: fall back to the tab20 cycle
            candidate = dict(style(label, len(used)), color=plt.get_cmap("tab20")(len(used) % 20))
        out[label] = candidate
        used.append(candidate["color"])
    return out


# --------------------------------------------------------------------------- #
# legends
# --------------------------------------------------------------------------- #

def _legend_entries(axes) -> tuple[list, list]:
    """Unique (handle, label) pairs of ``axes``; the papers' marks last."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in labels:
                handles.append(h)
                labels.append(lab)
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("paper"))
    return [handles[i] for i in order], [labels[i] for i in order]


def _place_legend(ax, where) -> None:
    """Draw (or redraw) the legend of one axes; ``where``: "outside", a matplotlib loc, or None."""
    ax._hashstudy_legend = where
    old = ax.get_legend()
    if old is not None:
        old.remove()
    if not where:
        return
    handles, labels = _legend_entries([ax])
    if not handles:
        return
    if where == "outside":
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                  fontsize=8, frameon=False)
    else:
        ax.legend(handles, labels, loc=where, fontsize=8, framealpha=0.85)


def _refresh_legend(ax) -> None:
    where = getattr(ax, "_hashstudy_legend", None)
    if where:
        _place_legend(ax, where)


def figure_legend(fig, *, ncol: Optional[int] = None, fontsize: int = 8):
    """One legend for all panels of ``fig``, below them; removes the panels' own legends.

    Entries are collected from every axes (each label once, paper marks
    included). Call it after the last series and mark are drawn and after
    ``fig.tight_layout()``; the saved PNG (``bbox_inches="tight"``) grows to
    hold the legend.
    """
    for ax in fig.axes:
        ax._hashstudy_legend = None
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = _legend_entries(fig.axes)
    if not handles:
        return None
    ncol = ncol or min(len(labels), 6)
    return fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=ncol, fontsize=fontsize, frameon=False)


# --------------------------------------------------------------------------- #
# curves
# --------------------------------------------------------------------------- #

def curves(series: Mapping[str, tuple], *, xlabel: str, ylabel: str, title: str = "",
           ax=None, markevery: Optional[int] = None, xlim=None, ylim=(0, 1),
           legend="outside", linestyles: Optional[Mapping[str, str]] = None):
    """Plot ``{label: (x, y)}`` curves with the study's method styles.

    Parameters
    ----------
    ylim : (low, high) or None
        ``(0, 1)`` by default, for precision, mAP and F-measure; ``None``
        autoscales (for quantities that are not in [0, 1]). A narrower range is
        a zoom, and the title must say so.
    legend : "outside" | matplotlib location | None
        "outside": right of the axes; a location such as ``"lower left"``
        places it inside (only where that corner is free); ``None``: none
        (e.g. for :func:`figure_legend`).
    linestyles : {label: linestyle}, optional
        E.g. dashed for supervised methods.

    Returns the figure (a new one unless ``ax`` is given).
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.9))
    look = styles(list(series))
    inside = True
    for label, (x, y) in series.items():
        y = np.asarray(y, float)
        if ylim is not None and np.isfinite(y).any():
            inside &= bool(np.nanmin(y) >= ylim[0] and np.nanmax(y) <= ylim[1])
    for label, (x, y) in series.items():
        x, y = np.asarray(x, float), np.asarray(y, float)
        me = markevery or max(1, len(x) // 12)
        ls = (linestyles or {}).get(label, "-")
        # markers on the frame (precision exactly 0 or 1) stay whole when the data fit the limits
        ax.plot(x, y, label=label, markevery=me, ls=ls, clip_on=not (inside and xlim is None),
                **look[str(label)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    _place_legend(ax, legend)
    return fig if fig is not None else ax.figure


# --------------------------------------------------------------------------- #
# the papers' own values
# --------------------------------------------------------------------------- #

def _short_source(source: str) -> str:
    """"ddh_2018 Table 2" -> "Table 2"; "Fig. 4 (value stated ...)" -> "Fig. 4"."""
    m = re.search(r"(Table\s+[0-9IVX]+|Fig\.\s*\d+(?:\s*\([a-z]\))?|[Ss]ec\.\s*[0-9IVX.\-A-Z]+)",
                  str(source))
    return m.group(1).rstrip(".") if m else str(source)


def _series_color(ax, method: Optional[str]):
    if method is None:
        return "black"
    for line in ax.get_lines():
        label = line.get_label()
        if label == method or _key(label) == _key(method):
            return line.get_color()
    return style(method)["color"] if _key(method) in METHOD_STYLES else "black"


def _paper_marker(ax, label: str) -> str:
    """The marker of a legend label on ``ax``: a star for the first, then a diamond, ..."""
    registry = ax.__dict__.setdefault("_hashstudy_paper_markers", {})
    if label not in registry:
        registry[label] = _PAPER_MARKERS[len(registry) % len(_PAPER_MARKERS)]
    return registry[label]


def mark_paper(ax, x, y, *, source: str, label: Optional[str] = None,
               method: Optional[str] = None, marker: Optional[str] = None):
    """Mark the paper's own values at ``(x, y)`` with open markers.

    Parameters
    ----------
    x, y : float or sequence of float
        Coordinates in the axes' data units (e.g. bits and mAP, recall and
        precision, k and precision@k). NaN values are dropped.
    source : str
        Where the paper prints the values (``paper_numbers.csv``'s ``source``,
        e.g. ``"ddh_2018 Table 2"``); the legend says ``paper (Table 2)``.
    label : str, optional
        Legend text instead of ``paper (<source>)``.
    method : str, optional
        The series the values belong to: the marker's edge takes that series'
        colour (the legend entry stays black). Without it the marker is black.
    marker : str, optional
        Marker shape; by default the first legend label of an axes gets a
        star, the next a diamond, and so on (the same label, the same shape).

    Returns the ``Line2D`` of the marks.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    if x.shape != y.shape:
        x = np.broadcast_to(x, y.shape) if x.size == 1 else x
        y = np.broadcast_to(y, x.shape) if y.size == 1 else y
    keep = np.isfinite(x) & np.isfinite(y)
    label = label or f"paper ({_short_source(source)})"
    marker = marker or _paper_marker(ax, label)
    size = _PAPER_SIZES.get(marker, 9)
    color = _series_color(ax, method)
    (marks,) = ax.plot(x[keep], y[keep], ls="none", marker=marker, ms=size, mfc="none",
                       mec=color, mew=1.6, zorder=5, clip_on=False, label="_nolegend_")
    marks._hashstudy_paper = (label, source)
    if label not in [h.get_label() for h in ax.get_lines()]:
        # one black legend entry per label, whatever colours the marks have
        ax.plot([], [], ls="none", marker=marker, ms=size, mfc="none", mec="black", mew=1.6,
                label=label)
    _refresh_legend(ax)
    return marks


def mark_paper_level(ax, value: float, *, source: str, label: Optional[str] = None,
                     axis: str = "y", method: Optional[str] = None):
    """A dashed line at a level the paper states in words (e.g. "until recall 0.7").

    ``axis="y"``: a horizontal line at ``y = value``; ``"x"``: a vertical one.
    The legend says ``label`` or ``paper (<source>)``. Returns the line.
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    label = label or f"paper ({_short_source(source)})"
    kw = dict(color=_series_color(ax, method), ls=(0, (5, 3)), lw=1.2, zorder=4, label=label)
    line = ax.axhline(value, **kw) if axis == "y" else ax.axvline(value, **kw)
    line._hashstudy_paper = (label, source)
    _refresh_legend(ax)
    return line


def paper_values(frame, pattern: str):
    """Rows of ``frame`` (from :func:`hashstudy.reporting.paper_numbers`) whose key matches.

    ``pattern`` is a regular expression over the whole key with named groups;
    the groups become columns (numeric where they can), e.g.
    ``paper_values(frame, r"cifar10/(?P<method>[^/]+)/(?P<bits>\\d+)/map@1000")``
    gives ``key, value, source, note, method, bits``.
    """
    import pandas as pd

    rx = re.compile(pattern)
    groups = list(rx.groupindex)
    rows = []
    for r in frame.itertuples():
        m = rx.fullmatch(str(r.key))
        if m:
            rows.append({"key": r.key, "value": float(r.value), "source": r.source,
                         "note": r.note if isinstance(r.note, str) else "", **m.groupdict()})
    out = pd.DataFrame(rows, columns=["key", "value", "source", "note", *groups])
    for g in groups:
        converted = pd.to_numeric(out[g], errors="coerce")
        if len(out) and converted.notna().all():
            out[g] = converted
    return out


# --------------------------------------------------------------------------- #
# images and bars
# --------------------------------------------------------------------------- #

def retrieval_grid(query_images: np.ndarray, result_images: np.ndarray, relevant: np.ndarray,
                   *, row_labels: Optional[Sequence[str]] = None, title: str = ""):
    """A grid of queries (first column) and their ranked results.

    Parameters
    ----------
    query_images : uint8 (Q, H, W, C)
    result_images : uint8 (Q, K, H, W, C)
    relevant : bool (Q, K)
        Results sharing the query's label get a green frame, others red.
    """
    q, k = relevant.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(0.85 * (k + 1), 0.9 * q), squeeze=False)
    for i in range(q):
        for j in range(k + 1):
            ax = axes[i, j]
            img = query_images[i] if j == 0 else result_images[i, j - 1]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img,
                      cmap="gray" if img.shape[-1] == 1 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                colour, width = "black", 2.5
                if row_labels is not None:
                    ax.set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
            else:
                colour, width = ("#2ca02c", 2.0) if relevant[i, j - 1] else ("#d62728", 2.0)
            for s in ax.spines.values():
                s.set_edgecolor(colour)
                s.set_linewidth(width)
    axes[0, 0].set_title("query", fontsize=8)
    for j in range(1, k + 1):
        axes[0, j].set_title(str(j), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return fig


def bar_table(frame, *, x: str, y: str, hue: str, title: str = "", ylabel: str = "",
              ylim=(0, 1), paper=None, paper_source: str = ""):
    """Grouped bars of a long table (e.g. a metric by method and code length).

    ``ylim`` is ``(0, 1)`` by default (``None`` autoscales). ``paper``: an
    optional long table with the same ``x``, ``hue`` and ``y`` columns holding
    the paper's values; each is marked (black-edged marker, see
    :func:`mark_paper`) at the centre of the bar it belongs to, and the legend
    names ``paper_source``.
    """
    pivot = frame.pivot_table(index=x, columns=hue, values=y, sort=False)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.8 / max(1, pivot.shape[1])
    xs = np.arange(pivot.shape[0])
    look = styles([str(c) for c in pivot.columns])
    centres = {}
    for i, col in enumerate(pivot.columns):
        pos = xs + i * width - 0.4 + width / 2
        centres[col] = dict(zip(pivot.index, pos))
        ax.bar(pos, pivot[col].to_numpy(), width, label=str(col), color=look[str(col)]["color"])
    ax.set_xticks(xs)
    ax.set_xticklabels([str(v) for v in pivot.index])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    _place_legend(ax, "outside")
    if paper is not None and len(paper):
        for col, part in paper.groupby(hue, sort=False):
            if col not in centres:
                continue
            px = [centres[col].get(v, np.nan) for v in part[x]]
            # black edge on a white face: visible on top of the bar it belongs to
            marks = mark_paper(ax, px, part[y].to_numpy(float), source=paper_source or "paper")
            marks.set_markerfacecolor("white")
    return fig


def mean_std_vs_bits(agg, metric: str, *, labels: Optional[Mapping[str, str]] = None,
                     references: Optional[Mapping[str, float]] = None, title: str = "",
                     ax=None, linestyles: Optional[Mapping[str, str]] = None):
    """``metric`` against code length per method: the mean over seeds with a +/- 1 std band.

    ``agg`` has columns ``method, bits, metric, mean, std`` (e.g.
    :func:`hashstudy.crosspaper.aggregate`); ``references`` are horizontal
    lines (e.g. the real-valued ranking a code can approach). Methods are
    listed in the legend best first (mean over the code lengths).
    """
    sel = agg[agg.metric == metric]
    if sel.empty:
        raise ValueError(f"no {metric!r} rows to plot; the table has {sorted(agg.metric.unique())}")
    order = sel.groupby("method")["mean"].mean().sort_values(ascending=False).index
    names = {m: (labels or {}).get(m, m) for m in order}
    series = {}
    for m in order:
        r = sel[sel.method == m].sort_values("bits")
        series[names[m]] = (r.bits.to_numpy(), r["mean"].to_numpy())
    fig = curves(series, xlabel="bits", ylabel=metric, title=title, ax=ax, legend="outside",
                 linestyles={names[m]: s for m, s in (linestyles or {}).items() if m in names})
    ax = ax or fig.axes[0]
    look = styles(list(series))
    for m in order:
        r = sel[sel.method == m].sort_values("bits")
        ax.fill_between(r.bits.to_numpy(), (r["mean"] - r["std"]).to_numpy(),
                        (r["mean"] + r["std"]).to_numpy(), color=look[names[m]]["color"],
                        alpha=0.15, lw=0)
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.3", lw=1, ls=[":", "--", "-."][i % 3], label=name)
    bits = sorted(sel.bits.unique())
    ax.set_xticks(bits, [str(int(b)) for b in bits])
    _refresh_legend(ax)
    return fig
