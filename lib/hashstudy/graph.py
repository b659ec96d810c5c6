"""Nearest-neighbour graphs, Laplacian eigenmaps and self-supervised pair labels.

Three of the studied papers derive their training targets from a k-nearest-
neighbour (kNN) graph of image features instead of from class labels:

* DSTH (conference, sec. 2.1, eq. 1-7; journal, sec. III-A, eq. 7-14) builds a
  kNN graph with cosine weights, solves the generalised eigenproblem
  ``L v = lambda D v`` of its Laplacian (Laplacian eigenmaps, as in self-taught
  hashing), keeps the ``t`` eigenvectors with the smallest non-zero
  eigenvalues and thresholds them into ``t``-bit *hash labels*
  (:func:`knn_graph`, :func:`laplacian_eigenmap`, :func:`binarize`).
* DDH (sec. 2.1, Algorithm 1, eq. 1-3) marks two images as similar when one
  lies in the K1-NN list of an image whose own K1-NN list overlaps most with
  the other's (:func:`expanded_neighbors`, :func:`expand_neighbors`), and
  reports how often such pairs share a class (Fig. 2,
  :func:`neighbor_precision_curve`).
* CNNH and the supervised baselines use the label similarity matrix
  ``S_ij = +1`` for images of a common class and ``-1`` otherwise
  (:func:`label_similarity`, :func:`pairwise_labels`).

Conventions
-----------
* Features are rows: ``X`` has shape ``(N, D)``. They are converted to
  C-contiguous ``float32`` for the kNN search (matrix products on tiles of
  points); similarities and distances are therefore float32-accurate.
* Neighbour lists never contain the query itself when ``exclude_self=True``;
  they are sorted best first, and exact ties are broken by the smaller index.
* Graphs are ``scipy.sparse.csr_matrix`` of shape ``(N, N)``; nothing in this
  module ever forms a dense ``N x N`` matrix except :func:`label_similarity`,
  which is meant for a few thousand training images and says so.
* Binary codes are ``uint8`` arrays with values in ``{0, 1}``; pair labels are
  ``+1`` (similar) and ``-1`` (dissimilar).
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph
import scipy.sparse.linalg
from numba import njit
from threadpoolctl import threadpool_limits

from . import timing
from .config import check_choice

__all__ = [
    "knn",
    "knn_query",
    "knn_graph",
    "laplacian_eigenmap",
    "binarize",
    "spectral_codes",
    "expand_neighbors",
    "expanded_neighbors",
    "label_precision",
    "neighbor_precision_curve",
    "label_similarity",
    "pairwise_labels",
    "DisconnectedGraphWarning",
    "ncut_thresholds",
]

METRICS = ("cosine", "euclidean")
WEIGHTS = ("cosine", "heat", "binary")
SYMMETRIZE = ("max", "mean", "and")
EXPANSION_SYMMETRIZE = ("or", "and", "none")
BINARIZE_RULES = ("zero", "mean", "median", "ncut")
EIGEN_SOLVERS = ("auto", "arpack", "dense")

# Tile side of the kNN search: a 2048 x 2048 float32 score tile takes 16 MiB.
_DEFAULT_CHUNK = 2048
# Candidate pairs per block of the overlap computation in expand_neighbors
# (about 64 bytes each: 256 MiB).
_EXPAND_BLOCK_PAIRS = 2**22
# Graphs up to this size are solved with a dense eigensolver by solver="auto".
_DENSE_EIGEN_MAX_N = 500
# Degree of the Chebyshev filter in laplacian_eigenmap's Lanczos solver.
_CHEB_DEGREE = 16


class DisconnectedGraphWarning(UserWarning):
    """The graph has several connected components (several zero eigenvalues)."""


# ---------------------------------------------------------------------------
# input checks


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _as_features(X, name: str = "X") -> np.ndarray:
    """Validate a feature matrix and return it as C-contiguous float32."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) feature matrix, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(
            f"{name} has non-finite values (NaN or inf, or too large for float32) "
            f"in {bad.size} rows, e.g. rows {bad[:5].tolist()}"
        )
    return X


def _unit_rows(X: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"cosine similarity is undefined for all-zero rows; {name} has {zero.size} "
            f"such rows, e.g. rows {zero[:5].tolist()}"
        )
    return X / norms[:, None]


