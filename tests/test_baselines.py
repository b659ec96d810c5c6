"""Shallow hashing baselines: retrieval quality, each method's defining property,
determinism and input checks, on small synthetic data."""
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from hashstudy import baselines as B

N_CLASSES = 5
BITS = 16
RANDOM_METHODS = ("lsh", "sklsh", "itq", "cca_itq", "sph")
DETERMINISTIC_METHODS = ("pcah", "sh", "kmh")


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    """Small matrices on a shared machine: one BLAS thread is fastest and stable."""
    with threadpool_limits(limits=1):
        yield


def blobs(n_per_class=240, n_classes=N_CLASSES, dim=64, sep=1.0, seed=0):
    """Shuffled isotropic Gaussian clusters; centres ~ N(0, sep^2 / 2 I)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * sep / np.sqrt(2)
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centres[y] + rng.standard_normal((len(y), dim))
    order = rng.permutation(len(y))
    return X[order], y[order]


def hamming_map(q_codes, db_codes, q_labels, db_labels):
    """mAP of Hamming ranking (ties in database order), same label = relevant."""
    q = q_codes.astype(np.int64)
    db = db_codes.astype(np.int64)
    dist = q.sum(1)[:, None] + db.sum(1)[None, :] - 2 * q @ db.T
    order = np.argsort(dist, axis=1, kind="stable")
    rel = db_labels[order] == q_labels[:, None]
    precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    return float(((precision * rel).sum(1) / np.maximum(rel.sum(1), 1)).mean())


@pytest.fixture(scope="module")
def data():
    """200 queries and a 1,000-point database/training set of 5 clusters in 64-D.

    Separation is moderate: the cosine 12-NN graph is connected and LSH is far
    from perfect, so learned methods have room to differ.
    """
    X, y = blobs()
    return X[:200], y[:200], X[200:], y[200:]


@pytest.fixture(scope="module")
def fitted(data):
    """Every method fitted once at 16 bits (64 for SKLSH) on the database."""
    _, _, Xdb, ydb = data
    out = {}
    for name in B.METHODS:
        n_bits = 64 if name == "sklsh" else BITS
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. a disconnected STH graph
            out[name] = B.make(name, n_bits, seed=0).fit(Xdb, ydb)
    return out


def map_of(hasher, data):
    Xq, yq, Xdb, ydb = data
    return hamming_map(hasher.encode(Xq), hasher.encode(Xdb), yq, ydb)


# ---------------------------------------------------------------- interface


def test_registry_and_supervised_set():
    assert set(B.METHODS) == {"lsh", "sklsh", "pcah", "sh", "itq", "cca_itq", "sph", "kmh", "sth"}
    assert B.SUPERVISED == {"cca_itq"}
    for name, cls in B.METHODS.items():
        h = B.make(name, 8, seed=3)
        assert type(h) is cls and h.n_bits == 8 and h.seed == 3
    assert B.make("kmh", 8, lam=2.0).get_params()["lam"] == 2.0


@pytest.mark.parametrize("name", list(B.METHODS))
def test_codes_are_uint8_bits_of_the_right_shape(name, fitted, data):
    codes = fitted[name].encode(data[0])
    assert codes.dtype == np.uint8
    assert codes.shape == (200, fitted[name].n_bits)
    assert set(np.unique(codes)) == {0, 1}


# ---------------------------------------------------------------- retrieval quality


@pytest.mark.parametrize("name", list(B.METHODS))
def test_every_method_beats_chance(name, fitted, data):
    prior = 1.0 / N_CLASSES
    assert map_of(fitted[name], data) > prior + 0.15


def test_learned_rotations_beat_lsh_and_pcah(fitted, data):
    m = {name: map_of(h, data) for name, h in fitted.items()}
    assert m["itq"] > m["pcah"] + 0.3  # the ITQ paper's headline comparison
    assert m["itq"] > m["lsh"] + 0.2
    assert m["cca_itq"] >= m["itq"] - 0.02
    assert m["cca_itq"] > 0.95


def test_sklsh_improves_with_code_length(data):
    Xdb = data[2]
    short, long = (B.SKLSH(b, seed=0).fit(Xdb) for b in (16, 128))
    assert map_of(long, data) > map_of(short, data) + 0.15


# ---------------------------------------------------------------- defining properties


def test_lsh_collision_probability_is_one_minus_angle_over_pi():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 32)) + 2.0  # non-zero mean: hyperplanes pass through it
    lsh = B.LSH(20000, seed=1).fit(X)
    e1, e2 = np.linalg.qr(rng.standard_normal((32, 2)))[0].T
    mean = X.mean(axis=0)
    for theta in (np.pi / 6, np.pi / 2, 5 * np.pi / 6):
        u = mean + 3.0 * e1
        v = mean + 0.5 * (np.cos(theta) * e1 + np.sin(theta) * e2)
        codes = lsh.encode(np.stack([u, v]))
        agree = np.mean(codes[0] == codes[1])
        assert agree == pytest.approx(1 - theta / np.pi, abs=0.015)  # ~4 standard errors


def test_sklsh_hamming_distance_follows_the_kernel():
    """Raginsky and Lazebnik (2009), Lemma 2: for w ~ N(0, I / sigma^2),
    P(bits differ) = 8 / pi^2 * sum_m (1 - K(m delta)) / (4 m^2 - 1)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 16))
    sk = B.SKLSH(8192, seed=2, sigma=1.0).fit(X)
    x0, u = X[0], rng.standard_normal(16)
    u /= np.linalg.norm(u)
    radii = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    codes = sk.encode(np.vstack([x0, x0 + radii[:, None] * u]))
    observed = (codes[1:] != codes[0]).mean(axis=1)
    m = np.arange(1, 5000)[:, None]
    expected = 8 / np.pi**2 * ((1 - np.exp(-(m * radii) ** 2 / 2)) / (4 * m**2 - 1)).sum(0)
    np.testing.assert_allclose(observed, expected, atol=0.025)
    assert np.all(np.diff(observed) > 0)  # Hamming distance grows with Euclidean distance


