"""Binary codes, packed popcount distances, exact top-k and radius search.

Conventions used throughout the study
-------------------------------------
Codes
    A code matrix has shape ``(N, bits)``: one row per item. Its entries are
    either ``{0, 1}`` or ``{-1, +1}`` (any of bool, integer or float dtype,
    NumPy arrays or CPU torch tensors). Under both conventions a ``1`` is the
    bit 1, and ``0`` or ``-1`` is the bit 0, so ``sign``-style and
    threshold-style hashers give the same packed codes.
Packed codes
    :func:`pack` stores bit ``j`` of a code in word ``j // 64``, at bit
    position ``j % 64`` (least significant first) of a ``uint64``; the unused
    high bits of the last word are zero. :class:`PackedCodes` keeps those
    words together with the code length, so nothing downstream has to guess
    it. Every search function accepts either packed or unpacked codes.
Distances
    Hamming distances are ``uint16`` (code lengths up to 65,535 bits).
Tie order
    Every ranking in this module, and every ranking metric built on it, orders
    the database by (Hamming distance ascending, database index ascending),
    which is exactly the order of ``np.argsort(dist_row, kind="stable")``.

For searching one database repeatedly, :class:`SearchIndex` (and the
one-call :func:`search`) answers top-k and radius queries either by the same
scan or from multi-index hashing tables, which answer near-neighbour requests
(a small radius, a small k) on a million 64-bit codes tens of times faster;
both give exactly the scan's answer, ties included.

The kernels are compiled with numba (``parallel=True``, one query per task,
cached on disk after the first call; ``numba.set_num_threads`` sets the number
of threads). Per query they use ``O(N)`` scratch memory and never sort: a
histogram over the ``bits + 1`` possible distances followed by a counting-sort
pass ranks ``N`` items in ``O(N)``. Only :func:`distances` and a full
:func:`topk` ranking materialise ``Q x N`` outputs, because that is what they
return.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from .config import check_bits

__all__ = [
    "PackedCodes",
    "RadiusHits",
    "RankingSummary",
    "to_bits",
    "pack",
    "unpack",
    "distances",
    "topk",
    "radius_search",
    "histograms",
    "ranking_summary",
    "relevant_totals",
    "check_labels",
    "Neighbours",
    "SearchIndex",
    "search",
    "mih_layout",
]

MAX_BITS = 65535  # distances are stored as uint16


# ---------------------------------------------------------------------------
# code conversion and packing
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class PackedCodes:
    """Binary codes packed into 64-bit words, with their code length.

    Parameters
    ----------
    words : ndarray of uint64, shape (N, ceil(bits / 64))
        Bit ``j`` of row ``n`` is bit ``j % 64`` of ``words[n, j // 64]``;
        the unused high bits of the last word must be zero.
    bits : int
        Code length, 1..65535.

    Notes
    -----
    Indexing selects rows and keeps the code length:
    ``packed[:100]``, ``packed[idx]`` and ``packed[mask]`` are
    :class:`PackedCodes`; ``len(packed)`` is the number of codes.
    """

    words: np.ndarray
    bits: int

    def __post_init__(self):
        (bits,) = check_bits(self.bits, 1, MAX_BITS)
        words = self.words
        if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or words.ndim != 2:
            raise TypeError(
                "PackedCodes.words must be a 2-D uint64 array (N, words); got "
                f"{type(words).__name__} {getattr(words, 'dtype', '')} "
                f"with shape {getattr(words, 'shape', None)}"
            )
        n_words = -(-bits // 64)
        if words.shape[1] != n_words:
            raise ValueError(
                f"{bits}-bit codes take {n_words} uint64 words per row, "
                f"but words has {words.shape[1]} columns"
            )
        spare = n_words * 64 - bits
        if spare and words.shape[0] and np.any(words[:, -1] >> np.uint64(64 - spare)):
            raise ValueError(
                f"the {spare} padding bits above bit {bits} of the last word are not "
                "all zero; build packed codes with hamming.pack"
            )
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "words", np.ascontiguousarray(words))

    @property
    def n_words(self) -> int:
        """Number of uint64 words per code."""
        return self.words.shape[1]

    def __len__(self) -> int:
        return self.words.shape[0]

    def __getitem__(self, rows) -> "PackedCodes":
        if isinstance(rows, (int, np.integer)):
            rows = [rows]
        return PackedCodes(self.words[rows], self.bits)

    def __repr__(self) -> str:
        return f"PackedCodes(n={len(self)}, bits={self.bits})"


def _as_numpy(x):
    """``x`` as a NumPy array; CPU or GPU torch tensors are detached and copied."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_bits(codes) -> np.ndarray:
    """Validate a code matrix and return it as ``{0, 1}`` uint8.

    Parameters
    ----------
    codes : array_like, shape (N, bits), or PackedCodes
        Entries all in ``{0, 1}`` or all in ``{-1, +1}`` (bool, integer or
        float dtype; a torch tensor is accepted). A :class:`PackedCodes` is
        unpacked.

    Returns
    -------
    ndarray of uint8, shape (N, bits)
        1 where the code has bit 1 (entry ``1``), 0 where it has ``0`` or ``-1``.

    Raises
    ------
    ValueError
        Not 2-D, zero bits, NaN, or values outside ``{0, 1}`` / ``{-1, +1}``
        (including a mixture of ``0`` and ``-1``).
    TypeError
        A non-numeric dtype.
    """
    if isinstance(codes, PackedCodes):
        return unpack(codes)
    a = _as_numpy(codes)
    if a.ndim != 2:
        hint = " (for a single code use codes[None, :])" if a.ndim == 1 else ""
        raise ValueError(f"codes must be a 2-D (N, bits) matrix, got shape {a.shape}{hint}")
    if a.shape[1] == 0:
        raise ValueError("codes have zero bits (shape (N, 0))")
    check_bits(a.shape[1], 1, MAX_BITS)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"codes must have a bool, integer or float dtype, got {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise ValueError("codes contain NaN; binarise them before searching")
    one = a == 1
    zero = a == 0
    neg = a == -1 if np.issubdtype(a.dtype, np.signedinteger) or a.dtype.kind == "f" else None
    valid = one | zero if neg is None else one | zero | neg
    if not valid.all():
        bad = np.unique(a[~valid])[:5]
        raise ValueError(
            "codes must contain only {0, 1} or only {-1, +1}; found values "
            f"{', '.join(map(str, bad.tolist()))}"
            " (packed uint64 words must be wrapped as PackedCodes(words, bits))"
        )
    if neg is not None and zero.any() and neg.any():
        raise ValueError(
            "codes mix 0 and -1; use either the {0, 1} or the {-1, +1} convention"
        )
    return one.astype(np.uint8)


def pack(codes) -> PackedCodes:
    """Pack a code matrix into 64-bit words.

    Parameters
    ----------
    codes : array_like, shape (N, bits), or PackedCodes
        Any form accepted by :func:`to_bits`; a :class:`PackedCodes` is
        returned unchanged.

    Returns
    -------
    PackedCodes
        ``words`` of shape ``(N, ceil(bits / 64))``, dtype uint64, bit ``j`` in
        word ``j // 64`` at position ``j % 64``, padding bits zero.
    """
    if isinstance(codes, PackedCodes):
        return codes
    b = to_bits(codes)
    n, bits = b.shape
    n_words = -(-bits // 64)
    padded = np.zeros((n, n_words * 64), dtype=np.uint8)
    padded[:, :bits] = b
    packed_bytes = np.packbits(padded, axis=1, bitorder="little")
    words = packed_bytes.view("<u8").astype(np.uint64, copy=False)
    return PackedCodes(np.ascontiguousarray(words), bits)


def unpack(packed, bits: int | None = None) -> np.ndarray:
    """Unpack 64-bit words into a ``{0, 1}`` uint8 code matrix.

    Parameters
    ----------
    packed : PackedCodes or ndarray of uint64, shape (N, W)
        Words as written by :func:`pack`.
    bits : int, optional
        Code length; required for a raw uint64 array, and checked against
        ``packed.bits`` when given with a :class:`PackedCodes`.

    Returns
    -------
    ndarray of uint8, shape (N, bits)
    """
    if isinstance(packed, PackedCodes):
        if bits is not None and int(bits) != packed.bits:
            raise ValueError(f"bits={bits} does not match the packed code length {packed.bits}")
    else:
        if bits is None:
            raise ValueError("bits is required to unpack a raw uint64 array")
        packed = PackedCodes(_as_numpy(packed), bits)
    raw = packed.words.astype("<u8", copy=False).view(np.uint8)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, : packed.bits]


def _pair(query, database) -> tuple[PackedCodes, PackedCodes]:
    """Pack both sides and check that their code lengths agree."""
    q, d = pack(query), pack(database)
    if q.bits != d.bits:
        raise ValueError(
            f"query codes have {q.bits} bits but database codes have {d.bits} bits"
        )
    if len(d) == 0:
        raise ValueError("the database is empty")
    return q, d


def _transposed(packed: PackedCodes) -> np.ndarray:
    """The words as a C-contiguous (W, N) array, the layout the kernels scan."""
    return np.ascontiguousarray(packed.words.T)


def _check_k(k, name: str = "k") -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer or None, got {k!r}")
    if k <= 0:
        raise ValueError(f"{name} must be a positive integer or None, got {k}")
    return int(k)


def check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """Validate a label vector and return it as contiguous int64.

    Parameters
    ----------
    labels : array_like, shape (n,)
        Integer (or bool) class labels, one per code; a torch tensor is accepted.
    n : int
        Number of codes the labels belong to.
    name : str
        Name used in error messages.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    a = _as_numpy(labels)
    if a.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D vector of integer class labels (single-label "
            f"relevance), got shape {a.shape}"
        )
    if len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries but there are {n} codes")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


# ---------------------------------------------------------------------------
# numba kernels
#
# The database is passed transposed, ``dwt`` of shape (W, N), so that the
# distance pass runs over contiguous words and vectorises. Histograms are
# accumulated in four interleaved copies, which keeps successive increments of
# the same bin from waiting on each other.
# ---------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _popcount64(x):
    """Number of set bits of a uint64 (SWAR), as int64."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(inline="always", cache=True)
def _row_distances(qw, i, dwt, dist):
    """``dist[j]`` = Hamming distance of query ``i`` to database item ``j``."""
    qv = qw[i, 0]
    for j in range(dwt.shape[1]):
        dist[j] = _popcount64(qv ^ dwt[0, j])
    for w in range(1, dwt.shape[0]):
        qv = qw[i, w]
        for j in range(dwt.shape[1]):
            dist[j] += _popcount64(qv ^ dwt[w, j])


@njit(inline="always", cache=True)
def _row_histograms(dist, dl, lab, use_labels, counts, relevant):
    """Add the histogram of ``dist`` to ``counts`` and, if ``use_labels``,
    the histogram of the items labelled ``lab`` to ``relevant``."""
    n = dist.shape[0]
    h = np.zeros((4, 2, counts.shape[0]), np.int32)
    if use_labels:
        for j in range(n):
            h[j & 3, int(dl[j] == lab), dist[j]] += 1
    else:
        for j in range(n):
            h[j & 3, 0, dist[j]] += 1
    for t in range(counts.shape[0]):
        rel = h[0, 1, t] + h[1, 1, t] + h[2, 1, t] + h[3, 1, t]
        counts[t] += rel + h[0, 0, t] + h[1, 0, t] + h[2, 0, t] + h[3, 0, t]
        relevant[t] += rel


@njit(cache=True)
def _bucket_starts(hist, k, start):
    """Fill ``start[t]`` = items closer than ``t``; return the cut-off distance.

    The cut-off is the smallest ``t`` whose cumulative count reaches ``k``;
    ``start`` is filled for ``t <= cut`` only.
    """
    c = 0
    for t in range(hist.shape[0]):
        start[t] = c
        c += hist[t]
        if c >= k:
            return t
    return hist.shape[0] - 1


@njit(parallel=True, cache=True)
def _distance_kernel(qw, dwt, out):
    for i in prange(qw.shape[0]):
        _row_distances(qw, i, dwt, out[i])


@njit(parallel=True, cache=True)
def _topk_kernel(qw, dwt, k, nbins, out_idx, out_dist):
    n = dwt.shape[1]
    no_labels = np.zeros(0, np.int64)
    for i in prange(qw.shape[0]):
        dist = np.empty(n, np.uint16)
        _row_distances(qw, i, dwt, dist)
        hist = np.zeros(nbins, np.int64)
        unused = np.zeros(nbins, np.int64)
        _row_histograms(dist, no_labels, 0, False, hist, unused)
        start = np.empty(nbins, np.int64)
        cut = _bucket_starts(hist, k, start)
        for j in range(n):
            t = dist[j]
            if t <= cut:
                p = start[t]
                if p < k:
                    out_idx[i, p] = j
                    out_dist[i, p] = t
                    start[t] = p + 1


@njit(parallel=True, cache=True)
def _radius_kernel(qw, dwt, r, offsets, out_idx, out_dist):
    """Fill the CSR rows; ``offsets`` comes from the distance histograms."""
    n = dwt.shape[1]
    for i in prange(qw.shape[0]):
        dist = np.empty(n, np.uint16)
        _row_distances(qw, i, dwt, dist)
        hist = np.zeros(r + 1, np.int64)
        for j in range(n):
            if dist[j] <= r:
                hist[dist[j]] += 1
        start = np.empty(r + 1, np.int64)
        c = offsets[i]
        for t in range(r + 1):
            start[t] = c
            c += hist[t]
        for j in range(n):
            t = dist[j]
            if t <= r:
                p = start[t]
                out_idx[p] = j
                out_dist[p] = t
                start[t] = p + 1


@njit(parallel=True, cache=True)
def _summary_kernel(qw, dwt, ql, dl, ap_at, hits_at, at_rel, counts, relevant, ap, hits, prec):
    """One pass per query: histograms, then ranked relevant positions if needed.

    ``ql``/``dl`` of length 0 mean "no labels". ``ap_at``/``hits_at`` are
    cut-offs already clipped to ``1..N``; ``at_rel[i, l]`` is a relevant-item
    count ``j`` in ``0..R_i``.
    """
    n = dwt.shape[1]
    nbins = counts.shape[1]
    use_labels = ql.shape[0] > 0
    need_ranks = ap_at.shape[0] + hits_at.shape[0] + at_rel.shape[1] > 0
    kmax = 0
    for a in range(ap_at.shape[0]):
        kmax = max(kmax, ap_at[a])
    for b in range(hits_at.shape[0]):
        kmax = max(kmax, hits_at[b])
    for i in prange(qw.shape[0]):
        dist = np.empty(n, np.uint16)
        _row_distances(qw, i, dwt, dist)
        lab = ql[i] if use_labels else 0
        h = counts[i]
        hr = relevant[i]
        _row_histograms(dist, dl, lab, use_labels, h, hr)
        if not need_ranks:
            continue
        # smallest distance whose prefix holds the kmax best items and the
        # largest requested number of relevant items
        jmax = 0
        for l in range(at_rel.shape[1]):
            jmax = max(jmax, at_rel[i, l])
        start = np.empty(nbins, np.int64)
        rstart = np.empty(nbins, np.int64)
        c = 0
        cr = 0
        cut = nbins - 1
        for t in range(nbins):
            start[t] = c
            rstart[t] = cr
            c += h[t]
            cr += hr[t]
            if c >= kmax and cr >= jmax:
                cut = t
                break
        # pos[m]: 0-based rank of the (m+1)-th relevant item; ascending
        pos = np.empty(cr, np.int64)
        for j in range(n):
            t = dist[j]
            if t <= cut:
                if dl[j] == lab:
                    pos[rstart[t]] = start[t]
                    rstart[t] += 1
                start[t] += 1
        for a in range(ap_at.shape[0]):
            k = ap_at[a]
            acc = 0.0
            found = 0
            for m in range(cr):
                p = pos[m]
                if p >= k:
                    break
                found += 1
                acc += found / (p + 1.0)
            ap[i, a] = acc / found if found > 0 else 0.0
        for b in range(hits_at.shape[0]):
            hits[i, b] = np.searchsorted(pos, hits_at[b])
        for l in range(at_rel.shape[1]):
            jj = at_rel[i, l]
            prec[i, l] = jj / (pos[jj - 1] + 1.0) if jj > 0 else 0.0


# ---------------------------------------------------------------------------
# public search functions
# ---------------------------------------------------------------------------


def distances(query, database) -> np.ndarray:
    """All pairwise Hamming distances.

    Parameters
    ----------
    query : codes (Q, bits) or PackedCodes
    database : codes (N, bits) or PackedCodes

    Returns
    -------
    ndarray of uint16, shape (Q, N)
        ``out[i, j]`` is the number of differing bits of query ``i`` and
        database item ``j``. This materialises ``Q * N`` values; rankings and
        metrics never call it.
    """
    q, d = _pair(query, database)
    out = np.empty((len(q), len(d)), dtype=np.uint16)
    if len(q):
        _distance_kernel(q.words, _transposed(d), out)
    return out


def topk(query, database, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest database items of each query in Hamming distance.

    Parameters
    ----------
    query : codes (Q, bits) or PackedCodes
    database : codes (N, bits) or PackedCodes
    k : int or None
        Number of neighbours, ``k >= 1``. ``None`` or ``k >= N`` returns the
        full ranking (``N`` columns).

    Returns
    -------
    indices : ndarray of int64, shape (Q, min(k, N))
        Database indices ordered by (Hamming distance ascending, index
        ascending): row ``i`` equals
        ``np.argsort(distances(query, database)[i], kind="stable")[:k]``.
    dist : ndarray of uint16, shape (Q, min(k, N))
        Their Hamming distances (non-decreasing along each row).
    """
    q, d = _pair(query, database)
    n = len(d)
    k = n if k is None else min(_check_k(k), n)
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.uint16)
    if len(q):
        _topk_kernel(q.words, _transposed(d), k, q.bits + 1, idx, dist)
    return idx, dist


class RadiusHits(NamedTuple):
    """Database items within a Hamming radius, in CSR layout.

    The hits of query ``i`` are ``indices[offsets[i]:offsets[i + 1]]`` (int64)
    with distances ``distances[offsets[i]:offsets[i + 1]]`` (uint16), ordered
    by (distance ascending, index ascending). ``offsets`` has shape (Q + 1,).
    """

    offsets: np.ndarray
    indices: np.ndarray
    distances: np.ndarray

    def row(self, i: int) -> np.ndarray:
        """Database indices within the radius of query ``i``."""
        return self.indices[self.offsets[i] : self.offsets[i + 1]]


def radius_search(query, database, r: int) -> RadiusHits:
    """All database items within Hamming distance ``<= r`` of each query.

    Parameters
    ----------
    query : codes (Q, bits) or PackedCodes
    database : codes (N, bits) or PackedCodes
    r : int
        Radius, ``r >= 0`` (values above ``bits`` return everything).

    Returns
    -------
    RadiusHits
        CSR layout ``(offsets, indices, distances)``; see :class:`RadiusHits`.
        Memory is proportional to the number of hits, which for a large radius
        approaches ``Q * N``.
    """
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"radius r must be a non-negative integer, got {r!r}")
    q, d = _pair(query, database)
    r = min(int(r), q.bits)
    counts = histograms(q, d).counts
    offsets = np.zeros(len(q) + 1, dtype=np.int64)
    np.cumsum(counts[:, : r + 1].sum(axis=1), out=offsets[1:])
    idx = np.empty(offsets[-1], dtype=np.int64)
    dist = np.empty(offsets[-1], dtype=np.uint16)
    if len(q):
        _radius_kernel(q.words, _transposed(d), r, offsets, idx, dist)
    return RadiusHits(offsets, idx, dist)


class RankingSummary(NamedTuple):
    """Per-query statistics of the Hamming ranking; see :func:`ranking_summary`."""

    counts: np.ndarray
    relevant: np.ndarray | None
    ap: np.ndarray
    hits: np.ndarray
    precision_at_relevant: np.ndarray


def histograms(query, database, query_labels=None, database_labels=None) -> RankingSummary:
    """Distance histograms: all items, and relevant items, at each distance.

    A shortcut for :func:`ranking_summary` without ranking statistics: of
    the returned :class:`RankingSummary` only ``counts`` and ``relevant`` are
    of interest (the other fields have zero columns). ``counts[i, t]`` is the
    number of database items at distance ``t`` from query ``i``;
    ``relevant[i, t]`` the number of those whose label equals the query's
    (``None`` without labels). Both are int64 of shape (Q, bits + 1).
    Precision/recall by Hamming radius, precision within a radius and the
    tie-aware expectations all follow from these two matrices by cumulative
    sums, with no sorting.
    """
    return ranking_summary(query, database, query_labels, database_labels)


def ranking_summary(
    query,
    database,
    query_labels=None,
    database_labels=None,
    *,
    ap_at=(),
    hits_at=(),
    at_relevant=None,
) -> RankingSummary:
    """Histograms and ranking statistics of every query, in one pass.

    The database is ranked by (Hamming distance, index), as in :func:`topk`.
    An item is relevant to a query when their integer labels are equal.

    Parameters
    ----------
    query : codes (Q, bits) or PackedCodes
    database : codes (N, bits) or PackedCodes
    query_labels : array_like of int, shape (Q,), optional
    database_labels : array_like of int, shape (N,), optional
        Required when any ranking statistic is requested.
    ap_at : sequence of (int or None)
        Cut-offs ``k`` for average precision over the top ``k`` (``None`` or
        ``k >= N``: the whole ranking).
    hits_at : sequence of int
        Cut-offs ``k`` at which to count relevant items in the top ``k``.
    at_relevant : array_like of int, shape (Q, L), optional
        For each query, relevant-item counts ``j`` (``0 <= j <= R_i``, where
        ``R_i`` is the number of items relevant to query ``i``).

    Returns
    -------
    RankingSummary
        counts : int64 (Q, bits + 1)
            Database items at each distance.
        relevant : int64 (Q, bits + 1) or None
            Relevant items at each distance (``None`` without labels).
        ap : float64 (Q, len(ap_at))
            ``AP@k = (1 / n_k) * sum_m m / rank_m`` over the ``n_k`` relevant
            items in the top ``k``, ``rank_m`` being the 1-based rank of the
            ``m``-th of them; the terms are added in rank order. 0 when no
            relevant item is in the top ``k``.
        hits : int64 (Q, len(hits_at))
            Relevant items in the top ``k``.
        precision_at_relevant : float64 (Q, L)
            ``j / rank_j``: precision at the rank where the ``j``-th relevant
            item is retrieved; 0 where ``j == 0``.
    """
    q, d = _pair(query, database)
    n_q, n = len(q), len(d)
    if (query_labels is None) != (database_labels is None):
        raise ValueError("give both query_labels and database_labels, or neither")
    ap_at = np.array([n if k is None else min(_check_k(k), n) for k in ap_at], dtype=np.int64)
    hits_at = np.array([min(_check_k(k), n) for k in hits_at], dtype=np.int64)
    if at_relevant is None:
        at_relevant = np.zeros((n_q, 0), dtype=np.int64)
    else:
        at_relevant = np.ascontiguousarray(_as_numpy(at_relevant), dtype=np.int64)
        if at_relevant.ndim != 2 or at_relevant.shape[0] != n_q:
            raise ValueError(
                f"at_relevant must have shape (Q, L) = ({n_q}, L), got {at_relevant.shape}"
            )
    needs_ranks = len(ap_at) + len(hits_at) + at_relevant.shape[1] > 0
    if query_labels is None:
        if needs_ranks:
            raise ValueError("ranking statistics need query_labels and database_labels")
        ql = dl = np.zeros(0, dtype=np.int64)
    else:
        ql = check_labels(query_labels, n_q, "query_labels")
        dl = check_labels(database_labels, n, "database_labels")
        if at_relevant.size:
            n_rel = relevant_totals(ql, dl)
            bad = (at_relevant < 0) | (at_relevant > n_rel[:, None])
            if bad.any():
                i = int(np.argwhere(bad)[0, 0])
                raise ValueError(
                    f"at_relevant[{i}] asks for {at_relevant[i].tolist()} relevant items "
                    f"but query {i} has {n_rel[i]}"
                )
    nbins = q.bits + 1
    counts = np.zeros((n_q, nbins), dtype=np.int64)
    relevant = np.zeros((n_q, nbins), dtype=np.int64)
    ap = np.zeros((n_q, len(ap_at)), dtype=np.float64)
    hits = np.zeros((n_q, len(hits_at)), dtype=np.int64)
    prec = np.zeros((n_q, at_relevant.shape[1]), dtype=np.float64)
    if n_q:
        _summary_kernel(
            q.words, _transposed(d), ql, dl, ap_at, hits_at, at_relevant,
            counts, relevant, ap, hits, prec,
        )
    return RankingSummary(counts, None if query_labels is None else relevant, ap, hits, prec)


def relevant_totals(query_labels, database_labels) -> np.ndarray:
    """Number of database items sharing each query's label.

    Parameters
    ----------
    query_labels : array_like of int, shape (Q,)
    database_labels : array_like of int, shape (N,)

    Returns
    -------
    ndarray of int64, shape (Q,)
        ``R_i``, the number of items relevant to query ``i`` (0 when its class
        is absent from the database).
    """
    ql, dl = _as_numpy(query_labels), _as_numpy(database_labels)
    ql = check_labels(ql, ql.shape[0] if ql.ndim else 0, "query_labels")
    dl = check_labels(dl, dl.shape[0] if dl.ndim else 0, "database_labels")
    if len(dl) == 0:
        return np.zeros(len(ql), dtype=np.int64)
    classes, sizes = np.unique(dl, return_counts=True)
    where = np.minimum(np.searchsorted(classes, ql), len(classes) - 1)
    return np.where(classes[where] == ql, sizes[where], 0).astype(np.int64)


# ---------------------------------------------------------------------------
# search API: exact scan or multi-index hashing, same answers either way
#
# Multi-index hashing (MIH; Norouzi, Punjani and Fleet, CVPR 2012) cuts each
# code into ``m`` disjoint substrings and keeps one table per substring that
# lists the items with each substring value. If two codes differ in ``d``
# bits, then by the pigeonhole principle some substring differs in at most
# ``d // m`` bits. A query probes, table by table, the substring values at
# Hamming distance 0, 1, 2, ... of its own substring ("step (s, t)": the
# values at distance exactly ``s`` in table ``t``), computes the full
# distance of each item it meets, and after step (s, t) has met every item
# within distance ``m * s + t`` of the query. Radius search stops once that
# bound reaches the radius, top-k search once it has met k items within the
# bound; the answer is then exact, not approximate. An item met again in a
# later step is recognised from its substring distances and skipped.
# A query whose probing grows too costly (many tables and buckets for a
# large radius or k) stops early and is answered by the exact scan instead.
# ---------------------------------------------------------------------------

SEARCH_METHODS = ("auto", "exact", "mih")

# Below this many database codes ``method="auto"`` scans: the scan then takes
# a fraction of a millisecond per query and MIH saves little.
AUTO_MIN_DATABASE = 100_000
# ``method="auto"`` builds the tables once an index has been asked this many
# queries in all: building costs about as much as scanning for 100-200.
AUTO_BUILD_QUERIES = 100
# ``method="auto"`` tries MIH on this many queries of each kind of request
# and then keeps to MIH only while at most AUTO_MAX_FALLBACK of them gave up.
AUTO_PROBE_QUERIES = 32
AUTO_MAX_FALLBACK = 0.25
# A query gives up on MIH (and is scanned) once it has probed buckets and
# items worth more than this fraction of the database size. Probing an item
# costs about ten times as much as scanning one, so a query that gives up has
# cost about one extra scan.
MIH_WORK_FRACTION = 1 / 16
# MIH queries take microseconds: a thread gets at least this many of them.
MIH_QUERIES_PER_THREAD = 16
MIH_MAX_SUBSTRING = 24  # bits per table; a table's directory has 2**bits + 1 entries
# Codes of up to this many 64-bit words are copied into each table in bucket
# order, so that a bucket is read from contiguous memory (several times
# faster); longer codes are read from the database where they are.
MIH_COPY_WORDS = 2


class Neighbours(NamedTuple):
    """Result of :func:`search` / :meth:`SearchIndex.search`.

    For a top-``k`` search, ``indices`` (int64) and ``distances`` (uint16)
    have shape ``(Q, min(k, N))``. For a radius search (with or without
    ``k``) both are lists of ``Q`` 1-D arrays, one per query, of varying
    length. Either way each query's items are ordered by (Hamming distance,
    database index), exactly as :func:`topk` and :func:`radius_search` order
    them.
    """

    indices: np.ndarray | list
    distances: np.ndarray | list


def mih_layout(bits: int, n: int, tables: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Substrings used by multi-index hashing: their first bits and lengths.

    Parameters
    ----------
    bits : int
        Code length.
    n : int
        Number of database codes.
    tables : int, optional
        Number of substrings ``m``. By default substrings are about
        ``log2(n)`` bits long (at least 1, at most 24), so that a table has
        about as many buckets as the database has codes:
        ``m = ceil(bits / floor(log2(n)))``. For 64-bit codes that is 4
        tables of 16 bits from 65,536 to 16.7 million codes, and 3 tables
        of 21-22 bits at 10 million.

    Returns
    -------
    starts, lengths : ndarray of int64, shape (m,)
        Substring ``t`` is bits ``starts[t] .. starts[t] + lengths[t] - 1``;
        the lengths differ by at most one.
    """
    (bits,) = check_bits(bits, 1, MAX_BITS)
    if tables is None:
        sub = int(np.clip(np.floor(np.log2(max(int(n), 2))), 1, MIH_MAX_SUBSTRING))
        m = -(-bits // sub)
    else:
        if isinstance(tables, (bool, np.bool_)) or not isinstance(tables, (int, np.integer)):
            raise TypeError(f"tables must be a positive integer or None, got {tables!r}")
        m = int(tables)
        if not 1 <= m <= bits:
            raise ValueError(f"tables must be between 1 and bits={bits}, got {m}")
        if -(-bits // m) > MIH_MAX_SUBSTRING:
            raise ValueError(
                f"{m} tables cut {bits}-bit codes into substrings of up to {-(-bits // m)} bits; "
                f"at most {MIH_MAX_SUBSTRING} are supported, so use at least "
                f"{-(-bits // MIH_MAX_SUBSTRING)} tables"
            )
    lengths = np.full(m, bits // m, dtype=np.int64)
    lengths[: bits % m] += 1
    starts = np.zeros(m, dtype=np.int64)
    starts[1:] = np.cumsum(lengths)[:-1]
    return starts, lengths


@njit(inline="always", cache=True)
def _substring(row, start, length):
    """Bits ``start .. start + length - 1`` (length <= 32) of a packed code row."""
    w = start >> 6
    o = start & 63
    v = row[w] >> np.uint64(o)
    if o + length > 64:
        v |= row[w + 1] << np.uint64(64 - o)
    return np.int64(v & ((np.uint64(1) << np.uint64(length)) - np.uint64(1)))


@njit(parallel=True, cache=True)
def _mih_build_kernel(words, starts, lengths, dir_base, dirs, ids, tcodes):
    """Counting sort of the database by each substring, one table per task.

    ``dirs[dir_base[t] + v] .. dirs[dir_base[t] + v + 1]`` is the range of
    ``ids[t]`` that lists the items whose substring ``t`` equals ``v``, in
    ascending index order. If ``tcodes`` has one row per table, row ``t``
    receives the codes in the order of ``ids[t]``.
    """
    copy = tcodes.shape[0] == starts.shape[0]
    n = words.shape[0]
    for t in prange(starts.shape[0]):
        base = dir_base[t]
        size = np.int64(1) << lengths[t]
        for j in range(n):
            dirs[base + _substring(words[j], starts[t], lengths[t]) + 1] += 1
        for v in range(size):
            dirs[base + v + 1] += dirs[base + v]
        cursor = dirs[base : base + size].copy()
        for j in range(n):
            v = _substring(words[j], starts[t], lengths[t])
            ids[t, cursor[v]] = j
            if copy:
                for w in range(words.shape[1]):
                    tcodes[t, cursor[v], w] = words[j, w]
            cursor[v] += 1


@njit(cache=True)
def _mih_query(qrow, tcodes, starts, lengths, dir_base, dirs, ids, nbins, k, r, limit):
    """MIH search of one query; see the section comment above.

    Returns ``(keys, work)``: ``keys`` holds ``distance * N + index`` of the
    answer in ascending order (the k nearest for ``k > 0``, every item within
    ``r`` for ``k == 0``), or is ``None`` when the query stopped after
    ``limit`` units of work (buckets and items probed). ``tcodes`` is either
    one copy of the codes per table in bucket order, shape (m, N, W), or the
    codes themselves, shape (1, N, W).
    """
    n = ids.shape[1]
    copied = tcodes.shape[0] == starts.shape[0]
    m = starts.shape[0]
    n_words = qrow.shape[0]
    max_len = 0
    for t in range(m):
        max_len = max(max_len, lengths[t])
    qkey = np.empty(m, np.int64)
    for t in range(m):
        qkey[t] = _substring(qrow, starts[t], lengths[t])
    xor = np.empty(n_words, np.uint64)
    hist = np.zeros(nbins, np.int64)
    cand = np.empty(64, np.int64)  # distance * n + index of the items met
    nc = 0
    work = 0
    cum = 0  # items met within the completeness bound
    bound = -1
    # items farther than ``worst`` cannot be in the answer: the radius, or the
    # k-th smallest distance met so far (``within`` items met are not farther)
    worst = r if k == 0 else nbins - 1
    within = 0
    for s in range(max_len + 1):
        for t in range(m):
            length = lengths[t]
            if s <= length:
                base = dir_base[t]
                # substring values at distance exactly s: masks with s bits set
                mask = (np.int64(1) << s) - 1
                top = np.int64(1) << length
                while mask < top:
                    v = qkey[t] ^ mask
                    lo = dirs[base + v]
                    hi = dirs[base + v + 1]
                    work += 1 + (hi - lo)
                    for p in range(lo, hi):
                        src = t if copied else 0
                        row = p if copied else ids[t, p]
                        d = 0
                        for w in range(n_words):
                            x = qrow[w] ^ tcodes[src, row, w]
                            xor[w] = x
                            d += _popcount64(x)
                        if d > worst:
                            continue
                        # met before: in an earlier table at distance <= s, or
                        # in a later one at distance < s
                        seen = False
                        for u in range(m):
                            if u != t:
                                du = _popcount64(np.uint64(_substring(xor, starts[u], lengths[u])))
                                if du < s or (u < t and du == s):
                                    seen = True
                                    break
                        if seen:
                            continue
                        if nc == cand.shape[0]:
                            grown = np.empty(2 * nc, np.int64)
                            for a in range(nc):
                                grown[a] = cand[a]
                            cand = grown
                        cand[nc] = d * n + ids[t, p]
                        nc += 1
                        hist[d] += 1
                        if k > 0:
                            within += 1
                            while within - hist[worst] >= k:
                                within -= hist[worst]
                                worst -= 1
                    if work > limit:
                        return None, work
                    if mask == 0:
                        break
                    # next mask with the same number of bits (Gosper's hack)
                    c = mask & -mask
                    nxt = mask + c
                    mask = (((nxt ^ mask) >> 2) // c) | nxt
            # every item within m * s + t of the query has now been met
            new_bound = min(m * s + t, nbins - 1)
            for d in range(bound + 1, new_bound + 1):
                cum += hist[d]
            bound = new_bound
            if k == 0 and bound >= r:
                return np.sort(cand[:nc]), work
            if k > 0 and cum >= k:
                # the k nearest: every item met closer than the k-th distance,
                # and the lowest indices among those at the k-th distance
                kth = 0
                below = 0
                while below + hist[kth] < k:
                    below += hist[kth]
                    kth += 1
                keep = np.empty(below + hist[kth], np.int64)
                c2 = 0
                for a in range(nc):
                    if cand[a] // n <= kth:
                        keep[c2] = cand[a]
                        c2 += 1
                if c2 > k:
                    keep = np.partition(keep, k - 1)[:k]
                return np.sort(keep), work
    return None, work  # not reached: the last step meets every item


@njit(parallel=True, cache=True)
def _mih_kernel(qw, tcodes, starts, lengths, dir_base, dirs, ids, nbins, k, r, limit, cap,
                out_idx, out_dist, out_count, fallback, work_done):
    """:func:`_mih_query` for every query.

    ``k > 0``: ``out_idx``/``out_dist`` of shape (Q, k) receive the k
    nearest items. ``k == 0``: the hits within ``r`` go to the first
    ``out_count[i]`` columns of ``out_idx``/``out_dist`` (shape (Q, cap)),
    unless there are more than ``cap`` of them (then only ``out_count[i]`` is
    set). ``fallback[i]`` is set when query ``i`` gave up; its outputs are
    then undefined.
    """
    n = ids.shape[1]
    for i in prange(qw.shape[0]):
        keys, work = _mih_query(
            qw[i], tcodes, starts, lengths, dir_base, dirs, ids, nbins, k, r, limit
        )
        work_done[i] = work
        if keys is None:
            fallback[i] = True
            continue
        c2 = keys.shape[0]
        out_count[i] = c2
        if c2 <= cap:
            for a in range(c2):
                out_idx[i, a] = keys[a] % n
                out_dist[i, a] = keys[a] // n


@njit(parallel=True, cache=True)
def _scan_radius_kernel(qw, dwt, r, cap, out_idx, out_dist, out_count):
    """Exact radius search in one distance pass per query.

    ``out_count[i]`` is the number of items within ``r`` of query ``i``; when
    it is at most ``cap`` they fill the first columns of ``out_idx`` /
    ``out_dist`` in (distance, index) order.
    """
    n = dwt.shape[1]
    for i in prange(qw.shape[0]):
        dist = np.empty(n, np.uint16)
        _row_distances(qw, i, dwt, dist)
        hist = np.zeros(r + 1, np.int64)
        for j in range(n):
            if dist[j] <= r:
                hist[dist[j]] += 1
        start = np.empty(r + 1, np.int64)
        c = 0
        for t in range(r + 1):
            start[t] = c
            c += hist[t]
        out_count[i] = c
        if c > cap:
            continue
        for j in range(n):
            t = dist[j]
            if t <= r:
                out_idx[i, start[t]] = j
                out_dist[i, start[t]] = t
                start[t] += 1


@contextlib.contextmanager
def _threads_for(tasks: int):
    """Run numba kernels on at most ``tasks`` threads (at least one).

    The kernels hand one query to each thread; waking threads that get no
    query costs more than a MIH query or a small scan (milliseconds on a
    busy machine), so a single query runs on the calling thread alone.
    """
    before = numba.get_num_threads()
    if tasks >= before:
        yield
        return
    numba.set_num_threads(max(int(tasks), 1))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _check_radius(radius) -> int:
    if (
        isinstance(radius, (bool, np.bool_))
        or not isinstance(radius, (int, np.integer))
        or radius < 0
    ):
        raise ValueError(f"radius must be a non-negative integer or None, got {radius!r}")
    return int(radius)


class SearchIndex:
    """A database of codes prepared for repeated exact Hamming search.

    Parameters
    ----------
    database : codes (N, bits) or PackedCodes
    method : {"auto", "exact", "mih"}
        ``"exact"`` scans every code for every query (:func:`topk`,
        :func:`radius_search`). ``"mih"`` builds multi-index hashing tables
        and answers from them; a query that needs more work than
        ``work_fraction`` of a scan is scanned instead. ``"auto"`` scans
        databases under ``AUTO_MIN_DATABASE`` codes; for larger ones it
        builds the tables once ``AUTO_BUILD_QUERIES`` queries have been
        asked in all (in one call or several). It then answers the first
        ``AUTO_PROBE_QUERIES`` queries of each kind of request (each
        ``(k, radius)``) by MIH, and later ones by MIH only while at most
        ``AUTO_MAX_FALLBACK`` of the MIH queries of that kind gave up; so a
        request that MIH cannot speed up (say top-1000 of 64-bit codes) is
        scanned after a few dozen queries.
        **Every method returns the same answer**, exactly the one of the scan,
        including which of several tied items are returned.
    tables : int, optional
        Number of MIH substrings; see :func:`mih_layout`.
    work_fraction : float or None
        A MIH query gives up (and is scanned) after probing buckets and items
        worth this fraction of the database size (default
        ``MIH_WORK_FRACTION``); ``None`` never gives up.

    Notes
    -----
    MIH pays off when the requested neighbours are near: radius search with
    a small radius, top-k with small k on large databases whose codes have
    close neighbours. Far neighbours (large k on 64-bit codes) make it fall
    back to the scan. Each of the ``m`` tables holds the ids of the codes in
    bucket order (4 bytes each below 2**31 codes), a directory of
    ``2**(bits / m) + 1`` offsets and, for codes of up to 128 bits, a copy
    of the codes in bucket order (``MIH_COPY_WORDS``): for 64-bit codes
    ``m * 12`` bytes per code on top of the 8 of the packed codes;
    :attr:`nbytes` reports the total.

    Attributes
    ----------
    last_search : dict
        What the latest :meth:`search` did: ``method`` ("exact" or "mih"),
        ``queries``, ``mih_queries`` (answered from the tables or, after
        giving up, by the scan) and ``fallback`` (those that gave up).
    """

    def __init__(self, database, method: str = "auto", tables: int | None = None,
                 work_fraction: float | None = MIH_WORK_FRACTION):
        if method not in SEARCH_METHODS:
            raise ValueError(f"method must be one of {SEARCH_METHODS}, got {method!r}")
        if work_fraction is not None and not (
            isinstance(work_fraction, (int, float, np.integer, np.floating))
            and not isinstance(work_fraction, (bool, np.bool_)) and work_fraction > 0
        ):
            raise ValueError(
                f"work_fraction must be a positive number or None, got {work_fraction!r}"
            )
        self.codes = pack(database)
        if len(self.codes) == 0:
            raise ValueError("the database is empty")
        self.method = method
        self.bits = self.codes.bits
        self.starts, self.lengths = mih_layout(self.bits, len(self.codes), tables)
        self.work_fraction = work_fraction
        self._tables = None
        self._dwt = None
        self._asked = 0  # queries asked so far
        self._history: dict = {}  # (k, radius) -> (MIH queries, of which gave up)
        self.last_search: dict = {}
        if method == "mih":
            self.build()

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return (
            f"SearchIndex(n={len(self)}, bits={self.bits}, method={self.method!r}, "
            f"tables={len(self.starts)}, built={self._tables is not None})"
        )

    @property
    def uses_mih(self) -> bool:
        """Whether searches may use MIH tables ("mih", or "auto" on a large database)."""
        return self.method == "mih" or (self.method == "auto" and len(self) >= AUTO_MIN_DATABASE)

    @property
    def built(self) -> bool:
        """Whether the MIH tables have been built."""
        return self._tables is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the packed codes plus, once built, the MIH tables."""
        if self._tables is None:
            return self.codes.words.nbytes
        dir_base, dirs, ids, tcodes = self._tables
        copies = tcodes.nbytes if tcodes.shape[0] == len(self.starts) else 0
        return self.codes.words.nbytes + dir_base.nbytes + dirs.nbytes + ids.nbytes + copies

    def build(self) -> "SearchIndex":
        """Build the MIH tables now (``"auto"`` otherwise builds them when they pay off)."""
        if self._tables is None:
            n, m = len(self.codes), len(self.lengths)
            itype = np.int32 if n < 2**31 - 1 else np.int64
            sizes = (np.int64(1) << self.lengths) + 1
            dir_base = np.zeros(m, dtype=np.int64)
            dir_base[1:] = np.cumsum(sizes)[:-1]
            dirs = np.zeros(int(sizes.sum()), dtype=itype)
            ids = np.empty((m, n), dtype=itype)
            if self.codes.n_words <= MIH_COPY_WORDS:
                tcodes = np.empty((m, n, self.codes.n_words), dtype=np.uint64)
            else:
                tcodes = self.codes.words[None]
            _mih_build_kernel(
                self.codes.words, self.starts, self.lengths, dir_base, dirs, ids, tcodes
            )
            self._tables = (dir_base, dirs, ids, tcodes)
        return self

    def _mih(self, q: PackedCodes, k: int, r: int, cap: int = 64):
        """MIH search of ``q``: (idx, dist, counts, fallback); see :func:`_mih_kernel`."""
        self.build()
        dir_base, dirs, ids, tcodes = self._tables
        n_q, n = len(q), len(self.codes)
        limit = 2**62 if self.work_fraction is None else max(int(n * self.work_fraction), 1)
        fallback = np.zeros(n_q, dtype=np.bool_)
        work = np.zeros(n_q, dtype=np.int64)
        counts = np.zeros(n_q, dtype=np.int64)
        cap = k if k > 0 else cap
        idx = np.empty((n_q, cap), dtype=np.int64)
        dist = np.empty((n_q, cap), dtype=np.uint16)
        if n_q:
            with _threads_for(-(-n_q // MIH_QUERIES_PER_THREAD)):
                _mih_kernel(q.words, tcodes, self.starts, self.lengths, dir_base, dirs, ids,
                            self.bits + 1, k, r, limit, cap, idx, dist, counts, fallback, work)
        return idx, dist, counts, fallback

    def _transposed(self) -> np.ndarray:
        """The database words as (W, N), kept for the scans (a view for W = 1)."""
        if self._dwt is None:
            self._dwt = _transposed(self.codes)
        return self._dwt

    def _scan_topk(self, q: PackedCodes, k: int):
        """Exact scan; the same kernel and answer as :func:`topk`."""
        idx = np.empty((len(q), k), dtype=np.int64)
        dist = np.empty((len(q), k), dtype=np.uint16)
        if len(q):
            with _threads_for(len(q)):
                _topk_kernel(q.words, self._transposed(), k, self.bits + 1, idx, dist)
        return idx, dist

    def _scan_radius(self, q: PackedCodes, r: int, cap: int = 64):
        """Exact scan: (idx, dist, counts) like :meth:`_mih`, one distance pass per query."""
        counts = np.zeros(len(q), dtype=np.int64)
        idx = np.empty((len(q), cap), dtype=np.int64)
        dist = np.empty((len(q), cap), dtype=np.uint16)
        if len(q):
            with _threads_for(len(q)):
                _scan_radius_kernel(q.words, self._transposed(), r, cap, idx, dist, counts)
        return idx, dist, counts

    def _topk(self, q: PackedCodes, k: int, use_mih: bool):
        """(idx, dist) of shape (Q, k) and the number of MIH queries that gave up."""
        if not use_mih:
            return self._scan_topk(q, k), 0
        idx, dist, _, fallback = self._mih(q, k, 0)
        if fallback.any():
            rows = np.flatnonzero(fallback)
            idx[rows], dist[rows] = self._scan_topk(q[rows], k)
        return (idx, dist), int(fallback.sum())

    def _radius(self, q: PackedCodes, r: int, use_mih: bool):
        """CSR (offsets, indices, distances) of the hits within ``r``, and the give-ups."""
        n_q = len(q)
        if use_mih:
            idx, dist, counts, fallback = self._mih(q, 0, r)
        else:
            idx, dist, counts = self._scan_radius(q, r)
            fallback = np.zeros(n_q, dtype=np.bool_)
        ok = ~fallback & (counts <= idx.shape[1])
        if ok.all():
            return _csr(idx, dist, counts), 0
        parts = []  # (rows, offsets within the rows' hits, indices, distances)
        parts.append((np.flatnonzero(ok),) + _csr(idx[ok], dist[ok], counts[ok]))
        over = np.flatnonzero(~ok & ~fallback)
        if len(over):  # more hits than the buffer held: search those queries again
            cap = int(counts[over].max())
            if use_mih:
                i2, d2, c2, f2 = self._mih(q[over], 0, r, cap=cap)
            else:
                i2, d2, c2 = self._scan_radius(q[over], r, cap=cap)
                f2 = np.zeros(len(over), dtype=np.bool_)
            fallback[over[f2]] = True
            parts.append((over[~f2],) + _csr(i2[~f2], d2[~f2], c2[~f2]))
        scanned = np.flatnonzero(fallback)
        if len(scanned):
            (offs, pidx, pdist), _ = self._radius(q[scanned], r, False)
            parts.append((scanned, offs, pidx, pdist))
        counts = np.zeros(n_q, dtype=np.int64)
        for rows, offs, _, _ in parts:
            counts[rows] = np.diff(offs)
        offsets = np.zeros(n_q + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        out_idx = np.empty(offsets[-1], dtype=np.int64)
        out_dist = np.empty(offsets[-1], dtype=np.uint16)
        for rows, offs, pidx, pdist in parts:
            # destination of each hit: its query's offset plus its rank
            dest = np.repeat(offsets[rows] - offs[:-1], np.diff(offs)) + np.arange(offs[-1])
            out_idx[dest] = pidx
            out_dist[dest] = pdist
        return (offsets, out_idx, out_dist), len(scanned)

    def search(self, query, k: int | None = None, radius: int | None = None) -> Neighbours:
        """Exact top-``k`` and/or radius search of the database.

        Parameters
        ----------
        query : codes (Q, bits) or PackedCodes
        k : int, optional
            Number of nearest neighbours (clipped to ``N``).
        radius : int, optional
            Hamming radius: every item within distance ``<= radius``.
            With ``k`` as well: the (at most ``k``) nearest of them.

        Returns
        -------
        Neighbours
            ``(indices, distances)``: arrays of shape ``(Q, min(k, N))`` for
            top-k alone, lists of ``Q`` per-query arrays when ``radius`` is
            given; each query's items in (distance, index) order. Equal to
            ``topk(query, database, k)`` and to the rows of
            ``radius_search(query, database, radius)``.
        """
        if k is None and radius is None:
            raise ValueError("give k (nearest neighbours), radius (Hamming radius), or both")
        if k is not None:
            k = _check_k(k)
        if radius is not None:
            radius = min(_check_radius(radius), self.bits)
        q, d = _pair(query, self.codes)
        if k is not None:
            k = min(k, len(d))

        def run(rows, mih):
            return self._topk(rows, k, mih) if radius is None else self._radius(rows, radius, mih)

        self._asked += len(q)
        mih = self.uses_mih and (
            self.method == "mih" or self._tables is not None or self._asked >= AUTO_BUILD_QUERIES
        )
        if mih and self.method == "auto" and len(q):
            # MIH for the first AUTO_PROBE_QUERIES queries of each kind of
            # request, then only while few of them gave up
            key = (k, radius)
            tried, gave_up = self._history.get(key, (0, 0))
            n_probe = min(len(q), max(AUTO_PROBE_QUERIES - tried, 0))
            parts, fell, n_mih = [], 0, 0
            if n_probe:
                out, fell = run(q[:n_probe], True)
                parts.append(out)
                tried, gave_up, n_mih = tried + n_probe, gave_up + fell, n_probe
            if n_probe < len(q):
                mih = gave_up <= AUTO_MAX_FALLBACK * tried
                out, more = run(q[n_probe:], mih)
                parts.append(out)
                if mih:
                    tried, gave_up = tried + len(q) - n_probe, gave_up + more
                    n_mih, fell = len(q), fell + more
            self._history[key] = (tried, gave_up)
            out = parts[0] if len(parts) == 1 else _join(parts[0], parts[1], radius is None)
        else:
            out, fell = run(q, mih)
            n_mih = len(q) if mih else 0
        self.last_search = {
            "method": "mih" if n_mih else "exact",
            "queries": len(q),
            "mih_queries": n_mih,
            "fallback": fell,
        }
        if radius is None:
            return Neighbours(*out)
        offsets, idx, dist = out
        ends = offsets[1:] if k is None else np.minimum(offsets[1:], offsets[:-1] + k)
        bounds = list(zip(offsets[:-1].tolist(), ends.tolist()))
        return Neighbours([idx[a:b] for a, b in bounds], [dist[a:b] for a, b in bounds])


def _csr(idx, dist, counts):
    """The first ``counts[i]`` entries of each row of ``idx``/``dist`` in CSR form."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    keep = np.arange(idx.shape[1])[None, :] < counts[:, None]
    return offsets, idx[keep], dist[keep]


def _join(first, second, dense: bool):
    """Concatenate two search outputs along the queries."""
    if dense:
        return tuple(np.concatenate([a, b]) for a, b in zip(first, second))
    (o1, i1, d1), (o2, i2, d2) = first, second
    return np.concatenate([o1, o1[-1] + o2[1:]]), np.concatenate([i1, i2]), np.concatenate([d1, d2])


def search(query, database, k: int | None = None, radius: int | None = None,
           method: str = "auto", tables: int | None = None) -> Neighbours:
    """Exact Hamming search: top-``k`` nearest neighbours and/or all within a radius.

    One call of :meth:`SearchIndex.search` on a fresh :class:`SearchIndex`;
    to search the same database repeatedly, keep the index instead (MIH
    tables for a million 64-bit codes take a fraction of a second to build).
    With ``method="auto"`` a single call builds them only for a database of
    at least ``AUTO_MIN_DATABASE`` codes and at least ``AUTO_BUILD_QUERIES``
    queries.

    Parameters
    ----------
    query : codes (Q, bits) or PackedCodes
    database : codes (N, bits) or PackedCodes
    k : int, optional
        Number of nearest neighbours.
    radius : int, optional
        Hamming radius (``<=``); with ``k``, the nearest ``k`` within it.
    method : {"auto", "exact", "mih"}
        How to search; all three give the same answer. See :class:`SearchIndex`.
    tables : int, optional
        Number of MIH substrings (default from :func:`mih_layout`).

    Returns
    -------
    Neighbours
        ``(indices, distances)``; see :class:`Neighbours`.

    Examples
    --------
    ::

        idx, dist = search(query_codes, database_codes, k=10)      # arrays (Q, 10)
        idx, dist = search(query_codes, database_codes, radius=2)  # lists of Q arrays
        index = SearchIndex(database_codes)                          # search it repeatedly
        idx, dist = index.search(query_codes, k=10)
    """
    return SearchIndex(database, method=method, tables=tables).search(query, k=k, radius=radius)
