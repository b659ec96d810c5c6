"""DSTH (conference version): label stage, hash function, protocols and the STL-10 path."""
import numpy as np
import pandas as pd
import pytest

from hashstudy import dsth, graph, metrics, synthetic, training


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _data(n, seed, n_classes=4):
    labels = np.arange(n) % n_classes
    return synthetic.class_images(labels, n_classes, size=16, channels=1, seed=seed), labels


def _small(**kw):
    params = dict(k=5, widths=(4, 8, 8), hidden=32, feature_epochs=8, hash_epochs=15,
                  batch_size=16, lr=3e-3, progress=False)
    params.update(kw)
    return dsth.DSTH(8, (16, 16, 1), **params)


def test_dsth_learns_hash_labels_and_a_hash_function():
    train_x, train_y = _data(96, 0)
    test_x, test_y = _data(40, 1)
    hasher = _small().fit(train_x, train_y)
    assert hasher.hash_labels_.shape == (96, 8) and hasher.hash_labels_.dtype == np.uint8
    assert hasher.embedding_.shape == (96, 8) and np.all(np.diff(hasher.eigenvalues_) >= 0)
    # the separable classes are components of the kNN graph of CNN features, so
    # the first n_classes - 1 eigenvectors (zero eigenvalue) split them exactly
    first = hasher.hash_labels_[:, :3]
    assert np.allclose(hasher.eigenvalues_[:3], 0, atol=1e-6)
    assert metrics.mean_average_precision(first, first, train_y, train_y, topk=None) == pytest.approx(1.0, abs=1e-12)
    # the learned hash function reproduces most label bits and generalises to new images
    assert hasher.label_fit_ > 0.75
    q, db = hasher.encode(test_x), hasher.encode(train_x)
    assert q.shape == (40, 8) and set(np.unique(q)) <= {0, 1}
    assert metrics.mean_average_precision(q, db, test_y, train_y, topk=None) > 0.9


def test_without_supervised_stage_the_knn_extension_encodes_new_images():
    train_x, train_y = _data(96, 0)
    test_x, test_y = _data(40, 1)
    hasher = _small(supervised_stage=False).fit(train_x, train_y)
    assert hasher.hash_net_ is None
    q = hasher.encode(test_x)
    # chance is about 0.27 here
    assert metrics.mean_average_precision(q, hasher.hash_labels_, test_y, train_y,
                                          topk=None) > 0.7


@pytest.mark.parametrize("rule", ["zero", "mean", "median", "ncut"])
def test_threshold_rule_sets_the_bit_thresholds(rule):
    x, y = _data(64, 0)
    hasher = _small(threshold=rule, hash_epochs=1).fit(x, y)
    Y = hasher.embedding_
    if rule == "ncut":  # the graph of eq. 1, rebuilt from the features
        features = hasher._features(dsth.as_image_tensor(x, hasher.input_shape))
        expected = graph.ncut_thresholds(graph.knn_graph(features, hasher.k), Y)[0]
    else:
        expected = {"zero": np.zeros(8), "mean": Y.mean(0), "median": np.median(Y, 0)}[rule]
    assert np.allclose(hasher.thresholds_, expected)
    assert np.array_equal(hasher.hash_labels_, (Y >= expected).astype(np.uint8))


def test_second_fit_loads_every_stage_from_the_cache(monkeypatch):
    x, y = _data(48, 0)
    first = _small(feature_epochs=2, hash_epochs=2).fit(x, y)

    def no_training(*a, **k):
        raise AssertionError("trained again instead of loading the cached weights")

    monkeypatch.setattr(training, "fit", no_training)
    second = _small(feature_epochs=2, hash_epochs=2).fit(x, y)
    assert np.array_equal(first.hash_labels_, second.hash_labels_)
    assert np.array_equal(first.encode(x), second.encode(x))


def test_label_stage_needs_class_labels():
    x, _ = _data(32, 0)
    with pytest.raises(ValueError, match="class labels"):
        _small().fit(x)
    with pytest.raises(ValueError, match="labelled"):
        _small().fit(x, np.full(32, -1))
    with pytest.raises(ValueError, match="threshold"):
        _small(threshold="otsu")


