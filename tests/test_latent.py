"""The latent-layer hashing network, its codes and the coarse-to-fine search."""
import numpy as np
import pandas as pd
import pytest
import torch

from hashstudy import features, latent, metrics, protocols, synthetic


# --------------------------------------------------------------------------- #
# eq. 1: codes are the latent activations thresholded at 0.5
# --------------------------------------------------------------------------- #


def test_codes_are_activations_thresholded_at_one_half():
    act = np.array([[0.5, 0.4999, 0.9, 0.1, 0.5001, 0.0]])
    assert latent.binarize(act).tolist() == [[1, 0, 1, 0, 1, 0]]
    assert latent.binarize(act).dtype == np.uint8
    assert latent.binarize(act, threshold=0.05).tolist() == [[1, 1, 1, 1, 1, 0]]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        latent.binarize(act, threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        latent.binarize(np.zeros(3))


def test_encode_thresholds_the_latent_layer_of_the_network():
    X, y = _blobs(n_per_class=20)
    h = latent.LatentHasher(6, trunk="features", fc7_dim=16, epochs=2, cache=False,
                            progress=False).fit(X, y)
    _, act, _ = h.embed(X)
    assert act.shape == (len(X), 6) and act.min() > 0 and act.max() < 1
    assert np.array_equal(h.encode(X), (act >= 0.5).astype(np.uint8))
    h.threshold = 0.8
    assert np.array_equal(h.encode(X), (act >= 0.8).astype(np.uint8))


# --------------------------------------------------------------------------- #
# sec. III-B: coarse-to-fine search
# --------------------------------------------------------------------------- #

# a query with code 0000 and five database items at Hamming distances 0..4;
# in feature space the order is the reverse: E is nearest, A farthest
_DB_CODES = np.array([[0, 0, 0, 0],   # A, distance 0
                      [0, 0, 0, 1],   # B, distance 1
                      [0, 0, 1, 1],   # C, distance 2
                      [0, 1, 1, 1],   # D, distance 3
                      [1, 1, 1, 1]],  # E, distance 4
                     dtype=np.uint8)
_DB_FEATS = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
_Q_CODES = np.zeros((1, 4), dtype=np.uint8)
_Q_FEATS = np.zeros((1, 1))


@pytest.mark.parametrize("k, radius, factor, pool, expected", [
    (1, 0, None, 1, [0]),          # the pool {A} already holds k items
    (2, 0, None, 2, [1, 0]),       # grown to radius 1: {A, B}, re-ranked: B is nearer
    (3, 0, None, 3, [2, 1, 0]),    # grown to radius 2: {A, B, C}
    (1, 2, None, 3, [2]),          # radius 2 from the start: C is the nearest of {A, B, C}
    (2, 4, None, 5, [4, 3]),       # the whole database: pure Euclidean ranking
    (9, 0, None, 5, [4, 3, 2, 1, 0]),  # k > N returns all N
    # the default cap of 2 k candidates: the same minimal pools, but the
    # initial radius only adds shells while the pool stays within the cap
    (1, 0, 2.0, 1, [0]),
    (3, 0, 2.0, 3, [2, 1, 0]),
    (1, 2, 2.0, 2, [1]),           # {A, B}: adding C would exceed 2 candidates
    (2, 4, 2.0, 4, [3, 2]),        # {A, B, C, D}: E would be the fifth
    (9, 0, 2.0, 5, [4, 3, 2, 1, 0]),
])
def test_coarse_to_fine_grows_the_pool_then_reranks_by_euclidean_distance(
        k, radius, factor, pool, expected):
    res = latent.coarse_to_fine(_Q_CODES, _DB_CODES, _Q_FEATS, _DB_FEATS, k=k, radius=radius,
                                pool_factor=factor)
    assert res.indices.tolist() == [expected]
    assert res.pool_size.tolist() == [pool]
    assert res.pool_radius.tolist() == [pool - 1]


def test_coarse_to_fine_default_is_the_capped_pool():
    res = latent.coarse_to_fine(_Q_CODES, _DB_CODES, _Q_FEATS, _DB_FEATS, k=1, radius=2)
    assert latent.POOL_FACTOR == 2.0 and res.pool_cap == 2 and res.pool_size.tolist() == [2]


def test_coarse_to_fine_handles_queries_with_different_pool_radii():
    # query 0 (0000) holds 3 items within radius 2 ({A, B, C}); query 1 (0011)
    # already within radius 1 ({B, C, D})
    q_codes = np.array([[0, 0, 0, 0], [0, 0, 1, 1]], dtype=np.uint8)
    res = latent.coarse_to_fine(q_codes, _DB_CODES, np.zeros((2, 1)), _DB_FEATS, k=3)
    assert res.pool_radius.tolist() == [2, 1] and res.pool_size.tolist() == [3, 3]
    assert res.indices.tolist() == [[2, 1, 0], [3, 2, 1]]
    # the same pool, ranked for a query elsewhere in feature space
    res = latent.coarse_to_fine(q_codes[1:], _DB_CODES, np.array([[6.0]]), _DB_FEATS, k=3)
    assert res.indices.tolist() == [[1, 2, 3]]


def test_coarse_to_fine_ties_keep_hamming_then_index_order():
    db = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], dtype=np.uint8)
    feats = np.ones((4, 3))  # every distance equal
    res = latent.coarse_to_fine(np.zeros((1, 2), np.uint8), db, np.zeros((1, 3)), feats, k=4)
    assert res.indices.tolist() == [[1, 3, 0, 2]]


