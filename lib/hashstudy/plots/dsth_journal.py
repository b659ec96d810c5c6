"""Figures of notebook 05 (DSTH, journal version; :mod:`hashstudy.dsth_journal`).

Each function returns a matplotlib ``Figure`` and writes nothing; the notebook
saves it with ``report.figure(<name>, fig)``. The paper's own values are open
markers (:func:`hashstudy.plots.mark_paper`) labelled with the table they come
from.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np

from .. import dsth_journal, evaluation
from . import PR_YLABEL, bar_table, curves, figure_legend, mark_paper, styles

__all__ = ["radar", "fig3b", "fig3c", "fig2_fig7", "fig8", "references"]


def radar(frame, *, title: str = "", scale: float = 1.0, paper=None, paper_source: str = ""):
    """Radar chart of Fig. 3(b): one polygon per row of ``frame``, one axis per column.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows are configurations, columns metrics in [0, 1].
    scale : float
        Multiplies every value (the paper multiplies some axes by 1.23 "to
        highlight the curve"; 1 draws the values as they are).
    paper : pandas.DataFrame, optional
        The paper's values in the same layout (rows a subset of ``frame``'s,
        NaN where the paper has none); each is an open star edged in its
        configuration's colour, legend ``paper (<paper_source>)``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    cols = list(frame.columns)
    if len(cols) < 3:
        raise ValueError("a radar chart needs at least three metrics")
    angles = np.linspace(0, 2 * np.pi, len(cols), endpoint=False)
    fig, ax = plt.subplots(figsize=(5.2, 5.2), subplot_kw={"polar": True})
    look = styles([str(n) for n in frame.index])
    for name, row in frame.iterrows():
        v = np.asarray(row, dtype=float) * scale
        colour = look[str(name)]["color"]
        ax.plot(np.r_[angles, angles[:1]], np.r_[v, v[:1]], color=colour, lw=1.6,
                label=str(name))
        ax.fill(np.r_[angles, angles[:1]], np.r_[v, v[:1]], color=colour, alpha=0.08)
    top = float(np.nanmax(frame.to_numpy(dtype=float))) * scale
    if paper is not None:
        for name, row in paper.reindex(columns=cols).iterrows():
            if str(name) not in look:
                continue
            marks = mark_paper(ax, angles, np.asarray(row, dtype=float) * scale,
                                     source=paper_source or "paper", marker="*")
            marks.set_markeredgecolor(look[str(name)]["color"])
        if np.isfinite(paper.to_numpy(dtype=float)).any():
            top = max(top, float(np.nanmax(paper.to_numpy(dtype=float))) * scale)
    ax.set_xticks(angles)
    ax.set_xticklabels([c.replace("precision@recall", "P@R ") for c in cols], fontsize=8)
    ax.set_ylim(0, max(1.0, top))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.05), frameon=False)
    if title:
        ax.set_title(title, fontsize=10, pad=18)
    return fig


def _mark_table(ax, paper: Mapping[str, float], prefix: str, metric: str, source: str,
                method: str, bits: int) -> None:
    """The paper's values of one Table III/IV row ``prefix``: max F at ``bits``, or precision
    at the six recall levels."""
    if metric == "max_f@0.5":
        points = [(bits, paper.get(f"{prefix}/max_f@0.5"))]
    else:
        points = [(level, paper.get(f"{prefix}/precision@recall{level}"))
                  for level in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)]
    points = [(x, y) for x, y in points if y is not None]
    if points:
        mark_paper(ax, [x for x, _ in points], [y for _, y in points], source=source,
                   method=method)


def fig3b(table_iii, plan: "dsth_journal.Plan"):
    """Fig. 3(b): the configurations on the main backbone's labels, ours and Table III's."""
    row = plan.name(plan.main)
    return radar(table_iii["ours"].loc[row], paper=table_iii["paper"].loc[row],
                 title=f"CIFAR-10, {plan.bits} bits, labels from {plan.main} (Fig. 3(b))",
                 paper_source="Table III")


def fig3c(table_iii, plan: "dsth_journal.Plan"):
    """Fig. 3(c): the main configuration on each backbone's labels, one bar per metric."""

    def by_backbone(t3):  # one row per (backbone, metric) of the main configuration
        return (t3.xs(plan.main_config, level=1).rename_axis("backbone").reset_index()
                .melt(id_vars="backbone", var_name="metric", value_name="value"))

    fig = bar_table(by_backbone(table_iii["ours"]), x="metric", y="value", hue="backbone",
                    title=f"CIFAR-10, {plan.bits} bits, {plan.main_config} (Fig. 3(c))",
                    paper=by_backbone(table_iii["paper"]).dropna(), paper_source="Table III")
    fig.axes[0].tick_params(axis="x", labelrotation=30)
    return fig


