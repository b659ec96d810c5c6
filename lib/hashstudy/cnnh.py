"""CNNH: convolutional neural network hashing (Xia, Pan, Lai, Liu and Yan, AAAI 2014).

CNNH learns hash codes in two stages, as summarised in the DSTH journal paper
(Zhou et al., IEEE TCYB 2018, sec. II-B, eq. 5-6) and used as the main
competitor of DSTH in the conference paper (ACM MM 2015, sec. 1 and 3):

Stage 1, approximate hash codes (:func:`approximate_codes`)
    From the pairwise label similarity ``S`` of the ``n`` training images
    (eq. 5: ``S_ij = +1`` when images ``i`` and ``j`` share a class, ``-1``
    otherwise; :func:`hashstudy.graph.label_similarity`), find ``H`` in
    ``[-1, 1]^(n x q)`` minimising the reconstruction error (eq. 6, with the
    binary constraint relaxed to the box as in Xia et al.)::

        sum_ij (S_ij - H_i . H_j / q)^2

    by random coordinate descent with Newton directions: one entry ``H_ij`` at
    a time, the Newton step of the quartic objective in that entry, clipped to
    the box and halved until the objective decreases (so it never increases).
    The signs of ``H`` are the target codes of stage 2.
Stage 2, the hash function (:class:`CNNH`)
    A convolutional network (:class:`ConvNet`: three convolution + max-pooling
    stages, a fully connected hidden layer and ``q`` outputs, the layout of
    Xia et al. with 32, 64 and 128 filters of size 5x5) is trained to output
    the target bits (per-bit sigmoid cross-entropy). A new image's code is
    its thresholded outputs: ``bit_p = [output_p >= 0]`` (sigmoid >= 0.5).

Interface
---------
``CNNH(n_bits, input_shape, ...)`` follows the study's hasher shape (see
:mod:`hashstudy.baselines`): ``fit(images, labels)`` then
``encode(images) -> uint8 {0, 1}`` of shape ``(N, n_bits)``; ``supervised =
True``, so :func:`hashstudy.evaluation.compare` passes the class labels.
``images`` are uint8 ``(N, H, W, C)`` arrays, or the flattened pixel rows of
:func:`hashstudy.evaluation.as_vectors` (float in ``[0, 1]``, shape
``(N, H*W*C)``), which are reshaped to ``input_shape``; either way the
network sees 8-bit intensities divided by 255.

Stage-1 codes are cached with :func:`hashstudy.cache.cached_arrays` and the
trained network with :func:`hashstudy.training.cached_model`, both keyed by a
digest of the training images and labels and by every parameter, so a second
``fit`` on the same data only loads them.

Differences from Xia et al.: batch normalisation after each convolution
instead of local contrast normalisation, ReLU everywhere, Adam, and a
per-bit cross-entropy on sign targets. ``n_train`` caps the training set
(stage 1 stores a dense ``n x n`` residual, ``4 n^2`` bytes).

Example
-------
>>> hasher = CNNH(48, input_shape=(28, 28, 1), epochs=5).fit(images, labels)  # doctest: +SKIP
>>> codes = hasher.encode(test_images)                                          # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from numba import njit
from torch import nn

from . import cache, config, graph, training

__all__ = ["ConvNet", "as_image_tensor", "approximate_codes",
           "reconstruction_error", "CNNH", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "sigmoid")


# ---------------------------------------------------------------------------
# the network and its input


class ConvNet(nn.Module):
    """Convolution + max-pooling stages, one fully connected hidden layer, a linear output.

    ``x -> [conv kxk (same padding) -> batch norm -> ReLU -> max-pool 2x2] x len(widths)
    -> flatten -> linear(hidden) -> activation -> linear(n_outputs)``.

    With ``activation="sigmoid"`` the last two layers are the single-hidden-layer
    MLP of DSTH eq. 8, ``f(x) = b2 + W2 sigmoid(b1 + W1 x)``.

    Parameters
    ----------
    input_shape : (H, W, C)
        Image size and channels (e.g. ``(28, 28, 1)`` for MNIST, ``(96, 96, 3)``
        for STL-10); each stage halves H and W (rounding down).
    n_outputs : int
        Output units (classes, or code bits).
    widths : sequence of int
        Filters per convolution stage (Xia et al.: 32, 64, 128).
    hidden : int
        Units of the fully connected hidden layer.
    activation : {"relu", "sigmoid"}
        Non-linearity of the hidden layer.
    kernel : int
        Odd convolution kernel size (5 in Xia et al.).

    Input: float tensor ``(N, C, H, W)``. :meth:`features` returns the hidden
    layer's activations ``(N, hidden)``; ``forward`` the outputs ``(N, n_outputs)``.
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int,
                 widths: Sequence[int] = (32, 64, 128), hidden: int = 500,
                 activation: str = "relu", kernel: int = 5):
        super().__init__()
        config.check_choice("activation", activation, ACTIVATIONS)
        h, w, c = _check_shape(input_shape)
        widths = [int(v) for v in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
        if int(kernel) < 1 or int(kernel) % 2 == 0:
            raise ValueError(f"kernel must be a positive odd size, got {kernel}")
        if int(hidden) < 1 or int(n_outputs) < 1:
            raise ValueError(f"hidden and n_outputs must be positive, got {hidden}, {n_outputs}")
        if min(h, w) >> len(widths) < 1:
            raise ValueError(f"{len(widths)} pooling stages need images of at least "
                             f"{2 ** len(widths)} pixels a side, got {h}x{w}")
        layers = []
        for width in widths:
            layers += [nn.Conv2d(c, width, kernel, padding=kernel // 2), nn.BatchNorm2d(width),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = width, h // 2, w // 2
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Linear(c * h * w, int(hidden))
        self.activation = nn.ReLU() if activation == "relu" else nn.Sigmoid()
        self.out = nn.Linear(int(hidden), int(n_outputs))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden-layer activations, shape ``(N, hidden)``."""
        return self.activation(self.hidden(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def _check_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    return shape


def as_image_tensor(X, input_shape: Sequence[int]) -> torch.Tensor:
    """Images as a uint8 tensor ``(N, C, H, W)`` for :class:`ConvNet` (divide by 255 to use).

    Parameters
    ----------
    X : ndarray
        uint8 images ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel), or
        pixel rows ``(N, H*W*C)`` as made by
        :func:`hashstudy.evaluation.as_vectors` (float in ``[0, 1]``, read back
        as 8-bit intensities), or float images ``(N, H, W, C)`` in ``[0, 1]``.
    input_shape : (H, W, C)

    Returns
    -------
    torch.Tensor of uint8, shape (N, C, H, W)
    """
    h, w, c = _check_shape(input_shape)
    X = np.asarray(X)
    if X.ndim == 2:
        if X.shape[1] != h * w * c:
            raise ValueError(f"pixel rows of length {X.shape[1]} do not match input_shape "
                             f"{(h, w, c)} ({h * w * c} values)")
        X = X.reshape(len(X), h, w, c)
    elif X.ndim == 3 and c == 1:
        X = X[..., None]
    if X.ndim != 4 or X.shape[1:] != (h, w, c):
        raise ValueError(f"expected images of shape (N, {h}, {w}, {c}) or pixel rows, "
                         f"got {X.shape}")
    if X.dtype != np.uint8:
        if not np.issubdtype(X.dtype, np.floating):
            raise TypeError(f"images must be uint8 or float in [0, 1], got dtype {X.dtype}")
        if X.size and (not np.isfinite(X).all() or X.min() < 0 or X.max() > 1):
            raise ValueError("float images must hold finite intensities in [0, 1]")
        X = np.rint(X * 255.0).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))


def _float(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div_(255.0)


def _check_labels(y, n: int) -> np.ndarray:
    if y is None:
        raise ValueError("CNNH is supervised: call fit(images, labels) with class labels")
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integer class ids, got shape {y.shape} "
                         f"and dtype {y.dtype}")
    if (y < 0).any():
        raise ValueError("labels must be class ids >= 0; negative ids mark unlabelled images, "
                         "which CNNH cannot use")
    if np.unique(y).size < 2:
        raise ValueError("labels must contain at least two classes")
    return y.astype(np.int64)


# ---------------------------------------------------------------------------
# stage 1: approximate codes by coordinate descent (eq. 6)


@njit(cache=True)
def _sweep(R, Ht, rows, bits):
    """One pass of coordinate descent over every entry of ``H`` (stored transposed).

    ``R = q S - H H^T`` (float32, symmetric, updated in place), ``Ht = H^T``
    (float64, ``(q, n)``). Rows are visited in the order ``rows``; within row
    ``i`` the bits in the order ``bits[i]``. While row ``i`` is visited only
    row ``i`` of ``R`` is read and written; its column is restored from it
    (symmetry) before the next row.
    """
    q, n = Ht.shape
    for ii in range(n):
        i = rows[ii]
        for jj in range(q):
            j = bits[i, jj]
            h = Ht[j]
            hij = h[i]
            a = 0.0
            b = 0.0
            for l in range(n):
                a += R[i, l] * h[l]
                b += h[l] * h[l]
            rii = R[i, i]
            a_off = a - rii * hij     # sum over l != i of R_il H_lj
            b_off = b - hij * hij     # sum over l != i of H_lj^2
            g1 = -4.0 * a             # derivative of the objective in H_ij
            g2 = 4.0 * b + 4.0 * hij * hij - 4.0 * rii
            lo = -1.0 - hij
            hi = 1.0 - hij
            if g2 > 1e-12:
                d = -g1 / g2
            else:
                d = hi if g1 < 0 else lo
            d = min(max(d, lo), hi)
            ok = False
            for _ in range(40):
                if abs(d) < 1e-9:
                    break
                e = rii - 2.0 * d * hij - d * d
                change = 2.0 * (d * d * b_off - 2.0 * d * a_off) + e * e - rii * rii
                if change < 0.0:
                    ok = True
                    break
                d *= 0.5
            if not ok:
                continue
            for l in range(n):
                R[i, l] -= d * h[l]
            R[i, i] = rii - 2.0 * d * hij - d * d
            h[i] = hij + d
        for l in range(n):
            R[l, i] = R[i, l]


def reconstruction_error(S, H) -> float:
    """Mean squared error of eq. 6, ``(1/n^2) sum_ij (S_ij - H_i . H_j / q)^2``.

    ``S``: (n, n); ``H``: (n, q) real or {-1, +1}.
    """
    S = np.asarray(S, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or H.ndim != 2 or H.shape[0] != S.shape[0]:
        raise ValueError(f"need S (n, n) and H (n, q); got {S.shape} and {H.shape}")
    return float(np.mean((S - H @ H.T / H.shape[1]) ** 2))


def approximate_codes(S, n_bits: int, *, n_sweeps: int = 20, tol: float = 1e-4, seed: int = 0,
                      init=None, return_objective: bool = False):
    """CNNH stage 1: relaxed codes ``H`` that reconstruct a similarity matrix (eq. 6).

    Minimises ``sum_ij (S_ij - H_i . H_j / q)^2`` over ``H`` in
    ``[-1, 1]^(n x q)`` by random coordinate descent with Newton directions
    (Xia et al. 2014): each sweep visits every entry once, rows in a random
    order and bits in a random order within a row; an entry moves by the
    Newton step of the objective restricted to it, clipped to the box and
    halved until the exact objective decreases. The objective therefore never
    increases. Cost per sweep: ``O(n^2 q)`` time, ``4 n^2`` bytes for the
    float32 residual ``q S - H H^T``.

    Parameters
    ----------
    S : array_like, shape (n, n)
        Symmetric similarity, typically +1/-1 from
        :func:`hashstudy.graph.label_similarity` (eq. 5).
    n_bits : int
        Code length ``q``.
    n_sweeps : int
        Maximum number of sweeps.
    tol : float
        Stop when a sweep lowers the objective by less than ``tol`` times its
        previous value.
    seed : int
        Seeds the initial ``H`` (uniform in ``[-1, 1]``) and the visiting orders.
    init : array_like, shape (n, q), optional
        Starting point instead of the random one (clipped to the box).
    return_objective : bool
        Also return the objective (:func:`reconstruction_error`) before the
        first sweep and after each sweep.

    Returns
    -------
    H : ndarray of float32, shape (n, q)
        Relaxed codes in ``[-1, 1]``; ``np.where(H >= 0, 1, 0)`` are the
        binary target codes.
    objective : list of float
        Only with ``return_objective``.
    """
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 2:
        raise ValueError(f"S must be a square (n, n) matrix with n >= 2, got shape {S.shape}")
    if not np.issubdtype(S.dtype, np.number) or not np.isfinite(S).all():
        raise ValueError("S must hold finite numbers")
    if not np.allclose(S, S.T):
        raise ValueError("S must be symmetric")
    q = config.check_bits(n_bits)[0]
    if isinstance(n_sweeps, bool) or int(n_sweeps) < 1:
        raise ValueError(f"n_sweeps must be a positive integer, got {n_sweeps!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    n = S.shape[0]
    rng = np.random.default_rng(seed)
    if init is None:
        H = rng.uniform(-1.0, 1.0, size=(n, q))
    else:
        H = np.asarray(init, dtype=np.float64)
        if H.shape != (n, q) or not np.isfinite(H).all():
            raise ValueError(f"init must be a finite ({n}, {q}) array, got shape {H.shape}")
        H = np.clip(H, -1.0, 1.0)
    Ht = np.ascontiguousarray(H.T)
    R = (q * S.astype(np.float32)) - (H @ H.T).astype(np.float32)
    R = np.ascontiguousarray(R, dtype=np.float32)

    def objective():
        return float(np.square(R, dtype=np.float64).sum() / (q * q * n * n))

    history = [objective()]
    for _ in range(int(n_sweeps)):
        rows = rng.permutation(n)
        bits = np.argsort(rng.random((n, q)), axis=1)
        _sweep(R, Ht, rows, bits)
        history.append(objective())
        if history[-2] - history[-1] < tol * history[-2]:
            break
    H = np.ascontiguousarray(Ht.T, dtype=np.float32)
    return (H, history) if return_objective else H


# ---------------------------------------------------------------------------
# stage 2: the hasher


def _bce(model, x, target):
    return nn.functional.binary_cross_entropy_with_logits(model(_float(x)), target)


class CNNH:
    """CNNH hasher: approximate codes from labels (stage 1), a CNN fitted to them (stage 2).

    Parameters
    ----------
    n_bits : int
        Code length ``q``.
    input_shape : (H, W, C)
        Image size (pixel rows passed to ``fit``/``encode`` are reshaped to it).
    network : callable ``(n_outputs) -> nn.Module``, optional
        Builds the stage-2 network, which takes float ``(N, C, H, W)`` in
        ``[0, 1]`` and returns ``(N, n_outputs)``. Default: :class:`ConvNet`
        with ``widths``, ``hidden`` and ReLU.
    widths, hidden : see :class:`ConvNet`
        Only used without ``network`` (Xia et al.: 32, 64, 128 filters).
    n_train : int or None
        Use at most this many training images (a seeded, class-blind random
        subset) for both stages; ``None`` uses all. Stage 1 keeps a dense
        ``n x n`` float32 matrix.
    n_sweeps, tol : stage-1 coordinate descent (see :func:`approximate_codes`).
    epochs, batch_size, lr, weight_decay : stage-2 training (Adam).
    seed : int
        Seeds the subset, stage 1, the network's initial weights and the
        batch order.
    progress : bool
        Show training progress bars.
    device : str, optional
        Where the network trains and encodes (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Weights
        trained on a GPU are cached apart from the CPU's.

    Attributes (after ``fit``)
    ----------
    train_index_ : ndarray of int64 (n_used,)
        Rows of the ``fit`` input that were used.
    approx_codes_ : ndarray of float32 (n_used, n_bits)
        Stage-1 relaxed codes ``H``.
    target_codes_ : ndarray of uint8 (n_used, n_bits)
        ``H >= 0``: the stage-2 targets.
    objective_ : list of float
        Stage-1 objective per sweep.
    history_ : dict
        Stage-2 training history (loss per epoch, seconds).
    model_ : nn.Module
        The trained network (eval mode).
    """

    supervised = True

    def __init__(self, n_bits: int, input_shape: Sequence[int], *,
                 network: Optional[Callable[[int], nn.Module]] = None,
                 widths: Sequence[int] = (32, 64, 128), hidden: int = 500,
                 n_train: Optional[int] = 5000, n_sweeps: int = 20, tol: float = 1e-4,
                 epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.0, seed: int = 0, progress: bool = True,
                 device: Optional[str] = None):
        self.n_bits = config.check_bits(n_bits)[0]
        self.input_shape = _check_shape(input_shape)
        self.network = network
        self.widths = tuple(int(v) for v in widths)
        self.hidden = int(hidden)
        if n_train is not None and int(n_train) < 2:
            raise ValueError(f"n_train must be >= 2 or None, got {n_train!r}")
        self.n_train = None if n_train is None else int(n_train)
        self.n_sweeps = int(n_sweeps)
        self.tol = float(tol)
        if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, "
                             f"{batch_size}, {lr}")
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        self.progress = bool(progress)
        if device is not None:
            training.default_device(device)  # an unknown device fails here, not after stage 1
        self.device = device

    def __repr__(self) -> str:
        return (f"CNNH(n_bits={self.n_bits}, input_shape={self.input_shape}, "
                f"widths={self.widths}, hidden={self.hidden}, n_train={self.n_train}, "
                f"epochs={self.epochs})")

    def _build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        if self.network is not None:
            return self.network(self.n_bits)
        return ConvNet(self.input_shape, self.n_bits, self.widths, self.hidden, "relu")

    def fit(self, X, y) -> "CNNH":
        """Learn codes for the training images and a network that outputs them.

        Parameters
        ----------
        X : uint8 images (N, H, W, C) or pixel rows (N, H*W*C) in [0, 1]
        y : int array (N,)
            Class labels (>= 0); ``S`` of eq. 5 is built from them.
        """
        images = as_image_tensor(X, self.input_shape)
        y = _check_labels(y, images.shape[0])
        n = images.shape[0]
        rng = np.random.default_rng(self.seed)
        if self.n_train is not None and n > self.n_train:
            index = np.sort(rng.choice(n, self.n_train, replace=False))
        else:
            index = np.arange(n)
        images, y = images[index], y[index]
        data_key = cache.array_digest(images, y)
        stage1 = dict(data=data_key, n_bits=self.n_bits, n_sweeps=self.n_sweeps, tol=self.tol,
                      seed=self.seed)
        path = config.cache_dir("cnnh") / f"codes-{cache.key(stage1)}.npz"

        def solve():
            H, obj = approximate_codes(graph.label_similarity(y), self.n_bits,
                                       n_sweeps=self.n_sweeps, tol=self.tol, seed=self.seed,
                                       return_objective=True)
            return {"H": H, "objective": np.asarray(obj)}

        stage = cache.cached_arrays(path, solve)
        self.train_index_ = index
        self.approx_codes_ = stage["H"]
        self.objective_ = stage["objective"].tolist()
        self.target_codes_ = (self.approx_codes_ >= 0).astype(np.uint8)
        targets = torch.from_numpy(self.target_codes_.astype(np.float32))
        device = training.default_device(self.device)

        def train(model):
            hist = training.fit(model, (images, targets), _bce, epochs=self.epochs,
                                batch_size=self.batch_size, lr=self.lr, optimizer="adam",
                                weight_decay=self.weight_decay, seed=self.seed,
                                progress=self.progress, desc=f"CNNH {self.n_bits} bits",
                                device=device)
            return {"loss": hist.loss, "seconds": hist.seconds}

        key = dict(stage1=stage1, network=repr(self._build()), epochs=self.epochs,
                   batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay)
        self.model_, self.history_, _ = training.cached_model("cnnh", key, self._build, train,
                                                              device=device)
        return self

    def encode(self, X) -> np.ndarray:
        """Codes ``[output >= 0]``, uint8 {0, 1} of shape ``(N, n_bits)``."""
        if not hasattr(self, "model_"):
            raise RuntimeError("CNNH is not fitted yet: call fit(images, labels) first")
        images = as_image_tensor(X, self.input_shape)
        out = training.predict(self.model_, images, fn=lambda m, b: m(_float(b)),
                               device=training.default_device(self.device))
        return np.ascontiguousarray(out.reshape(len(images), self.n_bits) >= 0, dtype=np.uint8)