def test_coarse_to_fine_rejects_bad_input():
    with pytest.raises(ValueError, match="radius"):
        latent.coarse_to_fine(_Q_CODES, _DB_CODES, _Q_FEATS, _DB_FEATS, k=1, radius=-1)
    with pytest.raises(ValueError, match="k must"):
        latent.coarse_to_fine(_Q_CODES, _DB_CODES, _Q_FEATS, _DB_FEATS, k=0)
    with pytest.raises(ValueError, match="features"):
        latent.coarse_to_fine(_Q_CODES, _DB_CODES, _Q_FEATS, _DB_FEATS[:3], k=1)


def test_precision_from_an_explicit_ranking():
    ranked = np.array([[1, 0, 1, 1], [2, 2, 0, 0]])
    ql = np.array([1, 2])
    curve = latent.precision_at_k_from_ranking(ranked, ql)
    assert np.allclose(curve, [(1 + 1) / 2, (1 + 2) / 4, (2 + 2) / 6, (3 + 2) / 8])
    assert latent.precision_at_k_from_ranking(ranked, ql, 2) == pytest.approx(0.75)
    assert np.allclose(latent.precision_at_k_from_ranking(ranked, ql, [1, 9]), [1.0, 5 / 8])
    with pytest.raises(ValueError):
        latent.precision_at_k_from_ranking(ranked, ql, [0])


# --------------------------------------------------------------------------- #
# learning: tiny separable problems
# --------------------------------------------------------------------------- #


def _blobs(n_per_class=40, n_classes=4, dim=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32)
    return X, y


def test_a_separable_problem_is_learned_and_codes_retrieve_the_class():
    X, y = _blobs()
    kwargs = dict(trunk="features", fc7_dim=32, dropout=0.0, epochs=15, batch_size=32,
                  lr=1e-2, cache=False, progress=False, seed=1)
    h = latent.LatentHasher(8, **kwargs).fit(X, y)
    assert (h.predict(X) == y).mean() >= 0.95
    codes = h.encode(X)
    assert codes.shape == (len(X), 8) and set(np.unique(codes)) <= {0, 1}
    assert metrics.precision_at_k(codes, codes, y, y, 10) >= 0.9
    # deterministic given the seed
    again = latent.LatentHasher(8, **kwargs).fit(X, y)
    assert np.array_equal(again.encode(X), codes)


