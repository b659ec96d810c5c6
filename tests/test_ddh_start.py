"""DDH's start, warm-up, early stopping on held-out training images, stored training time,
ITQ on DDH's input, and both readings of eq. 3 (hashstudy.ddh)."""
import numpy as np
import pytest
import torch

from hashstudy import baselines, graph, ddh, metrics


def _blobs(n_per_class=60, n_classes=6, dim=32, spread=1.2, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 2.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centers[y] + rng.normal(size=(y.size, dim)) * spread).astype(np.float32)
    return X, y


def test_warmup_raises_the_quantisation_weight_linearly():
    X, _ = _blobs(20, 3, 8)
    h = ddh.DDH(8, k1=5, k2=2, epochs=4, warmup=2, lambda1=10.0, batch_size=20,
                use_cache=False, progress=False).fit(X)
    # 60 images, batches of 20: 3 steps per epoch, 6 warm-up steps; logged after each epoch
    assert [round(log["lambda1"], 6) for log in h.info_["logs"]] == [5.0, 10.0, 10.0, 10.0]
    flat = ddh.DDH(8, k1=5, k2=2, epochs=2, warmup=0, lambda1=10.0, use_cache=False,
                   progress=False).fit(X)
    assert [log["lambda1"] for log in flat.info_["logs"]] == [10.0, 10.0]


def test_first_warmup_step_trains_without_the_quantisation_term():
    X, _ = _blobs(20, 3, 8)
    one_step = dict(k1=5, k2=2, epochs=1, batch_size=60, optimizer="adam", lr=1e-2,
                    use_cache=False, progress=False)  # one batch: one step per epoch
    warm = ddh.DDH(8, lambda1=15.0, warmup=1, **one_step).fit(X)
    none = ddh.DDH(8, lambda1=0.0, warmup=0, **one_step).fit(X)
    full = ddh.DDH(8, lambda1=15.0, warmup=0, **one_step).fit(X)
    w = lambda h: h.model_.hash_layer.weight.detach()  # noqa: E731
    assert torch.equal(w(warm), w(none)) and not torch.equal(w(warm), w(full))


def test_early_stopping_holds_out_training_images_and_keeps_the_best_epoch():
    X, y = _blobs()
    h = ddh.DDH(16, k1=10, k2=3, epochs=8, warmup=1, holdout=60, patience=2, optimizer="adam",
                lr=1e-2, use_cache=False, progress=False)
    with pytest.raises(ValueError, match="labels"):
        h.fit(X)
    h.fit(X, y)
    fit, held = h.fit_index_, h.holdout_index_
    assert held.size == 60 and fit.size == 300 and not np.isin(held, fit).any()
    assert h.S_.shape == (300, 300)  # the held-out images are in no pair
    logs = h.info_["logs"]
    assert logs[0]["epoch"] == 0 and [log["epoch"] for log in logs] == list(range(len(logs)))
    best = h.info_["best_epoch"]
    scores = {log["epoch"]: log["holdout_map@1000"] for log in logs}
    assert best >= 1 and scores[best] == max(v for e, v in scores.items() if e >= 1)
    # the kept weights are the best epoch's: they reproduce its held-out score
    q, d = h.encode(X[held]), h.encode(X[fit])
    assert metrics.evaluate(q, d, y[held], y[fit], ["map@1000"])["map@1000"] == \
        pytest.approx(scores[best], abs=1e-9)
    assert h.info_["epochs_run"] == len(h.info_["loss"]) <= 8
    if h.info_["epochs_run"] < 8:  # stopped early: patience epochs without a better score
        assert h.info_["epochs_run"] - best == 2


def test_early_stopping_does_not_stop_inside_the_warmup():
    X, y = _blobs(20, 3, 8)
    h = ddh.DDH(8, k1=5, k2=2, epochs=5, warmup=5, holdout=15, patience=1, use_cache=False,
                progress=False).fit(X, y)
    assert h.info_["epochs_run"] == 5 and h.info_["best_epoch"] == 5


def test_training_time_is_stored_with_the_weights():
    X, _ = _blobs(20, 3, 8)
    a = ddh.DDH(8, k1=5, k2=2, epochs=2, progress=False).fit(X)
    b = ddh.DDH(8, k1=5, k2=2, epochs=2, progress=False).fit(X)
    assert a.from_cache_ == {"weights": False, "neighbors": a.from_cache_["neighbors"]}
    assert b.from_cache_ == {"weights": True, "neighbors": True}
    assert a.train_seconds_ > 0 and b.train_seconds_ == a.train_seconds_
    assert b.neighbors_seconds_ == a.neighbors_seconds_ > 0
    assert b.fit_seconds_ == pytest.approx(b.train_seconds_ + b.neighbors_seconds_)


