"""Benchmark: the latent-layer paper's coarse-to-fine search against an exhaustive F7 scan.

The latent-layer CNN paper (sec. III-B) retrieves in two steps: a pool of
candidates whose 48-bit codes lie within a Hamming threshold of the query's
code, re-ranked by the Euclidean distance of their F7 features (eq. 2), and
calls this a fast way to search a large corpus (1 million images, sec. IV-E).
This script measures, on the machine it runs on, for ``--queries`` queries
(default 1,000) asked in one batch, at k = 10 and k = 1000:

* ``coarse_to_fine``: :func:`hashstudy.latent.coarse_to_fine` with the
  library's default pool cap (``pool_factor``, at most ``2 k`` candidates) and
  notebook 02's initial Hamming threshold (``--radius``, default 2), searching
  a ``hamming.SearchIndex`` of the codes (the library default, ``"auto"``:
  a scan below 100,000 codes, multi-index hashing tables above; their build
  time is reported, not timed); the time split into the Hamming pool (coarse
  level) and the re-ranking (fine level);
* ``coarse_to_fine_uncapped``: the same search with ``pool_factor=None`` (the
  pool grows to whole Hamming shells up to the threshold, as before the cap);
* ``coarse_to_fine_scan`` (where the index uses MIH): the capped search
  scanning every code for the pool instead;
* ``f7_linear_scan``: the fastest exact Euclidean ranking of *all* F7
  features this script knows, the faster of

  ``blas``   squared distances ``|x|^2 - 2 q.x`` by BLAS matrix products in
             batches of queries (``|q|^2`` is the same for a whole row), the
             ``k`` smallest by ``argpartition`` and a sort;
  ``faiss``  faiss ``IndexFlatL2`` (blocked BLAS and heaps; the copy of the
             features into the index is reported as ``build_s``, not timed);

* precision@k of each ranking (same label as the query), the mean overlap
  ``|C2F n scan| / k`` of the coarse-to-fine and linear-scan result lists,
  the pool sizes, radii and the number of fine distances computed.

Two databases, 48-bit codes (``--bits``):

``cifar10``
    The CIFAR-10 setting of notebook 02 at profile ``quick``: the latent-layer
    network on frozen backbone features, trained on the 50,000 training
    images (loaded from ``<cache>/models`` when notebook 02 has trained it),
    the 1,000 queries of its ``test1k-train`` split and the training split as
    database. The configuration is read from the committed
    ``reports/02_latent_layer_cnn/quick/meta.json`` (defaults: the notebook's
    quick values) and run through :func:`hashstudy.latent.experiment`, so the
    coarse-to-fine precisions of the notebook's metrics, recomputed with the
    library's current defaults, are compared with the committed ones.
``synthetic1m``
    1,000,000 synthetic items (``--synthetic-size``) with the structure of
    learned features and codes: ``--classes`` (100) classes of 10 modes each;
    an item's 512-d F7 vector is ``ReLU(mode + s * noise)`` with ``s`` drawn
    per item from 0.2..0.45, and with probability 0.1 it is drawn from a mode
    of a random class (a confusable item); its code is the sign of a random
    projection (within the span of the class prototypes, like a trained hash
    layer) of the centred features plus Gaussian noise (0.1). About a quarter
    of the F7 entries are non-zero (CIFAR-10: 17 %). Generated in seeded
    chunks of 65,536 items and kept under ``<cache>/benchmarks``; the
    features (2 GiB of float32) are read through a memory map.

``--smoke`` runs tiny synthetic stand-ins for both (5,000 and 20,000 items,
50 queries; no dataset or training needed) under profile ``smoke``.

Timing: every search runs ``--repeats`` times (default 3) and the median
wall time is reported; ms per query = wall time of the batch / queries. On a
database of more than 100,000 items each exhaustive scan runs once, first on
``--scan-trial`` queries (default 100), and the faster of the two then on all
queries (the slower one's row reports its trial). The kernels are compiled
(or loaded from numba's cache) before any timing, and the scans' set-up
(feature norms, the faiss index) reads every feature before the first
search, so no search pays for page faults of the memory map.

Outputs go to ``--out`` (default ``reports/benchmarks/<profile>/`` under
``HASHSTUDY_REPORTS``): the keys ``cifar10/latent/<bits>/...`` and
``synthetic1m/latent/<bits>/...`` merged into ``metrics.json``
(:func:`hashstudy.cache.merge_json`: the keys of ``search_scale.py`` in the
same file stay), and ``coarse_to_fine.csv``, ``coarse_to_fine.txt``,
``coarse_to_fine_meta.json`` (machine, load average before and after,
parameters) and ``coarse_to_fine_time.png``. Headline keys (k = 1000, the
harder case): ``<db>/latent/<bits>/coarse_to_fine/ms_per_query`` and
``<db>/latent/<bits>/f7_linear_scan/ms_per_query``; k = 10 under
``.../coarse_to_fine/k10/...``.

Run with ``python benchmarks/coarse_to_fine.py`` or ``make benchmark-c2f``.
Timings are only meaningful on an otherwise idle machine; the meta file
records the load average before and after the run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from machine import all_cores, describe  # benchmarks/machine.py

# the metrics.json keys this script writes (search_scale.py and encoding.py own others)
OWNED_PREFIXES = ("cifar10/latent/", "synthetic1m/latent/")
KS = (10, 1000)
SYNTHETIC_SIZE = 1_000_000
SMOKE_SIZES = {"cifar10": 5_000, "synthetic1m": 20_000}
BIG = 100_000  # the linear scan of a larger database is timed once
CHUNK = 1 << 16  # synthetic items per seeded chunk
SYNTH = {  # the synthetic generator; part of the cache key
    "version": 1,
    "modes_per_class": 10,
    "prototype_mean": -0.8,  # prototype entries ~ N(-0.8, 1): sparse after the ReLU
    "mode_spread": 0.3,
    "item_noise": (0.2, 0.45),
    "confusion": 0.1,
    "code_noise": 0.1,
    "calibration": CHUNK,  # items of a separate stream that fix the centring mean
}
NOTEBOOK_QUICK = {  # notebook 02, profile quick, CIFAR-10 part (used when meta.json is absent)
    "bits": 48, "seed": 0, "backbone": "efficientnet_lite0", "fc7_dim": 512, "dropout": 0.2,
    "code_threshold": 0.5, "pool_radius": 2, "input_size": 128, "split": {},
    "cifar10": {"epochs": 30, "batch_size": 256, "lr": 1e-3}, "threads": 1,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, help="number of queries (default 1000; smoke 50)")
    p.add_argument("--bits", type=int, default=48, help="code length (default 48, the paper's)")
    p.add_argument("--radius", type=int,
                   help="initial Hamming threshold of the pool (default: notebook 02's, 2)")
    p.add_argument("--pool-factor", type=float,
                   help="pool cap as a multiple of k (default: the library's, "
                        "hashstudy.latent.POOL_FACTOR)")
    p.add_argument("--synthetic-size", type=int,
                   help="items of the synthetic database (default 1000000; smoke 20000)")
    p.add_argument("--classes", type=int, default=100, help="synthetic classes (default 100)")
    p.add_argument("--dim", type=int, default=512, help="synthetic F7 dimension (default 512)")
    p.add_argument("--databases", nargs="+", choices=("cifar10", "synthetic1m"),
                   default=["cifar10", "synthetic1m"], help="databases to run (default both)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per search (default 3)")
    p.add_argument("--scan-trial", type=int, default=100,
                   help="on a database of more than 100,000 items each exhaustive scan is "
                        "tried on this many queries, and the faster runs on all (default 100)")
    p.add_argument("--threads", type=int, default=all_cores(),
                   help="threads for numba, BLAS and faiss (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic stand-ins, for tests")
    p.add_argument("--out", help="output folder (default reports/benchmarks/<profile>/)")
    args = p.parse_args(argv)
    if args.smoke and args.synthetic_size:
        p.error("--smoke fixes the sizes; drop --synthetic-size")
    custom = (args.synthetic_size not in (None, SYNTHETIC_SIZE) or args.queries not in (None, 1000)
              or args.bits != 48 or args.classes != 100 or args.dim != 512
              or args.radius is not None or args.pool_factor is not None
              or sorted(args.databases) != ["cifar10", "synthetic1m"])
    args.profile = "smoke" if args.smoke else ("custom" if custom else "quick")
    args.synthetic_size = (SMOKE_SIZES["synthetic1m"] if args.smoke
                           else args.synthetic_size or SYNTHETIC_SIZE)
    args.queries = args.queries or (50 if args.smoke else 1000)
    if min(args.synthetic_size, args.queries, args.threads, args.bits, args.repeats,
           args.classes, args.dim, args.scan_trial) < 1:
        p.error("sizes, queries, threads, bits, repeats, scan trial, classes and dim must be "
                "positive")
    if args.radius is not None and args.radius < 0:
        p.error("--radius must be >= 0")
    if args.pool_factor is not None and not args.pool_factor >= 1:
        p.error("--pool-factor must be >= 1")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numba, BLAS and faiss load
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    pool = int(os.environ.get("NUMBA_NUM_THREADS") or 0)
    os.environ["NUMBA_NUM_THREADS"] = str(max(ARGS.threads, pool))

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from hashstudy import cache, config, latent  # noqa: E402
from hashstudy import hamming as H  # noqa: E402

try:
    import faiss
except ImportError:  # the BLAS scan still runs
    faiss = None


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# data: a database is a dict with codes (PackedCodes), F7 features, labels
# ---------------------------------------------------------------------------


class Synthetic:
    """The synthetic generator: class prototypes, modes and the code projection."""

    def __init__(self, classes: int, dim: int, bits: int, seed: int):
        self.classes, self.dim, self.bits, self.seed = classes, dim, bits, seed
        g = np.random.default_rng([seed, 1_000_003])
        m = SYNTH["modes_per_class"]
        proto = g.standard_normal((classes, dim), dtype=np.float32) + SYNTH["prototype_mean"]
        self.modes = proto[:, None, :] + SYNTH["mode_spread"] * g.standard_normal(
            (classes, m, dim), dtype=np.float32)
        centred = proto - proto.mean(axis=0)
        centred /= np.linalg.norm(centred, axis=1, keepdims=True)
        w = centred.T @ g.standard_normal((classes, bits), dtype=np.float32)
        self.w = (w / np.linalg.norm(w, axis=0)).astype(np.float32)  # unit columns
        self.mean = self._features(SYNTH["calibration"], stream=2, chunk=0)[0].mean(axis=0)

    def _features(self, n: int, stream: int, chunk: int):
        rng = np.random.default_rng([self.seed, stream, chunk])
        labels = rng.integers(0, self.classes, n)
        mode = rng.integers(0, SYNTH["modes_per_class"], n)
        source = np.where(rng.random(n) < SYNTH["confusion"], rng.integers(0, self.classes, n),
                          labels)
        lo, hi = SYNTH["item_noise"]
        scale = rng.uniform(lo, hi, n).astype(np.float32)[:, None]
        f = self.modes[source, mode]
        f += scale * rng.standard_normal((n, self.dim), dtype=np.float32)
        np.maximum(f, 0, out=f)
        return f, labels, rng

    def chunk(self, n: int, stream: int, chunk: int):
        """Features (n, dim) float32, labels (n,) and {0,1} codes (n, bits) of one chunk."""
        f, labels, rng = self._features(n, stream, chunk)
        proj = (f - self.mean) @ self.w
        proj += SYNTH["code_noise"] * rng.standard_normal(proj.shape, dtype=np.float32)
        return f, labels, (proj > 0).astype(np.uint8)


def synthetic_database(n: int, n_queries: int, args) -> dict:
    """The synthetic database, generated once into ``<cache>/benchmarks`` (memory-mapped)."""
    gen = Synthetic(args.classes, args.dim, args.bits, args.seed)
    key = cache.key({**SYNTH, "n": n, "classes": args.classes, "dim": args.dim,
                     "bits": args.bits, "seed": args.seed, "chunk": CHUNK})
    folder = config.cache_dir("benchmarks")
    feat_path = folder / f"synthetic-{n}-{key}-features.npy"
    rest_path = folder / f"synthetic-{n}-{key}.npz"
    with cache.locked(feat_path):
        try:
            rest = cache.load_arrays(rest_path)
            feats = np.load(feat_path, mmap_mode="r")
            if feats.shape != (n, args.dim) or feats.dtype != np.float32:
                raise cache.CacheError(f"{feat_path} holds {feats.dtype} {feats.shape}")
            log(f"synthetic database: {n:,} items from the cache ({feat_path.name})")
        except (OSError, ValueError, cache.CacheError):
            t0 = time.perf_counter()
            words = np.empty((n, -(-args.bits // 64)), dtype=np.uint64)
            labels = np.empty(n, dtype=np.int64)
            with cache.atomic_path(feat_path) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                shape=(n, args.dim))
                for c, lo in enumerate(range(0, n, CHUNK)):
                    size = min(CHUNK, n - lo)
                    f, lab, codes = gen.chunk(size, stream=0, chunk=c)
                    out[lo:lo + size], labels[lo:lo + size] = f, lab
                    words[lo:lo + size] = H.pack(codes).words
                out.flush()
                del out
            cache.save_arrays(rest_path, words=words, labels=labels)
            rest = {"words": words, "labels": labels}
            feats = np.load(feat_path, mmap_mode="r")
            log(f"synthetic database: {n:,} items generated in {time.perf_counter() - t0:.0f} s "
                f"into {feat_path}")
    qf, ql, qc = gen.chunk(n_queries, stream=1, chunk=0)
    return {"name": "synthetic1m", "bits": args.bits,
            "codes": H.PackedCodes(rest["words"], args.bits),
            "features": np.asarray(feats), "labels": rest["labels"],
            "query_codes": H.pack(qc), "query_features": qf, "query_labels": ql,
            "source": f"synthetic: {n:,} items, {args.classes} classes, memory-mapped {feat_path}"}


def synthetic_stand_in(n: int, n_queries: int, args, name: str) -> dict:
    """A small in-memory synthetic database (``--smoke``)."""
    gen = Synthetic(min(args.classes, 10), args.dim, args.bits, args.seed)
    f, lab, codes = gen.chunk(n, stream=0, chunk=0)
    qf, ql, qc = gen.chunk(n_queries, stream=1, chunk=0)
    return {"name": name, "bits": args.bits, "codes": H.pack(codes), "features": f, "labels": lab,
            "query_codes": H.pack(qc), "query_features": qf, "query_labels": ql,
            "source": f"synthetic stand-in ({n:,} items; smoke)"}


def notebook_setting() -> tuple[dict, str]:
    """Notebook 02's quick CIFAR-10 configuration, from its committed meta.json if present."""
    path = config.repo_root() / "reports" / "02_latent_layer_cnn" / "quick" / "meta.json"
    if not path.exists():
        return dict(NOTEBOOK_QUICK), "defaults in benchmarks/coarse_to_fine.py"
    p = json.loads(path.read_text())["parameters"]
    sizes = p["sizes"]
    return ({"bits": p["bits"], "seed": p["seed"], "backbone": p["backbone"],
             "fc7_dim": p["fc7_dim"], "dropout": p["dropout"],
             "code_threshold": p["code_threshold"], "pool_radius": p["pool_radius"],
             "input_size": sizes["input_size"], "split": sizes["split"],
             "cifar10": sizes["cifar10"], "threads": p.get("threads", 1)},
            str(path.relative_to(config.repo_root())))


