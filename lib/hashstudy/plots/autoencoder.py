"""Figures of notebook 03 (:mod:`hashstudy.autoencoder`, the scaled-tanh autoencoder).

The activation ``f_b`` against ``sign`` (:func:`plot_scaled_tanh`), what the
``b`` schedule does to the code layer (:func:`plot_binarisation`,
:func:`plot_hashers_binarisation`, :func:`plot_activation_histograms`), the
choice of the schedule on held-out training images
(:func:`plot_schedule_selection`), precision against code length
(:func:`plot_precision_vs_bits`), reconstructions decoded from the codes
(:func:`plot_reconstructions`, :func:`plot_hasher_reconstructions`) and
retrieval examples with each query's own image left out
(:func:`plot_retrieval`). Every function returns a matplotlib ``Figure``.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from .. import autoencoder, plots, protocols

__all__ = [
    "plot_binarisation",
    "plot_hashers_binarisation",
    "plot_schedule_selection",
    "plot_activation_histograms",
    "plot_scaled_tanh",
    "plot_retrieval",
    "plot_reconstructions",
    "plot_hasher_reconstructions",
    "plot_precision_vs_bits",
]


def plot_binarisation(histories: Mapping[str, dict], title: str = "",
                      paper: Optional[Mapping[str, float]] = None, paper_source: str = ""):
    """Per-epoch ``b``, binary fraction and reconstruction error of several runs.

    ``histories``: ``{label: TanhAEHasher.history_}``. Three panels: ``b`` of
    the code layer (log scale); share of code activations with ``|f| >= 0.99``;
    reconstruction MSE from the continuous (dashed) and binarised (solid) codes.
    ``paper``: ``{label: share}`` the paper states for a run at the end of
    training (e.g. ``{"16 bits": 1.0}``, "completely discrete"), marked at that
    run's last epoch (:func:`hashstudy.plots.mark_paper`, legend
    ``paper (<paper_source>)``). One legend below the panels.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    colours = {}
    for i, (label, hist) in enumerate(histories.items()):
        logs = hist["logs"]
        ep = [r["epoch"] for r in logs]
        colour = colours[label] = plt.get_cmap("tab10")(i % 10)
        axes[0].plot(ep, [r["b"] for r in logs], "o-", color=colour, ms=3, label=label)
        axes[1].plot(ep, [r["binary_fraction"] for r in logs], "o-", color=colour, ms=3, label=label,
                     clip_on=False)
        axes[2].plot(ep, [r["mse_binary"] for r in logs], "o-", color=colour, ms=3)
        axes[2].plot(ep, [r["mse_continuous"] for r in logs], "--", color=colour)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("b (code layer)")
    axes[1].set_ylabel(f"share of |f| >= {autoencoder.BINARY_LEVEL}")
    axes[1].set_ylim(0, 1)
    axes[1].axhline(autoencoder.BINARY_LEVEL, color="grey", lw=0.8, ls=":")
    axes[2].set_ylabel("reconstruction MSE")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    # the line styles of the right panel, explained once
    axes[2].add_line(Line2D([], [], color="black", marker="o", ms=3, label="MSE from the binary code"))
    axes[2].add_line(Line2D([], [], color="black", ls="--", label="MSE from the continuous code"))
    for label, value in (paper or {}).items():
        if label not in histories:
            continue
        last = histories[label]["logs"][-1]["epoch"]
        marks = plots.mark_paper(axes[1], last, value, source=paper_source or "paper",
                                 label=f"paper ({plots._short_source(paper_source)}): {label}, "
                                       f"{value:.0%}" if paper_source else None)
        marks.set_markeredgecolor(colours[label])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plots.figure_legend(fig)
    return fig