def test_test_query_split_uses_the_test_split_as_database(isolated_dirs):
    synthetic.write_mnist_idx(isolated_dirs / "data", 300, 100, seed=0)
    split = dsth.test_query_split("mnist", seed=3, query_per_class=2, n_train=120)
    n_tr = split.n_train_split
    assert split.query.size == 20 and split.train.size == 120
    assert np.all(split.query >= n_tr) and np.all(split.database >= n_tr)
    assert np.all(split.train < n_tr)
    assert np.intersect1d(split.query, split.database).size == 0
    assert split.query.size + split.database.size == split.n_test_split
    assert split.name == "test10pc-test[query_per_class=2,n_train=120]"
    again = dsth.test_query_split("mnist", seed=3, query_per_class=2, n_train=120)
    assert np.array_equal(split.query, again.query) and np.array_equal(split.train, again.train)


def test_stl10_path_on_tiny_binary_files(isolated_dirs):
    synthetic.write_stl10_binary(isolated_dirs / "data", n_train=40, n_test=40,
                                 n_unlabeled=60, seed=0)
    exp = dsth.run_experiment(
        "stl10", 8, queries={"stl10": {"query_per_class": 1}}, n_train=50,
        methods=("dsth", "cnnh", "itq"), pixel_side=8, progress=False,
        dsth=dict(k=5, widths=(4, 4, 4), hidden=16, feature_epochs=2, hash_epochs=2,
                  batch_size=16),
        cnnh=dict(widths=(4, 4, 4), hidden=16, epochs=2, batch_size=16))
    split = exp.splits["stl10"]
    # training: the unlabeled sample; queries and database: the labelled test split
    assert split.train.size == 50 and np.all(exp.labels[split.train] == -1)
    assert split.query.size == 10 and split.database.size == 30
    assert np.all(exp.labels[split.query] >= 0) and np.all(exp.labels[split.database] >= 0)
    assert exp.images.shape[1:] == (96, 96, 3)
    # the label-stage CNN and CNNH learn from the labelled training split
    assert exp.hashers["dsth"].label_cnn_.out.out_features == 10
    assert exp.hashers["dsth"].hash_labels_.shape == (50, 8)
    assert exp.hashers["cnnh"].train_index_.size == 40
    m = exp.metrics()
    for method in ("dsth", "cnnh", "itq"):
        assert 0 <= m[f"stl10/{method}/8/map_all"] <= 1
        assert f"stl10/{method}/8/precision@recall1.0" in m
    table = exp.recall_table("stl10")
    assert list(table.columns)[:2] == ["P@R=0.1", "P@R=0.2"] and "map_all" in table.columns


def test_above_until_reads_the_crossing_level():
    levels = [f"P@R={v}" for v in dsth.RECALL_LEVELS]
    table = pd.DataFrame([np.linspace(1, 0.1, 10), np.full(10, 0.5)], index=["a", "b"],
                         columns=levels)
    assert dsth.above_until(table, "a", "b") == 0.6
    assert dsth.above_until(table, "b", "a") == 0.0
    assert dsth.above_until(table, "a", "a") == 1.0


def _localised_label_stage():
    """A fitted-looking DSTH: 3 classes of 20 images as graph clusters; column 0
    separates the classes, columns 1-3 each live in one class (+1 / -1 on its
    halves) and are near zero, of random sign, on the other classes."""
    import types

    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    W = np.zeros((60, 60))
    for c in range(3):
        g = np.flatnonzero(labels == c)
        W[np.ix_(g, g)] = 1.0
        W[np.ix_(g[:10], g[10:])] = W[np.ix_(g[10:], g[:10])] = 0.1  # two halves per class
    W[0, 20] = W[20, 0] = W[20, 40] = W[40, 20] = 0.01
    np.fill_diagonal(W, 0)
    Y = rng.normal(0, 1e-3, (60, 4))
    Y[:, 0] = labels - 1.0
    for c in range(3):
        g = np.flatnonzero(labels == c)
        Y[g[:10], c + 1], Y[g[10:], c + 1] = 1.0, -1.0
    return types.SimpleNamespace(embedding_=Y, graph_=sp.csr_matrix(W)), labels


def test_eigenvector_localisation_is_the_dominant_class_share():
    hasher, labels = _localised_label_stage()
    share = dsth.eigenvector_localisation(hasher, labels)
    assert share.shape == (4,)
    assert share[0] == pytest.approx(0.5)  # -1, 0, +1 per class: two classes hold the mass
    assert np.all(share[1:] > 0.99)
    with pytest.raises(ValueError, match="one per training image"):
        dsth.eigenvector_localisation(hasher, labels[:10])


