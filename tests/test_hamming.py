"""Tests of hashstudy.hamming: code conversion, packing, distances and search."""
import numpy as np
import pytest

from hashstudy import hamming as H

BIT_LENGTHS = (1, 7, 48, 63, 64, 65, 128, 130)


def random_codes(rng, n, bits):
    return rng.integers(0, 2, size=(n, bits), dtype=np.uint8)


def naive_distances(q, d):
    """Differing bits counted entry by entry (no packing, no popcount)."""
    return (q[:, None, :] != d[None, :, :]).sum(axis=2)


# ---------------------------------------------------------------------------
# to_bits / pack / unpack
# ---------------------------------------------------------------------------


def test_to_bits_accepts_both_conventions_and_dtypes():
    zero_one = np.array([[0, 1, 1], [1, 0, 0]])
    expected = zero_one.astype(np.uint8)
    for codes in (
        zero_one,
        zero_one.astype(bool),
        zero_one.astype(np.float32),
        zero_one.astype(np.uint8),
        2 * zero_one - 1,
        (2 * zero_one - 1).astype(np.int8),
        (2 * zero_one - 1).astype(np.float64),
    ):
        out = H.to_bits(codes)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(H.to_bits(np.ones((2, 3))), np.ones((2, 3)))
    np.testing.assert_array_equal(H.to_bits(-np.ones((2, 3))), np.zeros((2, 3)))


def test_to_bits_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], requires_grad=True)
    np.testing.assert_array_equal(H.to_bits(t), [[1, 0], [0, 1]])


@pytest.mark.parametrize(
    "codes, match",
    [
        (np.array([0, 1, 1]), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.zeros((3, 0)), "zero bits"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0, 2]]), r"only \{0, 1\} or only \{-1, \+1\}; found values 2"),
        (np.array([[0.5, 1.0]]), "found values 0.5"),
        (np.array([[0, -1, 1]]), "mix 0 and -1"),
        (np.array([[18446744073709551615]], dtype=np.uint64), "PackedCodes"),
    ],
)
def test_to_bits_rejects_bad_input(codes, match):
    with pytest.raises(ValueError, match=match):
        H.to_bits(codes)


def test_to_bits_rejects_non_numeric_dtype():
    with pytest.raises(TypeError, match="dtype"):
        H.to_bits(np.array([["0", "1"]]))


def test_pack_layout_worked_by_hand():
    codes = np.zeros((4, 70), dtype=np.uint8)
    codes[0, 0] = 1
    codes[1, 63] = 1
    codes[2, 64] = 1
    codes[3, [1, 3, 69]] = 1
    p = H.pack(codes)
    assert p.bits == 70 and p.n_words == 2 and len(p) == 4
    assert p.words.dtype == np.uint64
    np.testing.assert_array_equal(
        p.words,
        np.array([[1, 0], [1 << 63, 0], [0, 1], [0b1010, 1 << 5]], dtype=np.uint64),
    )


@pytest.mark.parametrize("bits", BIT_LENGTHS)
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    codes = random_codes(rng, 33, bits)
    p = H.pack(codes)
    np.testing.assert_array_equal(H.unpack(p), codes)
    np.testing.assert_array_equal(H.unpack(p.words, bits), codes)
    np.testing.assert_array_equal(H.pack(2.0 * codes - 1).words, p.words)
    assert H.pack(p) is p
    np.testing.assert_array_equal(H.to_bits(p), codes)


