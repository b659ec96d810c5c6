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

The kernels are compiled with numba (``parallel=True``, one query per task,
cached on disk after the first call; ``numba.set_num_threads`` sets the number
of threads). Per query they use ``O(N)`` scratch memory and never sort: a
histogram over the ``bits + 1`` possible distances followed by a counting-sort
pass ranks ``N`` items in ``O(N)``. Only :func:`distances` and a full
:func:`topk` ranking materialise ``Q x N`` outputs, because that is what they
return.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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
