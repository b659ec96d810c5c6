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


# ===========================================================================
# Notebook 01 (01_dsth_mm2015, DSTH conference version): queries from the test
# split, the other test images as database, training on random training images.
# Also used by notebook 05 and hashstudy.dsth_journal (via the alias
# hashstudy.dsth.test_query_split).
# ===========================================================================


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
# ===========================================================================
# end of notebook 01's block
# ===========================================================================
