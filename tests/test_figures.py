"""Figures: shown in the executed notebooks, saved once, and drawn without misleading."""
import base64
import builtins
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hashstudy import config, plots
from hashstudy.reporting import Report

EXECUTED = sorted((config.repo_root() / "reports").glob("*/quick/*.ipynb"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_outputs(nb: dict) -> list[bytes]:
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            data = o.get("data", {}).get("image/png")
            if data is not None:
                out.append(base64.b64decode("".join(data) if isinstance(data, list) else data))
    return out


# (a) every figure a committed report saved is also visible in its executed notebook

def test_there_are_executed_notebooks():
    assert EXECUTED, "no executed notebooks under reports/*/quick/"


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.parent.parent.name)
def test_executed_notebook_shows_every_saved_figure(path: Path):
    nb = json.loads(path.read_text())
    shown = _png_outputs(nb)
    saved = sorted(p.name for p in path.parent.glob("*.png"))
    assert len(shown) >= len(saved), (
        f"{path.relative_to(config.repo_root())} shows {len(shown)} image(s) but its report "
        f"folder holds {len(saved)} PNG file(s) ({', '.join(saved)}); regenerate the report")
    assert all(img.startswith(PNG_MAGIC) for img in shown)


# (b) Report.figure: saved, then displayed exactly once inside a kernel

@pytest.fixture
def fake_kernel(tmp_path, monkeypatch):
    """An IPython shell that looks like a Jupyter kernel and records what it displays."""
    pytest.importorskip("IPython")
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class Recorder(DisplayPublisher):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.published = []

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                    **kwargs):
            self.published.append(data)

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    cfg = Config()
    cfg.HistoryManager.enabled = False
    assert not InteractiveShell.initialized()
    saved_builtins = dict(vars(builtins))
    shell = InteractiveShell.instance(config=cfg)
    try:
        shell.display_pub = Recorder(shell=shell)
        shell.kernel = object()  # what ipykernel's shell carries and a terminal's does not
        yield shell.display_pub
    finally:
        InteractiveShell.clear_instance()
        # the shell adds `display` and `__IPYTHON__` to builtins; later tests must not see them
        for name in set(vars(builtins)) - set(saved_builtins):
            delattr(builtins, name)


def _figure():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    return fig


def test_report_figure_in_a_kernel_saves_and_displays_once(fake_kernel):
    report = Report("00_baselines", "smoke")
    fig = _figure()
    path = report.figure("line", fig)
    assert path.exists() and path.read_bytes().startswith(PNG_MAGIC)
    pngs = [d["image/png"] for d in fake_kernel.published if "image/png" in d]
    assert len(fake_kernel.published) == 1 and len(pngs) == 1
    shown = pngs[0] if isinstance(pngs[0], bytes) else base64.b64decode(pngs[0])
    assert shown == path.read_bytes()  # the inline image is the saved file
    # closed: the inline backend's end-of-cell flush (and plt.show) cannot show it again
    assert not plt.fignum_exists(fig.number)


def test_report_figure_outside_a_kernel_only_saves():
    from IPython.core.interactiveshell import InteractiveShell

    assert not InteractiveShell.initialized()
    report = Report("00_baselines", "smoke")
    fig = _figure()
    path = report.figure("line", fig)
    assert path.exists()
    assert plt.fignum_exists(fig.number)
    plt.close(fig)


def test_plots_module_leaves_the_backend_alone():
    source = Path(plots.__file__).read_text()
    assert "matplotlib.use(" not in source


# (c) plot helpers

def test_curves_runs_y_from_0_to_1_by_default():
    fig = plots.curves({"itq": ([0, 0.5, 1], [0.4, 0.45, 0.5])}, xlabel="recall",
                       ylabel="precision")
    assert fig.axes[0].get_ylim() == (0.0, 1.0)
    plt.close(fig)
    fig = plots.curves({"loss": ([1, 2, 3], [5.0, 3.0, 2.0])}, xlabel="epoch", ylabel="loss",
                       ylim=None)
    assert fig.axes[0].get_ylim()[1] > 1
    plt.close(fig)


def test_curves_legend_sits_outside_the_axes():
    fig = plots.curves({"itq": ([0, 1], [0.2, 0.3]), "lsh": ([0, 1], [0.1, 0.2])},
                       xlabel="x", ylabel="y")
    fig.canvas.draw()
    legend = fig.axes[0].get_legend().get_window_extent()
    axes = fig.axes[0].get_window_extent()
    assert legend.x0 >= axes.x1
    plt.close(fig)


def test_every_series_of_a_figure_gets_its_own_colour():
    labels = ["lsh", "sklsh", "pcah", "sh", "itq", "cca_itq (supervised)", "sph", "kmh", "sth",
              "cnnh", "DSTH slice_batchnorm", "latent 48 bits (Hamming)",
              "latent 48 bits (coarse-to-fine)", "ddh"]
    look = plots.styles(labels)
    colours = [look[lab]["color"] for lab in labels]
    for i in range(len(colours)):
        for j in range(i):
            assert plots._distance(colours[i], colours[j]) >= 0.2, (labels[i], labels[j])
    # a baseline keeps its colour whatever else is in the figure
    assert plots.styles(["ddh", "itq"])["itq"] == plots.style("itq")


