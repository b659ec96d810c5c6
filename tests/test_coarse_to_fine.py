"""The coarse-to-fine search of the latent-layer paper (sec. III-B) with a bounded pool.

Checked against a reference written from the documented rule with numpy and
float64 distances: whole Hamming shells up to the first radius holding ``k``
items, raised towards ``radius`` while the pool stays within
``ceil(pool_factor * k)``; a boundary shell that alone overflows the cap
keeps its items nearest in feature distance; the pool re-ranked by Euclidean
distance (ties by Hamming distance, then index).
"""
import math

import numpy as np
import pytest

from hashstudy import hamming, latent


def _clustered(n=600, n_query=40, bits=12, dim=5, seed=0, dtype=np.float64):
    """Codes around a few prototypes (big Hamming shells, many identical codes) and features."""
    rng = np.random.default_rng(seed)
    proto = rng.integers(0, 2, (6, bits), dtype=np.uint8)
    centres = rng.normal(0.0, 3.0, (6, dim))

    def draw(m):
        c = rng.integers(0, 6, m)
        codes = proto[c] ^ (rng.random((m, bits)) < 0.06).astype(np.uint8)
        feats = centres[c] + rng.normal(0.0, 1.0, (m, dim))
        return codes, feats.astype(dtype)

    dc, df = draw(n)
    qc, qf = draw(n_query)
    return qc, dc, qf, df


def _reference(qc, dc, qf, df, k, radius, pool_factor):
    """Per query: (ranked indices, pool radius, pool, fine distances scored)."""
    qc, dc = np.asarray(qc, np.int64), np.asarray(dc, np.int64)
    bits, n = dc.shape[1], len(dc)
    k = min(k, n)
    cap = None if pool_factor is None else math.ceil(pool_factor * k)
    out = []
    for i in range(len(qc)):
        ham = (qc[i] != dc).sum(axis=1)
        e = ((df.astype(np.float64) - qf[i].astype(np.float64)) ** 2).sum(axis=1)
        cum = np.cumsum(np.bincount(ham, minlength=bits + 1))
        r = int(np.argmax(cum >= k))
        while r + 1 <= min(radius, bits) and (cap is None or cum[r + 1] <= cap):
            r += 1
        inside, shell = np.flatnonzero(ham < r), np.flatnonzero(ham == r)
        if cap is not None and cum[r] > cap:
            shell = shell[np.argsort(e[shell], kind="stable")[: cap - len(inside)]]
        pool = np.concatenate([inside, shell])
        ranked = pool[np.lexsort((pool, ham[pool], e[pool]))][:k]
        out.append((ranked, r, pool, int(cum[r]), e))
    return out


def _assert_matches_reference(res, ref, exact=True):
    for i, (ranked, r, pool, scored, e) in enumerate(ref):
        assert res.pool_radius[i] == r, i
        assert res.pool_size[i] == len(pool), i
        assert res.scored[i] == scored, i
        got = res.indices[i]
        assert set(got) <= set(pool), i  # every result comes from the pool
        if exact:
            assert got.tolist() == ranked.tolist(), i
        else:  # the same distances (float32 sums may swap near-equal items)
            np.testing.assert_allclose(e[got], e[ranked], rtol=1e-5)


@pytest.mark.parametrize("pool_factor", [1.0, 1.3, 2.0, 4.0, None])
@pytest.mark.parametrize("k, radius", [(1, 0), (7, 0), (25, 3), (60, 2), (5, 12)])
def test_capped_search_is_brute_force_within_the_pool(pool_factor, k, radius):
    qc, dc, qf, df = _clustered()
    res = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=radius, pool_factor=pool_factor)
    ref = _reference(qc, dc, qf, df, k, radius, pool_factor)
    _assert_matches_reference(res, ref)
    cap = None if pool_factor is None else math.ceil(pool_factor * k)
    assert res.pool_cap == cap
    if cap is not None:
        assert res.pool_size.max() <= cap


def test_the_cut_is_exercised_and_keeps_the_nearest_boundary_items():
    qc, dc, qf, df = _clustered()
    k, factor = 25, 1.0
    res = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=0, pool_factor=factor)
    ref = _reference(qc, dc, qf, df, k, 0, factor)
    cut = res.scored > res.pool_size
    assert cut.sum() >= 10  # the data make the cap cut many boundary shells
    whole = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=0, pool_factor=None)
    # with a cap of k the pool is the result: inner shells plus the boundary
    # shell's nearest items, which is not the whole shell's ranking
    assert not np.array_equal(res.indices[cut], whole.indices[cut])
    _assert_matches_reference(res, ref)


