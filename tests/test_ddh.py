"""Deep Discrete Hashing (hashstudy.ddh): loss of eq. 12, pair labels, hasher, classification."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hashstudy import baselines, data, ddh, metrics, protocols, synthetic


def _blobs(n_per_class=60, n_classes=6, dim=32, spread=1.2, seed=0, n_query_per_class=0):
    """Gaussian classes; returns (X, y) or, with queries, (X, y, Xq, yq) from the same centres."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 2.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centers[y] + rng.normal(size=(y.size, dim)) * spread).astype(np.float32)
    if not n_query_per_class:
        return X, y
    yq = np.repeat(np.arange(n_classes), n_query_per_class)
    Xq = (centers[yq] + rng.normal(size=(yq.size, dim)) * spread).astype(np.float32)
    return X, y, Xq, yq


# ---------------------------------------------------------------------------
# eq. 12 and its gradient (eq. 13)


def test_loss_value_on_a_hand_made_example():
    # two orthogonal +-1 codes: z0.z1 = 0, already binary (no quantisation loss)
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    similar = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    loss, parts = ddh.ddh_loss(z, similar, lambda1=15.0)
    # one pair: J1 = 1/2 * (0/2 - 1)^2 = 1/2, J2 = 0, divided by B = 2
    assert parts["quantization"] == pytest.approx(0.0)
    assert parts["pairwise"] == pytest.approx(0.25)
    assert float(loss) == pytest.approx(0.25)
    dissimilar = -similar
    assert float(ddh.ddh_loss(z, dissimilar)[0]) == pytest.approx(0.25)
    # identical codes: zero loss when similar, maximal when dissimilar
    same = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    assert float(ddh.ddh_loss(same, similar)[0]) == pytest.approx(0.0)
    assert float(ddh.ddh_loss(same, dissimilar)[0]) == pytest.approx(1.0)  # 1/2 * 2^2 / 2


def test_gradient_is_eq_13():
    torch.manual_seed(0)
    n, bits, lam = 5, 6, 15.0
    z = torch.randn(n, bits, dtype=torch.float64, requires_grad=True)
    s = torch.where(torch.rand(n, n) > 0.5, 1.0, -1.0).double()
    s = torch.triu(s, 1) + torch.triu(s, 1).T
    loss, _ = ddh.ddh_loss(z, s, lambda1=lam)
    loss.backward()
    zd = z.detach()
    b = torch.where(zd >= 0, 1.0, -1.0).double()
    expected = torch.zeros_like(zd)
    for i in range(n):
        for j in range(n):
            if i != j:  # eq. 13, summed over the batch partners j
                expected[i] += (zd[i] @ zd[j]) / bits**2 * zd[j] - s[i, j] / bits * zd[j]
        expected[i] += lam * (zd[i] - b[i])
    torch.testing.assert_close(z.grad, expected / n)


@pytest.mark.parametrize("pairwise", ddh.PAIRWISE)
def test_gradient_step_pulls_similar_and_pushes_dissimilar(pairwise):
    z0 = torch.tensor([[0.6, 0.2, -0.4, 0.3], [0.1, 0.5, 0.3, -0.2]])

    def inner_after_step(sign):
        z = z0.clone().requires_grad_(True)
        s = torch.tensor([[1.0, sign], [sign, 1.0]])
        ddh.ddh_loss(z, s, lambda1=0.0, pairwise=pairwise)[0].backward()
        with torch.no_grad():
            z1 = z - 0.5 * z.grad
        return float(z1[0] @ z1[1]), float((z1[0] - z1[1]).norm())

    before_inner, before_dist = float(z0[0] @ z0[1]), float((z0[0] - z0[1]).norm())
    inner, dist = inner_after_step(+1.0)
    assert inner > before_inner and dist < before_dist
    inner, dist = inner_after_step(-1.0)
    assert inner < before_inner and dist > before_dist


def test_quantisation_term_pulls_towards_the_signs():
    z = torch.tensor([[0.5, -0.25, 0.0]], requires_grad=True)
    loss, parts = ddh.ddh_loss(z, torch.ones(1, 1), lambda1=2.0)
    # b = sgn(z) = (+1, -1, +1) (eq. 4: sgn(0) = +1); J2 = 1/2 (0.25 + 0.5625 + 1)
    assert parts["quantization"] == pytest.approx(0.5 * (0.25 + 0.5625 + 1.0))
    assert parts["pairwise"] == 0.0  # a single image has no pair
    loss.backward()
    torch.testing.assert_close(z.grad, 2.0 * (z.detach() - torch.tensor([[1.0, -1.0, 1.0]])))


