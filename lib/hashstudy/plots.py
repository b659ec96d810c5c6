"""Figures shared by the notebooks: PR curves, precision@k curves, retrieval grids.

All functions return a matplotlib ``Figure`` and never write files; use
:meth:`hashstudy.reporting.Report.figure` to save them.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["curves", "retrieval_grid", "bar_table"]

# one colour and marker per method, stable across figures of the study
_STYLE = {
    "lsh": ("#9e9e9e", "v"), "sklsh": ("#bdbdbd", "<"), "pcah": ("#8c6d31", ">"),
    "sh": ("#e7ba52", "s"), "itq": ("#3182bd", "o"), "cca_itq": ("#6baed6", "P"),
    "sph": ("#31a354", "D"), "kmh": ("#74c476", "X"), "sth": ("#756bb1", "^"),
    "cnnh": ("#e6550d", "h"),
}


def style(method: str, i: int = 0) -> dict:
    """Line style for ``method`` (deep methods of a notebook get strong colours)."""
    if method in _STYLE:
        color, marker = _STYLE[method]
        return dict(color=color, marker=marker, lw=1.4, ms=4)
    cmap = plt.get_cmap("tab10")
    return dict(color=cmap((i + 3) % 10), marker="*", lw=2.2, ms=6)


def curves(series: Mapping[str, tuple], *, xlabel: str, ylabel: str, title: str = "",
           ax=None, markevery: Optional[int] = None, xlim=None, ylim=(0, 1.02)):
    """Plot ``{label: (x, y)}`` curves with the study's method styles."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.9))
    for i, (label, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        me = markevery or max(1, len(x) // 12)
        ax.plot(x, y, label=label, markevery=me, **style(label.split(" ")[0].lower(), i))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig if fig is not None else ax.figure


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


def bar_table(frame, *, x: str, y: str, hue: str, title: str = "", ylabel: str = ""):
    """Grouped bars of a long table (e.g. mAP by method and code length)."""
    pivot = frame.pivot_table(index=x, columns=hue, values=y, sort=False)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.8 / max(1, pivot.shape[1])
    xs = np.arange(pivot.shape[0])
    for i, col in enumerate(pivot.columns):
        st = style(str(col), i)
        ax.bar(xs + i * width - 0.4 + width / 2, pivot[col].to_numpy(), width, label=str(col),
               color=st["color"])
    ax.set_xticks(xs)
    ax.set_xticklabels([str(v) for v in pivot.index])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    return fig
