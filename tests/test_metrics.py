"""Tests of hashstudy.metrics against hand-worked answers and slow references."""
import itertools
import time

import numpy as np
import pytest

from hashstudy import hamming as H
from hashstudy import metrics as M

# ---------------------------------------------------------------------------
# slow, independent references (pure Python over explicit rankings)
# ---------------------------------------------------------------------------


def ref_distances(q, d):
    return [[sum(int(a != b) for a, b in zip(qi, dj)) for dj in d] for qi in q]


def ref_ranking(dist_row):
    return sorted(range(len(dist_row)), key=lambda j: (dist_row[j], j))


def ref_ap(rel, k):
    """CalcTopMap: AP over the top k of a 0/1 relevance list in rank order."""
    hits, total = 0, 0.0
    for pos, r in enumerate(rel[:k], start=1):
        if r:
            hits += 1
            total += hits / pos
    return total / hits if hits else 0.0


def ref_precision_at_recall(rel, level):
    n_rel = sum(rel)
    if n_rel == 0:
        return 0.0
    hits = 0
    for pos, r in enumerate(rel, start=1):
        hits += r
        if r and hits / n_rel >= level - 1e-12:
            return hits / pos
    raise AssertionError("recall never reached")


def relevance_lists(q, d, ql, dl):
    dist = ref_distances(q, d)
    return [[int(dl[j] == ql[i]) for j in ref_ranking(dist[i])] for i in range(len(q))]


def tie_orderings(dist_row):
    """Every ranking that sorts by distance, whatever the order within ties."""
    groups = [[j for j in range(len(dist_row)) if dist_row[j] == t] for t in sorted(set(dist_row))]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [j for part in parts for j in part]


def ref_radius(dist, ql, dl, r):
    """Per-query (retrieved, relevant retrieved, relevant total) within radius r."""
    out = []
    for i in range(len(dist)):
        inside = [j for j in range(len(dl)) if dist[i][j] <= r]
        out.append((len(inside), sum(dl[j] == ql[i] for j in inside), sum(x == ql[i] for x in dl)))
    return out


def clustered(rng, n_q, n_db, bits, classes, flip):
    """Codes near one prototype per class, so that rankings are informative."""
    proto = rng.integers(0, 2, size=(classes, bits))
    ql, dl = rng.integers(0, classes, n_q), rng.integers(0, classes, n_db)
    q = proto[ql] ^ (rng.random((n_q, bits)) < flip)
    d = proto[dl] ^ (rng.random((n_db, bits)) < flip)
    return q.astype(np.uint8), d.astype(np.uint8), ql, dl


# ---------------------------------------------------------------------------
# answers worked by hand
# ---------------------------------------------------------------------------

# query 00; database 00 (relevant), 01 (not), 10 (relevant), 11 (relevant):
# distances 0, 1, 1, 2; the items at distance 1 tie.
TIE_Q = np.array([[0, 0]])
TIE_D = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
TIE_QL = np.array([7])
TIE_DL = np.array([7, 3, 7, 7])


def test_perfect_ranking_has_map_one():
    q = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    d = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
    ql, dl = np.array([0, 1]), np.array([0, 0, 1, 1, 0])
    for ties in M.TIES:
        for k in (1, 2, 3, None):
            assert M.mean_average_precision(q, d, ql, dl, k, ties) == 1.0


def test_reversed_ranking_worked_by_hand():
    # distances 0, 1, 2, 3; the two relevant items are ranked last:
    # AP = (1/3 + 2/4) / 2 = 5/12
    q = np.array([[0, 0, 0]])
    d = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    ql, dl = [1], [0, 0, 1, 1]
    for ties in M.TIES:
        assert M.mean_average_precision(q, d, ql, dl, ties=ties) == pytest.approx(5 / 12)
        assert M.mean_average_precision(q, d, ql, dl, topk=3, ties=ties) == pytest.approx(1 / 3)
        assert M.mean_average_precision(q, d, ql, dl, topk=2, ties=ties) == 0.0