def test_small_cnn_learns_images_from_scratch_and_is_cached():
    y = np.repeat(np.arange(3), 24)
    X = synthetic.class_images(y, 3, size=16, channels=1, seed=0)
    kwargs = dict(trunk="small_cnn", width=4, fc7_dim=32, dropout=0.0, epochs=10,
                  batch_size=16, lr=1e-2, shift=1, progress=False)
    h = latent.LatentHasher(8, **kwargs).fit(X, y)
    assert not h.loaded_ and len(h.info_["loss"]) == 10
    assert (h.predict(X) == y).mean() >= 0.9
    again = latent.LatentHasher(8, **kwargs).fit(X, y)
    assert again.loaded_ and np.array_equal(again.encode(X), h.encode(X))
    # changing the threshold never retrains; changing training does
    assert latent.LatentHasher(8, threshold=0.3, **kwargs).fit(X, y).loaded_
    assert not latent.LatentHasher(8, **{**kwargs, "epochs": 1}).fit(X, y).loaded_


def test_random_shift_moves_pixels_within_bounds():
    torch.manual_seed(0)
    img = torch.zeros(64, 5, 5, 1, dtype=torch.uint8)
    img[:, 2, 2, 0] = 255
    out = latent.random_shift(img, 1)
    assert out.shape == img.shape and out.dtype == torch.uint8
    rows, cols = np.nonzero(out[..., 0].numpy().sum(0))
    assert set(rows) == {1, 2, 3} and set(cols) == {1, 2, 3}   # every offset in [-1, 1] used
    assert (out.reshape(64, -1).sum(1) == 255).all()            # one pixel, moved, not lost
    assert latent.random_shift(img, 0) is img
    flipped = latent.random_flip(torch.arange(6, dtype=torch.uint8).view(1, 1, 6, 1).repeat(32, 1, 1, 1))
    rows = {tuple(r) for r in flipped[:, 0, :, 0].tolist()}
    assert rows == {(0, 1, 2, 3, 4, 5), (5, 4, 3, 2, 1, 0)}


def test_finetuning_a_backbone_runs_on_images():
    if features.available_backbones().get("efficientnet_lite0") is not True:
        pytest.skip("EfficientNet-Lite0 weights are not installed")
    y = np.repeat(np.arange(2), 6)
    X = synthetic.class_images(y, 2, size=16, channels=3, seed=0)
    h = latent.LatentHasher(8, trunk="efficientnet_lite0", input_size=32, fc7_dim=16, epochs=1,
                            batch_size=6, lr=1e-4, flip=True, shift=1, cache=False,
                            progress=False, device="cpu").fit(X, y)
    fc7, act, logits = h.embed(X)
    assert fc7.shape == (12, 16) and act.shape == (12, 8) and logits.shape == (12, 2)
    assert "efficientnet_lite0 fine-tuned" in h.describe()
    # the trunk's weights moved away from the pretrained ones
    ref = features.load_backbone("efficientnet_lite0").module.state_dict()
    tuned = h.model_.trunk.net.state_dict()
    name = next(k for k, v in ref.items() if v.dtype.is_floating_point and v.dim() == 4)
    assert not torch.equal(ref[name], tuned[name])


def test_bad_input_is_refused():
    X, y = _blobs(n_per_class=5)
    with pytest.raises(ValueError, match="allowed values"):
        latent.LatentHasher(8, trunk="vgg99")
    with pytest.raises(ValueError, match="float feature matrix"):
        latent.LatentHasher(8, trunk="features").fit(np.zeros((4, 8, 8, 1), np.uint8), y[:4])
    with pytest.raises(ValueError, match="uint8 images"):
        latent.LatentHasher(8, trunk="small_cnn").fit(X, y)
    with pytest.raises(ValueError, match="labels"):
        latent.LatentHasher(8, cache=False, progress=False).fit(X, y[:-1])
    with pytest.raises(RuntimeError, match="not fitted"):
        latent.LatentHasher(8).encode(X)