def test_likelihood_term_is_stable_and_uses_zero_one_labels():
    z = torch.tensor([[40.0] * 8, [40.0] * 8])  # Theta = z0.z1 / 2 = 6400
    s = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    loss, parts = ddh.ddh_loss(z, s, lambda1=0.0, pairwise="likelihood")
    assert torch.isfinite(loss) and parts["pairwise"] == pytest.approx(0.0, abs=1e-6)
    loss_d, _ = ddh.ddh_loss(z, -s, lambda1=0.0, pairwise="likelihood")
    assert float(loss_d) == pytest.approx(3200.0)  # (softplus(6400) - 0 * 6400) / B


def test_loss_rejects_bad_shapes_and_names():
    with pytest.raises(ValueError, match="shape"):
        ddh.ddh_loss(torch.zeros(3, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="pairwise"):
        ddh.ddh_loss(torch.zeros(2, 4), torch.zeros(2, 2), pairwise="hinge")


# ---------------------------------------------------------------------------
# pair labels: S in {1, 0} (eq. 3) -> s in {+1, -1} (eq. 5)


def test_pair_labels_map_one_zero_to_plus_minus_one():
    S = sp.csr_matrix(([1.0, 1.0], ([0, 2], [2, 0])), shape=(4, 4))
    s = ddh.PairLabels.from_neighbors(S)(np.array([0, 2, 3]))
    expected = -torch.ones(3, 3)
    expected[0, 1] = expected[1, 0] = 1.0
    torch.testing.assert_close(s, expected)
    s = ddh.PairLabels.from_classes(np.array([0, 1, 0, 1]))(np.array([0, 1, 2]))
    torch.testing.assert_close(s, torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]]))
    with pytest.raises(ValueError):
        ddh.PairLabels.from_classes(np.array([0.5, 1.0]))


def test_neighborhood_is_cached_and_symmetric():
    X, y = _blobs(20, 3, 8)
    S = ddh.neighborhood(X, k1=5, k2=2)
    again = ddh.neighborhood(X, k1=5, k2=2)
    assert (S != again).nnz == 0 and (S != S.T).nnz == 0 and S.diagonal().sum() == 0
    assert S.shape == (60, 60) and S.nnz >= 60 * 5


# ---------------------------------------------------------------------------
# the hasher


def test_ddh_beats_lsh_on_separable_features():
    X, y, Xq, yq = _blobs(n_query_per_class=15)
    h = ddh.DDH(16, k1=10, k2=3, epochs=15, optimizer="adam", lr=1e-2, use_cache=False,
                progress=False).fit(X)
    codes = h.encode(X)
    assert codes.dtype == np.uint8 and codes.shape == (X.shape[0], 16)
    assert set(np.unique(codes)) <= {0, 1}
    ours = metrics.mean_average_precision(h.encode(Xq), codes, yq, y, topk=100)
    lsh = baselines.make("lsh", 16, seed=0).fit(X)
    theirs = metrics.mean_average_precision(lsh.encode(Xq), lsh.encode(X), yq, y, topk=100)
    assert ours > theirs + 0.1


def test_ddh_is_deterministic_and_cached():
    X, _ = _blobs(20, 3, 8)
    a = ddh.DDH(8, k1=5, k2=2, epochs=2, progress=False).fit(X)
    b = ddh.DDH(8, k1=5, k2=2, epochs=2, progress=False).fit(X)
    assert not a.info_["from_cache"] and b.info_["from_cache"]
    np.testing.assert_array_equal(a.encode(X), b.encode(X))
    c = ddh.DDH(8, k1=5, k2=2, epochs=2, progress=False, use_cache=False).fit(X)
    np.testing.assert_array_equal(a.encode(X), c.encode(X))


def test_supervised_variant_needs_and_uses_labels():
    X, y = _blobs(20, 3, 8)
    with pytest.raises(ValueError, match="labels"):
        ddh.DDH(8, supervised=True, progress=False).fit(X)
    h = ddh.DDH(8, supervised=True, epochs=5, optimizer="adam", lr=1e-2, use_cache=False,
                progress=False).fit(X, y)
    assert h.S_ is None
    make = ddh.factory(supervised=True, epochs=1)
    assert make.supervised and isinstance(make(8), ddh.DDH)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="k1"):
        ddh.DDH(8, k1=0)
    with pytest.raises(ValueError, match="pairwise"):
        ddh.DDH(8, pairwise="hinge")
    with pytest.raises(ValueError, match="k1"):
        ddh.DDH(8, k1=15, progress=False).fit(np.random.default_rng(0).normal(size=(10, 4)))
    with pytest.raises(RuntimeError, match="fit"):
        ddh.DDH(8).encode(np.zeros((2, 4)))


