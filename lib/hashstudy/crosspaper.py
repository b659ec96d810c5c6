"""Every method of the study on one protocol: notebook 06's library.

Each paper notebook uses the protocol of its paper, so their numbers cannot be
ranked against each other. This module fits every method of the study on the
**same** split of a dataset, through one interface, at several code lengths
and seeds, and evaluates all of them with the same metrics.

The protocol (``cross`` in :mod:`hashstudy.protocols`)
    1,000 test images (100 per class) are the queries; the training split is
    the database; the hash functions train on a fixed, saved subset of the
    database (``train_per_class`` images per class). The split is drawn once
    (seed 0) and saved, so every method and seed sees the same images; the
    seeds vary only the methods' own randomness (initialisation, batch order,
    projections). It is the test-queries-against-training-set protocol of the
    latent-layer CNN and DDH papers (1,000 test queries, training images as
    database), with 100 queries per class as DDH's, and a training subset
    because several methods build an n x n graph or code matrix of their
    training images (DSTH, CNNH, STH).

Inputs
    Every method gets the representation its paper uses. *Vectors*: on
    CIFAR-10 the frozen EfficientNet-Lite0 features at 128 px (the features of
    notebooks 00, 02, 04 and 05, read from the same cache); on MNIST the pixel
    vectors in [0, 1] (the input of the MNIST baselines of notebooks 00, 01 and
    03). *Pixels*: the images themselves, for the methods that learn a
    convolutional network (conference DSTH, CNNH, the tanh autoencoder, the
    journal DSTH's SimpleNet, the latent-layer CNN on MNIST).
    :data:`METHODS` says which method takes which, and the table says it too.

Interface
    A method is a :class:`Method`: a name, the paper it comes from, whether it
    needs class labels, the input it takes and ``build(n_bits, seed, sizes,
    shape)``, which returns an object with ``fit(X, y)`` and ``encode(X)``
    (the interface of :mod:`hashstudy.baselines`). :func:`run` fits each
    (method, bits, seed), encodes queries and database, caches the codes
    (keyed by everything they depend on) and evaluates them;
    :func:`aggregate` gives mean and standard deviation over seeds, and
    :func:`ranking` the ranked table with neighbours within one standard
    deviation marked. A new method is one more :class:`Method` entry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from . import baselines, cache, config, metrics, protocols, timing

__all__ = [
    "PROTOCOL",
    "PROFILE_SIZES",
    "METRICS",
    "Method",
    "METHODS",
    "Inputs",
    "load_inputs",
    "split_for",
    "methods_for",
    "run",
    "aggregate",
    "ranking",
    "pr_curves",
]

PROTOCOL = "cross"
"""Name of the shared protocol in :data:`hashstudy.protocols.PROTOCOLS`."""

METRICS = ("map@1000", "map_all", "precision@1000", "hd2p")
"""The table's metrics (see :mod:`hashstudy.metrics`; ties averaged)."""

VERSION = 1  # bump when a method's training changes, so cached codes are not reused

PROFILE_SIZES = {
    # the synthetic smoke data (30 training / 10 test images per class): seconds
    "smoke": dict(split=dict(query_per_class=2, train_per_class=10), seeds=(0, 1),
                  bits=(16, 32), transfer_bits=16, deep=dict(widths=(4, 8, 8), hidden=32,
                  epochs=2, feature_epochs=1, batch_size=32, ae_stages=2, ae_finetune=1,
                  latent_epochs=3, ddh_epochs=3, dsth18_epochs=(1, 1, 0), sweeps=3),
                  input_size=64),
    # 5,000 training images (500 per class, the training set of the query1k protocol),
    # 10,000 database images (the training images and 5,000 more), 1,000 test queries;
    # notebook 01's small networks and epochs, for 2 CPU cores
    "quick": dict(split=dict(train_per_class=500, n_database=10000), seeds=(0, 1, 2),
                  bits=(16, 32, 48, 64), transfer_bits=32, deep=dict(widths=(8, 16, 32),
                  hidden=128, epochs=6, feature_epochs=3, batch_size=64, ae_stages=7,
                  ae_finetune=1, latent_epochs=30, ddh_epochs=20, dsth18_epochs=(6, 1, 1),
                  sweeps=10), input_size=128),
    # the protocol as defined: 10,000 training images, the whole training split as database;
    # the notebooks' paper-profile networks and epochs
    "paper": dict(split=dict(), seeds=(0, 1, 2), bits=(16, 32, 48, 64), transfer_bits=32,
                  deep=dict(widths=(32, 64, 128), hidden=500, epochs=20, feature_epochs=10,
                            batch_size=64, ae_stages=20, ae_finetune=10, latent_epochs=60,
                            ddh_epochs=30, dsth18_epochs=(60, 5, 5), sweeps=20),
                  input_size=224),
}
"""Notebook 06's sizes per profile: ``split`` overrides of the ``cross`` protocol, the
method ``seeds``, the code lengths ``bits``, the code length of the transfer protocol,
the deep methods' networks and epochs (``deep``) and the backbone's input side."""


