"""Notebook 04's library steps (hashstudy.ddh, hashstudy.plots.ddh, protocols.ddh_holdout):
the toy cells' answers, the experiment's report keys, the named held-out splits."""
import numpy as np
import pandas as pd
import pytest

from hashstudy import config, ddh, evaluation, protocols
from hashstudy.plots import ddh as ddh_plots
from hashstudy.reporting import Report


def _blobs(n_per_class=30, n_classes=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 3.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (centers[y] + rng.normal(size=(y.size, dim))).astype(np.float32), y


# ---------------------------------------------------------------------------
# the toy cells


def test_loss_breakdown_gives_the_hand_computed_terms():
    s = np.array([[1, 1, -1, -1], [1, 1, -1, -1], [-1, -1, 1, 1], [-1, -1, 1, 1]])
    a, c = [1, 1, 1, 1], [-1, -1, -1, -1]
    t = ddh.loss_breakdown({"share": [a, a, c, c], "half": np.multiply(0.5, [a, a, c, c]),
                            "swap": [a, c, c, c]}, s, lambda1=15.0)
    assert list(t.index) == ["share", "half", "swap"]
    assert t.loc["share"].abs().max() == pytest.approx(0.0)
    # six pairs off by 0.75; sixteen entries 0.5 from their sign; B = 4
    assert t.loc["half", "pairwise"] == pytest.approx(0.5 * 6 * 0.75 ** 2 / 4)
    assert t.loc["half", "quantization"] == pytest.approx(0.5 * 16 * 0.25 / 4)
    assert t.loc["half", "loss"] == pytest.approx((0.5 * 6 * 0.75 ** 2 + 15 * 2) / 4)
    # three pairs off by 2, codes binary
    assert t.loc["swap", "pairwise"] == pytest.approx(0.5 * 3 * 4 / 4)
    assert t.loc["swap", "quantization"] == pytest.approx(0.0)
    assert (t["loss"] == t["pairwise"] + t["lambda1 x quantization"]).all()


def test_neighbourhood_steps_on_the_notebook_points():
    angles = np.deg2rad([0, 8, 20, 33, 50, 95, 105, 118])
    t = ddh.neighbourhood_steps(np.c_[np.cos(angles), np.sin(angles)], k1=2, k2=3)
    assert t.loc[0, "L_i"] == [1, 2] and t.loc[0, "united"] == [0, 1, 2]
    assert t.loc[0, "S row (eq. 3)"] == [1, 2, 3]  # 3 reached through 2
    for i, r in t.iterrows():
        union = sorted(set().union(*(t.loc[k, "L_i"] for k in r["united"])) - {i})
        assert r["S row (eq. 3)"] == union  # eq. 3: the union of the united lists
        assert set(r["S row (eq. 3)"]) <= set(r["S row (symmetrised)"])
        assert r["overlaps"][i] == 2
        group = set(range(5)) if i < 5 else set(range(5, 8))
        assert set(r["S row (symmetrised)"]) <= group  # no pair crosses the groups
    with pytest.raises(ValueError):
        ddh.neighbourhood_steps(np.ones((60, 2)), k1=2, k2=2)


# ---------------------------------------------------------------------------
# setup


def test_model_variants_and_their_settings():
    params = dict(epochs=4, holdout=0, init="random", hidden=[], warmup=2, patience=3, progress=False)
    v = ddh.model_variants(params, itq_init_epochs=10)
    assert list(v) == ["ddh_epoch0", "ddh", "ddh_itq_init_epoch0", "ddh_itq_init"]
    assert v["ddh_epoch0"]["epochs"] == 0 and v["ddh"] == params
    assert v["ddh_itq_init"]["init"] == "itq" and v["ddh_itq_init"]["warmup"] == 0
    assert v["ddh_itq_init"]["epochs"] == 4  # at most the reported model's epochs
    assert list(ddh.model_variants({**params, "finetune": True}, 10)) == ["ddh_epoch0", "ddh"]
    with pytest.raises(ValueError):
        ddh.model_variants({**params, "init": "nonsense"}, 10)
    settings = ddh.variant_settings(v)
    assert list(settings.model) == list(v) and settings.patience.isna().all()
    assert set(ddh.PROFILE_SIZES) == set(config.PROFILES)
    with pytest.raises(ValueError):
        ddh.check_shallow(["itq", "cca_itq"])  # supervised


def test_shallow_factories_wrap_what_the_cache_key_names():
    f = ddh.shallow_factories(["itq", "pcah", "sph", "itq_normalised"], seed=3, max_train=50)
    itq, pcah, sph, norm = (f[m](8) for m in ("itq", "pcah", "sph", "itq_normalised"))
    assert isinstance(itq, ddh.CachedFit) and itq.spec == {"method": "itq", "bits": 8, "seed": 3}
    assert pcah.spec["seed"] is None  # nothing random: one fit for every seed
    assert isinstance(sph.hasher, ddh.Subsampled) and sph.spec["max_train"] == 50
    assert isinstance(norm.hasher, ddh.Normalised)
    assert "max_train" not in ddh.shallow_factories(["sph"], 0)["sph"](8).spec


# ---------------------------------------------------------------------------
# splits


def _toy_split():
    train_labels, test_labels = np.repeat(np.arange(3), 8), np.repeat(np.arange(3), 2)
    split = protocols.make_split(train_labels, test_labels, "test-train", dataset="toy")
    return split, np.concatenate([train_labels, test_labels])


def test_holdout_split_moved_to_protocols_with_an_alias():
    split, labels = _toy_split()
    assert ddh.holdout_split is protocols.holdout_split
    hold = protocols.holdout_split(split, labels, 2, seed=0)
    assert hold.name == "test-train/holdout[query_per_class=2]"
    assert np.isin(hold.query, split.train).all() and not np.isin(hold.query, hold.train).any()
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError):
            protocols.holdout_split(split, labels, bad)
    with pytest.raises(ValueError):
        protocols.holdout_split(split, labels, 8)  # a class would have no training image left


