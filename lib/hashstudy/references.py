"""Reference points that frame hashing numbers across papers.

After Sablayrolles, Douze, Usunier and Jégou, "How should we evaluate
supervised hashing?" (ICASSP 2017). A mAP of supervised codes means little
without knowing what a trivial method gets on the same protocol, so every
comparison can report, beside the codes:

:func:`cosine_ranking`
    Real-valued retrieval by cosine similarity of the features the codes are
    learnt from: the ceiling a code of those features can approach.
:class:`ClassifierCode`
    The paper's classifier-code baseline: a linear classifier trained on the
    training features; each database item is stored as its predicted class
    (``ceil(log2 C)`` bits) and a query ranks the database by its own
    predicted probability of each stored class. On a protocol whose queries
    come from the training classes, it beats most supervised hashing methods.
:func:`transfer_classes`, :func:`transfer_split`
    The paper's remedy: train on some classes ("seen") and retrieve among the
    others ("unseen"), so that a code cannot succeed merely by classifying.
:func:`constant_code_check`
    Codes that are all equal, evaluated through :func:`hashstudy.metrics.evaluate`:
    the value any ranking metric must take when nothing is learnt, derived in
    closed form and checked, as a self-test of the evaluation.

Every ranking metric uses the definitions of :mod:`hashstudy.metrics` (AP@k
normalised by the relevant items in the top ``k``; ties averaged over
uniformly random orders), through :func:`hashstudy.metrics.evaluate_levels`.

The constant-code closed form
-----------------------------
With all codes equal, every database item is tied with every other, so
``ties="average"`` gives the AP of a uniformly random ranking of ``N`` items
of which ``R`` are relevant. A relevant item sits at rank ``i`` with
probability ``1/N``, and ``(R-1)(i-1)/(N-1)`` other relevant items precede it
on average, so its expected precision is ``(1 + (R-1)(i-1)/(N-1)) / i``.
Averaging over ``i``, with ``H_N = sum_{i=1..N} 1/i``::

    E[AP@all] = (H_N + (R-1)(N-H_N)/(N-1)) / N
              = R/N + (N-R)(H_N-1) / (N(N-1))        (N >= 2, R >= 1)

and 0 for ``R = 0`` (1 for ``N = R = 1``). It is *not* the class prior
``R/N``: it exceeds it by ``(N-R)(H_N-1)/(N(N-1))``, about ``(1-R/N) ln(N)/N``
(1.7e-4 for CIFAR-10's 59,000-image database with ``R/N = 0.1``), because a
relevant item near the top adds a large precision. Precision at any cut-off
``k`` is, in expectation, exactly ``R/N``, so ``precision@k`` equals the
prior (mean over queries of ``R/N``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Iterable

import numpy as np

from . import cache, config, hamming, protocols, timing
from . import metrics as _metrics  # functions below take a parameter named ``metrics``

__all__ = [
    "REFERENCE_METRICS",
    "cosine_ranking",
    "ClassifierCode",
    "transfer_classes",
    "transfer_split",
    "expected_random_ap",
    "constant_code_check",
]

REFERENCE_METRICS = ("map@1000", "map_all", "precision@1000")

# queries are scored in chunks of at most this many (query, database) pairs;
# each pair costs about 50 bytes of temporaries (score, order, level, label)
_CHUNK_VALUES = 1 << 21

# report keys that rank by distinct real scores only (no radius, no histograms)
_SCORE_KEY_FORMS = "'map@<k>', 'map_all', 'precision@<k>', 'precision@recall<level>', 'max_f@<beta>'"


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------


def _check_features(x, name: str, n_features: int | None = None) -> np.ndarray:
    """A finite 2-D floating array (integer features become float64)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items, features), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if n_features is not None and a.shape[1] != n_features:
        raise ValueError(f"{name} has {a.shape[1]} features, expected {n_features}")
    step = max(1, _CHUNK_VALUES // max(1, a.shape[1]))  # no full-size mask of a large database
    if not all(np.isfinite(a[lo:lo + step]).all() for lo in range(0, a.shape[0], step)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _row_norms(x: np.ndarray, name: str) -> np.ndarray:
    """Euclidean norm of every row in float64 (rows in chunks), refusing zero rows."""
    out = np.empty(x.shape[0])
    step = max(1, _CHUNK_VALUES // max(1, x.shape[1]))
    for lo in range(0, x.shape[0], step):
        block = x[lo:lo + step].astype(np.float64, copy=False)
        out[lo:lo + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
    zero = np.flatnonzero(out == 0)
    if zero.size:
        raise ValueError(
            f"{name} row {zero[0]} is all zeros ({zero.size} such rows); cosine similarity "
            f"is undefined for a zero vector, so drop those items or add an offset"
        )
    return out


def _score_plan(metric_keys):
    plan, ap_at, ks, levels = _metrics._plan(metric_keys)
    for key, (kind, _) in plan.items():
        if kind in _metrics._HISTOGRAM_KINDS:
            raise ValueError(
                f"metric key {key!r} needs a Hamming radius or distance levels, which a ranking "
                f"by real scores does not have; allowed forms: {_SCORE_KEY_FORMS}"
            )
    return plan, ap_at, ks, levels


def _score_histograms(scores: np.ndarray, relevant: np.ndarray):
    """Level histograms of rankings by descending real score.

    Each distinct score of a row is one level (0 = highest); equal scores
    share a level. ``relevant`` is a boolean matrix of the same shape.

    Returns
    -------
    counts, relevant : ndarray of int64, shape (m, L)
        ``L`` the largest number of distinct scores in a row; unused levels
        are 0.
    """
    m, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    new = np.ones((m, n), dtype=np.int64)
    np.not_equal(ranked[:, 1:], ranked[:, :-1], out=new[:, 1:], casting="unsafe")
    del ranked
    level = np.cumsum(new, axis=1)
    level -= 1
    n_levels = int(level[:, -1].max()) + 1
    level += (np.arange(m, dtype=np.int64) * n_levels)[:, None]
    counts = np.bincount(level.ravel(), minlength=m * n_levels).reshape(m, n_levels)
    hits = np.take_along_axis(relevant, order, axis=1)
    rel = np.bincount(level[hits], minlength=m * n_levels).reshape(m, n_levels)
    return counts, rel


# ---------------------------------------------------------------------------
# real-valued retrieval
# ---------------------------------------------------------------------------


@timing.timed("evaluation")
def cosine_ranking(
    q_features, db_features, q_labels, db_labels,
    metrics: Iterable[str] = REFERENCE_METRICS,
) -> dict[str, float]:
    """Ranking metrics of retrieval by cosine similarity of real-valued features.

    The ceiling that binary codes of the same features can approach. Each
    query ranks the whole database by descending cosine similarity; metric
    definitions are those of :mod:`hashstudy.metrics`. Database items with
    exactly equal scores are ties, averaged as ``ties="average"`` averages
    equal Hamming distances (each distinct score is one level of
    :func:`hashstudy.metrics.evaluate_levels`). Ties are exact equalities of
    the computed scores: duplicated or one-hot features tie, while scores that
    are equal only mathematically may differ in the last bit and be ranked.

    Parameters
    ----------
    q_features : array_like, shape (Q, D)
    db_features : array_like, shape (N, D)
        Real features; integer features are converted to float64. Scores
        are computed in the features' precision (float32 stays float32, so a
        60,000 x 4,096 float32 database is not copied) and divided by the
        database norms in float64. No row may be all zeros.
    q_labels : array_like of int, shape (Q,)
    db_labels : array_like of int, shape (N,)
    metrics : iterable of str
        Ranking report keys of :func:`hashstudy.metrics.evaluate`:
        ``map@<k>``, ``map_all``, ``precision@<k>``,
        ``precision@recall<level>``, ``max_f@<beta>``. Radius keys
        (``hd<r>p`` ...) are refused: real scores have no radius.

    Returns
    -------
    dict of str to float
        One entry per requested key, in the order requested.

    Notes
    -----
    Queries are processed in chunks of at most ``_CHUNK_VALUES`` (2**21)
    query-database pairs, so memory stays near 100 MB whatever the number of
    queries (1,000 queries against 60,000 items run in about 30 chunks).
    """
    plan, ap_at, ks, levels = _score_plan(metrics)
    q = _check_features(q_features, "q_features")
    d = _check_features(db_features, "db_features", n_features=q.shape[1])
    ql = hamming.check_labels(q_labels, q.shape[0], "q_labels")
    dl = hamming.check_labels(db_labels, d.shape[0], "db_labels")
    dtype = np.result_type(q.dtype, d.dtype, np.float32)
    _row_norms(q, "q_features")  # only to refuse zero queries: a query's norm does not change its order
    d_norm = _row_norms(d, "db_features")
    d = d.astype(dtype, copy=False)
    n_q, n = q.shape[0], d.shape[0]
    step = max(1, _CHUNK_VALUES // n)

    def chunks():
        for lo in range(0, n_q, step):
            rows = slice(lo, min(lo + step, n_q))
            scores = (q[rows].astype(dtype, copy=False) @ d.T).astype(np.float64, copy=False)
            scores /= d_norm
            counts, rel = _score_histograms(scores, ql[rows, None] == dl[None, :])
            yield counts, rel, rel.sum(axis=1)

    s = _metrics._level_stats(chunks(), n_q, n, ap_at=ap_at, ks=ks, levels=levels,
                              keep_histograms=False)
    return _metrics._report(plan, ap_at, ks, levels, s)


# ---------------------------------------------------------------------------
# the classifier code
# ---------------------------------------------------------------------------


class ClassifierCode:
    """The classifier-code baseline of Sablayrolles et al. (ICASSP 2017).

    A multinomial logistic regression on standardised features (a
    scikit-learn pipeline ``StandardScaler`` -> ``LogisticRegression``, lbfgs,
    multinomial for more than two classes) is trained on the training
    features and class labels. Each database item is stored as the index of
    its predicted class, a code of ``bits_ = ceil(log2 C)`` bits for ``C``
    classes. A query ranks the database by its own predicted probability of
    each item's stored class: level 0 holds the items stored under the
    query's most probable class, level 1 those under its second most probable
    class, and so on (classes of exactly equal probability share a level).
    Items of one level are ties, averaged as ``ties="average"`` does.

    Parameters
    ----------
    C : float
        Inverse regularisation strength of the logistic regression.
    max_iter : int
        lbfgs iterations.
    seed : int
        ``random_state`` of the classifier (lbfgs itself is deterministic).

    Attributes
    ----------
    classes_ : ndarray of int64
        The training classes, sorted; stored codes index into it.
    bits_ : int
        ``ceil(log2 len(classes_))``.
    pipeline_ : sklearn.pipeline.Pipeline
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, seed: int = 0):
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not 0 < C < math.inf:
            raise ValueError(f"C must be a positive number, got {C!r}")
        if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) \
                or max_iter <= 0:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.seed = int(seed)

    def fit(self, X, y) -> "ClassifierCode":
        """Train the classifier on features ``X`` (n, D) and class labels ``y`` (n,)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X = _check_features(X, "X")
        y = hamming.check_labels(y, X.shape[0], "y")
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"the training labels hold {classes.size} class; a classifier "
                             f"code needs at least 2")
        self.pipeline_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed),
        ).fit(X, y)
        self.classes_ = self.pipeline_.classes_.astype(np.int64)
        self.bits_ = int(self.classes_.size - 1).bit_length()
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self):
        if not hasattr(self, "pipeline_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("ClassifierCode is not fitted yet: call fit(X, y) first")

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n, C), columns in the order of ``classes_``."""
        self._check_fitted()
        X = _check_features(X, "X", n_features=self.n_features_in_)
        return self.pipeline_.predict_proba(X)

    def encode(self, X) -> np.ndarray:
        """Stored codes: the index into ``classes_`` of each item's predicted class (int64)."""
        return np.argmax(self.predict_proba(X), axis=1).astype(np.int64)

    def predict(self, X) -> np.ndarray:
        """Predicted class labels (values of ``classes_``)."""
        codes = self.encode(X)
        return self.classes_[codes]

    def _buckets(self, q_X, db_X, q_labels, db_labels):
        """Query probabilities, database bucket sizes and relevant items per bucket.

        Returns ``proba`` (Q, C), ``per_class`` (C,): database items stored
        under each class, and ``rel_by_class`` (Q, C): how many of those share
        the query's label.
        """
        proba = self.predict_proba(q_X)
        db_codes = self.encode(db_X)
        ql = hamming.check_labels(q_labels, proba.shape[0], "q_labels")
        dl = hamming.check_labels(db_labels, db_codes.size, "db_labels")
        n_c = self.classes_.size
        label_values, label_index = np.unique(dl, return_inverse=True)
        per_label = np.bincount(label_index * n_c + db_codes,
                                minlength=label_values.size * n_c).reshape(-1, n_c)
        pos = np.minimum(np.searchsorted(label_values, ql), label_values.size - 1)
        known = label_values[pos] == ql  # a query label absent from the database has no relevant item
        rel_by_class = np.where(known[:, None], per_label[pos], 0)
        return proba, np.bincount(db_codes, minlength=n_c), rel_by_class, ql

    def level_histograms(self, q_X, db_X, q_labels, db_labels):
        """Per-query level histograms of the classifier-code ranking.

        Returns
        -------
        counts, relevant : ndarray of int64, shape (Q, C)
            Database items and relevant items at each level (level = rank of
            the stored class among the query's class probabilities; classes
            of equal probability share a level; unused levels are 0). A
            level whose class holds no database item is empty, and the
            ranking goes on with the next class.
        """
        proba, per_class, rel_by_class, _ = self._buckets(q_X, db_X, q_labels, db_labels)
        return _class_levels(proba, np.broadcast_to(per_class, proba.shape), rel_by_class)

    def evaluate(
        self, q_X, db_X, q_labels, db_labels,
        metrics: Iterable[str] = REFERENCE_METRICS,
    ) -> dict[str, float]:
        """Retrieval metrics of the classifier code, plus its accuracy.

        Parameters
        ----------
        q_X : array_like, shape (Q, D)
            Query features (ranked by their class probabilities).
        db_X : array_like, shape (N, D)
            Database features (stored as their predicted class).
        q_labels, db_labels : array_like of int
            Class labels; relevance is label equality.
        metrics : iterable of str
            Report keys of :func:`hashstudy.metrics.evaluate_levels`
            (``hd<r>p`` there reads "the query's ``r + 1`` most probable
            classes").

        Returns
        -------
        dict of str to float
            The requested keys, then ``"accuracy"`` (the share of queries
            whose predicted class is their label), ``"same_class_precision"``
            (mean over queries of the precision of the database items stored
            under the query's predicted class: the reading of ``hd0p`` where
            stored codes at Hamming distance 0 are equal classes; a query
            whose predicted class holds no database item counts 0) and
            ``"same_class_answered"`` (the share of queries whose predicted
            class holds at least one database item).
        """
        plan = _metrics._plan(metrics)[0]  # refuse bad keys before any work
        proba, per_class, rel_by_class, ql = self._buckets(q_X, db_X, q_labels, db_labels)
        counts, relevant = _class_levels(proba, np.broadcast_to(per_class, proba.shape),
                                         rel_by_class)
        out = _metrics.evaluate_levels(counts, relevant, rel_by_class.sum(axis=1), list(plan))
        predicted = np.argmax(proba, axis=1)
        rows = np.arange(ql.size)
        bucket = per_class[predicted]
        precision = np.divide(rel_by_class[rows, predicted], bucket, out=np.zeros(ql.size),
                              where=bucket > 0)
        out["accuracy"] = float(np.mean(self.classes_[predicted] == ql))
        out["same_class_precision"] = float(np.mean(precision))
        out["same_class_answered"] = float(np.mean(bucket > 0))
        return out


def _class_levels(scores: np.ndarray, items: np.ndarray, relevant: np.ndarray):
    """Histograms over levels of descending ``scores`` per row (one column per class).

    ``items[q, c]`` / ``relevant[q, c]`` items and relevant items carry score
    ``scores[q, c]``; equal scores share a level.
    """
    m, n_c = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    new = np.ones((m, n_c), dtype=np.int64)
    new[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    level = np.empty((m, n_c), dtype=np.int64)
    np.put_along_axis(level, order, np.cumsum(new, axis=1) - 1, axis=1)
    rows = np.arange(m)
    counts = np.zeros((m, n_c), dtype=np.int64)
    rel = np.zeros((m, n_c), dtype=np.int64)
    for c in range(n_c):  # one level per row and class: no repeated index within a step
        counts[rows, level[:, c]] += items[:, c]
        rel[rows, level[:, c]] += relevant[:, c]
    return counts, rel


# ---------------------------------------------------------------------------
# class transfer
# ---------------------------------------------------------------------------


def _check_n_seen(n_seen, n_classes: int) -> int:
    if isinstance(n_seen, (bool, np.bool_)) or not isinstance(n_seen, (int, np.integer)):
        raise ValueError(f"n_seen must be an integer, got {n_seen!r}")
    if not 1 <= n_seen < n_classes:
        raise ValueError(
            f"n_seen={n_seen}: the labels hold {n_classes} classes, so n_seen must lie in "
            f"1..{n_classes - 1} (at least one class seen and one unseen)"
        )
    return int(n_seen)


def transfer_classes(labels, n_seen: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded choice of ``n_seen`` seen classes among the classes present in ``labels``.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
    n_seen : int
        Classes to train on, ``1 <= n_seen < number of classes``
        (Sablayrolles et al. use 75 % of the classes: 7 of CIFAR-10's 10).
    seed : int

    Returns
    -------
    seen, unseen : ndarray of int64
        Sorted, disjoint, together every class present.
    """
    labels = np.asarray(labels)
    labels = hamming.check_labels(labels, labels.shape[0] if labels.ndim else 0, "labels")
    classes = np.unique(labels)
    n_seen = _check_n_seen(n_seen, classes.size)
    rng = np.random.default_rng(seed)
    seen = np.sort(rng.choice(classes, size=n_seen, replace=False)).astype(np.int64)
    return seen, np.setdiff1d(classes, seen).astype(np.int64)


def _transfer_path(split, n_seen: int, seed: int) -> Path:
    from .data import file_token

    dataset = file_token(split.dataset) if split.dataset else "unnamed"
    safe = split.name.replace("[", "_").replace("]", "").replace(",", "_").replace("=", "")
    return config.cache_dir("splits") / f"{dataset}-{safe}-seed{split.seed}-transfer{n_seen}-seed{seed}.npz"


def _classes_digest(classes: np.ndarray) -> np.ndarray:
    digest = hashlib.sha256(np.ascontiguousarray(classes, dtype=np.int64).tobytes()).hexdigest()[:16]
    return np.frombuffer(digest.encode(), dtype=np.uint8)


def transfer_split(split, labels, n_seen: int = 7, seed: int = 0):
    """The class-transfer version of ``split``: train on seen classes, retrieve unseen ones.

    ``train`` keeps the training images of the seen classes; ``query`` and
    ``database`` keep the items of the unseen classes. The classes are drawn
    with :func:`transfer_classes` on ``labels`` and saved under
    ``<cache>/splits`` (a file named after the dataset, the split's name and
    seed, ``n_seen`` and ``seed``) the first time; later calls load them, so a
    transfer split is never redrawn silently.

    Parameters
    ----------
    split : protocols.Split
        Any split (a dataclass with ``query``, ``database``, ``train`` pool
        indices, ``dataset``, ``name``, ``seed`` and ``description``).
    labels : array_like of int
        Labels of the pool that the split indexes.
    n_seen : int
        Seen classes (default 7, as for CIFAR-10 in Sablayrolles et al.).
    seed : int
        Seed of the class choice (independent of the split's own seed).

    Returns
    -------
    protocols.Split
        A copy of ``split`` (``dataclasses.replace``) with the three index
        arrays filtered, ``name`` suffixed with ``"+transfer<n_seen>"`` (and
        ``"[seed=<seed>]"`` for a seed other than 0), and the classes named in
        ``description``.

    Raises
    ------
    protocols.SplitMismatchError
        The saved classes were drawn among other classes than those now in
        ``labels``; the message names the file to delete.
    """
    labels = np.asarray(labels)
    labels = hamming.check_labels(labels, labels.shape[0] if labels.ndim else 0, "labels")
    for part in ("query", "database", "train"):
        idx = np.asarray(getattr(split, part))
        if idx.size and (idx.min() < 0 or idx.max() >= labels.size):
            raise ValueError(f"split.{part} indexes beyond the {labels.size} labels given; pass "
                             f"the labels of the pool the split was drawn from")
    classes = np.unique(labels)
    n_seen = _check_n_seen(n_seen, classes.size)
    fresh_seen, fresh_unseen = transfer_classes(labels, n_seen, seed)
    path = _transfer_path(split, n_seen, seed)
    seen = None
    saved = cache.load_if_intact(path)
    if saved is not None:
        if saved["classes_digest"].tobytes() != _classes_digest(classes).tobytes():
            raise protocols.SplitMismatchError(
                f"the saved transfer classes {path} were drawn among other classes than the "
                f"{classes.size} now in the labels; delete that file to draw them anew"
            )
        seen, unseen = saved["seen"].astype(np.int64), saved["unseen"].astype(np.int64)
    if seen is None:
        seen, unseen = fresh_seen, fresh_unseen
        cache.save_arrays(path, seen=seen, unseen=unseen, classes_digest=_classes_digest(classes))

    def keep(part, wanted):
        idx = np.asarray(getattr(split, part), dtype=np.int64)
        out = idx[np.isin(labels[idx], wanted)]
        if out.size == 0:
            raise ValueError(f"the transfer split has no {part} items: split.{part} holds no image "
                             f"of classes {wanted.tolist()}")
        return out

    suffix = f"+transfer{n_seen}" + (f"[seed={seed}]" if seed != 0 else "")
    description = (f"{split.description}; classes {seen.tolist()} seen in training, "
                   f"{unseen.tolist()} unseen as queries and database").lstrip("; ")
    return dataclasses.replace(
        split, name=split.name + suffix, query=keep("query", unseen),
        database=keep("database", unseen), train=keep("train", seen), description=description,
    )


# ---------------------------------------------------------------------------
# the constant-code self-check
# ---------------------------------------------------------------------------


def expected_random_ap(n_rel, n_database: int) -> np.ndarray:
    """Expected AP@all of a uniformly random ranking, per query.

    ``R/N + (N-R)(H_N-1)/(N(N-1))`` for ``R >= 1`` relevant items among
    ``N >= 2`` (``H_N`` the harmonic number), 0 for ``R = 0`` and 1 for
    ``N = R = 1``; derived in the module docstring.

    Parameters
    ----------
    n_rel : array_like of int, shape (Q,)
        Relevant items ``R`` per query, ``0 <= R <= N``.
    n_database : int
        Database size ``N >= 1``.
    """
    R = np.asarray(n_rel, dtype=np.int64)
    if isinstance(n_database, (bool, np.bool_)) or not isinstance(n_database, (int, np.integer)) \
            or n_database < 1:
        raise ValueError(f"n_database must be a positive integer, got {n_database!r}")
    N = int(n_database)
    if R.size and (R.min() < 0 or R.max() > N):
        raise ValueError(f"n_rel must lie in 0..n_database={N}")
    if N == 1:
        return (R > 0).astype(np.float64)
    h = float(np.sum(1.0 / np.arange(1, N + 1)))
    ap = R / N + (N - R) * (h - 1.0) / (N * (N - 1.0))
    return np.where(R > 0, ap, 0.0)


def constant_code_check(q_labels, db_labels, n_bits: int = 32) -> dict[str, float]:
    """Evaluate all-equal codes and check the result against its closed form.

    Every query and database code is the same ``n_bits``-bit code, so all
    distances tie and :func:`hashstudy.metrics.evaluate` (``ties="average"``)
    must give the metrics of a uniformly random ranking: ``map_all`` equal to
    the mean of :func:`expected_random_ap` and ``precision@1000`` equal to the
    class prior (mean over queries of ``R/N``). The check is a self-test of
    the evaluation, and its numbers are the floor a code must beat.

    Parameters
    ----------
    q_labels : array_like of int, shape (Q,)
    db_labels : array_like of int, shape (N,)
    n_bits : int
        Length of the constant code (the value does not depend on it).

    Returns
    -------
    dict of str to float
        ``map@1000``, ``map_all``, ``precision@1000`` and ``hd0p`` of the
        constant codes; ``prior``; ``expected_map_all`` (the closed form) and
        ``map_all_minus_prior`` (its excess over the prior).

    Raises
    ------
    AssertionError
        ``map_all`` differs from the closed form, or ``precision@1000`` or
        ``hd0p`` from the prior, by more than 1e-9.
    """
    (n_bits,) = config.check_bits(n_bits)
    ql = np.asarray(q_labels)
    dl = np.asarray(db_labels)
    ql = hamming.check_labels(ql, ql.shape[0] if ql.ndim else 0, "q_labels")
    dl = hamming.check_labels(dl, dl.shape[0] if dl.ndim else 0, "db_labels")
    q_codes = np.zeros((ql.size, n_bits), dtype=np.uint8)
    db_codes = np.zeros((dl.size, n_bits), dtype=np.uint8)
    got = _metrics.evaluate(q_codes, db_codes, ql, dl,
                            metrics=("map@1000", "map_all", "precision@1000", "hd0p"))
    n_rel = hamming.relevant_totals(ql, dl)
    prior = float(np.mean(n_rel / dl.size))
    expected = float(np.mean(expected_random_ap(n_rel, dl.size)))
    for key, target, what in (("map_all", expected, "the closed form R/N + (N-R)(H_N-1)/(N(N-1))"),
                              ("precision@1000", prior, "the class prior"),
                              ("hd0p", prior, "the class prior")):
        if not abs(got[key] - target) <= 1e-9:
            raise AssertionError(
                f"constant codes: {key} = {got[key]!r} but {what} gives {target!r}; the "
                f"tie-averaged evaluation in hashstudy.metrics is broken"
            )
    return {**got, "prior": prior, "expected_map_all": expected,
            "map_all_minus_prior": expected - prior}
