"""Tests of the journal DSTH's hash-function diagnostics: label fit, held-out rows, the two
references (kNN label copy, encoder on features) and the sigmoid reading of eq. 15."""
import numpy as np
import pytest
import torch
from torch import nn

from hashstudy import config, evaluation, synthetic
from hashstudy import dsth_journal as dj

FAST = dict(epochs=(1, 0, 0), batch_size=20, hidden=16, progress=False)


def _clusters(n_per=30, d=8, n_clusters=4, seed=0):
    """Well separated clusters on positive axes (cosine kNN finds the cluster)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_clusters), n_per)
    X = np.eye(d)[y] + rng.normal(size=(len(y), d)) * 0.05 + 0.05
    return X.astype(np.float32), y


# ---------------------------------------------------------------------------
# label agreement and held-out rows


def test_label_agreement_counts_bits_and_whole_codes():
    targets = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=np.uint8)
    codes = targets.copy()
    codes[0, 0] = 1  # one wrong bit in the first row
    codes[2] = 1  # a whole row wrong
    a = dj.label_agreement(codes, targets)
    assert a["bits"] == pytest.approx((12 - 1 - 4) / 12)
    assert a["exact"] == pytest.approx(1 / 3)  # only the second row is right everywhere
    assert np.isnan(dj.label_agreement(codes[:0], targets[:0])["bits"])
    with pytest.raises(ValueError, match="both be"):
        dj.label_agreement(codes[:, :2], targets)


def test_heldout_rows_are_a_seeded_disjoint_split():
    fit, held = dj.heldout_rows(100, 0.1, seed=3)
    assert held.size == 10 and fit.size == 90
    assert np.intersect1d(fit, held).size == 0 and np.union1d(fit, held).tolist() == list(range(100))
    again = dj.heldout_rows(100, 0.1, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(dj.heldout_rows(100, 0.1, seed=4)[1], held)
    assert held.tolist() != list(range(90, 100))  # random, not the last rows
    fit0, held0 = dj.heldout_rows(7, 0.0)
    assert fit0.tolist() == list(range(7)) and held0.size == 0
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="0 <= heldout < 1"):
            dj.heldout_rows(10, bad)
    with pytest.raises(ValueError, match="held-out image"):
        dj.heldout_rows(10, 0.01)  # rounds to nothing held out


def test_dsthjournal_fits_on_the_fit_rows_only_and_reports_both_parts(monkeypatch):
    labels = np.repeat(np.arange(4), 15)
    images = synthetic.class_images(labels, 4, size=32, seed=0)
    feats, _ = _clusters(15, n_clusters=4)
    seen = {}
    real = dj.train_hash_net

    def spy(x, targets, **kw):
        seen["x"], seen["targets"] = x.clone(), np.array(targets)
        return real(x, targets, **kw)

    monkeypatch.setattr(dj, "train_hash_net", spy)
    h = dj.DSTHJournal(16, 32, config="slice_batchnorm", heldout=0.25, **FAST).fit(images, feats)
    assert h.heldout_rows_.size == 15 and h.fit_rows_.size == 45
    x_all = dj.as_image_tensor(images, (32, 32, 3))
    assert torch.equal(seen["x"], x_all[torch.from_numpy(h.fit_rows_)])
    np.testing.assert_array_equal(seen["targets"], h.labels_.bits[h.fit_rows_])
    assert h.labels_.bits.shape == (60, 16)  # the label stage saw every training image
    rep = h.label_fit_report_
    assert set(rep) == {"train", "train_exact", "heldout", "heldout_exact"}
    codes = h.encode(images)
    held = dj.label_agreement(codes[h.heldout_rows_], h.labels_.bits[h.heldout_rows_])
    assert rep["heldout"] == pytest.approx(held["bits"])
    assert rep["train"] == pytest.approx(
        dj.label_agreement(codes[h.fit_rows_], h.labels_.bits[h.fit_rows_])["bits"])
    # nothing held out: no held-out entries, the network sees every image
    h0 = dj.DSTHJournal(16, 32, config="slice_batchnorm", **FAST).fit(images, feats)
    assert set(h0.label_fit_report_) == {"train", "train_exact"}
    assert seen["x"].shape[0] == 60


# ---------------------------------------------------------------------------
# the sigmoid reading of eq. 15


def test_hidden_activation_sigmoid_replaces_every_relu_of_the_encoders():
    for encoder in ("mlp", "slice"):
        relu = dj.HashNet(32, 16, encoder=encoder, head="sigmoid", hidden=8)
        sig = dj.HashNet(32, 16, encoder=encoder, head="sigmoid", hidden=8,
                         hidden_activation="sigmoid")
        enc_relu = [type(m) for m in relu.encoder.modules()]
        enc_sig = [type(m) for m in sig.encoder.modules()]
        assert nn.ReLU in enc_relu and nn.Sigmoid not in enc_relu
        assert nn.ReLU not in enc_sig and enc_sig.count(nn.Sigmoid) == enc_relu.count(nn.ReLU)
        assert enc_sig.count(nn.BatchNorm1d) == enc_relu.count(nn.BatchNorm1d)  # h keeps BN
    # the hidden layer's output lies in (0, 1) before its BatchNorm
    enc = dj.SliceEncoder(20, 16, hidden_activation="sigmoid")
    h = enc.fc[:2](torch.randn(5, 20) * 100)
    assert (h >= 0).all() and (h <= 1).all()
    with pytest.raises(ValueError, match="'relu', 'sigmoid'"):
        dj.MLPEncoder(10, 16, hidden_activation="tanh")
    with pytest.raises(ValueError, match="hidden_activation"):
        dj.DSTHJournal(16, 32, hidden_activation="ReLU")


def test_default_reading_keeps_its_cache_file_and_the_sigmoid_reading_gets_its_own():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8))
    y = rng.integers(0, 2, (20, 16))
    sched = dict(epochs=(1, 0, 0), batch_size=10)
    models = config.cache_dir("models")
    dj.train_hash_net(x, y, **sched)
    first = set(models.glob("*.pt"))
    m, _, loaded = dj.train_hash_net(x, y, hidden_activation="relu", **sched)
    assert loaded and set(models.glob("*.pt")) == first  # the same weights, found again
    s, _, loaded = dj.train_hash_net(x, y, hidden_activation="sigmoid", **sched)
    assert not loaded and len(set(models.glob("*.pt")) - first) == 1
    assert any(isinstance(mod, nn.Sigmoid) for mod in s.encoder.modules())


# ---------------------------------------------------------------------------
# reference (a): the hash labels carried to new images by their nearest training images


def test_label_copy_votes_per_bit_and_breaks_ties_with_the_nearest():
    lc = dj.LabelCopy(16, vote_k=2)
    lc.features_ = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    lc.bits_ = np.zeros((3, 16), dtype=np.uint8)
    lc.bits_[0, :2] = [1, 1]
    lc.bits_[1, :2] = [1, 0]
    lc.bits_[2, :2] = [0, 1]
    # nearest [1, 0] then [0.9, 0.1]: bit 0 both vote 1; bit 1 tied 1-0, the nearest says 1
    codes = lc.encode(np.array([[1.0, 0.01]], dtype=np.float32))
    assert codes[0, :2].tolist() == [1, 1] and codes[0, 2:].sum() == 0
    # the second image is nearest now: the tie goes its way
    codes = lc.encode(np.array([[0.85, 0.2]], dtype=np.float32))
    assert codes[0, :2].tolist() == [1, 0]
    lc.vote_k = 3  # majority of three: bit 0 (1, 1, 0) -> 1, bit 1 (1, 0, 1) -> 1
    assert lc.encode(np.array([[0.5, 0.5]], dtype=np.float32))[0, :2].tolist() == [1, 1]


def test_label_copy_fit_report_matches_a_brute_force_vote():
    X, y = _clusters(30, n_clusters=4)
    lc = dj.LabelCopy(16, k=5, vote_k=5, heldout=0.2).fit(X)
    rep = lc.label_fit_report_
    fit, held = lc.fit_rows_, lc.heldout_rows_
    assert held.size == 24 and lc.features_.shape[0] == 96  # held-out images do not vote
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = U[held] @ U[fit].T
    near = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    expected = (lc.labels_.bits[fit][near].sum(axis=1) >= 3).astype(np.uint8)
    np.testing.assert_array_equal(lc.encode(X[held]), expected)
    truth = lc.labels_.bits[held]
    assert rep["heldout"] == pytest.approx((expected == truth).mean())
    assert rep["heldout_exact"] == pytest.approx((expected == truth).all(axis=1).mean())
    assert 0 <= rep["heldout"] <= 1 and 0 <= rep["train"] <= 1
    with pytest.raises(ValueError, match="vote_k"):
        dj.LabelCopy(16, vote_k=0)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        lc.encode(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="not fitted"):
        dj.LabelCopy(16).encode(X)


# ---------------------------------------------------------------------------
# reference (b): the encoders on backbone features


def test_feature_hash_net_skips_simplenet():
    net = dj.FeatureHashNet(8, 16, encoder="mlp", head="batchnorm", hidden=8, mlp_blocks=2)
    assert not hasattr(net, "simplenet")
    linears = [m for m in net.encoder.layers if isinstance(m, nn.Linear)]
    assert len(linears) == 4 and linears[0].in_features == 8
    assert net.eval()(torch.randn(3, 8)).shape == (3, 16)


def test_encoder_on_features_learns_labels_that_the_features_determine():
    X, y = _clusters(40, n_clusters=4, seed=1)
    kw = dict(config="mlp_sigmoid", epochs=(30,), lrs=(0.05,), batch_size=20, hidden=32,
              heldout=0.25, inputs="features", k=5, seed=0)
    # three bits on four separate clusters: the labels are constant within a cluster
    h = dj.DSTHJournal(3, 32, **kw).fit(X, X)
    assert all(len({tuple(r) for r in h.labels_.bits[y == c]}) == 1 for c in range(4))
    assert isinstance(h.model_, dj.FeatureHashNet)
    assert h.model_.encoder.n_blocks == 3  # n of eq. 15 for 32x32 datasets
    rep = h.label_fit_report_
    assert rep["train"] > 0.95 and rep["heldout"] > 0.95
    assert h.encode(X).shape == (160, 3)
    with pytest.raises(ValueError, match="feature rows"):
        h.encode(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="'pixels', 'features'"):
        dj.DSTHJournal(16, 32, inputs="embeddings")


# ---------------------------------------------------------------------------
# both references through the factories, on a generated dataset


@pytest.fixture
def fake_backbone(monkeypatch):
    from hashstudy import features

    def dataset_features(ds, split=None, backbone="x", input_size=0, root=None, *,
                         batch_size=None, progress=True):
        x = ds.images.astype(np.float32) / 255.0
        n, h, w, c = x.shape
        f = x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, -1)
        return f + 0.01, ds.labels

    monkeypatch.setattr(features, "dataset_features", dataset_features)


def test_reference_factories_run_through_evaluate_methods(tmp_path, fake_backbone):
    root = tmp_path / "data"
    synthetic.write_cifar100_batches(root, n_train=200, n_test=200, seed=3)
    setting = dj.load_setting("cifar100-coarse", ["b1"], query_per_class=2, n_train=60,
                              root=root)
    factories = {
        "knn_copy": dj.label_copy_factory(setting, "b1", vote_k=3, heldout=0.2),
        "knn_copy_labels": dj.label_copy_factory(setting, "b1", with_labels=True,
                                                 finetune_epochs=2, heldout=0.2),
        **dj.dsth_factories(setting, "b1", ["slice_batchnorm"], inputs="features",
                            suffix="_on_features", heldout=0.2, **FAST),
        **dj.dsth_factories(setting, "b1", ["slice_batchnorm"], suffix="_heldout",
                            heldout=0.2, hidden_activation="sigmoid", **FAST),
    }
    assert factories["knn_copy_labels"].supervised and not factories["knn_copy"].supervised
    table, codes = dj.evaluate_methods(setting, factories, [16], "c/b1",
                                       metric_keys=["map@1000"])
    values = evaluation.long_to_metrics(table, "c/b1")
    assert set(values) == {f"c/b1/{m}/16/map@1000" for m in factories}
    for name, f in factories.items():
        rep = f.fitted[16].label_fit_report_
        assert set(rep) == {"train", "train_exact", "heldout", "heldout_exact"}, name
        assert codes[(name, 16)].database.shape[1] == 16
    assert isinstance(factories["slice_batchnorm_on_features"].fitted[16].model_,
                      dj.FeatureHashNet)
    # the with-labels copy uses the class-tuned labels, the plain one the untuned labels
    assert not np.array_equal(factories["knn_copy"].fitted[16].labels_.bits,
                              factories["knn_copy_labels"].fitted[16].labels_.bits)