def plot_schedule_selection(final, ladder=None, chosen: Optional[Mapping] = None, title: str = ""):
    """Held-out precision@90, reconstruction error and binary share against ``b``.

    ``final``: :func:`hashstudy.autoencoder.final_table`; for each code length (one colour) and
    pace (one line style), the state at the *end of training* of each
    schedule's end ``b_end`` (mean over seeds, bars: the standard deviation).
    ``ladder``: :func:`hashstudy.autoencoder.ladder_table`, optional; the readings at the end of
    each rung while ``b`` rises, of the runs with the largest ``b_end`` at the
    chosen (else the fastest) pace (mean over seeds, thin dotted lines): what
    a run shows on its way up, which is not what it ends in. ``chosen``:
    :func:`hashstudy.autoencoder.choose_schedule`'s result, a vertical line at its ``b_end``.
    Panels: precision@90; reconstruction MSE from the binary codes (from the
    continuous codes: the thin dashed lines); share of ``|f| >= 0.99`` with
    the rule's :data:`hashstudy.autoencoder.MIN_BINARY_SHARE`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    key = f"precision@{autoencoder.VALIDATION_K}"
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6))
    all_bits = sorted(set(final.bits))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(all_bits)}
    paces = sorted(set(final.pace))
    styles = dict(zip(paces, ["-", "--", "-.", ":"] * 4))
    markers = dict(zip(paces, ["o", "s", "^", "D"] * 4))
    for (n_bits, pace), rows in final.groupby(["bits", "pace"], sort=True):
        stats = rows.groupby("b_end")[[key, "mse_binary", "mse_continuous", "binary_fraction"]]
        mean, std = stats.mean(), stats.std(ddof=1).fillna(0.0)
        kw = dict(color=colours[n_bits], ls=styles[pace], marker=markers[pace], ms=4, capsize=2)
        label = f"{n_bits} bits" + (f", pace {pace}" if len(paces) > 1 else "")
        axes[0].errorbar(mean.index, mean[key], yerr=std[key], label=label, **kw)
        axes[1].errorbar(mean.index, mean.mse_binary, yerr=std.mse_binary, **kw)
        axes[1].plot(mean.index, mean.mse_continuous, color=colours[n_bits], ls="--", lw=0.8)
        axes[2].errorbar(mean.index, mean.binary_fraction, yerr=std.binary_fraction, clip_on=False, **kw)
    if ladder is not None and len(ladder):
        pace = chosen["pace"] if chosen is not None else min(ladder.pace)
        rows = ladder[ladder.pace == pace]
        rows = rows[rows.b_end == rows.b_end.max()] if len(rows) else rows
        for n_bits, r in rows.groupby("bits", sort=True):
            m = r.groupby("b")[[key, "mse_binary", "binary_fraction"]].mean()
            c = colours.get(n_bits, "grey")
            axes[0].plot(m.index, m[key], ":", color=c, lw=1, alpha=0.8)
            axes[1].plot(m.index, m.mse_binary, ":", color=c, lw=1, alpha=0.8)
            axes[2].plot(m.index, m.binary_fraction, ":", color=c, lw=1, alpha=0.8, clip_on=False)
        if len(rows):
            axes[0].add_line(Line2D([], [], color="black", ls=":", lw=1,
                                    label=f"on the way up (end of each rung; runs to b = "
                                          f"{rows.b_end.max():g}, pace {pace})"))
    axes[2].axhline(autoencoder.MIN_BINARY_SHARE, color="grey", lw=0.8)
    axes[2].text(min(final.b_end.min(), 1.0), autoencoder.MIN_BINARY_SHARE,
                 f" rule: >= {autoencoder.MIN_BINARY_SHARE:.0%} in every run", va="top", fontsize=7, color="grey")
    if chosen is not None:
        for ax in axes:
            ax.axvline(chosen["b_end"], color="grey", lw=1, ls=":")
        axes[0].add_line(Line2D([], [], color="grey", lw=1, ls=":",
                                label=f"chosen: b_end = {chosen['b_end']:g}, pace {chosen['pace']}"))
    axes[1].add_line(Line2D([], [], color="black", marker="o", ms=4,
                            label="end of training (mean ± std over seeds); MSE from the binary code"))
    axes[1].add_line(Line2D([], [], color="black", ls="--", lw=0.8, label="MSE from the continuous code"))
    axes[0].set_ylabel(f"held-out precision@{autoencoder.VALIDATION_K}")
    axes[1].set_ylabel("held-out reconstruction MSE")
    axes[2].set_ylabel(f"share of |f| >= {autoencoder.BINARY_LEVEL}")
    axes[2].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("b of the code layer")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plots.figure_legend(fig)
    return fig


def plot_activation_histograms(history: dict, final: Optional[np.ndarray] = None, n_panels: int = 4,
                               title: str = ""):
    """Histograms of the code activations ``f_b`` as ``b`` grows.

    Parameters
    ----------
    history : dict
        ``TanhAEHasher.history_`` (its per-epoch ``histogram`` counts, measured
        on the monitor images).
    final : float array ``(N, n_bits)``, optional
        Activations of the trained encoder on other images (e.g. the test
        set), drawn as a last panel.
    n_panels : int
        Epochs shown, spread evenly from the first to the last.
    """
    import matplotlib.pyplot as plt

    logs = history["logs"]
    picks = sorted(set(np.linspace(0, len(logs) - 1, min(n_panels, len(logs))).round().astype(int)))
    panels = [(f"epoch {logs[i]['epoch']}, b = {logs[i]['b']:.3g}\n"
               f"{logs[i]['binary_fraction']:.1%} with |f| >= {autoencoder.BINARY_LEVEL}",
               np.asarray(logs[i]["histogram"], dtype=float)) for i in picks]
    if final is not None:
        counts, _ = np.histogram(np.asarray(final).ravel(), bins=autoencoder.HISTOGRAM_BINS)
        panels.append((f"trained, test images\n{autoencoder.binary_fraction(final):.1%} with |f| >= {autoencoder.BINARY_LEVEL}",
                       counts.astype(float)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 2.7), squeeze=False)
    width = np.diff(autoencoder.HISTOGRAM_BINS)
    for ax, (label, counts) in zip(axes[0], panels):
        ax.bar(autoencoder.HISTOGRAM_BINS[:-1], counts / counts.sum(), width=width, align="edge", color="#3182bd")
        ax.set_yscale("log")
        ax.set_ylim(1e-5, 1.2)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("f_b(x)")
    axes[0, 0].set_ylabel("share of activations")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_scaled_tanh(bs: Sequence[float] = (1, 4, 16, 100), title: str = ""):
    """``f_b(x)`` for several ``b``, with ``sign(x)`` for reference."""
    import matplotlib.pyplot as plt

    x = torch.linspace(-3, 3, 1201, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for i, b in enumerate(bs):
        # viridis without its pale yellow end, which is hard to see on white
        ax.plot(x.numpy(), autoencoder.scaled_tanh(x, b).numpy(),
                color=plt.get_cmap("viridis")(0.85 * i / max(1, len(bs) - 1)), label=f"b = {b:g}")
    ax.step(x.numpy(), torch.sign(x).numpy(), where="mid", color="black", lw=0.8, ls=":", label="sign(x)")
    ax.axhspan(autoencoder.BINARY_LEVEL, 1.0, color="grey", alpha=0.15)
    ax.axhspan(-1.0, -autoencoder.BINARY_LEVEL, color="grey", alpha=0.15)
    ax.set_xlabel("x")
    ax.set_ylabel("f_b(x) = 2 / (1 + exp(-b x)) - 1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)  # the curves are near -1 there
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_retrieval(images: np.ndarray, labels: np.ndarray, split: protocols.Split, codes,
                   n_queries: int = 8, k: int = 10, seed: int = 0, title: str = ""):
    """Random queries of ``split`` with their top ``k`` results by Hamming distance (own image excluded).

    Parameters
    ----------
    images : uint8 ``(N_pool, H, W, C)``; labels : int ``(N_pool,)``
    split : Split
    codes : :class:`hashstudy.evaluation.Codes` of the split's queries and database
    n_queries, k : rows and results per row
    seed : int
        Which queries are shown.
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(split.query), size=min(n_queries, len(split.query)), replace=False))
    idx, _ = autoencoder.topk_excluding_self(codes.query[rows], codes.database, autoencoder.self_positions(split)[rows], k)
    q_pool, r_pool = split.query[rows], split.database[idx]
    relevant = labels[r_pool] == labels[q_pool][:, None]
    return plots.retrieval_grid(images[q_pool], images[r_pool], relevant, title=title)


