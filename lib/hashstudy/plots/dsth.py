"""Figures of notebook 01 (DSTH, conference version, :mod:`hashstudy.dsth`).

Every function returns a matplotlib ``Figure`` (or draws on a given ``Axes``)
and writes nothing; the notebook saves them with
:meth:`hashstudy.reporting.Report.figure`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .. import dsth
from . import PR_YLABEL, curves, figure_legend, mark_paper_level, paper_values

__all__ = ["RIVALS", "eigenvector_figure", "threshold_figure", "mark_claims", "pr_figure"]

RIVALS = {"cnnh": "CNNH", "baselines": "every shallow baseline"}
"""How :func:`mark_claims` names the rival of a paper statement."""


def eigenvector_figure(eigenvalues, dominant, *, level: float = 0.9):
    """Spectrum of ``L v = lambda D v`` (eq. 6) and, per eigenvector, the share of its squared
    mass in its dominant class (:func:`hashstudy.dsth.eigenvector_localisation`), with the
    ``level`` above which a bit counts as living in one class dashed."""
    eigenvalues, dominant = np.asarray(eigenvalues), np.asarray(dominant)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6))
    axes[0].plot(np.arange(1, len(eigenvalues) + 1), eigenvalues, marker="o", ms=3)
    axes[0].set(xlabel="bit (eigenvector, eq. 6)", ylabel="eigenvalue",
                title="spectrum of L v = λ D v")
    axes[1].bar(np.arange(1, len(dominant) + 1), dominant, color="tab:gray")
    axes[1].axhline(level, color="tab:red", ls="--", lw=1)
    axes[1].set(xlabel="bit (eigenvector, eq. 6)", ylabel="share of squared mass in one class",
                title="between-class (low) vs within-class (high) bits", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def threshold_figure(rules, readings: Mapping[str, str], *, title: str = ""):
    """Precision at recall of the hash labels under each threshold rule of eq. 7.

    ``rules`` is :func:`hashstudy.dsth.threshold_comparison`'s table; ``readings``
    ``{method: rule}`` names the methods that use a rule in the legend
    (``"ncut (dsth)"``).
    """
    levels = [c for c in rules.columns if c.startswith("P@R=")]
    used = {rule: [m for m, r in readings.items() if r == rule] for rule in rules.index}
    return curves({rule + (f" ({', '.join(used[rule])})" if used[rule] else ""):
                   ([float(c[4:]) for c in levels], rules.loc[rule, levels].to_numpy(float))
                   for rule in rules.index},
                  xlabel="recall", ylabel="precision", title=title)


def mark_claims(ax, dataset: str, n_bits: int, paper: str = "01_dsth_mm2015"):
    """The recall up to which the paper says DSTH leads a rival (a dashed line where below 1)."""
    from ..reporting import paper_numbers

    claims = paper_values(paper_numbers(paper),
                          rf"{dataset}/dsth/{n_bits}/above_(?P<rival>.+)_until_recall")
    for r in claims[claims.value < 1].itertuples():
        mark_paper_level(
            ax, r.value, axis="x", source=r.source,
            label=f"paper (sec. {r.source.split()[1]}): DSTH above {RIVALS.get(r.rival, r.rival)} "
                  f"until recall {r.value:g}")


def pr_figure(exp: "dsth.Experiment", prefixes: Sequence[str], *, title: str,
              labels: Optional[Mapping[str, str]] = None, mark: Optional[str] = None):
    """Hamming-radius PR curves of every method of ``exp``, one panel per protocol prefix.

    ``title`` starts every panel's title (the dataset); one panel gets the title
    ``"<title>, <bits> bits (<n> queries)"`` and its legend on the right, several
    panels ``"<title>, <bits> bits, <n> queries (<prefix>/)"`` and one legend below.
    ``mark`` names the dataset of the paper's recall levels (:func:`mark_claims`).
    """
    labels = dict(labels or {})
    b = exp.n_bits
    if len(prefixes) == 1:
        (prefix,) = prefixes
        fig = curves({labels.get(m, m): c for m, c in exp.pr_curves(prefix).items()},
                     xlabel="recall", ylabel=PR_YLABEL,
                     title=f"{title}, {b} bits ({exp.splits[prefix].query.size} queries)")
        if mark:
            mark_claims(fig.axes[0], mark, b)
        return fig
    fig, axes = plt.subplots(1, len(prefixes), figsize=(10.5, 4), sharey=True)
    for ax, prefix in zip(axes, prefixes):
        curves({labels.get(m, m): c for m, c in exp.pr_curves(prefix).items()},
               xlabel="recall", ylabel=PR_YLABEL, ax=ax,
               title=f"{title}, {b} bits, {exp.splits[prefix].query.size} queries ({prefix}/)",
               legend=None)
        if mark:
            mark_claims(ax, mark, b)
    fig.tight_layout()
    figure_legend(fig)
    return fig
