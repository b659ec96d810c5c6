"""DDH: Deep Discrete Hashing with self-supervised pairwise labels (Song et al., 2018).

J. Song, T. He, H. Fan and L. Gao, "Deep Discrete Hashing with Self-supervised
Pairwise Labels", ECML-PKDD 2017 (arXiv:1707.02112). The method has two parts:

Pairwise labels (sec. 2.1, Algorithm 1, eq. 1-3)
    Cosine K1-nearest-neighbour lists of pretrained CNN features (the paper:
    ResNet pool5), expanded by uniting the lists of the ``K2`` images whose
    own lists overlap most (:func:`hashstudy.graph.expanded_neighbors`). The
    result is a sparse 0/1 matrix ``S`` (eq. 3): ``S_ij = 1`` for constructed
    neighbours and ``0`` for every other pair. It is built once, before
    training, and cached (:func:`neighborhood`). The *supervised* variant
    (the setting of the paper's Table 5) takes ``S_ij = 1`` for images of a
    common class instead.
Network and loss (sec. 2.2-2.4, eq. 4-13)
    A feature network ``phi`` followed by a hash layer
    ``z = W^T phi(x) + c`` and ``b = sgn(z)`` (eq. 11, with ``sgn(0) = +1``
    as in eq. 4), trained by mini-batch gradient descent on eq. 12::

        J = 1/2 sum_{s_ij in S} (z_i^T z_j / L - s_ij)^2          (J1, eq. 5)
            + lambda1/2 sum_i ||b_i - z_i||^2                      (J2, eq. 6)
            + lambda2/2 (||W||_F^2 + ||c||^2)

    over the pairs ``i < j`` of each mini-batch (each pair once, so that the
    gradient is exactly eq. 13; :func:`ddh_loss`). Eq. 5 needs ``s_ij`` in ``{-1, +1}``: a pair marked
    ``1`` in ``S`` is ``+1`` (similar: ``z_i^T z_j / L`` is pulled to 1, equal
    codes) and a pair marked ``0`` (not a constructed neighbour) is ``-1``
    (dissimilar: pulled to -1, opposite codes); :class:`PairLabels` does this
    mapping ``s = 2 S - 1``. ``lambda1 = 15``, ``lambda2 = 1e-5``, learning
    rate 0.001 and batches of 128 are the paper's (sec. 3.2). Eq. 12 prints
    the weight term squared once more, ``(||W||^2 + ||c||^2)^2``; we read that
    as a typo and use the usual weight decay of the hash layer. Eq. 13 is the
    gradient of J1 + lambda1 J2 with respect to ``z_i``, which
    :func:`ddh_loss` reproduces (a test checks it).

    The paper fine-tunes CNN-F (conv1-5, full6, full7; Table 1) end to end.
    The CPU default here keeps an ImageNet backbone frozen and trains the
    layers above its cached features: an optional stack of fully connected
    ReLU layers (``hidden``, the counterpart of full6/full7) and the hash
    layer (:class:`DDHNet`). ``finetune="whole"`` (or ``True``) trains the
    backbone too, on images (hours on a CPU). ``finetune="top"`` is the CPU's
    fine-tuning: the inputs are EfficientNet-Lite0's cached block-stage-4 maps
    (:func:`hashstudy.finetune.pool_maps`) and Lite0's top ``stages`` block
    stages (:class:`hashstudy.finetune.TopTrunk`) train with the hash layer on
    DDH's loss (no class labels); the pair labels come from the frozen Lite0's
    pooled features of the same maps.

Scaling of the mini-batch objective
    Eq. 12 sums over all pairs and images. Each step evaluates it on the
    pairs and images of one mini-batch and divides by the batch size ``B``
    (the mean per image), which keeps the paper's balance between the
    pairwise and the quantisation terms and makes the step size independent
    of ``B``. A second pairwise term is available as an ablation
    (``pairwise="likelihood"``): the negative log-likelihood of DPSH
    (Li et al., IJCAI 2016), ``sum log(1 + e^Theta_ij) - s01_ij Theta_ij`` with
    ``Theta_ij = z_i^T z_j / 2`` and ``s01`` the 0/1 labels of eq. 3.

Where training starts, and when it stops
    The paper initialises CNN-F from ImageNet and says nothing about the hash
    layer's start or the number of epochs. The default start is PyTorch's
    random initialisation of the hash layer (``init="random"``), which
    borrows nothing from a shallow hasher; since its outputs are small, the
    quantisation weight rises linearly from 0 to ``lambda1`` over the first
    ``warmup`` epochs, so that the pairwise term shapes the outputs before
    quantisation pins their signs. ``init="itq"`` (or ``"pca"``) starts the
    hash layer at ITQ's (PCAH's) projections instead: training then starts at
    that hasher's codes. Early stopping (``holdout``, ``patience``) holds out
    some training images, never the test queries: they are left out of the
    pair labels and of training, and score each epoch by their retrieval
    mAP against the fitted images. The time training took is stored with
    the cached weights (``train_seconds_``), so a report gives the cost of
    training, not of loading.

Experiments
    :class:`DDH` is a hasher (``fit(X)``, ``encode(X) -> {0,1}``) that
    :func:`hashstudy.evaluation.run` evaluates exactly like the shallow
    baselines (:func:`factory`); :func:`code_classification` is the
    object-recognition experiment of sec. 3.3 (a linear SVM trained on binary
    codes, accuracy and training time, Table 6), for CIFAR-10 and for any
    ImageFolder dataset such as Oxford-17 Flowers.

Notebook 04
    The toy cells (:func:`loss_breakdown`: eq. 12 term by term on a small
    batch; :func:`neighbourhood_steps`: Algorithm 1 on a few points) and the
    experiment's steps, each writing its keys, tables and figures into the
    notebook's report: :data:`PROFILE_SIZES`, :func:`model_variants`,
    :func:`report_label_precision` (Fig. 2), :func:`run_retrieval` (Tables 2
    and 4), :func:`training_gain`, :func:`report_validation`,
    :func:`run_classification` (Table 6), :func:`paper_comparison`,
    :func:`paper_differences` and :func:`summary_text`. Figures are in
    :mod:`hashstudy.plots.ddh`.

Codes are ``uint8`` ``{0, 1}`` matrices; bit 1 is the ``+1`` of eq. 4.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from . import cache, config, graph, metrics, protocols, training

__all__ = ["PAIRWISE", "NORMALIZE", "FINETUNE_MODES", "finetune_mode", "ddh_loss", "PairLabels", "neighborhood",
           "label_precision_table", "Normalised", "CachedFit", "DDHNet", "DDH",
           "factory", "Subsampled", "holdout_split", "validation_curve", "svm_on_codes", "classify_with_codes",
           "code_classification", "loss_breakdown", "neighbourhood_steps", "PROFILE_SIZES",
           "RETRIEVAL_METRICS", "check_shallow", "default_backbone", "model_variants",
           "variant_settings", "pool_features", "pool_inputs", "report_label_precision", "shallow_factories", "wide",
           "run_retrieval", "training_gain", "validation_curves", "report_validation",
           "run_classification", "paper_comparison", "paper_differences", "summary_text"]

PAIRWISE = ("squared", "likelihood")
"""Pairwise terms: eq. 5 (the paper's) or DPSH's negative log-likelihood (ablation)."""
NORMALIZE = ("l2", "none")
"""Input normalisation of the feature head: unit rows minus their training mean, or none."""
FINETUNE_MODES = ("none", "top", "whole")
"""What DDH trains below the hash layer: ``"none"`` (the layers above frozen backbone
features), ``"top"`` (Lite0's top block stages too, on cached stage-4 maps) or ``"whole"``
(the whole backbone, on images). ``False``/``True`` read as ``"none"``/``"whole"``."""
#: The backbone ``finetune="top"`` fine-tunes (the maps are its block-stage-4 output).
TOP_BACKBONE = "efficientnet_lite0"


def finetune_mode(value) -> str:
    """The :data:`FINETUNE_MODES` entry ``value`` names (``False``/``True``: ``"none"``/``"whole"``)."""
    if isinstance(value, (bool, np.bool_)):
        return "whole" if value else "none"
    config.check_choice("finetune", value, FINETUNE_MODES)
    return str(value)

# version of the training code: part of the cache key of trained weights
_VERSION = "1"


# ---------------------------------------------------------------------------
# loss


def ddh_loss(z: torch.Tensor, s: torch.Tensor, lambda1: float = 15.0,
             pairwise: str = "squared") -> tuple[torch.Tensor, dict]:
    """Eq. 12 on one mini-batch, without the weight term, per image.

    Parameters
    ----------
    z : torch.Tensor of float, shape (B, L)
        Hash-layer outputs ``z_i = W^T phi(x_i) + c`` (eq. 11).
    s : torch.Tensor of float, shape (B, B)
        Pair labels in ``{-1, +1}`` (eq. 5), symmetric; see :class:`PairLabels`.
        Only the pairs ``i < j`` (the upper triangle) are used.
    lambda1 : float
        Weight of the quantisation term (the paper: 15).
    pairwise : {"squared", "likelihood"}
        ``"squared"``: ``J1 = 1/2 sum_{i < j} (z_i^T z_j / L - s_ij)^2``
        (eq. 5 with ``u = z``, eq. 10 and 12). ``"likelihood"``: DPSH's
        ``J1 = sum_{i < j} log(1 + exp(Theta_ij)) - s01_ij Theta_ij`` with
        ``Theta_ij = z_i^T z_j / 2`` and ``s01 = (s + 1) / 2``, computed with a
        numerically stable softplus.

    Returns
    -------
    loss : torch.Tensor, scalar
        ``(J1 + lambda1 * J2) / B`` with ``J2 = 1/2 sum_i ||z_i - b_i||^2`` and
        ``b_i = sgn(z_i)`` (eq. 4, ``sgn(0) = +1``; ``b`` is a constant for the
        gradient, as ``sgn`` has zero derivative almost everywhere).
    parts : dict
        ``{"pairwise": J1 / B, "quantization": J2 / B}`` as floats.

    Notes
    -----
    With ``pairwise="squared"`` the gradient is eq. 13 summed over the
    batch partners ``j``, divided by ``B``:
    ``dJ/dz_i = (1/B) [sum_{j != i} ((z_i^T z_j) / L^2 - s_ij / L) z_j + lambda1 (z_i - b_i)]``.
    """
    config.check_choice("pairwise", pairwise, PAIRWISE)
    if z.ndim != 2 or s.shape != (z.shape[0], z.shape[0]):
        raise ValueError(f"need z of shape (B, L) and s of shape (B, B); got {tuple(z.shape)} "
                         f"and {tuple(s.shape)}")
    if not float(lambda1) >= 0:
        raise ValueError(f"lambda1 must be >= 0, got {lambda1!r}")
    n, bits = z.shape
    s = s.to(z.dtype)
    theta = z @ z.T
    if pairwise == "squared":
        j1 = 0.5 * torch.triu((theta / bits - s) ** 2, diagonal=1).sum()
    else:
        half = 0.5 * theta
        j1 = torch.triu(nn.functional.softplus(half) - 0.5 * (s + 1) * half, diagonal=1).sum()
    b = torch.where(z >= 0, 1.0, -1.0).to(z.dtype).detach()
    j2 = 0.5 * ((z - b) ** 2).sum()
    loss = (j1 + float(lambda1) * j2) / n
    return loss, {"pairwise": float(j1.detach()) / n, "quantization": float(j2.detach()) / n}


BATCHES = ("neighbors", "random")
INITS = ("random", "itq", "pca")


def _projection_init(model: "DDHNet", phi: np.ndarray, how: str, seed: int,
                     max_rows: int = 20000) -> None:
    """Start the hash layer at PCAH's (``"pca"``) or ITQ's (``"itq"``) projections of the
    (normalised, centred) training features, each output scaled to unit variance, so that
    ``sgn(z)`` at the start equals that hasher's codes."""
    from . import baselines

    rows = np.random.default_rng(seed).permutation(len(phi))[:max_rows]
    bits = model.hash_layer.out_features
    device = model.hash_layer.weight.device
    with torch.no_grad():
        f = model.features(torch.as_tensor(np.asarray(phi[rows], dtype=np.float32)).to(device))
        f = f.double().cpu().numpy()
    hasher = baselines.make(how if how == "itq" else "pcah", bits, seed=seed).fit(f)
    W = hasher.components_ @ (hasher.rotation_ if how == "itq" else np.eye(bits))
    proj = (f - hasher.mean_) @ W
    scale = proj.std(axis=0) + 1e-12
    with torch.no_grad():
        model.hash_layer.weight.copy_(torch.from_numpy((W / scale).T).float())  # copy_ moves
        model.hash_layer.bias.copy_(torch.from_numpy(-(hasher.mean_ @ W) / scale).float())


def _partner_sampler(S, labels, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """``f(anchors)``: one random similar image per anchor (a constructed neighbour from
    the rows of ``S``, or, with ``labels``, an image of the same class), seeded."""
    rng = np.random.default_rng([int(seed), 0xDD])
    if labels is not None:
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        where = np.searchsorted(classes, labels)

        def sample(anchors):
            c = where[anchors]
            return order[starts[c] + rng.integers(0, counts[c])]
        return sample
    S = sp.csr_matrix(S)
    indptr, indices = S.indptr, S.indices
    counts = np.diff(indptr)

    def sample(anchors):
        n_nb = counts[anchors]
        pick = rng.integers(0, np.maximum(n_nb, 1))
        out = indices[np.minimum(indptr[anchors] + pick, len(indices) - 1)]
        lonely = n_nb == 0  # no constructed neighbour: a random image instead
        out[lonely] = rng.integers(0, S.shape[0], lonely.sum())
        return out
    return sample


class PairLabels:
    """Mini-batch pair labels ``s_ij`` in ``{-1, +1}`` from eq. 3's 0/1 matrix or from classes.

    Eq. 3 builds ``S`` with ``1`` for constructed neighbours and ``0`` for every
    other pair; eq. 5 uses ``s_ij = +1`` for similar and ``-1`` for dissimilar
    pairs. The mapping is ``s = 2 S - 1``: every pair that is not a
    constructed neighbour counts as dissimilar.

    Use :meth:`from_neighbors` (the unsupervised method) or :meth:`from_classes`
    (the supervised variant: ``+1`` for a shared class). Calling the object
    with training-set indices ``idx`` of shape (B,) returns a float32 tensor
    (B, B).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], n: int, kind: str):
        self._fn, self.n, self.kind = fn, int(n), kind

    @classmethod
    def from_neighbors(cls, S) -> "PairLabels":
        """``s_ij = +1`` where ``S_ij != 0`` (a constructed neighbour), else ``-1``."""
        if not sp.issparse(S) or S.shape[0] != S.shape[1]:
            raise ValueError("S must be a square scipy.sparse matrix")
        S = sp.csr_matrix(S)
        return cls(lambda idx: graph.pairwise_labels(S, idx), S.shape[0], "neighbors")

    @classmethod
    def from_classes(cls, labels) -> "PairLabels":
        """``s_ij = +1`` when images ``i`` and ``j`` share a class, else ``-1``."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"class labels must be a 1-D integer array, got {labels.dtype} "
                             f"{labels.shape}")
        return cls(lambda idx: graph.label_similarity(labels[idx]), labels.size, "classes")

    def __call__(self, idx) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self._fn(idx), dtype=np.float32))


