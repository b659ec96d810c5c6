"""Tests of hashstudy.hamming.search / SearchIndex: every method gives the scan's answer."""
import numpy as np
import pytest

from hashstudy import hamming as H

METHODS = ("exact", "mih", "auto")


def clustered_codes(rng, n, bits, classes=8, flip=0.08):
    """{0,1} codes scattered around a few prototypes, so that there are near neighbours."""
    proto = rng.integers(0, 2, size=(classes, bits), dtype=np.uint8)
    noise = rng.random((n, bits)) < flip
    return (proto[rng.integers(0, classes, n)] ^ noise).astype(np.uint8)


def naive_distances(q, d):
    return (q[:, None, :] != d[None, :, :]).sum(axis=2)


def make_pair(seed, n, bits, n_q=25):
    rng = np.random.default_rng(seed)
    codes = clustered_codes(rng, n + n_q, bits)
    return codes[:n_q], codes[n_q:]


def index(db, method, **kw):
    """A SearchIndex whose MIH path never gives up (so MIH itself is tested)."""
    kw.setdefault("work_fraction", None)
    return H.SearchIndex(db, method=method, **kw)


def assert_rows_equal(got_idx, got_dist, hits: H.RadiusHits):
    assert len(got_idx) == len(got_dist) == len(hits.offsets) - 1
    for i in range(len(got_idx)):
        lo, hi = hits.offsets[i], hits.offsets[i + 1]
        assert got_idx[i].dtype == np.int64 and got_dist[i].dtype == np.uint16
        np.testing.assert_array_equal(got_idx[i], hits.indices[lo:hi])
        np.testing.assert_array_equal(got_dist[i], hits.distances[lo:hi])


# ---------------------------------------------------------------------------
# answers equal the exact scan
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "n, bits", [(300, 1), (2000, 13), (3000, 48), (5000, 64), (2000, 65), (1500, 100), (1000, 130)]
)
def test_topk_equals_scan(method, n, bits):
    q, db = make_pair(n + bits, n, bits)
    ix = index(db, method)
    naive = naive_distances(q, db)
    for k in (1, 3, 10, 100, n + 5):
        idx, dist = ix.search(q, k=k)
        ref_idx, ref_dist = H.topk(q, db, k)
        assert idx.shape == dist.shape == (len(q), min(k, n))
        assert idx.dtype == np.int64 and dist.dtype == np.uint16
        # ids and distances, ties broken by database index as the scan does
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)
        # and, independently of any tie order, the k smallest true distances
        np.testing.assert_array_equal(dist, np.sort(naive, axis=1)[:, : min(k, n)])
        np.testing.assert_array_equal(np.take_along_axis(naive, idx, axis=1), dist)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, bits", [(300, 1), (2000, 13), (5000, 64), (2000, 65), (1000, 130)])