def test_ties_worked_by_hand():
    args = (TIE_Q, TIE_D, TIE_QL, TIE_DL)
    # index order: rel, not, rel, rel -> (1 + 2/3 + 3/4) / 3 = 29/36
    # the other tie order: rel, rel, not, rel -> (1 + 1 + 3/4) / 3 = 33/36
    # the default averages over both tie orders
    assert M.mean_average_precision(*args, ties="index") == pytest.approx(29 / 36)
    assert M.mean_average_precision(*args) == pytest.approx(31 / 36)
    # top 3: (1 + 2/3) / 2 = 5/6 or (1 + 1) / 2 = 1
    assert M.mean_average_precision(*args, topk=3, ties="index") == pytest.approx(5 / 6)
    assert M.mean_average_precision(*args, topk=3) == pytest.approx(11 / 12)
    # precision@2: 1/2 or 1
    assert M.precision_at_k(*args, 2, ties="index") == pytest.approx(0.5)
    assert M.precision_at_k(*args, 2) == pytest.approx(0.75)
    np.testing.assert_allclose(M.precision_curve(*args, 4, ties="index"), [1, 1 / 2, 2 / 3, 3 / 4])
    np.testing.assert_allclose(M.precision_curve(*args, 4), [1, 3 / 4, 2 / 3, 3 / 4])
    # recall 0.5 of R = 3 needs j = 2 relevant items: rank 3 or rank 2
    assert M.precision_at_recall(*args, 0.5, ties="index") == pytest.approx(2 / 3)
    assert M.precision_at_recall(*args, 0.5) == pytest.approx(5 / 6)
    np.testing.assert_allclose(M.precision_at_recall(*args, (0.3, 1.0), ties="index"), [1.0, 3 / 4])