# ---------------------------------------------------------------------------
# neighbourhood construction (Algorithm 1), cached


def neighborhood(X, k1: int = 15, k2: int = 6, *, use_cache: bool = True,
                 return_seconds: bool = False):
    """DDH's similarity matrix ``S`` of eq. 3 (Algorithm 1), cached on disk.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Features of the training images (cosine K1-NN search).
    k1, k2 : int
        K1 nearest neighbours by cosine similarity; the K2 lists with the
        largest overlap are united (the paper: 15 and 6).
    use_cache : bool
        Store / reuse the matrix under ``<cache>/ddh`` keyed by the features'
        digest and ``k1, k2``. The time the construction took is stored with
        it.
    return_seconds : bool
        Also return ``(seconds, loaded)``: the construction's wall time (when
        it was computed, even if this call loaded it) and whether it came from
        the cache.

    Returns
    -------
    scipy.sparse.csr_matrix of float32, shape (N, N)
        Symmetric 0/1 matrix, zero diagonal (see
        :func:`hashstudy.graph.expanded_neighbors`, ``symmetrize="or"``).
        With ``return_seconds``: ``(S, seconds, loaded)``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    computed = []

    def compute():
        t0 = time.perf_counter()
        S = graph.expanded_neighbors(X, k1=k1, k2=k2)
        computed.append(True)
        return {"indptr": S.indptr.astype(np.int64), "indices": S.indices.astype(np.int64),
                "shape": np.asarray(S.shape, dtype=np.int64),
                "seconds": np.asarray(time.perf_counter() - t0, dtype=np.float64)}

    if use_cache:
        path = config.cache_dir("ddh") / (
            f"neighbors-{cache.key(cache.array_digest(X), int(k1), int(k2), 'or', 'timed')}.npz")
        arrays = cache.cached_arrays(path, compute)
    else:
        arrays = compute()
    indices = arrays["indices"]
    S = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, arrays["indptr"]),
                      shape=tuple(int(v) for v in arrays["shape"]))
    if return_seconds:
        return S, float(arrays["seconds"]), not computed
    return S


def label_precision_table(X, labels, ks: Sequence[int], k2: int = 6, *,
                          use_cache: bool = True, return_seconds: bool = False):
    """Fig. 2 for both readings of eq. 3: label precision of kNN and of the expansion.

    Eq. 3 is directed: row ``i`` of ``S`` is the union of the lists of the
    ``K2`` images whose lists overlap ``L_i`` most. The loss needs a
    symmetric ``s_ij``; :func:`neighborhood` (and so training) makes a pair
    similar when either image has the other (``symmetrize="or"``). For every
    ``K in ks`` this scores, by the fraction of pairs that share a class:

    - ``"knn"``: plain K-NN lists (``k`` = K);
    - ``"expanded"``: the symmetrised expansion with ``K1 = K`` (what
      training uses) and ``"knn_matched"``: plain kNN with as many neighbours
      per image as it has (``k`` = that number, rounded);
    - ``"expanded_directed"``: eq. 3 as printed (no symmetrisation) and
      ``"knn_matched_directed"``: plain kNN matched to its size.

    One cosine kNN search serves every row (a second, longer one when a
    matched size exceeds ``max(ks)``). The result depends only on the
    features, labels, ``ks`` and ``k2``, and is cached under ``<cache>/ddh``.

    Returns
    -------
    list of dict
        Keys ``method, k, k2, mean_neighbors, precision`` (``k2`` is None for
        plain kNN), in the order of ``ks``, then of the methods above. With
        ``return_seconds``: ``(rows, seconds, loaded)``, the wall time of the
        computation (stored with the cached table) and whether it was loaded.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    ks = [_positive_int("each K in ks", int(k)) for k in ks]
    if not ks:
        raise ValueError("ks is empty")
    k2 = _positive_int("k2", k2)
    n = X.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"need {n} labels, one per row of X; got shape {labels.shape}")
    if max(ks) >= n:
        raise ValueError(f"every K in ks must be below the number of images ({n}); got {max(ks)}")
    methods = ("knn", "expanded", "knn_matched", "expanded_directed", "knn_matched_directed")

    computed = []

    def compute():
        t0 = time.perf_counter()
        computed.append(True)
        idx, _ = graph.knn(X, max(ks), metric="cosine")
        out = {}
        for k in ks:
            out[("knn", k)] = (k, None, float(k), graph.label_precision(idx[:, :k], labels))
            for name, sym in (("expanded", "or"), ("expanded_directed", "none")):
                S = graph.expand_neighbors(idx[:, :k], k2=k2, symmetrize=sym)
                out[(name, k)] = (k, k2, S.nnz / n, graph.label_precision(S, labels))
        sizes = {(name, k): int(min(n - 1, max(1, round(out[(name, k)][2]))))
                 for name in ("expanded", "expanded_directed") for k in ks}
        if max(sizes.values()) > idx.shape[1]:
            idx, _ = graph.knn(X, max(sizes.values()), metric="cosine")
        for (name, k), m in sizes.items():
            matched = "knn_matched" + name[len("expanded"):]
            out[(matched, k)] = (m, None, float(m), graph.label_precision(idx[:, :m], labels))
        rows = [(name, k) for k in ks for name in methods]
        return {"method": np.asarray([r[0] for r in rows]),
                "k": np.asarray([out[r][0] for r in rows], dtype=np.int64),
                "k2": np.asarray([-1 if out[r][1] is None else out[r][1] for r in rows],
                                 dtype=np.int64),
                "mean_neighbors": np.asarray([out[r][2] for r in rows], dtype=np.float64),
                "precision": np.asarray([out[r][3] for r in rows], dtype=np.float64),
                "seconds": np.asarray(time.perf_counter() - t0, dtype=np.float64)}

    if use_cache:
        path = config.cache_dir("ddh") / (
            f"label-precision-{cache.key(cache.array_digest(X), cache.array_digest(labels), ks, k2, 'timed')}.npz")
        arrays = cache.cached_arrays(path, compute)
    else:
        arrays = compute()
    rows = [{"method": str(m), "k": int(k), "k2": None if int(k2_) < 0 else int(k2_),
             "mean_neighbors": float(mn), "precision": float(p)}
            for m, k, k2_, mn, p in zip(arrays["method"], arrays["k"], arrays["k2"],
                                        arrays["mean_neighbors"], arrays["precision"])]
    if return_seconds:
        return rows, float(arrays["seconds"]), not computed
    return rows