def test_sklsh_default_width_is_the_median_pairwise_distance():
    X = np.random.default_rng(0).standard_normal((300, 8)) * 2.0
    assert B.SKLSH(8).fit(X).sigma_ == pytest.approx(np.median(pdist(X)))


def test_pcah_bits_are_signs_of_top_principal_components():
    X, _ = blobs(100, dim=32)
    pcah = B.PCAH(8).fit(X)
    reference = (PCA(n_components=8, svd_solver="full").fit(X).transform(X) > 0)
    codes = pcah.encode(X).astype(bool)
    for k in range(8):  # principal directions are defined up to sign
        assert np.array_equal(codes[:, k], reference[:, k]) or np.array_equal(
            codes[:, k], ~reference[:, k]
        )
    assert np.all(np.diff(pcah.explained_variance_) <= 0)


def test_itq_rotation_lowers_quantisation_loss(fitted, data):
    itq = fitted["itq"]
    loss = itq.quantization_loss_
    assert loss.shape == (51,)
    assert np.all(np.diff(loss) <= 1e-9 * loss[0])
    V = (data[2] - itq.mean_) @ itq.components_
    pcah_loss = np.sum((np.where(V > 0, 1.0, -1.0) - V) ** 2)
    assert loss[-1] < 0.95 * loss[0]
    assert loss[-1] < 0.95 * pcah_loss
    np.testing.assert_allclose(itq.rotation_.T @ itq.rotation_, np.eye(BITS), atol=1e-10)
    np.testing.assert_array_equal(itq.encode(data[2]), (V @ itq.rotation_ > 0))


