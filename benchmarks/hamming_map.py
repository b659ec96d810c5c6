"""Benchmark: mAP@1000 of 10,000 queries against 50,000 64-bit codes.

Three ways to compute the same number from one set of random codes:

(a) a straightforward per-query reference loop: Hamming distances from
    +/-1 codes by an inner product, ``0.5 * (bits - B_db @ b_q)``, a stable
    ``np.argsort`` per query, AP@1000 of the top 1000;
(b) faiss ``IndexBinaryFlat`` top-1000 search, followed by the same AP
    computation (faiss orders tied distances its own way, so its mAP may
    differ slightly);
(c) ``hashstudy.metrics.mean_average_precision(..., topk=1000)``, which must
    equal (a) exactly.

Run with ``python benchmarks/hamming_map.py`` or ``make benchmark``. The codes
are noisy copies of one random prototype per class, so the mAP is far from
both 0.1 and 1. numba compile time is excluded: the kernels are warmed up on a
small slice before timing.
"""
from __future__ import annotations

import os

THREADS = 2  # the study's reference machine has 2 cores; faiss and numba use both
# BLAS stays single-threaded: the reference loop's per-query matrix-vector
# product (50,000 x 64) is far too small to gain from threads, and on a busy
# machine waking BLAS threads for it costs more than the product itself.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from hashstudy import metrics  # noqa: E402

SEED = 0
N_QUERIES = 10_000
N_DATABASE = 50_000
BITS = 64
N_CLASSES = 10
FLIP = 0.35  # probability that a bit differs from the class prototype
TOPK = 1000


def make_codes(rng):
    """{0,1} uint8 codes (Q, BITS), (N, BITS) and int64 labels, correlated by class."""
    proto = rng.integers(0, 2, size=(N_CLASSES, BITS), dtype=np.uint8)
    q_labels = rng.integers(0, N_CLASSES, N_QUERIES)
    db_labels = rng.integers(0, N_CLASSES, N_DATABASE)
    q = proto[q_labels] ^ (rng.random((N_QUERIES, BITS)) < FLIP)
    db = proto[db_labels] ^ (rng.random((N_DATABASE, BITS)) < FLIP)
    return q.astype(np.uint8), db.astype(np.uint8), q_labels, db_labels


def ap_of_ranking(ranked_labels, label):
    """AP over a ranked list: mean of m / rank_m over its relevant items, 0 if none.

    The terms are added in rank order (``np.cumsum``), the convention that
    ``mean_average_precision`` documents and reproduces bit for bit.
    """
    ranks = np.flatnonzero(ranked_labels == label) + 1
    if len(ranks) == 0:
        return 0.0
    return np.cumsum(np.arange(1, len(ranks) + 1) / ranks)[-1] / len(ranks)


def reference_loop(q, db, q_labels, db_labels):
    signed_q = (2.0 * q - 1).astype(np.float32)
    signed_db = (2.0 * db - 1).astype(np.float32)
    aps = np.empty(len(q))
    for i in range(len(q)):
        dist = 0.5 * (BITS - signed_db @ signed_q[i])
        top = np.argsort(dist, kind="stable")[:TOPK]
        aps[i] = ap_of_ranking(db_labels[top], q_labels[i])
    return float(np.mean(aps))


def faiss_search(q, db):
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexBinaryFlat(BITS)
    index.add(np.packbits(db, axis=1))
    _, top = index.search(np.packbits(q, axis=1), TOPK)
    return top


def faiss_map(top, q_labels, db_labels):
    return float(np.mean([ap_of_ranking(db_labels[top[i]], q_labels[i]) for i in range(len(top))]))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    numba.set_num_threads(THREADS)
    q, db, q_labels, db_labels = make_codes(np.random.default_rng(SEED))
    print(
        f"{N_QUERIES:,} queries x {N_DATABASE:,} database items, {BITS}-bit codes, "
        f"{N_CLASSES} classes, mAP@{TOPK}, seed {SEED}; faiss and numba on {THREADS} threads, "
        "the reference loop on one"
    )

    # warm-up: compiles (or loads from the on-disk cache) the numba kernels
    _, compile_s = timed(
        metrics.mean_average_precision, q[:20], db[:2000], q_labels[:20], db_labels[:2000], TOPK
    )

    ref_map, ref_s = timed(reference_loop, q, db, q_labels, db_labels)
    print(f"(a) reference loop (inner product, stable argsort): {ref_s:7.2f} s   mAP {ref_map:.6f}")

    try:
        top, search_s = timed(faiss_search, q, db)
    except ImportError:
        faiss_s = None
        print("(b) faiss IndexBinaryFlat: faiss is not installed, skipped")
    else:
        f_map, ap_s = timed(faiss_map, top, q_labels, db_labels)
        faiss_s = search_s + ap_s
        same = "same as (a)" if f_map == ref_map else f"differs from (a) by {f_map - ref_map:+.2e}"
        print(
            f"(b) faiss IndexBinaryFlat top-{TOPK} + AP:           {faiss_s:7.2f} s   "
            f"mAP {f_map:.6f} ({same}; search {search_s:.2f} s, AP loop {ap_s:.2f} s)"
        )

    ours, ours_s = timed(metrics.mean_average_precision, q, db, q_labels, db_labels, TOPK)
    print(
        f"(c) hashstudy.metrics.mean_average_precision:       {ours_s:7.2f} s   mAP {ours:.6f} "
        f"(numba warm-up {compile_s:.2f} s not included)"
    )
    assert ours == ref_map, f"mAP differs from the reference loop: {ours!r} != {ref_map!r}"
    print("(c) equals (a) exactly: yes")

    print(f"speed-up of (c) over (a): {ref_s / ours_s:6.1f}x   (bar: >= 5x)")
    if faiss_s is not None:
        print(f"speed-up of (c) over (b): {faiss_s / ours_s:6.1f}x   (bar: >= 1x)")
    met = ref_s / ours_s >= 5 and (faiss_s is None or faiss_s >= ours_s)
    print(f"bar met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
