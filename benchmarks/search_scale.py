"""Benchmark: Hamming search over 0.1, 1 and 10 million codes.

The DSTH papers say an ordinary PC computes "millions of Hamming distances in
just a few milliseconds", and the latent-layer paper searches 1M images. This
script measures, on the machine it runs on, for 64-bit codes (``--bits``):

* three tasks: top-10, top-1000 and radius-2 search (all items within
  Hamming distance <= 2), for ``--queries`` queries (default 1,000);
* five methods:

  ``hashstudy-exact``  the library's exact scan (packed popcount, numba);
  ``hashstudy-mih``    the library's multi-index hashing tables
                       (``hamming.SearchIndex(method="mih")``): exact answers,
                       a query that would cost more than a scan is scanned;
  ``hashstudy-auto``   ``hamming.SearchIndex()``, the default: scan or MIH;
  ``faiss-flat``       faiss ``IndexBinaryFlat`` (exact scan);
  ``faiss-multihash``  faiss ``IndexBinaryMultiHash``: ``nhash`` tables of
                       ``b`` bits, ``nhash = ceil(bits / floor(log2 N))``
                       (4 x 16 bits up to 16.7M codes, 3 x 21 at 10M), probing
                       buckets within ``nflip`` bits. Radius search uses
                       ``nflip = r // nhash``, which makes it exact by the
                       pigeonhole principle; top-k uses ``--faiss-nflip``
                       (default 1) and is approximate;

* for each: time per query in a batch of all queries, time per query asked
  one at a time (median over the first ``--single`` queries), build time, bytes of the
  index (codes included), the peak resident memory added while building, and
  recall against the exact answer. Top-k recall is tie-aware: the fraction of
  the exact k smallest distances that the returned distances match (as
  multisets; with ties, which ids are returned is arbitrary). Radius recall
  is the fraction of the exact within-radius items returned.

The codes are synthetic with the structure of learned hash codes: 1,000
random class prototypes (so each bit is set in about half of the codes), and
each code flips every bit of its prototype with its own probability, drawn
uniformly from 2-20%, so there are close neighbours (the script prints how
close). Codes are generated in seeded chunks, so the 100,000-code database is
the first tenth of the 1M one, and so on.

Outputs go to ``--out`` (default ``reports/benchmarks/<profile>/`` under
``HASHSTUDY_REPORTS``; profile ``quick`` for the default sizes, ``smoke`` for
``--smoke``, ``custom`` otherwise): ``metrics.json`` (flat keys, among them
``hamming/<bits>/ms_per_1m_distances`` and
``hamming/<bits>/distances_per_ms_per_core``), ``meta.json`` (machine,
versions, parameters), ``search.csv`` and ``search_time.png``.

Run with ``python benchmarks/search_scale.py`` or ``make benchmark-search``.
Timings are only meaningful on an otherwise idle machine; ``meta.json``
records the load average before and after the run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from machine import all_cores, describe  # benchmarks/machine.py

OWNED_PREFIXES = ("data/", "hamming/", "search/")  # the metrics.json keys this script writes
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
SMOKE_SIZES = (2_000, 5_000)
TASKS = (("top10", 10, None), ("top1000", 1000, None), ("radius2", None, 2))
METHODS = ("hashstudy-exact", "hashstudy-mih", "hashstudy-auto", "faiss-flat", "faiss-multihash")
CLASSES = 1000
FLIP_RANGE = (0.02, 0.20)
CHUNK = 1 << 18  # codes generated per seeded chunk


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+",
                   help="database sizes (default 100000 1000000 10000000)")
    p.add_argument("--queries", type=int, help="number of queries (default 1000; smoke 20)")
    p.add_argument("--bits", type=int, default=64, help="code length (default 64)")
    p.add_argument("--threads", type=int, default=all_cores(),
                   help="threads for numba and faiss (default: all cores)")
    p.add_argument("--single", type=int, help="queries timed one at a time (default 50; smoke 5)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to run (hashstudy-exact always runs: it is the reference)")
    p.add_argument("--faiss-nflip", type=int, default=1,
                   help="faiss MultiHash nflip for top-k (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--out", help="output folder (default reports/benchmarks/<profile>/)")
    args = p.parse_args(argv)
    if args.smoke and args.sizes:
        p.error("--smoke fixes the sizes; drop --sizes")
    if args.smoke:
        args.profile = "smoke"
    elif args.sizes and tuple(sorted(set(args.sizes))) != DEFAULT_SIZES:
        args.profile = "custom"
    else:
        args.profile = "quick"
    args.sizes = sorted(set(args.sizes or (SMOKE_SIZES if args.smoke else DEFAULT_SIZES)))
    args.queries = args.queries or (20 if args.smoke else 1000)
    args.single = min(args.single or (5 if args.smoke else 50), args.queries)
    if min(args.sizes) < 1 or args.queries < 1 or args.threads < 1 or args.bits < 1:
        p.error("sizes, queries, threads and bits must be positive")
    # the exact scan runs first: it is the reference for every recall
    args.methods = [m for m in METHODS if m in args.methods or m == "hashstudy-exact"]
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numba and faiss load
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
    pool = int(os.environ.get("NUMBA_NUM_THREADS") or 0)
    os.environ["NUMBA_NUM_THREADS"] = str(max(ARGS.threads, pool))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from hashstudy import cache, config  # noqa: E402
from hashstudy import hamming as H  # noqa: E402

try:
    import faiss
except ImportError:  # the library methods still run
    faiss = None


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def make_codes(n: int, bits: int, seed: int, stream: int) -> H.PackedCodes:
    """``n`` packed codes around CLASSES seeded prototypes; stream 0: database, 1: queries."""
    proto = np.random.default_rng([seed, 2]).integers(0, 2, size=(CLASSES, bits), dtype=np.uint8)
    words = np.empty((n, -(-bits // 64)), dtype=np.uint64)
    for c, lo in enumerate(range(0, n, CHUNK)):
        size = min(CHUNK, n - lo)
        rng = np.random.default_rng([seed, stream, c])
        labels = rng.integers(0, CLASSES, size)
        rate = rng.uniform(*FLIP_RANGE, size).astype(np.float32)
        flips = rng.random((size, bits), dtype=np.float32) < rate[:, None]
        words[lo : lo + size] = H.pack(proto[labels] ^ flips).words
    return H.PackedCodes(words, bits)


def bit_balance(codes: H.PackedCodes, sample: int = 100_000) -> tuple[float, float]:
    ones = H.unpack(codes[: min(sample, len(codes))]).mean(axis=0)
    return float(ones.min()), float(ones.max())


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int | None:
    """Reset the peak-RSS mark (Linux); return the current RSS in bytes, or None."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss = _status_kb("VmRSS")
    return None if rss is None else rss * 1024