def cifar10_database(args, setting: dict, pool_factor: float) -> dict:
    """The CIFAR-10 setting of notebook 02 through ``latent.experiment`` (cached model)."""
    from hashstudy import data, protocols, training
    from hashstudy import features as backbones

    if not (data.available("cifar10", "train") and data.available("cifar10", "test")):
        raise FileNotFoundError(f"no local copy of cifar10 under {config.data_root()}")
    s = setting
    split = protocols.get_split("cifar10", "test1k-train", s["seed"], **s["split"])
    parts = [backbones.dataset_features("cifar10", sp, s["backbone"], s["input_size"],
                                        progress=False) for sp in ("train", "test")]
    X = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    hasher = latent.LatentHasher(s["bits"], trunk="features", fc7_dim=s["fc7_dim"],
                                 dropout=s["dropout"], threshold=s["code_threshold"],
                                 seed=s["seed"], progress=False, **s["cifar10"])
    # trained weights are cached per torch thread count: use the notebook's
    import torch

    before = torch.get_num_threads()
    training.set_threads(s["threads"])
    try:
        res = latent.experiment(hasher, X, labels, split, pool_radius=s["pool_radius"],
                                max_k=1000, ks=EXPERIMENT_KS, pool_factor=pool_factor)
        fq = hasher.embed(X[split.query])[0]
        fd = hasher.embed(X[split.database])[0]
    finally:
        torch.set_num_threads(before)
    return {"name": "cifar10", "bits": s["bits"], "codes": H.pack(res.database_codes),
            "features": np.ascontiguousarray(fd, dtype=np.float32),
            "labels": labels[split.database],
            "query_codes": H.pack(res.query_codes),
            "query_features": np.ascontiguousarray(fq, dtype=np.float32),
            "query_labels": labels[split.query], "experiment": res.metrics,
            "model_loaded": bool(hasher.loaded_),
            "source": f"CIFAR-10 {split.name}, seed {s['seed']}: latent layer on {s['backbone']} "
                      f"features ({s['input_size']} px), {hasher.describe()}"}