def test_packed_codes_checks_and_row_selection():
    p = H.pack(np.eye(5, 70, dtype=np.uint8))
    sub = p[1:3]
    assert isinstance(sub, H.PackedCodes) and sub.bits == 70 and len(sub) == 2
    np.testing.assert_array_equal(H.unpack(p[[4, 0]]), np.eye(5, 70, dtype=np.uint8)[[4, 0]])
    assert len(p[2]) == 1
    assert "n=5" in repr(p) and "bits=70" in repr(p)
    with pytest.raises(ValueError, match="padding bits"):
        H.PackedCodes(np.array([[0, 1 << 10]], dtype=np.uint64), 70)
    with pytest.raises(ValueError, match="2 uint64 words"):
        H.PackedCodes(np.zeros((3, 1), dtype=np.uint64), 70)
    with pytest.raises(TypeError, match="uint64"):
        H.PackedCodes(np.zeros((3, 2), dtype=np.int64), 70)
    with pytest.raises(ValueError, match="outside the allowed range"):
        H.PackedCodes(np.zeros((3, 2), dtype=np.uint64), 0)
    with pytest.raises(ValueError, match="does not match"):
        H.unpack(p, 64)
    with pytest.raises(ValueError, match="bits is required"):
        H.unpack(p.words)


# ---------------------------------------------------------------------------
# distances, top-k, radius search
# ---------------------------------------------------------------------------


def test_distances_worked_by_hand():
    q = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    d = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 1]])
    out = H.distances(q, d)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[0, 1, 3], [4, 3, 1]])


@pytest.mark.parametrize("bits", BIT_LENGTHS)
def test_distances_equal_naive_count(bits):
    rng = np.random.default_rng(100 + bits)
    q, d = random_codes(rng, 9, bits), random_codes(rng, 57, bits)
    expected = naive_distances(q, d)
    np.testing.assert_array_equal(H.distances(q, d), expected)
    np.testing.assert_array_equal(H.distances(H.pack(q), 1 - 2 * d.astype(int)), bits - expected)