def test_pick_backbone_prefers_alexnet_when_its_weights_are_here(monkeypatch):
    monkeypatch.setattr(features, "available_backbones",
                        lambda: {"alexnet": "not found", "efficientnet_lite0": True})
    assert latent.pick_backbone() == "efficientnet_lite0"
    monkeypatch.setattr(features, "available_backbones",
                        lambda: {"alexnet": True, "efficientnet_lite0": True})
    assert latent.pick_backbone() == "alexnet"
    assert latent.pick_backbone("efficientnet_lite0") == "efficientnet_lite0"
    with pytest.raises(ValueError):
        latent.pick_backbone("lenet")


# --------------------------------------------------------------------------- #
# the experiment of sec. IV on a tiny pool
# --------------------------------------------------------------------------- #


def _blob_pool():
    """A pool of blobs (30 training, 10 test points per class), 20 queries, an 8-bit hasher."""
    X_tr, y_tr = _blobs(n_per_class=30, seed=0)
    X_te, y_te = _blobs(n_per_class=10, seed=0)
    X, y = np.concatenate([X_tr, X_te]), np.concatenate([y_tr, y_te])
    split = protocols.make_split(y_tr, y_te, "test1k-train", seed=0, dataset="blobs",
                                 n_query=20)
    h = latent.LatentHasher(8, trunk="features", fc7_dim=32, dropout=0.0, epochs=15,
                            batch_size=32, lr=1e-2, cache=False, progress=False)
    return X, y, split, h


def test_experiment_measures_classification_and_both_searches():
    X, y, split, h = _blob_pool()
    res = latent.experiment(h, X, y, split, pool_radius=1, max_k=50, ks=(1, 10, 50), n_show=5)
    m = res.metrics
    assert m["test_accuracy"] >= 0.9 and m["test_error"] == pytest.approx(1 - m["test_accuracy"])
    for key in ("precision@10", "coarse_to_fine/precision@10", "map@1000", "hd2p",
                "min_precision@50", "coarse_to_fine/min_precision@50", "near_binary_fraction"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["coarse_to_fine/precision@10"] >= 0.9 and m["precision@10"] >= 0.9
    assert m["coarse_to_fine/mean_pool_size"] >= 50
    assert res.fine.indices.shape == (20, 50) and res.coarse_top.shape == (20, 5)
    k, p = res.curves["coarse-to-fine"]
    assert len(k) == 50 and p[9] == pytest.approx(m["coarse_to_fine/precision@10"])
    assert min(p) == pytest.approx(m["coarse_to_fine/min_precision@50"])
    from hashstudy.plots import latent as latent_plots

    fig = latent_plots.retrieval_figure(res, np.zeros((len(y), 4, 4, 1), np.uint8), y,
                                        n_queries=2, k=5)
    assert len(fig.axes) == 2 * 2 * 6
    assert latent_plots.activation_figure({"blobs": res}).axes


# --------------------------------------------------------------------------- #
# notebook 02's report helpers and figures
# --------------------------------------------------------------------------- #


def test_coarse_to_fine_toy_of_the_notebook():
    # the pool is what the codes let in: image 3 has the query's features but a far code
    db_codes = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0],
                         [1, 1, 1, 0]])
    db_f7 = np.array([[5, 5], [0.1, 0], [0, 0.2], [0, 0], [1, 1], [3, 3]])
    found = latent.coarse_to_fine(np.zeros((1, 4), int), db_codes, np.zeros((1, 2)), db_f7,
                                  k=2, radius=1)
    assert found.indices.tolist() == [[1, 4]]
    assert found.pool_size.tolist() == [3] and found.pool_radius.tolist() == [1]