def _check_labels(labels, n: int) -> np.ndarray:
    """Class labels as (N,) integers or an (N, C) multi-label indicator matrix."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise ValueError(
            f"labels must have shape ({n},) or ({n}, C) to match the {n} items, "
            f"got {labels.shape}"
        )
    if labels.ndim == 2:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("a 2-D label matrix must be a 0/1 multi-label indicator")
        return labels.astype(bool)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"class labels must be integers, got dtype {labels.dtype}")
    return labels


def _share_label(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether items ``rows[p]`` and ``cols[p]`` share a class, pair by pair."""
    if labels.ndim == 1:
        return labels[rows] == labels[cols]
    out = np.empty(rows.size, dtype=bool)
    step = max(1, 2**22 // max(1, labels.shape[1]))
    for s in range(0, rows.size, step):
        out[s:s + step] = (labels[rows[s:s + step]] & labels[cols[s:s + step]]).any(axis=1)
    return out


# ---------------------------------------------------------------------------
# exact kNN search


def _prepare(X: np.ndarray, metric: str, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit rows for cosine; the rows and their squared norms for euclidean."""
    if metric == "cosine":
        return _unit_rows(X, name), None
    return X, np.einsum("ij,ij->i", X, X)


def _scores(G: np.ndarray, sq_rows, sq_cols) -> np.ndarray:
    """Turn a tile of dot products into scores to maximise, in place.

    Cosine: the dot products of unit rows. Euclidean: the negated squared
    distance ``2 q.x - |q|^2 - |x|^2``, symmetric in the two points.
    """
    if sq_rows is not None:
        G *= 2
        G -= sq_rows[:, None]
        G -= sq_cols[None, :]
    return G


@njit(inline="always", cache=True)
def _insert(best_i, best_v, row, idx, val):
    """Insert ``(val, idx)`` into the sorted list ``row``, dropping its last entry.

    Lists are ordered by descending score, then ascending index (the order in
    which exact ties are reported); the caller has checked that the candidate
    beats the last entry.
    """
    p = best_i.shape[1] - 1
    while p > 0 and (best_v[row, p - 1] < val
                     or (best_v[row, p - 1] == val and best_i[row, p - 1] > idx)):
        best_v[row, p] = best_v[row, p - 1]
        best_i[row, p] = best_i[row, p - 1]
        p -= 1
    best_v[row, p] = val
    best_i[row, p] = idx


@njit(cache=True)
def _fold_rows(best_i, best_v, owner0, cand0, tile):
    """Offer ``tile[r, c]`` to the list of point ``owner0 + r`` as candidate ``cand0 + c``."""
    m, w = tile.shape
    last = best_i.shape[1] - 1
    for r in range(m):
        row = owner0 + r
        last_v, last_i = best_v[row, last], best_i[row, last]
        for c in range(w):
            val = tile[r, c]
            if val > last_v or (val == last_v and cand0 + c < last_i):
                _insert(best_i, best_v, row, cand0 + c, val)
                last_v, last_i = best_v[row, last], best_i[row, last]


@njit(cache=True)
def _fold_cols(best_i, best_v, owner0, cand0, tile):
    """Offer ``tile[r, c]`` to the list of point ``owner0 + c`` as candidate ``cand0 + r``.

    Columns are taken in groups of 64 owners whose last entries stay at hand
    while the group's strip of the tile is read row by row.
    """
    m, w = tile.shape
    last = best_i.shape[1] - 1
    for g in range((w + 63) // 64):
        c0, c1 = g * 64, min(w, g * 64 + 64)
        last_v = best_v[owner0 + c0:owner0 + c1, last].copy()
        last_i = best_i[owner0 + c0:owner0 + c1, last].copy()
        for r in range(m):
            for c in range(c0, c1):
                val = tile[r, c]
                if val > last_v[c - c0] or (val == last_v[c - c0] and cand0 + r < last_i[c - c0]):
                    _insert(best_i, best_v, owner0 + c, cand0 + r, val)
                    last_v[c - c0] = best_v[owner0 + c, last]
                    last_i[c - c0] = best_i[owner0 + c, last]


def _search(Q: np.ndarray, DB: np.ndarray | None, k: int, metric: str, exclude_self: bool,
            chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by tiles of ``chunk x chunk`` points.

    ``DB=None`` searches ``Q`` against itself: for blocks ``a <= b`` the tile
    ``Q_a Q_b^T`` feeds the lists of the rows of block ``a`` and, transposed,
    those of block ``b``, so each pair is scored by one matrix product (half
    the work of a plain search). Every tile entry is offered to a running,
    sorted list of the k best per point; once a list is full almost every
    offer fails at one comparison with its last entry. Returns float32 scores
    (see :func:`_scores`); a point's own score is -inf when it is excluded.
    """
    symmetric = DB is None
    Q, sq_q = _prepare(Q, metric, "X" if symmetric else "the queries")
    if symmetric:
        DB, sq_db = Q, sq_q
    else:
        DB, sq_db = _prepare(DB, metric, "the database")
    m, n = Q.shape[0], DB.shape[0]
    best_i = np.full((m, k), n, dtype=np.int64)  # index n sorts after every real one
    best_v = np.full((m, k), -np.inf, dtype=np.float32)
    # One BLAS thread: the float32 products, and so the order of near-ties,
    # then do not depend on the machine's thread count, and on a shared
    # machine idle BLAS threads do not spin against the fold kernels.
    with threadpool_limits(limits=1, user_api="blas"):
        for a in range(0, m, chunk):
            rows_a = slice(a, min(m, a + chunk))
            for b in range(a if symmetric else 0, n, chunk):
                rows_b = slice(b, min(n, b + chunk))
                tile = _scores(Q[rows_a] @ DB[rows_b].T,
                               None if sq_q is None else sq_q[rows_a],
                               None if sq_db is None else sq_db[rows_b])
                if symmetric and a == b and exclude_self:
                    np.fill_diagonal(tile, -np.inf)
                _fold_rows(best_i, best_v, a, b, tile)
                if symmetric and a != b:
                    _fold_cols(best_i, best_v, b, a, tile)
    if metric == "euclidean":
        best_v = np.sqrt(np.maximum(-best_v, 0, dtype=np.float32))
    return best_i, best_v


@timing.timed("graphs")
def knn(X, k: int, metric: str = "cosine", exclude_self: bool = True,
        chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of ``X`` among the rows of ``X``.

    Brute force on square tiles of ``chunk x chunk`` points: each pair's score
    comes from one float32 matrix product and serves both points (half the
    arithmetic of a plain search); each tile is folded into running per-point
    lists of the k best (compiled with numba), where a comparison with the
    current k-th best score discards almost every entry. Memory is one tile
    plus the output, whatever ``N`` is. The search runs on one core (see
    Notes).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Feature rows (converted to float32). Must be finite; for ``"cosine"``
        no row may be all zero.
    k : int
        Number of neighbours, ``1 <= k <= N - 1`` (``<= N`` without
        ``exclude_self``).
    metric : {"cosine", "euclidean"}
        ``"cosine"`` ranks by the cosine similarity (dot product of the
        L2-normalised rows); ``"euclidean"`` by the euclidean distance.
    exclude_self : bool
        Leave each point out of its own list (an exact duplicate of the point
        is still a neighbour).
    chunk : int, optional
        Tile side in points (default 2048: 16 MiB per float32 tile).

    Returns
    -------
    indices : ndarray of int64, shape (N, k)
        Neighbour indices, best first; exact ties are ordered by index.
    values : ndarray of float32, shape (N, k)
        Cosine similarities (descending) for ``"cosine"``, euclidean
        distances (ascending) for ``"euclidean"``.

    Notes
    -----
    Deterministic for given inputs and ``chunk`` on a given CPU type. Scores
    are float32 matrix products, so candidates whose true scores differ by
    less than float32 rounding may come in either order relative to an exact
    computation, and a different ``chunk`` may change the order of such
    near-ties; so would the number of BLAS threads, which is why the search
    holds BLAS to one thread (on a busy machine this was also faster: spinning
    BLAS threads cost more than they gave). The euclidean distance is
    obtained as ``sqrt(|q|^2 - 2 q.x + |x|^2)``, which loses relative accuracy
    for points much closer than their norms.
    """
    check_choice("metric", metric, METRICS)
    X = _as_features(X)
    n = X.shape[0]
    if exclude_self and n < 2:
        raise ValueError("a single point has no neighbours other than itself")
    k = _check_int("k", k, 1, n - 1 if exclude_self else n)
    chunk = _DEFAULT_CHUNK if chunk is None else _check_int("chunk", chunk, 1)
    return _search(X, None, k, metric, exclude_self, chunk)


@timing.timed("graphs")
def knn_query(Xq, Xdb, k: int, metric: str = "cosine",
              chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database rows for out-of-sample queries.

    Parameters
    ----------
    Xq : array_like, shape (M, D)
        Query rows.
    Xdb : array_like, shape (N, D)
        Database rows; ``1 <= k <= N``.
    k, metric
        As in :func:`knn`.
    chunk : int, optional
        Tile side in points, as in :func:`knn`.

    Returns
    -------
    indices : ndarray of int64, shape (M, k)
        Database indices, best first, ties by index.
    values : ndarray of float32, shape (M, k)
        Cosine similarities (descending) or euclidean distances (ascending).
    """
    check_choice("metric", metric, METRICS)
    Xq, Xdb = _as_features(Xq, "Xq"), _as_features(Xdb, "Xdb")
    if Xq.shape[1] != Xdb.shape[1]:
        raise ValueError(
            f"queries have {Xq.shape[1]} features but the database has {Xdb.shape[1]}"
        )
    k = _check_int("k", k, 1, Xdb.shape[0])
    chunk = _DEFAULT_CHUNK if chunk is None else _check_int("chunk", chunk, 1)
    return _search(Xq, Xdb, k, metric, False, chunk)


# ---------------------------------------------------------------------------
# kNN graph


@timing.timed("graphs")
def knn_graph(X, k: int, weight: str = "cosine", sigma: float | None = None,
              symmetrize: str = "max", metric: str = "cosine",
              neighbors: tuple[np.ndarray, np.ndarray] | None = None,
              chunk: int | None = None) -> sp.csr_matrix:
    """Symmetric weighted kNN graph (the affinity ``W`` of DSTH eq. 1 / eq. 7).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Features. Only its shape is used when ``neighbors`` is given.
    k : int
        Neighbours per point (DSTH uses ``k = 25`` in the conference paper and
        ``mu = 12`` in the journal paper).
    weight : {"cosine", "heat", "binary"}
        ``"cosine"``: ``W_ij = max(cos(x_i, x_j), 0)`` as in eq. 1 (conference)
        and eq. 7 (journal). The clipping at 0 keeps the Laplacian positive
        semi-definite; an edge whose cosine is not positive is dropped.
        Requires ``metric="cosine"``.
        ``"heat"``: ``W_ij = exp(-d_ij^2 / (2 sigma^2))`` with ``d`` the
        distance of the metric (for ``"cosine"``, the distance between the
        L2-normalised rows, ``d^2 = 2 - 2 cos``).
        ``"binary"``: ``W_ij = 1``.
    sigma : float, optional
        Heat-kernel width; default the median distance to the k neighbours.
        Only for ``weight="heat"``.
    symmetrize : {"max", "mean", "and"}
        How the directed kNN relation becomes an undirected graph.
        ``"max"``: edge when either point is among the other's k neighbours
        (STH eq. 1, "x_i in N_k(x_j) or x_j in N_k(x_i)"), weight
        ``max(W_ij, W_ji)``; ``"mean"``: the same edges, weight
        ``(W_ij + W_ji) / 2`` (one-way edges count half); ``"and"``: mutual
        neighbours only.
    metric : {"cosine", "euclidean"}
        Metric of the neighbour search.
    neighbors : tuple of ndarray, optional
        ``(indices, values)`` as returned by ``knn(X, k', metric)`` with
        ``k' >= k`` and ``exclude_self=True``; the first ``k`` columns are used
        and no search is run. Lets several ``k`` share one search.
    chunk : int, optional
        Passed to :func:`knn`.

    Returns
    -------
    W : scipy.sparse.csr_matrix of float64, shape (N, N)
        Symmetric, non-negative, zero diagonal, sorted indices.
    """
    check_choice("weight", weight, WEIGHTS)
    check_choice("symmetrize", symmetrize, SYMMETRIZE)
    check_choice("metric", metric, METRICS)
    if weight == "cosine" and metric != "cosine":
        raise ValueError('weight="cosine" needs metric="cosine" (the neighbours are ranked '
                         "by the same similarity that weights them)")
    if sigma is not None and weight != "heat":
        raise ValueError(f"sigma is the heat-kernel width; it has no meaning for "
                         f"weight={weight!r}")
    if neighbors is None:
        idx, val = knn(X, k, metric=metric, exclude_self=True, chunk=chunk)
    else:
        n = np.shape(X)[0]
        idx, val = (np.asarray(a) for a in neighbors)
        if idx.shape != val.shape or idx.ndim != 2 or idx.shape[0] != n:
            raise ValueError(f"neighbors must be two ({n}, k') arrays from knn(), got shapes "
                             f"{idx.shape} and {val.shape}")
        k = _check_int("k", k, 1, idx.shape[1])
        idx, val = idx[:, :k], val[:, :k]
        if idx.min() < 0 or idx.max() >= n or (idx == np.arange(n)[:, None]).any():
            raise ValueError("neighbors indices must lie in 0..N-1 and exclude the point itself")
    n = idx.shape[0]
    val = val.astype(np.float64)
    if weight == "cosine":
        w = np.clip(val, 0.0, None)
    elif weight == "binary":
        w = np.ones_like(val)
    else:
        d2 = np.clip(2.0 - 2.0 * val, 0.0, None) if metric == "cosine" else val**2
        if sigma is None:
            sigma = float(np.sqrt(np.median(d2)))
            if sigma == 0:
                raise ValueError("the median neighbour distance is 0 (duplicated points); "
                                 "give sigma explicitly")
        elif not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        w = np.exp(-d2 / (2.0 * sigma**2))
    rows = np.repeat(np.arange(n), idx.shape[1])
    A = sp.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(n, n))
    if symmetrize == "max":
        W = A.maximum(A.T)
    elif symmetrize == "mean":
        W = (A + A.T) * 0.5
    else:
        W = A.minimum(A.T)
    W = sp.csr_matrix(W)
    W.eliminate_zeros()
    W.sort_indices()
    return W


# ---------------------------------------------------------------------------
# Laplacian eigenmaps


def _check_affinity(W) -> sp.csr_matrix:
    if not (sp.issparse(W) or isinstance(W, np.ndarray)):
        W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (N, N) affinity matrix, got shape {W.shape}")
    W = sp.csr_matrix(W, dtype=np.float64)
    if not np.isfinite(W.data).all():
        raise ValueError("W has non-finite entries")
    if (W.data < 0).any():
        raise ValueError("W has negative weights; a graph Laplacian needs W >= 0")
    asym = abs(W - W.T)
    scale = abs(W).max() if W.nnz else 1.0
    if asym.nnz and asym.max() > 1e-10 * scale:
        raise ValueError("W is not symmetric; symmetrise it first (see knn_graph(symmetrize=...))")
    return W


def _lanczos_ritz(apply, v0: np.ndarray, steps: int) -> np.ndarray:
    """Ritz values, descending, of ``steps`` Lanczos steps from ``v0``.

    Full reorthogonalisation (twice, classical Gram-Schmidt); stops early on
    an invariant subspace. By Cauchy interlacing the i-th largest Ritz value
    is a lower bound of the i-th largest eigenvalue.
    """
    V = np.empty((steps, v0.size))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    v = v0 / np.linalg.norm(v0)
    for j in range(steps):
        V[j] = v
        w = apply(v)
        alpha[j] = v @ w
        for _ in range(2):
            w -= V[:j + 1].T @ (V[:j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        if beta[j] <= 1e-10 * max(1.0, abs(alpha[j])):
            steps = j + 1
            break
        v = w / beta[j]
    return scipy.linalg.eigvalsh_tridiagonal(alpha[:steps], beta[:steps - 1])[::-1]


@timing.timed("graphs")
def laplacian_eigenmap(W, n_components: int, drop_trivial: bool = True, seed: int = 0,
                       solver: str = "auto", tol: float = 1e-4,
                       ncv: int | None = None, maxiter: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Laplacian eigenmaps: smallest solutions of ``L v = lambda D v``.

    ``L = D - W`` with ``D = diag(W 1)`` (DSTH conference eq. 2-6, journal
    eq. 8-12). The problem is solved in its normalised symmetric form: with
    ``M = D^-1/2 W D^-1/2``, ``M u = (1 - lambda) u`` and ``v = D^-1/2 u``, so
    the smallest ``lambda`` are the largest eigenvalues of ``M``, whose
    spectrum lies in ``[-1, 1]``.

    The trivial solution (``lambda = 0``, ``v`` constant, i.e.
    ``u0 = D^1/2 1 / |D^1/2 1|``) is removed by deflation: ``u0`` is moved to
    the bottom of the spectrum (``M - 2 u0 u0^T``, eigenvalue -1; -2 in the
    dense solver), so the returned vectors satisfy ``v^T D 1 = 0``
    (eq. 5 / 11).

    Parameters
    ----------
    W : scipy.sparse matrix or ndarray, shape (N, N)
        Symmetric non-negative affinity (e.g. from :func:`knn_graph`). Every
        node needs at least one edge. Diagonal entries count in ``D`` but
        cancel in ``L``.
    n_components : int
        Number ``t`` of eigenvectors to return (the code length).
    drop_trivial : bool
        Remove the constant eigenvector (default). With ``False`` it is
        returned first, with eigenvalue 0.
    seed : int
        Seeds the start vector, so results are reproducible.
    solver : {"auto", "arpack", "dense"}
        ``"arpack"``: filtered Lanczos (see Notes). ``"dense"``:
        ``scipy.linalg.eigh`` on the dense ``N x N`` matrix (small graphs
        only). ``"auto"`` picks dense for ``N <= 500``.
    tol : float
        ARPACK's relative tolerance on the eigenvalues of the filtered
        operator. Because the filter spreads the wanted eigenvalues apart,
        the residuals ``|M u - mu u|`` reached are much smaller (below 1e-5
        at the default on a 50,000-point kNN graph); the codes are
        thresholded afterwards, so the default is plenty.
    ncv : int, optional
        ARPACK Lanczos basis size; default ``max(2 t + 1, 20)`` capped at N.
    maxiter : int, optional
        ARPACK restart limit (default ``10 N``).

    Returns
    -------
    Y : ndarray of float64, shape (N, n_components)
        Columns are the eigenvectors ``v``, D-orthonormal (``Y^T D Y = I``),
        ordered by ascending eigenvalue; each column's sign is fixed so that
        its entry of largest magnitude is positive.
    eigenvalues : ndarray of float64, shape (n_components,)
        The ``lambda`` in ascending order (all ``> 0`` for a connected graph
        with ``drop_trivial``).

    Raises
    ------
    ValueError
        Bad ``W`` (not square, not symmetric, negative or non-finite weights),
        isolated nodes (zero degree: ``D`` is singular there), or too many
        components requested (ARPACK: at most ``N - 2``).

    Warns
    -----
    DisconnectedGraphWarning
        When the graph has ``c > 1`` connected components: ``lambda = 0`` then
        has multiplicity ``c``, and after dropping the constant vector the
        first ``c - 1`` returned vectors are (combinations of) component
        indicators with eigenvalue 0. They are still valid solutions of
        eq. 5, but carry no information inside a component; a larger ``k``
        usually connects the graph.

    Notes
    -----
    On large kNN graphs the smallest Laplacian eigenvalues are crowded
    together, and plain Lanczos needs thousands of steps, each of which
    reorthogonalises against the whole basis (the dominant cost). The solver
    therefore runs ARPACK on a Chebyshev polynomial filter ``p(M)`` of degree
    16 that maps the interval ``[-1, c]`` into ``[-1, 1]`` and grows fast
    above ``c``, with ``c`` just under the t-th largest Ritz value of a short
    Lanczos run (``4 t`` steps); by Cauchy interlacing that value is below the
    t-th largest eigenvalue, so the t largest eigenvalues of ``p(M)`` belong
    to the same eigenvectors as those of ``M``. The eigenvalues are then
    recomputed by a Rayleigh-Ritz step with ``M`` itself. This trades each
    Lanczos step for 16 cheap sparse products; on the kNN graph (k = 12) of
    50,000 random 1,280-D points, whose smallest eigenvalues are as crowded
    as they get, it cut the Lanczos steps from about 2,000 to about 320.

    BLAS is held to one thread: the work is memory-bound matrix-vector
    products, and on a busy 2-core machine two spinning BLAS threads made the
    50,000-point solve take over 400 CPU-seconds instead of 17.
    """
    check_choice("solver", solver, EIGEN_SOLVERS)
    W = _check_affinity(W)
    n = W.shape[0]
    n_max = n - 1 if drop_trivial else n
    t = _check_int("n_components", n_components, 1, n_max)
    deg = np.asarray(W.sum(axis=1)).ravel()
    isolated = np.flatnonzero(deg <= 0)
    if isolated.size:
        raise ValueError(
            f"{isolated.size} isolated nodes (no edge, zero degree), e.g. "
            f"{isolated[:5].tolist()}: L v = lambda D v is singular there. Build the graph "
            "with more neighbours or a weight that keeps every edge positive, or remove "
            "those points."
        )
    n_comp, _ = scipy.sparse.csgraph.connected_components(W, directed=False)
    if n_comp > 1:
        warnings.warn(
            f"the graph has {n_comp} connected components, so lambda = 0 has multiplicity "
            f"{n_comp}; {n_comp - 1 if drop_trivial else n_comp} of the returned vectors "
            "only indicate components. Use more neighbours to connect the graph.",
            DisconnectedGraphWarning, stacklevel=2,
        )
    d_isqrt = 1.0 / np.sqrt(deg)
    M = sp.csr_matrix(sp.diags(d_isqrt) @ W @ sp.diags(d_isqrt))
    u0 = np.sqrt(deg) / np.linalg.norm(np.sqrt(deg))
    with threadpool_limits(limits=1, user_api="blas"):
        if solver == "dense" or (solver == "auto" and n <= _DENSE_EIGEN_MAX_N):
            # -2 keeps u0 strictly below every other eigenvalue, even -1
            dense = M.toarray() - (3.0 if drop_trivial else 0.0) * np.outer(u0, u0)
            mu, U = scipy.linalg.eigh(dense, subset_by_index=(n - t, n - 1))
        else:
            mu, U = _filtered_top_eigenpairs(M, u0 if drop_trivial else None, t, seed, tol,
                                             ncv, maxiter)
    order = np.argsort(-mu, kind="stable")
    mu, U = mu[order], U[:, order]
    Y = U * d_isqrt[:, None]
    peak = np.argmax(np.abs(Y), axis=0)
    Y *= np.where(Y[peak, np.arange(t)] < 0, -1.0, 1.0)
    eigenvalues = np.clip(1.0 - mu, 0.0, None)
    return Y, eigenvalues


def _filtered_top_eigenpairs(M: sp.csr_matrix, u0: np.ndarray | None, t: int, seed: int,
                             tol: float, ncv: int | None, maxiter: int | None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``t`` eigenpairs of ``M`` (``u0`` deflated to -1) by filtered Lanczos.

    See the Notes of :func:`laplacian_eigenmap`.
    """
    n = M.shape[0]
    if t > n - 2:
        raise ValueError(f'ARPACK finds at most N - 2 = {n - 2} eigenvectors; use '
                         f'solver="dense" for n_components={t}')

    def deflated(x):
        out = M @ x
        if u0 is not None:
            out -= 2.0 * np.multiply.outer(u0, u0 @ x)
        return out

    v0 = np.random.default_rng(seed).standard_normal(n)
    if u0 is not None:
        v0 -= u0 * (u0 @ v0)
    lower = -1.0
    ritz = _lanczos_ritz(deflated, v0, min(n - 1, 4 * t))
    apply = deflated
    if ritz.size >= t and ritz[t - 1] - lower > 0.1:
        cut = ritz[t - 1] - 0.01 * (ritz[t - 1] - lower)
        center, half = (cut + lower) / 2, (cut - lower) / 2

        def apply(x):  # Chebyshev T_16 of M mapped from [lower, cut] to [-1, 1]
            prev, cur = x, (deflated(x) - center * x) / half
            for _ in range(_CHEB_DEGREE - 1):
                prev, cur = cur, 2.0 * (deflated(cur) - center * cur) / half - prev
            return cur

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=apply, dtype=np.float64)
    if ncv is None:
        ncv = min(n, max(2 * t + 1, 20))
    _, U = scipy.sparse.linalg.eigsh(op, k=t, which="LA", v0=v0, tol=tol, ncv=ncv,
                                     maxiter=maxiter)
    H = U.T @ deflated(U)
    mu, R = np.linalg.eigh((H + H.T) / 2)
    return mu, U @ R


@timing.timed("graphs")
def ncut_thresholds(W, Y) -> tuple[np.ndarray, np.ndarray]:
    """Per-column splitting points of minimum normalised cut (Shi and Malik 2000).

    For each column ``v`` of ``Y`` the nodes are sorted by ``v`` and every
    split "the ``i`` largest values against the rest" is scored by the
    normalised cut of the graph ``W``,

    ``Ncut(S) = cut(S, S') / vol(S) + cut(S, S') / vol(S')``,

    with ``vol`` the sum of degrees; the threshold is placed half way between
    the two values of the best split (of equally good splits, the one whose
    volume is closest to half). This is the "search for the splitting
    point such that the resulting partition has the best Ncut value" of Shi
    and Malik (IEEE TPAMI 22(8), 2000, sec. 3.1) for the eigenvectors of
    ``L v = lambda D v``. Unlike the sign or the median, it never splits a set
    of nodes whose values are all close to zero: an eigenvector that lives in
    one cluster of the graph is cut inside that cluster, and every other node
    gets the same bit. The whole sweep costs ``O(nnz(W) + N log N)`` per
    column.

    Parameters
    ----------
    W : scipy.sparse matrix or ndarray, shape (N, N)
        Symmetric non-negative affinity, the graph the columns of ``Y`` were
        computed from.
    Y : array_like, shape (N, t)

    Returns
    -------
    thresholds : ndarray of float64, shape (t,)
        ``Y[:, p] >= thresholds[p]`` is the better side of the best split
        (never empty, never all nodes).
    ncut : ndarray of float64, shape (t,)
        The normalised cut of each chosen split (0: a disconnected part).
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] < 2:
        raise ValueError(f"Y must be a 2-D (N, t) array with N >= 2, got shape {Y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("Y has non-finite values")
    W = sp.coo_matrix(W)
    if W.shape != (Y.shape[0], Y.shape[0]):
        raise ValueError(f"W has shape {W.shape}, expected ({Y.shape[0]}, {Y.shape[0]}) "
                         "to match the rows of Y")
    if W.nnz and (not np.isfinite(W.data).all() or W.data.min() < 0):
        raise ValueError("W must have finite, non-negative weights")
    off = W.row != W.col  # self-loops count in the degree but are never cut
    rows, cols, w = W.row[off], W.col[off], W.data[off].astype(np.float64)
    n = Y.shape[0]
    deg = np.bincount(W.row, weights=W.data.astype(np.float64), minlength=n)
    total = deg.sum()
    if not total > 0:
        raise ValueError("W has no edges: the normalised cut is undefined")
    thresholds, values = np.empty(Y.shape[1]), np.empty(Y.shape[1])
    rank = np.empty(n, dtype=np.int64)
    for p in range(Y.shape[1]):
        v = Y[:, p]
        order = np.argsort(-v, kind="stable")
        rank[order] = np.arange(n)
        # weight from each node to the nodes ranked before it
        before = rank[cols] < rank[rows]
        inner = np.bincount(rows[before], weights=w[before], minlength=n)
        vol = np.cumsum(deg[order])
        cut = np.maximum(vol - 2.0 * np.cumsum(inner[order]), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = cut / vol + cut / (total - vol)
        # only splits between two different values, with both sides non-empty
        valid = np.zeros(n, dtype=bool)
        valid[:-1] = v[order[:-1]] > v[order[1:]]
        valid &= (vol > 0) & (total - vol > 0)
        if not valid.any():
            raise ValueError(f"column {p} of Y is constant: it has no splitting point")
        score = np.where(valid, score, np.inf)
        # ties (e.g. several zero cuts between connected components): the most
        # balanced of the best splits
        best = score <= score.min() * (1.0 + 1e-9) + 1e-12
        i = int(np.flatnonzero(best)[np.argmin(np.abs(vol[best] - total / 2.0))])
        thresholds[p] = (v[order[i]] + v[order[i + 1]]) / 2.0
        values[p] = score[i]
    return thresholds, values


def binarize(Y, rule: str = "mean", thresholds=None, W=None) -> tuple[np.ndarray, np.ndarray]:
    """Threshold real-valued embeddings into bits, one threshold per column.

    ``bit = 1`` where ``Y[:, p] >= threshold[p]`` and 0 otherwise (DSTH
    journal eq. 13; conference eq. 7 with -1 for 0).

    Parameters
    ----------
    Y : array_like, shape (N, t)
        Real-valued embedding, e.g. from :func:`laplacian_eigenmap`.
    rule : {"zero", "mean", "median", "ncut"}
        How thresholds are computed from ``Y`` when none are given:
        ``"zero"`` thresholds at 0 (for Laplacian eigenvectors this is their
        degree-weighted mean, since ``v^T D 1 = 0``); ``"mean"`` at the column
        mean (journal eq. 14); ``"median"`` at the column median, which gives
        balanced bits (half ones, up to ties); ``"ncut"`` at the splitting
        point of minimum normalised cut of the graph ``W``
        (:func:`ncut_thresholds`).
    thresholds : array_like, shape (t,), optional
        Use these thresholds instead (``rule`` is then not used): the journal
        paper reuses the label stage's per-bit values to binarise network
        outputs (sec. III-B).
    W : sparse matrix, shape (N, N), optional
        The graph ``Y`` was computed from; required by ``rule="ncut"``.

    Returns
    -------
    bits : ndarray of uint8, shape (N, t)
        Values in {0, 1}.
    thresholds : ndarray of float64, shape (t,)
        The thresholds applied, to be passed back for later data.
    """
    check_choice("rule", rule, BINARIZE_RULES)
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] == 0:
        raise ValueError(f"Y must be a non-empty 2-D (N, t) array, got shape {Y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("Y has non-finite values")
    if thresholds is None:
        if rule == "zero":
            thresholds = np.zeros(Y.shape[1])
        elif rule == "mean":
            thresholds = Y.mean(axis=0, dtype=np.float64)
        elif rule == "median":
            thresholds = np.median(Y, axis=0)
        else:
            if W is None:
                raise ValueError('rule="ncut" needs the graph: pass W, the affinity matrix '
                                 "Y was computed from")
            thresholds = ncut_thresholds(W, Y)[0]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (Y.shape[1],):
        raise ValueError(f"thresholds must have shape ({Y.shape[1]},), got {thresholds.shape}")
    if not np.isfinite(thresholds).all():
        raise ValueError("thresholds must be finite")
    bits = (Y >= thresholds).astype(np.uint8)
    return bits, thresholds


def spectral_codes(X, n_bits: int, k: int, rule: str = "median", weight: str = "cosine",
                   seed: int = 0) -> np.ndarray:
    """Self-taught hash labels in one call: kNN graph, Laplacian eigenmap, threshold.

    :func:`knn_graph` (eq. 1 of DSTH, cosine weights by default), the ``n_bits``
    smallest non-trivial solutions of ``L v = lambda D v`` (:func:`laplacian_eigenmap`,
    eq. 5-6) and one threshold per bit (:func:`binarize`, eq. 7; ``"ncut"`` on the same
    graph). A toy version of the unsupervised stage of :class:`hashstudy.dsth.DSTH`.

    Returns
    -------
    ndarray of uint8, shape (N, n_bits)
        {0, 1} codes (1 for the ``+1`` of eq. 7).
    """
    W = knn_graph(X, k, weight=weight)
    Y, _ = laplacian_eigenmap(W, n_bits, seed=seed)
    return binarize(Y, rule, W=W)[0]


# ---------------------------------------------------------------------------
# DDH two-step neighbourhood


def _lists_matrix(indices: np.ndarray, n: int) -> sp.csr_matrix:
    k = indices.shape[1]
    return sp.csr_matrix(
        (np.ones(indices.size, dtype=np.int32), indices.ravel(),
         np.arange(0, n * k + 1, k)), shape=(n, n))


@timing.timed("graphs")
def expand_neighbors(indices, k2: int = 6, include_self: bool = True,
                     symmetrize: str = "or",
                     block_pairs: int = _EXPAND_BLOCK_PAIRS) -> sp.csr_matrix:
    """DDH neighbourhood expansion (Algorithm 1, steps 2-14) of given K1-NN lists.

    For each image ``i``: every image ``j`` is scored by the overlap
    ``|L_i ∩ L_j|`` of the two K1-NN lists; the ``k2`` best-scored images
    ``j`` are kept (``S_2``), and ``i``'s expanded neighbours are the union of
    their lists (eq. 3: ``S_ij = 1`` if ``(S_2)_ik = 1`` and ``j in L_k``).

    Overlaps are computed only where they are non-zero, as the sparse product
    ``A A^T`` of the list-incidence matrix ``A`` (``A_ij = 1`` if ``j in L_i``),
    a block of rows at a time, so memory stays bounded for any ``N``.

    Parameters
    ----------
    indices : array_like of int, shape (N, K1)
        K1-NN lists (``knn(X, K1)[0]``), not containing the point itself.
    k2 : int
        Number of lists united per image (the paper uses ``K2 = 6``).
    include_self : bool
        Algorithm 1 loops ``j`` over all images, ``i`` included, and
        ``|L_i ∩ L_i| = K1`` is the largest overlap possible, so ``i`` takes the
        first of the ``k2`` places and ``L_i`` is always part of the expansion
        (``S ⊇ S_1``). With ``False``, ``i`` is left out and the ``k2`` places
        go to other images.
    symmetrize : {"or", "and", "none"}
        Eq. 3 is directed (row ``i`` is ``i``'s expanded set). ``"or"`` (default)
        makes a pair similar when either image has the other in its expanded
        set, so the pairwise label ``s_ij = s_ji`` that DDH's loss needs is
        well defined; ``"and"`` requires both; ``"none"`` keeps eq. 3 as is.
    block_pairs : int
        Rows are processed in blocks whose candidate pairs (bounded by the
        sum of the in-degrees of their list entries) stay under this number;
        working memory is about 64 bytes per candidate pair.

    Returns
    -------
    S : scipy.sparse.csr_matrix of float32, shape (N, N)
        0/1 matrix of similar pairs, zero diagonal (an image is not listed as
        its own neighbour), sorted indices. A row holds at most
        ``k2 * K1`` entries before symmetrisation.

    Notes
    -----
    The text of the paper scores a pair by ``1 / |L_i - L_j|^2``; for the 0/1
    indicator vectors of two K1-lists that is ``1 / (2 K1 - 2 |L_i ∩ L_j|)``,
    which ranks exactly as the overlap of Algorithm 1. Ranking ties (equal
    overlap) are broken by the smaller index, after ``i`` itself. Images with
    no common neighbour (overlap 0) are never chosen, so a row may unite fewer
    than ``k2`` lists.
    """
    check_choice("symmetrize", symmetrize, EXPANSION_SYMMETRIZE)
    idx = np.asarray(indices)
    if idx.ndim != 2 or idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"indices must be a non-empty (N, K1) array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    n, k1 = idx.shape
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices must lie in 0..{n - 1}")
    if (idx == np.arange(n)[:, None]).any():
        raise ValueError("a K1-NN list contains its own point; build it with exclude_self=True")
    if (np.diff(np.sort(idx, axis=1), axis=1) == 0).any():
        raise ValueError("a K1-NN list repeats an index")
    k2 = _check_int("k2", k2, 1)
    block_pairs = _check_int("block_pairs", block_pairs, 1)
    A = _lists_matrix(idx, n)
    At = A.T.tocsr()
    # Row i of A A^T has at most as many entries as the in-degrees of L_i sum to.
    cost = np.bincount(idx.ravel(), minlength=n)[idx].sum(axis=1)
    bounds = [0]
    acc = 0
    for i, c in enumerate(cost.tolist()):
        if acc + c > block_pairs and i > bounds[-1]:
            bounds.append(i)
            acc = 0
        acc += c
    bounds.append(n)
    indptr = [np.zeros(1, dtype=np.int64)]
    cols_out = []
    offset = 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        m = stop - start
        C = A[start:stop] @ At  # overlap counts |L_i ∩ L_j|, (m, N)
        r = np.repeat(np.arange(m), np.diff(C.indptr))
        c = C.indices.astype(np.int64)
        v = C.data.astype(np.int64)
        self_pair = c == r + start
        if include_self:
            v[self_pair] = k1 + 1
        else:
            r, c, v = r[~self_pair], c[~self_pair], v[~self_pair]
        order = np.lexsort((c, -v, r))
        r, c = r[order], c[order]
        first = np.searchsorted(r, np.arange(m))
        keep = np.arange(r.size) < first[r] + k2
        S2 = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.int32), (r[keep], c[keep])),
                           shape=(m, n))
        E = S2 @ A  # (m, N): how many chosen lists contain j
        er = np.repeat(np.arange(m), np.diff(E.indptr))
        not_self = E.indices != er + start
        cols_out.append(E.indices[not_self].astype(np.int64))
        counts = np.bincount(er[not_self], minlength=m)
        indptr.append(offset + np.cumsum(counts))
        offset += int(counts.sum())
    S = sp.csr_matrix(
        (np.ones(offset, dtype=np.float32), np.concatenate(cols_out), np.concatenate(indptr)),
        shape=(n, n))
    if symmetrize == "or":
        S = sp.csr_matrix(S.maximum(S.T))
    elif symmetrize == "and":
        S = sp.csr_matrix(S.minimum(S.T))
        S.eliminate_zeros()
    S.sort_indices()
    return S


@timing.timed("graphs")
def expanded_neighbors(X, k1: int = 15, k2: int = 6, include_self: bool = True,
                       symmetrize: str = "or", chunk: int | None = None) -> sp.csr_matrix:
    """DDH pairwise similarity ``S`` from features (Algorithm 1, eq. 1-3).

    Runs ``knn(X, k1, metric="cosine")`` (step 1: K1-NN lists by cosine
    similarity, the point itself excluded) and :func:`expand_neighbors`.
    The paper uses ``K1 = 15``, ``K2 = 6`` on CIFAR-10 (sec. 3).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Features.
    k1, k2, include_self, symmetrize
        See :func:`expand_neighbors`; ``chunk`` is passed to :func:`knn`.

    Returns
    -------
    S : scipy.sparse.csr_matrix of float32, shape (N, N)
        0/1 similar-pair matrix, zero diagonal.
    """
    idx, _ = knn(X, k1, metric="cosine", exclude_self=True, chunk=chunk)
    return expand_neighbors(idx, k2=k2, include_self=include_self, symmetrize=symmetrize)


# ---------------------------------------------------------------------------
# quality of constructed labels


def _pairs(neighbors) -> tuple[np.ndarray, np.ndarray, int]:
    if sp.issparse(neighbors):
        S = sp.coo_matrix(neighbors)
        if S.shape[0] != S.shape[1]:
            raise ValueError(f"a neighbour matrix must be square, got shape {S.shape}")
        nz = (S.data != 0) & (S.row != S.col)
        return S.row[nz].astype(np.int64), S.col[nz].astype(np.int64), S.shape[0]
    idx = np.asarray(neighbors)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("neighbors must be a sparse (N, N) matrix or an (N, k) integer "
                         "array of neighbour lists")
    n = idx.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"neighbour indices must lie in 0..{n - 1}")
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols = idx.ravel().astype(np.int64)
    keep = rows != cols
    return rows[keep], cols[keep], n


def label_precision(neighbors, labels) -> float:
    """Fraction of constructed neighbour pairs whose images share a class.

    Parameters
    ----------
    neighbors : scipy.sparse matrix (N, N) or ndarray of int (N, k)
        Either a pair matrix (every non-zero off-diagonal entry ``(i, j)`` is a
        pair, e.g. from :func:`expanded_neighbors`) or neighbour lists (row
        ``i`` lists ``i``'s neighbours, e.g. ``knn(X, k)[0]``).
    labels : array_like, shape (N,) int or (N, C) 0/1
        Class labels, or a multi-label indicator matrix (pairs sharing at least
        one label count as correct).

    Returns
    -------
    float
        Correct pairs / all pairs, counting ordered pairs: a symmetric matrix
        counts each pair twice, which leaves the fraction unchanged. Pairs
        ``(i, i)`` are ignored.
    """
    rows, cols, n = _pairs(neighbors)
    labels = _check_labels(labels, n)
    if rows.size == 0:
        raise ValueError("there are no neighbour pairs to evaluate")
    return float(_share_label(labels, rows, cols).mean())


@timing.timed("graphs")
def neighbor_precision_curve(X, labels, ks: Iterable[int], k2: int = 6,
                             include_self: bool = True, symmetrize: str = "or",
                             matched: bool = True, chunk: int | None = None) -> list[dict]:
    """Label precision of plain K-NN and of DDH's expansion for several K (DDH Fig. 2).

    One cosine kNN search with the largest K serves every row. For each
    ``K in ks`` the plain ``K``-NN lists and the expansion with ``K1 = K`` and
    ``K2 = k2`` are scored with :func:`label_precision`. The expansion yields
    many more pairs per image than ``K``, so with ``matched`` a third row
    scores plain kNN at the expansion's mean neighbourhood size (rounded),
    the fair comparison at equal numbers of positive pairs.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Features.
    labels : array_like, shape (N,) or (N, C)
        Class labels (see :func:`label_precision`).
    ks : iterable of int
        Neighbourhood sizes K (each ``< N``).
    k2, include_self, symmetrize
        See :func:`expand_neighbors`.
    matched : bool
        Add the size-matched plain kNN rows (needs a second kNN search when the
        matched size exceeds ``max(ks)``).
    chunk : int, optional
        Passed to :func:`knn`.

    Returns
    -------
    list of dict
        One dict per (method, K), in the order of ``ks`` and then
        ``"knn"``, ``"expanded"``, ``"knn_matched"``, with keys ``method``,
        ``k`` (K of that K-NN, or K1 of the expansion), ``k2`` (``None`` for
        plain kNN), ``mean_neighbors`` (pairs per image) and ``precision``.
        ``pandas.DataFrame(rows)`` gives a table.
    """
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty")
    X = _as_features(X)
    n = X.shape[0]
    labels = _check_labels(labels, n)
    for k in ks:
        _check_int("each K in ks", k, 1, n - 1)
    idx, _ = knn(X, max(ks), metric="cosine", chunk=chunk)
    plain, expanded = {}, {}
    for k in ks:
        plain[k] = dict(method="knn", k=k, k2=None, mean_neighbors=float(k),
                        precision=label_precision(idx[:, :k], labels))
        S = expand_neighbors(idx[:, :k], k2=k2, include_self=include_self,
                             symmetrize=symmetrize)
        expanded[k] = dict(method="expanded", k=k, k2=k2, mean_neighbors=S.nnz / n,
                           precision=label_precision(S, labels))
    rows = []
    if matched:
        sizes = {k: int(min(n - 1, max(1, round(expanded[k]["mean_neighbors"])))) for k in ks}
        if max(sizes.values()) > idx.shape[1]:
            # the first columns of a longer search are the shorter lists
            idx, _ = knn(X, max(sizes.values()), metric="cosine", chunk=chunk)
    for k in ks:
        rows += [plain[k], expanded[k]]
        if matched:
            rows.append(dict(method="knn_matched", k=sizes[k], k2=None,
                             mean_neighbors=float(sizes[k]),
                             precision=label_precision(idx[:, :sizes[k]], labels)))
    return rows


# ---------------------------------------------------------------------------
# label-based pair similarity


def label_similarity(labels, labels_b=None, dtype=np.float32,
                     max_entries: int = 10**8) -> np.ndarray:
    """Dense pairwise label matrix: ``+1`` for a shared class, ``-1`` otherwise.

    The supervision of CNNH (``S_ij = 1`` if images i and j have the same
    label, else -1) and of pairwise supervised baselines.

    Parameters
    ----------
    labels : array_like, shape (N,) int or (N, C) 0/1
        Class labels or a multi-label indicator (a pair is similar when it
        shares at least one label).
    labels_b : array_like, shape (M,) or (M, C), optional
        Second set (columns); default ``labels`` itself.
    dtype : numpy dtype
        Output dtype (``float32`` by default; ``int8`` uses a quarter of the
        memory).
    max_entries : int
        Refuse to build more than this many entries (``N * M``); at the default
        1e8 a float32 matrix takes 400 MB. A few thousand training images
        (5,000 x 5,000 = 100 MB in float32) are the intended use; larger sets
        should build the blocks they need (``labels_b`` gives the columns).

    Returns
    -------
    ndarray of ``dtype``, shape (N, M)
    """
    a = _check_labels(labels, len(labels))
    b = a
    if labels_b is not None:
        b = _check_labels(labels_b, len(labels_b))
        if a.ndim != b.ndim or (a.ndim == 2 and a.shape[1] != b.shape[1]):
            raise ValueError("labels and labels_b must be of the same kind and width")
    if a.shape[0] * b.shape[0] > max_entries:
        raise ValueError(f"a {a.shape[0]} x {b.shape[0]} label matrix exceeds max_entries="
                         f"{max_entries}; work on blocks of images instead")
    same = a[:, None] == b[None, :] if a.ndim == 1 else (a.astype(np.float32)
                                                          @ b.T.astype(np.float32)) > 0
    return np.where(same, 1, -1).astype(dtype)


def pairwise_labels(S, rows: Sequence[int] | np.ndarray, cols=None,
                    dtype=np.float32) -> np.ndarray:
    """Dense ``+1/-1`` pair labels of a block of a sparse similarity matrix.

    ``out[a, b] = +1`` if ``S[rows[a], cols[b]] != 0`` else ``-1``: the
    ``s_ij`` of DDH's loss (eq. 5) for one mini-batch.

    Parameters
    ----------
    S : scipy.sparse matrix, shape (N, N)
        Similar-pair matrix, e.g. from :func:`expanded_neighbors`.
    rows : array_like of int, shape (B,)
        Row items (a mini-batch).
    cols : array_like of int, shape (B',), optional
        Column items; default ``rows``.
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    ndarray of ``dtype``, shape (B, B')
        The diagonal of a square block (``cols`` is ``rows``) is whatever ``S``
        holds there, -1 for matrices from this module (zero diagonal).
    """
    if not sp.issparse(S):
        raise TypeError("S must be a scipy.sparse matrix")
    rows = np.asarray(rows, dtype=np.int64)
    cols = rows if cols is None else np.asarray(cols, dtype=np.int64)
    for name, ix, size in (("rows", rows, S.shape[0]), ("cols", cols, S.shape[1])):
        if ix.ndim != 1 or (ix.size and (ix.min() < 0 or ix.max() >= size)):
            raise ValueError(f"{name} must be a 1-D array of indices in 0..{size - 1}")
    block = sp.csr_matrix(S)[rows][:, cols].toarray()
    return np.where(block != 0, 1, -1).astype(dtype)