def test_threshold_comparison_scores_each_rule_on_the_hash_labels():
    hasher, labels = _localised_label_stage()
    table = dsth.threshold_comparison(hasher, labels, n_query=60, seed=0)
    assert list(table.index) == list(dsth.THRESHOLDS)
    assert {"map_all", "P@R=0.1", "P@R=1.0", "balance"} <= set(table.columns)
    assert np.all(table["balance"].between(0, 1))
    # the sign splits the near-zero values of the in-class columns at random; the
    # normalised cut gives them one bit, so same-class images share their codes
    assert table.loc["ncut", "map_all"] > table.loc["zero", "map_all"] + 0.1
    assert table.loc["ncut", "P@R=1.0"] > table.loc["zero", "P@R=1.0"] + 0.2
    with pytest.raises(ValueError, match="allowed values"):
        dsth.threshold_comparison(hasher, labels, rules=["otsu"])


# -- the paper's threshold reading beside the study's (run_experiment(paper_threshold=...)) ----

_TINY_DSTH = dict(k=5, widths=(4, 8, 8), hidden=16, feature_epochs=2, hash_epochs=2,
                  batch_size=16)


def _paper_reading_experiment(data_dir, paper_threshold="zero", **kw):
    synthetic.write_mnist_idx(data_dir, 300, 100, seed=0)
    return dsth.run_experiment(
        "mnist", 8, queries={"mnist": {"query_per_class": 2}}, n_train=120,
        methods=("dsth", "itq"), dsth=_TINY_DSTH, paper_threshold=paper_threshold,
        progress=False, **kw)


def test_paper_threshold_adds_dsth_with_that_reading_and_reuses_the_label_stage(
        isolated_dirs, monkeypatch):
    trained, eigenmaps = [], []
    real_fit, real_eigenmap = training.fit, graph.laplacian_eigenmap

    def counting_fit(*a, **k):
        trained.append(k.get("desc"))
        return real_fit(*a, **k)

    def counting_eigenmap(*a, **k):
        eigenmaps.append(1)
        return real_eigenmap(*a, **k)

    monkeypatch.setattr(training, "fit", counting_fit)
    monkeypatch.setattr(graph, "laplacian_eigenmap", counting_eigenmap)
    exp = _paper_reading_experiment(isolated_dirs / "data")
    study, paper = exp.hashers["dsth"], exp.hashers[dsth.PAPER_METHOD]
    assert dsth.PAPER_METHOD == "dsth_paper"
    assert study.threshold == "ncut" and paper.threshold == "zero"
    # the reading is applied: the paper's hash labels are the signs of the same eigenmap
    assert np.array_equal(paper.embedding_, study.embedding_)
    assert np.array_equal(paper.thresholds_, np.zeros(8))
    assert np.array_equal(paper.hash_labels_, (paper.embedding_ >= 0).astype(np.uint8))
    assert not np.array_equal(paper.hash_labels_, study.hash_labels_)
    # the label-stage CNN and the eigenmap come from the first reading's cache; only the
    # hash function is trained for the second reading
    assert trained.count("DSTH label-stage CNN") == 1 and len(eigenmaps) == 1
    assert trained.count("DSTH hash function") == 2
    assert all(torch_equal(a, b) for a, b in zip(paper.label_cnn_.state_dict().values(),
                                                  study.label_cnn_.state_dict().values()))
    # both readings are reported side by side, under their own method names
    m = exp.metrics()
    for method in ("dsth", "dsth_paper", "itq"):
        assert 0 <= m[f"mnist/{method}/8/map_all"] <= 1
        assert f"mnist/{method}/8/precision@recall0.5" in m
    assert list(exp.recall_table("mnist").index) == ["dsth", "dsth_paper", "itq"]
    leads = exp.leads("mnist", dsth.PAPER_METHOD, rivals=["dsth"], baselines=["itq"])
    assert set(leads) == {"above_dsth_until_recall", "above_itq_until_recall",
                          "above_baselines_until_recall"}
    summary = dsth.label_stage_summary(exp, pixel_knn=False, method=dsth.PAPER_METHOD)
    assert summary["hash_label_balance"] == pytest.approx(float(paper.hash_labels_.mean()))
    with pytest.raises(ValueError, match="allowed values: 'dsth', 'dsth_paper'"):
        dsth.label_stage_summary(exp, method="itq")