def test_notebook_helpers_table_the_latent_codes_beside_the_baselines():
    from hashstudy import evaluation
    from hashstudy.plots import latent as latent_plots
    from hashstudy.reporting import Report

    X, y, split, h = _blob_pool()
    sizes = {"ks": [1, 10, 50], "max_k": 50, "mnist": {"epochs": 15}}
    settings = {"blobs": dict(split=split, images=np.zeros((len(y), 4, 4, 1), np.uint8),
                              labels=y, X=X, X_base=X, base_features="raw", hasher=h,
                              dataset="blobs")}
    report = Report("02_latent_layer_cnn", "smoke")
    results, classification = latent.run_parts(report, settings, bits=8, pool_radius=1,
                                               sizes=sizes, verbose=False)
    assert classification.test_accuracy.tolist() == [results["blobs"].metrics["test_accuracy"]]
    assert report.metrics["blobs/latent/8/precision@10"] == results["blobs"].metrics["precision@10"]
    compared = latent.run_baselines(report, settings, ["lsh", "itq"], bits=8, seed=0,
                                    sizes=sizes)
    direct = evaluation.run(["lsh", "itq"], [8], X, y, split, seed=0,
                            metric_keys=latent.notebook_metrics(sizes), progress=False)
    assert compared["blobs"].metrics("blobs") == direct.metrics("blobs")
    assert report.metrics["blobs/itq/8/map@1000"] == direct.metrics("blobs")["blobs/itq/8/map@1000"]
    tables, curves = latent.retrieval_tables(report, results, settings, compared, bits=8,
                                             sizes=sizes)
    t = tables["blobs"]
    assert list(t.index) == ["latent (Hamming ranking)", "latent (coarse-to-fine)", "lsh", "itq"]
    written = pd.read_csv(report.path("blobs_retrieval.csv"), index_col="method")
    assert np.allclose(written.to_numpy(float), t.to_numpy(float), equal_nan=True)
    assert t.loc["itq", "precision@10"] == direct.metrics("blobs")["blobs/itq/8/precision@10"]
    # the baselines' smallest precision over k = 1..50 is read off their curve
    assert t.loc["lsh", "min_precision@50"] == pytest.approx(curves["blobs"]["lsh"][1].min())
    assert t.loc["latent (coarse-to-fine)", "min_precision@50"] == \
        results["blobs"].metrics["coarse_to_fine/min_precision@50"]
    fig = latent_plots.precision_at_k_figure(results, curves, bits=8, max_k=50,
                                             titles={"blobs": "blobs"})
    assert {line.get_label() for line in fig.axes[0].get_lines()} >= {
        "latent 8 bits (Hamming)", "latent 8 bits (coarse-to-fine)", "lsh", "itq"}
    text = latent.summary_text(results, settings, profile="quick", trunk_name="x", max_k=50)
    assert text.startswith("- blobs (blobs, ") and "the paper reports nothing" in text
    assert len(latent_plots.retrieval_figure(results["blobs"], settings["blobs"]["images"], y,
                                             n_queries=1, k=5).axes) == 2 * 6


def test_gap_reasons_explain_each_measured_paper_number():
    comparison = pd.DataFrame({"key": ["mnist/latent/48/test_error", "cifar10/latent/48/test_accuracy",
                                       "mnist/cnnh_plus/48/precision@1000"],
                               "paper": [0.005, 0.895, 0.97], "ours": [0.006, 0.81, np.nan]})
    results = {"mnist": None, "cifar10": None}
    text = latent.gap_reasons(comparison, results, bits=48, finetune=False, trunk_name="net",
                              sizes={"input_size": 128})
    lines = text.splitlines()
    assert len(lines) == 2 and "(+0.0010)" in lines[0] and "(-0.0850)" in lines[1]
    assert "the net backbone stays frozen" in lines[1]
    assert "no difference is interpreted" in latent.gap_reasons(
        comparison, results, bits=16, finetune=False, trunk_name="net", sizes={"input_size": 128})