def test_radius_equals_scan(method, n, bits):
    q, db = make_pair(2 * n + bits, n, bits)
    ix = index(db, method)
    naive = naive_distances(q, db)
    for r in sorted({0, 1, 2, 3, bits // 8, bits // 4, bits, bits + 7}):
        idx, dist = ix.search(q, radius=r)
        assert_rows_equal(idx, dist, H.radius_search(q, db, r))
        for i in range(len(q)):  # as sets, against the definition
            assert set(idx[i].tolist()) == set(np.flatnonzero(naive[i] <= r).tolist())


@pytest.mark.parametrize("method", METHODS)
def test_radius_with_k_is_the_nearest_within_the_radius(method):
    q, db = make_pair(3, 4000, 64)
    ix = index(db, method)
    for r, k in ((2, 5), (6, 3), (9, 50), (64, 7)):
        idx, dist = ix.search(q, k=k, radius=r)
        full = H.radius_search(q, db, r)
        for i in range(len(q)):
            np.testing.assert_array_equal(idx[i], full.row(i)[:k])
            np.testing.assert_array_equal(dist[i], full.distances[full.offsets[i] : full.offsets[i + 1]][:k])


@pytest.mark.parametrize("tables", [1, 2, 3, 5, 8])
def test_any_number_of_tables_is_exact(tables):
    q, db = make_pair(4, 3000, 20)
    ix = index(db, "mih", tables=tables)
    assert len(ix.starts) == tables
    for k in (1, 20):
        np.testing.assert_array_equal(ix.search(q, k=k).indices, H.topk(q, db, k)[0])
    for r in (0, 3, 7):
        idx, dist = ix.search(q, radius=r)
        assert_rows_equal(idx, dist, H.radius_search(q, db, r))


def test_many_ties_are_broken_by_database_index():
    rng = np.random.default_rng(5)
    base = clustered_codes(rng, 40, 64, classes=3, flip=0.03)
    db = base[rng.integers(0, len(base), 3000)]  # every code repeated many times
    q = base[:10]
    for method in METHODS:
        ix = index(db, method)
        for k in (1, 10, 200):
            idx, dist = ix.search(q, k=k)
            ref_idx, ref_dist = H.topk(q, db, k)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_array_equal(dist, ref_dist)
        idx, dist = ix.search(q, radius=1)
        assert_rows_equal(idx, dist, H.radius_search(q, db, 1))


def test_queries_that_give_up_are_scanned_and_still_exact():
    q, db = make_pair(6, 3000, 64)
    ix = H.SearchIndex(db, method="mih", work_fraction=1e-9)  # every query gives up at once
    idx, dist = ix.search(q, k=10)
    assert ix.last_search["fallback"] == len(q)
    np.testing.assert_array_equal(idx, H.topk(q, db, 10)[0])
    idx, dist = ix.search(q, radius=5)
    assert ix.last_search["fallback"] == len(q)
    assert_rows_equal(idx, dist, H.radius_search(q, db, 5))


def test_radius_hits_beyond_the_first_buffer_are_kept():
    # a large radius gives each query hundreds of hits (more than the 64 held at first)
    q, db = make_pair(7, 3000, 32)
    ix = index(db, "mih")
    idx, dist = ix.search(q, radius=12)
    assert max(len(row) for row in idx) > 64
    assert ix.last_search["fallback"] == 0
    assert_rows_equal(idx, dist, H.radius_search(q, db, 12))


def test_inputs_in_every_accepted_form_give_the_same_answer():
    q, db = make_pair(8, 2000, 64)
    ref = H.search(q, db, k=5, method="exact")
    for qq, dd in ((2 * q.astype(np.int8) - 1, 2.0 * db - 1), (H.pack(q), H.pack(db)), (q.astype(bool), db)):
        for method in METHODS:
            got = H.search(qq, dd, k=5, method=method)
            np.testing.assert_array_equal(got.indices, ref.indices)
            np.testing.assert_array_equal(got.distances, ref.distances)


@pytest.mark.parametrize("auto_min", [10**9, 1])
def test_empty_query_set_and_k_larger_than_the_database(monkeypatch, auto_min):
    monkeypatch.setattr(H, "AUTO_MIN_DATABASE", auto_min)
    monkeypatch.setattr(H, "AUTO_BUILD_QUERIES", 0)
    q, db = make_pair(9, 50, 64)
    for method in METHODS:
        idx, dist = H.search(q[:0], db, k=10, method=method)
        assert idx.shape == dist.shape == (0, 10)
        idx, dist = H.search(q[:0], db, radius=3, method=method)
        assert idx == [] and dist == []
        idx, dist = H.search(q, db, k=500, method=method)
        assert idx.shape == (len(q), 50)
        np.testing.assert_array_equal(idx, H.topk(q, db, None)[0])


# ---------------------------------------------------------------------------
# what "auto" does
# ---------------------------------------------------------------------------


def test_auto_scans_small_databases(monkeypatch):
    q, db = make_pair(10, 2000, 64)
    ix = H.SearchIndex(db)
    assert ix.method == "auto" and not ix.uses_mih
    ix.search(q, k=3)
    assert ix.last_search["method"] == "exact"
    assert ix.nbytes == H.pack(db).words.nbytes  # no tables were built


def test_auto_builds_tables_once_enough_queries_were_asked(monkeypatch):
    monkeypatch.setattr(H, "AUTO_MIN_DATABASE", 1000)
    monkeypatch.setattr(H, "AUTO_BUILD_QUERIES", 60)
    q, db = make_pair(11, 3000, 64, n_q=100)
    ix = H.SearchIndex(db)
    bytes_before = ix.nbytes
    ix.search(q[:40], k=3)
    assert ix.last_search["method"] == "exact"  # 40 queries asked: not yet worth a build
    idx, _ = ix.search(q[40:], k=3)  # 100 in all
    assert ix.last_search["method"] == "mih"
    assert ix.nbytes > bytes_before
    np.testing.assert_array_equal(idx, H.topk(q[40:], db, 3)[0])


def test_auto_scans_requests_whose_probe_queries_give_up(monkeypatch):
    monkeypatch.setattr(H, "AUTO_MIN_DATABASE", 1000)
    monkeypatch.setattr(H, "AUTO_BUILD_QUERIES", 1)
    monkeypatch.setattr(H, "AUTO_PROBE_QUERIES", 8)
    q, db = make_pair(12, 3000, 64, n_q=40)
    easy = H.SearchIndex(db, work_fraction=None)
    easy.search(q, k=3)
    assert easy.last_search == {"method": "mih", "queries": 40, "mih_queries": 40, "fallback": 0}
    hard = H.SearchIndex(db, work_fraction=1e-9)  # every MIH query gives up
    for kw in ({"k": 3}, {"radius": 4}):
        ref = H.search(q, db, method="exact", **kw)
        idx, dist = hard.search(q, **kw)  # the first 8 are tried by MIH, the rest scanned
        assert hard.last_search == {"method": "mih", "queries": 40, "mih_queries": 8, "fallback": 8}
        for a, b in zip(idx, ref.indices):
            np.testing.assert_array_equal(a, b)
        idx, dist = hard.search(q, **kw)  # the same request again: scanned at once
        assert hard.last_search == {"method": "exact", "queries": 40, "mih_queries": 0, "fallback": 0}
        for a, b in zip(idx, ref.indices):
            np.testing.assert_array_equal(a, b)
    # one query at a time: MIH for the first 8 of a new kind of request, then the scan
    methods = []
    for i in range(12):
        idx, _ = hard.search(q[i : i + 1], k=5)
        methods.append(hard.last_search["method"])
        np.testing.assert_array_equal(idx, H.topk(q[i : i + 1], db, 5)[0])
    assert methods == ["mih"] * 8 + ["exact"] * 4


def test_search_function_is_one_call_of_an_index():
    q, db = make_pair(13, 3000, 64)
    for kw in ({"k": 4}, {"radius": 3}):
        a = H.search(q, db, method="mih", tables=3, **kw)
        b = H.SearchIndex(db, method="mih", tables=3).search(q, **kw)
        for x, y in zip(a.indices, b.indices):
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------
# layout and memory
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bits, n, tables, lengths",
    [
        (64, 100_000, None, [16, 16, 16, 16]),
        (64, 1_000_000, None, [16, 16, 16, 16]),
        (64, 10_000_000, None, [22, 21, 21]),
        (64, 10, None, [3] * 20 + [2] * 2),
        (48, 1_000_000, None, [16, 16, 16]),
        (130, 5000, None, [12] * 9 + [11] * 2),
        (1, 1, None, [1]),
        (64, 1000, 5, [13, 13, 13, 13, 12]),
        (7, 1000, 7, [1] * 7),
    ],
)
def test_mih_layout(bits, n, tables, lengths):
    starts, got = H.mih_layout(bits, n, tables)
    assert got.tolist() == lengths
    assert starts.tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()


def test_nbytes_counts_codes_and_tables():
    q, db = make_pair(14, 5000, 64)
    ix = H.SearchIndex(db, method="exact")
    assert ix.nbytes == 5000 * 8
    mih = H.SearchIndex(db, method="mih")
    m = len(mih.starts)
    directory = sum((2 ** int(b) + 1) * 4 for b in mih.lengths) + 8 * m
    assert mih.nbytes == 5000 * 8 + m * 5000 * (4 + 8) + directory
    wide = H.SearchIndex(clustered_codes(np.random.default_rng(0), 500, 200), method="mih")
    m = len(wide.starts)  # codes longer than 128 bits are not copied into the tables
    assert wide.nbytes == 500 * 32 + m * 500 * 4 + sum((2 ** int(b) + 1) * 4 for b in wide.lengths) + 8 * m


def test_agrees_with_faiss_on_distances():
    faiss = pytest.importorskip("faiss")
    q, db = make_pair(15, 5000, 64)
    flat = faiss.IndexBinaryFlat(64)
    flat.add(np.packbits(db, axis=1))
    ref, _ = flat.search(np.packbits(q, axis=1), 20)
    _, dist = H.search(q, db, k=20, method="mih")
    np.testing.assert_array_equal(dist, np.sort(ref, axis=1))  # faiss orders ties its own way


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({}, ValueError, "give k"),
        ({"k": 0}, ValueError, "positive integer"),
        ({"k": -3}, ValueError, "positive integer"),
        ({"k": 2.5}, TypeError, "positive integer"),
        ({"k": True}, TypeError, "positive integer"),
        ({"radius": -1}, ValueError, "non-negative integer"),
        ({"radius": 1.5}, ValueError, "non-negative integer"),
        ({"radius": False}, ValueError, "non-negative integer"),
        ({"k": 3, "method": "faiss"}, ValueError, "method must be one of"),
        ({"k": 3, "tables": 0}, ValueError, "between 1 and bits"),
        ({"k": 3, "tables": 65}, ValueError, "between 1 and bits"),
        ({"k": 3, "tables": 2.0}, TypeError, "tables must be"),
    ],
)
def test_bad_arguments(kw, err, match):
    q, db = make_pair(16, 100, 64)
    with pytest.raises(err, match=match):
        H.search(q, db, **kw)