def test_mark_paper_draws_at_the_papers_values():
    fig = plots.curves({"itq": ([16, 32, 64], [0.30, 0.35, 0.40]),
                        "lsh": ([16, 32, 64], [0.20, 0.25, 0.30])},
                       xlabel="bits", ylabel="mAP@1000")
    ax = fig.axes[0]
    marks = plots.mark_paper(ax, [16, 32, 64], [0.157, 0.162, 0.166], source="ddh_2018 Table 2",
                             method="itq")
    np.testing.assert_allclose(marks.get_xdata(), [16, 32, 64])
    np.testing.assert_allclose(marks.get_ydata(), [0.157, 0.162, 0.166])
    assert marks.get_markerfacecolor() == "none"  # open marker
    assert marks.get_markeredgecolor() == ax.get_lines()[0].get_color()  # the method's colour
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts.count("paper (Table 2)") == 1 and texts[-1] == "paper (Table 2)"
    # a second source on the same axes gets another marker shape
    other = plots.mark_paper(ax, 32, 0.255, source="ddh_2018 Table 4")
    assert other.get_marker() != marks.get_marker()
    assert other.get_markeredgecolor() == "black"
    assert "paper (Table 4)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylim() == (0.0, 1.0)
    plt.close(fig)


def test_mark_paper_level_and_figure_legend():
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        plots.curves({"dsth": ([0, 1], [0.9, 0.5]), "cnnh": ([0, 1], [0.8, 0.6])}, ax=ax,
                      xlabel="recall", ylabel="precision", legend=None)
    line = plots.mark_paper_level(axes[0], 0.7, axis="x", source="Sec. 3.1 text on Fig. 2")
    np.testing.assert_allclose(line.get_xdata(), [0.7, 0.7])
    legend = plots.figure_legend(fig)
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["dsth", "cnnh", "paper (Sec. 3.1)"]
    assert all(ax.get_legend() is None for ax in axes)
    plt.close(fig)


def test_paper_values_parses_keys():
    frame = pd.DataFrame({"paper": ["x"] * 3,
                          "key": ["cifar10/ddh/16/map@1000", "cifar10/itq/32/map@1000",
                                  "cifar10/ddh/16/hd2p"],
                          "value": [0.447, 0.2, 0.5], "source": ["Table 2"] * 3,
                          "note": [np.nan] * 3})
    pv = plots.paper_values(frame, r"cifar10/(?P<method>[^/]+)/(?P<bits>\d+)/map@1000")
    assert list(pv.method) == ["ddh", "itq"] and list(pv.bits) == [16, 32]
    assert list(pv.value) == [0.447, 0.2]


def test_bar_table_marks_paper_values_on_their_bars():
    ours = pd.DataFrame({"metric": ["a", "b"] * 2, "net": ["x", "x", "y", "y"],
                         "value": [0.2, 0.4, 0.3, 0.5]})
    paper = ours.assign(value=[0.6, 0.7, 0.8, 0.9])
    fig = plots.bar_table(ours, x="metric", y="value", hue="net", paper=paper,
                          paper_source="Table III")
    ax = fig.axes[0]
    centres = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    marks = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    xs = sorted(np.concatenate([ln.get_xdata() for ln in marks]))
    np.testing.assert_allclose(xs, centres)
    assert ax.get_ylim() == (0.0, 1.0)
    plt.close(fig)


# the method modules' figures use the same conventions

def test_radar_marks_the_papers_values_per_configuration():
    from hashstudy.plots import dsth_journal as dj_plots

    cols = ["P@R 0.1", "P@R 0.5", "max_f@0.5"]
    ours = pd.DataFrame([[0.5, 0.3, 0.4], [0.6, 0.35, 0.45]], index=["mlp_sigmoid", "slice_batchnorm"],
                        columns=cols)
    paper = pd.DataFrame([[0.9, np.nan, 0.66]], index=["slice_batchnorm"], columns=cols)
    fig = dj_plots.radar(ours, paper=paper, paper_source="dsth_tcyb2018 Table III")
    ax = fig.axes[0]
    marks = [ln for ln in ax.get_lines() if getattr(ln, "_hashstudy_paper", None)]
    assert len(marks) == 1
    np.testing.assert_allclose(marks[0].get_ydata(), [0.9, 0.66])
    polygon = [ln for ln in ax.get_lines() if ln.get_label() == "slice_batchnorm"][0]
    assert marks[0].get_markeredgecolor() == polygon.get_color()
    assert "paper (Table III)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)


def test_plot_binarisation_marks_the_papers_claim_at_the_last_epoch():
    from hashstudy.plots import autoencoder as ae_plots

    def history(fraction):
        return {"logs": [{"epoch": e, "b": 10.0 ** e, "binary_fraction": fraction * e / 3,
                          "mse_binary": 0.1 / e, "mse_continuous": 0.05 / e} for e in (1, 2, 3)]}

    fig = ae_plots.plot_binarisation({"8 bits": history(0.9), "16 bits": history(0.99)},
                                        paper={"16 bits": 1.0},
                                        paper_source="sec. 4 (completely discrete)")
    share = fig.axes[1]
    marks = [ln for ln in share.get_lines() if getattr(ln, "_hashstudy_paper", None)]
    assert len(marks) == 1
    np.testing.assert_allclose(marks[0].get_xdata(), [3])
    np.testing.assert_allclose(marks[0].get_ydata(), [1.0])
    assert share.get_ylim() == (0.0, 1.0)
    assert all(ax.get_legend() is None for ax in fig.axes)  # one legend, below the panels
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:2] == ["8 bits", "16 bits"] and texts[-1].startswith("paper (sec. 4)")
    plt.close(fig)