def _labels(setting):
    return setting.labels[setting.split.query], setting.labels[setting.split.database]


def _retrieval_panels(axes, result, setting, plan: "dsth_journal.Plan", name: Mapping,
                      fig: str, tick_bits) -> None:
    """Panels (a), (b), (e), (f) of Fig. 7 or 8 on four ``axes``: the PR curve and the
    returned-image precision at ``bits``, HD3P and NC3P against code length."""
    bits = plan.bits
    ql, dl = _labels(setting)
    pr = evaluation.curves_by_method(result.codes, ql, dl, bits, kind="pr")
    curves({name.get(m, m): xy for m, xy in pr.items()}, xlabel="recall", ylabel=PR_YLABEL,
           title=f"Fig. {fig}(a): PR, {bits} bits", ax=axes[0], legend=None)
    rip = evaluation.curves_by_method(result.codes, ql, dl, bits, kind="precision@k",
                                      max_k=plan.size["rip_max"])
    curves({name.get(m, m): xy for m, xy in rip.items()}, xlabel="returned images N",
           ylabel="precision", title=f"Fig. {fig}(b): RIP, {bits} bits", ax=axes[1], legend=None)
    for ax, metric, label in ((axes[2], "hd3p", "HD3P"), (axes[3], "nc3p", "NC3P")):
        curves(result.by_bits(metric, name), xlabel="bits", ylabel=label,
               title=f"Fig. {fig}({'e' if metric == 'hd3p' else 'f'}): {label} vs code length",
               ax=ax, markevery=1, legend=None)
        ax.set_xticks(tick_bits)


def fig2_fig7(result, setting, plan: "dsth_journal.Plan"):
    """Fig. 2 and Fig. 7(a), (b), (e), (f): DSTH against the unsupervised baselines.

    ``result``: :func:`hashstudy.dsth_journal.without_labels`'s
    :class:`~hashstudy.evaluation.Result`. Panels: max F against code length,
    the PR curve and the returned-image precision at ``bits``, HD3P and NC3P
    against code length. Open stars: the paper's Table III values of the
    same configuration (max F; precision at recall on the PR panel).
    """
    bits, cfg, paper = plan.bits, plan.main_config, plan.paper
    name = {cfg: f"DSTH {cfg}"}
    row = f"{setting.dataset}/{plan.main}/{cfg}/{bits}"
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.2))
    curves(result.by_bits("max_f@0.5", name), xlabel="bits", ylabel="max F (beta 0.5)",
           title="Fig. 2: max F-measure vs code length", ax=axes[0], markevery=1, legend=None)
    axes[0].set_xticks(plan.sweep_bits)
    _retrieval_panels(axes[1:], result, setting, plan, name, "7", plan.sweep_bits)
    _mark_table(axes[0], paper, row, "max_f@0.5", "Table III", name[cfg], bits)
    _mark_table(axes[1], paper, row, "precision@recall", "Table III", name[cfg], bits)
    fig.tight_layout()
    figure_legend(fig, ncol=8)
    return fig


def fig8(result, setting, plan: "dsth_journal.Plan"):
    """Fig. 8(a), (b), (e), (f): DSTH with labels against the supervised baselines.

    ``result``: :func:`hashstudy.dsth_journal.with_labels`'s. The PR panel
    carries the paper's Table IV precision at recall of DSTH with labels.
    """
    cfg = plan.main_config
    name = {f"{cfg}_labels": f"DSTH {cfg} (labels)"}
    fig, axes = plt.subplots(1, 4, figsize=(19.5, 4.2))
    _retrieval_panels(axes, result, setting, plan, name, "8", plan.label_bits)
    _mark_table(axes[0], plan.paper, f"{setting.dataset}/{plan.main}/{cfg}_labels/{plan.bits}",
                "precision@recall", "Table IV", name[f"{cfg}_labels"], plan.bits)
    fig.tight_layout()
    figure_legend(fig)
    return fig


def references(metrics: Mapping[str, float], plan: "dsth_journal.Plan", dataset: str = "cifar10"):
    """Section 6b: max F of SimpleNet, the encoder on features and the kNN label copy per bits."""
    import pandas as pd

    cfg, main = plan.main_config, plan.main
    rows = [{"bits": nb, "hash function": label,
             "max F (beta 0.5)": metrics[f"{dataset}/{main}/{p}/{nb}/max_f@0.5"]}
            for nb in plan.fit_bits
            for label, p in [(f"SimpleNet {cfg} (pixels)", cfg),
                             (f"{cfg} on features", f"{cfg}_on_features"),
                             ("kNN label copy", "knn_copy")]]
    return bar_table(pd.DataFrame(rows), x="bits", y="max F (beta 0.5)", hue="hash function",
                     title=f"{'CIFAR-10' if dataset == 'cifar10' else dataset}, labels from {main}: "
                           "the hash function against two "
                           "references")