@dataclass
class Inputs:
    """One dataset's pool (training split, then test split) in both representations.

    ``vectors`` are the rows the feature-based methods take (Lite0 features or
    pixel vectors, named by ``vectors_name``); ``images`` are uint8 pixels.
    """

    dataset: str
    images: np.ndarray = field(repr=False)
    vectors: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    vectors_name: str = "pixels"
    classes: tuple = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.images.shape
        return (s[1], s[2], s[3] if self.images.ndim == 4 else 1)


def load_inputs(dataset: str, *, input_size: int = 128, progress: bool = True) -> Inputs:
    """Pixels and vectors of ``dataset``'s pool.

    Colour datasets get EfficientNet-Lite0 features at ``input_size`` (the
    shared cache of the other notebooks); grayscale ones their pixel vectors.
    """
    from . import data, evaluation, features

    images, labels, classes = protocols.load_pool(dataset)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 3:
        train = data.load(dataset, "train")
        test = data.load(dataset, "test")
        parts = [features.dataset_features(ds, input_size=input_size, progress=progress)[0]
                 for ds in (train, test)]
        vectors = np.concatenate(parts).astype(np.float32)
        name = f"efficientnet_lite0@{input_size}px"
    else:
        vectors, name = evaluation.as_vectors(images), "pixels"
    return Inputs(dataset, images, vectors, labels.astype(np.int64), name, tuple(classes))


def split_for(dataset: str, profile: str) -> protocols.Split:
    """The saved split of the ``cross`` protocol at ``profile``'s sizes (always seed 0)."""
    sizes = PROFILE_SIZES[config.check_profile(profile)]
    return protocols.get_split(dataset, PROTOCOL, 0, **sizes["split"])


