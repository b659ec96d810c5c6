"""Tests of hashstudy.references and metrics.evaluate_levels against slow references."""
import itertools
import tracemalloc

import numpy as np
import pytest

from hashstudy import cache, config, protocols
from hashstudy import metrics as M
from hashstudy import references as R
from test_metrics import ref_ap, ref_precision_at_recall  # the metrics tests' slow references

RANKING_KEYS = ("map@10", "map@100", "map_all", "precision@10", "precision@1000",
                "precision@recall0.5", "max_f@0.5")

# ---------------------------------------------------------------------------
# slow, independent references
# ---------------------------------------------------------------------------


def ref_cosine_metrics(q, d, ql, dl, ks, levels):
    """Per-query loop: sort by cosine similarity, no ties expected."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    out = {f"map@{k}": [] for k in ks} | {"map_all": []}
    out |= {f"precision@{k}": [] for k in ks} | {f"precision@recall{v!r}": [] for v in levels}
    for i in range(len(q)):
        scores = dn @ qn[i]
        assert len(set(scores.tolist())) == len(scores), "the reference assumes no ties"
        rel = [int(dl[j] == ql[i]) for j in np.argsort(-scores)]
        for k in ks:
            out[f"map@{k}"].append(ref_ap(rel, k))
            out[f"precision@{k}"].append(sum(rel[:k]) / min(k, len(rel)))
        out["map_all"].append(ref_ap(rel, len(rel)))
        for v in levels:
            out[f"precision@recall{v!r}"].append(ref_precision_at_recall(rel, v))
    return {k: float(np.mean(v)) for k, v in out.items()}


def distance_histograms(q_bits, d_bits, ql, dl):
    """Hamming histograms by brute force on {0, 1} matrices (no hashstudy.hamming)."""
    bits = q_bits.shape[1]
    dist = (q_bits[:, None, :] != d_bits[None, :, :]).sum(axis=2)
    counts = np.zeros((len(q_bits), bits + 1), dtype=np.int64)
    relevant = np.zeros_like(counts)
    for i in range(len(q_bits)):
        counts[i] = np.bincount(dist[i], minlength=bits + 1)
        relevant[i] = np.bincount(dist[i][dl == ql[i]], minlength=bits + 1)
    return counts, relevant


def blobs(rng, n, n_classes, dim=6, spread=6.0):
    """Well separated Gaussian classes."""
    y = rng.integers(0, n_classes, n)
    centres = spread * np.eye(n_classes, dim)
    return centres[y] + rng.normal(size=(n, dim)), y


# ---------------------------------------------------------------------------
# metrics.evaluate_levels
# ---------------------------------------------------------------------------


def test_evaluate_levels_on_distance_histograms_is_evaluate():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 2, (37, 12), dtype=np.uint8)
    d = rng.integers(0, 2, (400, 12), dtype=np.uint8)
    d[:40] = d[40:80]  # duplicates: more ties
    ql, dl = rng.integers(0, 5, 37), rng.integers(0, 5, 400)
    keys = RANKING_KEYS + ("hd2p", "hd2p_answered", "nc3p", "max_f_radius@0.5", "hd0p")
    counts, relevant = distance_histograms(q, d, ql, dl)
    got = M.evaluate_levels(counts, relevant, relevant.sum(axis=1), keys)
    want = M.evaluate(q, d, ql, dl, keys)
    assert list(got) == list(keys)
    assert got == want  # same kernel, same chunks, same sums: bit for bit


def test_evaluate_levels_ignores_empty_levels_for_ranking_keys():
    rng = np.random.default_rng(1)
    q, d = rng.integers(0, 2, (10, 8)), rng.integers(0, 2, (120, 8))
    ql, dl = rng.integers(0, 3, 10), rng.integers(0, 3, 120)
    counts, relevant = distance_histograms(q, d, ql, dl)
    spread = np.zeros((10, 2 * counts.shape[1]), dtype=np.int64)
    spread_rel = np.zeros_like(spread)
    spread[:, ::2], spread_rel[:, ::2] = counts, relevant
    a = M.evaluate_levels(counts, relevant, relevant.sum(axis=1), RANKING_KEYS)
    b = M.evaluate_levels(spread, spread_rel, relevant.sum(axis=1), RANKING_KEYS)
    assert a == pytest.approx(b, abs=1e-14)


@pytest.mark.parametrize("change, message", [
    (lambda c, r, n: (c[:, :-1], r, n), "relevant has shape"),
    (lambda c, r, n: (c, r + c, n + c.sum(axis=1)), "exceeds counts"),
    (lambda c, r, n: (c, r, n + 1), "must equal relevant.sum"),
    (lambda c, r, n: (np.vstack([c[:1], c[1:] * 2]), np.vstack([r[:1], r[1:] * 2]),
                      np.concatenate([n[:1], n[1:] * 2])), "whole database"),
    (lambda c, r, n: (c.astype(float), r, n), "integer counts"),
    (lambda c, r, n: (c, -r, -n), "negative"),
    (lambda c, r, n: (c[:0], r[:0], n[:0]), "no queries"),
    (lambda c, r, n: (c[0], r[0], n[:1]), "2-D"),
])
def test_evaluate_levels_refuses_inconsistent_histograms(change, message):
    counts = np.array([[1, 2, 3], [0, 4, 2]])
    relevant = np.array([[1, 0, 1], [0, 2, 2]])
    args = change(counts, relevant, relevant.sum(axis=1))
    with pytest.raises(ValueError, match=message):
        M.evaluate_levels(*args)


def test_evaluate_levels_refuses_unknown_keys():
    with pytest.raises(ValueError, match="allowed forms"):
        M.evaluate_levels([[1, 1]], [[1, 0]], [1], ["mAP"])


# ---------------------------------------------------------------------------
# cosine ranking
# ---------------------------------------------------------------------------


def test_cosine_ranking_matches_a_per_query_loop_without_ties():
    rng = np.random.default_rng(2)
    q, d = rng.normal(size=(15, 8)), rng.normal(size=(230, 8))
    ql, dl = rng.integers(0, 4, 15), rng.integers(0, 4, 230)
    want = ref_cosine_metrics(q, d, ql, dl, ks=(10, 100, 1000), levels=(0.1, 0.5, 1.0))
    got = R.cosine_ranking(q, d, ql, dl, list(want))
    assert got == pytest.approx(want, abs=1e-12)
    # the query's scale does not matter, the database's direction does
    again = R.cosine_ranking(3.5 * q, d * rng.uniform(0.1, 9.0, (230, 1)), ql, dl, list(want))
    assert again == pytest.approx(want, abs=1e-12)


def test_cosine_ranking_averages_ties_like_the_hamming_evaluation():
    # +-1 codes: cosine = 1 - 2 * distance / bits, exactly, so the rankings and ties agree
    rng = np.random.default_rng(3)
    q = rng.integers(0, 2, (40, 8), dtype=np.int8)
    d = rng.integers(0, 2, (300, 8), dtype=np.int8)
    ql, dl = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    got = R.cosine_ranking(2 * q - 1, 2 * d - 1, ql, dl, RANKING_KEYS)
    want = M.evaluate(q, d, ql, dl, RANKING_KEYS)
    assert got == pytest.approx(want, abs=1e-12)
    assert got != M.evaluate(q, d, ql, dl, RANKING_KEYS, ties="index")


def test_cosine_ranking_of_one_hot_class_features_is_perfect():
    rng = np.random.default_rng(4)
    ql, dl = rng.integers(0, 5, 50), rng.integers(0, 5, 2000)
    onehot = np.eye(5, dtype=np.float32)
    got = R.cosine_ranking(onehot[ql], onehot[dl], ql, dl,
                           ("map@1000", "map_all", "precision@100", "precision@recall1.0"))
    assert got == pytest.approx({"map@1000": 1.0, "map_all": 1.0, "precision@100": 1.0,
                                 "precision@recall1.0": 1.0}, abs=1e-12)
    # features that ignore the class: every item tied, the constant-code values
    flat = np.ones((2000, 3), dtype=np.float32)
    tied = R.cosine_ranking(flat[:50], flat, ql, dl, ("map_all", "precision@100"))
    check = R.constant_code_check(ql, dl)
    assert tied["map_all"] == pytest.approx(check["expected_map_all"], abs=1e-12)
    assert tied["precision@100"] == pytest.approx(check["prior"], abs=1e-12)


def test_cosine_ranking_works_in_bounded_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    q = rng.normal(size=(100, 4)).astype(np.float32)
    d = rng.normal(size=(5000, 4)).astype(np.float32)
    ql, dl = rng.integers(0, 10, 100), rng.integers(0, 10, 5000)
    whole = R.cosine_ranking(q, d, ql, dl)
    monkeypatch.setattr(R, "_CHUNK_VALUES", 20_000)  # 4 queries at a time
    tracemalloc.start()
    try:
        chunked = R.cosine_ranking(q, d, ql, dl)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert chunked == pytest.approx(whole, abs=1e-12)
    assert peak < 100 * 5000 * 8 / 2  # well under one float64 score matrix of all queries


@pytest.mark.parametrize("q, d, keys, message", [
    (np.zeros((2, 3)), np.ones((5, 3)), R.REFERENCE_METRICS, "all zeros"),
    (np.ones((2, 3)), np.ones((5, 4)), R.REFERENCE_METRICS, "4 features, expected 3"),
    (np.full((2, 3), np.nan), np.ones((5, 3)), R.REFERENCE_METRICS, "NaN"),
    (np.ones(3), np.ones((5, 3)), R.REFERENCE_METRICS, "2-D"),
    (np.ones((2, 3)), np.ones((5, 3)), ("map_all", "hd2p"), "radius"),
])
def test_cosine_ranking_refuses_bad_inputs(q, d, keys, message):
    with pytest.raises(ValueError, match=message):
        R.cosine_ranking(q, d, np.zeros(len(q), dtype=int), np.zeros(len(d), dtype=int), keys)


# ---------------------------------------------------------------------------
# classifier code
# ---------------------------------------------------------------------------


def test_classifier_code_on_separable_classes_is_near_perfect():
    rng = np.random.default_rng(6)
    X, y = blobs(rng, 1300, 4)
    code = R.ClassifierCode().fit(X[:300], y[:300])
    assert code.bits_ == 2 and code.classes_.tolist() == [0, 1, 2, 3]
    got = code.evaluate(X[300:400], X[400:], y[300:400], y[400:])
    assert set(got) == {"map@1000", "map_all", "precision@1000", "accuracy",
                        "same_class_precision", "same_class_answered"}
    assert got["accuracy"] > 0.98
    assert got["map_all"] > 0.97 and got["same_class_precision"] > 0.97
    assert got["same_class_answered"] == 1.0
    # the code is worth its bits: ceil(log2 C)
    assert [R.ClassifierCode().fit(X[:40], np.arange(40) % c).bits_ for c in (2, 3, 8, 9, 10)] \
        == [1, 2, 3, 4, 4]


def test_classifier_code_on_shuffled_labels_gets_the_prior():
    rng = np.random.default_rng(7)
    X, y = blobs(rng, 1400, 4)
    y = rng.permutation(y)  # the features no longer say anything about the labels
    code = R.ClassifierCode().fit(X[:400], y[:400])
    got = code.evaluate(X[400:600], X[600:], y[400:600], y[600:])
    check = R.constant_code_check(y[400:600], y[600:])
    assert abs(got["map_all"] - check["expected_map_all"]) < 0.03
    assert abs(got["precision@1000"] - check["prior"]) < 0.03
    assert abs(got["accuracy"] - 0.25) < 0.1


def test_classifier_code_ranks_by_the_query_probability_of_the_stored_class():
    rng = np.random.default_rng(8)
    X, y = blobs(rng, 500, 3, spread=1.5)  # overlapping classes: the order of classes matters
    code = R.ClassifierCode().fit(X[:200], y[:200])
    qX, ql, dX, dl = X[200:240], y[200:240].copy(), X[240:], y[240:]
    ql[:3], ql[3:6] = 7, -1  # labels absent from the database: nothing is relevant
    proba, stored = code.predict_proba(qX), code.encode(dX)
    assert np.array_equal(code.predict(dX), code.classes_[stored])
    counts, relevant = [], []
    for i in range(len(qX)):  # straightforward levels: distinct scores in descending order
        score = proba[i, stored]
        values = sorted(set(score.tolist()), reverse=True)
        counts.append([int((score == v).sum()) for v in values])
        relevant.append([int(((score == v) & (dl == ql[i])).sum()) for v in values])
    width = max(map(len, counts))
    counts = np.array([c + [0] * (width - len(c)) for c in counts])
    relevant = np.array([r + [0] * (width - len(r)) for r in relevant])
    want = M.evaluate_levels(counts, relevant, relevant.sum(axis=1), RANKING_KEYS)
    got = code.evaluate(qX, dX, ql, dl, RANKING_KEYS)
    assert {k: got[k] for k in RANKING_KEYS} == pytest.approx(want, abs=1e-12)
    assert got["accuracy"] == np.mean(code.predict(qX) == ql)
    # hd0p over the levels is the precision of the query's predicted class
    assert code.evaluate(qX, dX, ql, dl, ["hd0p"])["hd0p"] == pytest.approx(
        got["same_class_precision"], abs=1e-12)


def test_classifier_code_handles_empty_predicted_classes():
    rng = np.random.default_rng(9)
    X, y = blobs(rng, 900, 3)
    code = R.ClassifierCode().fit(X[:300], y[:300])
    qX, ql = X[300:400], y[300:400]
    keep = y[400:] != 2  # no database item looks like class 2 ...
    dX, dl = X[400:][keep], y[400:][keep].copy()
    dl[:30] = 2  # ... though some carry its label
    got = code.evaluate(qX, dX, ql, dl)
    pred = code.predict(qX)
    stored = code.predict(dX)
    per_query = [np.mean(dl[stored == p] == c) if (stored == p).any() else 0.0
                 for p, c in zip(pred, ql)]
    assert got["same_class_precision"] == pytest.approx(np.mean(per_query), abs=1e-12)
    assert got["same_class_answered"] == pytest.approx(np.mean(pred != 2))
    assert 0.0 < got["same_class_answered"] < 1.0
    assert 0.0 < got["map_all"] < 1.0


def test_classifier_code_refuses_bad_inputs():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="not fitted"):
        R.ClassifierCode().predict(X)
    with pytest.raises(ValueError, match="at least 2"):
        R.ClassifierCode().fit(X, np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="20 codes"):
        R.ClassifierCode().fit(X, np.arange(19) % 2)
    with pytest.raises(ValueError, match="positive"):
        R.ClassifierCode(C=0)
    code = R.ClassifierCode().fit(X, np.arange(20) % 2)
    with pytest.raises(ValueError, match="expected 3"):
        code.predict(X[:, :2])
    with pytest.raises(ValueError, match="allowed forms"):
        code.evaluate(X, X, np.zeros(20, dtype=int), np.zeros(20, dtype=int), ["map"])


# ---------------------------------------------------------------------------
# class transfer
# ---------------------------------------------------------------------------


def toy_split(n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    train = np.repeat(np.arange(n_classes), 30)
    test = np.repeat(np.arange(n_classes), 10)
    rng.shuffle(train)
    rng.shuffle(test)
    split = protocols.make_split(train, test, "query1k", seed=1, dataset="toy",
                                 query_per_class=3, train_per_class=10)
    return split, np.concatenate([train, test])


def test_transfer_classes_are_a_seeded_partition():
    labels = np.array([3, 5, 7, 9, 11, 3, 5, 13, 15, 17, 19, 21] * 3)
    seen, unseen = R.transfer_classes(labels, n_seen=7, seed=0)
    assert seen.size == 7 and unseen.size == 3
    assert np.array_equal(np.sort(np.concatenate([seen, unseen])), np.unique(labels))
    assert np.all(np.diff(seen) > 0) and np.all(np.diff(unseen) > 0)
    again = R.transfer_classes(labels, n_seen=7, seed=0)
    assert np.array_equal(again[0], seen) and np.array_equal(again[1], unseen)
    draws = {tuple(R.transfer_classes(labels, 7, seed=s)[0]) for s in range(5)}
    assert len(draws) > 1
    for bad in (0, 10, 2.5, True):
        with pytest.raises(ValueError, match="n_seen"):
            R.transfer_classes(labels, n_seen=bad)


def test_transfer_split_keeps_seen_classes_for_training_only():
    split, labels = toy_split()
    t = R.transfer_split(split, labels, n_seen=7, seed=0)
    seen, unseen = R.transfer_classes(labels, 7, 0)
    assert t.name == split.name + "+transfer7" and t.seed == split.seed
    assert np.isin(labels[t.train], seen).all()
    assert np.isin(labels[t.query], unseen).all() and np.isin(labels[t.database], unseen).all()
    assert set(labels[t.train]) == set(seen) and set(labels[t.query]) == set(unseen)
    for part in ("query", "database", "train"):  # nothing else is dropped
        old, new = getattr(split, part), getattr(t, part)
        assert np.isin(new, old).all()
        wanted = unseen if part != "train" else seen
        assert new.size == np.isin(labels[old], wanted).sum()
    assert "seen in training" in t.description and isinstance(t, protocols.Split)
    other = R.transfer_split(split, labels, n_seen=7, seed=3)
    assert other.name == split.name + "+transfer7[seed=3]"


def test_transfer_split_classes_are_saved_and_checked():
    split, labels = toy_split()
    first = R.transfer_split(split, labels, n_seen=6, seed=2)
    files = list(config.cache_dir("splits").glob("toy-*transfer6-seed2.npz"))
    assert len(files) == 1
    saved = cache.load_arrays(files[0])
    assert np.array_equal(np.sort(np.unique(labels[first.train])), saved["seen"])
    # a saved choice is what later calls use, not a fresh draw
    seen, unseen = np.arange(4, 10), np.arange(4)
    cache.save_arrays(files[0], seen=seen, unseen=unseen, classes_digest=saved["classes_digest"])
    loaded = R.transfer_split(split, labels, n_seen=6, seed=2)
    assert np.isin(labels[loaded.query], unseen).all() and np.isin(labels[loaded.train], seen).all()
    # other classes in the labels: refuse and say which file to delete
    relabelled = np.where(labels == 9, 12, labels)
    with pytest.raises(protocols.SplitMismatchError, match="delete that file") as err:
        R.transfer_split(split, relabelled, n_seen=6, seed=2)
    assert str(files[0]) in str(err.value)


def test_transfer_split_refuses_labels_of_another_pool():
    split, labels = toy_split()
    with pytest.raises(ValueError, match="indexes beyond"):
        R.transfer_split(split, labels[:100])


# ---------------------------------------------------------------------------
# constant codes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_expected_random_ap_is_the_mean_over_all_orders(n):
    for r in range(n + 1):
        orders = set(itertools.permutations([1] * r + [0] * (n - r)))
        want = np.mean([ref_ap(list(o), n) for o in orders])
        assert R.expected_random_ap([r], n)[0] == pytest.approx(want, abs=1e-12)


def test_constant_code_check_gives_the_closed_form_not_the_prior():
    rng = np.random.default_rng(11)
    dl = rng.choice(5, size=1500, p=[0.4, 0.3, 0.2, 0.1, 0.0])
    ql = rng.integers(0, 5, 60)  # class 4 has no database item: R = 0
    out = R.constant_code_check(ql, dl, n_bits=16)
    n_rel = np.array([(dl == c).sum() for c in ql])
    h = sum(1.0 / i for i in range(1, 1501))
    closed = np.where(n_rel > 0, n_rel / 1500 + (1500 - n_rel) * (h - 1) / (1500 * 1499), 0.0)
    assert out["prior"] == pytest.approx(np.mean(n_rel / 1500), abs=1e-15)
    assert out["map_all"] == pytest.approx(np.mean(closed), abs=1e-9)
    assert out["expected_map_all"] == pytest.approx(np.mean(closed), abs=1e-12)
    assert out["map_all_minus_prior"] > 1e-3  # not the prior
    assert out["precision@1000"] == pytest.approx(out["prior"], abs=1e-12)
    assert out["hd0p"] == pytest.approx(out["prior"], abs=1e-12)
    assert out["map_all"] < out["map@1000"] < 1  # a cut-off keeps luckier prefixes


def test_constant_code_check_fails_loudly_when_the_evaluation_is_wrong(monkeypatch):
    rng = np.random.default_rng(12)
    ql, dl = rng.integers(0, 3, 20), rng.integers(0, 3, 200)
    real = M.evaluate

    def prior_instead(*args, **kwargs):  # the tempting but wrong answer: mAP = prior
        out = real(*args, **kwargs)
        return out | {"map_all": out["precision@1000"]}

    monkeypatch.setattr(M, "evaluate", prior_instead)
    with pytest.raises(AssertionError, match="map_all .* closed form"):
        R.constant_code_check(ql, dl)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="code length"):
        R.constant_code_check(ql, dl, n_bits=0)
    with pytest.raises(ValueError, match="n_database"):
        R.expected_random_ap([1], 0)
    with pytest.raises(ValueError, match="n_rel must lie in"):
        R.expected_random_ap([4], 3)