def test_cca_itq_uses_the_labels():
    """Classes differ only along two low-variance directions, hidden under 30
    high-variance noise directions: PCA misses them, CCA finds them."""
    rng = np.random.default_rng(0)
    n = 800
    y = rng.integers(0, 4, n)
    corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float)
    X = np.hstack([corners[y] + 0.3 * rng.standard_normal((n, 2)),
                   3.0 * rng.standard_normal((n, 30))])
    itq = B.ITQ(8).fit(X).encode(X)
    cca = B.CCAITQ(8).fit(X, y)
    shuffled = B.CCAITQ(8).fit(X, rng.permutation(y)).encode(X)
    assert hamming_map(cca.encode(X), cca.encode(X), y, y) > 0.95
    assert hamming_map(itq, itq, y, y) < 0.4
    assert hamming_map(shuffled, shuffled, y, y) < 0.4
    # two informative directions; c = 4 classes allow at most 3 nonzero correlations
    assert np.all(cca.eigenvalues_[:2] > 0.8) and cca.eigenvalues_[2] < 0.1
    assert np.all(cca.eigenvalues_[3:] < 1e-6)
    # multi-label indicators give the same fit as class ids
    onehot = np.eye(4)[y]
    np.testing.assert_array_equal(B.CCAITQ(8).fit(X, onehot).encode(X), cca.encode(X))


def test_sh_bits_follow_eigenfunction_order():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 8)) * np.array([5, 3, 2, 1.5, 1, 1, 1, 1])
    sh = B.SH(6).fit(X)
    assert np.all(np.diff(sh.eigenvalues_) >= 0)
    assert np.all((sh.modes_ > 0).sum(1) == 1)  # one direction per bit
    assert sh.modes_.max() >= 2  # some direction carries a higher mode
    # bit k, of mode m on direction j, flips exactly m times across the box
    for k in range(sh.n_bits):
        j = sh.directions_[k]
        t = np.linspace(sh.lower_[j], sh.upper_[j], 4001)[1:-1]
        line = sh.mean_ + t[:, None] * sh.components_[:, j]
        flips = np.count_nonzero(np.diff(sh.encode(line)[:, k].astype(int)))
        assert flips == sh.modes_[k, j]
    # the lowest mode splits the widest direction at the middle of its range
    j = np.argmax(sh.upper_ - sh.lower_)
    V = (X - sh.mean_) @ sh.components_
    np.testing.assert_array_equal(sh.encode(X)[:, 0], V[:, j] < (sh.lower_[j] + sh.upper_[j]) / 2)


def test_sph_spheres_are_balanced_and_pairwise_independent(data):
    Xdb = data[2]
    sph = B.SpH(BITS, seed=0).fit(Xdb)
    codes = sph.encode(Xdb).astype(float)
    np.testing.assert_allclose(codes.mean(0), 0.5, atol=0.01)
    pairs = np.triu_indices(BITS, 1)
    overlap = (codes.T @ codes / len(codes))[pairs]
    assert sph.n_iter_ < sph.max_iter
    assert np.abs(overlap - 0.25).mean() <= 0.1 * 0.25
    assert overlap.std() <= 0.15 * 0.25
    np.testing.assert_allclose(overlap, sph.overlap_[pairs])
    # the pivots' random start does not have this property: the forces make it
    start = B.SpH(BITS, seed=0, max_iter=0).fit(Xdb).overlap_[pairs]
    assert np.abs(start - 0.25).mean() > 2 * np.abs(overlap - 0.25).mean()
    assert sph.pivots_.shape == (BITS, Xdb.shape[1]) and sph.radii_.shape == (BITS,)


def _codeword_hamming_correlation(kmh):
    """Correlation of codeword distances with sqrt(Hamming) of their indices."""
    out = []
    for C, b in zip(kmh.codebooks_, kmh.block_bits_):
        idx = (np.arange(2**b)[:, None] >> np.arange(b)) & 1
        ham = np.sqrt(np.abs(idx[:, None, :] - idx[None, :, :]).sum(-1))
        euc = np.linalg.norm(C[:, None, :] - C[None, :, :], axis=-1)
        iu = np.triu_indices(2**b, 1)
        out.append(np.corrcoef(ham[iu], euc[iu])[0, 1])
    return np.array(out)