def torch_equal(a, b):
    return bool((a == b).all())


@pytest.mark.parametrize("bad, message", [
    (dict(paper_threshold="ncut"), "unknown paper_threshold 'ncut'; allowed values: 'zero', "
                                   "'mean', 'median'"),
    (dict(paper_threshold="sign"), "allowed values: 'zero', 'mean', 'median'"),
    (dict(paper_threshold="zero", methods=("itq",)), "put 'dsth' in methods"),
    (dict(paper_threshold="zero", methods=("dsth", "dsth_paper")), "leave it out of methods"),
])
def test_paper_threshold_rejects_bad_values_with_one_clear_error(bad, message):
    # checked before any data is read (no dataset is under the test's data root)
    kw = dict(queries={"mnist": {"query_per_class": 2}}, progress=False, **bad)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dsth.run_experiment("mnist", 8, **kw)
    assert set(dsth.PAPER_THRESHOLDS) < set(dsth.THRESHOLDS)
    assert "ncut" not in dsth.PAPER_THRESHOLDS


def test_curve_precision_at_recall_reads_the_drawn_line():
    recall = [0.05, 0.2, 0.2, 0.6, 1.0]
    precision = [0.9, 0.8, 0.7, 0.5, 0.1]
    got = dsth.curve_precision_at_recall(recall, precision, [0.02, 0.1, 0.2, 0.3, 0.8, 1.0])
    # flat left of the first point; linear between the points that bracket the level;
    # at a recall reached by several points (a vertical drop), the first of them
    assert np.allclose(got, [0.9, 0.9 - 0.1 * (0.05 / 0.15), 0.8, 0.65, 0.3, 0.1])
    # points without a precision (no query answered at that radius) are left out
    got = dsth.curve_precision_at_recall([0.0, 0.0, 0.5, 1.0], [np.nan, np.nan, 0.9, 0.3],
                                         [0.1, 0.75])
    assert np.allclose(got, [0.9, 0.6])
    # a level beyond the curve's end has no precision
    assert np.isnan(dsth.curve_precision_at_recall([0.1, 0.5], [0.9, 0.8], [0.9])[0])
    with pytest.raises(ValueError, match="non-decreasing"):
        dsth.curve_precision_at_recall([0.5, 0.2], [0.9, 0.8])
    with pytest.raises(ValueError, match="one length"):
        dsth.curve_precision_at_recall([0.5, 0.6], [0.9])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        dsth.curve_precision_at_recall([0.5, 1.0], [0.9, 0.8], [0.0])


def test_leads_on_the_hamming_radius_curve(isolated_dirs):
    exp = _paper_reading_experiment(isolated_dirs / "data", paper_threshold="mean")
    assert exp.hashers[dsth.PAPER_METHOD].threshold == "mean"
    split = exp.splits["mnist"]
    radius = exp.radius_recall_table("mnist")
    assert list(radius.columns) == [f"P@R={v}" for v in dsth.RECALL_LEVELS]
    for method in ("dsth", "dsth_paper", "itq"):
        c = exp.codes["mnist"][(method, 8)]
        curve = metrics.pr_curve(c.query, c.database, exp.labels[split.query],
                                 exp.labels[split.database], empty="skip")
        assert np.allclose(radius.loc[method].to_numpy(float),
                           dsth.curve_precision_at_recall(curve.recall, curve.precision),
                           equal_nan=True)
    leads = exp.leads("mnist", "dsth", rivals=["dsth_paper"], baselines=["itq"], curve="radius")
    assert set(leads) == {"radius_above_dsth_paper_until_recall", "radius_above_itq_until_recall",
                          "radius_above_baselines_until_recall"}
    assert leads["radius_above_itq_until_recall"] == dsth.above_until(radius, "dsth", "itq")
    with pytest.raises(ValueError, match="unknown curve 'roc'; allowed values: 'ranking', "
                                         "'radius'"):
        exp.leads("mnist", curve="roc")
    with pytest.raises(ValueError, match="'cnnh' was not run"):
        exp.leads("mnist")  # the default rival, CNNH, is not in this experiment