def plot_reconstructions(rows: Mapping[str, np.ndarray], title: str = ""):
    """A grid of images: one row per ``{label: uint8 (n, H, W, C)}`` (e.g. input, continuous, binary)."""
    import matplotlib.pyplot as plt

    n = min(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.8 * n + 1.2, 0.85 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[r, j]
            img = imgs[j]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img,
                      cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def plot_hashers_binarisation(hashers: Mapping[int, "autoencoder.TanhAEHasher"], key: str, title: str = ""):
    """:func:`plot_binarisation` of fitted hashers ``{bits: TanhAEHasher}``, the paper's claims marked.

    The paper's stated share of binary activations at the end of training
    (``<key>/tanh_ae/<bits>/binary_fraction`` in ``paper_numbers.csv``, e.g.
    ``mnist/tanh_ae/16/binary_fraction = 1``, "completely discrete") is
    marked for each code length of ``hashers`` it names; a ``key`` the paper
    has no number for (another dataset) draws the runs alone.
    """
    from ..reporting import paper_numbers

    stated = plots.paper_values(paper_numbers("03_tanh_autoencoder"),
                                rf"{re.escape(key)}/tanh_ae/(?P<bits>\d+)/binary_fraction")
    stated = stated[stated.bits.isin(list(hashers))]
    return plot_binarisation({f"{b} bits": h.history_ for b, h in hashers.items()}, title=title,
                             paper={f"{r.bits} bits": r.value for r in stated.itertuples()},
                             paper_source=stated.source.iloc[0] if len(stated) else "")


def plot_hasher_reconstructions(hasher: "autoencoder.TanhAEHasher", images: np.ndarray, title: str = "",
                                continuous: bool = True):
    """:func:`plot_reconstructions` of ``images`` by a fitted hasher.

    Rows: the input, its reconstruction from the continuous code (when
    ``continuous``) and from the binarised code ``sign(f_b)``, labelled
    ``"<bits>-bit code"``.
    """
    rows = {"input": images}
    if continuous:
        rows["continuous code"] = hasher.reconstruct(images, binarise=False)
    rows[f"{hasher.n_bits}-bit code"] = hasher.reconstruct(images)
    return plot_reconstructions(rows, title=title)


def plot_precision_vs_bits(result, title: str = "", metric: str = "precision@90",
                           methods: Sequence[str] = ("tanh_ae", "lsh", "itq")):
    """One metric of :func:`hashstudy.autoencoder.compare` against code length (log2 axis).

    ``result``: the :class:`hashstudy.evaluation.Result` of the comparison;
    one curve per method of ``methods`` (:func:`hashstudy.plots.curves`),
    ticks at the code lengths run.
    """
    series = result.by_bits(metric)
    fig = plots.curves({m: series[m] for m in methods}, xlabel="bits", ylabel=metric, title=title)
    bits = sorted({int(b) for m in methods for b in series[m][0]})
    fig.axes[0].set_xscale("log", base=2)
    fig.axes[0].set_xticks(bits, [str(b) for b in bits])
    return fig