def test_kmh_lowers_its_objective_and_preserves_affinity(fitted, data):
    kmh = fitted["kmh"]
    assert kmh.objective_.shape == (51,)
    assert kmh.objective_[-1] < 0.97 * kmh.objective_[0]
    assert kmh.objective_[-1] <= kmh.objective_[1:].min() + 1e-9 * kmh.objective_[0]
    assert kmh.block_bits_ == [4, 4, 4, 4]
    assert all(C.shape == (16, 16) for C in kmh.codebooks_)
    with_affinity = _codeword_hamming_correlation(kmh)
    plain_kmeans = _codeword_hamming_correlation(B.KMH(BITS, lam=0.0).fit(data[2]))
    assert np.all(with_affinity > 0.9)
    assert with_affinity.mean() > plain_kmeans.mean() + 0.2


def test_kmh_handles_a_short_last_block(data):
    kmh = B.KMH(10, n_iter=5).fit(data[2])
    assert kmh.block_bits_ == [4, 4, 2]
    assert kmh.encode(data[0]).shape == (200, 10)


def test_sth_svms_reproduce_the_eigenmap_codes(fitted, data):
    sth = fitted["sth"]
    np.testing.assert_array_equal(sth.train_index_, np.arange(len(data[2])))
    agree = sth.encode(data[2][sth.train_index_]) == sth.train_codes_
    # the first c-1 eigenvectors separate the clusters: linear, reproduced almost exactly
    assert np.all(agree[:, : N_CLASSES - 1].mean(0) > 0.9)
    assert np.all(agree.mean(0) > 0.6)
    assert (agree.mean(1) > 0.5).mean() > 0.9  # most points keep most of their bits
    assert np.all(np.diff(sth.eigenvalues_) >= 0)
    np.testing.assert_allclose(sth.train_codes_.mean(0), 0.5, atol=0.01)  # median thresholds


def test_sth_max_train_subsamples_with_the_seed(data):
    a = B.STH(8, seed=0, max_train=300).fit(data[2])
    b = B.STH(8, seed=1, max_train=300).fit(data[2])
    assert a.train_index_.shape == (300,) and np.all(np.diff(a.train_index_) > 0)
    assert not np.array_equal(a.train_index_, b.train_index_)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", list(B.METHODS))
def test_same_seed_same_codes(name, data):
    Xq, _, Xdb, ydb = data
    first = B.make(name, 8, seed=5).fit(Xdb, ydb).encode(Xq)
    again = B.make(name, 8, seed=5).fit(Xdb, ydb).encode(Xq)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("name", RANDOM_METHODS)
def test_different_seed_different_codes(name, data):
    Xq, _, Xdb, ydb = data
    a = B.make(name, 8, seed=0).fit(Xdb, ydb).encode(Xq)
    b = B.make(name, 8, seed=1).fit(Xdb, ydb).encode(Xq)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", DETERMINISTIC_METHODS)
def test_methods_without_random_steps_ignore_the_seed(name, data):
    Xq, _, Xdb, _ = data
    a = B.make(name, 8, seed=0, **({"n_iter": 5} if name == "kmh" else {})).fit(Xdb)
    b = B.make(name, 8, seed=1, **({"n_iter": 5} if name == "kmh" else {})).fit(Xdb)
    np.testing.assert_array_equal(a.encode(Xq), b.encode(Xq))


# ---------------------------------------------------------------- bad input


def test_unknown_method_lists_the_names():
    with pytest.raises(ValueError, match="unknown hashing method 'lshh'") as err:
        B.make("lshh", 8)
    for name in B.METHODS:
        assert repr(name) in str(err.value)