# ---------------------------------------------------------------------------
# notebook 01's report helpers, on an experiment built from hand-made codes


class _Report:
    """The parts of hashstudy.reporting.Report the helpers use, recorded."""

    def __init__(self):
        self.metrics, self.tables, self.texts, self.protocols, self.sources = {}, {}, {}, [], {}

    def add(self, key, value):
        self.metrics[key] = float(value)

    def add_many(self, prefix, values):
        for name, value in values.items():
            self.add(f"{prefix}/{name}", value)

    def table(self, name, frame, index=False):
        self.tables[name] = frame

    def text(self, name, content):
        self.texts[name] = content

    def protocol(self, split, prefix=None):
        self.protocols.append(prefix)

    def source(self, name, description):
        self.sources[name] = description


def _hand_made_experiment(n_bits=64):
    """Two protocols; dsth's codes are its classes (perfect), the others' random."""
    from types import SimpleNamespace

    from hashstudy import evaluation

    rng = np.random.default_rng(0)
    labels = np.arange(48) % 4
    class_codes = rng.integers(0, 2, (4, n_bits), dtype=np.uint8)
    split = SimpleNamespace(query=np.arange(8), database=np.arange(8, 48), train=np.arange(8, 48),
                            description="hand-made")
    rows, codes = [], {}
    for prefix in ("mnist", "mnist_q1k"):
        codes[prefix] = {}
        for m in ("dsth", "dsth_paper", "cnnh", "sh", "itq"):
            c = class_codes[labels] if m == "dsth" else rng.integers(0, 2, (48, n_bits),
                                                                      dtype=np.uint8)
            q, d = c[split.query], c[split.database]
            codes[prefix][(m, n_bits)] = evaluation.Codes(m, n_bits, q, d)
            for key, value in metrics.evaluate(q, d, labels[split.query], labels[split.database],
                                               list(dsth.METRIC_KEYS)).items():
                rows.append({"prefix": prefix, "method": m, "bits": n_bits, "metric": key,
                             "value": value})
    return dsth.Experiment("mnist", n_bits, {"mnist": split, "mnist_q1k": split},
                           pd.DataFrame(rows), codes, labels, np.zeros((48, 2, 2, 1), np.uint8),
                           sources={"mnist": "hand-made"})


def test_report_leads_records_both_readings_on_both_curves():
    exp, report = _hand_made_experiment(), _Report()
    frame = dsth.report_leads(report, exp, baselines=["sh", "itq"], table="leads")
    assert list(frame.columns) == [f"{p}/{m}/{c}" for p in ("mnist", "mnist_q1k")
                                   for m in ("dsth", "dsth_paper") for c in dsth.CURVES]
    assert report.tables["leads"] is frame
    for p in exp.splits:
        for m in ("dsth", "dsth_paper"):
            for curve, pre in (("ranking", ""), ("radius", "radius_")):
                expected = exp.leads(p, m, baselines=["sh", "itq"], curve=curve)
                assert {k: report.metrics[f"{p}/{m}/64/{k}"] for k in expected} == expected
                assert frame[f"{p}/{m}/{curve}"].to_dict() == {k.removeprefix("radius_"): v
                                                               for k, v in expected.items()}
    # the perfect codes stay ahead of every rival over the whole curve
    assert report.metrics["mnist/dsth/64/above_baselines_until_recall"] == 1.0
    assert report.metrics["mnist/dsth/64/radius_above_cnnh_until_recall"] == 1.0


def test_report_experiment_and_recall_tables_record_every_protocol():
    exp, report = _hand_made_experiment(), _Report()
    dsth.report_experiment(report, exp, verbose=False)
    assert report.protocols == ["mnist/", "mnist_q1k/"] and report.sources == {"mnist": "hand-made"}
    assert report.metrics == pytest.approx(exp.metrics())
    rows = ["dsth", "dsth_paper", "cnnh", "sh", "itq"]
    both = dsth.report_recall_tables(report, exp, rows[::-1])
    assert set(report.tables) == {f"{p}_{kind}precision_at_recall" for p in exp.splits
                                  for kind in ("", "radius_")}
    assert list(report.tables["mnist_precision_at_recall"].index) == rows[::-1]
    assert both.loc[("mnist", "ranking", "dsth"), "map_all"] == pytest.approx(1.0)
    radius = report.tables["mnist_q1k_radius_precision_at_recall"]
    got = both.sort_index().xs(("mnist_q1k", "radius")).loc[radius.index, radius.columns]
    assert np.allclose(got.to_numpy(float), radius.to_numpy(float), equal_nan=True)


