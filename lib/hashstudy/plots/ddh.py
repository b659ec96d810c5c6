"""Figures of notebook 04 (DDH, :mod:`hashstudy.ddh`): Fig. 2, mAP against bits, the
held-out training curves and the precision-recall curves (Fig. 3)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt

from .. import ddh, evaluation
from . import curves, figure_legend, mark_paper, paper_values, style, PR_YLABEL

__all__ = ["label_precision", "map_vs_bits", "validation_curve", "pr_curves"]


def label_precision(fig2, *, dataset: str, k2: int):
    """Fig. 2: precision of the constructed pairs against K (left) and against the number
    of pairs per image (right), for plain kNN and both readings of the expansion, each
    beside plain kNN with as many neighbours. ``fig2``: :func:`hashstudy.ddh.report_label_precision`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    names = {"knn": "K-NN", "expanded": f"two-step (K1 = K, K2 = {k2}), symmetrised",
             "knn_matched": "K-NN, as many pairs as symmetrised",
             "expanded_directed": f"two-step (K1 = K, K2 = {k2}), directed (eq. 3)",
             "knn_matched_directed": "K-NN, as many pairs as directed"}
    groups = list(fig2.groupby("method", sort=False))
    x_k = {m: (g.k if not m.startswith("knn_matched") else
               fig2[fig2.method == "expanded" + m[len("knn_matched"):]].k) for m, g in groups}
    curves({names[m]: (x_k[m], g.precision) for m, g in groups},
           xlabel="K (K1 of the expansion)", ylabel="precision of the pairs",
           title=f"{dataset}: label precision (Fig. 2)", ax=axes[0], markevery=1, legend=None)
    curves({names[m]: (g.mean_neighbors, g.precision) for m, g in groups},
           xlabel="constructed neighbours per image", ylabel="precision of the pairs",
           title="the same, against the number of pairs", ax=axes[1], markevery=1, legend=None)
    axes[1].set_xscale("log")
    fig.tight_layout()
    figure_legend(fig, ncol=3)
    return fig


def map_vs_bits(result, bits: Sequence[int], *, dataset: str, backbone: str, paper=None):
    """mAP@1000 against code length for every method of ``result`` (an
    :class:`hashstudy.evaluation.Result`), with the paper's printed values of the same
    methods as open marks (a star for Table 2, a diamond for Table 4). ``paper``: the
    rows of :func:`hashstudy.reporting.paper_numbers` (default: notebook 04's)."""
    from ..reporting import paper_numbers

    m1000 = ddh.wide(result.table, "map@1000")
    printed = paper_values(paper_numbers("04_ddh") if paper is None else paper,
                           rf"{dataset}/(?P<method>[^/]+)/(?P<bits>\d+)/map@1000")
    printed = printed[printed.method.isin(m1000.index) & printed.bits.isin(bits)]
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    curves({m: (bits, m1000.loc[m].to_numpy()) for m in m1000.index}, xlabel="bits",
           ylabel="mAP@1000", title=f"{dataset} / {backbone}: mAP@1000", ax=ax, markevery=1)
    for (m, source), g in printed.groupby(["method", "source"], sort=False):
        table_name = source.split(" ", 1)[-1] if source.startswith("ddh_2018") else source
        mark_paper(ax, g.bits, g.value, source=source, method=m,
                   marker={"Table 2": "*", "Table 4": "D"}.get(table_name))
    ax.set_xticks(bits)
    return fig


def validation_curve(curves_frame, itq_value: Optional[float], validation_bits: int):
    """Left: held-out mAP@1000 of the reported DDH after every epoch per code length (open
    marker: the kept epoch; dashed: ITQ on the same images at ``validation_bits``). Right:
    the training objective per epoch. ``curves_frame``: :func:`hashstudy.ddh.validation_curves`."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    series = {f"{b} bits": (g.epoch, g["map@1000"].astype(float)) for b, g in curves_frame.groupby("bits")}
    curves(series, xlabel="epoch", ylabel="held-out mAP@1000",
           title="reported DDH on held-out training images", ax=ax[0], markevery=1, legend=None)
    for b, g in curves_frame[curves_frame.kept].groupby("bits"):
        ax[0].plot(g.epoch, g["map@1000"], marker="o", ms=10, mfc="none", mec="k", ls="none")
    if itq_value is not None:
        ax[0].axhline(itq_value, color=style("itq")["color"], ls="--",
                      label=f"ITQ, {validation_bits} bits (same images)")
    for b, g in curves_frame[curves_frame.epoch >= 1].groupby("bits"):
        ax[1].plot(g.epoch, g.loss.astype(float), marker="o", ms=3, label=f"{b} bits")
    ax[1].set(xlabel="epoch", ylabel="training objective (eq. 12, per image)", title="training loss",
              yscale="log")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    figure_legend(fig, ncol=4)
    return fig


def pr_curves(result, labels, split, bits: Sequence[int], *, dataset: str,
              methods: Optional[Sequence[str]] = None):
    """Hamming-radius precision-recall curves (Fig. 3), one panel per code length of
    ``bits``, for ``methods`` (default: every method of ``result``, in its order)."""
    codes: Mapping = result.codes
    methods = list(methods) if methods is not None else list(dict.fromkeys(result.table.method))
    ql, dl = labels[split.query], labels[split.database]
    fig, axes = plt.subplots(1, len(bits), figsize=(4.8 * len(bits), 3.9), squeeze=False)
    for ax, b in zip(axes[0], bits):
        series = evaluation.curves_by_method(codes, ql, dl, b, kind="pr")
        curves({m: series[m] for m in methods}, xlabel="recall", ylabel=PR_YLABEL,
               title=f"{dataset}, {b} bits", ax=ax, legend=None)
    fig.tight_layout()
    figure_legend(fig, ncol=len(methods))
    return fig