# ---------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A method of the study as the cross-paper comparison runs it.

    Attributes
    ----------
    name : str
        Key in :data:`METHODS` and in the metric keys.
    label : str
        Its name in tables and figures.
    paper : str
        Where it comes from (a notebook, or "baseline").
    supervised : bool
        Whether ``fit`` uses class labels.
    takes : {"vectors", "pixels", "learned", "both"}
        The input of ``fit`` and ``encode``. ``"learned"``: the vectors where
        they are a pretrained network's features, else (MNIST) the pixels, for
        a method that learns its own network when the paper has none to start
        from. ``"both"``: pool rows; the method reads pixels and vectors itself.
    build : callable (n_bits, seed, deep_sizes, inputs) -> object with fit / encode
    datasets : tuple of str or None
        Datasets it runs on (None: every one); ``why_not`` says why not elsewhere.
    """

    name: str
    label: str
    paper: str
    supervised: bool
    takes: str
    build: Callable = field(repr=False, compare=False)
    datasets: Optional[tuple] = None
    why_not: str = ""

    def input_for(self, inputs: Inputs) -> str:
        """``"vectors"``, ``"pixels"`` or ``"both"``: what this method reads of ``inputs``."""
        if self.takes == "learned":
            return "pixels" if inputs.vectors_name == "pixels" else "vectors"
        return self.takes

    def input_name(self, inputs: Inputs) -> str:
        """The input as the table names it."""
        return {"vectors": inputs.vectors_name, "pixels": "pixels",
                "both": f"pixels + {inputs.vectors_name}"}[self.input_for(inputs)]


def _shallow(name: str, **params):
    def build(n_bits, seed, deep, inputs):
        return baselines.make(name, n_bits, seed=seed, **params)
    return build


def _itq_l2(n_bits, seed, deep, inputs):
    from . import ddh

    return ddh.Normalised(baselines.make("itq", n_bits, seed=seed))


def _dsth15(n_bits, seed, deep, inputs):
    from . import dsth

    return dsth.DSTH(n_bits, inputs.shape, widths=deep["widths"], hidden=deep["hidden"],
                     feature_epochs=deep["feature_epochs"], hash_epochs=deep["epochs"],
                     batch_size=deep["batch_size"], seed=seed, progress=False)


def _cnnh(n_bits, seed, deep, inputs):
    from . import cnnh

    return cnnh.CNNH(n_bits, inputs.shape, widths=deep["widths"], hidden=deep["hidden"],
                     n_train=None, n_sweeps=deep["sweeps"], epochs=deep["epochs"],
                     batch_size=deep["batch_size"], seed=seed, progress=False)


def _latent(n_bits, seed, deep, inputs):
    from . import latent

    if inputs.vectors_name == "pixels":  # MNIST: the paper's small CNN on the images
        return latent.LatentHasher(n_bits, trunk="small_cnn", width=16, epochs=deep["epochs"],
                                   batch_size=128, lr=2e-3, shift=2, seed=seed, cache=False,
                                   progress=False)
    return latent.LatentHasher(n_bits, trunk="features", epochs=deep["latent_epochs"],
                               batch_size=256, lr=1e-3, seed=seed, cache=False, progress=False)


def _tanh_ae(n_bits, seed, deep, inputs):
    from . import autoencoder

    schedule = autoencoder.candidate_schedule(autoencoder.PAPER_B_END, autoencoder.PAPER_PACE,
                                              stages=deep["ae_stages"],
                                              finetune_stages=deep["ae_finetune"])
    return autoencoder.TanhAEHasher(n_bits, seed, schedule=schedule, n_monitor=200,
                                    progress=False)


def _ddh(n_bits, seed, deep, inputs):
    # notebook 04's reported DDH (its parameters cell: Adam, lr 1e-3, lambda1 warm-up over 5
    # epochs, K1 = 15, K2 = 6, a random start), for a fixed number of epochs: the protocol's
    # training subset is too small to hold 1,000 images out for early stopping as 04 does
    from . import ddh

    return ddh.DDH(n_bits, optimizer="adam", lr=1e-3, warmup=5, k1=15, k2=6, init="random",
                   epochs=deep["ddh_epochs"], seed=seed, use_cache=False, progress=False)


def _dsth18(n_bits, seed, deep, inputs):
    from . import dsth_journal

    return _Journal(dsth_journal.DSTHJournal(n_bits, 32, epochs=deep["dsth18_epochs"], seed=seed),
                    inputs)


class _Journal:
    """Adapter: the journal DSTH reads pixels (32 px colour) and vectors of the same pool rows."""

    def __init__(self, hasher, inputs: Inputs):
        self.hasher, self.inputs = hasher, inputs

    def _pixels(self, rows):
        return self.inputs.images[rows]

    def fit(self, rows, y=None):
        self.hasher.fit(self._pixels(rows), self.inputs.vectors[rows])
        return self

    def encode(self, rows):
        return self.hasher.encode(self._pixels(rows))


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lsh", "LSH", "baseline", False, "vectors", _shallow("lsh")),
    Method("pcah", "PCAH", "baseline", False, "vectors", _shallow("pcah")),
    Method("sh", "SH", "baseline", False, "vectors", _shallow("sh")),
    Method("itq", "ITQ", "baseline", False, "vectors", _shallow("itq")),
    Method("itq_l2", "ITQ (L2-normalised input)", "04_ddh", False, "vectors", _itq_l2),
    Method("sph", "SpH", "baseline", False, "vectors", _shallow("sph")),
    Method("sth", "STH", "baseline", False, "vectors", _shallow("sth")),
    Method("cca_itq", "CCA-ITQ", "baseline", True, "vectors", _shallow("cca_itq")),
    Method("dsth15", "DSTH (2015)", "01_dsth_mm2015", True, "pixels", _dsth15),
    Method("cnnh", "CNNH", "01_dsth_mm2015", True, "pixels", _cnnh),
    Method("latent", "Latent-layer CNN", "02_latent_layer_cnn", True, "learned", _latent),
    Method("tanh_ae", "Tanh autoencoder", "03_tanh_autoencoder", False, "pixels", _tanh_ae),
    Method("ddh", "DDH", "04_ddh", False, "vectors", _ddh),
    Method("dsth18", "DSTH (2018)", "05_dsth_tcyb2018", False, "both", _dsth18,
           datasets=("cifar10",), why_not="its SimpleNet takes 32 or 96 px colour images; the "
           "paper runs it on CIFAR-10, CIFAR-100 and STL-10 only"),
)}
"""Every method of the study, in table order."""


def methods_for(dataset: str, names: Optional[Sequence[str]] = None) -> list[Method]:
    """The methods (of ``names``, default all) that run on ``dataset``; unknown names are an error."""
    names = list(METHODS) if names is None else list(names)
    for n in names:
        config.check_choice("method", n, METHODS)
    return [METHODS[n] for n in names
            if METHODS[n].datasets is None or dataset in METHODS[n].datasets]


def _rows(method: Method, inputs: Inputs, rows: np.ndarray):
    takes = method.input_for(inputs)
    if takes == "vectors":
        return inputs.vectors[rows]
    if takes == "pixels":
        return inputs.images[rows]
    return rows


_SOURCES: dict = {}


def _source(fn) -> str:
    """The source of a method's ``build`` (part of the cache key: editing it retrains).

    Read once per process, at import for the built-in methods: ``inspect`` reads
    a function's lines from the file on disk by the line numbers of the loaded
    code, so a process that outlives an edit of this file would otherwise read
    other lines and key its codes by them."""
    import inspect

    if fn not in _SOURCES:
        _SOURCES[fn] = inspect.getsource(fn)
    return _SOURCES[fn]


for _m in METHODS.values():  # the built-in methods' sources as loaded (see _source)
    _source(_m.build)


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _codes(method: Method, inputs: Inputs, split: protocols.Split, n_bits: int, seed: int,
           deep: Mapping, train: np.ndarray, query: np.ndarray, database: np.ndarray,
           tag: str = "") -> dict:
    """Fit one (method, bits, seed) on ``train`` rows and encode ``query`` / ``database`` (cached)."""
    key = cache.key("crosspaper", VERSION, inputs.dataset, split.name, tag, method.name, n_bits,
                    seed, dict(deep), inputs.vectors_name, _threads(), _source(method.build),
                    cache.key(train.tolist(), query.tolist(), database.tolist()))
    path = config.cache_dir("crosspaper") / f"{inputs.dataset}-{method.name}-{n_bits}-s{seed}-{key}.npz"

    def compute():
        hasher = method.build(n_bits, seed, deep, inputs)
        x = _rows(method, inputs, train)
        t0 = time.perf_counter()
        with timing.step("training"):
            hasher.fit(x, inputs.labels[train]) if method.supervised else hasher.fit(x)
        seconds = time.perf_counter() - t0
        with timing.step("evaluation"):
            q = hasher.encode(_rows(method, inputs, query))
            d = hasher.encode(_rows(method, inputs, database))
        return {"query": np.asarray(q, dtype=np.uint8), "database": np.asarray(d, dtype=np.uint8),
                "fit_seconds": np.float64(seconds)}

    return cache.cached_arrays(path, compute)


def run(inputs: Inputs, split: protocols.Split, profile: str, *,
        methods: Optional[Sequence[str]] = None, bits: Optional[Sequence[int]] = None,
        seeds: Optional[Sequence[int]] = None, metric_keys: Sequence[str] = METRICS,
        transfer=None, progress: bool = True):
    """Fit, encode and evaluate every method at every code length and seed.

    Parameters
    ----------
    inputs : :class:`Inputs`
    split : the ``cross`` split of the dataset (:func:`split_for`), or a split
        derived from it (e.g. the transfer protocol's, with ``transfer`` its tag)
    profile : str
        Sizes of the deep methods (:data:`PROFILE_SIZES`).
    methods, bits, seeds : optional
        Default: every method that runs on the dataset, the profile's bits and seeds.
    transfer : str, optional
        A tag for derived splits, part of the cache key.

    Returns
    -------
    table : pandas.DataFrame
        Long format: ``method, bits, seed, metric, value``, with two more
        rows per fit: ``fit_seconds`` (the training time, also when the codes
        came from the cache) and ``distinct_codes`` (distinct codes in the
        database: a collapsed method has a handful).
    codes : {(method, bits, seed): (query_codes, database_codes)}
    """
    import pandas as pd

    sizes = PROFILE_SIZES[config.check_profile(profile)]
    bits = config.check_bits(list(bits or sizes["bits"]))
    seeds = [int(s) for s in (seeds if seeds is not None else sizes["seeds"])]
    chosen = methods_for(inputs.dataset, methods)
    jobs = [(m, b, s) for m in chosen for b in bits for s in seeds]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(jobs, desc=f"{inputs.dataset}: fitting", unit="fit")
    ql, dl = inputs.labels[split.query], inputs.labels[split.database]
    rows, codes = [], {}
    for m, b, s in jobs:
        if bar is not None:
            bar.set_postfix_str(f"{m.name} {b} bits seed {s}")
        got = _codes(m, inputs, split, b, s, sizes["deep"], split.train, split.query,
                     split.database, tag=transfer or "")
        codes[(m.name, b, s)] = (got["query"], got["database"])
        values = metrics.evaluate(got["query"], got["database"], ql, dl, metric_keys)
        values["fit_seconds"] = float(got["fit_seconds"])
        # a method whose codes collapse (few distinct codes) reads near the class prior
        values["distinct_codes"] = float(len(np.unique(got["database"], axis=0)))
        rows += [{"method": m.name, "bits": b, "seed": s, "metric": k, "value": float(v)}
                 for k, v in values.items()]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return pd.DataFrame(rows, columns=["method", "bits", "seed", "metric", "value"]), codes


def aggregate(table):
    """Mean, standard deviation (ddof 1; 0 for one seed) and seed count per method, bits, metric."""
    g = table.groupby(["method", "bits", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                n="count").reset_index()
    return out


def ranking(agg, n_bits: int, metric: str = "map@1000", labels: Optional[Mapping] = None):
    """Methods ranked by the mean of ``metric`` at ``n_bits``, with ties within noise marked.

    The column ``vs_next`` is ``"~"`` where the gap to the method ranked just
    below is within one standard deviation of either of the two (the larger
    one), ``">"`` where it is larger: a ``~`` says the seeds do not separate the
    two methods.
    """
    import pandas as pd

    sel = agg[(agg.bits == n_bits) & (agg.metric == metric)].sort_values("mean", ascending=False)
    if sel.empty:
        raise ValueError(f"no {metric!r} at {n_bits} bits in the table; it has bits "
                         f"{sorted(agg.bits.unique())} and metrics {sorted(agg.metric.unique())}")
    mean, std = sel["mean"].to_numpy(), sel["std"].to_numpy()
    gap_ok = [">" if mean[i] - mean[i + 1] > max(std[i], std[i + 1]) else "~"
              for i in range(len(sel) - 1)] + [""]
    return pd.DataFrame({"rank": np.arange(1, len(sel) + 1),
                         "method": [(labels or {}).get(m, m) for m in sel.method],
                         "key": sel.method.to_numpy(), "mean": mean, "std": std,
                         "seeds": sel["n"].to_numpy(), "vs_next": gap_ok})


def pr_curves(codes: Mapping, q_labels, db_labels, n_bits: int) -> dict[str, tuple]:
    """Hamming-radius PR curve per method at ``n_bits``, precision and recall averaged over seeds.

    Each seed's curve has one point per radius 0..n_bits, so seeds are averaged
    radius by radius. Queries with nothing within a radius are left out of that
    radius' precision (``empty="skip"``, as the notebooks' PR figures).
    """
    by_method: dict[str, list] = {}
    for (m, b, s), (q, d) in codes.items():
        if b == n_bits:
            c = metrics.pr_curve(q, d, q_labels, db_labels, empty="skip")
            by_method.setdefault(m, []).append((c.recall, c.precision))
    return {m: (np.nanmean([r for r, _ in v], axis=0), np.nanmean([p for _, p in v], axis=0))
            for m, v in by_method.items()}


# ---------------------------------------------------------------------------
# one dataset, everything: the notebook's experiment in one call
# ---------------------------------------------------------------------------

TRANSFER_METHODS = ("itq", "cca_itq", "dsth15", "cnnh", "latent")
"""Methods run on the transfer protocol: the supervised ones and ITQ as the unsupervised yardstick."""


@dataclass
class Study:
    """The cross-paper comparison on one dataset (:func:`study`).

    Attributes
    ----------
    table, agg : long results per seed and their mean / std over seeds
    codes : {(method, bits, seed): (query_codes, database_codes)}
    references : {name: {metric: value}}: ``cosine`` (real-valued ranking of
        the vectors), ``classifier_code`` (mean over seeds) and ``constant``
        (all codes equal, the evaluation's self-check)
    transfer_split, transfer_agg : the transfer protocol (None when switched off)
    """

    dataset: str
    profile: str
    inputs: Inputs = field(repr=False)
    split: protocols.Split = field(repr=False)
    table: object = field(repr=False)
    agg: object = field(repr=False)
    codes: dict = field(repr=False)
    references: dict = field(default_factory=dict)
    transfer_split: Optional[protocols.Split] = field(default=None, repr=False)
    transfer_agg: object = field(default=None, repr=False)
    transfer_references: dict = field(default_factory=dict)

    @property
    def methods(self) -> list[Method]:
        return [METHODS[m] for m in dict.fromkeys(self.agg.method)]

    def labels(self) -> dict[str, str]:
        return {m.name: m.label for m in METHODS.values()}


def _classifier_code(inputs: Inputs, split, seeds, metric_keys) -> dict:
    from . import references

    runs = []
    for s in seeds:
        clf = references.ClassifierCode(seed=s).fit(inputs.vectors[split.train],
                                                    inputs.labels[split.train])
        runs.append(clf.evaluate(inputs.vectors[split.query], inputs.vectors[split.database],
                                 inputs.labels[split.query], inputs.labels[split.database],
                                 metrics=[k for k in metric_keys if k != "hd2p"]))
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    out.update({f"{k}_std": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
                for k in runs[0]})
    out["bits"] = float(clf.bits_)
    return out


def _references(inputs: Inputs, split, seeds, metric_keys, control_bits: int) -> dict:
    from . import references

    ranked = [k for k in metric_keys if k != "hd2p"]
    ql, dl = inputs.labels[split.query], inputs.labels[split.database]
    return {
        "cosine": references.cosine_ranking(inputs.vectors[split.query],
                                            inputs.vectors[split.database], ql, dl, ranked),
        "classifier_code": _classifier_code(inputs, split, seeds, metric_keys),
        "constant": references.constant_code_check(ql, dl, n_bits=control_bits),
    }


def study(dataset: str, profile: str, *, methods: Optional[Sequence[str]] = None,
          bits: Optional[Sequence[int]] = None, seeds: Optional[Sequence[int]] = None,
          transfer: bool = True, n_seen: int = 7, metric_keys: Sequence[str] = METRICS,
          inputs: Optional[Inputs] = None, progress: bool = True) -> Study:
    """Every method (default: all that run on ``dataset``) on the ``cross`` protocol, with references.

    Runs :func:`run` on the dataset's saved split, aggregates over seeds, computes the
    reference points (cosine ranking, the classifier code, the constant-code
    control) and, with ``transfer``, the transfer protocol of Sablayrolles et al.:
    the supervised methods (:data:`TRANSFER_METHODS`) trained on ``n_seen``
    classes (a seeded, saved choice) and evaluated on queries and database of
    the other classes only.
    """
    from . import references

    sizes = PROFILE_SIZES[config.check_profile(profile)]
    seeds = [int(s) for s in (seeds if seeds is not None else sizes["seeds"])]
    bits = config.check_bits(list(bits or sizes["bits"]))
    if inputs is None:  # pass the dataset's Inputs when already loaded: decoded once
        inputs = load_inputs(dataset, input_size=sizes["input_size"], progress=progress)
    split = split_for(dataset, profile)
    table, codes = run(inputs, split, profile, methods=methods, bits=bits, seeds=seeds,
                       metric_keys=metric_keys, progress=progress)
    out = Study(dataset, profile, inputs, split, table, aggregate(table), codes,
                _references(inputs, split, seeds, metric_keys, bits[0]))
    if transfer:
        tsplit = references.transfer_split(split, inputs.labels, n_seen=n_seen, seed=0)
        chosen = [m for m in TRANSFER_METHODS if methods is None or m in methods]
        ttable, _ = run(inputs, tsplit, profile, methods=chosen, bits=[sizes["transfer_bits"]],
                        seeds=seeds, metric_keys=metric_keys, transfer=f"transfer{n_seen}",
                        progress=progress)
        out.transfer_split, out.transfer_agg = tsplit, aggregate(ttable)
        out.transfer_references = _references(inputs, tsplit, seeds, metric_keys,
                                               sizes["transfer_bits"])
    return out


def metric_values(st: Study) -> dict[str, float]:
    """The report's keys: ``<dataset>/<method>/<bits>/<metric>`` (mean over seeds) and
    ``..._std``; references under ``<dataset>/cosine/<metric>``,
    ``<dataset>/classifier_code/<bits>/<metric>``, ``<dataset>/constant/<bits>/<metric>``;
    the transfer protocol under ``<dataset>/transfer/...``."""
    out = {}

    def add(prefix, agg, refs):
        for r in agg.itertuples():
            out[f"{prefix}/{r.method}/{int(r.bits)}/{r.metric}"] = float(r.mean)
            out[f"{prefix}/{r.method}/{int(r.bits)}/{r.metric}_std"] = float(r.std)
        for k, v in refs.get("cosine", {}).items():
            out[f"{prefix}/cosine/{k}"] = float(v)
        cc = refs.get("classifier_code", {})
        for k, v in cc.items():
            if k != "bits":
                out[f"{prefix}/classifier_code/{int(cc['bits'])}/{k}"] = float(v)
        const = refs.get("constant", {})
        for k, v in const.items():
            if isinstance(v, (int, float, np.floating)):
                out[f"{prefix}/constant/{k}"] = float(v)

    add(st.dataset, st.agg, st.references)
    if st.transfer_agg is not None:
        add(f"{st.dataset}/transfer", st.transfer_agg, st.transfer_references)
    return out


def results_table(st: Study, n_bits: int, metric_keys: Sequence[str] = METRICS):
    """One row per method at ``n_bits``: paper, supervision, input, then ``mean ± std`` per metric.

    The references follow the methods: the classifier code (always
    ceil(log2 C) bits) and the cosine ranking of the vectors (no code).
    """
    import pandas as pd

    rows = []
    for m in st.methods:
        row = {"method": m.label, "from": m.paper, "labels": "yes" if m.supervised else "no",
               "input": m.input_name(st.inputs)}
        sel = st.agg[(st.agg.method == m.name) & (st.agg.bits == n_bits)]
        row.update({r.metric: f"{r.mean:.3f} ± {r.std:.3f}" for r in sel.itertuples()
                    if r.metric in metric_keys})
        rows.append(row)
    refs = st.references
    cc = refs["classifier_code"]
    rows.append({"method": f"classifier code ({int(cc['bits'])} bits)", "from": "reference",
                 "labels": "yes", "input": st.inputs.vectors_name,
                 **{k: f"{cc[k]:.3f} ± {cc[k + '_std']:.3f}" for k in metric_keys if k in cc}})
    rows.append({"method": "cosine ranking (real-valued)", "from": "reference", "labels": "no",
                 "input": st.inputs.vectors_name,
                 **{k: f"{v:.3f}" for k, v in refs["cosine"].items() if k in metric_keys}})
    return pd.DataFrame(rows).fillna("")


def by_bits(st: Study, metric: str = "map@1000"):
    """``mean ± std`` of ``metric`` per method (rows, best mean first) and code length (columns)."""
    sel = st.agg[st.agg.metric == metric]
    if sel.empty:
        raise ValueError(f"no {metric!r} in the results; they hold {sorted(st.agg.metric.unique())}")
    labels = st.labels()
    cell = sel.assign(text=[f"{a:.3f} ± {b:.3f}" for a, b in zip(sel["mean"], sel["std"])],
                      method=[labels[m] for m in sel.method])
    wide = cell.pivot(index="method", columns="bits", values="text")
    order = sel.groupby("method")["mean"].mean().sort_values(ascending=False).index
    return wide.reindex([labels[m] for m in order])


def methods_table(inputs: Mapping[str, Inputs], names: Optional[Sequence[str]] = None):
    """One row per method: where it comes from, whether it uses labels, and its input per dataset."""
    import pandas as pd

    names = list(METHODS) if not names else list(names)
    rows = []
    for n in names:
        config.check_choice("method", n, METHODS)
        m = METHODS[n]
        rows.append({"key": m.name, "method": m.label, "from": m.paper,
                     "class labels": "yes" if m.supervised else "no",
                     **{ds: m.input_name(inp) if m in methods_for(ds) else f"not run: {m.why_not}"
                        for ds, inp in inputs.items()}})
    return pd.DataFrame(rows)


def transfer_table(st: Study, metric: str = "map@1000"):
    """The transfer protocol beside the same methods on all classes, at the transfer code length.

    One row per method (then the classifier code and the cosine ranking):
    ``metric`` (mean ± std over seeds) on all classes, on the unseen classes,
    and each one's class prior (the value of a constant code's precision),
    since mAP among 3 classes and among 10 start from different floors.
    """
    import pandas as pd

    if st.transfer_agg is None:
        raise ValueError("this study ran without the transfer protocol (transfer=False)")
    n_bits = int(st.transfer_agg.bits.iloc[0])
    labels = st.labels()

    def cell(agg, method):
        r = agg[(agg.method == method) & (agg.bits == n_bits) & (agg.metric == metric)]
        return f"{r['mean'].iloc[0]:.3f} ± {r['std'].iloc[0]:.3f}" if len(r) else ""

    rows = [{"method": labels[m], "labels": "yes" if METHODS[m].supervised else "no",
             "all classes": cell(st.agg, m), "unseen classes": cell(st.transfer_agg, m)}
            for m in dict.fromkeys(st.transfer_agg.method)]
    a, t = st.references, st.transfer_references
    rows.append({"method": "classifier code", "labels": "yes",
                 "all classes": f"{a['classifier_code'][metric]:.3f}",
                 "unseen classes": f"{t['classifier_code'][metric]:.3f}"})
    rows.append({"method": "cosine ranking (real-valued)", "labels": "no",
                 "all classes": f"{a['cosine'][metric]:.3f}",
                 "unseen classes": f"{t['cosine'][metric]:.3f}"})
    rows.append({"method": "class prior (constant code's precision)", "labels": "",
                 "all classes": f"{a['constant']['prior']:.3f}",
                 "unseen classes": f"{t['constant']['prior']:.3f}"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# command line: fill the cache of fitted codes on several cores
# ---------------------------------------------------------------------------


def _fit_job(dataset: str, profile: str, method: str, transfer: bool, n_seen: int) -> tuple:
    """One worker's job: every code length and seed of one method on one dataset (cached)."""
    import torch

    torch.set_num_threads(1)
    sizes = PROFILE_SIZES[profile]
    inputs = load_inputs(dataset, input_size=sizes["input_size"], progress=False)
    split = split_for(dataset, profile)
    t0 = time.perf_counter()
    if transfer:
        from . import references

        split = references.transfer_split(split, inputs.labels, n_seen=n_seen, seed=0)
        run(inputs, split, profile, methods=[method], bits=[sizes["transfer_bits"]],
            transfer=f"transfer{n_seen}", progress=False)
    else:
        run(inputs, split, profile, methods=[method], progress=False)
    return dataset, method, transfer, time.perf_counter() - t0