def test_paper_vs_ours_expands_each_paper_level_to_both_readings_and_curves():
    exp, report = _hand_made_experiment(), _Report()
    dsth.report_leads(report, exp, baselines=["sh", "itq"])
    frame = dsth.paper_vs_ours(report, threshold="ncut", paper_threshold="zero")
    from hashstudy.reporting import paper_numbers

    paper = paper_numbers("01_dsth_mm2015")
    assert len(frame) == 4 * len(paper)
    key = "mnist/dsth/64/above_cnnh_until_recall"
    level = float(paper.set_index("key").loc[key, "value"])
    for variant in (key, key.replace("/above_", "/radius_above_"),
                    key.replace("/dsth/", "/dsth_paper/"),
                    key.replace("/dsth/", "/dsth_paper/").replace("/above_", "/radius_above_")):
        r = frame.set_index("key").loc[variant]
        assert r.paper == level and r.ours == report.metrics[variant]
        assert r.difference == pytest.approx(r.ours - level)
    assert "`ncut` for dsth and `zero` for dsth_paper" in frame.set_index("key").loc[key, "note"]
    assert frame[frame.key.str.startswith("stl10/")].ours.isna().all()  # nothing measured there
    lines = report.texts["paper_vs_ours.md"].splitlines()
    assert len(lines) == len(frame) and "has no measurement" in lines[-1]


def test_summary_note_reads_the_headline_numbers_from_the_metrics():
    exp, report = _hand_made_experiment(), _Report()
    dsth.report_experiment(report, exp, verbose=False)
    dsth.report_leads(report, exp, baselines=["sh", "itq"])
    for m in ("dsth", "dsth_paper"):
        report.add(f"mnist/{m}/64/label_stage_hash_labels_reproduced", 0.5)
    report.add("mnist/dsth/64/label_stage_knn_label_precision_cnn", 0.9)
    report.add("mnist/dsth/64/label_stage_knn_label_precision_pixels", 0.25)
    note = dsth.summary_note(report.metrics, exp, rows=["dsth", "dsth_paper", "itq"],
                             readings={"dsth": "ncut", "dsth_paper": "zero"}, k=25,
                             title="MNIST", profile="smoke", localisation="LOCALISED.")
    assert "| mnist/ | dsth | 1.000 | 1.000 | 1.000 | 1.000 |" in note
    assert note.count("| mnist_q1k/ |") == 3
    assert "90.0% of the 25 graph neighbours" in note and "(25.0% in pixel space)" in note
    assert "LOCALISED." in note and "skipped, the data are not on this machine" in note
    assert "up to recall 1; above CNNH up to recall 1" in note


def test_method_params_share_the_network_and_let_parameters_override_the_profile():
    sizes = dsth.PROFILE_SIZES["smoke"]
    d, c = dsth.method_params(sizes, k=7, threshold="zero")
    assert d["widths"] == c["widths"] == sizes["widths"] and d["hidden"] == c["hidden"]
    assert d["feature_epochs"] == sizes["feature_epochs"] and d["k"] == 7
    assert c["n_sweeps"] == sizes["sweeps"] and c["n_train"] == sizes["cnnh_train"]
    d, _ = dsth.method_params(sizes, k=7, threshold="zero", widths=[2, 2, 2], hash_epochs=9)
    assert d["widths"] == (2, 2, 2) and d["hash_epochs"] == 9
    assert set(dsth.PROFILE_SIZES) == {"smoke", "quick", "paper"}


def test_localisation_text_counts_the_class_bound_eigenvectors():
    text = dsth.localisation_text([0.2, 0.3, 0.6, 0.95, 0.99])
    assert text.startswith("2 of the 5 eigenvectors keep at least 90%")
    assert "and 3 at least half of it; the first 2 spread" in text


def test_test_query_split_is_the_protocol_of_hashstudy_protocols():
    from hashstudy import protocols

    assert dsth.test_query_split is protocols.test_query_split