@pytest.mark.parametrize("n_bits", [0, -4])
@pytest.mark.parametrize("name", list(B.METHODS))
def test_nonpositive_bits_rejected(name, n_bits):
    with pytest.raises(ValueError, match="n_bits must be a positive integer"):
        B.make(name, n_bits)


@pytest.mark.parametrize("n_bits", [2.5, "8", True, None])
def test_non_integer_bits_rejected(n_bits):
    with pytest.raises(TypeError, match="n_bits"):
        B.make("lsh", n_bits)


@pytest.mark.parametrize("name", list(B.METHODS))
def test_encode_before_fit(name):
    with pytest.raises(NotFittedError, match="not fitted"):
        B.make(name, 8).encode(np.zeros((3, 4)))


def test_encode_with_wrong_number_of_features(fitted):
    with pytest.raises(ValueError, match="has 63 features but ITQ was fitted with 64"):
        fitted["itq"].encode(np.zeros((3, 63)))


def test_fit_needs_a_matrix_of_several_rows():
    with pytest.raises(ValueError, match="must be 2-D"):
        B.LSH(8).fit(np.zeros(10))
    with pytest.raises(ValueError, match="at least 2 training samples"):
        B.LSH(8).fit(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="empty"):
        B.LSH(8).fit(np.zeros((0, 10)))


def test_supervised_method_needs_labels(data):
    with pytest.raises(ValueError, match="supervised: call fit\\(X, y\\)"):
        B.make("cca_itq", 8).fit(data[2])
    with pytest.raises(ValueError, match="y has 5 rows but X has 1000"):
        B.make("cca_itq", 8).fit(data[2], np.arange(5))
    with pytest.raises(ValueError, match="at least two different labels"):
        B.make("cca_itq", 8).fit(data[2], np.zeros(1000, dtype=int))


@pytest.mark.parametrize("name", list(B.METHODS))
def test_nan_rejected(name, fitted, data):
    X = data[2].copy()
    X[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        B.make(name, 8).fit(X, data[3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fitted[name].encode(np.where(np.isnan(X), np.inf, X))


def test_pca_methods_need_enough_features():
    X = np.random.default_rng(0).standard_normal((50, 6))
    for name in ("pcah", "itq"):
        with pytest.raises(ValueError, match="exceeds the 6 input features"):
            B.make(name, 8).fit(X)
    with pytest.raises(ValueError, match="PCA dimensions per subspace"):
        B.KMH(16).fit(X)
    assert B.SH(8).fit(X).encode(X).shape == (50, 8)  # SH reuses directions for more modes


def test_bad_method_parameters():
    with pytest.raises(ValueError, match="unknown threshold 'max'"):
        B.STH(8, threshold="max")
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        B.SKLSH(8, sigma=0.0)
    with pytest.raises(TypeError):
        B.make("lsh", 8, gamma=2.0)


def test_pca_covariance_is_remembered_bit_for_bit_and_per_input():
    from hashstudy import baselines as b

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 20))
    Xc = X - X.mean(0)
    b._COVARIANCES.clear()
    fresh = Xc.T @ Xc / (len(Xc) - 1)
    first = b._covariance(Xc)
    assert np.array_equal(first, fresh)
    first[0, 0] = 99.0  # callers get a copy: the remembered matrix is not changed
    assert np.array_equal(b._covariance(Xc.copy()), fresh) and len(b._COVARIANCES) == 1
    other = Xc.copy()
    other[0, 0] += 1e-9
    assert not np.array_equal(b._covariance(other), fresh)
    # the hashers that start from PCA give the same codes with a cold or a warm memory
    codes = []
    for clear in (True, False):
        if clear:
            b._COVARIANCES.clear()
        codes.append([b.make(m, 8, seed=0).fit(X).encode(X) for m in ("pcah", "itq", "sh")])
    for cold, warm in zip(*codes):
        assert np.array_equal(cold, warm)
