"""The cross-paper comparison: protocol, method registry, runs, caching, aggregation, ranking."""
import numpy as np
import pandas as pd
import pytest

from hashstudy import crosspaper, protocols


def _blobs(n_per_class=40, n_test_per_class=12, dim=16, seed=0):
    """Ten well-separated Gaussian classes as a pool (train then test), with tiny images."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim)) * 4
    ytr = np.repeat(np.arange(10), n_per_class)
    yte = np.repeat(np.arange(10), n_test_per_class)
    y = np.concatenate([ytr, yte])
    X = (centres[y] + rng.normal(size=(y.size, dim))).astype(np.float32)
    images = rng.integers(0, 255, size=(y.size, 8, 8, 1), dtype=np.uint8)
    inputs = crosspaper.Inputs("toy", images, X, y.astype(np.int64), "toy-vectors")
    split = protocols.make_split(ytr, yte, "cross", 0, dataset="toy", query_per_class=4,
                                 train_per_class=20)
    return inputs, split


def test_cross_protocol_is_registered_and_drawn_as_documented():
    ytr = np.repeat(np.arange(10), 1100)
    yte = np.repeat(np.arange(10), 150)
    split = protocols.make_split(ytr, yte, "cross", 0, dataset="x")
    assert split.query.size == 1000 and split.train.size == 10000
    assert np.all(split.query >= ytr.size), "queries come from the test split"
    np.testing.assert_array_equal(split.database, np.arange(ytr.size))
    assert np.isin(split.train, split.database).all()
    labels = np.concatenate([ytr, yte])
    assert np.bincount(labels[split.query]).tolist() == [100] * 10
    assert np.bincount(labels[split.train]).tolist() == [1000] * 10


def test_quick_split_keeps_training_images_inside_a_smaller_database():
    ytr = np.repeat(np.arange(10), 1100)
    yte = np.repeat(np.arange(10), 150)
    split = protocols.make_split(ytr, yte, "cross", 0, **crosspaper.PROFILE_SIZES["quick"]["split"])
    assert split.database.size == 10000 and split.train.size == 5000
    assert np.isin(split.train, split.database).all()


def test_methods_for_skips_methods_a_dataset_cannot_take_and_rejects_unknown_names():
    on_mnist = [m.name for m in crosspaper.methods_for("mnist")]
    on_cifar = [m.name for m in crosspaper.methods_for("cifar10")]
    assert "dsth18" not in on_mnist and "dsth18" in on_cifar
    assert {"dsth15", "cnnh", "latent", "tanh_ae", "ddh", "itq", "itq_l2"} <= set(on_mnist)
    with pytest.raises(ValueError, match="method"):
        crosspaper.methods_for("mnist", ["itq", "no_such_method"])


def test_inputs_read_by_each_method():
    inputs, _ = _blobs()
    pixels = crosspaper.Inputs("m", inputs.images, inputs.vectors, inputs.labels, "pixels")
    latent = crosspaper.METHODS["latent"]
    assert latent.input_for(pixels) == "pixels"  # MNIST: the small CNN on the images
    assert latent.input_for(inputs) == "vectors"  # features: the head on the features
    assert crosspaper.METHODS["dsth18"].input_name(inputs) == "pixels + toy-vectors"
    assert crosspaper.METHODS["cnnh"].input_name(inputs) == "pixels"


def test_run_evaluates_every_pair_and_caches_codes(monkeypatch, tmp_path):
    monkeypatch.setenv("HASHSTUDY_CACHE", str(tmp_path))
    inputs, split = _blobs()
    table, codes = crosspaper.run(inputs, split, "smoke", methods=["itq", "cca_itq", "lsh"],
                                  bits=[8, 16], seeds=[0, 1], progress=False)
    assert set(codes) == {(m, b, s) for m in ("itq", "cca_itq", "lsh") for b in (8, 16)
                          for s in (0, 1)}
    q, d = codes[("itq", 16, 0)]
    assert q.shape == (split.query.size, 16) and d.shape == (split.database.size, 16)
    expected = set(crosspaper.METRICS) | {"fit_seconds", "distinct_codes"}
    assert set(table.metric) == expected
    assert len(table) == 3 * 2 * 2 * len(expected)
    m = table.set_index(["method", "bits", "seed", "metric"]).value
    # separable blobs: the supervised code is near perfect, LSH clearly worse than it
    assert m[("cca_itq", 16, 0, "map@1000")] > 0.95
    assert m[("lsh", 8, 0, "map@1000")] < m[("cca_itq", 8, 0, "map@1000")]

    calls = []
    real = crosspaper.METHODS["itq"]
    monkeypatch.setitem(crosspaper.METHODS, "itq", crosspaper.Method(
        "itq", real.label, real.paper, real.supervised, real.takes,
        lambda *a: calls.append(a) or real.build(*a)))
    again, codes2 = crosspaper.run(inputs, split, "smoke", methods=["itq"], bits=[16],
                                   seeds=[0], progress=False)
    # the lambda is new source, so the key changes and the method is fitted again
    assert len(calls) == 1
    again2, _ = crosspaper.run(inputs, split, "smoke", methods=["itq"], bits=[16], seeds=[0],
                               progress=False)
    assert len(calls) == 1, "the second identical run must read the cached codes"
    pd.testing.assert_frame_equal(again, again2)


def test_aggregate_and_ranking_mark_gaps_within_one_std():
    table = pd.DataFrame([
        {"method": m, "bits": 32, "seed": s, "metric": "map@1000", "value": v}
        for m, values in {"a": [0.80, 0.82, 0.84], "b": [0.78, 0.80, 0.82],
                          "c": [0.50, 0.51, 0.52]}.items() for s, v in enumerate(values)])
    agg = crosspaper.aggregate(table)
    a = agg.set_index("method")
    assert a.loc["a", "mean"] == pytest.approx(0.82)
    assert a.loc["a", "std"] == pytest.approx(0.02)  # ddof 1
    assert a.loc["a", "n"] == 3
    rank = crosspaper.ranking(agg, 32, labels={"a": "Method A"})
    assert rank.key.tolist() == ["a", "b", "c"]
    assert rank.method.tolist()[0] == "Method A"
    assert rank.vs_next.tolist() == ["~", ">", ""]
    with pytest.raises(ValueError, match="no 'map_all' at 32 bits"):
        crosspaper.ranking(agg, 32, "map_all")


def test_pr_curves_average_seeds_radius_by_radius():
    inputs, split = _blobs()
    rng = np.random.default_rng(0)
    ql, dl = inputs.labels[split.query], inputs.labels[split.database]
    codes = {("x", 8, s): (rng.integers(0, 2, (ql.size, 8), dtype=np.uint8),
                           rng.integers(0, 2, (dl.size, 8), dtype=np.uint8)) for s in (0, 1)}
    curves = crosspaper.pr_curves(codes, ql, dl, 8)
    recall, precision = curves["x"]
    assert recall.shape == (9,) and precision.shape == (9,)
    assert recall[-1] == pytest.approx(1.0)  # radius 8 returns everything
    assert crosspaper.pr_curves(codes, ql, dl, 16) == {}


def test_study_tables_and_keys(monkeypatch, tmp_path):
    """One dataset end to end with shallow methods: tables, references, transfer and keys."""
    monkeypatch.setenv("HASHSTUDY_CACHE", str(tmp_path))
    inputs, split = _blobs()
    monkeypatch.setattr(crosspaper, "load_inputs", lambda ds, **kw: inputs)
    monkeypatch.setattr(crosspaper, "split_for", lambda ds, profile: split)
    monkeypatch.setattr(crosspaper, "TRANSFER_METHODS", ("itq", "cca_itq"))
    st = crosspaper.study("toy", "smoke", methods=["itq", "cca_itq", "lsh"], bits=[8, 16],
                          seeds=[0, 1], progress=False)
    assert [m.name for m in st.methods] == ["itq", "cca_itq", "lsh"]
    # the transfer split holds only unseen classes among queries and database, seen ones in training
    seen = np.unique(inputs.labels[st.transfer_split.train])
    assert seen.size == 7
    assert not np.isin(inputs.labels[st.transfer_split.query], seen).any()
    assert not np.isin(inputs.labels[st.transfer_split.database], seen).any()

    table = crosspaper.results_table(st, 16)
    assert table.method.tolist() == ["ITQ", "CCA-ITQ", "LSH", "classifier code (4 bits)",
                                     "cosine ranking (real-valued)"]
    assert table.loc[table.method == "CCA-ITQ", "labels"].item() == "yes"
    assert " ± " in table.loc[0, "map@1000"]
    assert table.loc[4, "hd2p"] == "", "a real-valued ranking has no Hamming radius"

    wide = crosspaper.by_bits(st)
    means = st.agg[st.agg.metric == "map@1000"].groupby("method")["mean"].mean()
    assert list(wide.columns) == [8, 16]
    assert wide.index[0] == st.labels()[means.idxmax()], "rows are sorted best first"

    transfer = crosspaper.transfer_table(st)
    assert transfer.method.tolist()[:2] == ["ITQ", "CCA-ITQ"]
    prior = transfer.iloc[-1]
    assert float(prior["all classes"]) == pytest.approx(0.1, abs=1e-3)
    assert float(prior["unseen classes"]) == pytest.approx(1 / 3, abs=1e-3)

    keys = crosspaper.metric_values(st)
    assert keys["toy/itq/16/map@1000"] == pytest.approx(
        st.table[(st.table.method == "itq") & (st.table.bits == 16)
                 & (st.table.metric == "map@1000")].value.mean())
    assert "toy/itq/16/map@1000_std" in keys and "toy/cosine/map@1000" in keys
    assert "toy/classifier_code/4/map@1000" in keys
    tb = crosspaper.PROFILE_SIZES["smoke"]["transfer_bits"]
    assert {k for k in keys if k.startswith("toy/transfer/cca_itq/")} == {
        f"toy/transfer/cca_itq/{tb}/{m}{s}" for m in (*crosspaper.METRICS, "fit_seconds",
                                                    "distinct_codes") for s in ("", "_std")}
    assert "toy/transfer/lsh/16/map@1000" not in keys, "only the transfer methods run there"
    assert keys["toy/constant/prior"] == pytest.approx(0.1, abs=1e-3)


def test_fit_jobs_cover_every_fit_slowest_first():
    jobs = crosspaper.fit_jobs(["mnist", "cifar10"])
    main = {(ds, m) for ds, m, t in jobs if not t}
    assert main == {(ds, m.name) for ds in ("mnist", "cifar10") for m in crosspaper.methods_for(ds)}
    assert {(ds, m) for ds, m, t in jobs if t} == {
        (ds, m) for ds in ("mnist", "cifar10") for m in crosspaper.TRANSFER_METHODS}
    assert jobs[0][1] == "dsth18" and jobs[-1][1] not in crosspaper.SLOWEST_FIRST
    position = {m: max(i for i, j in enumerate(jobs) if j[1] == m) for m in ("cnnh", "lsh")}
    assert position["cnnh"] < position["lsh"]


def test_references_table_lists_every_reference_per_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("HASHSTUDY_CACHE", str(tmp_path))
    inputs, split = _blobs()
    monkeypatch.setattr(crosspaper, "split_for", lambda ds, profile: split)
    monkeypatch.setattr(crosspaper, "load_inputs", lambda ds, **kw: pytest.fail("decoded again"))
    st = crosspaper.study("toy", "smoke", methods=["itq", "itq_l2"], bits=[8, 16], seeds=[0, 1],
                          transfer=False, inputs=inputs, progress=False)
    table = crosspaper.references_table({"toy": st})
    assert table.reference.tolist() == ["ITQ", "ITQ", "ITQ (L2-normalised input)",
                                        "ITQ (L2-normalised input)", "classifier code",
                                        "cosine ranking (real-valued)", "constant code (control)"]
    assert table.bits.tolist()[-1] == 8