# ---------------------------------------------------------------------------
# methods: each returns (indices (Q, k), info dict)
# ---------------------------------------------------------------------------


def run_c2f(db, codes, k: int, radius: int, pool_factor):
    """``codes``: the database codes, or a ``hamming.SearchIndex`` of them."""
    res = latent.coarse_to_fine(db["query_codes"], codes, db["query_features"],
                                db["features"], k=k, radius=radius, pool_factor=pool_factor)
    return res.indices, {"pool_s": res.pool_seconds, "rerank_s": res.rerank_seconds,
                         "mean_pool_size": float(res.pool_size.mean()),
                         "max_pool_size": int(res.pool_size.max()),
                         "mean_scored": float(res.scored.mean()),
                         "mean_pool_radius": float(res.pool_radius.mean())}


class BlasScan:
    """Exact Euclidean top-k by BLAS products ``|x|^2 - 2 q.x`` in batches of queries."""

    name = "blas"

    def __init__(self, db):
        t0 = time.perf_counter()
        self.x = db["features"]
        self.norms = np.einsum("ij,ij->i", self.x, self.x)  # |x|^2, once per database
        self.build_s = time.perf_counter() - t0

    def search(self, q: np.ndarray, k: int):
        n = len(self.x)
        batch = max(1, min(len(q), int(2**27 // max(n, 1))))  # <= 512 MiB of distances
        out = np.empty((len(q), k), dtype=np.int64)
        for lo in range(0, len(q), batch):
            d = q[lo:lo + batch] @ self.x.T
            d *= -2
            d += self.norms
            part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else \
                np.tile(np.arange(n), (len(d), 1))
            vals = np.take_along_axis(d, part, axis=1)
            order = np.argsort(vals, axis=1, kind="stable")
            out[lo:lo + batch] = np.take_along_axis(part, order, axis=1)
        return out


class FaissScan:
    """faiss ``IndexFlatL2`` (exact)."""

    name = "faiss"

    def __init__(self, db):
        t0 = time.perf_counter()
        self.index = faiss.IndexFlatL2(db["features"].shape[1])
        self.index.add(np.ascontiguousarray(db["features"], dtype=np.float32))
        self.build_s = time.perf_counter() - t0

    def search(self, q: np.ndarray, k: int):
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)[1].astype(np.int64)


def precision(db, idx) -> float:
    """Mean precision@k of the result lists of the first ``len(idx)`` queries."""
    return float(latent.precision_at_k_from_ranking(db["labels"][idx],
                                                    db["query_labels"][:len(idx)], idx.shape[1]))


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of shared items between the rows of two (Q, k) result lists."""
    k = a.shape[1]
    shift = int(max(a.max(), b.max())) + 1
    rows = np.arange(len(a))[:, None] * shift
    both = np.intersect1d((a + rows).ravel(), (b + rows).ravel(), assume_unique=True)
    return float(len(both) / a.size) if k else 1.0


def timed(fn, repeats: int):
    """(result of the median run, its info, its seconds): ``fn() -> (result, info)``."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out, info = fn()
        runs.append((time.perf_counter() - t0, out, info))
    runs.sort(key=lambda r: r[0])
    s, out, info = runs[len(runs) // 2]
    return out, info, s, [r[0] for r in runs]


def warm_up(bits: int, dim: int) -> None:
    """Compile (or load from numba's disk cache) the coarse-to-fine kernels; start faiss.

    Both the scan and the MIH index path, with writable and read-only
    (memory-mapped) features: each is a different numba signature.
    """
    rng = np.random.default_rng(0)
    codes = H.pack(rng.integers(0, 2, (500, bits)))
    feats = rng.random((500, dim), dtype=np.float32)
    frozen = feats.copy()
    frozen.setflags(write=False)
    for db in (codes, H.SearchIndex(codes, method="mih")):
        for f in (feats, frozen):
            for factor in (latent.POOL_FACTOR, None, 1.0):
                latent.coarse_to_fine(codes[:20], db, f[:20], f, k=30, radius=2,
                                      pool_factor=factor)
    if faiss is not None:
        FaissScan({"features": feats}).search(feats[:20], 10)


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


def bench_database(db, args, radius: int, factor: float, metrics: dict, rows: list) -> dict:
    """Time every method at each k; add rows and metric keys; return {k: {method: indices}}."""
    name, n, q = db["name"], len(db["codes"]), len(db["query_codes"])
    prefix = f"{name}/latent/{db['bits']}/"
    big = n > BIG
    t0 = time.perf_counter()
    index = H.SearchIndex(db["codes"])  # the library default, "auto": MIH from 100,000 codes
    if index.uses_mih:
        index.build()
    index_s = time.perf_counter() - t0
    searches = [("coarse_to_fine", index, factor), ("coarse_to_fine_uncapped", index, None)]
    if index.uses_mih:  # the same search scanning every code instead of the MIH tables
        searches.append(("coarse_to_fine_scan", db["codes"], factor))
    scans = [BlasScan(db)] + ([FaissScan(db)] if faiss is not None else [])
    trial = min(q, args.scan_trial) if big and len(scans) > 1 else q
    found = {}
    for k in KS:
        k_eff = min(k, n)
        sub = "" if k == max(KS) else f"k{k}/"
        results, mine = {}, []
        found[k] = results
        for method, codes, pf in searches:
            idx, info, s, all_s = timed(
                lambda c=codes, kk=k_eff, pf=pf: run_c2f(db, c, kk, radius, pf), args.repeats)
            results[method] = idx
            mine.append({"database": name, "size": n, "k": k, "method": method, "queries": q,
                         "ms_per_query": s * 1e3 / q, "pool_ms_per_query": info["pool_s"] * 1e3 / q,
                         "rerank_ms_per_query": info["rerank_s"] * 1e3 / q,
                         "runs_ms_per_query": " ".join(f"{t * 1e3 / q:.4f}" for t in all_s),
                         "precision": precision(db, idx), **{m: info[m] for m in (
                             "mean_pool_size", "max_pool_size", "mean_scored",
                             "mean_pool_radius")},
                         "pool_factor": pf, "radius": radius,
                         "coarse": "mih index" if codes is index and index.uses_mih else "scan",
                         "build_s": index_s if codes is index else None})
        if "coarse_to_fine_scan" in results:  # the MIH pools must be the scan's
            same = bool(np.array_equal(results["coarse_to_fine_scan"], results["coarse_to_fine"]))
            metrics[prefix + "coarse_to_fine_scan/" + sub + "same_results_as_index"] = float(same)
            if not same:
                log(f"WARNING: [{name} k={k}] the search through the index differs from the scan")
        # the exhaustive scans: on a big database each is tried on `trial` queries and the
        # faster one runs on all of them
        tried = {}
        for scan in scans:
            idx, _, s, all_s = timed(
                lambda sc=scan, x=db["query_features"][:trial], kk=k_eff: (sc.search(x, kk), {}),
                1 if big else args.repeats)
            tried[scan.name] = (idx, s, all_s)
        best_name = min(tried, key=lambda m: tried[m][1])
        if trial < q:
            best_scan = next(sc for sc in scans if sc.name == best_name)
            idx, _, s, all_s = timed(
                lambda sc=best_scan, kk=k_eff: (sc.search(db["query_features"], kk), {}), 1)
            tried[best_name] = (idx, s, all_s)
        for scan in scans:
            idx, s, all_s = tried[scan.name]
            nq = len(idx)
            results[scan.name] = idx
            mine.append({"database": name, "size": n, "k": k,
                         "method": f"f7_linear_scan_{scan.name}",
                         "queries": nq, "ms_per_query": s * 1e3 / nq,
                         "runs_ms_per_query": " ".join(f"{t * 1e3 / nq:.4f}" for t in all_s),
                         "precision": precision(db, idx), "build_s": scan.build_s,
                         "best_scan": best_name})
        best = next(r for r in mine if r["method"] == f"f7_linear_scan_{best_name}")
        for r in mine:
            if r["method"].startswith("coarse_to_fine"):
                r["overlap_with_scan"] = overlap(results[r["method"]], results[best_name])
                r["speedup_vs_scan"] = best["ms_per_query"] / r["ms_per_query"]
                r["best_scan"] = best_name
        rows.extend(mine)
        for r in mine:
            base = prefix + r["method"] + "/" + sub
            metrics[base + "ms_per_query"] = r["ms_per_query"]
            metrics[base + f"precision@{k}"] = r["precision"]
            for key in ("pool_ms_per_query", "rerank_ms_per_query", "mean_pool_size",
                        "mean_scored", "mean_pool_radius", "speedup_vs_scan"):
                if key in r:
                    metrics[base + key] = r[key]
            if "overlap_with_scan" in r:
                metrics[base + f"overlap@{k}"] = r["overlap_with_scan"]
        metrics[prefix + "f7_linear_scan/" + sub + "ms_per_query"] = best["ms_per_query"]
        metrics[prefix + "f7_linear_scan/" + sub + f"precision@{k}"] = best["precision"]
        for r in mine:
            log(f"[{name} k={k}] {r['method']}: {r['ms_per_query']:.4f} ms/query"
                + (f" (pool {r['pool_ms_per_query']:.4f} + re-rank {r['rerank_ms_per_query']:.4f}),"
                   f" pool {r['mean_pool_size']:.0f} (scored {r['mean_scored']:.0f}), overlap "
                   f"{r['overlap_with_scan']:.4f}" if "pool_ms_per_query" in r else
                   f" ({r['queries']} queries)")
                + f", precision@{k} {r['precision']:.4f}")
    metrics[prefix + "database"] = n
    metrics[prefix + "queries"] = q
    metrics[prefix + "coarse_to_fine/index_build_s"] = index_s
    return found


def run(args) -> dict:
    numba.set_num_threads(args.threads)
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    else:
        log("faiss is not installed (pip install faiss-cpu): the linear scan is BLAS only")
    factor = latent.POOL_FACTOR if args.pool_factor is None else args.pool_factor
    setting, setting_source = notebook_setting()
    radius = setting["pool_radius"] if args.radius is None else args.radius
    log(f"coarse-to-fine vs F7 linear scan: {args.bits}-bit codes, {args.queries:,} queries, "
        f"k = {', '.join(map(str, KS))}, pool cap {factor:g} k, initial radius {radius}, "
        f"{args.threads} thread(s)"
        + (f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""))
    t0 = time.perf_counter()
    warm_up(args.bits, args.dim)
    log(f"warm-up (numba compile or cache load): {time.perf_counter() - t0:.1f} s")
    metrics: dict = {}
    rows: list = []
    info: dict = {"setting_source": setting_source, "setting": setting, "databases": {}}
    for name in args.databases:
        t1 = time.perf_counter()
        if args.smoke:
            db = synthetic_stand_in(SMOKE_SIZES[name] if name == "cifar10" else args.synthetic_size,
                                    args.queries, args, name)
        elif name == "cifar10":
            if args.queries != 1000:
                log("cifar10: the notebook's split has 1,000 queries; --queries applies to "
                    "synthetic1m only")
            try:
                db = cifar10_database(args, setting, factor)
            except FileNotFoundError as exc:
                log(f"cifar10 skipped: {exc}")
                info["databases"][name] = {"skipped": str(exc)}
                continue
        else:
            db = synthetic_database(args.synthetic_size, args.queries, args)
        load_s = time.perf_counter() - t1
        log(f"{name}: {db['source']} ({load_s:.0f} s)")
        info["databases"][name] = {"source": db["source"], "size": len(db["codes"]),
                                   "queries": len(db["query_codes"]), "load_s": load_s,
                                   "model_loaded": db.get("model_loaded")}
        found = bench_database(db, args, radius, factor, metrics, rows)
        if "experiment" in db:
            uncapped = found[max(KS)]["coarse_to_fine_uncapped"]
            info["databases"][name]["experiment"] = experiment_check(
                db, uncapped, db["bits"], metrics)
        del db
    return {"metrics": metrics, "rows": rows, "info": info, "factor": factor, "radius": radius,
            "wall_s": time.perf_counter() - t0}


EXPERIMENT_KS = (1, 10, 100, 500, 1000)


def experiment_check(db: dict, uncapped: np.ndarray, bits: int, metrics: dict) -> dict:
    """latent.experiment's coarse-to-fine precisions (default cap) vs uncapped vs committed.

    ``uncapped``: the uncapped search's results at k = 1000 on the same
    codes and features. The committed values are notebook 02's quick report;
    ``same_model_as_committed`` says whether its codes are this run's (the
    Hamming-ranking metrics and the test accuracy are all equal), so that the
    comparison with it isolates the cap.
    """
    path = config.repo_root() / "reports" / "02_latent_layer_cnn" / "quick" / "metrics.json"
    committed = json.loads(path.read_text()) if path.exists() else {}
    exp, base = db["experiment"], f"cifar10/latent/{bits}/"
    free = latent.precision_at_k_from_ranking(db["labels"][uncapped], db["query_labels"],
                                              EXPERIMENT_KS)
    rows = {}
    for k, p_free in zip(EXPERIMENT_KS, free):
        key = f"coarse_to_fine/precision@{k}"
        rows[key] = {"capped": exp[key], "uncapped": float(p_free),
                     "committed": committed.get(base + key)}
        metrics[base + "experiment/" + key] = exp[key]
        metrics[base + "experiment/coarse_to_fine_uncapped/" + f"precision@{k}"] = float(p_free)
    same = bool(committed) and all(
        committed.get(base + key) == exp[key]
        for key in ("test_accuracy", "precision@1", "precision@1000", "map@1000"))
    metrics[base + "experiment/same_model_as_committed"] = float(same)
    for key in ("coarse_to_fine/mean_pool_size", "coarse_to_fine/mean_pool_radius"):
        metrics[base + "experiment/" + key] = exp[key]
        rows[key] = {"capped": exp[key], "uncapped": None, "committed": committed.get(base + key)}
    return {"same_model_as_committed": same, "rows": rows}


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------

COLUMNS = ("database", "size", "k", "method", "queries", "coarse", "ms_per_query",
           "pool_ms_per_query", "rerank_ms_per_query", "runs_ms_per_query", "speedup_vs_scan",
           "precision", "overlap_with_scan", "mean_pool_size", "max_pool_size", "mean_scored",
           "mean_pool_radius", "pool_factor", "radius", "best_scan", "build_s")


def table_text(rows, info: dict, factor: float) -> str:
    head = (f"{'database':<12} {'k':>5}  {'method':<24} {'pool':>8} {'re-rank':>8} {'total':>8}"
            f" {'x scan':>7} {'prec@k':>7} {'overlap':>7} {'pool size':>9} {'scored':>7}")
    lines = [("time in ms per query (batch of all queries); x scan: times faster than the best "
              "exhaustive F7 scan"), head, "-" * len(head)]

    def num(r, key, fmt, width):
        return f"{r[key]:>{width}{fmt}}" if r.get(key) is not None else " " * (width - 1) + "-"

    for r in rows:
        note = ""
        if r["method"].startswith("f7_linear_scan_"):
            note = "  <- best scan" if r["method"].endswith("_" + r["best_scan"]) else ""
            if r["queries"] < max(x["queries"] for x in rows if x["database"] == r["database"]):
                note += f"  (tried on {r['queries']} queries)"
        lines.append(
            f"{r['database']:<12} {r['k']:>5}  {r['method']:<24}"
            f" {num(r, 'pool_ms_per_query', '.4f', 8)} {num(r, 'rerank_ms_per_query', '.4f', 8)}"
            f" {r['ms_per_query']:>8.4f} {num(r, 'speedup_vs_scan', '.1f', 7)}"
            f" {r['precision']:>7.4f} {num(r, 'overlap_with_scan', '.4f', 7)}"
            f" {num(r, 'mean_pool_size', '.0f', 9)} {num(r, 'mean_scored', '.0f', 7)}{note}")
    lines.append("")
    for name in ("cifar10", "synthetic1m"):
        mine = [r for r in rows if r["database"] == name and r["method"] == "coarse_to_fine"]
        for r in mine:
            lines.append(verdict(r, factor))
    exp = info["databases"].get("cifar10", {}).get("experiment")
    if exp:
        lines += ["", ("latent.experiment on notebook 02's CIFAR-10 setting (1,000 queries, "
                       "50,000 images, "
                       f"k = 1000): coarse-to-fine with the default cap ({factor:g} k) vs uncapped "
                       "vs notebook 02's committed quick report"
                       + ("" if exp["same_model_as_committed"] else
                          " (a different model: its features or weights differ from the "
                          "committed run's, so only capped vs uncapped isolates the cap)") + ":")]
        for key, v in exp["rows"].items():
            cells = [f"{v[c]:.6f}" if v[c] is not None else "-" for c in ("capped", "uncapped",
                                                                         "committed")]
            diff = (f"  capped - uncapped {v['capped'] - v['uncapped']:+.6f}"
                    if v["uncapped"] is not None else "")
            lines.append(f"  {key:<32} capped {cells[0]:>12}  uncapped {cells[1]:>12}  "
                         f"committed {cells[2]:>12}{diff}")
    return "\n".join(lines)


def verdict(r: dict, factor: float) -> str:
    faster = r["speedup_vs_scan"]
    what = (f"{faster:.1f} times faster than" if faster >= 1
            else f"{1 / faster:.1f} times slower than")
    return (f"{r['database']} ({r['size']:,} items), k = {r['k']}: the coarse-to-fine search "
            f"(pool cap {factor:g} k) takes {r['ms_per_query']:.3f} ms per query, {what} the best "
            f"exhaustive F7 scan ({r['best_scan']}, {r['ms_per_query'] * faster:.3f} ms); "
            f"{r['overlap_with_scan']:.1%} of its results are the scan's, precision@{r['k']} "
            f"{r['precision']:.4f}.")


def csv_text(rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS})
    return buf.getvalue()


C2F_LABELS = {"coarse_to_fine": "C2F", "coarse_to_fine_uncapped": "C2F\nuncapped",
              "coarse_to_fine_scan": "C2F\nno index"}
C2F_HATCH = {"coarse_to_fine_uncapped": "//", "coarse_to_fine_scan": ".."}


def figure(rows, path: Path) -> None:
    """Top: total ms per query of every search and the best scan (log scale).
    Bottom: the coarse-to-fine searches split into Hamming pool and re-ranking."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("cifar10", "synthetic1m") if any(r["database"] == n for r in rows)]
    fig, axes = plt.subplots(2, len(names), figsize=(6.4 * len(names), 7.6), squeeze=False,
                             gridspec_kw={"height_ratios": [1.0, 1.0]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, name in enumerate(names):
        mine = [r for r in rows if r["database"] == name]
        methods = [m for m in C2F_LABELS if any(r["method"] == m for r in mine)]
        top, bottom = axes[0][col], axes[1][col]
        ticks_top, ticks_bottom, x, xb = [], [], 0.0, 0.0
        for k in KS:
            for method in methods:
                r = next(r for r in mine if r["k"] == k and r["method"] == method)
                top.bar(x, r["ms_per_query"], color=colours[0], hatch=C2F_HATCH.get(method),
                        label="coarse-to-fine" if (k, method) == (KS[0], methods[0]) else None)
                top.text(x, r["ms_per_query"],
                         f"{r['ms_per_query']:.3g}\nx{r['speedup_vs_scan']:.1f}",
                         ha="center", va="bottom", fontsize=6.5)
                ticks_top.append((x, f"{C2F_LABELS[method]}\nk={k}"))
                bottom.bar(xb, r["pool_ms_per_query"], color=colours[1],
                           hatch=C2F_HATCH.get(method),
                           label="Hamming pool" if (k, method) == (KS[0], methods[0]) else None)
                bottom.bar(xb, r["rerank_ms_per_query"], bottom=r["pool_ms_per_query"],
                           color=colours[3], hatch=C2F_HATCH.get(method),
                           label="F7 re-ranking" if (k, method) == (KS[0], methods[0]) else None)
                rest = r["ms_per_query"] - r["pool_ms_per_query"] - r["rerank_ms_per_query"]
                if rest > 0:
                    bottom.bar(xb, rest, bottom=r["pool_ms_per_query"] + r["rerank_ms_per_query"],
                               color="0.75", label="other (checks, copies)" if (
                                   k, method) == (KS[0], methods[0]) else None)
                ticks_bottom.append((xb, f"{C2F_LABELS[method]}\nk={k}"))
                x += 1.0
                xb += 1.0
            scan = min((r for r in mine if r["k"] == k and r["method"].startswith("f7_")),
                       key=lambda r: r["ms_per_query"])
            top.bar(x, scan["ms_per_query"], color=colours[2],
                    label="exhaustive F7 scan (best)" if k == KS[0] else None)
            top.text(x, scan["ms_per_query"], f"{scan['ms_per_query']:.3g}", ha="center",
                     va="bottom", fontsize=6.5)
            ticks_top.append((x, f"scan\n({scan['best_scan']})\nk={k}"))
            x += 1.6
            xb += 0.6
        top.set_yscale("log")
        top.set_ylim(top=top.get_ylim()[1] * 3)
        top.set_title(f"{name} ({mine[0]['size']:,} items, {mine[0]['queries']:,} queries): "
                      "total time, log scale", fontsize=8.5)
        bottom.set_title(f"{name}: coarse-to-fine split into its two levels", fontsize=8.5)
        for ax, ticks in ((top, ticks_top), (bottom, ticks_bottom)):
            ax.set_xticks([p for p, _ in ticks], [t for _, t in ticks], fontsize=7)
            ax.set_ylabel("ms per query (batch)")
            ax.grid(axis="y", alpha=0.3, which="both")
            ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle("Coarse-to-fine search (Hamming pool, then F7 re-ranking) vs exhaustive F7 scan;"
                 " x: times faster than the scan\n//: pool uncapped, ..: pool by scanning every "
                 "code instead of the index", fontsize=9)
    fig.tight_layout()
    with cache.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def meta(args, res: dict, load_before) -> dict:
    return {
        "benchmark": "coarse_to_fine",
        "profile": args.profile,
        "machine": describe(load_before),
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "faiss": getattr(faiss, "__version__", None)},
        "parameters": {
            "queries": args.queries,
            "bits": args.bits,
            "ks": list(KS),
            "radius": res["radius"],
            "pool_factor": res["factor"],
            "threads": args.threads,
            "repeats": args.repeats,
            "scan_trial_queries_over_100k": args.scan_trial,
            "databases": args.databases,
            "synthetic": {**SYNTH, "size": args.synthetic_size, "classes": args.classes,
                          "dim": args.dim, "seed": args.seed, "chunk": CHUNK,
                          "generator": "numpy default_rng([seed, stream, chunk]); stream 0 "
                                       "database, 1 queries, 2 calibration; model "
                                       "default_rng([seed, 1000003])"},
        },
        "inputs": res["info"],
        "definitions": {
            "ms_per_query": "median wall time of one call with all queries / queries",
            "pool_ms_per_query": "coarse level inside that call (CoarseToFine.pool_seconds)",
            "rerank_ms_per_query": "fine level inside that call (CoarseToFine.rerank_seconds)",
            "f7_linear_scan": "the faster of f7_linear_scan_blas and _faiss at each k",
            "precision@k": "mean over queries of the share of the k results with the query's label",
            "overlap@k": "mean over queries of |coarse-to-fine results n scan results| / k",
            "mean_pool_size": "candidates in the pool (at most ceil(pool_factor k))",
            "mean_scored": "fine distances computed (a cut boundary shell is scored whole)",
            "speedup_vs_scan": "f7_linear_scan ms_per_query / this method's ms_per_query",
            "experiment/...": "latent.experiment's metrics on notebook 02's CIFAR-10 setting now",
        },
        "wall_s": res["wall_s"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv=None) -> int:
    args = ARGS if argv is None and ARGS is not None else parse_args(argv)
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = Path(args.out) if args.out else config.reports_dir("benchmarks", args.profile)
    res = run(args)
    text = table_text(res["rows"], res["info"], res["factor"])
    log("")
    log(text)
    out.mkdir(parents=True, exist_ok=True)
    # merged: benchmarks/search_scale.py writes its own keys into the same file
    cache.merge_json(out / "metrics.json", res["metrics"], OWNED_PREFIXES)
    cache.write_json(out / "coarse_to_fine_meta.json", meta(args, res, load_before))
    cache.write_text(out / "coarse_to_fine.csv", csv_text(res["rows"]))
    cache.write_text(out / "coarse_to_fine.txt", text + "\n")
    if res["rows"]:
        figure(res["rows"], out / "coarse_to_fine_time.png")
    log(f"\nwrote {out}/metrics.json, coarse_to_fine.csv, coarse_to_fine.txt, "
        f"coarse_to_fine_meta.json, coarse_to_fine_time.png ({res['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
