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
