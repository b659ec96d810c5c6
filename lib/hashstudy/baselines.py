"""Shallow hashing baselines behind one scikit-learn-style interface.

Every method is a :class:`Hasher`::

    hasher = make("itq", n_bits=32, seed=0).fit(X_train)
    codes = hasher.encode(X_query)          # uint8 {0,1}, shape (N, 32)

Conventions shared by all methods
---------------------------------
* Inputs ``X`` are real feature matrices of shape ``(n_samples, n_features)``;
  they are converted to ``float64``. NaN or infinite values are rejected.
* Codes are ``uint8`` arrays of shape ``(n_samples, n_bits)`` holding **{0, 1}**:
  bit ``k`` is 1 when the method's ``k``-th hash function is positive (the
  projection, the eigenfunction, ``cos(.) + t``, the SVM decision value), or,
  for spherical hashing, when the point lies inside sphere ``k``; for K-means
  hashing the bits are the binary index of the nearest codeword. The
  {-1,+1} view is ``2 * codes.astype(np.int8) - 1``.
* Every statistic learned at fit time (mean, scale, projections, thresholds)
  is stored on the estimator as an attribute ending in ``_``; ``encode`` only
  applies them.
* All randomness comes from ``np.random.default_rng(seed)``: the same seed and
  training data give the same codes. Methods without random steps (PCAH, SH,
  KMH) accept ``seed`` for a uniform interface and ignore it.

Methods (``METHODS``)
---------------------
``lsh``      :class:`LSH`     sign random projections (Charikar 2002)
``sklsh``    :class:`SKLSH`   shift-invariant kernel LSH (Raginsky and Lazebnik 2009)
``pcah``     :class:`PCAH`    signs of the top principal components
``sh``       :class:`SH`      spectral hashing (Weiss, Torralba and Fergus 2008)
``itq``      :class:`ITQ`     PCA + iterative quantisation (Gong and Lazebnik 2011)
``cca_itq``  :class:`CCAITQ`  CCA + iterative quantisation, supervised (Gong et al. 2013)
``sph``      :class:`SpH`     spherical hashing (Heo et al. 2012)
``kmh``      :class:`KMH`     K-means hashing (He, Wen and Sun 2013)
``sth``      :class:`STH`     self-taught hashing (Zhang, Wang, Cai and Lu 2010)

Methods in ``SUPERVISED`` need labels: ``fit(X, y)``.
"""
from __future__ import annotations

import abc
import collections
import hashlib
import operator

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.exceptions import NotFittedError

from . import timing
from .config import check_choice

__all__ = [
    "Hasher",
    "LSH",
    "SKLSH",
    "PCAH",
    "SH",
    "ITQ",
    "CCAITQ",
    "SpH",
    "KMH",
    "STH",
    "METHODS",
    "SUPERVISED",
    "make",
]


# ----------------------------------------------------------------------------
# input checks and shared numerical pieces
# ----------------------------------------------------------------------------


def _check_n_bits(n_bits) -> int:
    """Return ``n_bits`` as a positive ``int``; TypeError / ValueError otherwise."""
    if isinstance(n_bits, bool):
        raise TypeError(f"n_bits must be a positive integer, got {n_bits!r}")
    try:
        value = operator.index(n_bits)
    except TypeError:
        raise TypeError(f"n_bits must be a positive integer, got {n_bits!r}") from None
    if value <= 0:
        raise ValueError(f"n_bits must be a positive integer, got {value}")
    return value


