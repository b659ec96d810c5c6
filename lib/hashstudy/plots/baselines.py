"""Figures of notebook 00 (the shallow baselines of :mod:`hashstudy.baselines`).

:func:`map_vs_bits`: mAP@1000, mAP over the whole ranking and HD2P against
code length, with the DDH paper's printed baselines marked
(:func:`paper_marks`); :func:`curves_by_bits`: the Hamming-radius PR curves
or the precision@k curves, one panel per code length. The supervised methods
(:data:`hashstudy.baselines.SUPERVISED`) are dashed and labelled
``"<method> (supervised)"``. Every function returns a matplotlib ``Figure``,
except :func:`report_map_figures` and :func:`report_curve_figures`, which draw
those figures for every setting of a run and save them in its report.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt

from .. import baselines, evaluation, plots

__all__ = ["PAPER_LABELS", "PAPER_MARKERS", "paper_marks", "map_vs_bits", "curves_by_bits",
           "report_map_figures", "report_curve_figures"]

PAPER_LABELS = {"Table 2": "paper (DDH Table 2, hand-crafted features)",
                "Table 4": "paper (DDH Table 4, CNN-F fc7 features)"}
"""Legend label of the DDH paper's numbers, by the table they come from."""
PAPER_MARKERS = {"Table 2": "*", "Table 4": "D"}
"""Marker of the DDH paper's numbers, by table: a star for Table 2, a diamond for Table 4."""


def paper_marks():
    """The papers' printed values of notebook 00's metrics (``paper_numbers.csv``), with the columns
    ``dataset, features, method, bits, metric`` read from their keys."""
    from ..reporting import paper_numbers

    return plots.paper_values(
        paper_numbers("00_baselines"),
        r"(?P<dataset>[^/]+)/(?P<features>[^/]+)/(?P<method>[^/]+)/(?P<bits>\d+)/(?P<metric>[^/]+)")


def _label(method: str) -> str:
    return method + (" (supervised)" if method in baselines.SUPERVISED else "")


def _dashed(methods: Sequence[str]) -> dict:
    return {_label(m): "--" for m in methods if m in baselines.SUPERVISED}


def map_vs_bits(table, *, dataset: str, features: str, methods: Sequence[str], bits: Sequence[int],
                metrics: Sequence[str] = ("map@1000", "map_all", "hd2p"), paper=None):
    """One panel per metric of ``metrics``: each method's value against code length.

    ``table``: the long table of :func:`hashstudy.evaluation.run` for one
    setting (``dataset`` / ``features``). ``paper``: :func:`paper_marks`
    (optional); its values for this setting, these methods and code lengths
    are marked with :func:`hashstudy.plots.mark_paper`, edged in the
    method's colour (:data:`PAPER_MARKERS`, :data:`PAPER_LABELS`). One legend
    below the panels.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.9), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        series = {}
        for m in methods:
            rows = table[(table.method == m) & (table.metric == metric)].sort_values("bits")
            series[_label(m)] = (rows.bits, rows.value)
        plots.curves(series, xlabel="bits", ylabel=metric, title=f"{dataset} / {features}: {metric}", ax=ax,
                     markevery=1, legend=None, linestyles=_dashed(methods))
        if paper is not None:
            here = paper[(paper.dataset == dataset) & (paper.features == features)
                         & (paper.metric == metric) & paper.method.isin(methods) & paper.bits.isin(bits)]
            for (m, source), g in here.groupby(["method", "source"]):
                table_name = source.split(" ", 1)[-1]
                plots.mark_paper(ax, g.bits, g.value, source=source, method=m,
                                 label=PAPER_LABELS.get(table_name), marker=PAPER_MARKERS.get(table_name))
        ax.set_xticks(bits)
    fig.tight_layout()
    plots.figure_legend(fig)
    return fig


def curves_by_bits(codes, q_labels, db_labels, *, dataset: str, features: str, methods: Sequence[str],
                   bits: Sequence[int], kind: str = "pr", max_k: Optional[int] = 1000):
    """One panel per code length: every method's curve (:func:`hashstudy.evaluation.curves_by_method`).

    ``codes``: the ``codes`` of an :class:`hashstudy.evaluation.Result`;
    ``kind="pr"``: the Hamming-radius precision-recall curves (precision over
    the queries that retrieve something, :data:`hashstudy.plots.PR_YLABEL`);
    ``kind="precision@k"``: precision of the top k, k = 1 .. ``max_k``.
    """
    xlabel, ylabel = (("recall", plots.PR_YLABEL) if kind == "pr" else
                      ("k (returned images)", "precision@k"))
    fig, axes = plt.subplots(1, len(bits), figsize=(4.6 * len(bits), 3.9), squeeze=False)
    for ax, b in zip(axes[0], bits):
        series = evaluation.curves_by_method(codes, q_labels, db_labels, b, kind=kind, max_k=max_k)
        series = {_label(m): xy for m, xy in series.items()}
        plots.curves(series, xlabel=xlabel, ylabel=ylabel, title=f"{dataset} / {features}, {b} bits", ax=ax,
                     legend=None, linestyles=_dashed(methods))
    fig.tight_layout()
    plots.figure_legend(fig, ncol=min(len(methods), 9))
    return fig


def report_map_figures(report, results: Mapping[tuple, object], *, methods: Sequence[str],
                       bits: Sequence[int]) -> None:
    """mAP@1000, mAP over the whole ranking and HD2P against code length, one figure per setting
    (:func:`map_vs_bits`, the DDH paper's numbers marked), saved as
    ``<dataset>_<features>_map_vs_bits``."""
    marks = paper_marks()
    for (d, f), result in results.items():
        fig = map_vs_bits(result.table, dataset=d, features=f, methods=methods, bits=bits, paper=marks)
        report.figure(f"{d}_{f}_map_vs_bits", fig)


def report_curve_figures(report, results: Mapping[tuple, object], settings: Mapping[tuple, object], *,
                         methods: Sequence[str], bits: Sequence[int], max_k: int) -> None:
    """The Hamming-radius PR curves and the precision@k curves (k up to ``max_k``) of every setting,
    one panel per code length (:func:`curves_by_bits`), saved as
    ``<dataset>_<features>_pr`` and ``<dataset>_<features>_precision_at_k``."""
    for (d, f), result in results.items():
        s = settings[(d, f)]
        ql, dl = s.labels[s.split.query], s.labels[s.split.database]
        for kind, name in (("pr", "pr"), ("precision@k", "precision_at_k")):
            fig = curves_by_bits(result.codes, ql, dl, dataset=d, features=f, methods=methods,
                                         bits=bits, kind=kind, max_k=max_k)
            report.figure(f"{d}_{f}_{name}", fig)