SLOWEST_FIRST = ("dsth18", "cnnh", "tanh_ae", "dsth15", "sth", "latent", "ddh")
"""The deep methods (and STH) by training time at quick, slowest first (measured on this
study's 2-core machine); :func:`fit_jobs` starts with them so the pool ends on short jobs."""


def fit_jobs(datasets: Sequence[str] = ("mnist", "cifar10")) -> list[tuple[str, str, bool]]:
    """``(dataset, method, transfer)`` for every fit notebook 06 needs, slowest first."""
    jobs = [(ds, m.name, False) for ds in datasets for m in methods_for(ds)]
    jobs += [(ds, m, True) for ds in datasets for m in TRANSFER_METHODS]
    rank = {m: i for i, m in enumerate(SLOWEST_FIRST)}
    return sorted(jobs, key=lambda j: (rank.get(j[1], len(rank)), j[2]))


def fit_all(profile: str, datasets: Sequence[str] = ("mnist", "cifar10"), *, workers: int = 2,
            n_seen: int = 7, echo=print) -> list[tuple]:
    """Fit every (dataset, method) of notebook 06 at ``profile`` in ``workers`` processes.

    Each process runs one method on one dataset at a time with one torch
    thread (the thread count the notebook runs with under ``regenerate
    --jobs 2``, so the notebook finds every code in the cache and only
    evaluates). Interrupted, it resumes where it stopped: every finished
    (method, bits, seed) is in the cache. Returns ``(dataset, method,
    transfer, seconds)`` per job.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    config.check_profile(profile)
    # one BLAS thread per process too, as under `regenerate --jobs 2` (fresh, spawned
    # processes read these before numpy loads its BLAS)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "HASHSTUDY_THREADS"):
        os.environ[var] = "1"
    jobs = fit_jobs(datasets)
    done = []
    with ProcessPoolExecutor(max_workers=max(1, int(workers)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_fit_job, ds, profile, m, t, n_seen) for ds, m, t in jobs]
        for i, f in enumerate(as_completed(futures), 1):
            ds, m, t, secs = f.result()
            done.append((ds, m, t, secs))
            echo(f"[{i}/{len(jobs)}] {ds} {m}{' (transfer)' if t else ''}: {secs:.0f} s")
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m hashstudy.crosspaper",
        description="Fit every method of notebook 06 into the cache on several cores; the "
                    "notebook then only evaluates. Resumable: finished fits are kept.")
    parser.add_argument("--profile", default="quick", choices=list(PROFILE_SIZES))
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"],
                        choices=["mnist", "cifar10"])
    parser.add_argument("--workers", type=int, default=2, help="processes (one core each)")
    args = parser.parse_args(argv)
    t0 = time.time()
    fit_all(args.profile, args.datasets, workers=args.workers)
    print(f"all fits cached in {time.time() - t0:.0f} s; now run "
          f"`python -m hashstudy.regenerate --profile {args.profile} --only 06_cross_paper`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def references_table(studies: Mapping[str, Study]):
    """One row per reference point and dataset: ITQ on raw and on L2-normalised vectors at
    every code length (mean, std over seeds), the classifier code, the cosine ranking and the
    constant-code control (mAP@1000)."""
    import pandas as pd

    rows = []
    for ds, st in studies.items():
        labels = st.labels()
        itq = st.agg[(st.agg.metric == "map@1000") & st.agg.method.isin(["itq", "itq_l2"])]
        rows += [{"dataset": ds, "reference": labels[r.method], "bits": int(r.bits),
                  "map@1000": r.mean, "std": r.std} for r in itq.itertuples()]
        cc, const = st.references["classifier_code"], st.references["constant"]
        rows += [
            {"dataset": ds, "reference": "classifier code", "bits": int(cc["bits"]),
             "map@1000": cc["map@1000"], "std": cc["map@1000_std"]},
            {"dataset": ds, "reference": "cosine ranking (real-valued)", "bits": None,
             "map@1000": st.references["cosine"]["map@1000"], "std": None},
            {"dataset": ds, "reference": "constant code (control)",
             "bits": int(st.agg.bits.min()), "map@1000": const["map@1000"], "std": None}]
    return pd.DataFrame(rows)