def _check_X(X, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite float64 matrix of shape ``(n_samples, n_features)``."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


_COVARIANCES: "collections.OrderedDict[tuple, np.ndarray]" = collections.OrderedDict()
_COVARIANCES_KEPT = 2


def _covariance(Xc: np.ndarray) -> np.ndarray:
    """``Xc.T @ Xc / (N - 1)``, remembered for the last two inputs of this process.

    PCAH, SH, ITQ and KMH all start from the covariance of the same centred
    training features, at every code length: computing it once per training
    set (a hash of the array's bytes identifies it, costing a fraction of the
    product) gives the same matrix, bit for bit, in a fraction of the time.
    """
    h = hashlib.blake2b(digest_size=16)
    arr = np.ascontiguousarray(Xc)
    h.update(memoryview(arr).cast("B"))
    key = (arr.shape, str(arr.dtype), h.hexdigest())
    cov = _COVARIANCES.get(key)
    if cov is None:
        cov = arr.T @ arr / max(arr.shape[0] - 1, 1)
        _COVARIANCES[key] = cov
        while len(_COVARIANCES) > _COVARIANCES_KEPT:
            _COVARIANCES.popitem(last=False)
    else:
        _COVARIANCES.move_to_end(key)
    return cov.copy()


def _pca(Xc: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Top principal directions of centred data.

    Parameters
    ----------
    Xc : ndarray, shape (N, D), float64
        Centred data.
    n_components : int
        Number of directions, ``1 <= n_components <= D``.

    Returns
    -------
    components : ndarray, shape (D, n_components)
        Orthonormal principal directions as columns, ordered by decreasing
        variance. Sign convention (as scikit-learn's ``PCA``): the entry of
        largest absolute value in each column is positive.
    variances : ndarray, shape (n_components,)
        Variance of the data along each direction (covariance eigenvalues,
        normalised by ``N - 1``), decreasing.
    """
    n, d = Xc.shape
    cov = _covariance(Xc)
    vals, vecs = scipy.linalg.eigh(cov, subset_by_index=[d - n_components, d - 1])
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vecs * signs, vals


def _random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(k, k)`` orthogonal matrix drawn from the Haar distribution."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _itq_rotation(
    V: np.ndarray, n_iter: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative quantisation (Gong and Lazebnik 2011, sec. 2.2).

    Alternates ``B = sign(V R)`` and the orthogonal Procrustes solution
    ``R = argmin_R ||B - V R||_F`` (from the SVD of ``V^T B``), starting from a
    random rotation.

    Parameters
    ----------
    V : ndarray, shape (N, c)
        Projected, centred training data.
    n_iter : int
        Number of alternations (the paper uses 50).
    rng : numpy.random.Generator
        Source of the initial rotation.

    Returns
    -------
    R : ndarray, shape (c, c)
        Orthogonal rotation; codes are ``V R > 0``.
    loss : ndarray, shape (n_iter + 1,)
        Quantisation loss ``||sign(V R_t) - V R_t||_F^2`` of the rotation after
        ``t`` iterations (``t = 0`` is the random start). Nonincreasing.
    """
    R = _random_rotation(V.shape[1], rng)
    losses = np.empty(n_iter + 1)
    for t in range(n_iter + 1):
        Z = V @ R
        B = np.where(Z > 0, 1.0, -1.0)
        losses[t] = np.sum((B - Z) ** 2)
        if t == n_iter:
            break
        U, _, Wt = np.linalg.svd(V.T @ B)
        R = U @ Wt
    return R, losses


def _sq_distances(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape ``(len(X), len(C))``, clipped at 0."""
    d2 = (X * X).sum(1)[:, None] - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
    return np.maximum(d2, 0.0)


# ----------------------------------------------------------------------------
# the interface
# ----------------------------------------------------------------------------


class Hasher(abc.ABC):
    """Base class of every baseline: ``fit(X, y=None)`` then ``encode(X)``.

    Parameters
    ----------
    n_bits : int
        Code length, a positive integer.
    seed : int, default 0
        Seed of ``np.random.default_rng`` for every random step of ``fit``.

    Attributes
    ----------
    n_features_in_ : int
        Number of input features seen by ``fit``; ``encode`` requires the same.

    Notes
    -----
    Subclasses implement ``_fit(X, y)`` and ``_project(X)``; the latter returns
    real values whose positive entries are the 1-bits (or a boolean matrix).
    """

    supervised = False

    def __init__(self, n_bits: int, seed: int = 0):
        self.n_bits = _check_n_bits(n_bits)
        self.seed = seed

    def get_params(self) -> dict:
        """The constructor arguments, by name (for reports and ``repr``)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, X, y=None) -> "Hasher":
        """Learn the hash functions from training data.

        Parameters
        ----------
        X : array-like, shape (N, D)
            Training features (real, finite).
        y : array-like, optional
            Labels, only for supervised methods (``SUPERVISED``): shape ``(N,)``
            integer classes or ``(N, c)`` {0,1} multi-label indicators.
            Unsupervised methods ignore it.

        Returns
        -------
        self
        """
        X = _check_X(X)
        if X.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 training samples, got {X.shape[0]}")
        if self.supervised:
            if y is None:
                raise ValueError(
                    f"{type(self).__name__} is supervised: call fit(X, y) with labels y"
                )
            y = self._check_labels(y, X.shape[0])
        with timing.step("training"):
            self._fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def encode(self, X) -> np.ndarray:
        """Hash codes of ``X``.

        Parameters
        ----------
        X : array-like, shape (N, D)
            Features with the same ``D`` as the training data.

        Returns
        -------
        codes : ndarray, shape (N, n_bits), uint8
            Bits in {0, 1}; 1 means the hash function is positive.
        """
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X) first")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but {type(self).__name__} was fitted "
                f"with {self.n_features_in_}"
            )
        return np.ascontiguousarray(self._project(X) > 0, dtype=np.uint8)

    @staticmethod
    def _check_labels(y, n: int) -> np.ndarray:
        """Labels as a ``(n, c)`` float indicator matrix (one-hot for class ids)."""
        y = np.asarray(y)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be (N,) class ids or (N, c) indicators, got shape {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} rows but X has {n}")
        if y.dtype.kind in "fc" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values")
        if y.ndim == 1:
            _, inverse = np.unique(y, return_inverse=True)
            Y = np.eye(inverse.max() + 1)[inverse]
        else:
            Y = y.astype(np.float64)
        if not np.any(Y.max(axis=0) > Y.min(axis=0)):
            raise ValueError("y must contain at least two different labels")
        return Y

    @abc.abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        """Learn the method's parameters from checked data (labels as indicators)."""

    @abc.abstractmethod
    def _project(self, X: np.ndarray) -> np.ndarray:
        """Real (or boolean) matrix ``(N, n_bits)`` whose positive entries are the 1-bits."""


class _Centred(Hasher):
    """A hasher that subtracts the training mean ``mean_`` (shape (D,)) first."""

    def _centre(self, X: np.ndarray) -> np.ndarray:
        self.mean_ = X.mean(axis=0)
        return X - self.mean_


def _check_pca_bits(n_bits: int, X: np.ndarray, method: str) -> None:
    if n_bits > X.shape[1]:
        raise ValueError(
            f"{method} takes one PCA direction per bit: n_bits={n_bits} exceeds the "
            f"{X.shape[1]} input features"
        )


# ----------------------------------------------------------------------------
# data-independent methods
# ----------------------------------------------------------------------------


class LSH(Hasher):
    """Sign random projections (random hyperplane LSH).

    ``bit_k(x) = [w_k^T (x - m) > 0]`` with ``w_k ~ N(0, I_D)``. Two vectors at
    angle ``theta`` (measured from ``m``) agree on a bit with probability
    ``1 - theta / pi``, so Hamming distance estimates the angle.

    Reference: M. Charikar, "Similarity estimation techniques from rounding
    algorithms", STOC 2002 (random hyperplanes); the locality-sensitive hashing
    framework of Indyk and Motwani (1998) / Andoni and Indyk (2008).

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
    center : bool, default True
        Hyperplanes pass through the training mean ``m`` (the usual choice in
        hashing benchmarks, which makes the bits roughly balanced); with
        ``False`` they pass through the origin (``m = 0``), the original
        cosine-similarity scheme.

    Attributes
    ----------
    mean_ : ndarray, shape (D,)
        ``m``: the training mean, or zeros when ``center=False``.
    projections_ : ndarray, shape (D, n_bits)
        The Gaussian directions ``w_k`` as columns.
    """

    def __init__(self, n_bits: int, seed: int = 0, center: bool = True):
        super().__init__(n_bits, seed)
        self.center = bool(center)

    def _fit(self, X, y):
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(axis=0) if self.center else np.zeros(X.shape[1])
        self.projections_ = rng.standard_normal((X.shape[1], self.n_bits))

    def _project(self, X):
        return (X - self.mean_) @ self.projections_


class SKLSH(Hasher):
    """Locality-sensitive binary codes from shift-invariant kernels.

    ``bit_k(x) = [cos(w_k^T x + b_k) + t_k > 0]`` with ``w_k ~ N(0, gamma I)``,
    ``b_k ~ U[0, 2 pi]`` and ``t_k ~ U[-1, 1]``; ``gamma = 1 / sigma^2`` for the
    Gaussian kernel ``exp(-||x - y||^2 / (2 sigma^2))``. The expected normalised
    Hamming distance is an increasing function of ``||x - y||``.

    Reference: M. Raginsky and S. Lazebnik, "Locality-sensitive binary codes
    from shift-invariant kernels", NIPS 2009.

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
    sigma : float, optional
        Kernel width. Default: the median pairwise Euclidean distance among up
        to ``n_sigma_sample`` random training points.
    n_sigma_sample : int, default 1000
        Size of the sample used for the default ``sigma``.

    Attributes
    ----------
    sigma_ : float
        Kernel width used.
    projections_ : ndarray, shape (D, n_bits)
        ``w_k`` as columns (standard deviation ``1 / sigma_``).
    phases_ : ndarray, shape (n_bits,)
        ``b_k``.
    thresholds_ : ndarray, shape (n_bits,)
        ``t_k``.

    Notes
    -----
    The method is shift invariant, so no centring is applied.
    """

    def __init__(self, n_bits: int, seed: int = 0, sigma: float | None = None,
                 n_sigma_sample: int = 1000):
        super().__init__(n_bits, seed)
        if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        if int(n_sigma_sample) < 2:
            raise ValueError(f"n_sigma_sample must be at least 2, got {n_sigma_sample!r}")
        self.sigma = sigma
        self.n_sigma_sample = int(n_sigma_sample)

    def _fit(self, X, y):
        rng = np.random.default_rng(self.seed)
        if self.sigma is None:
            m = min(len(X), self.n_sigma_sample)
            S = X[rng.choice(len(X), m, replace=False)]
            dist = np.sqrt(_sq_distances(S, S)[np.triu_indices(m, 1)])
            sigma = float(np.median(dist))
            if sigma <= 0:
                raise ValueError("cannot set sigma: the sampled training points coincide")
        else:
            sigma = float(self.sigma)
        self.sigma_ = sigma
        self.projections_ = rng.standard_normal((X.shape[1], self.n_bits)) / sigma
        self.phases_ = rng.uniform(0.0, 2.0 * np.pi, self.n_bits)
        self.thresholds_ = rng.uniform(-1.0, 1.0, self.n_bits)

    def _project(self, X):
        return np.cos(X @ self.projections_ + self.phases_) + self.thresholds_


# ----------------------------------------------------------------------------
# PCA-family methods
# ----------------------------------------------------------------------------


class PCAH(_Centred):
    """PCA hashing: the signs of the top ``n_bits`` principal components.

    ``bit_k(x) = [p_k^T (x - mean) > 0]`` with ``p_k`` the ``k``-th principal
    direction of the training data. The baseline used throughout the ITQ paper
    (Gong and Lazebnik, CVPR 2011) and in J. Wang, S. Kumar and S.-F. Chang,
    "Semi-supervised hashing for scalable image retrieval", CVPR 2010.

    Attributes
    ----------
    mean_ : ndarray, shape (D,)
    components_ : ndarray, shape (D, n_bits)
        Principal directions, decreasing variance; the largest-magnitude entry
        of each column is positive (scikit-learn's convention).
    explained_variance_ : ndarray, shape (n_bits,)
    """

    def _fit(self, X, y):
        _check_pca_bits(self.n_bits, X, "PCAH")
        self.components_, self.explained_variance_ = _pca(self._centre(X), self.n_bits)

    def _project(self, X):
        return (X - self.mean_) @ self.components_


class SH(_Centred):
    """Spectral hashing with analytical one-dimensional eigenfunctions.

    The data are rotated to their top ``min(n_bits, D)`` principal directions
    and assumed uniform on the box ``[a_j, b_j]`` spanned by the training data.
    The Laplacian eigenfunctions of a uniform 1-D density on ``[a, b]`` are
    ``phi_k(x) = sin(pi/2 + k pi / (b - a) * (x - a))`` with eigenvalue
    increasing in ``omega^2 = (k pi / (b - a))^2``. Over all directions and
    modes ``k >= 1`` (the constant mode ``k = 0`` is excluded) the ``n_bits``
    smallest are kept, in increasing order, and ``bit = [phi(x) > 0]``.

    Reference: Y. Weiss, A. Torralba and R. Fergus, "Spectral hashing",
    NIPS 2008 (the single-direction eigenfunctions of the authors' code).

    Attributes
    ----------
    mean_ : ndarray, shape (D,)
    components_ : ndarray, shape (D, n_pca)
        Principal directions, ``n_pca = min(n_bits, D)``.
    lower_, upper_ : ndarray, shape (n_pca,)
        Box bounds ``a_j``, ``b_j`` (training minimum and maximum).
    modes_ : ndarray, shape (n_bits, n_pca), int
        Mode of each bit: row ``k`` has one nonzero entry, the frequency index
        on the PCA direction used by bit ``k``.
    directions_ : ndarray, shape (n_bits,), int
        PCA direction of each bit.
    frequencies_ : ndarray, shape (n_bits,)
        ``omega_k = mode * pi / (b - a)`` of each bit.
    eigenvalues_ : ndarray, shape (n_bits,)
        ``omega_k^2``, nondecreasing along the bits (the analytical eigenvalue
        ``1 - exp(-eps^2 omega^2 / 2)`` is a monotone function of it).
    """

    def _fit(self, X, y):
        n_pca = min(self.n_bits, X.shape[1])
        self.components_, _ = _pca(self._centre(X), n_pca)
        V = (X - self.mean_) @ self.components_
        self.lower_, self.upper_ = V.min(axis=0), V.max(axis=0)
        width = self.upper_ - self.lower_
        if np.any(width <= 0):
            raise ValueError("SH: the training data are constant along a principal direction")
        # candidates: modes 1..n_bits on every direction cover the n_bits smallest
        k = np.arange(1, self.n_bits + 1, dtype=np.float64)
        omega = (k[None, :] * np.pi / width[:, None]).ravel()  # (n_pca * n_bits,)
        chosen = np.argsort(omega**2, kind="stable")[: self.n_bits]
        self.directions_ = chosen // self.n_bits
        mode = chosen % self.n_bits + 1
        self.modes_ = np.zeros((self.n_bits, n_pca), dtype=np.int64)
        self.modes_[np.arange(self.n_bits), self.directions_] = mode
        self.frequencies_ = omega[chosen]
        self.eigenvalues_ = self.frequencies_**2

    def _project(self, X):
        V = (X - self.mean_) @ self.components_
        shifted = V[:, self.directions_] - self.lower_[self.directions_]
        return np.sin(np.pi / 2 + shifted * self.frequencies_)


class ITQ(_Centred):
    """PCA followed by iterative quantisation (PCA-ITQ).

    The centred data are projected on their top ``n_bits`` principal
    directions, ``V = (X - mean) P``, and an orthogonal rotation ``R`` is
    learned by alternating ``B = sign(V R)`` and the orthogonal Procrustes
    problem ``min_R ||B - V R||_F``; ``bit = [V R > 0]``.

    Reference: Y. Gong and S. Lazebnik, "Iterative quantization: a procrustean
    approach to learning binary codes", CVPR 2011; Y. Gong, S. Lazebnik,
    A. Gordo and F. Perronnin, TPAMI 35(12), 2013.

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
        Seed of the random initial rotation.
    n_iter : int, default 50
        Alternations, as in the paper.

    Attributes
    ----------
    mean_ : ndarray, shape (D,)
    components_ : ndarray, shape (D, n_bits)
        PCA directions ``P``.
    rotation_ : ndarray, shape (n_bits, n_bits)
        ``R``.
    quantization_loss_ : ndarray, shape (n_iter + 1,)
        ``||sign(V R_t) - V R_t||_F^2`` on the training data after ``t``
        iterations; entry 0 is the random initial rotation. Nonincreasing.
    """

    def __init__(self, n_bits: int, seed: int = 0, n_iter: int = 50):
        super().__init__(n_bits, seed)
        if int(n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter!r}")
        self.n_iter = int(n_iter)

    def _fit(self, X, y):
        _check_pca_bits(self.n_bits, X, "ITQ")
        Xc = self._centre(X)
        self.components_, _ = _pca(Xc, self.n_bits)
        rng = np.random.default_rng(self.seed)
        self.rotation_, self.quantization_loss_ = _itq_rotation(
            Xc @ self.components_, self.n_iter, rng
        )

    def _project(self, X):
        return (X - self.mean_) @ self.components_ @ self.rotation_


class CCAITQ(_Centred):
    """Supervised ITQ on regularised CCA projections (CCA-ITQ).

    Canonical correlation analysis between the features and the label
    indicators gives directions ``w`` solving the generalised symmetric
    eigenproblem

    ``Cxy (Cyy + r_y I)^-1 Cyx w = lambda (Cxx + r_x I) w``,

    whose eigenvalues are the squared canonical correlations. The top
    ``n_bits`` eigenvectors, each scaled by its eigenvalue as in the ITQ paper,
    give ``V = (X - mean) W``; an ITQ rotation follows and ``bit = [V R > 0]``.

    With one-hot labels of ``c`` classes only ``c - 1`` eigenvalues are
    nonzero: directions beyond them get (numerically) zero weight, and the ITQ
    rotation spreads the ``c - 1`` informative directions over all ``n_bits``
    bits, as in the authors' implementation.

    Reference: Y. Gong, S. Lazebnik, A. Gordo and F. Perronnin, "Iterative
    quantization: a procrustean approach to learning binary codes for
    large-scale image retrieval", TPAMI 35(12), 2013, sec. 3.2 (CCA-ITQ).

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
        Seed of the random initial rotation.
    reg : float, default 1e-4
        Ridge added to both covariance matrices, relative to their mean
        variance: ``r_x = reg * trace(Cxx) / D`` and likewise ``r_y``. Makes the
        problem well posed when ``D`` is large or the one-hot ``Cyy`` singular.
    n_iter : int, default 50
        ITQ alternations.

    Attributes
    ----------
    mean_ : ndarray, shape (D,)
    projections_ : ndarray, shape (D, n_bits)
        Eigenvalue-scaled CCA directions ``W``.
    eigenvalues_ : ndarray, shape (n_bits,)
        Squared canonical correlations, decreasing.
    rotation_ : ndarray, shape (n_bits, n_bits)
    quantization_loss_ : ndarray, shape (n_iter + 1,)
        As in :class:`ITQ`.
    """

    supervised = True

    def __init__(self, n_bits: int, seed: int = 0, reg: float = 1e-4, n_iter: int = 50):
        super().__init__(n_bits, seed)
        if not (np.isfinite(reg) and reg > 0):
            raise ValueError(f"reg must be a positive number, got {reg!r}")
        if int(n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter!r}")
        self.reg = float(reg)
        self.n_iter = int(n_iter)

    def _fit(self, X, Y):
        _check_pca_bits(self.n_bits, X, "CCA-ITQ")
        n, d = X.shape
        Xc = self._centre(X)
        Yc = Y - Y.mean(axis=0)
        Cxx = Xc.T @ Xc / n
        Cyy = Yc.T @ Yc / n
        Cxy = Xc.T @ Yc / n
        Cxx[np.diag_indices(d)] += self.reg * max(np.trace(Cxx) / d, np.finfo(float).tiny)
        Cyy[np.diag_indices(Cyy.shape[0])] += self.reg * max(
            np.trace(Cyy) / Cyy.shape[0], np.finfo(float).tiny
        )
        A = Cxy @ np.linalg.solve(Cyy, Cxy.T)
        A = (A + A.T) / 2
        vals, vecs = scipy.linalg.eigh(A, Cxx, subset_by_index=[d - self.n_bits, d - 1])
        order = np.argsort(vals)[::-1]
        vals = np.clip(vals[order], 0.0, None)
        vecs = vecs[:, order]
        self.eigenvalues_ = vals
        self.projections_ = vecs * vals
        rng = np.random.default_rng(self.seed)
        self.rotation_, self.quantization_loss_ = _itq_rotation(
            Xc @ self.projections_, self.n_iter, rng
        )

    def _project(self, X):
        return (X - self.mean_) @ self.projections_ @ self.rotation_


# ----------------------------------------------------------------------------
# spherical hashing
# ----------------------------------------------------------------------------


class SpH(Hasher):
    """Spherical hashing: bit ``k`` is 1 inside the hypersphere ``(p_k, r_k)``.

    Pivots start as means of 5 random training points. Each iteration sets
    every radius to the median distance from its pivot (so each sphere holds
    half of the training points), counts the pairwise overlaps ``o_ij``, and
    moves the pivots by the forces
    ``f_ij = 1/2 * (o_ij - N/4) / (N/4) * (p_i - p_j)``,
    ``p_i <- p_i + (1 / n_bits) sum_j f_ij``,
    which push overlapping spheres apart and pull distant ones together until
    every pair shares about a quarter of the points. Iteration stops when the
    mean of ``|o_ij - N/4|`` is at most ``eps_mean * N/4`` and their standard
    deviation at most ``eps_std * N/4``, or after ``max_iter`` iterations.

    Reference: J.-P. Heo, Y. Lee, J. He, S.-F. Chang and S.-E. Yoon,
    "Spherical hashing", CVPR 2012, sec. 3.

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
    max_iter : int, default 100
    eps_mean, eps_std : float, default 0.1, 0.15
        Convergence tolerances of the paper.

    Attributes
    ----------
    pivots_ : ndarray, shape (n_bits, D)
    radii_ : ndarray, shape (n_bits,)
    n_iter_ : int
        Iterations run.
    overlap_ : ndarray, shape (n_bits, n_bits)
        Final fraction of training points inside both spheres ``i`` and ``j``
        (diagonal: inside sphere ``i``).

    Notes
    -----
    The paper ranks by its spherical Hamming distance
    ``|b_1 xor b_2| / |b_1 and b_2|``; these codes are ranked by the plain
    Hamming distance like every other baseline in the study.
    """

    def __init__(self, n_bits: int, seed: int = 0, max_iter: int = 100,
                 eps_mean: float = 0.1, eps_std: float = 0.15):
        super().__init__(n_bits, seed)
        if int(max_iter) < 0:
            raise ValueError(f"max_iter must be >= 0, got {max_iter!r}")
        self.max_iter = int(max_iter)
        self.eps_mean = float(eps_mean)
        self.eps_std = float(eps_std)

    @staticmethod
    def _statistics(X, pivots):
        """Median radii ``(n_bits,)`` and overlap counts ``(n_bits, n_bits)``."""
        dist = np.sqrt(_sq_distances(X, pivots))
        radii = np.partition(dist, (len(X) - 1) // 2, axis=0)[(len(X) - 1) // 2]
        inside = (dist <= radii).astype(np.float64)
        return radii, inside.T @ inside

    def _fit(self, X, y):
        rng = np.random.default_rng(self.seed)
        n, m = len(X), self.n_bits
        pick = np.stack([rng.choice(n, min(5, n), replace=False) for _ in range(m)])
        pivots = X[pick].mean(axis=1)
        quarter = n / 4.0
        pairs = np.triu_indices(m, 1)
        radii, O = self._statistics(X, pivots)
        it = 0
        while m > 1 and it < self.max_iter:
            o = O[pairs]
            if (np.abs(o - quarter).mean() <= self.eps_mean * quarter
                    and o.std() <= self.eps_std * quarter):
                break
            A = 0.5 * (O - quarter) / quarter
            np.fill_diagonal(A, 0.0)
            pivots = pivots + (A.sum(1)[:, None] * pivots - A @ pivots) / m
            radii, O = self._statistics(X, pivots)
            it += 1
        self.pivots_ = pivots
        self.radii_ = radii
        self.n_iter_ = it
        self.overlap_ = O / n

    def _project(self, X):
        return np.sqrt(_sq_distances(X, self.pivots_)) <= self.radii_


# ----------------------------------------------------------------------------
# K-means hashing
# ----------------------------------------------------------------------------


def _index_bits(b: int) -> np.ndarray:
    """``(2**b, b)`` {0,1} table: row ``i`` holds ``i`` in binary, most significant bit first."""
    i = np.arange(2**b)[:, None]
    return ((i >> np.arange(b - 1, -1, -1)[None, :]) & 1).astype(np.uint8)


def _index_hamming(b: int) -> np.ndarray:
    """``(2**b, 2**b)`` Hamming distances between the ``b``-bit indices."""
    idx = _index_bits(b)
    return (idx[:, None, :] != idx[None, :, :]).sum(-1).astype(np.float64)


def _balanced_partition(variances: np.ndarray, n_groups: int) -> np.ndarray:
    """Order of PCA dimensions that balances the product of variances per group.

    Greedy eigenvalue allocation (Ge, He, Ke and Sun, "Optimized product
    quantization", CVPR 2013): dimensions, by decreasing variance, go to the
    non-full group whose sum of log variances is smallest.

    Returns
    -------
    order : ndarray, shape (n_groups * (len(variances) // n_groups),), int
        Dimension indices, group after group; each group's dimensions stay in
        decreasing-variance order.
    """
    size = len(variances) // n_groups
    logv = np.log(variances[: n_groups * size] + 1e-20)
    logv = logv - logv.min() + 1.0
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    load = np.zeros(n_groups)
    for dim, value in enumerate(logv):
        g = int(np.argmin(np.where([len(gr) < size for gr in groups], load, np.inf)))
        groups[g].append(dim)
        load[g] += value
    return np.concatenate(groups)


class KMH(_Centred):
    """K-means hashing: affinity-preserving quantisation in a product space.

    The centred data are PCA-rotated and split into ``M`` subspaces of equal
    dimension (one per block of ``bits_per_subspace`` bits; the last block is
    shorter when ``n_bits`` is not a multiple), with the principal dimensions
    allocated so that the subspaces have balanced variance products. In each
    subspace ``2^b`` codewords ``c_i``, indexed by the ``b``-bit codes ``i``,
    minimise

    ``E = 1/N sum_x ||x - c_{i(x)}||^2
         + lambda sum_{i,j} (n_i n_j / N^2) (||c_i - c_j|| - d_h(i, j))^2``

    with ``n_i`` the cluster sizes and ``d_h(i, j) = s * sqrt(Hamming(i, j))``:
    the quantisation error plus the mismatch between codeword distances and
    (scaled) index Hamming distances. A point's bits are the index of its
    nearest codeword in each subspace, so Hamming distances between codes
    approximate Euclidean distances between data.

    Initialisation and scale as in the authors' code: the codewords start at
    the ``2^b`` vertices ``s/2 * (2 i - 1)`` of a hypercube on the subspace's top
    ``b`` principal directions (PCA hashing), with ``s/2`` the mean absolute
    projection; ``s`` (the vertex spacing) stays fixed. Each iteration assigns
    points to their nearest codeword, then updates the codewords one after
    another.

    Reference: K. He, F. Wen and J. Sun, "K-means hashing: an
    affinity-preserving quantization method for learning binary compact
    codes", CVPR 2013.

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
        Unused: the method has no random step.
    bits_per_subspace : int, default 4
        ``b``; each subspace has ``2^b`` codewords.
    lam : float, default 10
        ``lambda``, the weight of the affinity term (the paper's value).
    n_iter : int, default 50
        Assignment / update iterations (the authors' default).
    n_components : int, optional
        PCA dimensions kept before splitting (default: all ``min(D, N - 1)``),
        rounded down to a multiple of the number of subspaces.

    Attributes
    ----------
    mean_ : ndarray, shape (D,)
    components_ : ndarray, shape (D, M * d)
        PCA directions, grouped by subspace (columns ``m*d : (m+1)*d``).
    block_bits_ : list of int
        Bits of each of the ``M`` subspaces (sum ``n_bits``).
    codebooks_ : list of ndarray, shapes (2^b_m, d)
        Codewords; row ``i`` has the binary index ``i`` (most significant bit
        first), which becomes the code block.
    hamming_scale_ : ndarray, shape (M,)
        ``s`` of each subspace.
    objective_ : ndarray, shape (n_iter + 1,)
        ``E`` summed over subspaces: entry 0 for the initial codebooks (with
        their nearest-codeword assignment), entry ``t`` after the ``t``-th
        codeword update.

    Notes
    -----
    Simplifications, stated plainly: (1) the authors minimise each codeword's
    cost with a quasi-Newton solver; here a closed-form majorisation step
    (the SMACOF bound ``||c - c_i|| >= (c - c_i)^T u`` for a unit ``u``) is
    repeated ``3`` times per codeword, which decreases the same cost
    monotonically for fixed assignments. (2) The reassignment step changes the
    weights ``n_i n_j``, so ``E`` is not guaranteed to fall at every iteration
    (nor is it in the paper's algorithm). (3) No iterations are spent on empty
    clusters, whose codewords carry no weight in ``E``.
    """

    _inner_steps = 3

    def __init__(self, n_bits: int, seed: int = 0, bits_per_subspace: int = 4,
                 lam: float = 10.0, n_iter: int = 50, n_components: int | None = None):
        super().__init__(n_bits, seed)
        b = _check_n_bits(bits_per_subspace)
        if b > 12:
            raise ValueError(f"bits_per_subspace must be at most 12 (2^b codewords), got {b}")
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a nonnegative number, got {lam!r}")
        if int(n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter!r}")
        self.bits_per_subspace = b
        self.lam = float(lam)
        self.n_iter = int(n_iter)
        self.n_components = None if n_components is None else _check_n_bits(n_components)

    def _fit(self, X, y):
        n, d_in = X.shape
        b = self.bits_per_subspace
        blocks = [b] * (self.n_bits // b) + ([self.n_bits % b] if self.n_bits % b else [])
        M = len(blocks)
        p = min(d_in, n - 1) if self.n_components is None else min(self.n_components, d_in)
        d = p // M
        if d < max(blocks):
            raise ValueError(
                f"KMH needs at least {max(blocks)} PCA dimensions per subspace for "
                f"{M} subspaces, but only {p} are available (n_bits={self.n_bits}, "
                f"D={d_in}, N={n}); use fewer bits or more bits_per_subspace"
            )
        Xc = self._centre(X)
        components, variances = _pca(Xc, M * d)
        self.components_ = components[:, _balanced_partition(variances, M)]
        self.block_bits_ = blocks
        Z = Xc @ self.components_
        self.codebooks_, scales = [], []
        history = np.zeros(self.n_iter + 1)
        for m, bits in enumerate(blocks):
            Zm = Z[:, m * d:(m + 1) * d]
            C, s = self._init_codebook(Zm, bits)
            H = s * np.sqrt(_index_hamming(bits))
            for t in range(self.n_iter + 1):
                assign = np.argmin(_sq_distances(Zm, C), axis=1)
                counts = np.bincount(assign, minlength=len(C)).astype(np.float64)
                if t > 0:
                    members = scipy.sparse.csr_matrix(
                        (np.ones(n), (assign, np.arange(n))), shape=(len(C), n)
                    )
                    self._update_codewords(C, H, counts, members @ Zm, n)
                history[t] += self._objective(Zm, C, H, assign, counts)
            self.codebooks_.append(C)
            scales.append(s)
        self.hamming_scale_ = np.array(scales)
        self.objective_ = history

    @staticmethod
    def _init_codebook(Zm, b):
        """PCA-hashing codebook on the top ``b`` dimensions of ``Zm``.

        Returns the ``(2^b, d)`` codewords (hypercube vertices ``+-s/2`` on the
        first ``b`` coordinates, zero elsewhere) and the vertex spacing ``s``.
        """
        half = np.abs(Zm[:, :b]).mean()
        C = np.zeros((2**b, Zm.shape[1]))
        C[:, :b] = (2.0 * _index_bits(b) - 1.0) * half
        return C, 2.0 * half

    def _update_codewords(self, C, H, counts, sums, n):
        """Sequential majorisation updates of the codewords (in place)."""
        alpha = 2.0 * self.lam * counts / n
        for j in np.flatnonzero(counts):
            mean_j = sums[j] / counts[j]
            a = alpha.copy()
            a[j] = 0.0
            for _ in range(self._inner_steps):
                diff = C[j] - C
                dist = np.sqrt((diff * diff).sum(1))
                unit = np.divide(diff, dist[:, None], out=np.zeros_like(diff),
                                 where=dist[:, None] > 0)
                target = C + H[:, j, None] * unit
                C[j] = (mean_j + a @ target) / (1.0 + a.sum())

    def _objective(self, Zm, C, H, assign, counts):
        n = len(Zm)
        quant = ((Zm - C[assign]) ** 2).sum() / n
        dist = np.sqrt(_sq_distances(C, C))
        aff = (np.outer(counts, counts) / n**2 * (dist - H) ** 2).sum()
        return quant + self.lam * aff

    def _project(self, X):
        Z = (X - self.mean_) @ self.components_
        d = Z.shape[1] // len(self.codebooks_)
        out = []
        for m, C in enumerate(self.codebooks_):
            nearest = np.argmin(_sq_distances(Z[:, m * d:(m + 1) * d], C), axis=1)
            out.append(_index_bits(self.block_bits_[m])[nearest])
        return np.concatenate(out, axis=1)


# ----------------------------------------------------------------------------
# self-taught hashing
# ----------------------------------------------------------------------------


class STH(Hasher):
    """Self-taught hashing: Laplacian-eigenmap codes learned by linear SVMs.

    1. A symmetric kNN graph with cosine weights
       ``W_ij = x_i^T x_j / (||x_i|| ||x_j||)`` if ``x_i`` is among the ``k``
       nearest neighbours of ``x_j`` or vice versa (eq. 1 of the DSTH journal
       paper, sec. II-A; :func:`hashstudy.graph.knn_graph` drops the rare
       edges with a nonpositive cosine).
    2. The ``n_bits`` smallest nontrivial generalised eigenvectors of
       ``(D - W) v = lambda D v`` (Laplacian eigenmap), thresholded per bit at
       the median (the STH paper) or the mean (the DSTH journal paper) to give
       the training codes.
    3. One linear SVM per bit trained on those codes is the out-of-sample hash
       function: ``bit_p(x) = [w_p^T x + b_p > 0]``; ``encode`` uses the SVMs
       for every input, training points included.

    Reference: D. Zhang, J. Wang, D. Cai and J. Lu, "Self-taught hashing for
    fast similarity search", SIGIR 2010; as summarised in K. Zhou et al.,
    "Deep self-taught hashing for image retrieval", IEEE TCYB 2018, sec. II-A.

    Parameters
    ----------
    n_bits : int
    seed : int, default 0
        Seeds the training subsample, the eigensolver start and the SVMs.
    k : int, default 12
        Neighbours per point in the graph (the DSTH journal paper's
        ``mu = 12``).
    threshold : {"median", "mean"}, default "median"
        Per-bit threshold of the eigenvectors.
    C : float, default 1.0
        SVM penalty (scikit-learn's ``LinearSVC(C=...)``: L2-regularised,
        squared-hinge loss, LIBLINEAR's default; it multiplies the summed, not
        the averaged, slacks of eq. 4).
    max_train : int or None, default 10000
        The graph and SVMs use at most this many training points (a seeded
        random subset); ``None`` uses all of them.

    Attributes
    ----------
    train_index_ : ndarray, shape (n_used,), int
        Rows of the ``fit`` input used for training, increasing.
    train_codes_ : ndarray, shape (n_used, n_bits), uint8
        Thresholded Laplacian-eigenmap codes of those rows.
    thresholds_ : ndarray, shape (n_bits,)
        Per-bit eigenvector thresholds.
    eigenvalues_ : ndarray, shape (n_bits,)
        Laplacian eigenvalues of the bits, increasing.
    mean_ : ndarray, shape (D,)
    scale_ : float
        SVM inputs are ``(x - mean_) / scale_`` (unit mean squared norm).
    coef_ : ndarray, shape (D, n_bits)
        SVM weights on the standardised inputs.
    intercept_ : ndarray, shape (n_bits,)
    """

    def __init__(self, n_bits: int, seed: int = 0, k: int = 12, threshold: str = "median",
                 C: float = 1.0, max_train: int | None = 10000):
        super().__init__(n_bits, seed)
        check_choice("threshold", threshold, ("median", "mean"))
        if not (np.isfinite(C) and C > 0):
            raise ValueError(f"C must be a positive number, got {C!r}")
        self.k = _check_n_bits(k)
        self.threshold = threshold
        self.C = float(C)
        self.max_train = None if max_train is None else _check_n_bits(max_train)

    def _fit(self, X, y):
        from sklearn.svm import LinearSVC

        from . import graph

        rng = np.random.default_rng(self.seed)
        n = len(X)
        if self.max_train is not None and n > self.max_train:
            index = np.sort(rng.choice(n, self.max_train, replace=False))
        else:
            index = np.arange(n)
        Xt = X[index]
        if self.n_bits >= len(Xt) - 1:
            raise ValueError(
                f"STH needs more training points than bits: {len(Xt)} points, {self.n_bits} bits"
            )
        if self.k >= len(Xt):
            raise ValueError(f"k={self.k} neighbours need more than {len(Xt)} training points")
        W = graph.knn_graph(Xt, self.k, weight="cosine")
        Y, self.eigenvalues_ = graph.laplacian_eigenmap(
            W, self.n_bits, drop_trivial=True, seed=int(rng.integers(2**31))
        )
        codes, self.thresholds_ = graph.binarize(Y, rule=self.threshold)
        codes = np.asarray(codes, dtype=np.uint8)
        constant = np.flatnonzero(codes.min(0) == codes.max(0))
        if constant.size:
            raise ValueError(
                f"STH: thresholding left bits {constant.tolist()} constant on the training "
                "data; an SVM cannot be trained for them (try threshold='mean' or a larger k)"
            )
        self.train_index_ = index
        self.train_codes_ = codes
        self.mean_ = Xt.mean(axis=0)
        Xs = Xt - self.mean_
        self.scale_ = float(np.sqrt((Xs * Xs).sum(1).mean())) or 1.0
        Xs /= self.scale_
        coef = np.empty((X.shape[1], self.n_bits))
        intercept = np.empty(self.n_bits)
        svm_seed = int(rng.integers(2**31))
        for p in range(self.n_bits):
            svm = LinearSVC(C=self.C, random_state=svm_seed).fit(Xs, codes[:, p])
            coef[:, p] = svm.coef_[0]
            intercept[p] = svm.intercept_[0]
        self.coef_ = coef
        self.intercept_ = intercept

    def _project(self, X):
        return (X - self.mean_) / self.scale_ @ self.coef_ + self.intercept_


# ----------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------

METHODS: dict[str, type[Hasher]] = {
    "lsh": LSH,
    "sklsh": SKLSH,
    "pcah": PCAH,
    "sh": SH,
    "itq": ITQ,
    "cca_itq": CCAITQ,
    "sph": SpH,
    "kmh": KMH,
    "sth": STH,
}
"""Method name -> hasher class."""

SUPERVISED = frozenset(name for name, cls in METHODS.items() if cls.supervised)
"""Names of the methods whose ``fit`` needs labels (``{"cca_itq"}``)."""


def make(name: str, n_bits: int, seed: int = 0, **params) -> Hasher:
    """Build the baseline called ``name``.

    Parameters
    ----------
    name : str
        A key of ``METHODS``.
    n_bits : int
        Code length.
    seed : int, default 0
    **params
        Method-specific keyword arguments (see each class).

    Returns
    -------
    Hasher
        Unfitted.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    check_choice("hashing method", name, METHODS)
    return METHODS[name](n_bits, seed=seed, **params)