def test_radius_metrics_worked_by_hand():
    args = (TIE_Q, TIE_D, TIE_QL, TIE_DL)
    c = M.pr_curve(*args)
    np.testing.assert_array_equal(c.radius, [0, 1, 2])
    np.testing.assert_allclose(c.precision, [1, 2 / 3, 3 / 4])
    np.testing.assert_allclose(c.recall, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(c.answered, [1, 1, 1])
    assert M.precision_within_radius(*args, r=1) == pytest.approx((2 / 3, 1.0))
    assert M.precision_within_radius(*args, r=99).precision == pytest.approx(3 / 4)
    # F_0.5 = 1.25 P R / (0.25 P + R): 5/7, 2/3, 15/19 at radius 0, 1, 2
    assert M.max_f_radius(*args, beta=0.5) == pytest.approx(15 / 19)
    assert M.max_f_radius(*args, beta=0.25) == pytest.approx(
        max(1.0625 * p * r / (0.0625 * p + r) for p, r in [(1, 1 / 3), (2 / 3, 2 / 3), (3 / 4, 1)])
    )
    assert M.precision_nearest_distances(*args, 1) == 1.0
    assert M.precision_nearest_distances(*args, 2) == pytest.approx(2 / 3)


def test_empty_retrieval_counts_as_zero_or_is_skipped():
    # query 0 has an item at distance 0; query 1's nearest item is at distance 2
    q = np.array([[0, 0, 0], [1, 1, 1]])
    d = np.array([[0, 0, 0], [0, 0, 1]])
    ql, dl = [0, 0], [0, 1]
    assert M.precision_within_radius(q, d, ql, dl, r=0) == (0.5, 0.5)
    assert M.precision_within_radius(q, d, ql, dl, r=0, empty="skip") == (1.0, 0.5)
    c = M.pr_curve(q, d, ql, dl, empty="skip")
    assert c.precision[0] == 1.0 and c.answered[0] == 0.5
    # radius 1: query 0 retrieves items 0 and 1 (precision 1/2), query 1 nothing
    assert c.precision[1] == pytest.approx(0.5)
    assert M.pr_curve(q, d, ql, dl).precision[1] == pytest.approx(0.25)
    # nobody answers: precision undefined when skipped
    far = M.pr_curve(np.array([[1, 1, 1]]), np.array([[0, 0, 0]]), [0], [0], empty="skip")
    assert np.isnan(far.precision[:3]).all() and far.precision[3] == 1.0


def test_query_without_relevant_items_counts_as_zero():
    q = np.array([[0, 0], [0, 0]])
    d = np.array([[0, 0], [1, 1]])
    ql, dl = [0, 5], [0, 1]  # class 5 is absent from the database
    for ties in M.TIES:
        np.testing.assert_array_equal(M.average_precision(q, d, ql, dl, ties=ties), [1.0, 0.0])
        assert M.mean_average_precision(q, d, ql, dl, ties=ties) == 0.5
        assert M.precision_at_recall(q, d, ql, dl, 1.0, ties=ties) == 0.5
    assert M.pr_curve(q, d, ql, dl).recall[-1] == 0.5


# ---------------------------------------------------------------------------
# cross-checks against the slow references on random codes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed, bits", [(0, 6), (1, 16), (2, 64), (3, 70), (4, 128)])
def test_ranking_metrics_match_reference(seed, bits):
    rng = np.random.default_rng(seed)
    q, d, ql, dl = clustered(rng, 12, 150, bits, classes=4, flip=0.3)
    ql[0] = 9  # a query with no relevant item
    rels = relevance_lists(q, d, ql, dl)
    for k in (1, 7, 60, 150, 400, None):
        kk = 150 if k is None else k
        expected = [ref_ap(r, kk) for r in rels]
        np.testing.assert_allclose(M.average_precision(q, d, ql, dl, k, "index"), expected, atol=1e-12)
        assert M.mean_average_precision(q, d, ql, dl, k, "index") == pytest.approx(np.mean(expected), abs=1e-12)
    ks = [1, 5, 33, 150, 200]
    expected = [np.mean([sum(r[:k]) / min(k, 150) for r in rels]) for k in ks]
    np.testing.assert_allclose(M.precision_at_k(q, d, ql, dl, ks, "index"), expected, atol=1e-12)
    np.testing.assert_allclose(M.returned_image_precision(q, d, ql, dl, ks, "index"), expected, atol=1e-12)
    curve = M.precision_curve(q, d, ql, dl, 160, "index")
    np.testing.assert_allclose(
        curve, [np.mean([sum(r[:k]) / min(k, 150) for r in rels]) for k in range(1, 161)], atol=1e-12
    )
    levels = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
    expected = [np.mean([ref_precision_at_recall(r, lv) for r in rels]) for lv in levels]
    np.testing.assert_allclose(M.precision_at_recall(q, d, ql, dl, levels, "index"), expected, atol=1e-12)


@pytest.mark.parametrize("seed, bits", [(5, 5), (6, 12), (7, 64), (8, 100)])
def test_radius_metrics_match_reference(seed, bits):
    rng = np.random.default_rng(seed)
    q, d, ql, dl = clustered(rng, 10, 90, bits, classes=3, flip=0.15)
    curve = M.pr_curve(q, d, ql, dl)
    skipped = M.pr_curve(q, d, ql, dl, empty="skip")
    dist = ref_distances(q, d)
    for r in range(bits + 1):
        rows = ref_radius(dist, ql, dl, r)
        prec = [h / n if n else 0.0 for n, h, _ in rows]
        answered = [n > 0 for n, _, _ in rows]
        rec = [h / t if t else 0.0 for _, h, t in rows]
        assert curve.precision[r] == pytest.approx(np.mean(prec), abs=1e-12)
        assert curve.recall[r] == pytest.approx(np.mean(rec), abs=1e-12)
        assert curve.answered[r] == pytest.approx(np.mean(answered))
        if any(answered):
            assert skipped.precision[r] == pytest.approx(np.mean([p for p, a in zip(prec, answered) if a]))
        else:
            assert np.isnan(skipped.precision[r])
        if r % 7 == 0:
            assert M.precision_within_radius(q, d, ql, dl, r) == pytest.approx(
                (np.mean(prec), np.mean(answered))
            )
    for beta in (0.25, 0.5, 1.0, 2.0):
        f = [
            (1 + beta**2) * p * r / (beta**2 * p + r) if p + r > 0 else 0.0
            for p, r in zip(curve.precision, curve.recall)
        ]
        assert M.max_f_radius(q, d, ql, dl, beta) == pytest.approx(max(f), abs=1e-12)
    for n_levels in (1, 2, 3):
        prec = []
        for i in range(len(q)):
            near = sorted(set(dist[i]))[:n_levels]
            inside = [j for j in range(len(d)) if dist[i][j] in near]
            prec.append(sum(dl[j] == ql[i] for j in inside) / len(inside))
        assert M.precision_nearest_distances(q, d, ql, dl, n_levels) == pytest.approx(np.mean(prec))


def test_recall_level_rank_is_not_pushed_up_by_rounding():
    # R = 100 and level 0.55: 0.55 * 100 is 55.00000000000001 in floating point,
    # but recall 0.55 is reached at the 55th relevant item, not the 56th
    q = np.zeros((1, 8), dtype=np.uint8)
    d = (np.arange(200)[:, None] >> np.arange(8) & 1).astype(np.uint8)  # distinct codes
    dl = np.arange(200) % 2
    rel = relevance_lists(q, d, [1], dl)[0]
    expected = ref_precision_at_recall(rel, 0.55)
    assert M.precision_at_recall(q, d, [1], dl, 0.55, "index") == pytest.approx(expected)
    ranks = np.flatnonzero(rel) + 1
    assert expected == pytest.approx(55 / ranks[54])


def test_query_chunks_do_not_change_results(monkeypatch):
    rng = np.random.default_rng(12)
    q, d, ql, dl = clustered(rng, 25, 200, 16, classes=4, flip=0.3)
    keys = ["map@20", "map_all", "precision@1", "precision@150", "precision@recall0.5", "hd1p"]
    whole = {ties: M.evaluate(q, d, ql, dl, keys, ties) for ties in M.TIES}
    curve = M.precision_curve(q, d, ql, dl, 50)
    aps = M.average_precision(q, d, ql, dl, 20)
    monkeypatch.setattr(M, "_CHUNK_VALUES", 3)  # one query per chunk for two cut-offs
    for ties in M.TIES:
        chunked = M.evaluate(q, d, ql, dl, keys, ties)
        assert chunked == pytest.approx(whole[ties], abs=1e-14)
    np.testing.assert_allclose(M.precision_curve(q, d, ql, dl, 50), curve, atol=1e-14)
    np.testing.assert_array_equal(M.average_precision(q, d, ql, dl, 20), aps)


def test_map_equals_stable_argsort_loop_bit_for_bit():
    rng = np.random.default_rng(42)
    q, d, ql, dl = clustered(rng, 40, 700, 32, classes=5, flip=0.3)
    signed_q, signed_d = 2.0 * q - 1, 2.0 * d - 1
    for k in (100, None):
        aps = []
        for i in range(len(q)):
            dist = 0.5 * (32 - signed_d @ signed_q[i])
            order = np.argsort(dist, kind="stable")[:k]
            ranks = np.flatnonzero(dl[order] == ql[i]) + 1
            aps.append(np.cumsum(np.arange(1, len(ranks) + 1) / ranks)[-1] / len(ranks) if len(ranks) else 0.0)
        assert M.mean_average_precision(q, d, ql, dl, k, ties="index") == np.mean(aps)


# ---------------------------------------------------------------------------
# tie-aware expectations against averaging over every tie order
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_average_ties_equal_mean_over_all_tie_orders(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    q = rng.integers(0, 2, (3, 3))
    d = rng.integers(0, 2, (n, 3))
    ql, dl = rng.integers(0, 2, 3), rng.integers(0, 2, n)
    dist = ref_distances(q, d)
    ks, levels = range(1, n + 2), (0.2, 0.5, 0.7, 1.0)
    keys = (
        [f"map@{k}" for k in ks] + ["map_all"] + [f"precision@{k}" for k in ks]
        + [f"precision@recall{level!r}" for level in levels]
    )
    for i in range(3):
        orders = [[int(dl[j] == ql[i]) for j in order] for order in tie_orderings(dist[i])]
        got = M.evaluate(q[i : i + 1], d, ql[i : i + 1], dl, keys, ties="average")
        for k in ks:
            expected = np.mean([ref_ap(rel, k) for rel in orders])
            assert got[f"map@{k}"] == pytest.approx(expected, abs=1e-12)
            expected = np.mean([sum(rel[:k]) / min(k, n) for rel in orders])
            assert got[f"precision@{k}"] == pytest.approx(expected, abs=1e-12)
        assert got["map_all"] == pytest.approx(np.mean([ref_ap(rel, n) for rel in orders]), abs=1e-12)
        for level in levels:
            expected = np.mean([ref_precision_at_recall(rel, level) for rel in orders])
            assert got[f"precision@recall{level!r}"] == pytest.approx(expected, abs=1e-12)


def test_average_ties_ignore_database_order():
    rng = np.random.default_rng(3)
    q, d, ql, dl = clustered(rng, 15, 300, 8, classes=4, flip=0.2)
    perm = rng.permutation(300)
    for k in (10, 100, None):
        a = M.average_precision(q, d, ql, dl, k, "average")
        b = M.average_precision(q, d[perm], ql, dl[perm], k, "average")
        np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(
        M.precision_at_k(q, d, ql, dl, [1, 50], "average"),
        M.precision_at_k(q, d[perm], ql, dl[perm], [1, 50], "average"),
    )


def test_average_ties_equal_index_order_without_ties():
    # 8-bit codes of distinct integers: every distance from query 0 is distinct
    d = ((np.arange(256)[:, None] >> np.arange(8)) & 1)[[0, 1, 3, 7, 15, 31, 63, 127, 255]]
    q, ql, dl = d[:1], [1], np.array([1, 0, 1, 1, 0, 0, 1, 0, 1])
    for k in (1, 4, None):
        assert M.mean_average_precision(q, d, ql, dl, k, "average") == pytest.approx(
            M.mean_average_precision(q, d, ql, dl, k, "index")
        )


# ---------------------------------------------------------------------------
# evaluate, input forms, errors, speed
# ---------------------------------------------------------------------------


def test_evaluate_matches_individual_functions():
    rng = np.random.default_rng(9)
    q, d, ql, dl = clustered(rng, 30, 400, 24, classes=5, flip=0.25)
    keys = M.DEFAULT_METRICS + ("map@10", "precision@5", "hd0p", "hd3p", "hd3p_answered", "nc3p", "max_f@1.0")
    out = M.evaluate(q, d, ql, dl, keys)
    assert list(out) == list(keys)
    assert all(isinstance(v, float) for v in out.values())
    args = (q, d, ql, dl)
    assert out["map@1000"] == M.mean_average_precision(*args, 1000)
    assert out["map_all"] == M.mean_average_precision(*args)
    assert out["map@10"] == M.mean_average_precision(*args, 10)
    assert out["precision@1000"] == M.precision_at_k(*args, 1000)
    assert out["precision@5"] == M.precision_at_k(*args, 5)
    for level in M.DEFAULT_RECALL_LEVELS:
        assert out[f"precision@recall{level!r}"] == M.precision_at_recall(*args, level)
    assert (out["hd2p"], out["hd2p_answered"]) == M.precision_within_radius(*args, 2)
    assert out["hd3p"] == M.precision_within_radius(*args, 3).precision
    assert out["hd3p_answered"] == M.precision_within_radius(*args, 3).answered
    assert out["max_f@0.5"] == M.max_f_measure(*args, 0.5)
    assert out["max_f@1.0"] == M.max_f_measure(*args, 1.0)
    assert out["max_f_radius@0.5"] == M.max_f_radius(*args, 0.5)
    assert out["nc3p"] == M.precision_nearest_distances(*args, 3)
    avg = M.evaluate(q, d, ql, dl, ["map_all", "precision@5"], ties="average")
    assert avg["map_all"] == pytest.approx(M.mean_average_precision(*args, ties="average"))
    assert M.evaluate(*args, "map_all") == {"map_all": out["map_all"]}


def test_code_forms_give_identical_metrics():
    rng = np.random.default_rng(4)
    q, d, ql, dl = clustered(rng, 10, 120, 20, classes=3, flip=0.3)
    reference = M.evaluate(q, d, ql, dl)
    for qq, dd in [(2.0 * q - 1, 2 * d.astype(np.int8) - 1), (H.pack(q), H.pack(d)), (q.astype(bool), d)]:
        assert M.evaluate(qq, dd, ql, dl) == reference


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda a: M.mean_average_precision(*a, topk=0), ValueError, "topk must be positive"),
        (lambda a: M.mean_average_precision(*a, topk=2.5), ValueError, "topk must be positive"),
        (lambda a: M.mean_average_precision(*a, ties="random"), ValueError, "allowed values: 'index', 'average'"),
        (lambda a: M.max_f_radius(*a, beta=-1), ValueError, "beta must be a positive"),
        (lambda a: M.evaluate(*a, ["max_f_radius@y"]), ValueError, "not a number"),
        (lambda a: M.pr_curve(*a, empty="nan"), ValueError, "allowed values: 'zero', 'skip'"),
        (lambda a: M.precision_at_k(*a, [5, 0]), ValueError, "ks must be positive"),
        (lambda a: M.precision_at_k(*a, []), ValueError, "ks is empty"),
        (lambda a: M.precision_curve(*a, 0), ValueError, "max_k must be positive"),
        (lambda a: M.precision_at_recall(*a, [0.0]), ValueError, r"\(0, 1\]"),
        (lambda a: M.precision_at_recall(*a, 1.5), ValueError, r"\(0, 1\]"),
        (lambda a: M.max_f_measure(*a, beta=0), ValueError, "beta must be a positive"),
        (lambda a: M.precision_within_radius(*a, r=-1), ValueError, "non-negative"),
        (lambda a: M.precision_nearest_distances(*a, 0), ValueError, "n_levels"),
        (lambda a: M.evaluate(*a, ["map@1000", "mAP"]), ValueError, "unknown metric key 'mAP'; allowed forms"),
        (lambda a: M.evaluate(*a, ["precision@recall1"]), ValueError, "write the number as 1.0"),
        (lambda a: M.evaluate(*a, ["precision@recall.5"]), ValueError, "write the number as 0.5"),
        (lambda a: M.evaluate(*a, ["precision@recall1.5"]), ValueError, r"\(0, 1\]"),
        (lambda a: M.evaluate(*a, ["map@01000"]), ValueError, "canonical form; write it with 1000"),
        (lambda a: M.evaluate(*a, ["map@0"]), ValueError, ">= 1"),
        (lambda a: M.evaluate(*a, ["max_f@x"]), ValueError, "not a number"),
        (lambda a: M.evaluate(*a, []), ValueError, "no metrics"),
        (lambda a: M.mean_average_precision(a[0][:, :3], *a[1:]), ValueError, "3 bits but database codes have 4"),
        (lambda a: M.mean_average_precision(a[0][:0], a[1], a[2][:0], a[3]), ValueError, "no queries"),
        (lambda a: M.mean_average_precision(a[0], a[1], a[2][:1], a[3]), ValueError, "q_labels has 1 entries"),
        (lambda a: M.mean_average_precision(a[0], 3 * a[1], *a[2:]), ValueError, "found values 3"),
    ],
)
def test_bad_input_gives_clear_errors(call, error, match):
    args = (np.zeros((2, 4)), np.ones((3, 4)), np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(error, match=match):
        call(args)


def test_map_all_is_fast_at_cifar_scale():
    rng = np.random.default_rng(0)
    q, d, ql, dl = clustered(rng, 1000, 59000, 64, classes=10, flip=0.3)
    q, d = H.pack(q), H.pack(d)
    M.mean_average_precision(q[:2], d[:50], ql[:2], dl[:50])  # compile outside the timing
    start = time.perf_counter()
    value = M.mean_average_precision(q, d, ql, dl)
    elapsed = time.perf_counter() - start
    assert 0.1 < value < 1.0
    assert elapsed < 15.0, f"mAP@all on 1,000 x 59,000 codes took {elapsed:.2f} s"


# ---------------------------------------------------------------------------
# order-free evaluation: no reported metric depends on the database's order
# ---------------------------------------------------------------------------

RANKING_KEYS = (
    "precision@1", "precision@10", "precision@100", "precision@1000", "precision@6000",
    *(f"precision@recall{level!r}" for level in M.DEFAULT_RECALL_LEVELS),
)


def test_constant_codes_give_the_class_prior_everywhere():
    # a database stored class by class (like an ImageFolder), every code equal:
    # no ranking carries information, so every precision must be the prior 0.1
    dl = np.repeat(np.arange(10), 600)
    d = np.zeros((len(dl), 16), dtype=np.uint8)
    ql = np.repeat([3, 7], 50)  # classes stored in the middle of the database
    q = np.zeros((len(ql), 16), dtype=np.uint8)
    out = M.evaluate(q, d, ql, dl, RANKING_KEYS + ("hd0p", "hd2p"))
    for key, value in out.items():
        assert value == pytest.approx(0.1, abs=0.005), key
    np.testing.assert_allclose(M.precision_curve(q, d, ql, dl, 2000), 0.1, atol=0.005)
    np.testing.assert_allclose(M.pr_curve(q, d, ql, dl).precision, 0.1, atol=1e-12)
    # breaking ties by storage order would instead put other classes first
    assert M.precision_at_k(q, d, ql, dl, 100, ties="index") == 0.0


@pytest.mark.parametrize("bits", [4, 16])
def test_database_order_changes_no_reported_metric(bits):
    rng = np.random.default_rng(bits)
    q, d, ql, dl = clustered(rng, 300, 5000, bits, classes=10, flip=0.3)
    keys = M.DEFAULT_METRICS + ("map@100", "precision@100", "hd0p", "hd3p", "nc3p", "max_f@0.25")
    by_class = np.argsort(dl, kind="stable")
    orders = {"by class": by_class, "reversed": by_class[::-1], "shuffled": rng.permutation(len(dl))}
    results = {name: M.evaluate(q, d[o], ql, dl[o], keys) for name, o in orders.items()}
    for name, out in results.items():
        for key in keys:
            assert out[key] == pytest.approx(results["by class"][key], abs=1e-9), (name, key)
    if bits == 4:  # with index ties the same codes do depend on the order
        index = {name: M.evaluate(q, d[o], ql, dl[o], ["map@1000"], "index")["map@1000"]
                 for name, o in orders.items()}
        assert max(index.values()) - min(index.values()) > 0.002


# ---------------------------------------------------------------------------
# the DSTH journal paper's max F-measure, from its own printed points
# ---------------------------------------------------------------------------


def test_max_f_from_points_worked_by_hand():
    # F_0.5 at (P, R) = (1, 0.1), (0.5, 1): 1.25 * 0.1 / 0.35 and 1.25 * 0.5 / 1.125
    assert M.max_f_from_points([1.0, 0.5], [0.1, 1.0], 0.5) == pytest.approx(0.625 / 1.125)
    assert M.max_f_from_points([0.0, 0.0], [0.0, 0.0], 1.0) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        M.max_f_from_points([1.0], [0.1, 0.2], 0.5)


def test_max_f_uses_the_six_precision_at_recall_points():
    rng = np.random.default_rng(11)
    q, d, ql, dl = clustered(rng, 40, 600, 32, classes=5, flip=0.3)
    prec = M.precision_at_recall(q, d, ql, dl, M.DEFAULT_RECALL_LEVELS)
    for beta in (0.25, 0.5):
        b2 = beta * beta
        expected = max((1 + b2) * p * r / (b2 * p + r) for p, r in zip(prec, M.DEFAULT_RECALL_LEVELS))
        assert M.max_f_measure(q, d, ql, dl, beta) == pytest.approx(expected, abs=1e-12)
        assert M.evaluate(q, d, ql, dl, [f"max_f@{beta!r}"])[f"max_f@{beta!r}"] == pytest.approx(expected)
    # the radius version is a different number on the same codes
    assert M.max_f_radius(q, d, ql, dl, 0.25) != pytest.approx(M.max_f_measure(q, d, ql, dl, 0.25))


def test_journal_tables_max_f_recomputed_from_their_points():
    """Tables III and IV of the DSTH journal paper, as transcribed in paper_numbers.csv.

    Every row's printed max F-measure must follow from its six printed
    precision-at-recall points to the fourth decimal, except the rows whose
    note in paper_numbers.csv says the printed value is inconsistent.
    """
    from hashstudy import reporting

    frame = reporting.paper_numbers("05_dsth_tcyb2018")
    parts = frame["key"].str.rsplit("/", n=1)
    frame = frame.assign(prefix=parts.str[0], metric=parts.str[1])
    levels = [f"precision@recall{level!r}" for level in M.DEFAULT_RECALL_LEVELS]
    checked, mismatched, flagged = 0, set(), set()
    for (prefix, source), rows in frame.groupby(["prefix", "source"]):
        values = dict(zip(rows["metric"], rows["value"]))
        notes = dict(zip(rows["metric"], rows["note"].fillna("")))
        if not all(k in values for k in levels):
            continue
        for beta in ("0.5", "0.25"):
            key = f"max_f@{beta}"
            if key not in values:
                continue
            checked += 1
            got = M.max_f_from_points([values[k] for k in levels], M.DEFAULT_RECALL_LEVELS, float(beta))
            if abs(got - values[key]) > 1.5e-5:  # printed to five decimals
                mismatched.add(f"{prefix}/{key}")
            if "inconsistent with its printed points" in notes[key]:
                flagged.add(f"{prefix}/{key}")
    assert checked >= 26
    assert mismatched == flagged == {"cifar10/efficientnet_lite0/mlp_batchnorm/48/max_f@0.5"}
    # the transcribed typo: recall 0.8 and 1.0 printed equal, and marked as such
    typo = frame[frame["key"] == "cifar10/efficientnet_lite0/slice_batchnorm/48/precision@recall1.0"]
    assert len(typo) == 1 and "typo" in typo["note"].iloc[0]
