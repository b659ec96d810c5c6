"""Figure of notebook 07 (the fine-tuned backbone, :mod:`hashstudy.finetune`): test
accuracy against epochs, training-set size, stages trained and input size."""
from __future__ import annotations

from typing import Mapping, Optional

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from . import curves, figure_legend, mark_paper_level

__all__ = ["accuracy_curve"]


def _label(px, stages, n) -> str:
    trained = {0: "frozen (linear classifier)", 1: "stage 6 + head", 2: "stages 5-6 + head"}
    return f"{px} px, {trained.get(int(stages), f'{stages} stages')}, {n:,} images"


def accuracy_curve(curve, final, main: Mapping, *, dataset: str, target: float,
                   paper_levels: Mapping[str, float], stages_n_train: Optional[int] = None):
    """Three panels: test accuracy per epoch of every configuration; final accuracy against
    training-set size (the main input size and stages); final accuracy against stages
    trained, one line per input size (at ``stages_n_train`` images), with the training
    seconds beside each point.

    ``curve``/``final``: :func:`hashstudy.finetune.accuracy_curve` and
    :func:`hashstudy.finetune.final_points`; ``paper_levels``: ``{source: accuracy}`` drawn
    as dashed lines; ``target``: the accuracy the study aims at, dotted.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    series = {}
    for (px, stages, n), g in curve.groupby(["input_size", "stages", "n_train"], sort=False):
        series[_label(px, stages, n)] = (g.epoch.to_numpy(), g.test_accuracy.to_numpy())
    curves(series, xlabel="epoch", ylabel="test accuracy", ax=axes[0], markevery=1,
           legend=None, title=f"{dataset}: test accuracy per epoch")
    by_n = {}
    for px, sub in final[final.stages == main["stages"]].groupby("input_size"):
        sub = sub.sort_values("n_train")
        if len(sub) > 1:
            by_n[_label(px, main["stages"], 0).rsplit(",", 1)[0]] = (sub.n_train.to_numpy(),
                                                                     sub.test_accuracy.to_numpy())
    curves(by_n, xlabel="training images", ylabel="test accuracy (last epoch)", ax=axes[1],
           markevery=1, legend=None, title="against training-set size")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xscale("log")
    ticks = sorted(final[final.stages == main["stages"]].n_train.unique())
    axes[1].set_xticks(ticks, [f"{t / 1000:g}k" for t in ticks])
    axes[1].minorticks_off()
    by_px = {}
    n_main = stages_n_train or main["n_train"]
    for px, g in final[final.n_train == n_main].groupby("input_size"):
        g = g.sort_values("stages")
        by_px[f"{px} px, {n_main:,} images"] = (g.stages.to_numpy(), g.test_accuracy.to_numpy())
        for _, r in g.iterrows():
            axes[2].annotate(f"{r.train_seconds:.0f} s", (r.stages, r.test_accuracy),
                             textcoords="offset points", xytext=(4, -10), fontsize=7)
    curves(by_px, xlabel="block stages trained (0 = frozen)", ylabel="test accuracy (last epoch)",
           ax=axes[2], markevery=1, legend=None, title="against stages trained and input size")
    axes[2].set_xticks(sorted(final.stages.unique()))
    for ax in axes:
        for source, level in paper_levels.items():
            mark_paper_level(ax, level, source=source, label=f"paper, {source}: {level:.3f}")
        ax.axhline(target, color="black", ls=":", lw=1, label=f"target of the study ({target})")
    fig.tight_layout()
    figure_legend(fig, ncol=3)
    return fig
