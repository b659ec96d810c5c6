import numpy as np
import pytest

from hashstudy import protocols


def _labels(n_per_class_train=600, n_per_class_test=100, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.permutation(np.repeat(np.arange(classes), n_per_class_train))
    test = rng.permutation(np.repeat(np.arange(classes), n_per_class_test))
    return train, test


def test_query1k_sizes_disjointness_and_strata():
    tr, te = _labels()
    s = protocols.make_split(tr, te, "query1k", seed=3, dataset="toy")
    pool = np.concatenate([tr, te])
    assert s.query.size == 1000 and np.bincount(pool[s.query]).tolist() == [100] * 10
    assert s.database.size == pool.size - 1000
    assert np.intersect1d(s.query, s.database).size == 0
    assert np.union1d(s.query, s.database).size == pool.size
    assert s.train.size == 5000 and np.bincount(pool[s.train]).tolist() == [500] * 10
    assert np.isin(s.train, s.database).all()
    assert s.record() == {"dataset": "toy", "protocol": "query1k", "seed": 3, "n_query": 1000,
                          "n_database": 6000, "n_train": 5000, "description": s.description}


def test_test_train_protocol_uses_the_splits():
    tr, te = _labels(20, 5)
    s = protocols.make_split(tr, te, "test-train")
    assert np.array_equal(s.query, np.arange(tr.size, tr.size + te.size))
    assert np.array_equal(s.database, np.arange(tr.size))
    assert np.array_equal(s.train, s.database)


def test_random_test_queries_are_from_the_test_split():
    tr, te = _labels(200, 150)
    s = protocols.make_split(tr, te, "test1k-train", seed=1)
    assert s.query.size == 1000 and s.query.min() >= tr.size
    s10 = protocols.make_split(tr, te, "test10pc-train", seed=1)
    assert np.bincount(np.concatenate([tr, te])[s10.query]).tolist() == [10] * 10


def test_same_seed_same_split_other_seed_other_split():
    tr, te = _labels()
    a = protocols.make_split(tr, te, "query1k", seed=0)
    b = protocols.make_split(tr, te, "query1k", seed=0)
    c = protocols.make_split(tr, te, "query1k", seed=1)
    assert np.array_equal(a.query, b.query) and np.array_equal(a.train, b.train)
    assert not np.array_equal(a.query, c.query)


def test_overrides_scale_and_rename():
    tr, te = _labels()
    s = protocols.make_split(tr, te, "query1k", query_per_class=10, train_per_class=50,
                             n_database=2000)
    assert s.name == "query1k[query_per_class=10,train_per_class=50,n_database=2000]"
    assert s.query.size == 100 and s.train.size == 500 and s.database.size == 2000
    assert np.isin(s.train, s.database).all()
    t = protocols.make_split(tr, te, "test-train", n_database=1000)
    assert t.database.size == 1000 and np.array_equal(t.train, t.database)


def test_bad_protocol_and_sizes():
    tr, te = _labels(20, 5)
    with pytest.raises(ValueError, match="unknown protocol 'nope'.*query1k"):
        protocols.make_split(tr, te, "nope")
    with pytest.raises(ValueError, match="class .* has only"):
        protocols.make_split(tr, te, "query1k")
    with pytest.raises(ValueError, match="positive"):
        protocols.make_split(tr, te, "test-train", n_database=0)


def _fake_data(monkeypatch, train, test):
    from hashstudy import data

    class D:
        def __init__(self, labels, split):
            self.labels, self.split = labels, split
            self.source = "in-memory"
            self.images = np.zeros((labels.size, 2, 2, 1), np.uint8)
            self.classes = [str(i) for i in range(10)]

    monkeypatch.setattr(data, "load", lambda name, split, root=None: D(train if split == "train" else test, split))


def test_get_split_is_saved_and_never_redrawn_silently(monkeypatch):
    tr, te = _labels()
    _fake_data(monkeypatch, tr, te)
    first = protocols.get_split("toy", "query1k", seed=5)
    again = protocols.get_split("toy", "query1k", seed=5)
    assert np.array_equal(first.query, again.query)
    # a saved split is what is returned, even if drawing would now give something else
    monkeypatch.setattr(protocols, "make_split", lambda *a, **k: protocols.Split(
        "toy", "query1k", "query1k", 5, np.arange(3), np.arange(3), np.arange(3)))
    loaded = protocols.get_split("toy", "query1k", seed=5)
    assert np.array_equal(loaded.query, first.query)


def test_get_split_refuses_changed_data(monkeypatch):
    tr, te = _labels()
    _fake_data(monkeypatch, tr, te)
    protocols.get_split("toy", "query1k", seed=0)
    tr2 = tr.copy()
    tr2[:2] = tr2[:2][::-1] if tr2[0] != tr2[1] else (tr2[:2] + 1) % 10
    _fake_data(monkeypatch, tr2, te)
    with pytest.raises(protocols.SplitMismatchError, match="delete that file"):
        protocols.get_split("toy", "query1k", seed=0)
