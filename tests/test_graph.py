"""Tests for hashstudy.graph: kNN search, kNN graphs, Laplacian eigenmaps,
binarisation and DDH's self-supervised pair labels."""
import time
import tracemalloc

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph
import scipy.spatial

from hashstudy import graph


def _cosine_reference(X, k, exclude_self=True):
    """Exact float64 cosine kNN, ties by index (stable sort)."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    if exclude_self:
        np.fill_diagonal(S, -np.inf)
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(S, idx, axis=1)


def _blobs(rng, n_per, centers, scale):
    centers = np.asarray(centers, dtype=float)
    X = np.concatenate([c + scale * rng.standard_normal((n_per, centers.shape[1]))
                        for c in centers])
    return X, np.repeat(np.arange(len(centers)), n_per)


def _laplacian(W):
    W = W.toarray()
    D = np.diag(W.sum(axis=1))
    return D - W, D


# ---------------------------------------------------------------------------
# knn


# Small tiles exercise the tiling (several tiles, a ragged last one); None is
# the default, a single tile here.
@pytest.mark.parametrize("chunk", [37, 64, None])
def test_knn_cosine_matches_brute_force(chunk):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 12)).astype(np.float32)
    idx, sim = graph.knn(X, 10, chunk=chunk)
    ref_idx, ref_sim = _cosine_reference(X, 10)
    assert idx.dtype == np.int64 and sim.dtype == np.float32
    assert idx.shape == sim.shape == (150, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sim, ref_sim, atol=1e-6)
    assert (np.diff(sim, axis=1) <= 0).all()


@pytest.mark.parametrize("chunk", [9, 33, None])  # 9: tiles narrower than k
def test_knn_euclidean_exact_ties_ordered_by_index(chunk):
    # Small integer coordinates: every distance is exact in float32 and
    # almost every rank is an exact tie, so the index order is fully tested.
    rng = np.random.default_rng(1)
    X = rng.integers(-2, 3, size=(90, 3)).astype(np.float32)
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1).astype(np.int64)
    idx, dist = graph.knn(X, 89, metric="euclidean", exclude_self=False, chunk=chunk)
    assert idx.shape == (90, 89)
    full = np.argsort(D, axis=1, kind="stable")
    np.testing.assert_array_equal(idx, full[:, :89])
    np.testing.assert_allclose(dist, np.sqrt(np.take_along_axis(D, full[:, :89], 1)),
                               atol=1e-5)
    np.fill_diagonal(D, np.iinfo(np.int64).max)
    idx, _ = graph.knn(X, 15, metric="euclidean", chunk=chunk)
    np.testing.assert_array_equal(idx, np.argsort(D, axis=1, kind="stable")[:, :15])
    assert not (idx == np.arange(90)[:, None]).any()


def test_knn_cosine_duplicates_are_neighbours_in_index_order():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((20, 5)).astype(np.float32)
    X = np.concatenate([base, base, base])  # rows i, i+20, i+40 are identical
    idx, sim = graph.knn(X, 2, chunk=16)
    for i in range(20):
        np.testing.assert_array_equal(idx[i], [i + 20, i + 40])
        np.testing.assert_array_equal(idx[i + 40], [i, i + 20])
    np.testing.assert_allclose(sim, 1.0, atol=1e-6)


def test_knn_query_matches_brute_force_and_keeps_self():
    rng = np.random.default_rng(3)
    Xdb = rng.standard_normal((120, 6)).astype(np.float32)
    Xq = rng.standard_normal((25, 6)).astype(np.float32)
    idx, dist = graph.knn_query(Xq, Xdb, 7, metric="euclidean", chunk=16)
    D = np.linalg.norm(Xq[:, None].astype(np.float64) - Xdb[None], axis=-1)
    ref = np.argsort(D, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(dist, np.take_along_axis(D, ref, 1), atol=1e-4)
    self_idx, self_sim = graph.knn_query(Xdb[:10], Xdb, 1)
    np.testing.assert_array_equal(self_idx[:, 0], np.arange(10))
    np.testing.assert_allclose(self_sim[:, 0], 1.0, atol=1e-6)


def test_knn_rejects_bad_input():
    X = np.random.default_rng(4).standard_normal((10, 3))
    with pytest.raises(ValueError, match="k must be"):
        graph.knn(X, 10)  # k >= N with the point itself excluded
    with pytest.raises(ValueError, match="k must be"):
        graph.knn(X, 0)
    with pytest.raises(ValueError, match="k must be"):
        graph.knn(X, -3)
    with pytest.raises(TypeError, match="integer"):
        graph.knn(X, 2.5)
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite.*rows \\[4\\]"):
        graph.knn(bad, 3)
    zero = X.copy()
    zero[2] = 0
    with pytest.raises(ValueError, match="all-zero rows"):
        graph.knn(zero, 3)
    graph.knn(zero, 3, metric="euclidean")  # fine for euclidean
    with pytest.raises(ValueError, match="2-D"):
        graph.knn(X[0], 1)
    with pytest.raises(ValueError, match="allowed values"):
        graph.knn(X, 2, metric="manhattan")
    with pytest.raises(ValueError, match="features"):
        graph.knn_query(X[:, :2], X, 2)
    with pytest.raises(ValueError, match="single point"):
        graph.knn(X[:1], 1)


# ---------------------------------------------------------------------------
# knn_graph


def test_knn_graph_cosine_weights_symmetric_nonnegative():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((80, 6))
    W = graph.knn_graph(X, 5)
    assert isinstance(W, sp.csr_matrix) and W.shape == (80, 80) and W.dtype == np.float64
    assert abs(W - W.T).max() == 0
    assert (W.diagonal() == 0).all()
    assert W.data.min() > 0
    idx, _ = _cosine_reference(X.astype(np.float32), 5)
    directed = np.zeros((80, 80), bool)
    directed[np.repeat(np.arange(80), 5), idx.ravel()] = True
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = Xn @ Xn.T
    union = (directed | directed.T) & (cos > 0)
    np.testing.assert_array_equal(W.toarray() > 0, union)
    np.testing.assert_allclose(W.toarray()[union], cos[union], atol=1e-6)
    mutual = graph.knn_graph(X, 5, symmetrize="and").toarray()
    np.testing.assert_array_equal(mutual > 0, directed & directed.T & (cos > 0))
    mean = graph.knn_graph(X, 5, symmetrize="mean").toarray()
    one_way = directed & ~directed.T & (cos > 0)
    np.testing.assert_allclose(mean[one_way], cos[one_way] / 2, atol=1e-6)


def test_knn_graph_clips_negative_cosine_edges():
    # Three directions 120 degrees apart: with k=2 every neighbour has
    # cosine -1/2, so every cosine weight is clipped to 0 and no edge remains.
    ang = np.deg2rad([0, 120, 240])
    X = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    assert graph.knn_graph(X, 2).nnz == 0
    assert graph.knn_graph(X, 2, weight="binary").nnz == 6


def test_knn_graph_heat_and_binary_weights():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((60, 4))
    Wb = graph.knn_graph(X, 4, weight="binary", metric="euclidean")
    assert set(np.unique(Wb.data)) == {1.0}
    Wh = graph.knn_graph(X, 4, weight="heat", metric="euclidean", sigma=0.7)
    np.testing.assert_array_equal(Wh.indices, Wb.indices)
    r, c = Wh.nonzero()
    d2 = ((X[r] - X[c]) ** 2).sum(1)
    np.testing.assert_allclose(np.asarray(Wh[r, c]).ravel(), np.exp(-d2 / (2 * 0.7**2)),
                               rtol=1e-5)
    # default width: the median distance to the k neighbours
    sigma = np.median(graph.knn(X, 4, metric="euclidean")[1])
    Wd = graph.knn_graph(X, 4, weight="heat", metric="euclidean")
    np.testing.assert_allclose(np.asarray(Wd[r, c]).ravel(), np.exp(-d2 / (2 * sigma**2)),
                               rtol=1e-4)  # float32 distances
    with pytest.raises(ValueError, match="metric"):
        graph.knn_graph(X, 4, weight="cosine", metric="euclidean")
    with pytest.raises(ValueError, match="sigma"):
        graph.knn_graph(X, 4, sigma=1.0)


def test_knn_graph_reuses_precomputed_neighbours():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((70, 5))
    big = graph.knn(X, 9)
    W = graph.knn_graph(X, 4, neighbors=big)
    assert abs(W - graph.knn_graph(X, 4)).max() == 0
    with pytest.raises(ValueError, match="k must be"):
        graph.knn_graph(X, 10, neighbors=big)


# ---------------------------------------------------------------------------
# laplacian_eigenmap


def _two_touching_clusters(n_per=60, seed=8):
    rng = np.random.default_rng(seed)
    X, y = _blobs(rng, n_per, [[0, 0], [5, 0]], 1.0)
    W = graph.knn_graph(X, 8, weight="heat", metric="euclidean")
    assert scipy.sparse.csgraph.connected_components(W)[0] == 1
    return W, y


@pytest.mark.parametrize("solver", ["arpack", "dense"])
def test_eigenmap_splits_two_clusters_and_solves_generalised_problem(solver):
    W, y = _two_touching_clusters()
    Y, lam = graph.laplacian_eigenmap(W, 5, solver=solver)
    assert Y.shape == (120, 5) and Y.dtype == np.float64 and lam.shape == (5,)
    assert lam[0] > 1e-6 and (np.diff(lam) >= -1e-12).all()
    # the first non-trivial eigenvector separates the clusters: opposite signs
    # on nearly every point (a few on the bridge between them may stray)
    f = Y[:, 0] * np.sign(Y[y == 0, 0].mean())
    assert (f[y == 0] > 0).mean() > 0.95 and (f[y == 1] < 0).mean() > 0.95
    for c in (0, 1):
        assert Y[y == c, 0].std() < abs(Y[y == c, 0].mean())
    L, D = _laplacian(W)
    np.testing.assert_allclose(L @ Y, D @ Y * lam, atol=1e-5)
    np.testing.assert_allclose(Y.T @ D @ Y, np.eye(5), atol=1e-6)
    np.testing.assert_allclose(Y.T @ D @ np.ones(120), 0, atol=1e-6)
    ref_lam, ref_V = scipy.linalg.eigh(L, D, subset_by_index=(1, 5))
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-5, atol=1e-8)
    cos = np.abs(np.sum(ref_V * (D @ Y), axis=0))  # |<v_ref, y>_D|, both D-normalised
    gaps = np.diff(np.concatenate([[0], ref_lam, [np.inf]]))
    simple = (gaps[:-1] > 1e-4) & (gaps[1:] > 1e-4)
    np.testing.assert_allclose(cos[simple], 1, atol=1e-4)


def test_eigenmap_four_clusters_embed_apart_and_is_deterministic():
    rng = np.random.default_rng(9)
    X, y = _blobs(rng, 70, [[0, 0], [5, 0], [0, 5], [5, 5]], 1.0)
    W = graph.knn_graph(X, 10, weight="heat", metric="euclidean")
    assert scipy.sparse.csgraph.connected_components(W)[0] == 1
    Y, lam = graph.laplacian_eigenmap(W, 3, solver="arpack", seed=3)
    Y2, lam2 = graph.laplacian_eigenmap(W, 3, solver="arpack", seed=3)
    np.testing.assert_array_equal(Y, Y2)
    np.testing.assert_array_equal(lam, lam2)
    means = np.stack([Y[y == c].mean(0) for c in range(4)])
    spread = max(np.linalg.norm(Y[y == c] - means[c], axis=1).mean() for c in range(4))
    between = scipy.spatial.distance.pdist(means).min()
    assert between > 4 * spread
    # the fourth eigenvalue is well above the three cluster ones
    _, lam4 = graph.laplacian_eigenmap(W, 4)
    assert lam4[3] > 3 * lam4[2]


def test_eigenmap_keeps_trivial_vector_when_asked():
    W, _ = _two_touching_clusters()
    Y, lam = graph.laplacian_eigenmap(W, 3, drop_trivial=False, solver="arpack")
    assert abs(lam[0]) < 1e-8
    deg = np.asarray(W.sum(1)).ravel()
    np.testing.assert_allclose(Y[:, 0], 1 / np.sqrt(deg.sum()), rtol=1e-6)
    Y1, lam1 = graph.laplacian_eigenmap(W, 2, solver="arpack")
    np.testing.assert_allclose(lam[1:], lam1, rtol=1e-6)


@pytest.mark.parametrize("solver", ["arpack", "dense"])
def test_eigenmap_disconnected_graph_warns_and_returns_indicator(solver):
    rng = np.random.default_rng(10)
    X, y = _blobs(rng, 40, [[0, 0], [100, 0]], 1.0)
    W = graph.knn_graph(X, 5, weight="binary", metric="euclidean")
    with pytest.warns(graph.DisconnectedGraphWarning, match="2 connected components"):
        Y, lam = graph.laplacian_eigenmap(W, 2, solver=solver)
    assert abs(lam[0]) < 1e-8 and lam[1] > 1e-3
    assert np.ptp(Y[y == 0, 0]) < 1e-8 and np.ptp(Y[y == 1, 0]) < 1e-8
    assert np.sign(Y[0, 0]) != np.sign(Y[-1, 0])


def test_eigenmap_rejects_bad_graphs():
    W, _ = _two_touching_clusters()
    with pytest.raises(ValueError, match="square"):
        graph.laplacian_eigenmap(W[:, :100], 2)
    with pytest.raises(ValueError, match="symmetric"):
        graph.laplacian_eigenmap(sp.triu(W).tocsr(), 2)
    neg = W.copy()
    neg.data[:] = -neg.data
    with pytest.raises(ValueError, match="negative"):
        graph.laplacian_eigenmap(neg, 2)
    iso = W.tolil()
    iso[5, :] = 0
    iso[:, 5] = 0
    with pytest.raises(ValueError, match="isolated nodes.*\\[5\\]"):
        graph.laplacian_eigenmap(iso.tocsr(), 2)
    with pytest.raises(ValueError, match="n_components"):
        graph.laplacian_eigenmap(W, 120)
    with pytest.raises(ValueError, match="allowed values"):
        graph.laplacian_eigenmap(W, 2, solver="lobpcg")


# ---------------------------------------------------------------------------
# binarize


def test_binarize_rules_and_reused_thresholds():
    rng = np.random.default_rng(11)
    Y = rng.standard_normal((101, 6)) + np.arange(6) + rng.exponential(size=(101, 1)) * 3
    bits, thr = graph.binarize(Y, rule="median")
    assert bits.dtype == np.uint8 and set(np.unique(bits)) <= {0, 1}
    np.testing.assert_array_equal(bits.sum(0), 51)  # odd N: the median itself counts as 1
    bits, thr = graph.binarize(Y, rule="mean")
    np.testing.assert_allclose(thr, Y.mean(0))
    np.testing.assert_array_equal(bits, Y >= Y.mean(0))
    bits, thr = graph.binarize(Y, rule="zero")
    np.testing.assert_array_equal(thr, 0)
    np.testing.assert_array_equal(bits, Y >= 0)
    # thresholds learnt on one set are applied, unchanged, to another
    _, thr = graph.binarize(Y, rule="mean")
    Z = rng.standard_normal((30, 6)) + 10
    zbits, zthr = graph.binarize(Z, rule="median", thresholds=thr)
    np.testing.assert_array_equal(zthr, thr)
    np.testing.assert_array_equal(zbits, Z >= thr)
    # a value equal to its threshold maps to 1 (eq. 13 uses >=)
    eq, _ = graph.binarize(np.array([[1.0, 2.0]]), thresholds=[1.0, 2.5])
    np.testing.assert_array_equal(eq, [[1, 0]])
    with pytest.raises(ValueError, match="shape"):
        graph.binarize(Y, thresholds=thr[:3])
    with pytest.raises(ValueError, match="allowed values"):
        graph.binarize(Y, rule="sign")


# ---------------------------------------------------------------------------
# DDH expansion


def _expand_reference(lists, k2, include_self):
    """Algorithm 1 written out with Python sets (directed S)."""
    n = len(lists)
    sets = [set(map(int, l)) for l in lists]
    S = np.zeros((n, n), dtype=bool)
    for i in range(n):
        cands = [(len(sets[i] & sets[j]), j) for j in range(n)
                 if (include_self or j != i) and len(sets[i] & sets[j]) > 0]
        cands.sort(key=lambda p: (-p[0], p[1] != i, p[1]))
        for _, j in cands[:k2]:
            S[i, list(sets[j])] = True
        S[i, i] = False
    return S


def test_expand_neighbors_hand_worked_example():
    lists = np.array([[1, 2], [2, 3], [1, 3], [2, 4], [3, 5], [4, 3], [3, 4]])
    # Row 0: L0={1,2} overlaps L1, L2, L3 by one each; itself first, then the
    # smallest index (1): L0 | L1 = {1,2,3}. Row 4: L4={3,5} overlaps L1, L2,
    # L5, L6 by one: L4 | L1 = {2,3,5}. Row 5: L5={3,4} overlaps L6 by two and
    # L1, L2, L3, L4 by one, so L6 wins over the smaller indices:
    # L5 | L6 = {3,4}. And so on.
    expected = {0: {1, 2, 3}, 1: {2, 3}, 2: {1, 3}, 3: {1, 2, 4}, 4: {2, 3, 5},
                5: {3, 4}, 6: {3, 4}}
    S = graph.expand_neighbors(lists, k2=2, symmetrize="none")
    assert isinstance(S, sp.csr_matrix) and S.dtype == np.float32
    for i, js in expected.items():
        assert set(S[i].indices) == js
    assert set(np.unique(S.data)) == {1.0}
    dense = S.toarray() > 0
    S_or = graph.expand_neighbors(lists, k2=2).toarray() > 0
    np.testing.assert_array_equal(S_or, dense | dense.T)
    S_and = graph.expand_neighbors(lists, k2=2, symmetrize="and").toarray() > 0
    np.testing.assert_array_equal(S_and, dense & dense.T)
    # without itself, row 0 unites the two best other lists, L1 and L2
    S_ex = graph.expand_neighbors(lists, k2=2, include_self=False, symmetrize="none")
    assert set(S_ex[0].indices) == {1, 2, 3}
    assert set(S_ex[1].indices) == {2, 3}  # L0 | L2 = {1,2,3} without 1 itself


@pytest.mark.parametrize("include_self", [True, False])
def test_expand_neighbors_matches_literal_algorithm(include_self):
    rng = np.random.default_rng(12)
    n, k1 = 60, 5
    X = rng.standard_normal((n, 4))
    lists, _ = graph.knn(X, k1)
    ref = _expand_reference(lists, 3, include_self)
    S = graph.expand_neighbors(lists, k2=3, include_self=include_self, symmetrize="none",
                               block_pairs=50)  # many small blocks
    np.testing.assert_array_equal(S.toarray() > 0, ref)
    np.testing.assert_array_equal(
        graph.expanded_neighbors(X, k1, 3, include_self=include_self,
                                 symmetrize="none").toarray() > 0, ref)


def test_expand_neighbors_rejects_bad_lists():
    with pytest.raises(ValueError, match="own point"):
        graph.expand_neighbors(np.array([[0, 1], [0, 2], [0, 1]]))
    with pytest.raises(ValueError, match="lie in"):
        graph.expand_neighbors(np.array([[1, 3], [0, 2], [0, 1]]))
    with pytest.raises(ValueError, match="repeats"):
        graph.expand_neighbors(np.array([[1, 1], [0, 2], [0, 1]]))
    with pytest.raises(ValueError, match="k2 must be"):
        graph.expand_neighbors(np.array([[1], [0]]), k2=0)


def test_expand_neighbors_scale_memory_and_time():
    # K1=15 lists of 20,000 random points in the plane (found with a k-d tree
    # to keep the test fast), K2=6: no dense N x N anywhere (that alone would
    # take 3 GiB in float64), output within the k2 * K1 per-row bound,
    # seconds rather than minutes.
    rng = np.random.default_rng(13)
    n, k1, k2 = 20_000, 15, 6
    X = rng.random((n, 2))
    lists = scipy.spatial.cKDTree(X).query(X, k1 + 1)[1][:, 1:]
    tracemalloc.start()
    t0 = time.perf_counter()
    S = graph.expand_neighbors(lists, k2, symmetrize="none")
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]  # numpy reports its buffers here
    tracemalloc.stop()
    assert peak < 200 * 2**20
    assert S.shape == (n, n)
    row_nnz = np.diff(S.indptr)
    assert row_nnz.max() <= k1 * k2 and row_nnz.min() >= k1
    assert S.nnz * (S.data.itemsize + S.indices.itemsize) < 64 * 2**20
    assert elapsed < 60, f"expansion of 20,000 lists took {elapsed:.1f} s"


# ---------------------------------------------------------------------------
# label quality and label matrices


def test_label_precision_lists_and_matrices():
    labels = np.array([0, 0, 1, 1])
    lists = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    assert graph.label_precision(lists, labels) == pytest.approx(0.5)
    S = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]))
    # the diagonal entry is ignored: pairs (0,1), (1,0), (1,2), (2,3), (3,2)
    assert graph.label_precision(S, labels) == pytest.approx(4 / 5)
    multi = np.array([[1, 0], [1, 1], [0, 1], [0, 1]])
    assert graph.label_precision(lists, multi) == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="labels must have shape"):
        graph.label_precision(lists, labels[:3])
    with pytest.raises(ValueError, match="no neighbour pairs"):
        graph.label_precision(sp.eye(4, format="csr"), labels)


def test_neighbor_precision_curve_on_clustered_data():
    rng = np.random.default_rng(14)
    centers = rng.standard_normal((6, 10)) * 1.6
    X, y = _blobs(rng, 100, centers, 1.0)
    rows = graph.neighbor_precision_curve(X, y, ks=[5, 10], k2=4)
    assert [r["method"] for r in rows] == ["knn", "expanded", "knn_matched"] * 2
    idx, _ = graph.knn(X, 10)
    assert rows[3]["precision"] == graph.label_precision(idx, y)
    for j, k in enumerate([5, 10]):
        plain, exp, matched = rows[3 * j:3 * j + 3]
        assert plain["k"] == exp["k"] == k and exp["k2"] == 4
        assert exp["mean_neighbors"] > k
        assert matched["k"] == round(exp["mean_neighbors"])
        # the two-step expansion is at least as precise as plain kNN of the same size
        assert exp["precision"] >= matched["precision"]


def test_label_similarity_and_pairwise_labels():
    labels = np.array([2, 0, 2, 1])
    S = graph.label_similarity(labels)
    expected = np.array([[1, -1, 1, -1], [-1, 1, -1, -1], [1, -1, 1, -1], [-1, -1, -1, 1]])
    np.testing.assert_array_equal(S, expected)
    assert S.dtype == np.float32
    np.testing.assert_array_equal(graph.label_similarity(labels, labels[:2], dtype=np.int8),
                                  expected[:, :2])
    multi = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(graph.label_similarity(multi),
                                  [[1, 1, -1], [1, 1, -1], [-1, -1, 1]])
    with pytest.raises(ValueError, match="max_entries"):
        graph.label_similarity(np.zeros(200, int), max_entries=1000)
    P = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32))
    np.testing.assert_array_equal(graph.pairwise_labels(P, [2, 1]), [[-1, 1], [1, -1]])
    np.testing.assert_array_equal(graph.pairwise_labels(P, [0], [1, 2]), [[1, -1]])
    with pytest.raises(ValueError, match="rows"):
        graph.pairwise_labels(P, [3])


# ---------------------------------------------------------------------------
# normalised-cut thresholds


def _ncut(W, ones):
    W = W.toarray() if sp.issparse(W) else np.asarray(W)
    deg = W.sum(1)
    cut = W[ones][:, ~ones].sum()
    return cut / deg[ones].sum() + cut / deg[~ones].sum()


def test_ncut_thresholds_find_the_best_split_of_each_column():
    rng = np.random.default_rng(5)
    n = 30
    A = rng.random((n, n)) * (rng.random((n, n)) < 0.3)
    W = sp.csr_matrix(np.triu(A, 1) + np.triu(A, 1).T)
    Y = rng.standard_normal((n, 4))
    thr, values = graph.ncut_thresholds(W, Y)
    for p in range(4):
        v = np.sort(Y[:, p])
        candidates = (v[:-1] + v[1:]) / 2  # every split into a top and a bottom set
        brute = [_ncut(W, Y[:, p] >= t) for t in candidates]
        assert values[p] == pytest.approx(min(brute))
        assert _ncut(W, Y[:, p] >= thr[p]) == pytest.approx(min(brute))
        assert 0 < (Y[:, p] >= thr[p]).sum() < n
    bits, used = graph.binarize(Y, rule="ncut", W=W)
    np.testing.assert_array_equal(used, thr)
    np.testing.assert_array_equal(bits, Y >= thr)


def test_ncut_split_gives_near_zero_values_one_bit_where_the_sign_does_not():
    # two tight groups A1, A2 (one "class", weakly linked) and a third group B,
    # linked to A by a single weak edge; the column lives in A (+1 on A1, -1 on
    # A2) and is near zero, of random sign, on B
    rng = np.random.default_rng(0)
    a1, a2, b = np.arange(0, 10), np.arange(10, 20), np.arange(20, 60)
    W = np.zeros((60, 60))
    for g in (a1, a2, b):
        W[np.ix_(g, g)] = 1.0
    W[0, 10] = W[10, 0] = 0.2
    W[5, 30] = W[30, 5] = 0.01
    np.fill_diagonal(W, 0)
    v = np.zeros(60)
    v[a1], v[a2], v[b] = 1.0, -1.0, rng.normal(0, 1e-3, b.size)
    sign_bits, _ = graph.binarize(v[:, None], rule="zero")
    assert 0 < sign_bits[b].sum() < b.size  # the sign splits B at random
    bits, _ = graph.binarize(v[:, None], rule="ncut", W=sp.csr_matrix(W))
    assert len(np.unique(bits[b])) == 1  # one bit for all of B
    assert np.all(bits[a1] == 1) and np.all(bits[a2] == 0)  # the cut is inside A


def test_ncut_ties_between_components_take_the_most_balanced_split():
    W = sp.block_diag([np.ones((5, 5)) - np.eye(5)] * 4).tocsr()
    v = np.repeat([3.0, 2.0, 1.0, 0.0], 5)  # every split between blocks cuts nothing
    thr, values = graph.ncut_thresholds(W, v[:, None])
    assert values[0] == 0.0 and thr[0] == pytest.approx(1.5)


def test_ncut_thresholds_reject_bad_input():
    W = sp.csr_matrix(np.ones((4, 4)) - np.eye(4))
    with pytest.raises(ValueError, match="needs the graph"):
        graph.binarize(np.arange(8.0).reshape(4, 2), rule="ncut")
    with pytest.raises(ValueError, match="constant"):
        graph.ncut_thresholds(W, np.ones((4, 1)))
    with pytest.raises(ValueError, match="match the rows"):
        graph.ncut_thresholds(W, np.arange(10.0).reshape(5, 2))
    with pytest.raises(ValueError, match="no edges"):
        graph.ncut_thresholds(sp.csr_matrix((4, 4)), np.arange(4.0)[:, None])


def test_spectral_codes_split_two_blobs_with_one_bit():
    blobs = np.array([[1, .1], [1, .2], [.9, .1], [1, 0], [.1, 1], [.2, 1], [0, 1], [.1, .9]])
    for rule in ("median", "zero", "ncut"):
        bits = graph.spectral_codes(blobs, n_bits=1, k=4, rule=rule).ravel()
        assert bits.dtype == np.uint8 and len(set(bits[:4])) == len(set(bits[4:])) == 1
        assert bits[0] != bits[4]
    # shuffling the points shuffles the codes (up to the sign of the eigenvector)
    order = np.random.default_rng(0).permutation(8)
    again = graph.spectral_codes(blobs[order], n_bits=1, k=4).ravel()
    same = again == graph.spectral_codes(blobs, n_bits=1, k=4).ravel()[order]
    assert same.all() or (~same).all()