class Normalised:
    """A hasher fitted on DDH's input normalisation: unit-length rows minus their training mean.

    ``Normalised(baselines.make("itq", bits))`` is ITQ on exactly the input
    DDH's hash layer sees (:class:`DDHNet` with ``normalize="l2"``), so DDH can
    be compared with the shallow hasher on the same representation.
    """

    def __init__(self, hasher):
        self.hasher = hasher
        self.supervised = bool(getattr(hasher, "supervised", False))

    def _transform(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.maximum(norms, 1e-12) - self.center_

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty (N, D) matrix, got shape {X.shape}")
        self.center_ = 0.0
        self.center_ = self._transform(X).mean(axis=0)
        Z = self._transform(X)
        if self.supervised:
            self.hasher.fit(Z, y)
        else:
            self.hasher.fit(Z)
        return self

    def encode(self, X) -> np.ndarray:
        if not hasattr(self, "center_"):
            raise RuntimeError("Normalised is not fitted yet: call fit(X) first")
        return self.hasher.encode(self._transform(X))


# ---------------------------------------------------------------------------
# network


class DDHNet(nn.Module):
    """Feature network ``phi`` and hash layer ``z = W^T phi(x) + c`` (eq. 11).

    Parameters
    ----------
    in_dim : int
        Length of the trunk's output (the backbone's feature length).
    bits : int
        Code length ``L``: outputs of the hash layer.
    hidden : sequence of int
        Widths of fully connected ReLU layers between the trunk and the hash
        layer (the counterpart of CNN-F's full6 and full7); ``()`` puts the
        hash layer directly on the trunk's features.
    trunk : nn.Module, optional
        Maps the input to (B, in_dim) features; default ``nn.Identity()``
        (the input is a batch of cached features).
    normalize : {"l2", "none"}
        ``"l2"``: trunk outputs are scaled to unit length and centred on the
        training mean (the buffer ``center``, set by :meth:`set_center`).

    ``forward(x)`` returns ``z``, float32 (B, bits). The hash layer is
    ``self.hash_layer`` (its weight is ``W^T``, its bias ``c``).
    """

    def __init__(self, in_dim: int, bits: int, hidden: Sequence[int] = (),
                 trunk: Optional[nn.Module] = None, normalize: str = "l2"):
        super().__init__()
        (bits,) = config.check_bits(bits)
        config.check_choice("normalize", normalize, NORMALIZE)
        hidden = [int(h) for h in hidden]
        if int(in_dim) < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"in_dim and hidden widths must be positive, got {in_dim}, {hidden}")
        self.trunk = trunk if trunk is not None else nn.Identity()
        self.normalize = normalize
        self.register_buffer("center", torch.zeros(int(in_dim)))
        layers, width = [], int(in_dim)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.fc = nn.Sequential(*layers)
        self.hash_layer = nn.Linear(width, bits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output after the input normalisation, float32 (B, in_dim)."""
        f = self.trunk(x).float()
        if self.normalize == "l2":
            f = nn.functional.normalize(f, dim=1) - self.center
        return f

    def set_center(self, features: np.ndarray) -> None:
        """Set ``center`` to the mean of the unit-length training features."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32)).to(self.center.device)
        self.center.copy_(nn.functional.normalize(f, dim=1).mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash_layer(self.fc(self.features(x)))


# ---------------------------------------------------------------------------
# the hasher


def _positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _non_negative_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class _StopTraining(Exception):
    """Raised by the early-stopping hook to end :func:`hashstudy.training.fit` early."""


class DDH:
    """Deep Discrete Hashing as a hasher: ``fit(X)``, ``encode(X) -> {0,1}``.

    Parameters
    ----------
    n_bits : int
        Code length ``L``.
    k1, k2 : int
        Neighbourhood construction (Algorithm 1); the paper's 15 and 6.
    lambda1, lambda2 : float
        Weights of the quantisation and hash-layer weight terms of eq. 12; the
        paper's 15 and 1e-5.
    lr, batch_size, epochs : float, int, int
        Mini-batch training; the paper's learning rate 0.001 and batches of
        128 (it does not state the number of epochs). With early stopping
        (``holdout > 0``) ``epochs`` is the largest number of epochs.
    optimizer : {"sgd", "adam"}
        SGD (the paper's, with ``momentum``) or Adam.
    momentum : float
        SGD momentum.
    hidden : sequence of int
        Fully connected layers above the frozen trunk (see :class:`DDHNet`).
    normalize : {"l2", "none"}
        Input normalisation of the head (see :class:`DDHNet`).
    pairwise : {"squared", "likelihood"}
        Pairwise term of the loss (see :func:`ddh_loss`).
    batches : {"neighbors", "random"}
        How mini-batches are drawn. ``"random"``: ``batch_size`` random
        training images. With ``K1 = 15`` lists expanded to about 100
        neighbours among 50,000 images, a random batch of 128 holds about one
        similar pair in total, and eq. 5 then sees almost only ``s_ij = -1``.
        ``"neighbors"`` (default): half of each batch are random anchors and
        the other half one random constructed neighbour of each (a random
        same-class image for the supervised variant), so that every batch
        holds at least ``batch_size / 2`` similar pairs. The loss is eq. 12
        over all pairs of the batch either way; the paper does not say how
        its batches were drawn.
    init : {"random", "itq", "pca"}
        Initial hash layer. ``"random"`` (default; PyTorch's initialisation,
        seeded): the start borrows nothing from a shallow hasher, as in the
        paper, which initialises its network from ImageNet and says nothing
        more about the hash layer. Its outputs on unit-length features are
        about 0.02 in size, so with the full ``lambda1 = 15`` from the first
        step the quantisation term drives every ``z`` to the sign it started
        with before the pairwise term can move it (codes near random
        projections); ``warmup`` avoids that. ``"itq"`` and ``"pca"`` start
        the hash layer at ITQ's or PCAH's projections of the (normalised,
        centred) training features, scaled to unit output variance, so
        training starts at that hasher's codes; they need the hash layer
        directly on the frozen features (``hidden=()``, ``finetune=False``).
    warmup : int
        Epochs over which the weight of the quantisation term rises linearly,
        step by step, from 0 to ``lambda1`` (0: the full ``lambda1`` from the
        first step). The paper states no schedule.
    holdout : int
        Early stopping: this many random training images (seeded) are held
        out; they take no part in the pair labels nor in training (Algorithm 1
        runs on the other images). After every epoch the held-out images are
        encoded as queries against the other training images and scored by
        mAP@1000 with their class labels, so ``fit(X, y)`` needs the labels
        of the training images (only the held-out ones are read). Training
        stops when that score has not improved for ``patience`` epochs, and
        the weights of the best epoch are kept. Epochs inside the warm-up are
        not candidates (their quantisation weight is below ``lambda1``). 0
        (default): no held-out images, exactly ``epochs`` epochs.
    patience : int
        Epochs without improvement before early stopping.
    supervised : bool
        Pair labels from class labels (``fit(X, y)``) instead of the
        constructed neighbourhood: the supervised setting of Table 5.
    finetune : {"none", "top", "whole"} or bool
        ``"none"`` or ``False`` (default): ``X`` are features of a frozen
        backbone, the neighbourhood is built on them and only the layers
        above are trained. ``"whole"`` or ``True``: ``X`` are uint8 images
        (N, H, W, C); the neighbourhood is built on the frozen ``backbone``'s
        features and the backbone is trained end to end with the head (slow
        on a CPU). ``"top"``: ``X`` are EfficientNet-Lite0's block-stage-4
        maps, float (N, 112, s, s) (:func:`hashstudy.finetune.pool_maps`,
        :func:`hashstudy.finetune.stage_maps`); the neighbourhood is built on
        the frozen Lite0's pooled features of those maps, the frozen part of
        :class:`hashstudy.finetune.TopTrunk` runs once per ``fit`` and
        ``encode``, and its top ``stages`` block stages train with the head on
        DDH's loss (no class labels). ``backbone`` must then be
        ``"efficientnet_lite0"``.
    stages : {0, 1, 2}
        With ``finetune="top"``: Lite0's block stages trained, counted from
        the top (1, default: stage 6 and the head convolution; 2: stages 5
        and 6 too; 0: none, the frozen Lite0 features). Ignored otherwise.
    backbone, input_size : str, int
        The backbone and its input side, used only with ``finetune="whole"``
        (``backbone`` is checked with ``"top"``; the maps fix the input side).
    seed : int
        Seeds the weights, the held-out images and the batch order.
    use_cache : bool
        Cache the neighbourhood and the trained weights (under ``<cache>``).
    progress : bool
        Show a progress bar while training.
    device : str, optional
        Where the network trains and encodes (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Not part of
        the cache key on the CPU; weights trained on a GPU are cached apart. The
        training keeps state outside the network (warm-up step, early stopping,
        neighbour sampler), so it is not checkpointed per epoch.

    Attributes (after ``fit``)
    ----------
    S_ : scipy.sparse.csr_matrix, shape (N_fit, N_fit), or None
        The constructed 0/1 neighbourhood of the fitted images (None for the
        supervised variant).
    model_ : DDHNet
    info_ : dict
        Training history: ``loss`` (per epoch), ``logs`` (per epoch: the
        quantisation weight used and, with ``holdout``, the held-out
        mAP@1000; early stopping also logs epoch 0, the start), ``seconds``
        (the training loop), ``train_seconds`` (all of the training step),
        ``epochs_run``, ``best_epoch``; and ``from_cache`` (whether the
        weights were loaded).
    fit_index_, holdout_index_ : ndarray of int
        Rows of ``X`` that were fitted and held out.
    train_seconds_ : float
        Wall time of training the weights, measured when they were trained
        and stored with them, so it is the same whether this ``fit`` trained
        or loaded them (NaN for weights cached before the time was stored).
    neighbors_seconds_ : float
        Wall time of constructing the neighbourhood (stored with it likewise;
        0 for the supervised variant).
    fit_seconds_ : float
        ``neighbors_seconds_ + train_seconds_``: what ``fit`` costs without
        any cache.
    from_cache_ : dict
        ``{"weights": bool, "neighbors": bool}``: what this ``fit`` loaded.
    """

    def __init__(self, n_bits: int, *, k1: int = 15, k2: int = 6, lambda1: float = 15.0,
                 lambda2: float = 1e-5, lr: float = 1e-3, batch_size: int = 128,
                 epochs: int = 30, optimizer: str = "sgd", momentum: float = 0.9,
                 hidden: Sequence[int] = (), normalize: str = "l2", pairwise: str = "squared",
                 batches: str = "neighbors", init: str = "random", warmup: int = 5,
                 holdout: int = 0, patience: int = 3, supervised: bool = False,
                 finetune: "bool | str" = False, stages: int = 1,
                 backbone: str = "efficientnet_lite0", input_size: int = 128, seed: int = 0,
                 use_cache: bool = True, progress: bool = True,
                 device: Optional[str] = None):
        (self.n_bits,) = config.check_bits(n_bits)
        if device is not None:
            training.default_device(device)  # an unknown device fails here
        self.k1, self.k2 = _positive_int("k1", k1), _positive_int("k2", k2)
        if not float(lambda1) >= 0 or not float(lambda2) >= 0:
            raise ValueError(f"lambda1 and lambda2 must be >= 0, got {lambda1!r}, {lambda2!r}")
        if not float(lr) > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.lambda1, self.lambda2, self.lr = float(lambda1), float(lambda2), float(lr)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.epochs = _non_negative_int("epochs", epochs)
        self.warmup = _non_negative_int("warmup", warmup)
        self.holdout = _non_negative_int("holdout", holdout)
        self.patience = _positive_int("patience", patience)
        config.check_choice("optimizer", optimizer, training.OPTIMIZERS)
        config.check_choice("normalize", normalize, NORMALIZE)
        config.check_choice("pairwise", pairwise, PAIRWISE)
        config.check_choice("batches", batches, BATCHES)
        config.check_choice("init", init, INITS)
        self.batches, self.init = batches, init
        self.optimizer, self.momentum = optimizer, float(momentum)
        self.hidden = tuple(_positive_int("hidden width", h) for h in hidden)
        self.normalize, self.pairwise = normalize, pairwise
        self.supervised, self.finetune = bool(supervised), finetune_mode(finetune)
        from .finetune import _check_stages

        self.stages = _check_stages(stages)
        if init != "random" and (self.hidden or self.finetune != "none"):
            raise ValueError(f"init={init!r} starts the hash layer at a shallow hasher's "
                             "projections of the input features, so it needs hidden=() and "
                             "finetune='none'; use init='random' otherwise")
        if self.finetune == "top" and backbone != TOP_BACKBONE:
            raise ValueError(f"finetune='top' fine-tunes {TOP_BACKBONE}'s top block stages on its "
                             f"cached stage-4 maps; backbone must be {TOP_BACKBONE!r}, got "
                             f"{backbone!r}")
        self.backbone, self.input_size = backbone, _positive_int("input_size", input_size)
        self.seed, self.use_cache, self.progress = int(seed), bool(use_cache), bool(progress)
        self.device = device

    @property
    def needs_labels(self) -> bool:
        """Whether ``fit`` needs the training labels (supervised pairs or early stopping)."""
        return self.supervised or self.holdout > 0

    def get_params(self) -> dict:
        """The constructor arguments, by name (a cache-key part and ``repr``)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        return "DDH(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def _key_params(self) -> dict:
        """Parameters in the weights' cache key. ``warmup``, ``holdout`` and ``patience``
        enter only where they change training, so weights trained before they existed
        (no warm-up, no held-out images) keep their key; so does ``finetune``, which is
        keyed as the boolean it was (``"none"``: False, ``"whole"``: True), and ``stages``
        with the version of :mod:`hashstudy.finetune` and Lite0's weights only for
        ``"top"``."""
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("use_cache", "progress", "device")}  # cached_model keys a GPU
        if params["warmup"] == 0:
            del params["warmup"]
        if params["holdout"] == 0:
            del params["holdout"], params["patience"]
        if self.finetune == "top":
            from . import features
            from . import finetune as ft

            params["top"] = {"version": ft.FINETUNE_VERSION, "cut": ft.CUT,
                             "weights": features._weights_identity(features.BACKBONES[ft.SOURCE])}
        else:
            params["finetune"] = self.finetune == "whole"
            del params["stages"]
        return params

    # -- inputs ---------------------------------------------------------------
    def _check_inputs(self, X) -> np.ndarray:
        X = np.asarray(X)
        if self.finetune == "top":
            if X.ndim != 4 or X.shape[1] != 112 or X.shape[0] == 0 \
                    or not np.issubdtype(X.dtype, np.floating):
                raise ValueError(f"with finetune='top', X must be EfficientNet-Lite0's block-stage-4 "
                                 f"maps, float (N, 112, s, s), from hashstudy.finetune.pool_maps or "
                                 f"stage_maps; got {X.dtype} {X.shape} (uint8 images go with "
                                 "finetune='whole', feature matrices with finetune='none')")
            return X
        if self.finetune == "whole":
            if X.dtype != np.uint8 or X.ndim != 4:
                raise ValueError(f"with finetune='whole', X must be uint8 images (N, H, W, C); got "
                                 f"{X.dtype} {X.shape}")
            return X
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X must be a non-empty (N, D) feature matrix, got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
            raise ValueError("X must hold finite real numbers")
        return np.ascontiguousarray(X, dtype=np.float32)

    def _neighbor_features(self, X: np.ndarray) -> np.ndarray:
        if self.finetune == "none":
            return X
        if self.finetune == "top":
            return self._top_features(X)
        from . import features

        return features.extract(X, self.backbone, self.input_size, progress=self.progress)

    def _top_features(self, X: np.ndarray) -> np.ndarray:
        """The frozen Lite0's pooled 1,280-D features of stage-4 maps (``TopTrunk(0)``),
        float32; cached under ``<cache>/ddh`` by the maps' digest with ``use_cache``."""
        from . import features
        from . import finetune as ft

        def compute():
            trunk = ft.TopTrunk(0).to(training.default_device(self.device))
            z = ft.frozen_outputs(trunk, X, progress=self.progress,
                                  desc="frozen Lite0 features of the maps")
            return {"features": z.numpy().astype(np.float32)}

        if not self.use_cache:
            return compute()["features"]
        digest = cache.key(cache.array_digest(X), ft.FINETUNE_VERSION, ft.CUT,
                           features._weights_identity(features.BACKBONES[ft.SOURCE]))
        path = config.cache_dir("ddh") / f"top-features-{digest}.npz"
        return cache.cached_arrays(path, compute)["features"]

    def _build(self, in_dim: int) -> Callable[[], DDHNet]:
        def build():
            torch.manual_seed(self.seed)
            trunk = None
            if self.finetune == "top":
                from . import finetune as ft

                trunk = ft.TopTrunk(self.stages)
            elif self.finetune == "whole":
                from . import features
                from .latent import ImageTrunk

                trunk = ImageTrunk(features.load_backbone(self.backbone), self.input_size)
            return DDHNet(in_dim, self.n_bits, self.hidden, trunk=trunk, normalize=self.normalize)

        return build

    def _split_holdout(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(n)
        if not self.holdout:
            return rows, rows[:0]
        if n - self.holdout <= self.k1:
            raise ValueError(f"holdout={self.holdout} leaves {n - self.holdout} of {n} training "
                             f"images; need more than k1={self.k1} to fit")
        held = np.sort(np.random.default_rng([self.seed, 0x401D]).choice(n, self.holdout,
                                                                         replace=False))
        return np.setdiff1d(rows, held), held

    # -- fit / encode ---------------------------------------------------------
    def fit(self, X, y=None, *, on_epoch_end: Optional[Callable] = None) -> "DDH":
        """Construct the pair labels and train the network on ``X``.

        Parameters
        ----------
        X : array_like
            Training features (N, D) (``finetune="none"``), uint8 images
            (N, H, W, C) (``"whole"``) or Lite0's stage-4 maps, float
            (N, 112, s, s) (``"top"``).
        y : array_like of int, shape (N,), optional
            Class labels; required by, and only used by, the supervised
            variant (pair labels) and early stopping (``holdout > 0``: the
            labels of the held-out images score them; the fitted images'
            labels are the relevance of their database).
        on_epoch_end : callable ``(epoch, hasher) -> dict``, optional
            Called after every epoch with this hasher (``encode`` works); the
            dicts it returns are kept in ``info_["logs"]``. Training with a
            callback bypasses the cache of trained weights.

        Returns
        -------
        self
        """
        X = self._check_inputs(X)
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"fit needs at least 2 training images, got {n}")
        if self.needs_labels:
            why = "the supervised variant" if self.supervised else f"early stopping (holdout={self.holdout})"
            if y is None:
                raise ValueError(f"{why} needs the training images' class labels: fit(X, y)")
            y = np.asarray(y)
            if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"y must be {n} integer class labels, got {y.dtype} {y.shape}")
        fit_rows, held = self._split_holdout(n)
        top = self.finetune == "top"
        self.fit_index_, self.holdout_index_ = fit_rows, held
        X_fit = X[fit_rows] if held.size else X
        n_fit = X_fit.shape[0]
        neighbors_loaded = False
        if self.supervised:
            self.S_, neighbors_seconds = None, 0.0
            pairs = PairLabels.from_classes(y[fit_rows])
            phi = self._neighbor_features(X_fit) if self.normalize == "l2" else None
        else:
            if self.k1 >= n_fit:
                raise ValueError(f"k1={self.k1} needs more than {self.k1} training images, "
                                 f"got {n_fit}")
            phi = self._neighbor_features(X_fit)
            self.S_, neighbors_seconds, neighbors_loaded = neighborhood(
                phi, self.k1, self.k2, use_cache=self.use_cache, return_seconds=True)
            pairs = PairLabels.from_neighbors(self.S_)
        if top:
            from .finetune import TopTrunk

            in_dim = TopTrunk.feature_dim
        else:
            in_dim = phi.shape[1] if phi is not None else X.shape[1]
        key = {"version": _VERSION, "params": self._key_params(),
               "X": cache.array_digest(X), "y": cache.array_digest(y) if self.needs_labels else None}
        lambda1, lambda2, pairwise = self.lambda1, self.lambda2, self.pairwise
        steps_per_epoch = max(1, (n_fit + self.batch_size - 1) // self.batch_size)
        warmup_steps = self.warmup * steps_per_epoch

        # the network's inputs: with "top" the frozen part's outputs, computed inside train
        # (once, and not at all when the weights come from the cache)
        inputs = {"fit": None if top else torch.from_numpy(X_fit),
                  "held": None if top or not held.size else torch.from_numpy(X[held])}
        partner = (_partner_sampler(self.S_, y[fit_rows] if self.supervised else None, self.seed)
                   if self.batches == "neighbors" else None)
        state = {"step": 0, "loss": 0.0, "seen": 0}

        def weight():  # the quantisation weight of the current step (linear warm-up)
            if warmup_steps == 0:
                return lambda1
            return lambda1 * min(1.0, state["step"] / warmup_steps)

        device = training.default_device(self.device)

        def objective(model, x, idx):
            idx = idx.cpu()  # the rows (a no-op on the CPU); the batch is on the device
            if partner is not None and len(idx) > 1:  # half anchors, half their neighbours
                half = (len(idx) + 1) // 2
                anchors = idx.numpy()[:half]
                idx = torch.from_numpy(np.concatenate([anchors, partner(anchors)[:len(idx) - half]]))
                x = inputs["fit"][idx].to(x.device)
            z = model(x)
            loss, parts = ddh_loss(z, pairs(idx.numpy()).to(z.device), weight(), pairwise)
            w, c = model.hash_layer.weight, model.hash_layer.bias
            total = loss + 0.5 * lambda2 * (w.pow(2).sum() + c.pow(2).sum())
            state["step"] += 1
            state["loss"] += float(total.detach()) * len(idx)
            state["seen"] += len(idx)
            return total, parts

        if held.size:
            yq, ydb = y[held], y[fit_rows]

            def held_out_map(model) -> float:
                q = training.predict(model, inputs["held"], batch_size=1024, device=device) >= 0
                d = training.predict(model, inputs["fit"], batch_size=1024, device=device) >= 0
                return float(metrics.evaluate(q.astype(np.uint8), d.astype(np.uint8), yq, ydb,
                                              ["map@1000"])["map@1000"])

        def train(model):
            if top:
                from . import finetune as ft

                inputs["fit"] = ft.frozen_outputs(model.trunk, X_fit, progress=self.progress,
                                                  desc="frozen part of Lite0's top")
                if held.size:
                    inputs["held"] = ft.frozen_outputs(model.trunk, X[held])
            if phi is not None:
                model.set_center(phi)
                if self.init != "random":
                    _projection_init(model, phi, self.init, self.seed)
            self.model_ = model
            losses, logs = [], []
            first = min(self.warmup, self.epochs)  # the first epoch that may be selected
            best = {"epoch": None, "score": -np.inf, "state": None}

            def consider(epoch, score, model):
                if epoch >= first and score > best["score"]:
                    best.update(epoch=epoch, score=score,
                                state={k: v.detach().clone() for k, v in model.state_dict().items()})

            if held.size:
                score = held_out_map(model)
                logs.append({"epoch": 0, "lambda1": 0.0, "holdout_map@1000": score})
                consider(0, score, model)

            def hook(epoch, model):
                losses.append(state["loss"] / max(1, state["seen"]))
                state["loss"], state["seen"] = 0.0, 0
                log = {"epoch": epoch + 1, "lambda1": weight()}
                if held.size:
                    log["holdout_map@1000"] = held_out_map(model)
                    consider(epoch + 1, log["holdout_map@1000"], model)
                if on_epoch_end is not None:
                    log.update(on_epoch_end(epoch, self) or {})
                logs.append(log)
                if held.size and epoch + 1 >= first and best["epoch"] is not None \
                        and epoch + 1 - best["epoch"] >= self.patience:
                    raise _StopTraining

            t0 = time.perf_counter()
            try:
                training.fit(model, (inputs["fit"], torch.arange(n_fit)), objective,
                             epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             optimizer=self.optimizer, momentum=self.momentum, seed=self.seed,
                             progress=self.progress, desc=f"DDH {self.n_bits} bits",
                             on_epoch_end=hook, device=device,
                             checkpoint=False)  # state lives in objective, hook and sampler
            except _StopTraining:
                pass
            seconds = time.perf_counter() - t0
            if best["state"] is not None:
                model.load_state_dict(best["state"])
            model.eval()
            return {"loss": losses, "logs": logs, "seconds": seconds, "epochs_run": len(losses),
                    "best_epoch": best["epoch"] if held.size else len(losses)}

        build = self._build(in_dim)
        self.input_shape_ = X.shape[1:]
        if self.use_cache and on_epoch_end is None:
            model, info, loaded = training.cached_model(f"ddh-{self.n_bits}", key, build, train,
                                                        device=device)
        else:
            model = build()
            t0 = time.perf_counter()
            info, loaded = train(model), False
            info["train_seconds"] = time.perf_counter() - t0
            model.eval()
        # weights cached before early stopping existed ran every epoch and kept the last one
        info = {"epochs_run": len(info.get("loss", [])), "best_epoch": len(info.get("loss", [])),
                **info}
        self.model_, self.info_ = model, {**info, "from_cache": loaded}
        self.train_seconds_ = float(info.get("train_seconds", np.nan))
        self.neighbors_seconds_ = float(neighbors_seconds)
        self.fit_seconds_ = self.neighbors_seconds_ + self.train_seconds_
        self.from_cache_ = {"weights": bool(loaded), "neighbors": bool(neighbors_loaded)}
        return self

    def embed(self, X) -> np.ndarray:
        """Hash-layer outputs ``z`` (eq. 11), float32 (N, n_bits)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("DDH is not fitted yet: call fit(X) first")
        X = self._check_inputs(X)
        if X.shape[1:] != self.input_shape_:
            raise ValueError(f"X rows have shape {X.shape[1:]}, but DDH was fitted on "
                             f"{self.input_shape_}")
        if self.finetune == "top":  # the frozen part, then the trained network
            from . import finetune as ft

            x = ft.frozen_outputs(self.model_.trunk, X)
        else:
            x = torch.from_numpy(X)
        return training.predict(self.model_, x, batch_size=1024,
                                device=training.default_device(self.device))

    def encode(self, X) -> np.ndarray:
        """Codes ``b = sgn(z)`` as {0,1} (bit 1 is ``+1``, eq. 4), uint8 (N, n_bits)."""
        return np.ascontiguousarray(self.embed(X) >= 0, dtype=np.uint8)


def factory(**params) -> Callable[[int], DDH]:
    """``bits -> DDH(bits, **params)`` for ``evaluation.run({"ddh": factory(...)}, ...)``.

    The returned callable carries ``supervised``, which tells ``evaluation.run`` (and
    :func:`classify_with_codes`) to pass the training labels to ``fit``. It is
    True when DDH needs them: the supervised variant, and early stopping
    (``holdout > 0``), which scores the held-out training images by their
    labels (the pair labels of the fitted images stay unsupervised). It also
    keeps every hasher it made, in order, in ``made`` (their ``fit_seconds_``
    and ``from_cache_`` are the report's training times).
    """
    DDH(16, **params)  # validates the parameters now rather than inside evaluation.run
    made = []

    def make(bits: int) -> DDH:
        made.append(DDH(bits, **params))
        return made[-1]

    make.supervised = DDH(16, **params).needs_labels
    make.made = made
    return make


class CachedFit:
    """A hasher fitted once per setting and training set, then kept in the cache.

    ``CachedFit(hasher, name, spec)`` fits ``hasher`` on ``fit(X)`` and stores
    the fitted object (pickled) with the wall time the fit took, under
    ``<cache>/fitted``, keyed by ``name``, ``spec`` (everything the fit
    depends on besides the data: method, bits, seed, subsample size), the
    training data's digest and the source of :mod:`hashstudy.baselines` and
    of this module; a later ``fit`` with the same key loads it. Encoding is the
    fitted hasher's. So a seed's rerun of a notebook does not refit the
    shallow hashers, and its report still gives the time the fit took.

    Attributes (after ``fit``)
    ----------
    hasher : the fitted hasher
    fit_seconds_ : float
        Wall time of the fit, measured when it ran.
    from_cache_ : bool
        Whether this ``fit`` loaded it.
    """

    def __init__(self, hasher, name: str, spec: Mapping, use_cache: bool = True):
        self.hasher, self.name, self.spec = hasher, str(name), dict(spec)
        self.use_cache = bool(use_cache)
        self.supervised = bool(getattr(hasher, "supervised", False))

    def _fit(self, X, y):
        t0 = time.perf_counter()
        if self.supervised:
            self.hasher.fit(X, y)
        else:
            self.hasher.fit(X)
        return time.perf_counter() - t0

    def fit(self, X, y=None):
        import inspect
        import pickle

        from . import baselines

        if not self.use_cache:
            self.fit_seconds_, self.from_cache_ = self._fit(X, y), False
            return self
        source = inspect.getsource(baselines) + inspect.getsource(Subsampled) + \
            inspect.getsource(Normalised)
        key = cache.key(self.name, self.spec, cache.array_digest(np.asarray(X)),
                        cache.array_digest(np.asarray(y)) if self.supervised else None,
                        cache.key(source))
        path = config.cache_dir("fitted") / f"{self.name}-{key}.pkl"
        with cache.locked(path):
            if path.exists():
                try:
                    blob = pickle.loads(path.read_bytes())
                    self.hasher, self.fit_seconds_ = blob["hasher"], float(blob["seconds"])
                    self.from_cache_ = True
                    return self
                except Exception as exc:  # damaged or incompatible file: refit
                    print(f"cached hasher {path.name} unusable ({exc}); fitting again")
                    path.unlink(missing_ok=True)
            self.fit_seconds_, self.from_cache_ = self._fit(X, y), False
            with cache.atomic_path(path) as tmp:
                Path(tmp).write_bytes(pickle.dumps({"hasher": self.hasher,
                                                    "seconds": self.fit_seconds_}))
        return self

    def encode(self, X) -> np.ndarray:
        if not hasattr(self, "fit_seconds_"):
            raise RuntimeError("CachedFit is not fitted yet: call fit(X) first")
        return self.hasher.encode(X)


class Subsampled:
    """A hasher fitted on at most ``max_train`` random training rows.

    For the slow shallow baselines (K-means hashing, spherical hashing) on
    tens of thousands of training images; ``encode`` is the wrapped hasher's.

    Parameters
    ----------
    hasher : object with ``fit(X, y=None)`` and ``encode(X)``
    max_train : int
        Largest number of training rows used.
    seed : int
        Seeds the choice of rows.
    """

    def __init__(self, hasher, max_train: int, seed: int = 0):
        self.hasher, self.max_train, self.seed = hasher, _positive_int("max_train", max_train), seed
        self.supervised = bool(getattr(hasher, "supervised", False))

    def fit(self, X, y=None):
        n = len(X)
        rows = np.arange(n)
        if n > self.max_train:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, self.max_train,
                                                                   replace=False))
        if self.supervised:
            self.hasher.fit(X[rows], np.asarray(y)[rows])
        else:
            self.hasher.fit(X[rows])
        self.n_train_ = rows.size
        return self

    def encode(self, X) -> np.ndarray:
        return self.hasher.encode(X)


holdout_split = protocols.holdout_split
"""Alias of :func:`hashstudy.protocols.holdout_split` (the model-selection split moved there)."""


def validation_curve(X, labels, split: protocols.Split, n_bits: int, *,
                     metric: str = "map@1000", **params):
    """Retrieval quality after every training epoch, on a model-selection split.

    Trains ``DDH(n_bits, **params)`` on ``X[split.train]`` (the neighbourhood
    may come from the cache, the weights never do) and, after each epoch, encodes ``split.query`` and ``split.database`` and
    evaluates them with :func:`hashstudy.metrics.evaluate`. Meant for a
    :func:`holdout_split` of the training images, so that the number of
    epochs (or any other parameter) is chosen without the test queries.

    Parameters
    ----------
    X : array_like, shape (N_pool, D)
        Features of the pool ``split`` indexes.
    labels : array_like of int, shape (N_pool,)
        Relevance labels (same class); also the training labels of the
        supervised variant (``params["supervised"]``).
    split : hashstudy.protocols.Split
    n_bits : int
    metric : str
        A key of :func:`hashstudy.metrics.evaluate`.
    **params
        Parameters of :class:`DDH` (``progress`` defaults to False).

    Returns
    -------
    pandas.DataFrame
        Columns ``epoch`` (1-based), ``loss`` (mean training objective of the
        epoch) and ``metric``.
    """
    import pandas as pd

    from . import metrics

    X, labels = np.asarray(X), np.asarray(labels)
    params = {**params, "progress": params.get("progress", False)}
    hasher = DDH(n_bits, **params)
    Xq, Xdb = X[split.query], X[split.database]
    ql, dl = labels[split.query], labels[split.database]

    def evaluate(epoch, h):
        return metrics.evaluate(h.encode(Xq), h.encode(Xdb), ql, dl, [metric])

    y = labels[split.train] if hasher.needs_labels else None
    hasher.fit(X[split.train], y, on_epoch_end=evaluate)
    logs = [log for log in hasher.info_["logs"] if log["epoch"] >= 1]  # epoch 0: the start
    rows = [{"epoch": log["epoch"], "loss": loss, metric: log[metric]}
            for loss, log in zip(hasher.info_["loss"], logs)]
    return pd.DataFrame(rows, columns=["epoch", "loss", metric])


# ---------------------------------------------------------------------------
# object recognition with binary codes (sec. 3.3)


def svm_on_codes(train_codes, y_train, test_codes, y_test, *, C: float = 1.0,
                 seed: int = 0) -> dict:
    """Train a linear SVM on binary codes and classify test codes (sec. 3.3).

    Parameters
    ----------
    train_codes, test_codes : array_like, shape (N, L) and (M, L)
        Codes in {0, 1} (mapped to {-1, +1}) or real-valued features (used as
        they are, for a real-valued reference).
    y_train, y_test : array_like of int
    C : float
        SVM regularisation (``sklearn.svm.LinearSVC``, one-vs-rest, squared
        hinge loss).
    seed : int

    Returns
    -------
    dict
        ``accuracy`` (fraction of test images classified correctly),
        ``train_seconds`` (SVM training wall time), ``n_train``, ``n_test``.
    """
    from sklearn.svm import LinearSVC

    def prepare(a):
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"codes must be 2-D, got shape {a.shape}")
        if a.dtype == np.uint8 or np.isin(a, (0, 1)).all():
            return 2.0 * a.astype(np.float32) - 1.0
        return a.astype(np.float32)

    Xtr, Xte = prepare(train_codes), prepare(test_codes)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if Xtr.shape[1] != Xte.shape[1] or len(Xtr) != len(y_train) or len(Xte) != len(y_test):
        raise ValueError("train/test codes and labels do not match in shape")
    svm = LinearSVC(C=C, dual="auto", random_state=seed, max_iter=2000)
    t0 = time.perf_counter()
    svm.fit(Xtr, y_train)
    seconds = time.perf_counter() - t0
    accuracy = float((svm.predict(Xte) == y_test).mean())
    return {"accuracy": accuracy, "train_seconds": seconds, "n_train": int(len(Xtr)),
            "n_test": int(len(Xte))}


def classify_with_codes(X_train, y_train, X_test, y_test, bits: Sequence[int], *,
                        methods: Mapping[str, Callable[[int], object]], C: float = 1.0,
                        max_svm_train: Optional[int] = None, seed: int = 0,
                        features_reference: bool = True):
    """Object recognition with binary codes (sec. 3.3, Table 6) on given features.

    Every hasher in ``methods`` is fitted on the training features (the
    unsupervised ones never see the labels), training and test images are
    encoded, and a linear SVM (:func:`svm_on_codes`) is trained on the codes
    of the training images and tested on those of the test images.

    Parameters
    ----------
    X_train, X_test : array_like, shape (N, D), (M, D)
        Features of the training and test images.
    y_train, y_test : array_like of int
    bits : sequence of int
        Code lengths (the paper: 64 and 256).
    methods : {name: factory(bits) -> hasher}
        E.g. ``{"ddh": factory(...), "itq": lambda b: baselines.make("itq", b)}``;
        a factory with ``supervised = True`` gets the training labels.
    C : float
        SVM regularisation.
    max_svm_train : int, optional
        Train the SVMs on at most this many random training images (the
        hashers always use all of them).
    seed : int
        Seeds the SVM subsample and the SVMs.
    features_reference : bool
        Add a row for the SVM on the real-valued features (``method =
        "features"``, ``bits`` = the feature length).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, bits, accuracy, train_seconds, n_train, n_test``.
    """
    import pandas as pd

    bits = config.check_bits(list(bits))
    X_train, X_test = np.asarray(X_train), np.asarray(X_test)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    rows = np.arange(len(y_train))
    if max_svm_train is not None and rows.size > max_svm_train:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, int(max_svm_train),
                                                          replace=False))
    out = []
    if features_reference:
        r = svm_on_codes(X_train[rows], y_train[rows], X_test, y_test, C=C, seed=seed)
        out.append({"method": "features", "bits": int(X_train.shape[1]), **r})
    for name, make in methods.items():
        for b in bits:
            hasher = make(b)
            if getattr(make, "supervised", False):
                hasher.fit(X_train, y_train)
            else:
                hasher.fit(X_train)
            r = svm_on_codes(hasher.encode(X_train[rows]), y_train[rows], hasher.encode(X_test),
                             y_test, C=C, seed=seed)
            out.append({"method": name, "bits": b, **r})
    return pd.DataFrame(out, columns=["method", "bits", "accuracy", "train_seconds", "n_train",
                                      "n_test"])


def code_classification(dataset: str, bits: Sequence[int], *,
                        methods: Mapping[str, Callable[[int], object]],
                        backbone: str = "efficientnet_lite0", input_size: int = 128, root=None,
                        C: float = 1.0, max_svm_train: Optional[int] = None, seed: int = 0,
                        features_reference: bool = True, progress: bool = True):
    """Sec. 3.3 on a dataset's train and test splits, from cached backbone features.

    The dataset is any name :func:`hashstudy.data.load` knows: ``"cifar10"``,
    or an ImageFolder registered with :func:`hashstudy.data.register_imagefolder`
    (Oxford-17 Flowers: ``<dir>/{train,test}/<class>/*.jpg``, registered with a
    ``size`` because its images differ in size). Features come from
    :func:`hashstudy.features.dataset_features` (cached); the rest is
    :func:`classify_with_codes`, whose parameters and result these are.
    """
    from . import features

    X_train, y_train = features.dataset_features(dataset, "train", backbone, input_size,
                                                 root=root, progress=progress)
    X_test, y_test = features.dataset_features(dataset, "test", backbone, input_size, root=root,
                                               progress=progress)
    return classify_with_codes(X_train, y_train, X_test, y_test, bits, methods=methods, C=C,
                               max_svm_train=max_svm_train, seed=seed,
                               features_reference=features_reference)


# ---------------------------------------------------------------------------
# toy inputs of notebook 04: eq. 12 on a batch of four, Algorithm 1 on a few points


def loss_breakdown(cases: Mapping[str, object], s, lambda1: float = 15.0,
                   pairwise: str = "squared"):
    """:func:`ddh_loss` of several hash-layer outputs ``z`` on one batch, term by term.

    Parameters
    ----------
    cases : {name: array_like (B, L)}
        Hash-layer outputs of the same ``B`` images, one matrix per case.
    s : array_like (B, B)
        Pair labels in ``{-1, +1}``, symmetric.
    lambda1, pairwise
        As in :func:`ddh_loss`.

    Returns
    -------
    pandas.DataFrame
        One row per case (index: its name): ``pairwise`` (J1 / B), ``quantization``
        (J2 / B), ``lambda1 x quantization`` and ``loss`` ((J1 + lambda1 J2) / B).
    """
    import pandas as pd

    s = torch.as_tensor(np.asarray(s, dtype=np.float64))
    rows = {}
    for name, z in cases.items():
        loss, parts = ddh_loss(torch.as_tensor(np.asarray(z, dtype=np.float64)), s,
                               lambda1=lambda1, pairwise=pairwise)
        rows[name] = {"pairwise": parts["pairwise"], "quantization": parts["quantization"],
                      "lambda1 x quantization": float(lambda1) * parts["quantization"],
                      "loss": float(loss)}
    return pd.DataFrame.from_dict(rows, orient="index")


def neighbourhood_steps(X, k1: int, k2: int):
    """Algorithm 1 step by step on a handful of points (a table to read by eye).

    One row per point ``i``: ``L_i`` (its K1 nearest neighbours by cosine
    similarity, eq. 1), ``overlaps`` (``|L_i ∩ L_j|`` for every ``j``, ``i``
    included), ``united`` (the ``K2`` points whose lists overlap ``L_i`` most,
    ties to the smaller index after ``i`` itself: ``S_2``), ``S row (eq. 3)``
    (the union of their lists without ``i``: ``j`` with ``S_ij = 1``, from
    :func:`hashstudy.graph.expand_neighbors` as printed) and ``S row
    (symmetrised)`` (what training uses: a pair is similar when either point
    lists the other, :func:`neighborhood`). Dense: for a few points only.
    """
    import pandas as pd

    X = np.asarray(X, dtype=np.float64)
    if len(X) > 50:
        raise ValueError(f"neighbourhood_steps is a toy for a few points, got {len(X)}")
    idx, _ = graph.knn(X, k1, metric="cosine")
    n = len(X)
    A = np.zeros((n, n), dtype=int)
    A[np.repeat(np.arange(n), k1), idx.ravel()] = 1
    overlap = A @ A.T
    directed = graph.expand_neighbors(idx, k2=k2, symmetrize="none").toarray()
    sym = graph.expand_neighbors(idx, k2=k2, symmetrize="or").toarray()
    rows = []
    for i in range(n):
        others = [j for j in np.lexsort((np.arange(n), -overlap[i])) if j != i and overlap[i, j] > 0]
        rows.append({"point": i, "L_i": sorted(idx[i].tolist()), "overlaps": overlap[i].tolist(),
                     "united": [i] + [int(j) for j in others[:k2 - 1]],
                     "S row (eq. 3)": np.flatnonzero(directed[i]).tolist(),
                     "S row (symmetrised)": np.flatnonzero(sym[i]).tolist()})
    return pd.DataFrame(rows).set_index("point")


# ---------------------------------------------------------------------------
# notebook 04: the experiment in a few calls

PROFILE_SIZES = {
    # synthetic CIFAR-10 in the mirror layout (30 training, 10 test images per class);
    # Lite0 at 64 px (at 32 px its pooled features of these images are almost all zero)
    "smoke": {"split": {"query_per_class": 5}, "input_size": 64, "epochs": 3, "holdout": 30,
              "fig2_ks": [5, 10, 15], "max_train": None, "max_svm_train": None},
    # the whole retrieval protocol; SpH and KMH fit on 10,000 of the 50,000 training images
    # (all of them take several minutes per code length on one core), and the SVMs of
    # sec. 3.3 train on 10,000 training images (on all 50,000, the SVM on the 1280-D
    # features alone takes minutes), and the reported DDH trains at most 20 epochs, so that
    # three seeds of the whole notebook fit the machine's time
    "quick": {"split": {}, "input_size": None, "epochs": 20, "holdout": None,
              "fig2_ks": [5, 10, 15, 20, 30, 40, 50], "max_train": 10000,
              "max_svm_train": 10000},
    # the whole protocol, every hasher and SVM on every training image, the backbone at its
    # native 224 px (the papers resize to 224-256 px)
    "paper": {"split": {}, "input_size": 224, "epochs": None, "holdout": None,
              "fig2_ks": [5, 10, 15, 20, 30, 40, 50, 75, 100], "max_train": None,
              "max_svm_train": None},
}
"""Everything of notebook 04 that depends on the profile. ``split``: size overrides of
the protocol (none = the protocol as defined); ``input_size``: backbone input side (None =
the notebook's parameter); ``epochs``: cap on the DDH training epochs (None = the
parameter); ``holdout``: training images held out for early stopping (None = the
parameter); ``fig2_ks``: K of the label-precision curve (Fig. 2); ``max_train``: training
images of the slow shallow hashers (SpH, KMH), None = all; ``max_svm_train``: training
images of the SVMs of sec. 3.3, None = all."""

RETRIEVAL_METRICS = ["map@1000", "map_all", "precision@1000", "hd2p"]
"""Metrics of notebook 04's retrieval tables."""


def check_shallow(methods: Sequence[str]) -> list:
    """``methods`` if each is an unsupervised shallow hasher of :mod:`hashstudy.baselines`."""
    from . import baselines

    allowed = [m for m in baselines.METHODS if m not in baselines.SUPERVISED]
    for m in methods:
        config.check_choice("method", m, allowed)
    return list(methods)


def default_backbone(finetune=False) -> str:
    """The paper's ResNet-50 pool5 where its weights exist, else the offline EfficientNet-Lite0;
    always EfficientNet-Lite0 with ``finetune="top"`` (the backbone it fine-tunes)."""
    from . import features

    if finetune_mode(finetune) == "top":
        return TOP_BACKBONE
    return "resnet50" if features.available_backbones()["resnet50"] is True else "efficientnet_lite0"


def model_variants(params: Mapping, itq_init_epochs: int) -> dict:
    """The four models notebook 04 reports per code length, each ``{DDH parameter: value}``.

    ``ddh`` (the reported DDH, ``params``), ``ddh_epoch0`` (its start, no
    training) and, with frozen features, ``ddh_itq_init`` (the hash layer
    directly on the features, started at ITQ's projections, no warm-up, no
    held-out images, ``min(itq_init_epochs, epochs)`` epochs) with its start
    ``ddh_itq_init_epoch0``. Every setting is validated by constructing it.
    """
    params = dict(params)
    itq = {**params, "init": "itq", "hidden": [], "warmup": 0, "holdout": 0,
           "epochs": min(itq_init_epochs, params["epochs"])}
    variants = {"ddh_epoch0": {**params, "epochs": 0}, "ddh": params}
    if finetune_mode(params.get("finetune", False)) == "none":
        variants.update(ddh_itq_init_epoch0={**itq, "epochs": 0}, ddh_itq_init=itq)
    for p in variants.values():
        DDH(16, **p)
    return variants


def variant_settings(variants: Mapping[str, Mapping]):
    """The settings that tell :func:`model_variants`' models apart, one row per model."""
    import pandas as pd

    return pd.DataFrame([{"model": name, "init": p["init"], "hidden": p["hidden"], "warmup": p["warmup"],
                          "epochs (most)": p["epochs"], "held-out images": p["holdout"],
                          "patience": p["patience"] if p["holdout"] else None}
                         for name, p in variants.items()])


def pool_features(dataset: str, backbone: str, input_size: int):
    """Backbone features and labels of ``dataset``'s pool (training split, then test split)."""
    from . import features

    parts = [features.dataset_features(dataset, s, backbone, input_size) for s in ("train", "test")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def pool_inputs(dataset: str, finetune, input_size: int, *, progress: bool = False):
    """What DDH fits on for ``dataset``'s pool (training split, then test split), when it is
    not :func:`pool_features`: None for ``finetune="none"`` (the features), the uint8 images
    for ``"whole"``, Lite0's float16 stage-4 maps at ``input_size`` for ``"top"``
    (:func:`hashstudy.finetune.pool_maps`; computed once and cached on disk)."""
    mode = finetune_mode(finetune)
    if mode == "none":
        return None
    if mode == "whole":
        return protocols.load_pool(dataset)[0]
    from . import finetune as ft

    return ft.pool_maps(dataset, input_size, progress=progress)


def report_label_precision(report, X_train, y_train, ks: Sequence[int], *, k1: int, k2: int,
                           dataset: str):
    """Fig. 2's table (:func:`label_precision_table`) into ``report``: table and metrics.

    Writes the table ``label_precision`` and the keys ``<dataset>/labels/...``:
    the precision of plain K1-NN, of the expansion (symmetrised and as printed)
    with its mean neighbourhood size, and of plain kNN with as many neighbours
    as each reading has (with that K), the construction's seconds and whether
    it was loaded. Returns the table (a DataFrame).
    """
    import pandas as pd

    rows, seconds, loaded = label_precision_table(X_train, y_train, ks, k2=k2, return_seconds=True)
    fig2 = pd.DataFrame(rows)
    report.table("label_precision", fig2)

    def row(method):
        if method.startswith("knn_matched"):  # the matched rows follow their expansion's K1
            position = list(fig2[fig2.method == "expanded" + method[len("knn_matched"):]].k).index(k1)
            return fig2[fig2.method == method].iloc[position]
        return fig2[(fig2.method == method) & (fig2.k == k1)].iloc[0]

    at_k1 = row("knn")
    expanded, matched = row("expanded"), row("knn_matched")
    directed, matched_directed = row("expanded_directed"), row("knn_matched_directed")
    report.add(f"{dataset}/labels/k1nn/precision", at_k1.precision)
    report.add(f"{dataset}/labels/expanded/precision", expanded.precision)
    report.add(f"{dataset}/labels/expanded/mean_neighbors", expanded.mean_neighbors)
    report.add(f"{dataset}/labels/knn_matched/precision", matched.precision)
    report.add(f"{dataset}/labels/knn_matched/k", matched.k)
    report.add(f"{dataset}/labels/expanded_directed/precision", directed.precision)
    report.add(f"{dataset}/labels/expanded_directed/mean_neighbors", directed.mean_neighbors)
    report.add(f"{dataset}/labels/knn_matched_directed/precision", matched_directed.precision)
    report.add(f"{dataset}/labels/knn_matched_directed/k", matched_directed.k)
    report.add(f"{dataset}/labels/seconds", seconds)  # time of the computation, also when loaded
    report.add(f"{dataset}/labels/from_cache", float(loaded))
    return fig2


def shallow_factories(methods: Sequence[str], seed: int, max_train: Optional[int] = None) -> dict:
    """``{method: bits -> CachedFit}`` for shallow hashers, each fitted once per setting.

    ``"itq_normalised"`` is ITQ on DDH's input (:class:`Normalised`); SpH and
    KMH fit on at most ``max_train`` random training images
    (:class:`Subsampled`); PCAH and SH draw nothing at random, so one fit
    serves every seed (their cache key has no seed).
    """
    from . import baselines

    def factory(m):
        def make(b):
            spec = {"method": m, "bits": b, "seed": None if m in ("pcah", "sh") else seed}
            if m == "itq_normalised":
                hasher = Normalised(baselines.make("itq", b, seed=seed))
            else:
                hasher = baselines.make(m, b, seed=seed)
            if m in ("sph", "kmh") and max_train:
                hasher, spec["max_train"] = Subsampled(hasher, max_train, seed), max_train
            return CachedFit(hasher, m, spec)
        return make

    return {m: factory(m) for m in methods}


def wide(table, metric: str, rows: Optional[Sequence[str]] = None):
    """One metric of a long table as methods x ``"<b> bits"`` columns (rows in ``rows``' order)."""
    w = table[table.metric == metric].pivot(index="method", columns="bits", values="value")
    w = w.reindex(list(rows) if rows is not None else list(dict.fromkeys(table[table.metric == metric].method)))
    w.columns = [f"{b} bits" for b in w.columns]
    return w


def run_retrieval(report, X, labels, split, bits: Sequence[int], *, methods: Sequence[str],
                  variants: Mapping[str, Mapping], seed: int, dataset: str,
                  max_train: Optional[int] = None, ddh_inputs=None,
                  metric_keys: Sequence[str] = RETRIEVAL_METRICS):
    """Tables 2 and 4: shallow hashers and DDH's models on one split, into ``report``.

    The shallow ``methods`` plus ``itq_normalised`` (:func:`shallow_factories`)
    run on ``X`` and the DDH models of ``variants`` (:func:`factory`) on
    ``ddh_inputs`` (``X`` unless fine-tuning on images), each through
    :func:`hashstudy.evaluation.run`. Every ``fit_seconds`` is the time the
    fit took when it ran (stored with the cached fit), not the time this run
    took to load it. Adds to ``report``: per DDH model and code length
    ``train_seconds``, ``neighbors_seconds``, ``weights_from_cache`` and
    ``epochs`` (of the kept weights), every metric of the table, the tables
    ``<dataset>_<metric>`` and, in ``report.meta``, what was loaded from the
    cache. Returns the merged :class:`hashstudy.evaluation.Result` (methods in
    run order: shallow, then DDH's models).
    """
    import pandas as pd

    from . import evaluation

    t0 = time.perf_counter()
    shallow = evaluation.run(shallow_factories(list(methods) + ["itq_normalised"], seed, max_train),
                             bits, X, labels, split, seed=seed, metric_keys=metric_keys, progress=False)
    baseline_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    deep = evaluation.run({name: factory(**p) for name, p in variants.items()}, bits,
                          X if ddh_inputs is None else ddh_inputs, labels, split, seed=seed,
                          metric_keys=metric_keys, progress=False)
    ddh_seconds = time.perf_counter() - t0
    for res in (shallow, deep):  # the time the fit took, also when this run loaded it
        for (m, b), h in res.fitted.items():
            at = (res.table.method == m) & (res.table.bits == b) & (res.table.metric == "fit_seconds")
            res.table.loc[at, "value"] = h.fit_seconds_
    report.meta["shallow_from_cache"] = {f"{m}/{b}": h.from_cache_ for (m, b), h in shallow.fitted.items()}
    for (name, b), h in deep.fitted.items():
        report.add(f"{dataset}/{name}/{b}/train_seconds", h.train_seconds_)
        report.add(f"{dataset}/{name}/{b}/neighbors_seconds", h.neighbors_seconds_)
        report.add(f"{dataset}/{name}/{b}/weights_from_cache", float(h.from_cache_["weights"]))
        report.add(f"{dataset}/{name}/{b}/epochs", h.info_["best_epoch"])  # epoch of the kept weights
    report.meta["ddh_from_cache"] = {f"{name}/{b}": h.from_cache_ for (name, b), h in deep.fitted.items()}
    result = evaluation.Result(pd.concat([shallow.table, deep.table], ignore_index=True),
                               {**shallow.codes, **deep.codes}, {**shallow.fitted, **deep.fitted})
    for key, value in result.metrics(dataset).items():
        report.add(key, value)
    order = list(dict.fromkeys(result.table.method))
    for metric in list(metric_keys) + ["fit_seconds"]:
        report.table(f"{dataset}_{metric.replace('@', '_at_')}", wide(result.table, metric, order),
                     index=True)
    loaded = sum(h.from_cache_["weights"] for h in deep.fitted.values())
    print(f"shallow hashers: {baseline_seconds:.0f} s in this run "
          f"({sum(h.from_cache_ for h in shallow.fitted.values())} of {len(shallow.fitted)} loaded from "
          f"the cache); DDH models: {ddh_seconds:.0f} s in this run for {len(deep.fitted)} models "
          f"({loaded} loaded from the cache; the fit_seconds table gives their training times)")
    return result


def training_gain(report, result, bits: Sequence[int], *, dataset: str):
    """Each trained DDH model beside its own start (mAP@1000), into ``report``.

    Columns per code length: ITQ's and ``itq_normalised``'s mAP@1000, then for
    ``ddh`` (start ``ddh_epoch0``) and ``ddh_itq_init`` (start
    ``ddh_itq_init_epoch0``) both values, the ``gain`` (trained minus start)
    and the epoch of the kept weights. Writes the table ``training_gain`` and
    the keys ``<dataset>/<model>/<bits>/gain_over_start``.
    """
    import pandas as pd

    m1000 = wide(result.table, "map@1000")
    rows = []
    for b in bits:
        rec = {"bits": b, **{m: m1000.loc[m, f"{b} bits"] for m in ("itq", "itq_normalised")
                             if m in m1000.index}}
        for trained, start in (("ddh", "ddh_epoch0"), ("ddh_itq_init", "ddh_itq_init_epoch0")):
            if trained not in m1000.index:
                continue
            rec[start], rec[trained] = m1000.loc[start, f"{b} bits"], m1000.loc[trained, f"{b} bits"]
            rec[f"{trained} gain"] = rec[trained] - rec[start]
            rec[f"{trained} epochs"] = result.fitted[(trained, b)].info_["best_epoch"]
            report.add(f"{dataset}/{trained}/{b}/gain_over_start", rec[f"{trained} gain"])
        rows.append(rec)
    gains = pd.DataFrame(rows)
    report.table("training_gain", gains)
    return gains


def validation_curves(result, name: str = "ddh"):
    """Per code length and epoch of DDH model ``name``: quantisation weight, training
    objective, held-out mAP@1000 and whether the epoch's weights were kept."""
    import pandas as pd

    return pd.DataFrame([{"bits": b, "epoch": log["epoch"], "lambda1": log["lambda1"],
                          "loss": (h.info_["loss"][log["epoch"] - 1] if log["epoch"] >= 1 else None),
                          "map@1000": log.get("holdout_map@1000"),
                          "kept": log["epoch"] == h.info_["best_epoch"]}
                         for (m, b), h in result.fitted.items() if m == name
                         for log in h.info_["logs"]])


def report_validation(report, result, X, labels, split, *, validation_bits: int, seed: int,
                      dataset: str):
    """The reported DDH's held-out curves and, at ``validation_bits``, ITQ on the same images.

    Writes the table ``validation_curve`` and the keys
    ``<dataset>/validation/{ddh,ddh_epoch0,itq}/<validation_bits>/map@1000``
    (the kept epoch, the start, and ITQ fitted on the model's fitted images
    and scored on its held-out ones: :func:`hashstudy.protocols.ddh_holdout`);
    without held-out images, a skip note. Returns ``(curves, itq)``: the curves (a DataFrame,
    for :func:`hashstudy.plots.ddh.validation_curve`) and ITQ's held-out mAP@1000 (None
    without a model at ``validation_bits``); ``(None, None)`` without held-out images.
    """
    from . import evaluation

    curves = validation_curves(result)
    if curves.empty or not curves["map@1000"].notna().any():
        report.skip("validation", "no held-out training images (holdout = 0): no early stopping and "
                    "no held-out curve")
        return None, None
    report.table("validation_curve", curves)
    itq_val = None
    main = result.fitted.get(("ddh", validation_bits))
    if main is not None:
        hold = protocols.ddh_holdout(split, main.fit_index_, main.holdout_index_)
        itq = evaluation.run(shallow_factories(["itq"], seed), [validation_bits], X, labels, hold,
                             metric_keys=["map@1000"], progress=False)
        itq_val = float(itq.table[itq.table.metric == "map@1000"].value.iloc[0])
        kept = curves[(curves.bits == validation_bits) & curves.kept].iloc[0]
        start = curves[(curves.bits == validation_bits) & (curves.epoch == 0)].iloc[0]
        report.add(f"{dataset}/validation/ddh/{validation_bits}/map@1000", kept["map@1000"])
        report.add(f"{dataset}/validation/ddh_epoch0/{validation_bits}/map@1000", start["map@1000"])
        report.add(f"{dataset}/validation/itq/{validation_bits}/map@1000", itq_val)
    return curves, itq_val


def run_classification(report, dataset: str, bits: Sequence[int], ddh_params: Mapping, *,
                       backbone: str, input_size: int, seed: int,
                       max_svm_train: Optional[int] = None, oxford17_dir: str = "oxford17",
                       oxford17_epochs: int = 200) -> dict:
    """Sec. 3.3 (Table 6) on ``dataset`` and, where present, Oxford-17, into ``report``.

    DDH (``ddh_params`` with frozen features) and ITQ (:func:`shallow_factories`)
    are fitted on each dataset's training features and a linear SVM is
    trained on their codes (:func:`code_classification`). Oxford-17 Flowers is
    read as an ImageFolder at ``oxford17_dir`` (relative to the data root);
    its few training images train DDH for ``oxford17_epochs`` with no held-out
    images. Writes the tables ``classification_<name>`` and the keys
    ``<name>/classification/<method>/<bits>/{accuracy,svm_seconds}``, or a
    skip note where Oxford-17 is absent. Returns ``{name: DataFrame}``.
    """
    from . import data

    itq = shallow_factories(["itq"], seed)["itq"]
    out = {dataset: code_classification(
        dataset, bits, methods={"ddh": factory(**{**ddh_params, "finetune": False}), "itq": itq},
        backbone=backbone, input_size=input_size, max_svm_train=max_svm_train, seed=seed)}
    data.register_imagefolder("oxford17", oxford17_dir, size=input_size, title="Oxford-17 Flowers")
    if data.available("oxford17", "train") and data.available("oxford17", "test"):
        flowers = factory(**{**ddh_params, "finetune": False, "epochs": oxford17_epochs, "holdout": 0})
        out["oxford17"] = code_classification("oxford17", bits, methods={"ddh": flowers, "itq": itq},
                                              backbone=backbone, input_size=input_size, seed=seed)
        report.source("oxford17", data.load("oxford17", "train").source)
    else:
        report.skip("oxford17", f"Oxford-17 Flowers not found as an ImageFolder at {oxford17_dir!r} "
                    f"under {config.data_root()} (put train/<class>/*.jpg and test/<class>/*.jpg there)")
    for name, frame in out.items():
        report.table(f"classification_{name}", frame)
        for r in frame.itertuples():
            report.add(f"{name}/classification/{r.method}/{r.bits}/accuracy", r.accuracy)
            report.add(f"{name}/classification/{r.method}/{r.bits}/svm_seconds", r.train_seconds)
    return out


def paper_comparison(report, why: Mapping[str, str]):
    """Paper against ours (:func:`hashstudy.reporting.compare_with_paper`) with the source
    table of each row (``table``: "Table 2", ...), written as ``paper_vs_ours``."""
    from .reporting import compare_with_paper

    comparison = compare_with_paper(report.metrics, "04_ddh", why=why)
    comparison.insert(1, "table", comparison.source.str.extract(r"(Table \d+)", expand=False))
    report.table("paper_vs_ours", comparison)
    return comparison


def paper_differences(comparison, *, backbone: str, split, oxford17: bool, finetune=False,
                      stages: int = 1) -> str:
    """Markdown: how far ours is from each group of the paper's numbers, and why
    (``finetune``, ``stages``: DDH's, for the description of its network)."""
    if finetune_mode(finetune) == "top":
        network = (f"{backbone} with only its top {stages} block stage(s) and the layers above them "
                   "trained (on cached stage-4 maps)")
    else:
        network = f"a frozen ImageNet backbone ({backbone}) with only the layers above it trained"
    measured = comparison.dropna(subset=["ours"])
    ddh_rows = measured[measured.key.str.contains("/ddh/") & measured.key.str.endswith("map@1000")]
    parts = []
    if len(ddh_rows):
        parts.append(
            "**DDH.** Ours differs from the paper's DDH by "
            + ", ".join(f"{r.difference:+.3f} at {r.key.split('/')[2]} bits ({r.table})"
                        for r in ddh_rows.itertuples())
            + ". " + ("We meet or beat the printed value everywhere. " if (ddh_rows.difference >= 0).all()
                      else f"Where we fall short, the differences in the method are: {network}, "
                      "instead of CNN-F fine-tuned end to end; 32-px CIFAR images upsampled to the backbone's input; "
                      f"neighbourhoods from {backbone} features instead of ResNet pool5. ")
            + "Both sides' protocols may differ too: the paper does not state its split; ours is "
            f"`{split.name}` ({split.query.size:,} queries, {split.database.size:,} database images).")
    for table, what, reason in (
            ("Table 4", "Shallow hashers on deep features (Table 4)",
             f"{backbone} features are much stronger than CNN-F fc7 for every method, so the baselines "
             "rise with them."),
            ("Table 2", "Shallow hashers on hand-crafted features (Table 2)",
             "this is mostly the gap between ImageNet CNN features and the paper's (unnamed) "
             "hand-crafted descriptors.")):
        rows = measured[(measured.table == table) & ~measured.key.str.contains("/ddh/")]
        if len(rows):
            parts.append(f"**{what}.** Ours are {rows.difference.min():+.3f} to "
                         f"{rows.difference.max():+.3f} from the paper's: {reason}")
    if not oxford17:
        parts.append("**Table 6 (Oxford-17)** was not run: the dataset is not on this machine.")
    return "\n\n".join(parts)


def summary_text(report, comparison, classification: Mapping, *, dataset: str, split, backbone: str,
                 input_size: int, params: Mapping) -> str:
    """Markdown bullets of notebook 04's setting and headline numbers (``summary.md``).

    The protocol and DDH's setting, DDH's mAP@1000 at 16, 32 and 64 bits with
    Table 2's value and the ITQ rows beside it, and the classification
    accuracies; the verdicts are the claims ledger's (:mod:`hashstudy.claims`).
    """
    p = params
    top = (f"Lite0's top {p.get('stages', 1)} block stage(s) fine-tuned on cached stage-4 maps; "
           if finetune_mode(p.get("finetune", False)) == "top" else "")
    lines = [f"- **Protocol**: {split}; features {backbone} at {input_size} px; DDH: {top}hash layer from a "
             f"{p['init']} start, lambda1 warmed up over {p['warmup']} epochs, at most {p['epochs']} epochs "
             f"({p['optimizer']}, lr {p['lr']}, lambda1 {p['lambda1']}, K1 {p['k1']}, K2 {p['k2']}"
             + (f"), early stopping on {p['holdout']} held-out training images (patience {p['patience']})"
                if p["holdout"] else ")")
             + (", supervised pair labels" if p["supervised"] else "") + "."]
    if any(f"{dataset}/ddh/{b}/map@1000" in report.metrics for b in (16, 32, 64)):
        lines.append("- **Retrieval (Tables 2 and 4)**: mAP@1000 on the test queries")
    for b in (16, 32, 64):
        key = f"{dataset}/ddh/{b}/map@1000"
        if key in report.metrics:
            paper_rows = comparison[(comparison.key == key) & (comparison.table == "Table 2")]
            paper_value = f" (paper: {paper_rows.paper.iloc[0]:.3f})" if len(paper_rows) else ""
            others = "; ".join(f"{name}: {report.metrics[f'{dataset}/{name}/{b}/map@1000']:.3f}"
                               for name in ("ddh_itq_init", "itq", "itq_normalised")
                               if f"{dataset}/{name}/{b}/map@1000" in report.metrics)
            lines.append(f"  - DDH mAP@1000 at {b} bits: **{report.metrics[key]:.3f}**{paper_value}; "
                         f"{others}.")
    for name, frame in classification.items():
        acc = frame.set_index(["method", "bits"]).accuracy
        lines.append(f"- **Classification with codes ({name})**: " + "; ".join(
            f"{m} {b} bits {acc[(m, b)]:.3f}" for m, b in acc.index) + ".")
    return "\n".join(lines)
