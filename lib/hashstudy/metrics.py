"""Retrieval metrics of binary codes under single-label relevance.

Every function takes query codes, database codes (any form accepted by
:mod:`hashstudy.hamming`: ``{0, 1}`` or ``{-1, +1}`` matrices, or
:class:`~hashstudy.hamming.PackedCodes`) and their integer class labels. A
database item is *relevant* to a query when their labels are equal. Nothing
here knows how the codes were made.

Definitions
-----------
Let a query have ``R`` relevant items among the ``N`` database items.

Hamming ranking and ties
    The database sorted by Hamming distance. Items at equal distance are
    ties, and with binary codes there are many of them. Every ranking metric
    here is, by default (``ties="average"``), the *expected* value over all
    orders that shuffle items of equal distance uniformly at random (McSherry
    and Najork, ECIR 2008), computed exactly from each query's histogram of
    distances (no sampling). The result does not depend on the order in which
    the database is stored: a database sorted by class and the same database
    shuffled give the same numbers, and codes that are all equal give the
    class prior at every cut-off. ``ties="index"`` instead breaks ties by
    database index (``np.argsort(dist, kind="stable")``), as the common
    per-query evaluation loops do; it is kept for the bit-exact check against
    such a loop, and it is never used for a reported number.
AP@k (``map@<k>``, ``map_all``)
    The convention of the common deep-hashing evaluation code (``CalcTopMap``
    of DPSH and HashNet): over the top ``k`` of the ranking,
    ``AP@k = (1 / n_k) * sum_m m / rank_m``, where ``n_k`` is the number of
    relevant items in the top ``k`` and ``rank_m`` the 1-based rank of the
    ``m``-th of them (terms added in rank order). A query with no relevant item
    in its top ``k`` has ``AP = 0`` and still counts in the mean. ``map_all``
    is ``k = N``; ``k > N`` is the same as ``k = N``. With ``ties="average"``
    the value is the expectation of this quantity, including the randomness
    of which items of the cut-off distance fall inside the top ``k``.
precision@k, RIP
    Relevant items in the top ``k``, divided by ``min(k, N)``, averaged over
    queries. The "returned image precision" (RIP) of the DSTH journal paper is
    this quantity as a function of the number of returned images.
Hamming-radius curves (``hd<r>p``, PR curve, max F)
    A query *retrieves* every item within Hamming distance ``<= r``; there are
    no ties to break. Per query, precision = relevant retrieved / retrieved
    and recall = relevant retrieved / ``R`` (0 when ``R = 0``). The curves
    average these per-query values over queries (macro average) at each radius
    ``r = 0..bits``. A query that retrieves nothing has precision 0
    (``empty="zero"``, the default, and always in :func:`evaluate`) or is left
    out of the precision average (``empty="skip"``; ``nan`` when no query
    retrieves anything). HD2P / HD3P of the papers are ``hd2p`` / ``hd3p``.
precision@recall<level>
    From the Hamming ranking: per query with ``R > 0``, let
    ``j = ceil(level * R)``; the value is ``j / rank_j``, the precision at the
    first rank where recall reaches ``level`` (no interpolation). Queries with
    ``R = 0`` count as 0. Averaged over queries. The DSTH journal paper's
    Table III reports levels 0.1, 0.2, 0.4, 0.6, 0.8 and 1.
max_f@<beta>
    The DSTH journal paper's max F-measure (Tables III and IV): the largest
    ``F_beta = (1 + beta^2) P R / (beta^2 P + R)`` over the six tabulated
    points ``(P, R)`` = (precision@recall<R>, R) for R = 0.1, 0.2, 0.4, 0.6,
    0.8, 1.0 (0 where ``P = R = 0``). Recomputed from the paper's own printed
    points this reproduces the printed max F of its tables (see
    :func:`max_f_from_points`). The paper reports ``beta = 0.5`` and ``0.25``.
max_f_radius@<beta>
    The same maximum taken over the ``bits + 1`` points of the Hamming-radius
    PR curve instead (a query retrieving nothing has precision 0). Not the
    paper's definition; kept because it needs no ranking.
nc<n>p
    Our reading of the DSTH journal paper's NC3P, "precision for searched
    images in nearest 3 classes" (figure captions: "nearest class <= 3"): a
    query retrieves the items at its ``n`` smallest *occupied* Hamming
    distances, and the value is the mean precision of that set. The paper does
    not define it further.

Report keys of :func:`evaluate`
-------------------------------
``map@<k>``, ``map_all``, ``precision@<k>``, ``precision@recall<level>``,
``hd<r>p``, ``hd<r>p_answered`` (fraction of queries retrieving at least one
item within radius ``r``), ``max_f@<beta>``, ``max_f_radius@<beta>``, ``nc<n>p``. Integers are written
plainly (``map@1000``, ``hd2p``), levels and betas as Python writes the float
(``precision@recall0.1``, ``precision@recall1.0``, ``max_f@0.5``); other
spellings are refused so that report keys stay stable.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from numba import njit, prange

from . import hamming, timing
from .config import check_choice

__all__ = [
    "TIES",
    "EMPTY",
    "DEFAULT_METRICS",
    "DEFAULT_RECALL_LEVELS",
    "PRCurve",
    "RadiusPrecision",
    "average_precision",
    "mean_average_precision",
    "precision_at_k",
    "precision_curve",
    "returned_image_precision",
    "pr_curve",
    "precision_within_radius",
    "precision_at_recall",
    "max_f_measure",
    "max_f_radius",
    "max_f_from_points",
    "precision_nearest_distances",
    "evaluate",
    "evaluate_levels",
]

TIES = ("index", "average")
EMPTY = ("zero", "skip")
DEFAULT_RECALL_LEVELS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_METRICS = (
    "map@1000",
    "map_all",
    "precision@1000",
    "hd2p",
    "hd2p_answered",
    *(f"precision@recall{level!r}" for level in DEFAULT_RECALL_LEVELS),
    "max_f@0.5",
    "max_f@0.25",
    "max_f_radius@0.5",
)

# per-query ranking outputs are computed in chunks of queries holding at most
# this many values, so that curves over many cut-offs stay bounded in memory
_CHUNK_VALUES = 1 << 21


# ---------------------------------------------------------------------------
# input preparation
# ---------------------------------------------------------------------------


class _Problem(NamedTuple):
    q: hamming.PackedCodes
    d: hamming.PackedCodes
    ql: np.ndarray  # int64 (Q,)
    dl: np.ndarray  # int64 (N,)
    n_rel: np.ndarray  # int64 (Q,): relevant database items per query


def _problem(q_codes, db_codes, q_labels, db_labels) -> _Problem:
    q, d = hamming.pack(q_codes), hamming.pack(db_codes)
    if q.bits != d.bits:
        raise ValueError(
            f"query codes have {q.bits} bits but database codes have {d.bits} bits"
        )
    if len(q) == 0:
        raise ValueError("there are no queries")
    if len(d) == 0:
        raise ValueError("the database is empty")
    ql = hamming.check_labels(q_labels, len(q), "q_labels")
    dl = hamming.check_labels(db_labels, len(d), "db_labels")
    return _Problem(q, d, ql, dl, hamming.relevant_totals(ql, dl))


def _positive_ints(values, name: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be positive integers, got {v!r}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def _levels(levels) -> list[float]:
    out = []
    for v in levels:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"recall levels must be numbers in (0, 1], got {v!r}")
        if not 0.0 < float(v) <= 1.0:
            raise ValueError(f"recall levels must lie in (0, 1], got {v!r}")
        out.append(float(v))
    if not out:
        raise ValueError("levels is empty")
    return out


def _scalar_or_array(values, result: np.ndarray):
    """A float for a scalar request, the array for a sequence."""
    return float(result[0]) if np.ndim(values) == 0 else result


def _recall_ranks(n_rel: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """``j = ceil(level * R)`` per query and level, int64 (Q, L); 0 where R = 0.

    The product is rounded to 6 decimals first so that, e.g., ``0.55 * 100``
    (55.00000000000001 in binary floating point) gives 55, not 56.
    """
    prod = np.round(np.outer(n_rel, levels), 6)
    j = np.ceil(prod).astype(np.int64)
    return np.where(n_rel[:, None] > 0, np.maximum(j, 1), 0)


# ---------------------------------------------------------------------------
# tie-aware expectations from the distance histograms
# ---------------------------------------------------------------------------


@njit(cache=True)
def _slot_sums(c, m):
    """``S0 = sum_{i=1..m} 1/(c+i)`` and ``S1 = sum_{i=1..m} (i-1)/(c+i)``."""
    s0 = 0.0
    s1 = 0.0
    for i in range(1, m + 1):
        inv = 1.0 / (c + i)
        s0 += inv
        s1 += (i - 1) * inv
    return s0, s1


@njit(cache=True)
def _expected_precision_sum(a, m, x, s0, s1):
    """Expected sum of the precisions at ``x`` relevant items.

    The ``x`` relevant items are shuffled uniformly at random with ``m - x``
    others into ranks ``c+1 .. c+m``, after ``c`` items of which ``a`` are
    relevant (``s0``, ``s1`` from :func:`_slot_sums`). A relevant item at slot
    ``i`` has on average ``(x-1)(i-1)/(m-1)`` relevant items before it within
    the block, so its expected precision is
    ``(a + 1 + (x-1)(i-1)/(m-1)) / (c+i)``; averaging ``i`` over ``1..m`` and
    multiplying by ``x`` gives the result.
    """
    if x == 0:
        return 0.0
    tail = (x - 1) / (m - 1) * s1 if m > 1 else 0.0
    return x / m * ((a + 1) * s0 + tail)


@njit(cache=True)
def _log_comb(n, k):
    return math.lgamma(n + 1.0) - math.lgamma(k + 1.0) - math.lgamma(n - k + 1.0)


@njit(cache=True)
def _expected_ap(counts, relevant, k):
    """Expected AP@k of one query under uniformly random order within distances."""
    c = 0  # items ranked before the current distance
    a = 0  # relevant items among them
    total = 0.0  # expected sum of precisions at relevant ranks so far
    for t in range(counts.shape[0]):
        n = counts[t]
        r = relevant[t]
        if n == 0:
            continue
        if c + n <= k:  # the whole distance bucket lies in the top k
            if r > 0:
                s0, s1 = _slot_sums(c, n)
                total += _expected_precision_sum(a, n, r, s0, s1)
            a += r
            c += n
            if c == k:
                break
            continue
        # the cut-off bucket: m of its n items enter the top k; the number x
        # of relevant ones among them is hypergeometric
        m = k - c
        if r == 0:
            break
        s0, s1 = _slot_sums(c, m)
        log_den = _log_comb(n, m)
        out = 0.0
        for x in range(max(0, m - (n - r)), min(m, r) + 1):
            if a + x == 0:
                continue
            px = math.exp(_log_comb(r, x) + _log_comb(n - r, m - x) - log_den)
            out += px * (total + _expected_precision_sum(a, m, x, s0, s1)) / (a + x)
        return out
    return total / a if a > 0 else 0.0


@njit(cache=True)
def _expected_hits(counts, relevant, k):
    """Expected number of relevant items in the top ``k`` of one query."""
    c = 0
    hits = 0.0
    for t in range(counts.shape[0]):
        n = counts[t]
        if n == 0:
            continue
        if c + n <= k:
            hits += relevant[t]
            c += n
            if c == k:
                break
        else:
            hits += (k - c) * relevant[t] / n
            break
    return hits


@njit(cache=True)
def _expected_precision_at_relevant(counts, relevant, j):
    """Expected ``j / rank_j``, ``rank_j`` the rank of the j-th relevant item.

    In its distance bucket (``n`` items, ``r`` relevant, ``c`` items before),
    the j-th relevant item is the ``s``-th relevant of the bucket; its slot
    ``i`` has probability ``C(i-1, s-1) C(n-i, r-s) / C(n, r)``.
    """
    if j == 0:
        return 0.0
    c = 0
    a = 0
    for t in range(counts.shape[0]):
        n = counts[t]
        r = relevant[t]
        if a + r >= j:
            s = j - a
            log_p = _log_comb(n - s, r - s) - _log_comb(n, r)  # slot i = s
            out = 0.0
            for i in range(s, n - r + s + 1):
                out += math.exp(log_p) * j / (c + i)
                if i < n - r + s:  # P(i+1) / P(i)
                    log_p += math.log(i / (i - s + 1.0) * (n - i - r + s) / (n - i))
            return out
        c += n
        a += r
    return 0.0


@njit(parallel=True, cache=True)
def _average_ties_kernel(counts, relevant, ap_at, hits_at, at_rel, ap, hits, prec):
    for i in prange(counts.shape[0]):
        for a in range(ap_at.shape[0]):
            ap[i, a] = _expected_ap(counts[i], relevant[i], ap_at[a])
        for b in range(hits_at.shape[0]):
            hits[i, b] = _expected_hits(counts[i], relevant[i], hits_at[b])
        for l in range(at_rel.shape[1]):
            prec[i, l] = _expected_precision_at_relevant(counts[i], relevant[i], at_rel[i, l])


# ---------------------------------------------------------------------------
# one pass over the queries
# ---------------------------------------------------------------------------


class _Stats(NamedTuple):
    counts: np.ndarray  # int64 (Q, bits+1): items at each distance
    relevant: np.ndarray  # int64 (Q, bits+1): relevant items at each distance
    ap: np.ndarray  # float64 (Q, len(ap_at))
    precision_at_k: np.ndarray  # float64 (len(ks),): mean over queries
    precision_at_recall: np.ndarray  # float64 (Q, len(levels))


def _stats(p: _Problem, ties: str, ap_at=(), ks=(), levels=()) -> _Stats:
    """Histograms and ranking statistics of all queries, in query chunks."""
    check_choice("ties", ties, TIES)
    n_q, n = len(p.q), len(p.d)
    ap_k = np.array([n if k is None else min(k, n) for k in ap_at], dtype=np.int64)
    hit_k = np.array([min(k, n) for k in ks], dtype=np.int64)
    at_rel = _recall_ranks(p.n_rel, levels)
    chunk = max(1, _CHUNK_VALUES // max(1, len(hit_k)))
    counts, relevant, ap, prec = [], [], [], []
    hits_sum = np.zeros(len(hit_k))
    for lo in range(0, n_q, chunk):
        rows = slice(lo, min(lo + chunk, n_q))
        if ties == "index":
            s = hamming.ranking_summary(
                p.q[rows], p.d, p.ql[rows], p.dl,
                ap_at=ap_k, hits_at=hit_k, at_relevant=at_rel[rows],
            )
            c_ap, c_hits, c_prec = s.ap, s.hits, s.precision_at_relevant
        else:
            s = hamming.histograms(p.q[rows], p.d, p.ql[rows], p.dl)
            m = s.counts.shape[0]
            c_ap = np.zeros((m, len(ap_k)))
            c_hits = np.zeros((m, len(hit_k)))
            c_prec = np.zeros((m, len(levels)))
            _average_ties_kernel(
                s.counts, s.relevant, ap_k, hit_k, np.ascontiguousarray(at_rel[rows]),
                c_ap, c_hits, c_prec,
            )
        counts.append(s.counts)
        relevant.append(s.relevant)
        ap.append(c_ap)
        prec.append(c_prec)
        hits_sum += c_hits.sum(axis=0)
    return _Stats(
        np.concatenate(counts),
        np.concatenate(relevant),
        np.concatenate(ap),
        hits_sum / (n_q * hit_k),
        np.concatenate(prec),
    )


def _column_means(values: np.ndarray) -> np.ndarray:
    """Mean of each column, each taken over a contiguous copy.

    Every public mean over queries goes through ``np.mean`` of a contiguous
    vector, so a value is the same whichever function or combination of
    metrics computed it.
    """
    return np.array([np.mean(np.ascontiguousarray(values[:, c])) for c in range(values.shape[1])])


# ---------------------------------------------------------------------------
# ranking metrics
# ---------------------------------------------------------------------------


def _check_topk(topk):
    if topk is None:
        return None
    return _positive_ints([topk], "topk")[0]


def average_precision(
    q_codes, db_codes, q_labels, db_labels, topk: int | None = None, ties: str = "average"
) -> np.ndarray:
    """Per-query average precision AP@k (see the module docstring).

    Parameters
    ----------
    q_codes : codes (Q, bits) or PackedCodes
    db_codes : codes (N, bits) or PackedCodes
    q_labels : array_like of int, shape (Q,)
    db_labels : array_like of int, shape (N,)
    topk : int or None
        Cut-off ``k`` (e.g. 1000); ``None`` ranks the whole database.
    ties : {"average", "index"}
        ``"average"`` (default): expected AP over uniformly random orders
        within equal distances (exact, including the partially included
        cut-off distance), independent of the database's storage order.
        ``"index"``: ranks break distance ties by database index (stable
        argsort), for the bit-exact check against a per-query loop.

    Returns
    -------
    ndarray of float64, shape (Q,)
        0 for queries with no relevant item in their top ``k``.
    """
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    return np.ascontiguousarray(_stats(p, ties, ap_at=[_check_topk(topk)]).ap[:, 0])


@timing.timed("evaluation")
def mean_average_precision(
    q_codes, db_codes, q_labels, db_labels, topk: int | None = None, ties: str = "average"
) -> float:
    """mAP@k: the mean over queries of :func:`average_precision`.

    ``topk=1000`` gives mAP@1000, ``topk=None`` mAP@all. Queries with no
    relevant item in their top ``k`` count as 0. With ``ties="index"`` the value
    equals, bit for bit, a per-query loop that ranks with
    ``np.argsort(dist, kind="stable")``, adds ``m / rank_m`` in rank order
    (``np.cumsum``) and averages the per-query values with ``np.mean``.
    """
    return float(np.mean(average_precision(q_codes, db_codes, q_labels, db_labels, topk, ties)))


@timing.timed("evaluation")
def precision_at_k(q_codes, db_codes, q_labels, db_labels, ks, ties: str = "average"):
    """Mean precision of the top ``k`` of the Hamming ranking.

    Parameters
    ----------
    q_codes, db_codes, q_labels, db_labels
        As in :func:`average_precision`.
    ks : int or sequence of int
        Cut-offs, each ``>= 1``; ``k > N`` is treated as ``k = N``.
    ties : {"average", "index"}
        Tie order as in :func:`average_precision`; ``"average"`` (default)
        gives the expected precision.

    Returns
    -------
    float or ndarray of float64, shape (len(ks),)
        A float for a single ``k``.
    """
    values = _positive_ints([ks] if np.ndim(ks) == 0 else ks, "ks")
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    return _scalar_or_array(ks, _stats(p, ties, ks=values).precision_at_k)


@timing.timed("evaluation")
def precision_curve(q_codes, db_codes, q_labels, db_labels, max_k: int, ties: str = "average"):
    """Mean precision@k for every ``k = 1..max_k``, for plotting.

    Returns
    -------
    ndarray of float64, shape (max_k,)
        Entry ``k - 1`` is :func:`precision_at_k` at ``k``.
    """
    (max_k,) = _positive_ints([max_k], "max_k")
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    return _stats(p, ties, ks=range(1, max_k + 1)).precision_at_k


def returned_image_precision(
    q_codes, db_codes, q_labels, db_labels,
    n_returned=tuple(range(100, 1001, 100)), ties: str = "average",
):
    """Returned image precision (RIP) of the DSTH journal paper.

    The precision of the top ``N`` returned images for each ``N`` in
    ``n_returned``: the same number as :func:`precision_at_k`. The paper does
    not state the values of ``N`` on its RIP axes; the default is 100..1000 in
    steps of 100.

    Returns
    -------
    float or ndarray of float64, shape (len(n_returned),)
    """
    return precision_at_k(q_codes, db_codes, q_labels, db_labels, n_returned, ties)


@timing.timed("evaluation")
def precision_at_recall(
    q_codes, db_codes, q_labels, db_labels, levels=DEFAULT_RECALL_LEVELS, ties: str = "average"
):
    """Mean precision where the Hamming ranking first reaches each recall level.

    Per query with ``R`` relevant items, ``j = ceil(level * R)`` and the value
    is ``j / rank_j`` (``rank_j``: 1-based rank of the ``j``-th relevant item),
    not interpolated; queries with ``R = 0`` count as 0. ``ties="average"``
    gives the expectation of ``j / rank_j`` over random orders within equal
    distances.

    Parameters
    ----------
    levels : float or sequence of float
        Recall levels in ``(0, 1]``.

    Returns
    -------
    float or ndarray of float64, shape (len(levels),)
    """
    values = _levels([levels] if np.ndim(levels) == 0 else levels)
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    return _scalar_or_array(levels, _column_means(_stats(p, ties, levels=values).precision_at_recall))


# ---------------------------------------------------------------------------
# Hamming-radius metrics (from the histograms, no ranking)
# ---------------------------------------------------------------------------


class PRCurve(NamedTuple):
    """Precision and recall by Hamming radius, averaged over queries.

    Attributes
    ----------
    radius : ndarray of int64, shape (bits + 1,)
        ``0, 1, ..., bits``.
    precision : ndarray of float64, shape (bits + 1,)
        Mean per-query precision of the items within each radius.
    recall : ndarray of float64, shape (bits + 1,)
        Mean per-query recall within each radius.
    answered : ndarray of float64, shape (bits + 1,)
        Fraction of queries retrieving at least one item within each radius.
    """

    radius: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    answered: np.ndarray


class RadiusPrecision(NamedTuple):
    """Precision within a Hamming radius and the fraction of queries answered."""

    precision: float
    answered: float


def _radius_curve(counts: np.ndarray, relevant: np.ndarray, empty: str) -> PRCurve:
    check_choice("empty", empty, EMPTY)
    retrieved = np.cumsum(counts, axis=1)
    hit = np.cumsum(relevant, axis=1)
    n_rel = hit[:, -1:]
    answered = retrieved > 0
    prec = np.divide(hit, retrieved, out=np.zeros(hit.shape), where=answered)
    rec = np.divide(hit, n_rel, out=np.zeros(hit.shape), where=n_rel > 0)
    n_answered = answered.sum(axis=0)
    if empty == "zero":
        mean_prec = prec.mean(axis=0)
    else:
        mean_prec = np.full(prec.shape[1], np.nan)
        np.divide(prec.sum(axis=0), n_answered, out=mean_prec, where=n_answered > 0)
    return PRCurve(
        np.arange(counts.shape[1], dtype=np.int64), mean_prec, rec.mean(axis=0),
        n_answered / counts.shape[0],
    )


@timing.timed("evaluation")
def pr_curve(q_codes, db_codes, q_labels, db_labels, empty: str = "zero") -> PRCurve:
    """Precision-recall curve by Hamming radius ``r = 0..bits`` (macro average).

    Parameters
    ----------
    q_codes, db_codes, q_labels, db_labels
        As in :func:`average_precision`.
    empty : {"zero", "skip"}
        A query retrieving nothing within ``r`` has precision 0 (``"zero"``)
        or is left out of the precision average at that radius (``"skip"``).
        Recall always averages over all queries.

    Returns
    -------
    PRCurve
        ``plt.plot(c.recall, c.precision)`` draws the curve.
    """
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    s = hamming.histograms(p.q, p.d, p.ql, p.dl)
    return _radius_curve(s.counts, s.relevant, empty)


def _radius_point(curve: PRCurve, r: int) -> RadiusPrecision:
    r = min(r, len(curve.radius) - 1)
    return RadiusPrecision(float(curve.precision[r]), float(curve.answered[r]))


def _check_radius(r) -> int:
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"radius r must be a non-negative integer, got {r!r}")
    return int(r)


@timing.timed("evaluation")
def precision_within_radius(
    q_codes, db_codes, q_labels, db_labels, r: int = 2, empty: str = "zero"
) -> RadiusPrecision:
    """Mean precision of the items within Hamming distance ``<= r`` (HD2P, HD3P).

    Returns
    -------
    RadiusPrecision
        ``precision``: mean over queries (a query retrieving nothing counts as
        0 with ``empty="zero"``; ``"skip"`` averages over the answered queries
        only). ``answered``: fraction of queries with at least one item within
        ``r``. Radii above ``bits`` retrieve everything.
    """
    r = _check_radius(r)
    return _radius_point(pr_curve(q_codes, db_codes, q_labels, db_labels, empty), r)


def max_f_from_points(precision, recall, beta: float) -> float:
    """Largest ``F_beta`` over paired precision and recall values.

    ``F_beta = (1 + beta^2) P R / (beta^2 P + R)``, 0 where ``P = R = 0``;
    points with a non-finite precision are ignored (``nan`` if none is left).
    This is how the DSTH journal paper's Tables III and IV obtain their max
    F-measure from the six precision-at-recall points they print.

    Parameters
    ----------
    precision, recall : array_like of float, same shape
    beta : float
        ``beta < 1`` weighs precision more.
    """
    beta = _check_beta(beta)
    prec = np.asarray(precision, dtype=float)
    rec = np.asarray(recall, dtype=float)
    if prec.shape != rec.shape:
        raise ValueError(f"precision {prec.shape} and recall {rec.shape} differ in shape")
    b2 = beta * beta
    den = b2 * prec + rec
    ok = np.isfinite(prec) & np.isfinite(rec)
    f = np.divide((1 + b2) * prec * rec, den, out=np.zeros(den.shape), where=ok & (den > 0))
    f = f[ok]
    return float(f.max()) if f.size else float("nan")


def _max_f(curve: PRCurve, beta: float) -> float:
    return max_f_from_points(curve.precision, curve.recall, beta)


def _check_beta(beta) -> float:
    numeric = isinstance(beta, (int, float, np.integer, np.floating))
    if isinstance(beta, (bool, np.bool_)) or not numeric or not 0 < float(beta) < math.inf:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    return float(beta)


@timing.timed("evaluation")
def max_f_measure(
    q_codes, db_codes, q_labels, db_labels, beta: float = 0.5,
    levels=DEFAULT_RECALL_LEVELS, ties: str = "average",
) -> float:
    """The DSTH journal paper's max F-measure: over the precision-at-recall points.

    The largest ``F_beta`` over the points ``(precision@recall<R>, R)`` for
    ``R`` in ``levels`` (default 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, the six points
    of the paper's Tables III and IV); see :func:`precision_at_recall` and
    :func:`max_f_from_points`. ``ties`` as in :func:`precision_at_recall`.
    """
    beta = _check_beta(beta)
    values = _levels(levels)
    prec = precision_at_recall(q_codes, db_codes, q_labels, db_labels, values, ties)
    return max_f_from_points(prec, values, beta)


@timing.timed("evaluation")
def max_f_radius(
    q_codes, db_codes, q_labels, db_labels, beta: float = 0.5, empty: str = "zero"
) -> float:
    """Largest F_beta over the points of the Hamming-radius PR curve.

    From the macro-averaged ``P`` and ``R`` of :func:`pr_curve` at each radius
    ``0..bits`` (0 where both are 0). Points with undefined precision
    (``empty="skip"`` and no query answered) are ignored. Not the DSTH journal
    paper's definition (that is :func:`max_f_measure`).
    """
    beta = _check_beta(beta)
    return _max_f(pr_curve(q_codes, db_codes, q_labels, db_labels, empty), beta)


def _nearest_distances(counts: np.ndarray, relevant: np.ndarray, n_levels: int) -> float:
    occupied = counts > 0
    take = occupied & (np.cumsum(occupied, axis=1) <= n_levels)
    retrieved = (counts * take).sum(axis=1)
    hit = (relevant * take).sum(axis=1)
    return float(np.mean(hit / retrieved))


def precision_nearest_distances(
    q_codes, db_codes, q_labels, db_labels, n_levels: int = 3
) -> float:
    """Mean precision of the items at each query's ``n_levels`` nearest occupied distances.

    Our reading of NC3P ("nearest class <= 3") of the DSTH journal paper; see
    the module docstring. Every query retrieves at least one item, so the
    precision is always defined.
    """
    (n_levels,) = _positive_ints([n_levels], "n_levels")
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    s = hamming.histograms(p.q, p.d, p.ql, p.dl)
    return _nearest_distances(s.counts, s.relevant, n_levels)


# ---------------------------------------------------------------------------
# all metrics at once
# ---------------------------------------------------------------------------

_KEY_FORMS = (
    "'map@<k>'", "'map_all'", "'precision@<k>'", "'precision@recall<level>'",
    "'hd<r>p'", "'hd<r>p_answered'", "'max_f@<beta>'", "'max_f_radius@<beta>'", "'nc<n>p'",
)
_KEY = re.compile(
    r"^(?:(?P<map_all>map_all)|map@(?P<map>.+)|precision@recall(?P<recall>.+)"
    r"|precision@(?P<prec>.+)|hd(?P<hd>\d+)p(?P<answered>_answered)?"
    r"|max_f@(?P<beta>.+)|max_f_radius@(?P<rbeta>.+)|nc(?P<nc>\d+)p)$"
)


def _parse_int(key: str, text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"metric key {key!r}: {text!r} is not an integer") from None
    if value < low:
        raise ValueError(f"metric key {key!r}: the number must be >= {low}")
    if str(value) != text:
        raise ValueError(f"metric key {key!r} is not in canonical form; write it with {value}")
    return value


def _parse_float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"metric key {key!r}: {text!r} is not a number") from None
    if repr(value) != text:
        raise ValueError(
            f"metric key {key!r} is not in canonical form; write the number as {value!r}"
        )
    return value


def _parse(key: str):
    """(kind, parameter) of one report key."""
    m = _KEY.match(key) if isinstance(key, str) else None
    if m is None:
        raise ValueError(f"unknown metric key {key!r}; allowed forms: {', '.join(_KEY_FORMS)}")
    if m["map_all"]:
        return "map", None
    if m["map"] is not None:
        return "map", _parse_int(key, m["map"], 1)
    if m["recall"] is not None:
        return "recall", _levels([_parse_float(key, m["recall"])])[0]
    if m["prec"] is not None:
        return "prec", _parse_int(key, m["prec"], 1)
    if m["hd"] is not None:
        return ("answered" if m["answered"] else "hd"), _parse_int(key, m["hd"], 0)
    if m["beta"] is not None:
        return "beta", _check_beta(_parse_float(key, m["beta"]))
    if m["rbeta"] is not None:
        return "rbeta", _check_beta(_parse_float(key, m["rbeta"]))
    return "nc", _parse_int(key, m["nc"], 1)


@timing.timed("evaluation")
def evaluate(
    q_codes, db_codes, q_labels, db_labels,
    metrics: Iterable[str] = DEFAULT_METRICS, ties: str = "average",
) -> dict[str, float]:
    """Several metrics from one scan of the database.

    Parameters
    ----------
    q_codes, db_codes, q_labels, db_labels
        As in :func:`average_precision`.
    metrics : iterable of str
        Report keys (see the module docstring), e.g. ``"map@1000"``,
        ``"map_all"``, ``"precision@100"``, ``"precision@recall0.4"``,
        ``"hd2p"``, ``"hd2p_answered"``, ``"max_f@0.5"``, ``"max_f_radius@0.5"``,
        ``"nc3p"``. Default:
        :data:`DEFAULT_METRICS`.
    ties : {"average", "index"}
        Tie order of the ranking metrics (mAP, precision@k,
        precision@recall, max F): ``"average"`` (default) gives the expected
        value over random orders within equal distances, independent of the
        database's storage order. Radius metrics have no ties; they count a
        query retrieving nothing as precision 0.

    Returns
    -------
    dict of str to float
        One entry per requested key, in the order requested.
    """
    plan, ap_at, ks, levels = _plan(metrics)
    p = _problem(q_codes, db_codes, q_labels, db_labels)
    s = _stats(p, ties, ap_at=ap_at, ks=ks, levels=levels)
    return _report(plan, ap_at, ks, levels, s)


def _plan(metrics):
    """Parsed report keys and the cut-offs and recall levels they need."""
    if isinstance(metrics, str):
        metrics = [metrics]
    plan = {key: _parse(key) for key in metrics}
    if not plan:
        raise ValueError("no metrics requested")

    def wanted(kind):
        return list(dict.fromkeys(v for k, v in plan.values() if k == kind))

    ap_at, ks, levels = wanted("map"), wanted("prec"), wanted("recall")
    if wanted("beta"):  # the paper's max F needs the six precision-at-recall points
        levels += [v for v in DEFAULT_RECALL_LEVELS if v not in levels]
    return plan, ap_at, ks, levels


# report keys that need the per-query histograms, not only ranking statistics
_HISTOGRAM_KINDS = ("hd", "answered", "rbeta", "nc")


def _report(plan, ap_at, ks, levels, s: _Stats) -> dict[str, float]:
    """The requested report keys from the statistics of all queries."""
    map_values = _column_means(s.ap)
    recall_values = _column_means(s.precision_at_recall)
    needs_curve = any(kind in _HISTOGRAM_KINDS for kind, _ in plan.values())
    curve = _radius_curve(s.counts, s.relevant, "zero") if needs_curve else None
    out = {}
    for key, (kind, value) in plan.items():
        if kind == "map":
            out[key] = float(map_values[ap_at.index(value)])
        elif kind == "prec":
            out[key] = float(s.precision_at_k[ks.index(value)])
        elif kind == "recall":
            out[key] = float(recall_values[levels.index(value)])
        elif kind == "hd":
            out[key] = _radius_point(curve, value).precision
        elif kind == "answered":
            out[key] = _radius_point(curve, value).answered
        elif kind == "beta":
            points = [recall_values[levels.index(v)] for v in DEFAULT_RECALL_LEVELS]
            out[key] = max_f_from_points(points, DEFAULT_RECALL_LEVELS, value)
        elif kind == "rbeta":
            out[key] = _max_f(curve, value)
        else:
            out[key] = _nearest_distances(s.counts, s.relevant, value)
    return out


# ---------------------------------------------------------------------------
# ranking by any integer level (classifier codes, real-valued scores)
# ---------------------------------------------------------------------------


def _check_level_histograms(counts, relevant, n_rel):
    """Validated ``counts``, ``relevant`` (int64, (Q, L)) and ``n_rel`` (int64, (Q,))."""
    arrays = {}
    for name, value, ndim in (("counts", counts, 2), ("relevant", relevant, 2), ("n_rel", n_rel, 1)):
        a = np.asarray(value)
        if a.ndim != ndim:
            what = "(queries, levels)" if ndim == 2 else "(queries,)"
            raise ValueError(f"{name} must be a {ndim}-D array of shape {what}, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer counts, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} holds negative counts")
        arrays[name] = np.ascontiguousarray(a, dtype=np.int64)
    counts, relevant, n_rel = arrays["counts"], arrays["relevant"], arrays["n_rel"]
    if counts.shape[0] == 0:
        raise ValueError("there are no queries")
    if counts.shape[1] == 0:
        raise ValueError("counts has no levels; give at least one column")
    if relevant.shape != counts.shape:
        raise ValueError(f"relevant has shape {relevant.shape} but counts has shape {counts.shape}")
    if n_rel.shape != (counts.shape[0],):
        raise ValueError(f"n_rel has shape {n_rel.shape}; it needs one entry per query, "
                         f"({counts.shape[0]},)")
    if (relevant > counts).any():
        q, t = np.argwhere(relevant > counts)[0]
        raise ValueError(f"relevant[{q}, {t}] = {relevant[q, t]} exceeds counts[{q}, {t}] = "
                         f"{counts[q, t]}; a level cannot hold more relevant items than items")
    totals = counts.sum(axis=1)
    if totals[0] == 0:
        raise ValueError("the database is empty (counts sums to 0)")
    if (totals != totals[0]).any():
        q = int(np.flatnonzero(totals != totals[0])[0])
        raise ValueError(
            f"every query must rank the whole database: counts of query 0 sum to {totals[0]} "
            f"but those of query {q} to {totals[q]}"
        )
    ranked = relevant.sum(axis=1)
    if (n_rel != ranked).any():
        q = int(np.flatnonzero(n_rel != ranked)[0])
        raise ValueError(
            f"n_rel[{q}] = {n_rel[q]} but relevant[{q}] sums to {ranked[q]}; every relevant "
            f"database item must sit at some level, so n_rel must equal relevant.sum(axis=1)"
        )
    return counts, relevant, n_rel


def _level_stats(chunks, n_q: int, n: int, ap_at=(), ks=(), levels=(),
                 keep_histograms: bool = True) -> _Stats:
    """Tie-averaged ranking statistics from level histograms given in query chunks.

    ``chunks`` yields ``(counts, relevant, n_rel)`` for consecutive queries
    (int64, contiguous; the number of levels may differ between chunks);
    ``n`` is the database size. Without ``keep_histograms`` the returned
    ``counts`` and ``relevant`` are ``None`` (for rankings with one level per
    distinct real score, whose histograms would be as large as the scores).
    """
    ap_k = np.array([n if k is None else min(k, n) for k in ap_at], dtype=np.int64)
    hit_k = np.array([min(k, n) for k in ks], dtype=np.int64)
    counts, relevant, ap, prec = [], [], [], []
    hits_sum = np.zeros(len(hit_k))
    seen = 0
    for c_counts, c_relevant, c_n_rel in chunks:
        m = c_counts.shape[0]
        c_ap = np.zeros((m, len(ap_k)))
        c_hits = np.zeros((m, len(hit_k)))
        c_prec = np.zeros((m, len(levels)))
        at_rel = np.ascontiguousarray(_recall_ranks(c_n_rel, levels))
        _average_ties_kernel(c_counts, c_relevant, ap_k, hit_k, at_rel, c_ap, c_hits, c_prec)
        if keep_histograms:
            counts.append(c_counts)
            relevant.append(c_relevant)
        ap.append(c_ap)
        prec.append(c_prec)
        hits_sum += c_hits.sum(axis=0)
        seen += m
    if seen != n_q:
        raise RuntimeError(f"level chunks covered {seen} queries, expected {n_q}")
    return _Stats(
        np.concatenate(counts) if keep_histograms else None,
        np.concatenate(relevant) if keep_histograms else None,
        np.concatenate(ap),
        hits_sum / (n_q * hit_k),
        np.concatenate(prec),
    )


@timing.timed("evaluation")
def evaluate_levels(
    counts, relevant, n_rel,
    metrics: Iterable[str] = ("map@1000", "map_all", "precision@1000"),
) -> dict[str, float]:
    """Ranking metrics of a database ranked by an integer level per query.

    Any retrieval method that puts each database item at a level for each
    query (0 = best) is evaluated here with the definitions of the module
    docstring: Hamming codes (level = distance), a classifier code (level =
    the rank of the item's stored class among the query's class
    probabilities), real-valued scores (level = rank of the distinct score).
    Items at one level are ties and are averaged exactly as
    ``ties="average"`` averages equal Hamming distances: every ranking metric
    is its expectation over uniformly random orders within each level.

    Parameters
    ----------
    counts : array_like of int, shape (Q, L)
        ``counts[q, l]``: database items at level ``l`` for query ``q``.
        Every row sums to the database size ``N``; empty levels are allowed.
    relevant : array_like of int, shape (Q, L)
        ``relevant[q, l]``: how many of them are relevant to query ``q``
        (``0 <= relevant <= counts``).
    n_rel : array_like of int, shape (Q,)
        Relevant database items per query; must equal
        ``relevant.sum(axis=1)`` (a consistency check on the histograms).
    metrics : iterable of str
        Report keys as in :func:`evaluate`. ``hd<r>p`` and ``hd<r>p_answered``
        read "levels ``<= r``", ``nc<n>p`` "the ``n`` lowest occupied
        levels", and ``max_f_radius@<beta>`` takes its points over the levels;
        for Hamming codes these are the Hamming-radius metrics.

    Returns
    -------
    dict of str to float
        One entry per requested key, in the order requested. For Hamming
        codes with ``counts[q, t]`` / ``relevant[q, t]`` the items / relevant
        items at distance ``t``, the result equals :func:`evaluate` with
        ``ties="average"``.
    """
    plan, ap_at, ks, levels = _plan(metrics)
    counts, relevant, n_rel = _check_level_histograms(counts, relevant, n_rel)
    n_q, n = counts.shape[0], int(counts[0].sum())
    chunk = max(1, _CHUNK_VALUES // max(1, len(ks)))  # as in _stats: same sums, same bits
    parts = ((counts[lo:lo + chunk], relevant[lo:lo + chunk], n_rel[lo:lo + chunk])
             for lo in range(0, n_q, chunk))
    s = _level_stats(parts, n_q, n, ap_at=ap_at, ks=ks, levels=levels)
    return _report(plan, ap_at, ks, levels, s)
