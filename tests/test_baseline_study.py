"""Notebook 00's study helpers (hashstudy.baseline_study) and figures (hashstudy.plots.baselines)."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hashstudy import baseline_study as bs
from hashstudy import evaluation, profiles, protocols
from hashstudy.plots import baselines as figures
from hashstudy.reporting import Report

METHODS = ["lsh", "pcah", "itq", "cca_itq"]


def _setting(seed=0):
    """Four separable classes in 40-D: 240 training and 80 test items, 20 queries, 120 to train on."""
    rng = np.random.default_rng(seed)
    tr, te = np.arange(240) % 4, np.arange(80) % 4
    labels = np.concatenate([tr, te])
    X = (rng.normal(0, 4, (4, 40))[labels] + rng.normal(0, 1, (labels.size, 40))).astype(np.float32)
    return bs.Setting(X, labels, protocols.make_split(tr, te, "query1k", seed, dataset="mnist",
                                                      query_per_class=5, train_per_class=30))


@pytest.fixture
def study(isolated_dirs):
    """Two settings run at 8 and 32 bits, as notebook 00 runs them."""
    report = Report("00_baselines", "smoke")
    settings = {("mnist", "pixels"): _setting(0), ("cifar10", "efficientnet_lite0"): _setting(1)}
    results = bs.run_settings(report, settings, METHODS, [8, 32], seed=0, params={},
                              metric_keys=["map@1000", "map_all", "hd2p"])
    return report, settings, results


def test_profile_sizes_are_read_from_the_library():
    assert profiles.notebook_sizes("00_baselines") == bs.PROFILE_SIZES
    assert bs.PROFILE_SIZES["quick"]["params"] == {"sth": {"max_train": 2000}}


def test_check_parameters():
    kw = dict(datasets=["mnist"], features={"mnist": ["pixels"]}, protocol="query1k", bits=[16, 32, 64],
              methods=["lsh", "sth"], method_params={"sth": {"k": 5}})
    bits, params = bs.check_parameters(**kw, size=bs.PROFILE_SIZES["smoke"])
    assert bits == [16, 32]  # smoke stops at 32 bits
    assert params == {"lsh": {}, "sth": {"k": 5}}
    bits, params = bs.check_parameters(**kw, size=bs.PROFILE_SIZES["quick"])
    assert bits == [16, 32, 64] and params["sth"] == {"max_train": 2000, "k": 5}  # the profile's, then ours
    with pytest.raises(ValueError, match="features has no entry for dataset 'cifar10'"):
        bs.check_parameters(**{**kw, "datasets": ["mnist", "cifar10"]}, size=bs.PROFILE_SIZES["quick"])
    with pytest.raises(ValueError, match="feature type of mnist"):
        bs.check_parameters(**{**kw, "features": {"mnist": ["pixel"]}}, size=bs.PROFILE_SIZES["quick"])
    with pytest.raises(ValueError, match="method in method_params"):
        bs.check_parameters(**{**kw, "method_params": {"itq": {}}}, size=bs.PROFILE_SIZES["quick"])


def test_run_settings_records_evaluation_run(study):
    report, settings, results = study
    s = settings[("mnist", "pixels")]
    direct = evaluation.run(METHODS, [8, 32], s.X, s.labels, s.split, seed=0, progress=False,
                            metric_keys=["map@1000", "map_all", "hd2p"])
    pd.testing.assert_frame_equal(results[("mnist", "pixels")].table.drop(columns="value"),
                                  direct.table.drop(columns="value"))
    got = results[("mnist", "pixels")].table.query("metric != 'fit_seconds'").value.to_numpy()
    assert np.allclose(got, direct.table.query("metric != 'fit_seconds'").value.to_numpy())
    assert report.metrics["mnist/pixels/itq/32/map_all"] == pytest.approx(
        direct.table.query("method == 'itq' and bits == 32 and metric == 'map_all'").value.item())
    assert "cifar10/efficientnet_lite0/cca_itq/8/hd2p" in report.metrics
    assert not any("fit_seconds" in k for k in report.metrics)


def test_tables(study):
    report, settings, results = study
    w = bs.method_table(results[("mnist", "pixels")], "map_all", ["cca_itq", "lsh", "itq"])
    assert list(w.index) == [("unsupervised", "lsh"), ("unsupervised", "itq"), ("supervised", "cca_itq")]
    assert list(w.columns) == ["8 bits", "32 bits"]
    assert w.loc[("unsupervised", "itq"), "32 bits"] == report.metrics["mnist/pixels/itq/32/map_all"]
    shown = bs.report_tables(report, results, settings, METHODS, ["map@1000", "map_all"])
    assert len(shown) == 4 and "mnist / pixels" in shown[0].data
    for name in ("mnist_pixels_map_at_1000", "mnist_pixels_map_all", "mnist_pixels_fit_seconds",
                 "cifar10_efficientnet_lite0_map_all"):
        assert (report.dir / f"{name}.csv").exists()
    fit = pd.read_csv(report.dir / "mnist_pixels_fit_seconds.csv", index_col=0)
    assert list(fit.index) == METHODS


def test_itq_check_band_and_summary(study):
    report, settings, results = study
    checks, verdict = bs.itq_check(report, settings, results, methods=METHODS, bits=[8, 32], seed=0,
                                   check_seeds=[0, 1])
    assert list(checks.bits.unique()) == [32] and len(checks) == 4  # 2 settings x 2 metrics
    assert (checks.seeds == 2).all()  # seed 0 from the run, seed 1 re-run
    row = checks[(checks.setting == "mnist/pixels") & (checks.metric == "map_all")].iloc[0]
    assert row.pcah == report.metrics["mnist/pixels/pcah/32/map_all"]
    assert row.itq_beats_both == (row.itq_min > max(row.lsh_max, row.pcah))
    assert (report.dir / "check_itq_vs_lsh_pcah.csv").exists()
    assert verdict.startswith("ITQ beats LSH and PCAH" if checks.itq_beats_both.all() else "ITQ does **not**")
    none, text = bs.itq_check(report, settings, results, methods=["lsh", "itq"], bits=[8, 32], seed=0,
                              check_seeds=[1])
    assert none.empty and text.startswith("The ITQ check needs itq, lsh and pcah")

    metrics = {"mnist/pixels/itq/32/map_all": 0.40}
    assert "inside the reported band 0.38–0.45" in bs.band_text(metrics, settings, "quick")
    assert "outside" in bs.band_text({"mnist/pixels/itq/32/map_all": 0.2}, settings, "quick")
    assert "synthetic digits" in bs.band_text(metrics, settings, "smoke")
    assert bs.band_text({}, settings, "quick") == "MNIST pixels with ITQ at 32 bits were not part of this run."

    lines = bs.summary_lines(results, methods=METHODS, bits=[8, 32])
    assert len(lines) == 2 and lines[0].startswith("- **mnist / pixels, 32 bits**: best unsupervised method")
    at = results[("mnist", "pixels")].wide("map_all")[32]
    best = at.loc[["lsh", "pcah", "itq"]].idxmax()  # the supervised CCA-ITQ is never "best"
    assert f"is `{best}` ({at[best]:.3f})" in lines[0] and f"supervised CCA-ITQ {at['cca_itq']:.3f}" in lines[0]


def test_paper_comparison_and_text():
    metrics = {"cifar10/efficientnet_lite0/itq/32/map@1000": 0.30, "cifar10/efficientnet_lite0/lsh/32/map@1000": 0.20,
               "cifar10/pixels/itq/32/map@1000": 0.15}
    comp = bs.paper_comparison(metrics, ["efficientnet_lite0", "pixels"], 128)
    assert list(comp.columns[:4]) == ["key", "table", "method", "bits"]
    row = comp[(comp.key == "cifar10/efficientnet_lite0/itq/32/map@1000") & (comp.table == "Table 4")].iloc[0]
    assert row.ours == 0.30 and row["ours (pixels)"] == 0.15 and "128-px" in row.note
    assert row.difference == pytest.approx(0.30 - row.paper)
    text = bs.paper_text(comp)
    assert "Against Table 4" in text and "Against Table 2" in text
    # Table 2 prints ITQ above LSH at 32 bits, as are ours (Table 4 has no LSH)
    assert "Whether ITQ ranks above LSH agrees between the paper and us in 1 of 1" in text
    empty = bs.paper_comparison({}, ["pixels"], 128)
    assert bs.paper_text(empty) == "No number printed in the papers matches a setting of this run."


def test_figures(study):
    report, settings, results = study
    table = results[("cifar10", "efficientnet_lite0")].table
    marks = figures.paper_marks()
    assert {"dataset", "features", "method", "bits", "metric"} <= set(marks.columns) and len(marks)
    fig = figures.map_vs_bits(table, dataset="cifar10", features="efficientnet_lite0", methods=METHODS,
                              bits=[8, 32], paper=marks)
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "cifar10 / efficientnet_lite0: map@1000"
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert lines["cca_itq (supervised)"].get_linestyle() == "--" and lines["itq"].get_linestyle() == "-"
    # the DDH paper's 32-bit numbers of lsh, pcah and itq on this setting are marked (8 bits is not printed)
    paper = [ln for ln in fig.axes[0].get_lines() if getattr(ln, "_hashstudy_paper", None)]
    assert paper and all(set(ln.get_xdata()) <= {32} for ln in paper)
    assert not [ln for ln in fig.axes[2].get_lines() if getattr(ln, "_hashstudy_paper", None)]  # no hd2p
    plt.close(fig)
    s = settings[("mnist", "pixels")]
    fig = figures.curves_by_bits(results[("mnist", "pixels")].codes, s.labels[s.split.query],
                                 s.labels[s.split.database], dataset="mnist", features="pixels",
                                 methods=METHODS, bits=[8, 32], kind="precision@k", max_k=20)
    assert [ax.get_title() for ax in fig.axes] == ["mnist / pixels, 8 bits", "mnist / pixels, 32 bits"]
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 20
    plt.close(fig)
    figures.report_map_figures(report, results, methods=METHODS, bits=[8, 32])
    figures.report_curve_figures(report, results, settings, methods=METHODS, bits=[8, 32], max_k=20)
    for d, f in settings:
        for name in ("map_vs_bits", "pr", "precision_at_k"):
            assert (report.dir / f"{d}_{f}_{name}.png").exists()
    plt.close("all")
