import numpy as np
import pytest

from hashstudy import evaluation, metrics, protocols


def _blobs(n_per=60, classes=4, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (classes, dim))
    tr = np.repeat(np.arange(classes), n_per)
    te = np.repeat(np.arange(classes), n_per // 3)
    labels = np.concatenate([tr, te])
    X = centres[labels] + rng.normal(0, 1, (labels.size, dim))
    return X.astype(np.float32), labels, protocols.make_split(tr, te, "test-train")


def test_compare_matches_direct_evaluation_and_codes():
    X, y, split = _blobs()
    table, codes = evaluation.compare(["itq", "lsh"], [8, 16], X, y, split, seed=1,
                                      metric_keys=["map_all", "hd2p"], progress=False)
    assert set(table.method) == {"itq", "lsh"} and set(table.bits) == {8, 16}
    c = codes[("itq", 16)]
    assert c.query.shape == (split.query.size, 16) and c.database.shape == (split.database.size, 16)
    direct = metrics.mean_average_precision(c.query, c.database, y[split.query], y[split.database])
    got = table.query("method == 'itq' and bits == 16 and metric == 'map_all'").value.item()
    assert got == pytest.approx(direct)
    flat = evaluation.long_to_metrics(table, "toy/feat")
    assert flat["toy/feat/itq/16/map_all"] == pytest.approx(direct)
    assert not any(k.endswith("fit_seconds") for k in flat)
    assert got > 0.8  # separable clusters


def test_extra_hashers_and_supervised_flag():
    X, y, split = _blobs()
    seen = {}

    class Oracle:  # encodes the class label itself: perfect retrieval
        def __init__(self, bits):
            self.bits = bits

        def fit(self, X, y=None):
            seen["y"] = y
            return self

        def encode(self, X):
            lab = np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
            return ((lab[:, None] >> np.arange(self.bits)) & 1).astype(np.uint8)

    centres = np.stack([X[split.train][y[split.train] == c].mean(0) for c in range(4)])

    def factory(b):
        return Oracle(b)

    factory.supervised = True
    table, _ = evaluation.compare(["oracle"], [4], X, y, split, extra={"oracle": factory},
                                  metric_keys=["map_all"], progress=False)
    assert table.query("metric == 'map_all'").value.item() == pytest.approx(1.0)
    assert seen["y"] is not None


def test_unknown_method_lists_choices():
    X, y, split = _blobs(10)
    with pytest.raises(ValueError, match="allowed values.*'itq'"):
        evaluation.compare(["nope"], [8], X, y, split, progress=False)


def test_as_vectors():
    v = evaluation.as_vectors(np.full((2, 3, 3, 1), 255, np.uint8))
    assert v.shape == (2, 9) and v.dtype == np.float32 and v.max() == 1.0


def test_run_result_holds_metrics_codes_and_fitted_hashers():
    X, y, split = _blobs()
    res = evaluation.run(["lsh", "itq"], [8, 16], X, y, split, seed=1,
                         metric_keys=["map_all"], progress=False)
    table, codes = res  # unpacks as compare's (table, codes)
    assert table is res.table and codes is res.codes
    itq = res.fitted[("itq", 16)]
    np.testing.assert_array_equal(itq.encode(X[split.query]), res.codes[("itq", 16)].query)
    wide = res.wide("map_all")
    assert list(wide.index) == ["lsh", "itq"] and list(wide.columns) == [8, 16]
    assert wide.loc["itq", 16] == pytest.approx(res.metrics("toy")["toy/itq/16/map_all"])
    curves = res.by_bits("map_all", rename={"itq": "ITQ"})
    assert list(curves) == ["lsh", "ITQ"]
    np.testing.assert_array_equal(curves["ITQ"][0], [8, 16])
    assert curves["ITQ"][1][1] == pytest.approx(wide.loc["itq", 16])


def test_run_takes_a_mapping_of_factories():
    X, y, split = _blobs()
    from hashstudy import baselines

    res = evaluation.run({"mine": lambda b: baselines.make("itq", b, seed=1)}, [8], X, y, split,
                         metric_keys=["map_all"], progress=False)
    same = evaluation.run(["itq"], [8], X, y, split, seed=1, metric_keys=["map_all"],
                          progress=False)
    assert res.wide("map_all").loc["mine", 8] == pytest.approx(same.wide("map_all").loc["itq", 8])