def test_subsampled_fits_on_at_most_max_train_rows():
    X, _ = _blobs(20, 3, 8)
    h = ddh.Subsampled(baselines.make("itq", 4), max_train=25, seed=0).fit(X)
    assert h.n_train_ == 25 and h.encode(X).shape == (60, 4)


def test_holdout_split_stays_inside_the_training_images():
    train_labels, test_labels = np.repeat(np.arange(3), 8), np.repeat(np.arange(3), 2)
    split = protocols.make_split(train_labels, test_labels, "test-train", dataset="toy")
    labels = np.concatenate([train_labels, test_labels])
    hold = ddh.holdout_split(split, labels, 2, seed=0)
    assert hold.query.size == 6 and np.isin(hold.query, split.train).all()
    assert np.array_equal(np.bincount(labels[hold.query]), [2, 2, 2])
    assert not np.isin(hold.query, hold.database).any() and np.array_equal(hold.database, hold.train)
    assert not np.isin(split.query, hold.query).any() and "holdout" in hold.name


# ---------------------------------------------------------------------------
# object recognition with codes (sec. 3.3), and the Oxford-17 ImageFolder path


def test_svm_on_codes_separates_classes():
    X, y = _blobs(30, 3, 8)
    codes = (X > X.mean(0)).astype(np.uint8)
    r = ddh.svm_on_codes(codes[::2], y[::2], codes[1::2], y[1::2])
    assert r["accuracy"] > 0.9 and r["train_seconds"] >= 0 and r["n_train"] == 45


def test_code_classification_on_a_generated_imagefolder(tmp_path):
    classes = ["bluebell", "daisy", "iris"]
    root = tmp_path / "oxford17"
    synthetic.write_imagefolder(root / "train", classes, 12, size=(40, 36), seed=1, ext="jpg")
    synthetic.write_imagefolder(root / "test", classes, 4, size=(40, 36), seed=2, ext="jpg")
    data.register_imagefolder("oxford17-test", root, size=32)
    try:
        table = ddh.code_classification(
            "oxford17-test", [16], backbone="efficientnet_lite0", input_size=64,
            methods={"ddh": ddh.factory(k1=5, k2=2, epochs=3, progress=False),
                     "itq": lambda b: baselines.make("itq", b)}, seed=0, progress=False)
    finally:
        data.unregister("oxford17-test")
    assert list(table.method) == ["features", "ddh", "itq"]
    assert (table.n_train == 36).all() and (table.n_test == 12).all()
    assert table.accuracy.between(0, 1).all()
    assert table.set_index("method").accuracy["features"] > 1 / 3


def test_itq_init_starts_at_itq_codes_and_random_init_does_not():
    X, y, Xq, yq = _blobs(n_query_per_class=5)
    start = ddh.DDH(16, k1=10, k2=3, epochs=0, init="itq", use_cache=False, progress=False).fit(X)
    itq = baselines.make("itq", 16, seed=0).fit(start.model_.features(torch.from_numpy(X)).numpy())
    feats = start.model_.features(torch.from_numpy(Xq)).numpy()
    assert (start.encode(Xq) == itq.encode(feats)).mean() > 0.99
    rand = ddh.DDH(16, k1=10, k2=3, epochs=0, init="random", use_cache=False, progress=False).fit(X)
    assert (rand.encode(Xq) == itq.encode(feats)).mean() < 0.8
    with pytest.raises(ValueError, match="allowed values"):
        ddh.DDH(16, init="zeros")


def test_neighbor_batches_pair_each_anchor_with_a_constructed_neighbor():
    X, _ = _blobs(20, 3, 8)
    S = ddh.neighborhood(X, k1=5, k2=2)
    sample = ddh._partner_sampler(S, None, seed=0)
    anchors = np.arange(60)
    partners = sample(anchors)
    assert all(S[a, p] != 0 for a, p in zip(anchors, partners))
    labels = np.repeat(np.arange(3), 20)
    same = ddh._partner_sampler(None, labels, seed=0)(anchors)
    assert (labels[same] == labels[anchors]).all()
    with pytest.raises(ValueError, match="allowed values"):
        ddh.DDH(16, batches="all")