def peak_rss_delta(before: int | None) -> int | None:
    peak = _status_kb("VmHWM")
    return None if before is None or peak is None else max(peak * 1024 - before, 0)


# ---------------------------------------------------------------------------
# methods: build(db) -> index; search(index, q, k, r) -> result; nbytes(index)
#
# A top-k result is (distances (Q, k) int, valid (Q, k) bool); a radius
# result is CSR (offsets, indices).
# ---------------------------------------------------------------------------


def faiss_bytes(codes: H.PackedCodes) -> np.ndarray:
    """The codes as faiss binary vectors (uint8, bits / 8 per code); same bit layout."""
    return np.ascontiguousarray(codes.words.view(np.uint8)[:, : codes.bits // 8])


def faiss_tables(bits: int, n: int) -> tuple[int, int]:
    nhash = -(-bits // max(1, min(int(np.log2(max(n, 2))), 32)))
    return nhash, bits // nhash


class Library:
    def __init__(self, method: str):
        self.method = method
        self.name = f"hashstudy-{method}"

    def build(self, db):
        ix = H.SearchIndex(db, method=self.method)
        if ix.uses_mih:
            ix.build()
        return ix

    def params(self, ix) -> str:
        if not ix.built:
            return "scan"
        return f"tables={len(ix.starts)} x {ix.lengths.max()} bits"

    def search(self, ix, q, k, r):
        idx, dist = ix.search(q, k=k, radius=r)
        if r is None:
            return dist, np.ones(dist.shape, dtype=bool)
        return _csr_of_rows(idx)

    def nbytes(self, ix) -> int:
        return ix.nbytes


class FaissFlat:
    name = "faiss-flat"

    def build(self, db):
        index = faiss.IndexBinaryFlat(db.bits)
        index.add(faiss_bytes(db))
        return index

    def params(self, index) -> str:
        return "exact"

    def search(self, index, q, k, r):
        if r is None:
            dist, ids = index.search(faiss_bytes(q), k)
            return dist, ids >= 0
        lims, _, ids = index.range_search(faiss_bytes(q), r + 1)  # faiss: distance < radius
        return lims.astype(np.int64), ids.astype(np.int64)

    def nbytes(self, index) -> int:
        return int(faiss.serialize_index_binary(index).nbytes)


class FaissMultiHash(FaissFlat):
    name = "faiss-multihash"

    def __init__(self, nflip: int):
        self.nflip = nflip

    def build(self, db):
        nhash, b = faiss_tables(db.bits, len(db))
        index = faiss.IndexBinaryMultiHash(db.bits, nhash, b)
        index.add(faiss_bytes(db))
        return index

    def params(self, index) -> str:
        return f"nhash={index.nhash} b={index.b} nflip(top-k)={self.nflip} nflip(radius)=r//nhash"

    def search(self, index, q, k, r):
        index.nflip = self.nflip if r is None else r // index.nhash
        return super().search(index, q, k, r)


def _csr_of_rows(rows) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    ids = np.concatenate(rows) if len(rows) else np.empty(0, np.int64)
    return offsets, ids.astype(np.int64, copy=False)


def _concat(results, radius: bool):
    """Join the results of single queries into one batch result."""
    if not radius:
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])
    offs = [np.diff(r[0]) for r in results]
    offsets = np.zeros(sum(len(o) for o in offs) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(offs), out=offsets[1:])
    return offsets, np.concatenate([r[1] for r in results])


def recall(result, exact, k, bits: int) -> float:
    """Tie-aware top-k recall (matched distances) or radius recall (items found)."""
    if k is not None:
        dist, valid = result
        ref = exact[0].astype(np.int64)
        n_q, kk = ref.shape
        nb = bits + 1
        rows = np.repeat(np.arange(n_q), kk).reshape(n_q, kk)
        want = np.bincount((rows * nb + ref).ravel(), minlength=n_q * nb)
        got = np.bincount((rows * nb + np.minimum(dist.astype(np.int64), bits))[valid], minlength=n_q * nb)
        return float(np.minimum(want, got).sum() / max(ref.size, 1))
    (o_got, i_got), (o_ref, i_ref) = result, exact
    n_q = len(o_ref) - 1
    if o_ref[-1] == 0:
        return 1.0
    key = lambda o, i: np.repeat(np.arange(n_q, dtype=np.int64), np.diff(o)) * (1 << 40) + i  # noqa: E731
    return float(np.isin(key(o_ref, i_ref), key(o_got, i_got)).sum() / o_ref[-1])


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def warm_up(bits: int) -> None:
    """Compile (or load from numba's disk cache) every kernel the library methods use."""
    rng = np.random.default_rng(0)
    db, q = rng.integers(0, 2, (3000, bits)), rng.integers(0, 2, (40, bits))
    for method in ("exact", "mih"):
        ix = H.SearchIndex(db, method=method)
        for k, r in ((10, None), (None, 2), (2, 3)):
            ix.search(q, k=k, radius=r)
    H.topk(q[:2], db, 3)


def per_core_rate(db: H.PackedCodes, q: H.PackedCodes, threads: int) -> tuple[float, int]:
    """Distances per ms of the exact top-10 scan on one thread (queries timed: up to 100)."""
    ix = H.SearchIndex(db, method="exact")
    n_q = max(1, min(len(q), 100, int(2e9 // max(len(db), 1))))
    numba.set_num_threads(1)
    try:
        _, s = timed(ix.search, q[:n_q], 10)
    finally:
        numba.set_num_threads(threads)
    return len(db) * n_q / (s * 1e3), n_q


def run(args) -> dict:
    numba.set_num_threads(args.threads)
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    methods = [Library(m.split("-", 1)[1]) for m in args.methods if m.startswith("hashstudy-")]
    want_faiss = [m for m in args.methods if m.startswith("faiss-")]
    if want_faiss and faiss is None:
        log("faiss is not installed (pip install faiss-cpu): skipping " + ", ".join(want_faiss))
    elif want_faiss and args.bits % 8:
        log(f"faiss binary indexes need a multiple of 8 bits, not {args.bits}: skipping faiss")
    else:
        if "faiss-flat" in want_faiss:
            methods.append(FaissFlat())
        if "faiss-multihash" in want_faiss:
            methods.append(FaissMultiHash(args.faiss_nflip))

    log(
        f"Hamming search: {args.bits}-bit codes, databases of {', '.join(f'{n:,}' for n in args.sizes)}, "
        f"{args.queries:,} queries ({args.single} also one at a time), {args.threads} thread(s), "
        f"seed {args.seed}"
        + (f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    )
    t0 = time.perf_counter()
    _, s = timed(warm_up, args.bits)
    log(f"warm-up (numba compile or cache load): {s:.1f} s")
    q, s = timed(make_codes, args.queries, args.bits, args.seed, 1)
    all_db, s2 = timed(make_codes, max(args.sizes), args.bits, args.seed, 0)
    lo, hi = bit_balance(all_db)
    log(f"codes generated in {s + s2:.1f} s; fraction of ones per bit {lo:.3f}..{hi:.3f}")

    metrics: dict = {"data/bit_ones_min": lo, "data/bit_ones_max": hi}
    rows = []
    for n in args.sizes:
        db = all_db[:n] if n < len(all_db) else all_db
        exact = {}
        for m in methods:
            before = reset_peak_rss()
            index, build_s = timed(m.build, db)
            rss = peak_rss_delta(before)
            nbytes = m.nbytes(index)
            log(f"[{n:,}] {m.name}: built in {build_s:.2f} s, {nbytes / 2**20:.1f} MiB ({m.params(index)})")
            for task, k, r in TASKS:
                k_eff = None if k is None else min(k, n)
                result, s = timed(m.search, index, q, k_eff, r)
                stats = dict(index.last_search) if isinstance(index, H.SearchIndex) else {}
                singles, single_times = [], []
                for i in range(args.single):
                    out, t = timed(m.search, index, q[i : i + 1], k_eff, r)
                    singles.append(out)
                    single_times.append(t)
                if m.name == "hashstudy-exact":
                    exact[task] = result
                    if r is None:
                        exact_dist = result[0]
                        metrics[f"data/{n}/{task}/kth_distance_median"] = float(np.median(exact_dist[:, -1]))
                    else:
                        hits = np.diff(result[0])
                        metrics[f"data/{n}/{task}/hits_mean"] = float(hits.mean())
                        metrics[f"data/{n}/{task}/queries_without_hits"] = float((hits == 0).mean())
                rec = recall(result, exact[task], k_eff, args.bits)
                # single queries must give the batch's answer
                first = _slice(exact[task], args.single, r is not None)
                rec_single = recall(_concat(singles, r is not None), first, k_eff, args.bits)
                if m.name.startswith("hashstudy-") and min(rec, rec_single) < 1:
                    log(f"WARNING: {m.name} {task} is not exact (recall {rec}, {rec_single})")
                row = {
                    "size": n,
                    "method": m.name,
                    "task": task,
                    "ms_per_query_batch": s * 1e3 / args.queries,
                    "ms_per_query_single": float(np.median(single_times)) * 1e3,
                    "ms_per_query_single_mean": float(np.mean(single_times)) * 1e3,
                    "recall": rec,
                    "recall_single": rec_single,
                    "build_s": build_s,
                    "bytes": nbytes,
                    "rss_delta_bytes": rss,
                    "threads": args.threads,
                    "params": m.params(index),
                }
                if stats and index.uses_mih:
                    row["mih_fraction"] = stats["mih_queries"] / max(stats["queries"], 1)
                    row["fallback_fraction"] = stats["fallback"] / max(stats["queries"], 1)
                rows.append(row)
                for key in ("ms_per_query_batch", "ms_per_query_single", "ms_per_query_single_mean",
                            "recall", "recall_single", "build_s", "bytes",
                            "rss_delta_bytes", "mih_fraction", "fallback_fraction"):
                    if row.get(key) is not None:
                        metrics[f"search/{n}/{m.name}/{task}/{key}"] = row[key]
                extra = (f", MIH for {row['mih_fraction']:.0%} of queries, {row['fallback_fraction']:.0%} gave up"
                         if "mih_fraction" in row else "")
                log(
                    f"[{n:,}] {m.name} {task}: {row['ms_per_query_batch']:.4f} ms/query in a batch, "
                    f"{row['ms_per_query_single']:.4f} ms one at a time (median), recall {rec:.4f}{extra}"
                )
            del index

    # the papers' claim: Hamming distances per millisecond, library exact scan
    n_max = max(args.sizes)
    ms = metrics[f"search/{n_max}/hashstudy-exact/top10/ms_per_query_batch"]
    per_core, n_timed = per_core_rate(all_db, q, args.threads)
    b = args.bits
    metrics.update({
        f"hamming/{b}/database": n_max,
        f"hamming/{b}/threads": args.threads,
        f"hamming/{b}/ms_per_1m_distances": ms / (n_max / 1e6),
        f"hamming/{b}/distances_per_ms": n_max / ms,
        f"hamming/{b}/distances_per_ms_per_core": per_core,
        f"hamming/{b}/ms_per_1m_distances_one_core": 1e6 / per_core,
    })
    log(f"one-thread exact top-10 scan timed on {n_timed} queries x {n_max:,} codes")
    return {"metrics": metrics, "rows": rows, "wall_s": time.perf_counter() - t0}


def _slice(result, n: int, radius: bool):
    if not radius:
        return result[0][:n], result[1][:n]
    offsets, ids = result
    return offsets[: n + 1], ids[: offsets[n]]


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------

COLUMNS = ("size", "method", "task", "ms_per_query_batch", "ms_per_query_single",
           "ms_per_query_single_mean", "recall",
           "recall_single", "build_s", "bytes", "rss_delta_bytes", "mih_fraction",
           "fallback_fraction", "threads", "params")


def table_text(rows, metrics, bits: int) -> str:
    head = (f"{'database':>11}  {'method':<16} {'task':<8} {'batch ms/q':>11} {'single ms/q':>11} "
            f"{'recall':>7} {'build s':>8} {'MiB':>8}  notes")
    lines = [head, "-" * len(head)]
    for r in rows:
        note = ""
        if "mih_fraction" in r:
            note = f"MIH {r['mih_fraction']:.0%} of queries, {r['fallback_fraction']:.0%} gave up"
        lines.append(
            f"{r['size']:>11,}  {r['method']:<16} {r['task']:<8} {r['ms_per_query_batch']:>11.4f} "
            f"{r['ms_per_query_single']:>11.4f} {r['recall']:>7.4f} {r['build_s']:>8.2f} "
            f"{r['bytes'] / 2**20:>8.1f}  {note}"
        )
    m = metrics
    rate, per_core = m[f"hamming/{bits}/distances_per_ms"], m[f"hamming/{bits}/distances_per_ms_per_core"]
    ms1m = m[f"hamming/{bits}/ms_per_1m_distances"]
    lines += [
        "",
        "Claim (DSTH papers): an ordinary PC computes 'millions of Hamming distances in just a few milliseconds'.",
        f"Measured: {rate:,.0f} Hamming distances per millisecond on this machine ({per_core:,.0f} per core): "
        f"one million {bits}-bit distances take {ms1m:.2f} ms on {m[f'hamming/{bits}/threads']} thread(s), "
        f"{m[f'hamming/{bits}/ms_per_1m_distances_one_core']:.2f} ms on one core "
        f"(the library's exact scan, top-10 search over {m[f'hamming/{bits}/database']:,} codes, "
        "selection included).",
    ]
    return "\n".join(lines)


def csv_text(rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS})
    return buf.getvalue()


def figure(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows}, key=lambda m: METHODS.index(m))
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = {"top10": "-", "top1000": "--", "radius2": ":"}
    markers = {"top10": "o", "top1000": "s", "radius2": "^"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, col, title in zip(axes, ("ms_per_query_batch", "ms_per_query_single"),
                              ("queries in one batch", "one query at a time (median)")):
        for m in methods:
            for task, _, _ in TASKS:
                pts = sorted((r["size"], r[col]) for r in rows if r["method"] == m and r["task"] == task)
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, styles[task], marker=markers[task], color=colours[m], label=f"{m} {task}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database size (codes)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time per query (ms)")
    axes[1].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with cache.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def meta(args, wall_s: float, load_before) -> dict:
    return {
        "benchmark": "search_scale",
        "profile": args.profile,
        "machine": describe(load_before),
        "versions": {
            "numpy": np.__version__,
            "numba": numba.__version__,
            "faiss": getattr(faiss, "__version__", None),
        },
        "parameters": {
            "sizes": args.sizes,
            "queries": args.queries,
            "single_queries": args.single,
            "bits": args.bits,
            "threads": args.threads,
            "methods": args.methods,
            "tasks": {name: {"k": k, "radius": r} for name, k, r in TASKS},
            "seed": args.seed,
            "data": {
                "classes": CLASSES,
                "flip_probability_range": list(FLIP_RANGE),
                "chunk": CHUNK,
                "generator": "numpy default_rng([seed, stream, chunk]); prototypes default_rng([seed, 2])",
            },
            "faiss_multihash": {
                "nhash": "ceil(bits / floor(log2 N))",
                "b": "bits // nhash",
                "nflip_topk": args.faiss_nflip,
                "nflip_radius": "r // nhash (exact)",
            },
            "hashstudy_search": {
                "AUTO_MIN_DATABASE": H.AUTO_MIN_DATABASE,
                "AUTO_BUILD_QUERIES": H.AUTO_BUILD_QUERIES,
                "AUTO_PROBE_QUERIES": H.AUTO_PROBE_QUERIES,
                "AUTO_MAX_FALLBACK": H.AUTO_MAX_FALLBACK,
                "MIH_WORK_FRACTION": H.MIH_WORK_FRACTION,
            },
        },
        "definitions": {
            "ms_per_query_batch": "wall time of one search call with all queries / queries",
            "ms_per_query_single": "median wall time of a call with one query, over the first `single_queries` queries",
            "ms_per_query_single_mean": "mean of the same (sensitive to the process being descheduled)",
            "recall_topk": "returned distances matched against the exact k smallest (multisets, tie-aware)",
            "recall_radius": "exact within-radius items returned / exact within-radius items",
            "build_s": "index construction from packed codes (hashstudy: SearchIndex, with MIH tables when used; faiss: add)",
            "bytes": "index size including the codes (hashstudy: SearchIndex.nbytes; faiss: serialized index)",
            "rss_delta_bytes": "peak resident memory during the build minus resident memory before it",
            "hamming/<bits>/ms_per_1m_distances": "hashstudy exact top-10 scan, batch, all threads: ms per query / (N / 1e6) at the largest N",
            "hamming/<bits>/distances_per_ms_per_core": "the same scan on one numba thread (up to 100 queries)",
        },
        "wall_s": wall_s,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv=None) -> int:
    args = ARGS if argv is None and ARGS is not None else parse_args(argv)
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = Path(args.out) if args.out else config.reports_dir("benchmarks", args.profile)
    res = run(args)
    text = table_text(res["rows"], res["metrics"], args.bits)
    log("")
    log(text)
    out.mkdir(parents=True, exist_ok=True)
    # merged: benchmarks/coarse_to_fine.py writes its own keys into the same file
    cache.merge_json(out / "metrics.json", res["metrics"], OWNED_PREFIXES)
    cache.write_json(out / "meta.json", meta(args, res["wall_s"], load_before))
    cache.write_text(out / "search.csv", csv_text(res["rows"]))
    cache.write_text(out / "search.txt", text + "\n")
    figure(res["rows"], out / "search_time.png")
    log(f"\nwrote {out}/metrics.json, meta.json, search.csv, search.txt, search_time.png "
        f"({res['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
