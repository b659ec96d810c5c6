"""Figures of notebook 02 (the latent-layer CNN, :mod:`hashstudy.latent`).

Every function returns a matplotlib ``Figure`` and writes nothing; the notebook
saves them with :meth:`hashstudy.reporting.Report.figure`.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np

from .. import latent
from . import curves, figure_legend, mark_paper, paper_values, retrieval_grid, styles

__all__ = ["retrieval_figure", "activation_figure", "precision_at_k_figure"]

PAPER_NAMES = {"latent": "latent layer", "cnnh_plus": "CNNH+"}
PAPER_MARKERS = {"latent": "*", "cnnh_plus": "D"}


def retrieval_figure(result: "latent.LatentResult", images: np.ndarray, labels, *,
                     n_queries: int = 4, k: int = 10, seed: int = 0, title: str = ""):
    """Queries with their top-``k`` results: Hamming ranking vs coarse-to-fine.

    Two rows per query (drawn at random with ``seed`` from the split's
    queries): the first ``k`` results of the coarse-only Hamming ranking and
    of the coarse-to-fine search. Green frames mark results of the query's
    class. ``images`` and ``labels`` are indexed by pool position.
    """
    labels = np.asarray(labels)
    k = min(k, result.coarse_top.shape[1], result.fine.indices.shape[1])
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(result.query_index), size=min(n_queries,
                                                                 len(result.query_index)),
                               replace=False))
    q_imgs, r_imgs, rel, names = [], [], [], []
    for i in picks:
        qpos = result.query_index[i]
        for name, ranking in (("Hamming", result.coarse_top[i, :k]),
                              ("coarse-to-fine", result.fine.indices[i, :k])):
            pos = result.database_index[ranking]
            q_imgs.append(images[qpos])
            r_imgs.append(images[pos])
            rel.append(labels[pos] == labels[qpos])
            names.append(name)
    return retrieval_grid(np.stack(q_imgs), np.stack(r_imgs), np.array(rel),
                          row_labels=names, title=title)


def activation_figure(results: Mapping[str, "latent.LatentResult"]):
    """Histograms of the latent activations of the database, one curve per result."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    look = styles(list(results))
    for name, res in results.items():
        edges = res.activation_edges
        share = res.activation_counts / max(1, res.activation_counts.sum())
        ax.step(edges[:-1], share, where="post", label=name, color=look[name]["color"])
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("latent activation (sigmoid output)")
    ax.set_ylabel("share of activations")
    ax.set_title("How binary are the latent units? (threshold of eq. 1 dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0)  # outside: the histograms fill both ends of the axes
    return fig


def precision_at_k_figure(results: Mapping[str, "latent.LatentResult"],
                          baseline_curves: Mapping[str, Mapping], *, bits: int, max_k: int,
                          titles: Mapping[str, str], paper=None):
    """Figs. 4 and 6: precision@k of the latent codes (Hamming ranking and coarse-to-fine)
    and of the baselines, one panel per dataset, with the precisions the paper states.

    ``baseline_curves[name]`` is ``{method: (k, precision)}``
    (:func:`hashstudy.evaluation.curves_by_method`); ``titles[name]`` each panel's title;
    ``paper`` the paper's numbers (:func:`hashstudy.reporting.paper_numbers`), marked at
    ``min(k, max_k)``.
    """
    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        series = {f"latent {bits} bits (Hamming)": res.curves["Hamming ranking"],
                  f"latent {bits} bits (coarse-to-fine)": res.curves["coarse-to-fine"],
                  **baseline_curves[name]}
        curves(series, xlabel="number of retrieved images k", ylabel="precision@k",
               title=titles[name], ax=ax, legend=None)
        if paper is None:
            continue
        stated = paper_values(paper, rf"{name}/(?P<method>[^/]+)/{bits}/precision@(?P<k>\d+)")
        for r in stated.itertuples():
            short = r.source.split(" (")[0]  # "Fig. 4"
            mark_paper(ax, min(r.k, max_k), r.value, source=r.source,
                       method="latent" if r.method == "latent" else None,
                       marker=PAPER_MARKERS.get(r.method, "P"),
                       label=f"paper ({short}, text): {PAPER_NAMES.get(r.method, r.method)}")
    fig.tight_layout()
    figure_legend(fig, ncol=4)
    return fig