def test_a_cut_shell_is_cut_by_feature_distance_not_by_storage_order():
    # query code 000: item 0 at Hamming distance 0; items 1-4 at distance 1
    # (the boundary shell for k = 2); in feature space item 4, stored last,
    # is the nearest of the shell, then item 3
    db = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.uint8)
    feats = np.array([[9.0], [8.0], [7.0], [2.0], [1.0]])
    res = latent.coarse_to_fine(np.zeros((1, 3), np.uint8), db, np.zeros((1, 1)), feats,
                                k=2, pool_factor=1.0)
    assert res.indices.tolist() == [[4, 0]]  # the pool is {0, 4}
    assert res.pool_size.tolist() == [2] and res.scored.tolist() == [5]
    assert res.pool_radius.tolist() == [1]
    res = latent.coarse_to_fine(np.zeros((1, 3), np.uint8), db, np.zeros((1, 1)), feats,
                                k=2, pool_factor=1.5)  # cap 3: {0, 4, 3}
    assert res.indices.tolist() == [[4, 3]]


def test_the_initial_radius_adds_whole_shells_only_within_the_cap():
    # shells of the query 0000: sizes 1, 1, 1, 1, 1 at distances 0..4
    db = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]],
                  np.uint8)
    feats = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
    q, qf = np.zeros((1, 4), np.uint8), np.zeros((1, 1))
    for factor, radius, pool in [(2.0, 4, 4), (3.0, 4, 5), (1.0, 4, 2), (2.0, 1, 2), (None, 4, 5)]:
        res = latent.coarse_to_fine(q, db, qf, feats, k=2, radius=radius, pool_factor=factor)
        assert res.pool_size.tolist() == [pool], (factor, radius)
        assert res.pool_radius.tolist() == [pool - 1], (factor, radius)
        assert res.indices.tolist() == [[pool - 1, pool - 2]], (factor, radius)


@pytest.mark.parametrize("use_index", [False, True])
@pytest.mark.parametrize("pool_factor", [1.0, 1.5, None])
@pytest.mark.parametrize("radius", [0, 3])
def test_a_permuted_database_gives_the_same_results(use_index, pool_factor, radius):
    qc, dc, qf, df = _clustered(n=800, dtype=np.float32, seed=3)
    perm = np.random.default_rng(7).permutation(len(dc))
    db_a = hamming.SearchIndex(dc, method="mih") if use_index else dc
    db_b = hamming.SearchIndex(dc[perm], method="mih") if use_index else dc[perm]
    for k in (1, 10, 90):
        a = latent.coarse_to_fine(qc, db_a, qf, df, k=k, radius=radius, pool_factor=pool_factor)
        b = latent.coarse_to_fine(qc, db_b, qf, df[perm], k=k, radius=radius,
                                  pool_factor=pool_factor)
        assert np.array_equal(perm[b.indices], a.indices), k
        for name in ("pool_radius", "pool_size", "scored"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (k, name)


@pytest.mark.parametrize("radius", [0, 2, 5])
def test_a_cap_above_the_full_pool_equals_the_uncapped_search(radius):
    qc, dc, qf, df = _clustered(dtype=np.float32)
    for k in (3, 40):
        free = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=radius, pool_factor=None)
        factor = free.pool_size.max() / k  # cap = the largest uncapped pool
        capped = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=radius, pool_factor=factor)
        assert np.array_equal(capped.indices, free.indices)
        assert np.array_equal(capped.pool_size, free.pool_size)
        assert np.array_equal(capped.pool_radius, free.pool_radius)
        assert free.pool_cap is None and capped.pool_cap >= free.pool_size.max()


def test_a_cap_of_two_k_never_changes_the_papers_minimal_pool():
    # radius 0: the pool is the first radius holding k items; fewer than k
    # items lie inside its boundary shell, so a cap of 2 k keeps at least k of
    # the shell's nearest items and the results are those of the whole shell
    qc, dc, qf, df = _clustered(dtype=np.float32)
    for k in (1, 7, 50):
        free = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=0, pool_factor=None)
        for factor in (2.0, 2.5):
            capped = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=0, pool_factor=factor)
            assert np.array_equal(capped.indices, free.indices), (k, factor)
            assert np.array_equal(capped.scored, free.scored)
            assert np.all(capped.pool_size == np.minimum(free.pool_size, math.ceil(factor * k)))


def test_float32_features_rank_like_float64():
    qc, dc, qf, df = _clustered(dtype=np.float32, seed=5)
    for factor in (1.0, 2.0, None):
        res = latent.coarse_to_fine(qc, dc, qf, df, k=30, radius=2, pool_factor=factor)
        _assert_matches_reference(res, _reference(qc, dc, qf, df, 30, 2, factor), exact=False)


def test_integer_features_and_packed_codes_are_accepted():
    qc, dc, qf, df = _clustered(seed=2)
    qi, di = np.rint(qf * 10).astype(np.int32), np.rint(df * 10).astype(np.int32)
    res = latent.coarse_to_fine(hamming.pack(qc), hamming.pack(dc), qi, di, k=12, radius=1)
    ref = _reference(qc, dc, qi, di, 12, 1, latent.POOL_FACTOR)
    _assert_matches_reference(res, ref, exact=False)  # integer distances tie often