def test_ddh_holdout_is_the_models_split_and_is_saved():
    split, _ = _toy_split()
    fit_rows, held_rows = np.array([0, 1, 2, 4, 5, 7, 8, 10, 11]), np.array([3, 6, 9])
    hold = protocols.ddh_holdout(split, fit_rows, held_rows)
    assert hold.name == "test-train/ddh-holdout[3]"
    assert np.array_equal(hold.query, split.train[held_rows])
    assert np.array_equal(hold.database, split.train[fit_rows]) and np.array_equal(hold.train, hold.database)
    saved = list((config.cache_dir("splits")).glob("*ddh-holdout*"))
    assert len(saved) == 1
    with pytest.raises(ValueError):
        protocols.ddh_holdout(split, fit_rows, np.array([0, 3]))


# ---------------------------------------------------------------------------
# the experiment, on blobs


def _blob_split(y_train, y_test):
    return protocols.make_split(y_train, y_test, "test-train", dataset="blobs")


def test_run_retrieval_gains_and_validation_fill_the_report():
    X, y = _blobs(40, 3, 16)
    Xq, yq = _blobs(5, 3, 16, seed=0)
    Xp, labels = np.concatenate([X, Xq]), np.concatenate([y, yq])
    split = _blob_split(y, yq)
    params = dict(k1=5, k2=2, epochs=2, holdout=15, patience=2, warmup=1, batch_size=32, seed=0,
                  progress=False)
    variants = ddh.model_variants(params, itq_init_epochs=1)
    report = Report("04_ddh_test", "smoke")
    result = ddh.run_retrieval(report, Xp, labels, split, [8, 16], methods=["lsh", "itq"],
                               variants=variants, seed=0, dataset="blobs")
    assert isinstance(result, evaluation.Result)
    order = ["lsh", "itq", "itq_normalised", *variants]
    assert list(ddh.wide(result.table, "map@1000").index) == order
    assert list(ddh.wide(result.table, "map@1000").columns) == ["8 bits", "16 bits"]
    for key in ("blobs/ddh/8/train_seconds", "blobs/ddh/16/epochs", "blobs/itq_normalised/16/map@1000",
                "blobs/ddh_itq_init/8/weights_from_cache", "blobs/lsh/8/hd2p"):
        assert key in report.metrics, key
    fit = result.table[(result.table.metric == "fit_seconds") & (result.table.method == "ddh")]
    assert np.allclose(fit.value, [result.fitted[("ddh", b)].fit_seconds_ for b in (8, 16)])
    assert (report.dir / "blobs_map_at_1000.csv").exists()

    gains = ddh.training_gain(report, result, [8, 16], dataset="blobs")
    assert np.allclose(gains["ddh gain"], gains["ddh"] - gains["ddh_epoch0"])
    assert report.metrics["blobs/ddh_itq_init/16/gain_over_start"] == pytest.approx(
        gains["ddh_itq_init gain"].iloc[1])

    curves, itq = ddh.report_validation(report, result, Xp, labels, split, validation_bits=16,
                                        seed=0, dataset="blobs")
    assert set(curves.bits) == {8, 16} and curves.groupby("bits").kept.sum().eq(1).all()
    assert report.metrics["blobs/validation/itq/16/map@1000"] == itq
    fig = ddh_plots.validation_curve(curves, itq, 16)
    assert any(ln.get_linestyle() == "--" for ln in fig.axes[0].get_lines())  # ITQ's level

    fig = ddh_plots.pr_curves(result, labels, split, [8, 16], dataset="blobs")
    assert len(fig.axes[0].lines) == len(order)
    fig = ddh_plots.map_vs_bits(result, [8, 16], dataset="blobs", backbone="none")
    assert len(fig.axes[0].lines) >= len(order)


def test_summary_and_differences_name_the_numbers():
    split, _ = _toy_split()
    report = Report("04_ddh_test", "smoke")
    report.add("cifar10/ddh/16/map@1000", 0.5)
    report.add("cifar10/itq/16/map@1000", 0.4)
    comparison = pd.DataFrame({"key": ["cifar10/ddh/16/map@1000", "cifar10/itq/16/map@1000"],
                               "table": ["Table 2", "Table 4"], "paper": [0.447, 0.3],
                               "ours": [0.5, 0.4], "difference": [0.053, 0.1]})
    classification = {"cifar10": pd.DataFrame({"method": ["ddh"], "bits": [64], "accuracy": [0.8]})}
    params = dict(init="random", warmup=5, epochs=3, optimizer="adam", lr=0.001, lambda1=15.0, k1=15,
                  k2=6, holdout=0, patience=3, supervised=False)
    text = ddh.summary_text(report, comparison, classification, dataset="cifar10", split=split,
                            backbone="net", input_size=64, params=params)
    assert "**0.500** (paper: 0.447); itq: 0.400" in text and "ddh 64 bits 0.800" in text
    assert "early stopping" not in text and "Retrieval (Tables 2 and 4)" in text
    assert "helps" not in text and "beat" not in text  # the verdicts are the ledger's
    diff = ddh.paper_differences(comparison, backbone="net", split=split, oxford17=False)
    assert "+0.053 at 16 bits (Table 2)" in diff and "meet or beat" in diff
    assert "Table 4" in diff and "Oxford-17" in diff
