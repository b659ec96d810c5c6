"""Retrieval protocols: named, seeded, saved query / database / training splits.

A *protocol* says which images are queries, which form the retrieval database
and which train the hash function. A *split* is one draw of a protocol with a
seed. Splits index the dataset's **pool**: the training split followed by the
test split (``pool[i]`` is ``train[i]`` for ``i < n_train`` and
``test[i - n_train]`` otherwise), so one integer array says everything.

Splits are saved under ``<cache>/splits`` the first time they are drawn and
loaded afterwards; a saved split whose dataset no longer matches (different
labels) raises :class:`SplitMismatchError` instead of being redrawn silently.

Built-in protocols (``PROTOCOLS``):

``query1k``
    1,000 queries (100 per class) drawn from the whole pool, every other image
    in the database, and 5,000 training images (500 per class) drawn from the
    database. The common unsupervised-hashing protocol on CIFAR-10 and MNIST.
``test-train``
    The whole test split as queries, the whole training split as database and
    training set.
``test1k-train``
    1,000 random test images (not stratified) as queries against the training
    split as database and training set (the latent-layer CNN paper, sec. IV).
``test10pc-train``
    10 random test images per class as queries against the training split
    (the DSTH conference paper, sec. 3.1).
``test100pc-train``
    100 test images per class as queries against the training split.
``cross``
    100 test images per class as queries against the training split, with a
    fixed training subset of 1,000 images per class drawn from it: the one
    protocol on which notebook 06 runs every method of the study
    (:mod:`hashstudy.crosspaper`).

Sizes can be overridden per call (``query_per_class``, ``n_query``,
``train_per_class``, ``n_database``) to scale a protocol to a profile; the
overrides become part of the split's name, so a scaled split is never
mistaken for the full protocol.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import cache, config

__all__ = [
    "Protocol",
    "Split",
    "PROTOCOLS",
    "SplitMismatchError",
    "register_protocol",
    "make_split",
    "get_split",
    "load_pool",
    "holdout_split",
    "ddh_holdout",
]


@dataclass(frozen=True)
class Protocol:
    """How queries, database and training images are chosen.

    Parameters
    ----------
    name : str
        Registry name.
    description : str
        One sentence for reports.
    query_from : {"pool", "test"}
        Where queries are drawn from.
    query_per_class, n_query : int or None
        Stratified (per class) or plain random number of queries; exactly one
        is set, or neither (every image of ``query_from`` is a query).
    database : {"rest", "train"}
        ``"rest"``: every pool image that is not a query; ``"train"``: the
        training split.
    train_per_class : int or None
        Training images per class drawn from the database; ``None`` trains on
        the whole database.
    """

    name: str
    description: str
    query_from: str
    database: str
    query_per_class: Optional[int] = None
    n_query: Optional[int] = None
    train_per_class: Optional[int] = None

    def __post_init__(self):
        config.check_choice("query_from", self.query_from, ("pool", "test"))
        config.check_choice("database", self.database, ("rest", "train"))
        if self.query_per_class is not None and self.n_query is not None:
            raise ValueError("set query_per_class or n_query, not both")


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to :data:`PROTOCOLS` (an existing name is an error)."""
    if protocol.name in PROTOCOLS and PROTOCOLS[protocol.name] != protocol:
        raise ValueError(f"a different protocol named {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


for _p in (
    Protocol("query1k", "1,000 queries (100 per class) from all images, the rest as database, "
             "5,000 training images (500 per class) drawn from the database",
             query_from="pool", database="rest", query_per_class=100, train_per_class=500),
    Protocol("test-train", "the test split as queries, the training split as database and training set",
             query_from="test", database="train"),
    Protocol("test1k-train", "1,000 random test images as queries, the training split as database "
             "and training set", query_from="test", database="train", n_query=1000),
    Protocol("test10pc-train", "10 random test images per class as queries, the training split as "
             "database and training set", query_from="test", database="train", query_per_class=10),
    Protocol("test100pc-train", "100 test images per class as queries, the training split as "
             "database and training set", query_from="test", database="train", query_per_class=100),
    Protocol("cross", "1,000 test images (100 per class) as queries, the training split as "
             "database, 1,000 training images per class drawn from it to train every method",
             query_from="test", database="train", query_per_class=100, train_per_class=1000),
):
    register_protocol(_p)


class SplitMismatchError(RuntimeError):
    """A saved split was drawn for different data than the data now loaded."""


@dataclass(frozen=True)
class Split:
    """One seeded draw of a protocol. Index arrays point into the pool.

    Attributes
    ----------
    name : str
        Protocol name plus any size overrides, e.g. ``"query1k"`` or
        ``"query1k[n_database=10000]"``.
    query, database, train : ndarray of int64
        Sorted pool indices.
    n_train_split, n_test_split : int
        Sizes of the dataset's train and test splits (the pool's layout).
    """

    dataset: str
    protocol: str
    name: str
    seed: int
    query: np.ndarray = field(repr=False)
    database: np.ndarray = field(repr=False)
    train: np.ndarray = field(repr=False)
    n_train_split: int = 0
    n_test_split: int = 0
    description: str = ""

    def record(self) -> dict:
        """What every result must carry about its protocol (JSON-able)."""
        return {
            "dataset": self.dataset,
            "protocol": self.name,
            "seed": self.seed,
            "n_query": int(self.query.size),
            "n_database": int(self.database.size),
            "n_train": int(self.train.size),
            "description": self.description,
        }

    def __str__(self) -> str:
        return (f"{self.dataset}/{self.name} (seed {self.seed}): {self.query.size} queries, "
                f"{self.database.size} database, {self.train.size} training images")


def _stratified(rng: np.random.Generator, candidates: np.ndarray, labels: np.ndarray,
                per_class: int, what: str) -> np.ndarray:
    chosen = []
    for c in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == c]
        if members.size < per_class:
            raise ValueError(
                f"{what}: class {c} has only {members.size} candidate images, "
                f"{per_class} per class were requested; lower the per-class size"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def make_split(train_labels, test_labels, protocol: str, seed: int = 0, *, dataset: str = "",
               query_per_class: Optional[int] = None, n_query: Optional[int] = None,
               train_per_class: Optional[int] = None, n_database: Optional[int] = None) -> Split:
    """Draw a split of ``protocol`` from the labels alone (pure function).

    Parameters
    ----------
    train_labels, test_labels : array of int, shape (n_train,), (n_test,)
        Labels of the dataset's train and test splits (the pool's two parts).
    protocol : str
        A name in :data:`PROTOCOLS`.
    seed : int
        Seed of the draw.
    query_per_class, n_query, train_per_class : int, optional
        Override the protocol's sizes (for smaller profiles).
    n_database : int, optional
        Keep a random subset of this many database images; training images
        drawn from the database are always kept.
    """
    config.check_choice("protocol", protocol, PROTOCOLS)
    spec = PROTOCOLS[protocol]
    overrides = {k: v for k, v in dict(query_per_class=query_per_class, n_query=n_query,
                                       train_per_class=train_per_class,
                                       n_database=n_database).items() if v is not None}
    for k, v in overrides.items():
        if int(v) <= 0:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    if "query_per_class" in overrides or "n_query" in overrides:
        spec = dataclasses.replace(spec, query_per_class=query_per_class, n_query=n_query)
    if "train_per_class" in overrides:
        spec = dataclasses.replace(spec, train_per_class=train_per_class)

    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    labels = np.concatenate([train_labels, test_labels])
    n_tr = train_labels.size
    rng = np.random.default_rng(seed)

    candidates = np.arange(labels.size) if spec.query_from == "pool" else np.arange(n_tr, labels.size)
    if spec.query_per_class is not None:
        query = _stratified(rng, candidates, labels, spec.query_per_class, "queries")
    elif spec.n_query is not None:
        if spec.n_query > candidates.size:
            raise ValueError(f"queries: {spec.n_query} requested, only {candidates.size} images")
        query = np.sort(rng.choice(candidates, size=spec.n_query, replace=False))
    else:
        query = candidates

    if spec.database == "rest":
        database = np.setdiff1d(np.arange(labels.size), query)
    else:
        database = np.arange(n_tr)
    if spec.train_per_class is not None:
        train = _stratified(rng, database, labels, spec.train_per_class, "training images")
    else:
        train = database
    if n_database is not None and n_database < database.size:
        if train is database:  # the database is also the training set: subsample both
            database = np.sort(rng.choice(database, size=n_database, replace=False))
            train = database
        else:  # keep every training image, fill up with random other database images
            if n_database < train.size:
                raise ValueError(f"n_database={n_database} is smaller than the training set "
                                 f"({train.size} images); raise it or lower train_per_class")
            others = np.setdiff1d(database, train)
            picked = rng.choice(others, size=n_database - train.size, replace=False)
            database = np.sort(np.concatenate([picked, train]))

    suffix = ",".join(f"{k}={v}" for k, v in overrides.items())
    name = f"{protocol}[{suffix}]" if suffix else protocol
    return Split(dataset=dataset, protocol=protocol, name=name, seed=int(seed),
                 query=query.astype(np.int64), database=database.astype(np.int64),
                 train=train.astype(np.int64), n_train_split=n_tr, n_test_split=test_labels.size,
                 description=spec.description)


def _labels_digest(train_labels: np.ndarray, test_labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (train_labels, test_labels):
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def _split_path(dataset: str, name: str, seed: int) -> Path:
    from .data import file_token

    safe = name.replace("[", "_").replace("]", "").replace(",", "_").replace("=", "")
    return config.cache_dir("splits") / f"{file_token(dataset)}-{safe}-seed{seed}.npz"


def get_split(dataset: str, protocol: str, seed: int = 0, *, root=None, **overrides) -> Split:
    """Load the saved split of ``protocol`` on ``dataset`` for ``seed``, drawing it once.

    ``overrides`` are the size overrides of :func:`make_split`. The dataset's
    labels are read through :mod:`hashstudy.data` (cached), and the split is
    saved under ``<cache>/splits``. If a saved split exists but was drawn for
    different labels, :class:`SplitMismatchError` says which file to delete.
    """
    from . import data

    config.check_choice("protocol", protocol, PROTOCOLS)
    train = data.load(dataset, "train", root=root)
    test = data.load(dataset, "test", root=root)
    digest = _labels_digest(train.labels, test.labels)
    fresh = make_split(train.labels, test.labels, protocol, seed, dataset=dataset, **overrides)
    path = _split_path(dataset, fresh.name, seed)
    saved = cache.load_if_intact(path)
    if saved is not None:
        if saved["labels_digest"].tobytes().decode() != digest:
            raise SplitMismatchError(
                f"the saved split {path} was drawn for different {dataset} labels than the "
                f"data now at {train.source}; delete that file to draw the split anew"
            )
        return dataclasses.replace(fresh, query=saved["query"], database=saved["database"],
                                   train=saved["train"])
    cache.save_arrays(path, query=fresh.query, database=fresh.database, train=fresh.train,
                      labels_digest=np.frombuffer(digest.encode(), dtype=np.uint8))
    return fresh


def load_pool(dataset: str, *, root=None):
    """The pool of ``dataset``: train then test images, labels and class names.

    Returns
    -------
    images : ndarray uint8 (N, H, W, C)
    labels : ndarray int64 (N,)
    classes : list of str
    """
    from . import data

    train = data.load(dataset, "train", root=root)
    test = data.load(dataset, "test", root=root)
    return (np.concatenate([train.images, test.images]),
            np.concatenate([train.labels, test.labels]), list(train.classes))


# --------------------------------------------------------------------------- #
# Notebook 04 (04_ddh): model-selection splits inside a protocol's training
# images (hashstudy.ddh keeps ``holdout_split`` as an alias)
# --------------------------------------------------------------------------- #


def _save_derived(split: Split) -> Split:
    """Save a split derived from another one under ``<cache>/splits`` (by its name and seed)."""
    path = _split_path(split.dataset or "pool", split.name.replace("/", "--"), split.seed)
    saved = cache.load_if_intact(path)
    if saved is None or not all(np.array_equal(saved[k], getattr(split, k))
                                for k in ("query", "database", "train")):
        cache.save_arrays(path, query=split.query, database=split.database, train=split.train)
    return split


def holdout_split(split: Split, labels, query_per_class: int, seed: int = 0) -> Split:
    """A model-selection split inside the training images of ``split``.

    Queries are ``query_per_class`` training images per class; the other
    training images are the database and the training set. The test queries
    of ``split`` are never touched, so hyper-parameters chosen on this split
    do not look at them.

    Parameters
    ----------
    split : Split
    labels : array_like of int, shape (N_pool,)
        Labels of the pool ``split`` indexes.
    query_per_class : int
    seed : int

    Returns
    -------
    Split
        Named ``"<split.name>/holdout[query_per_class=q]"``.
    """
    labels = np.asarray(labels)
    if isinstance(query_per_class, (bool, np.bool_)) or \
            not isinstance(query_per_class, (int, np.integer)) or query_per_class < 1:
        raise ValueError(f"query_per_class must be a positive integer, got {query_per_class!r}")
    q = int(query_per_class)
    rng = np.random.default_rng(seed)
    train = np.asarray(split.train)
    picked = []
    for c in np.unique(labels[train]):
        members = train[labels[train] == c]
        if members.size <= q:
            raise ValueError(f"class {c} has {members.size} training images; cannot hold out {q}")
        picked.append(rng.choice(members, q, replace=False))
    query = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(train, query)
    return dataclasses.replace(
        split, name=f"{split.name}/holdout[query_per_class={q}]", seed=int(seed), query=query,
        database=rest, train=rest,
        description=f"{q} training images per class as queries against the other training "
                    f"images (database and training set); model selection only")


def ddh_holdout(split: Split, fit_index, holdout_index, *, save: bool = True) -> Split:
    """The early-stopping split of a fitted DDH model, as a named, saved split.

    ``fit_index`` and ``holdout_index`` are the rows of ``split.train`` that
    :class:`hashstudy.ddh.DDH` fitted and held out (its ``fit_index_`` and
    ``holdout_index_``, drawn with its seed): the held-out training images
    are the queries and the fitted ones the database and training set. The
    test queries of ``split`` take no part. Named
    ``"<split.name>/ddh-holdout[<number held out>]"`` and saved under
    ``<cache>/splits`` (``save=False``: not saved).
    """
    train = np.asarray(split.train)
    fit_index, holdout_index = np.asarray(fit_index), np.asarray(holdout_index)
    if np.intersect1d(fit_index, holdout_index).size:
        raise ValueError("a training row is both fitted and held out")
    out = dataclasses.replace(
        split, name=f"{split.name}/ddh-holdout[{holdout_index.size}]", query=train[holdout_index],
        database=train[fit_index], train=train[fit_index],
        description="the reported DDH's held-out training images as queries against its fitted images")
    return _save_derived(out) if save else out


# --------------------------------------------------------------------------- #
# Notebook 03 (03_tanh_autoencoder): test-vs-test, random test queries against
# the whole test split, each query's own image left out of its ranking
# --------------------------------------------------------------------------- #
# The paper: "use the encoder to create hash codes for the test images ... randomly select an
# image, generate binary code and search through the codes derived from test set". The database
# is the whole test split, so it holds every query: the evaluation leaves each query's own image
# out of its ranking (hashstudy.autoencoder.evaluate_excluding_self). The draw (queries, then an
# optional training subset) is not one of make_split's, so the protocol is this function, named
# "test-vs-test" in every Split it returns.

__all__ += ["TEST_VS_TEST", "test_vs_test_split"]

TEST_VS_TEST = ("random test images as queries against the whole test split as database (each "
                "query's own image removed from its ranking); hash functions trained on the "
                "training split")


def test_vs_test_split(dataset: str, n_query: int, seed: int = 0, *, n_train: Optional[int] = None,
                       root=None) -> Split:
    """Notebook 03's protocol (the tanh-autoencoder paper, sec. 5) as a :class:`Split`, saved once.

    Parameters
    ----------
    dataset : str
        A name known to :mod:`hashstudy.data`.
    n_query : int
        Random test images used as queries (not stratified).
    seed : int
        Seed of the draw (queries first, then the training subset).
    n_train : int, optional
        A random subset of the training split to train on (default: all of it).

    Returns
    -------
    Split
        ``query``: sorted test pool indices; ``database``: every test pool
        index ``n_train_split .. n_train_split + n_test_split - 1``; ``train``:
        sorted training indices. Its name is ``"test-vs-test"`` plus the sizes,
        e.g. ``"test-vs-test[n_query=1000,n_train=20000]"``. The draw is saved
        under ``<cache>/splits`` and reloaded; a saved draw for different labels
        raises :class:`SplitMismatchError`.
    """
    from . import data

    train = data.load(dataset, "train", root=root)
    test = data.load(dataset, "test", root=root)
    n_tr, n_te = len(train.labels), len(test.labels)
    for name, value, high in (("n_query", n_query, n_te), ("n_train", n_train, n_tr)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if value > high:
            raise ValueError(f"{name}={value} exceeds the {high} images available in {dataset}")
    h = hashlib.sha256(np.ascontiguousarray(train.labels).tobytes() + b"|"
                       + np.ascontiguousarray(test.labels).tobytes())
    digest = np.frombuffer(h.hexdigest()[:16].encode(), dtype=np.uint8)
    sizes = f"n_query={n_query}" + (f",n_train={n_train}" if n_train is not None else "")
    name = f"test-vs-test[{sizes}]"

    def draw():
        rng = np.random.default_rng(seed)
        query = np.sort(rng.choice(n_te, size=n_query, replace=False)) + n_tr
        tr = (np.arange(n_tr) if n_train is None
              else np.sort(rng.choice(n_tr, size=n_train, replace=False)))
        return {"query": query.astype(np.int64), "train": tr.astype(np.int64), "labels_digest": digest}

    path = config.cache_dir("splits") / f"{data.file_token(dataset)}-test-vs-test_{sizes.replace(',', '_').replace('=', '')}-seed{seed}.npz"
    saved = cache.cached_arrays(path, draw)
    if not np.array_equal(saved["labels_digest"], digest):
        raise SplitMismatchError(
            f"the saved split {path} was drawn for different {dataset} labels than the data now at "
            f"{train.source}; delete that file to draw the split anew")
    return Split(dataset=dataset, protocol="test-vs-test", name=name, seed=int(seed),
                           query=saved["query"], database=np.arange(n_tr, n_tr + n_te, dtype=np.int64),
                           train=saved["train"], n_train_split=n_tr, n_test_split=n_te,
                           description=TEST_VS_TEST)


# --------------------------------------------------------------------------- #
# Notebooks 01 and 05 (DSTH, both versions): queries from the test split, the
# other test images as database, training on random training images
# (hashstudy.dsth keeps ``test_query_split`` as an alias)
# --------------------------------------------------------------------------- #


def _test_query_base(query_per_class, n_query) -> tuple[str, dict]:
    if (query_per_class is None) == (n_query is None):
        raise ValueError("give exactly one of query_per_class and n_query")
    if query_per_class is not None:
        base = {10: "test10pc-train", 100: "test100pc-train"}.get(int(query_per_class))
        return (base, {}) if base else ("test10pc-train",
                                         {"query_per_class": int(query_per_class)})
    return "test1k-train", ({} if int(n_query) == 1000 else {"n_query": int(n_query)})


def test_query_split(dataset: str, *, seed: int = 0, query_per_class: Optional[int] = None,
                     n_query: Optional[int] = None, n_train: Optional[int] = None,
                     root=None) -> Split:
    """Queries from the test split, the other test images as database (DSTH sec. 3.1, notebook 01).

    The paper maps "10,000 test images into hash codes" and draws "10 samples
    respectively and randomly in each category" as queries; the database is
    therefore the test split less the queries, every item of which is unseen
    by every method. Training uses ``n_train`` random training images (all
    when ``None``).

    The query draw is the saved split of the built-in protocol
    ``test10pc-train`` (``query_per_class``; ``test100pc-train`` for 100) or
    ``test1k-train`` (``n_query``), and the training draw the saved
    ``test-train[n_database=n_train]``, both from :func:`hashstudy.get_split`,
    so they are drawn once and reused.

    Returns
    -------
    Split
        Indices into the dataset's pool (training split, then test split),
        named e.g. ``test10pc-test[n_train=10000]``.
    """
    base, overrides = _test_query_base(query_per_class, n_query)
    q_split = get_split(dataset, base, seed, root=root, **overrides)
    n_tr, n_te = q_split.n_train_split, q_split.n_test_split
    if n_train is not None and int(n_train) < n_tr:
        train = get_split(dataset, "test-train", seed, root=root,
                                    n_database=int(n_train)).train
        overrides = {**overrides, "n_train": int(n_train)}
    else:
        train = np.arange(n_tr, dtype=np.int64)
    database = np.setdiff1d(np.arange(n_tr, n_tr + n_te), q_split.query)
    if database.size == 0:
        raise ValueError("every test image is a query; lower query_per_class / n_query")
    name = base.replace("-train", "-test")
    if overrides:
        name += "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
    who = (f"{query_per_class} random test images per class" if query_per_class is not None
           else f"{n_query} random test images")
    description = (f"{who} as queries, the other test images as database; training on "
                   f"{train.size} random training images")
    return dataclasses.replace(q_split, protocol=name, name=name, database=database,
                               train=train.astype(np.int64), description=description)


__all__.append("test_query_split")