def test_a_mih_index_finds_the_same_pools_as_the_scan():
    qc, dc, qf, df = _clustered(n=1500, bits=16, dtype=np.float32, seed=4)
    index = hamming.SearchIndex(dc, method="mih")
    for k, radius, factor in [(1, 0, 2.0), (20, 2, 2.0), (50, 3, 1.0), (200, 1, None)]:
        scan = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=radius, pool_factor=factor)
        mih = latent.coarse_to_fine(qc, index, qf, df, k=k, radius=radius, pool_factor=factor)
        assert index.last_search["method"] == "mih"
        for name in ("indices", "pool_radius", "pool_size", "scored"):
            assert np.array_equal(getattr(scan, name), getattr(mih, name)), (k, name)


def test_pools_beyond_the_buffer_and_several_blocks(monkeypatch):
    qc, dc, qf, df = _clustered(n_query=23)
    configs = [(5, 6, None), (5, 6, 8.0), (40, 1, 1.0)]
    expected = [latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=r, pool_factor=f)
                for k, r, f in configs]
    monkeypatch.setattr(latent, "_C2F_MIN_BUFFER", 1)  # buffers of max(cap, 2 k) candidates
    monkeypatch.setattr(latent, "_C2F_BLOCK", 7)  # four blocks of queries
    for want, (k, r, f) in zip(expected, configs):
        got = latent.coarse_to_fine(qc, dc, qf, df, k=k, radius=r, pool_factor=f)
        if f is None:
            assert (got.scored > 2 * k).mean() > 0.5  # most pools did not fit their buffer
        for name in ("indices", "pool_radius", "pool_size", "scored"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), (k, name)
        _assert_matches_reference(got, _reference(qc, dc, qf, df, k, r, f))


def test_the_time_of_each_level_is_reported():
    qc, dc, qf, df = _clustered(dtype=np.float32)
    res = latent.coarse_to_fine(qc, dc, qf, df, k=20, radius=2)
    assert res.pool_seconds > 0 and res.rerank_seconds > 0
    assert res.seconds == pytest.approx(res.pool_seconds + res.rerank_seconds)
    assert np.all(res.scored >= res.pool_size)


def test_no_queries_give_empty_results():
    _, dc, _, df = _clustered()
    res = latent.coarse_to_fine(np.zeros((0, 12), np.uint8), dc, np.zeros((0, 5)), df, k=3)
    assert res.indices.shape == (0, 3) and res.pool_size.shape == (0,)


@pytest.mark.parametrize("bad", [0.5, 0, -2, float("nan"), float("inf"), True, "2", [2]])
def test_a_bad_pool_factor_is_one_clear_error(bad):
    qc, dc, qf, df = _clustered(n=50, n_query=2)
    with pytest.raises(ValueError, match=r"pool_factor must be None \(no cap\) or a finite "
                                         r"number >= 1"):
        latent.coarse_to_fine(qc, dc, qf, df, k=3, pool_factor=bad)


def test_other_bad_input_is_refused_with_a_clear_error():
    qc, dc, qf, df = _clustered(n=50, n_query=2)
    with pytest.raises(ValueError, match="bits"):
        latent.coarse_to_fine(qc[:, :8], dc, qf, df, k=3)
    with pytest.raises(ValueError, match="D >= 1"):
        latent.coarse_to_fine(qc, dc, qf[:, :0], df[:, :0], k=3)
    with pytest.raises(ValueError, match="numeric"):
        latent.coarse_to_fine(qc, dc, qf.astype(object), df, k=3)
    with pytest.raises(ValueError, match="radius"):
        latent.coarse_to_fine(qc, dc, qf, df, k=3, radius=1.5)


def test_experiment_passes_the_cap_to_the_search():
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 4.0, (3, 6))
    y = np.repeat(np.arange(3), 40)
    X = (centres[y] + rng.normal(0.0, 1.0, (len(y), 6))).astype(np.float32)
    from hashstudy import protocols

    split = protocols.make_split(y[:90], y[90:], "test1k-train", seed=0, dataset="blobs3",
                                 n_query=10)
    h = latent.LatentHasher(6, trunk="features", fc7_dim=16, dropout=0.0, epochs=5,
                            batch_size=30, cache=False, progress=False)
    capped = latent.experiment(h, X, y, split, pool_radius=6, max_k=20, ks=(1, 20))
    free = latent.experiment(h, X, y, split, pool_radius=6, max_k=20, ks=(1, 20),
                             pool_factor=None)
    assert capped.fine.pool_cap == math.ceil(latent.POOL_FACTOR * 20)
    assert free.fine.pool_cap is None
    assert capped.fine.pool_size.max() <= capped.fine.pool_cap < free.fine.pool_size.max()
    assert capped.metrics["coarse_to_fine/mean_pool_size"] == pytest.approx(
        capped.fine.pool_size.mean())