def test_itq_start_is_itq_on_the_normalised_input():
    X, _ = _blobs()
    start = ddh.DDH(16, k1=10, k2=3, epochs=0, init="itq", use_cache=False, progress=False).fit(X)
    itq = ddh.Normalised(baselines.make("itq", 16, seed=0)).fit(X)
    assert (start.encode(X) == itq.encode(X)).mean() > 0.99
    raw = baselines.make("itq", 16, seed=0).fit(X)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    manual = baselines.make("itq", 16, seed=0).fit(unit - unit.mean(0))
    np.testing.assert_array_equal(itq.encode(X), manual.encode(unit - unit.mean(0)))
    assert (itq.encode(X) != raw.encode(X)).any()
    with pytest.raises(RuntimeError, match="fit"):
        ddh.Normalised(baselines.make("itq", 8)).encode(X)


def test_label_precision_table_has_both_readings_of_eq3():
    X, y = _blobs(30, 4, 8, spread=2.0)
    rows = ddh.label_precision_table(X, y, [3, 5], k2=2, use_cache=False)
    table = {(r["method"], r["k"] if r["method"].startswith(("knn", "exp")) else None): r
             for r in rows}
    assert [r["method"] for r in rows[:5]] == ["knn", "expanded", "knn_matched",
                                               "expanded_directed", "knn_matched_directed"]
    reference = graph.neighbor_precision_curve(X, y, [3, 5], k2=2)
    for r in reference:  # the symmetrised rows are graph's Fig. 2 rows
        mine = table[(r["method"], r["k"])]
        assert mine["precision"] == pytest.approx(r["precision"])
        assert mine["mean_neighbors"] == pytest.approx(r["mean_neighbors"])
    idx, _ = graph.knn(X, 5)
    directed = graph.expand_neighbors(idx, k2=2, symmetrize="none")
    row = table[("expanded_directed", 5)]
    assert row["mean_neighbors"] == pytest.approx(directed.nnz / len(X))
    assert row["precision"] == pytest.approx(graph.label_precision(directed, y))
    assert row["mean_neighbors"] <= table[("expanded", 5)]["mean_neighbors"]
    matched = [r for r in rows if r["method"] == "knn_matched_directed"][1]
    assert matched["k"] == round(row["mean_neighbors"])
    first, seconds, loaded = ddh.label_precision_table(X, y, [3, 5], k2=2, return_seconds=True)
    again, seconds_again, loaded_again = ddh.label_precision_table(X, y, [3, 5], k2=2,
                                                                   return_seconds=True)
    assert first == again == rows and (loaded, loaded_again) == (False, True)
    assert seconds_again == seconds > 0  # the time of the computation, stored with the table
    with pytest.raises(ValueError, match="labels"):
        ddh.label_precision_table(X, y[:-1], [3])


def test_factory_passes_labels_for_early_stopping_and_keeps_its_hashers():
    make = ddh.factory(holdout=10, epochs=1)
    assert make.supervised and make(8).holdout == 10 and len(make.made) == 1
    assert not ddh.factory(epochs=1).supervised


@pytest.mark.parametrize("params, word", [
    ({"warmup": -1}, "warmup"), ({"holdout": -1}, "holdout"), ({"patience": 0}, "patience"),
    ({"init": "itq", "hidden": (16,)}, "hidden"), ({"init": "zeros"}, "allowed values")])
def test_bad_start_parameters_are_refused(params, word):
    with pytest.raises(ValueError, match=word):
        ddh.DDH(8, **params)


def test_holdout_must_leave_enough_images():
    X, y = _blobs(5, 2, 4)
    with pytest.raises(ValueError, match="holdout"):
        ddh.DDH(8, k1=5, holdout=6, progress=False, use_cache=False).fit(X, y)


def test_cached_weights_from_before_warmup_keep_their_key():
    h = ddh.DDH(8, init="itq", warmup=0)
    assert "warmup" not in h._key_params() and "holdout" not in h._key_params()
    assert ddh.DDH(8, warmup=2, holdout=5)._key_params()["holdout"] == 5
    assert torch.get_num_threads() >= 1


def test_cached_fit_fits_once_and_keeps_the_fit_time():
    X, _ = _blobs(20, 3, 8)
    spec = {"method": "itq", "bits": 8, "seed": 0}
    a = ddh.CachedFit(baselines.make("itq", 8, seed=0), "itq", spec).fit(X)
    b = ddh.CachedFit(baselines.make("itq", 8, seed=0), "itq", spec).fit(X)
    assert (a.from_cache_, b.from_cache_) == (False, True)
    assert b.fit_seconds_ == a.fit_seconds_ > 0
    np.testing.assert_array_equal(a.encode(X), b.encode(X))
    other = ddh.CachedFit(baselines.make("itq", 8, seed=1), "itq", {**spec, "seed": 1}).fit(X)
    assert not other.from_cache_
    moved = ddh.CachedFit(baselines.make("itq", 8, seed=0), "itq", spec).fit(X + 1)
    assert not moved.from_cache_  # other training data: fitted again