@pytest.mark.parametrize("bits", BIT_LENGTHS)
def test_topk_equals_stable_argsort(bits):
    for seed in range(6):
        rng = np.random.default_rng(seed * 1000 + bits)
        n = int(rng.integers(1, 400))
        # few distinct codes, so that many distances tie
        pool = random_codes(rng, int(rng.integers(1, 12)), bits)
        d = pool[rng.integers(0, len(pool), n)]
        q = random_codes(rng, 7, bits)
        order = np.argsort(naive_distances(q, d), axis=1, kind="stable")
        for k in (1, 5, n // 2 + 1, n, n + 3, None):
            idx, dist = H.topk(q, d, k)
            kk = n if k is None else min(k, n)
            assert idx.shape == dist.shape == (7, kk)
            assert idx.dtype == np.int64 and dist.dtype == np.uint16
            np.testing.assert_array_equal(idx, order[:, :kk])
            np.testing.assert_array_equal(dist, np.take_along_axis(naive_distances(q, d), idx, 1))


def test_topk_no_queries():
    idx, dist = H.topk(np.zeros((0, 8)), np.zeros((5, 8)), 3)
    assert idx.shape == (0, 3) and dist.shape == (0, 3)


@pytest.mark.parametrize("bits", (5, 64, 130))
def test_radius_search_equals_brute_force(bits):
    rng = np.random.default_rng(bits)
    pool = random_codes(rng, 6, bits)
    d = pool[rng.integers(0, 6, 150)] ^ (rng.random((150, bits)) < 0.03)
    q = pool[rng.integers(0, 6, 8)]
    dist = naive_distances(q, d.astype(np.uint8))
    for r in (0, 1, 3, bits // 2, bits, bits + 10):
        hits = H.radius_search(q, d, r)
        assert hits.offsets.shape == (9,) and hits.offsets[0] == 0
        for i in range(8):
            expected = [j for j in np.argsort(dist[i], kind="stable") if dist[i, j] <= r]
            np.testing.assert_array_equal(hits.row(i), expected)
            np.testing.assert_array_equal(
                hits.distances[hits.offsets[i] : hits.offsets[i + 1]], dist[i, expected]
            )


def test_histograms_equal_brute_force():
    rng = np.random.default_rng(5)
    bits = 10
    q, d = random_codes(rng, 6, bits), random_codes(rng, 80, bits)
    ql, dl = rng.integers(0, 3, 6), rng.integers(0, 3, 80)
    h = H.histograms(q, d, ql, dl)
    dist = naive_distances(q, d)
    for i in range(6):
        np.testing.assert_array_equal(h.counts[i], np.bincount(dist[i], minlength=bits + 1))
        rel = dl == ql[i]
        np.testing.assert_array_equal(h.relevant[i], np.bincount(dist[i][rel], minlength=bits + 1))
    assert H.histograms(q, d).relevant is None


def test_ranking_summary_against_explicit_ranking():
    rng = np.random.default_rng(11)
    bits, n = 6, 120
    q, d = random_codes(rng, 10, bits), random_codes(rng, n, bits)
    ql, dl = rng.integers(0, 4, 10), rng.integers(0, 4, n)
    n_rel = H.relevant_totals(ql, dl)
    np.testing.assert_array_equal(n_rel, [(dl == c).sum() for c in ql])
    at_rel = np.stack([np.zeros(10, int), np.minimum(1, n_rel), n_rel // 2, n_rel], axis=1)
    s = H.ranking_summary(q, d, ql, dl, ap_at=[1, 10, None], hits_at=[3, 50, 500], at_relevant=at_rel)
    order = np.argsort(naive_distances(q, d), axis=1, kind="stable")
    for i in range(10):
        rel = dl[order[i]] == ql[i]
        ranks = np.flatnonzero(rel) + 1
        for col, k in enumerate([1, 10, n]):
            r = ranks[ranks <= k]
            ap = np.mean(np.arange(1, len(r) + 1) / r) if len(r) else 0.0
            assert s.ap[i, col] == pytest.approx(ap, abs=1e-12)
        np.testing.assert_array_equal(s.hits[i], [rel[:3].sum(), rel[:50].sum(), rel.sum()])
        for col in range(4):
            j = at_rel[i, col]
            expected = j / ranks[j - 1] if j else 0.0
            assert s.precision_at_relevant[i, col] == pytest.approx(expected, abs=1e-12)


def test_ranking_summary_checks_its_arguments():
    q, d = np.zeros((2, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match="need query_labels"):
        H.ranking_summary(q, d, ap_at=[1])
    with pytest.raises(ValueError, match="or neither"):
        H.ranking_summary(q, d, [0, 1])
    with pytest.raises(ValueError, match="has 1"):
        H.ranking_summary(q, d, [0, 1], [0, 1, 1], at_relevant=[[2], [2]])
    with pytest.raises(ValueError, match=r"shape \(Q, L\)"):
        H.ranking_summary(q, d, [0, 1], [0, 1, 1], at_relevant=[1, 1])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: H.distances(np.zeros((2, 8)), np.zeros((3, 9))), ValueError, "8 bits but database codes have 9"),
        (lambda: H.topk(np.zeros((2, 8)), np.zeros((3, 8)), 0), ValueError, "positive integer"),
        (lambda: H.topk(np.zeros((2, 8)), np.zeros((3, 8)), -2), ValueError, "positive integer"),
        (lambda: H.topk(np.zeros((2, 8)), np.zeros((3, 8)), 2.0), TypeError, "positive integer"),
        (lambda: H.topk(np.zeros((2, 8)), np.zeros((3, 8)), True), TypeError, "positive integer"),
        (lambda: H.topk(np.zeros((2, 8)), np.zeros((0, 8)), 1), ValueError, "database is empty"),
        (lambda: H.topk(np.zeros(8), np.zeros((3, 8)), 1), ValueError, "codes"),
        (lambda: H.radius_search(np.zeros((2, 8)), np.zeros((3, 8)), -1), ValueError, "non-negative"),
        (lambda: H.histograms(np.zeros((2, 8)), np.zeros((3, 8)), [0, 1], [0, 1]), ValueError, "2 entries but there are 3"),
        (lambda: H.histograms(np.zeros((2, 8)), np.zeros((3, 8)), [0, 1], [[0], [1], [2]]), ValueError, "1-D"),
        (lambda: H.histograms(np.zeros((2, 8)), np.zeros((3, 8)), [0, 1], [0.0, 1.0, 2.0]), TypeError, "integer dtype"),
    ],
)
def test_bad_input_gives_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