def test_bad_codes_and_settings():
    q, db = make_pair(17, 100, 64)
    with pytest.raises(ValueError, match="query codes have 32 bits but database codes have 64"):
        H.search(q[:, :32], db, k=1)
    with pytest.raises(ValueError, match="database is empty"):
        H.search(q, db[:0], k=1)
    with pytest.raises(ValueError, match="2-D"):
        H.search(q[0], db, k=1)
    with pytest.raises(ValueError, match="only"):
        H.search(q + 1, db, k=1)
    with pytest.raises(ValueError, match="at least 3 tables"):
        H.SearchIndex(np.zeros((10, 64)), tables=2)
    for bad in (0, -0.5, "1/8", True):
        with pytest.raises(ValueError, match="work_fraction"):
            H.SearchIndex(db, work_fraction=bad)


# ---------------------------------------------------------------------------
# the benchmark script, at its smoke size
# ---------------------------------------------------------------------------


def test_search_benchmark_smoke(isolated_dirs):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "search_scale.py"
    run = subprocess.run(
        [sys.executable, str(script), "--smoke", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Hamming distances per millisecond on this machine (" in run.stdout
    assert " per core)" in run.stdout
    out = isolated_dirs / "reports" / "benchmarks" / "smoke"
    for name in ("metrics.json", "meta.json", "search.csv", "search.txt", "search_time.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hamming/64/ms_per_1m_distances"] > 0
    assert metrics["hamming/64/distances_per_ms_per_core"] > 0
    methods = ["hashstudy-exact", "hashstudy-mih", "hashstudy-auto"]
    try:
        import faiss  # noqa: F401

        methods += ["faiss-flat", "faiss-multihash"]
    except ImportError:
        pass
    for size in (2000, 5000):
        for method in methods:
            for task in ("top10", "top1000", "radius2"):
                prefix = f"search/{size}/{method}/{task}/"
                for key in ("ms_per_query_batch", "ms_per_query_single", "recall", "build_s", "bytes"):
                    assert prefix + key in metrics, prefix + key
                exact = method != "faiss-multihash" or task == "radius2"
                if exact:  # exact methods and MIH radius search find everything
                    assert metrics[prefix + "recall"] == 1.0, prefix
                    assert metrics[prefix + "recall_single"] == 1.0, prefix
    meta = json.loads((out / "meta.json").read_text())
    assert meta["profile"] == "smoke" and meta["parameters"]["sizes"] == [2000, 5000]
    assert meta["machine"]["cpu_model"] and meta["versions"]["numba"]
