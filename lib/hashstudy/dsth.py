"""DSTH: deep self-taught hashing, conference version (Zhou et al., ACM MM 2015).

The method has two stages (sec. 2, Fig. 1):

Unsupervised stage: hash labels (sec. 2.1, eq. 1-7)
    1. A three-stage CNN (convolution + subsampling, :class:`hashstudy.cnnh.ConvNet`
       with ReLU hidden layer) is trained with the class labels of the training
       images (sec. 3.1: 30,000 random MNIST training images) by softmax
       cross-entropy.
    2. Its fully connected features ``x_i`` feed a kNN graph with cosine
       weights (eq. 1, :func:`hashstudy.graph.knn_graph`, ``k = 25`` from
       sec. 3), the Laplacian ``L = D - W`` (eq. 2-4) and the generalised
       eigenproblem ``L v = lambda D v`` (eq. 5-6,
       :func:`hashstudy.graph.laplacian_eigenmap`, sparse solver, trivial
       eigenvector dropped, the ``t`` smallest non-trivial ones kept).
    3. Each column is thresholded into a bit (eq. 7,
       :func:`hashstudy.graph.binarize`). The paper calls the threshold
       ``epsilon`` and does not give its value. The default, ``"ncut"``, puts
       it per bit at the splitting point of minimum normalised cut of the same
       graph (Shi and Malik 2000, :func:`hashstudy.graph.ncut_thresholds`).
       The alternatives are zero (the sign: for Laplacian eigenvectors,
       ``v^T D 1 = 0`` makes zero the degree-weighted mean), the per-bit mean
       and the per-bit median. These bits are the *hash labels*.

       Why not the sign: on features that separate the classes, the graph is
       close to one cluster per class, and all but the first few eigenvectors
       live inside one class, with values near zero on every other image. The
       sign (or the mean, or the median) of those near-zero values is close
       to random, so such a bit adds noise to the distance between two images
       of any other class. The normalised-cut split cuts the eigenvector
       inside its class and gives every other image the same bit.

       The paper's own reading: the normalised cut is this study's choice,
       not the paper's. The thresholds the paper's text admits are
       :data:`PAPER_THRESHOLDS`, and of them it supports the sign
       (``"zero"``) best: eq. 7 compares every bit with one scalar
       ``epsilon``, "the default threshold" (the journal version, which
       moves to the per-bit mean, writes a per-bit ``epsilon^p``, journal
       eq. 13-14), and eq. 5 constrains ``Y~^T D 1 = 0``, which centres
       every relaxed bit at zero, the threshold of spectral hashing that
       sec. 2.1 follows ("As in SpH"). :func:`run_experiment` evaluates
       that reading beside the default, as the method ``"dsth_paper"``
       (its ``paper_threshold`` argument).
Supervised stage: hash function (sec. 2.2, eq. 8)
    A CNN followed by a single-hidden-layer MLP with sigmoid hidden units,
    ``f(x) = b2 + W2 sigmoid(b1 + W1 cnn(x))`` (eq. 8), is trained to output
    the hash labels (per-bit sigmoid cross-entropy in place of the
    perceptron rule of eq. 9-10). Sec. 3.1 says the hash labels "are used to
    tune the CNN models and learn MLP mapping matrix", so by default its
    convolution stages start from the trained label-stage CNN
    (``finetune=True``). Out-of-sample codes: ``bit_p = [f_p(x) >= 0]``.

Ablation without the supervised stage (``supervised_stage=False``)
    The hash labels are used directly for the training images, and a new
    image gets the Laplacian-eigenmap embedding extended by its ``k`` nearest
    training images in the label-stage CNN's feature space, weighted as the
    graph (eq. 1): ``y(x) = sum_j w_j y_j / sum_j w_j``, thresholded with the
    training thresholds (a Nystrom-style extension of the eigenmap).

Retrieval experiments (sec. 3) run through :func:`run_experiment`:
queries drawn from the test split (the paper's 10 random images per class,
and a 1,000-query protocol), the other test images as the database
(:func:`test_query_split`), every method trained on the same training
images; on STL-10 the training images are a random sample of the
unlabeled split and the labelled training split feeds the label-stage CNN
and CNNH, which need class labels.

Codes are ``uint8`` ``{0, 1}`` matrices (1 = the ``+1`` of eq. 7).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import scipy.sparse.csgraph
import torch
from torch import nn

from . import baselines as shallow
from . import cache, config, data, evaluation, graph, hamming, metrics, protocols, training
from .cnnh import CNNH, ConvNet, _float, as_image_tensor

__all__ = ["DSTH", "THRESHOLDS", "PAPER_THRESHOLDS", "PAPER_METHOD", "CURVES", "RECALL_LEVELS",
           "METRIC_KEYS", "test_query_split", "eigenvector_localisation", "threshold_comparison",
           "Experiment", "run_experiment", "label_stage_summary", "above_until",
           "curve_precision_at_recall", "PROFILE_SIZES", "method_params", "report_experiment",
           "report_label_stage", "localisation_text", "report_recall_tables", "report_leads",
           "paper_vs_ours", "summary_note"]

THRESHOLDS = graph.BINARIZE_RULES
PAPER_THRESHOLDS = ("zero", "mean", "median")
"""Readings of eq. 7's threshold that the paper's text admits: one scalar "default
threshold" ``epsilon`` for every bit (``"zero"``, the sign: the paper's reading in this
study, see the module docstring), or a per-bit centre (``"mean"``, the journal version's
eq. 14; ``"median"``, STH's balanced bits). The normalised cut (``"ncut"``) is the
study's own choice, not one of them."""
PAPER_METHOD = "dsth_paper"
"""Method name (metric keys ``<prefix>/dsth_paper/<bits>/...``) under which
:func:`run_experiment` reports DSTH with the paper's threshold reading; ``"dsth"`` keeps
the ``threshold`` of its ``dsth`` arguments (the study's default, ``"ncut"``)."""
CURVES = ("ranking", "radius")
"""Where :meth:`Experiment.leads` reads the precision at each recall level: the Hamming
ranking (:meth:`Experiment.recall_table`) or the Hamming-radius PR curve of the figures
(:meth:`Experiment.radius_recall_table`, the kind of curve of the paper's Fig. 2)."""
RECALL_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 11))
"""Recall levels 0.1, 0.2, ..., 1.0 of the precision-at-recall table."""
METRIC_KEYS = ("map_all", "map@1000") + tuple(f"precision@recall{v}" for v in RECALL_LEVELS)
"""Metrics of :func:`run_experiment` (see :func:`hashstudy.metrics.evaluate`)."""


def _ce(model, x, y):
    return nn.functional.cross_entropy(model(_float(x)), y)


def _bce(model, x, target):
    return nn.functional.binary_cross_entropy_with_logits(model(_float(x)), target)


def _class_labels(y, n: int, what: str) -> np.ndarray:
    y = np.asarray(y) if y is not None else None
    if y is None or y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"the label-stage CNN needs {n} integer class labels for {what} "
                         f"(sec. 2.1 trains it 'with class labels'); got "
                         f"{None if y is None else (y.shape, str(y.dtype))}. For unlabelled "
                         "training images pass labelled=(images, labels).")
    if (y < 0).any():
        raise ValueError(f"{what} include unlabelled images (label -1); the label-stage CNN "
                         "needs class labels: pass labelled=(images, labels)")
    if np.unique(y).size < 2:
        raise ValueError("the label-stage CNN needs at least two classes")
    return y.astype(np.int64)


class DSTH:
    """Deep self-taught hashing (conference version) as a hasher.

    Parameters
    ----------
    n_bits : int
        Code length ``t`` (64 on MNIST, 48 on STL-10 in the paper).
    input_shape : (H, W, C)
        Image size; pixel rows given to ``fit``/``encode`` are reshaped to it.
    k : int
        Neighbours of the kNN graph (eq. 1); the paper's ``k = 25`` (sec. 3).
    threshold : {"ncut", "zero", "mean", "median"}
        Binarisation of the eigenvectors (eq. 7), whose threshold the paper
        leaves open. ``"ncut"`` (default): per bit, the splitting point of
        minimum normalised cut of the kNN graph (Shi and Malik 2000,
        :func:`hashstudy.graph.ncut_thresholds`); ``"zero"``: the sign;
        ``"mean"`` / ``"median"``: per-bit mean / median. The paper's text
        supports the sign best (:data:`PAPER_THRESHOLDS`, module docstring);
        the normalised cut is this study's choice. Any other value raises a
        ``ValueError`` naming the allowed ones.
    widths, hidden : CNN convolution widths and fully connected width, shared
        by both stages (see :class:`hashstudy.cnnh.ConvNet`).
    feature_epochs, hash_epochs : int
        Training epochs of the label-stage CNN and of the hash-function network.
    batch_size, lr : Adam mini-batch training of both networks.
    supervised_stage : bool
        Learn the hash function (default); ``False`` is the ablation that uses
        the hash labels directly with the kNN out-of-sample extension.
    finetune : bool
        Start the hash-function network's convolutions from the label-stage CNN.
    labelled : (images, labels), optional
        Class-labelled images for the label-stage CNN when the training images
        passed to ``fit`` have no labels (STL-10's unlabeled split); by
        default the CNN trains on ``fit``'s images and labels.
    seed : int
        Seeds the networks' weights, batch orders and the eigensolver.
    progress : bool
        Show training progress bars.
    device : str, optional
        Where the networks train and run (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Weights
        trained on a GPU are cached apart from the CPU's.

    Attributes (after ``fit``)
    ----------
    hash_labels_ : uint8 (n, t)
        Binarised eigenvectors of the training images (eq. 7).
    embedding_ : float64 (n, t)
        The eigenvectors (eq. 6), D-orthonormal.
    eigenvalues_ : float64 (t,)
    thresholds_ : float64 (t,)
    graph_components_ : int
        Connected components of the kNN graph (1 = connected).
    neighbors_ : int64 (n, k)
        Each training image's kNN in the CNN feature space.
    graph_ : scipy.sparse.csr_matrix (n, n)
        The kNN graph ``W`` of eq. 1.
    label_cnn_, hash_net_ : nn.Module (``hash_net_`` is None without the supervised stage)
    label_cnn_info_, hash_net_info_ : dict
        Training histories.
    label_fit_ : float
        Fraction of training hash-label bits the learned hash function
        reproduces (1.0 without the supervised stage).
    """

    supervised = True

    def __init__(self, n_bits: int, input_shape: Sequence[int], *, k: int = 25,
                 threshold: str = "ncut", widths: Sequence[int] = (32, 64, 128),
                 hidden: int = 500, feature_epochs: int = 5, hash_epochs: int = 10,
                 batch_size: int = 64, lr: float = 1e-3, supervised_stage: bool = True,
                 finetune: bool = True, labelled=None, seed: int = 0, progress: bool = True,
                 device: Optional[str] = None):
        self.n_bits = config.check_bits(n_bits)[0]
        self.input_shape = tuple(int(v) for v in input_shape)
        config.check_choice("threshold", threshold, THRESHOLDS)
        if isinstance(k, bool) or int(k) < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        for name, value in (("feature_epochs", feature_epochs), ("hash_epochs", hash_epochs),
                            ("batch_size", batch_size), ("hidden", hidden)):
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.k, self.threshold = int(k), threshold
        self.widths, self.hidden = tuple(int(v) for v in widths), int(hidden)
        self.feature_epochs, self.hash_epochs = int(feature_epochs), int(hash_epochs)
        self.batch_size, self.lr = int(batch_size), float(lr)
        self.supervised_stage, self.finetune = bool(supervised_stage), bool(finetune)
        self.labelled = labelled
        self.seed, self.progress = int(seed), bool(progress)
        if device is not None:
            training.default_device(device)  # an unknown device fails here
        self.device = device
        ConvNet(self.input_shape, 2, self.widths, self.hidden)  # validates the architecture

    def __repr__(self) -> str:
        return (f"DSTH(n_bits={self.n_bits}, input_shape={self.input_shape}, k={self.k}, "
                f"threshold={self.threshold!r}, widths={self.widths}, hidden={self.hidden}, "
                f"supervised_stage={self.supervised_stage})")

    def _device(self):
        return training.default_device(self.device)

    # -- stages ---------------------------------------------------------------
    def _label_cnn(self, images: torch.Tensor, labels: np.ndarray):
        n_classes = int(labels.max()) + 1
        key = dict(data=cache.array_digest(images, labels), shape=self.input_shape, widths=self.widths,
                   hidden=self.hidden, classes=n_classes, epochs=self.feature_epochs,
                   batch_size=self.batch_size, lr=self.lr, seed=self.seed)

        def build():
            torch.manual_seed(self.seed)
            return ConvNet(self.input_shape, n_classes, self.widths, self.hidden, "relu")

        def train(model):
            hist = training.fit(model, (images, torch.from_numpy(labels)), _ce,
                                epochs=self.feature_epochs, batch_size=self.batch_size,
                                lr=self.lr, seed=self.seed, progress=self.progress,
                                desc="DSTH label-stage CNN", device=self._device())
            return {"loss": hist.loss, "seconds": hist.seconds}

        model, info, _ = training.cached_model("dsth-label-cnn", key, build, train,
                                               device=self._device())
        return model, info, key

    def _features(self, images: torch.Tensor) -> np.ndarray:
        return training.predict(self.label_cnn_, images, fn=lambda m, b: m.features(_float(b)),
                                device=self._device())

    def _eigenmap(self, features: np.ndarray, key: dict):
        parts = dict(cnn=key, data=cache.array_digest(features), k=self.k, n_bits=self.n_bits,
                     seed=self.seed, arrays=("Y", "eigenvalues", "neighbors", "similarities"))
        path = config.cache_dir("dsth") / f"eigenmap-{cache.key(parts)}.npz"

        def compute():
            idx, val = graph.knn(features, self.k, metric="cosine")
            W = graph.knn_graph(features, self.k, weight="cosine", neighbors=(idx, val))
            n_comp, _ = scipy.sparse.csgraph.connected_components(W, directed=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", graph.DisconnectedGraphWarning)
                Y, ev = graph.laplacian_eigenmap(W, self.n_bits, seed=self.seed)
            return {"Y": Y, "eigenvalues": ev, "neighbors": idx, "similarities": val,
                    "components": np.array(n_comp)}

        return cache.cached_arrays(path, compute)

    def _hash_net(self, images: torch.Tensor, bits: np.ndarray, key: dict):
        parts = dict(cnn=key, data=cache.array_digest(images, bits), finetune=self.finetune,
                     epochs=self.hash_epochs, batch_size=self.batch_size, lr=self.lr,
                     seed=self.seed)

        def build():
            torch.manual_seed(self.seed)
            net = ConvNet(self.input_shape, self.n_bits, self.widths, self.hidden, "sigmoid")
            if self.finetune:
                net.conv.load_state_dict(self.label_cnn_.conv.state_dict())
            return net

        def train(model):
            hist = training.fit(model, (images, torch.from_numpy(bits.astype(np.float32))),
                                _bce, epochs=self.hash_epochs, batch_size=self.batch_size,
                                lr=self.lr, seed=self.seed, progress=self.progress,
                                desc="DSTH hash function", device=self._device())
            return {"loss": hist.loss, "seconds": hist.seconds}

        model, info, _ = training.cached_model("dsth-hash-net", parts, build, train,
                                               device=self._device())
        return model, info

    # -- hasher interface --------------------------------------------------------
    def fit(self, X, y=None) -> "DSTH":
        """Learn hash labels for ``X`` (unsupervised stage) and the hash function.

        Parameters
        ----------
        X : uint8 images (N, H, W, C) or pixel rows (N, H*W*C) in [0, 1]
            The training images: the graph's nodes and the hash function's
            training set.
        y : int array (N,), optional
            Class labels of ``X`` for the label-stage CNN; not needed when
            ``labelled`` was given.
        """
        images = as_image_tensor(X, self.input_shape)
        n = images.shape[0]
        if n <= max(self.k, self.n_bits + 1):
            raise ValueError(f"DSTH needs more training images than k={self.k} and "
                             f"n_bits+1={self.n_bits + 1}; got {n}")
        if self.labelled is not None:
            cnn_images = as_image_tensor(self.labelled[0], self.input_shape)
            cnn_labels = _class_labels(self.labelled[1], cnn_images.shape[0], "labelled images")
        else:
            cnn_images, cnn_labels = images, _class_labels(y, n, "the training images")
        self.label_cnn_, self.label_cnn_info_, key = self._label_cnn(cnn_images, cnn_labels)
        features = self._features(images)
        eig = self._eigenmap(features, key)
        self.embedding_, self.eigenvalues_ = eig["Y"], eig["eigenvalues"]
        self.neighbors_, self.graph_components_ = eig["neighbors"], int(eig["components"])
        # the graph of eq. 1 again, from the cached neighbour lists (for the ncut rule)
        self.graph_ = graph.knn_graph(features, self.k, weight="cosine",
                                      neighbors=(eig["neighbors"], eig["similarities"]))
        self.hash_labels_, self.thresholds_ = graph.binarize(self.embedding_, self.threshold,
                                                             W=self.graph_)
        if self.supervised_stage:
            self.hash_net_, self.hash_net_info_ = self._hash_net(images, self.hash_labels_, key)
            self.label_fit_ = float((self._net_codes(images) == self.hash_labels_).mean())
        else:
            self.hash_net_, self.hash_net_info_ = None, {}
            self.train_features_ = features
            self.label_fit_ = 1.0
        return self

    def _net_codes(self, images: torch.Tensor) -> np.ndarray:
        out = training.predict(self.hash_net_, images, fn=lambda m, b: m(_float(b)),
                               device=self._device())
        return np.ascontiguousarray(out.reshape(len(images), self.n_bits) >= 0, dtype=np.uint8)

    def encode(self, X) -> np.ndarray:
        """Codes of new images, uint8 {0, 1} of shape ``(N, n_bits)``.

        With the supervised stage: the thresholded hash-function outputs.
        Without: the kNN extension of the eigenmap (see the module docstring).
        """
        if not hasattr(self, "hash_labels_"):
            raise RuntimeError("DSTH is not fitted yet: call fit(images, labels) first")
        images = as_image_tensor(X, self.input_shape)
        if self.supervised_stage:
            return self._net_codes(images)
        k = min(self.k, len(self.train_features_))
        idx, sim = graph.knn_query(self._features(images), self.train_features_, k)
        w = np.clip(sim.astype(np.float64), 0.0, None)
        w[w.sum(axis=1) == 0] = 1.0
        Y = np.einsum("nk,nkt->nt", w, self.embedding_[idx]) / w.sum(axis=1, keepdims=True)
        return graph.binarize(Y, thresholds=self.thresholds_)[0]


# ---------------------------------------------------------------------------
# protocols: queries from the test split, the rest of the test split as database
# (the protocol now lives in hashstudy.protocols; the old name stays importable)

test_query_split = protocols.test_query_split
_base_protocol = protocols._test_query_base


# ---------------------------------------------------------------------------
# experiments


class _Rows:
    """A hasher fed with rows of its own input array, selected by pool index.

    :func:`hashstudy.evaluation.run` passes ``X[split.train]``; the
    experiments pass pool indices as ``X`` (shape (N, 1)), so each method can
    see its own representation of the same images (full-resolution images
    for the deep methods, pixel vectors for the shallow ones).
    """

    def __init__(self, hasher, inputs, fixed_training=None):
        self.hasher, self.inputs, self.fixed_training = hasher, inputs, fixed_training
        self._fitted_on = None

    def fit(self, index, y=None):
        # protocols that share their training images share the fitted hasher
        seen = cache.array_digest(np.asarray(index), np.asarray(y) if y is not None else np.zeros(0))
        if seen == self._fitted_on:
            return self
        self._fitted_on = seen
        if self.fixed_training is not None:  # e.g. CNNH on STL-10's labelled split
            self.hasher.fit(*self.fixed_training)
        elif getattr(self.hasher, "supervised", False):
            self.hasher.fit(self.inputs(np.asarray(index).ravel()), y)
        else:
            self.hasher.fit(self.inputs(np.asarray(index).ravel()))
        return self

    def encode(self, index):
        return self.hasher.encode(self.inputs(np.asarray(index).ravel()))


def _pixel_rows(images: np.ndarray, side: Optional[int]):
    """Pixel vectors in [0, 1], block-averaged to ``side x side`` when given."""
    h = images.shape[1]
    if side is None or side == h:
        return lambda idx: evaluation.as_vectors(images[idx])
    if h % side or images.shape[2] % side:
        raise ValueError(f"pixel_side={side} must divide the image size {images.shape[1:3]}")
    f = h // side

    def rows(idx):
        x = images[idx].astype(np.float32) / 255.0
        n, hh, ww, c = x.shape
        return x.reshape(n, hh // f, f, ww // f, f, c).mean(axis=(2, 4)).reshape(n, -1)

    return rows


@dataclass
class Experiment:
    """The outcome of :func:`run_experiment`.

    Attributes
    ----------
    dataset : str
    n_bits : int
    splits : {prefix: Split}
        One protocol per metric-key prefix (e.g. ``"mnist"``, ``"mnist_q1k"``).
    table : pandas.DataFrame
        Long format: ``prefix, method, bits, metric, value``.
    codes : {prefix: {(method, bits): hashstudy.evaluation.Codes}}
    labels : int64 (N_pool,)
        Pool labels (``-1`` for unlabelled training images).
    images : uint8 (N_pool, H, W, C)
        Pool images (for retrieval figures).
    hashers : {method: fitted hasher}
        The deep methods as last fitted (for diagnostics of their stages):
        ``"dsth"``, ``"dsth_paper"`` (with ``paper_threshold``), ``"cnnh"``.
    sources : {name: str}
        Where the data came from.
    """

    dataset: str
    n_bits: int
    splits: dict
    table: object
    codes: dict
    labels: np.ndarray = field(repr=False)
    images: np.ndarray = field(repr=False)
    hashers: dict = field(default_factory=dict, repr=False)
    sources: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat ``{"<prefix>/<method>/<bits>/<metric>": value}`` for the report."""
        out = {}
        for prefix in self.splits:
            out.update(evaluation.long_to_metrics(self.table[self.table.prefix == prefix],
                                                  prefix))
        return out

    def recall_table(self, prefix: str):
        """Precision at recall 0.1 ... 1.0 and mAP@all, one row per method (DataFrame)."""
        t = self.table[(self.table.prefix == prefix) & (self.table.bits == self.n_bits)]
        wide = t.pivot_table(index="method", columns="metric", values="value", sort=False)
        cols = [f"precision@recall{v}" for v in RECALL_LEVELS] + ["map_all"]
        wide = wide[[c for c in cols if c in wide.columns]]
        wide.columns = [c.replace("precision@recall", "P@R=") for c in wide.columns]
        return wide

    def radius_recall_table(self, prefix: str, levels: Sequence[float] = RECALL_LEVELS):
        """Precision at recall 0.1 ... 1.0 read off the Hamming-radius PR curves (DataFrame).

        The curves are those of :meth:`pr_curves` (the figure's, the kind of
        curve of the paper's Fig. 2), read by :func:`curve_precision_at_recall`;
        one row per method, columns ``P@R=<level>`` as :meth:`recall_table`.
        """
        import pandas as pd

        rows = {m: curve_precision_at_recall(rec, prec, levels)
                for m, (rec, prec) in self.pr_curves(prefix).items()}
        return pd.DataFrame.from_dict(rows, orient="index",
                                      columns=[f"P@R={v}" for v in levels])

    def leads(self, prefix: str, method: str = "dsth", rivals: Sequence[str] = ("cnnh",),
              baselines: Sequence[str] = ("sh", "sph", "sth", "itq"),
              curve: str = "ranking") -> dict[str, float]:
        """How far along the recall axis ``method`` stays ahead (see :func:`above_until`).

        Parameters
        ----------
        curve : {"ranking", "radius"}
            Read the precision at each recall level from the Hamming ranking
            (:meth:`recall_table`, default) or from the Hamming-radius PR curve
            (:meth:`radius_recall_table`).

        Returns
        -------
        dict
            ``{"above_<rival>_until_recall": level}`` for each rival and each
            baseline, and ``"above_baselines_until_recall"``: the smallest of
            the baselines' levels. With ``curve="radius"`` every key starts
            with ``radius_`` (``"radius_above_cnnh_until_recall"``), so both
            readings can sit side by side in one report.
        """
        config.check_choice("curve", curve, CURVES)
        table = self.recall_table(prefix) if curve == "ranking" else \
            self.radius_recall_table(prefix)
        for m in (method, *rivals, *baselines):
            if m not in table.index:
                raise ValueError(f"method {m!r} was not run on {prefix!r}; run: "
                                 f"{', '.join(map(repr, table.index))}")
        out = {f"above_{r}_until_recall": above_until(table, method, r)
               for r in (*rivals, *baselines)}
        if baselines:
            out["above_baselines_until_recall"] = min(
                out[f"above_{b}_until_recall"] for b in baselines)
        if curve == "radius":
            out = {f"radius_{k}": v for k, v in out.items()}
        return out

    def top_results(self, prefix: str, method: str = "dsth", n_queries: int = 6, k: int = 10):
        """Images of the first ``n_queries`` queries (one per class where possible) and their
        top ``k`` database items by Hamming ranking, for :func:`hashstudy.plots.retrieval_grid`.

        Returns ``(query_images, result_images, relevant)`` shaped ``(Q, H, W, C)``,
        ``(Q, k, H, W, C)`` and ``(Q, k)`` bool.
        """
        split = self.splits[prefix]
        c = self.codes[prefix][(method, self.n_bits)]
        ql = self.labels[split.query]
        _, first = np.unique(ql, return_index=True)
        pick = np.sort(first)[:n_queries]
        idx, _ = hamming.topk(c.query[pick], c.database, k)
        results = split.database[idx]
        relevant = self.labels[results] == ql[pick][:, None]
        return self.images[split.query[pick]], self.images[results], relevant

    def pr_curves(self, prefix: str) -> dict:
        """``{method: (recall, precision)}`` Hamming-radius PR curves (for the figure)."""
        split = self.splits[prefix]
        return evaluation.curves_by_method(self.codes[prefix], self.labels[split.query],
                                           self.labels[split.database], self.n_bits, "pr")


def label_stage_summary(exp: Experiment, pixel_knn: bool = True, method: str = "dsth") -> dict:
    """What DSTH's unsupervised stage produced on the training images (sec. 2.1).

    ``method`` names the fitted DSTH in ``exp.hashers`` (``"dsth"``, or
    :data:`PAPER_METHOD` for the paper's threshold reading).

    Keys: ``graph_components`` (of the kNN graph; 1 = connected),
    ``knn_label_precision_cnn`` (fraction of the ``k`` graph neighbours that
    share the image's class, CNN features; only with labelled training
    images), ``knn_label_precision_pixels`` (the same in pixel space, the
    graph STH builds), ``hash_label_balance`` (mean fraction of ones per bit),
    ``hash_labels_reproduced`` (fraction of training hash-label bits the hash
    function outputs), ``eigenvalue_min`` / ``eigenvalue_max``.
    """
    dsths = [m for m, h in exp.hashers.items() if isinstance(h, DSTH)]
    config.check_choice("method", method, dsths)
    h = exp.hashers[method]
    split = next(iter(exp.splits.values()))
    y = exp.labels[split.train]
    out = {"graph_components": h.graph_components_,
           "hash_label_balance": float(h.hash_labels_.mean()),
           "hash_labels_reproduced": h.label_fit_,
           "eigenvalue_min": float(h.eigenvalues_[0]),
           "eigenvalue_max": float(h.eigenvalues_[-1])}
    if (y >= 0).all():
        out["knn_label_precision_cnn"] = graph.label_precision(h.neighbors_, y)
        if pixel_knn:
            pixels = evaluation.as_vectors(exp.images[split.train])
            idx, _ = graph.knn(pixels, h.k, metric="cosine")
            out["knn_label_precision_pixels"] = graph.label_precision(idx, y)
    return out


def _embedding_and_labels(hasher: DSTH, labels):
    """The fitted eigenmap (eq. 6) and the training labels of its rows, checked."""
    Y = getattr(hasher, "embedding_", None)
    if Y is None:
        raise RuntimeError("DSTH is not fitted yet: call fit(images, labels) first")
    labels = np.asarray(labels)
    if labels.shape != (Y.shape[0],):
        raise ValueError(f"labels must have shape ({Y.shape[0]},) (one per training image), "
                         f"got {labels.shape}")
    return Y, labels


def eigenvector_localisation(hasher: DSTH, labels) -> np.ndarray:
    """Per bit, the share of the eigenvector's squared mass in its dominant class.

    1.0: the eigenvector (eq. 6) lives in one class and is zero on every other
    image; about ``1 / n_classes``: it is spread over all classes.

    Parameters
    ----------
    hasher : fitted :class:`DSTH`
    labels : int array (n,)
        Class labels of the training images, in the rows of ``embedding_``.

    Returns
    -------
    ndarray of float64, shape (n_bits,)
    """
    Y, labels = _embedding_and_labels(hasher, labels)
    mass = Y ** 2
    per_class = np.stack([mass[labels == c].sum(0) for c in np.unique(labels)])
    return per_class.max(0) / mass.sum(0)


def threshold_comparison(hasher: DSTH, labels, rules: Sequence[str] = THRESHOLDS,
                         n_query: int = 1000, seed: int = 0,
                         levels: Sequence[float] = RECALL_LEVELS):
    """Retrieval quality of the hash labels under each threshold rule of eq. 7.

    The eigenvectors of the fitted hasher are binarised with every rule
    (:func:`hashstudy.graph.binarize`, ``"ncut"`` on the hasher's graph) and
    the training images' hash labels are searched with ``n_query`` random
    training images as queries (each query's own code included in the
    database). No network is trained: this isolates the unsupervised stage.

    Returns
    -------
    pandas.DataFrame
        One row per rule: ``map_all``, ``P@R=<level>`` per level and
        ``balance`` (mean share of ones per bit).
    """
    import pandas as pd

    Y, labels = _embedding_and_labels(hasher, labels)
    for rule in rules:
        config.check_choice("threshold", rule, THRESHOLDS)
    n = Y.shape[0]
    q = np.sort(np.random.default_rng(seed).choice(n, min(int(n_query), n), replace=False))
    rows = {}
    for rule in rules:
        bits, _ = graph.binarize(Y, rule, W=hasher.graph_)
        p_at_r = metrics.precision_at_recall(bits[q], bits, labels[q], labels, levels=levels)
        rows[rule] = {"map_all": metrics.mean_average_precision(bits[q], bits, labels[q], labels,
                                                                topk=None),
                      **{f"P@R={lv}": v for lv, v in zip(levels, p_at_r)},
                      "balance": float(bits.mean())}
    return pd.DataFrame.from_dict(rows, orient="index")


def above_until(table, method: str, rival: str) -> float:
    """Largest recall level up to which ``method``'s precision is >= ``rival``'s at every level.

    ``table`` is :meth:`Experiment.recall_table` output. Returns 0.0 when
    ``method`` is already below at recall 0.1, and 1.0 when it is never below.
    """
    last = 0.0
    for level in RECALL_LEVELS:
        col = f"P@R={level}"
        if table.loc[method, col] < table.loc[rival, col]:
            break
        last = level
    return last


def curve_precision_at_recall(recall, precision, levels: Sequence[float] = RECALL_LEVELS
                              ) -> np.ndarray:
    """Precision of a drawn PR curve at given recall levels (the line as plotted).

    The curve is the sequence of points ``(recall[i], precision[i])`` joined
    by straight lines, e.g. the Hamming-radius curve of
    :func:`hashstudy.metrics.pr_curve` (one point per radius, recall
    non-decreasing). At a level ``l`` the precision is read on the first
    segment that reaches it: between the last point with recall ``< l`` and
    the first with recall ``>= l``, linearly in recall. Left of the first
    point, the curve is extended flat at its precision (a radius-0 ball may
    already hold much of the recall); points without a precision (NaN: no
    query answered at that radius, which means recall 0) are dropped.

    Parameters
    ----------
    recall, precision : array_like, shape (n,)
    levels : sequence of float in (0, 1]

    Returns
    -------
    ndarray of float64, shape (len(levels),)
        NaN at a level the curve never reaches.
    """
    rec, prec = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if rec.ndim != 1 or rec.shape != prec.shape or rec.size == 0:
        raise ValueError(f"recall and precision must be two 1-D arrays of one length, got "
                         f"shapes {rec.shape} and {prec.shape}")
    keep = np.isfinite(prec) & np.isfinite(rec)
    rec, prec = rec[keep], prec[keep]
    if rec.size and np.any(np.diff(rec) < -1e-12):
        raise ValueError("recall must be non-decreasing along the curve")
    out = np.full(len(levels), np.nan)
    for i, level in enumerate(levels):
        level = float(level)
        if not 0 < level <= 1:
            raise ValueError(f"recall levels must lie in (0, 1], got {level}")
        j = int(np.searchsorted(rec, level - 1e-12, side="left"))  # first recall >= level
        if j >= rec.size:
            continue
        if j == 0:
            out[i] = prec[0]
            continue
        r0, r1, p0, p1 = rec[j - 1], rec[j], prec[j - 1], prec[j]
        out[i] = p1 if r1 <= r0 else p0 + (p1 - p0) * (level - r0) / (r1 - r0)
    return out


def _stl10_pool(n_train: Optional[int], seed: int, root):
    unl = data.load("stl10", "unlabeled", root=root)
    test = data.load("stl10", "test", root=root)
    n_unl = len(unl.images)
    n_s = n_unl if n_train is None or n_train >= n_unl else int(n_train)
    path = config.cache_dir("splits") / f"stl10-unlabeled-sample-{cache.key(n_unl, n_s, seed)}.npz"
    pick = cache.cached_arrays(path, lambda: {"index": np.sort(
        np.random.default_rng(seed).choice(n_unl, n_s, replace=False))})["index"]
    images = np.concatenate([unl.images[pick], test.images])
    labels = np.concatenate([np.full(n_s, -1, dtype=np.int64), test.labels])
    return images, labels, n_s, {"stl10 unlabeled": unl.source, "stl10 test": test.source}


def _stl10_split(n_s: int, n_test: int, seed: int, root, **query) -> protocols.Split:
    base, overrides = _base_protocol(query.get("query_per_class"), query.get("n_query"))
    q = protocols.get_split("stl10", base, seed, root=root, **overrides)
    local = q.query - q.n_train_split            # positions within the test split
    query_idx = n_s + local
    database = np.setdiff1d(np.arange(n_s, n_s + n_test), query_idx)
    name = base.replace("-train", "-test")
    overrides = {**overrides, "n_train_unlabeled": n_s}
    name += "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
    return dataclasses.replace(
        q, protocol=name, name=name, query=query_idx.astype(np.int64),
        database=database.astype(np.int64), train=np.arange(n_s, dtype=np.int64),
        n_train_split=n_s, n_test_split=n_test,
        description=(f"queries from the test split ({local.size}), the other test images as "
                     f"database; training on {n_s} random unlabeled images"))


def run_experiment(dataset: str, n_bits: int, *, queries: Mapping[str, Mapping],
                   n_train: Optional[int] = None,
                   methods: Sequence[str] = ("dsth", "cnnh", "sh", "sph", "sth", "itq"),
                   dsth: Optional[Mapping] = None, cnnh: Optional[Mapping] = None,
                   baselines: Optional[Mapping] = None,
                   pixel_side: Optional[int] = None, metric_keys: Sequence[str] = METRIC_KEYS,
                   paper_threshold: Optional[str] = None,
                   seed: int = 0, root=None, progress: bool = True) -> Experiment:
    """DSTH against CNNH and shallow baselines on one dataset (sec. 3, Fig. 2 and 3).

    Every method trains once per protocol on the same training images and
    is evaluated on each protocol's queries and database with
    :func:`hashstudy.evaluation.run`; trained networks, hash labels and
    CNNH's stage-1 codes are cached, so the second protocol only re-encodes.

    Parameters
    ----------
    dataset : {"mnist", "stl10", ...}
        A dataset with labelled train and test splits, or ``"stl10"``: then
        the training images are ``n_train`` random unlabeled images, the
        label-stage CNN of DSTH and CNNH train on the labelled training split,
        and queries and database come from the test split.
    n_bits : int
        Code length (64 for MNIST, 48 for STL-10 in the paper).
    queries : {prefix: {"query_per_class": q} or {"n_query": m}}
        The query protocols, each reported under its own metric-key prefix
        (see :func:`test_query_split`).
    n_train : int, optional
        Training images (the paper: 30,000 on MNIST, 10,000 on STL-10).
    methods : sequence of str
        ``"dsth"``, ``"cnnh"`` and names of :mod:`hashstudy.baselines`.
    dsth, cnnh : dict
        Keyword arguments of :class:`DSTH` and :class:`hashstudy.cnnh.CNNH`
        (``input_shape`` and ``seed`` are set here).
    baselines : {name: dict}
        Keyword arguments per baseline (e.g. ``{"sth": {"k": 25}}``).
    pixel_side : int, optional
        Block-average the images to ``side x side`` for the shallow baselines
        (their PCA needs a D x D covariance); default full resolution.
    metric_keys : sequence of str
    paper_threshold : {"zero", "mean", "median"}, optional
        Also evaluate DSTH with this reading of eq. 7's threshold (one of
        :data:`PAPER_THRESHOLDS`; the paper's is ``"zero"``, the sign), as the
        method :data:`PAPER_METHOD` (``"dsth_paper"``), right after ``"dsth"``
        (which needs to be in ``methods``). It has the same arguments as
        ``"dsth"`` but for ``threshold``, so its label-stage CNN and eigenmap
        are the cached ones of ``"dsth"`` and only its hash function is
        trained anew. ``None`` (default): no such method.
    seed : int
    root : path, optional
        Data root (default ``HASHSTUDY_DATA``).

    Returns
    -------
    Experiment
    """
    import pandas as pd

    if not queries:
        raise ValueError("give at least one query protocol")
    dsth, cnnh, baselines = dict(dsth or {}), dict(cnnh or {}), dict(baselines or {})
    bits = config.check_bits(n_bits)[0]
    methods = list(methods)
    if paper_threshold is not None:
        config.check_choice("paper_threshold", paper_threshold, PAPER_THRESHOLDS)
        if "dsth" not in methods:
            raise ValueError("paper_threshold adds DSTH with the paper's threshold reading "
                             "beside 'dsth': put 'dsth' in methods")
        if PAPER_METHOD in methods:
            raise ValueError(f"{PAPER_METHOD!r} is added by paper_threshold; leave it out of "
                             "methods")
        methods.insert(methods.index("dsth") + 1, PAPER_METHOD)
    sources = {}
    labelled = None
    if dataset == "stl10":
        images, labels, n_s, sources = _stl10_pool(n_train, seed, root)
        train = data.load("stl10", "train", root=root)
        sources["stl10 train"] = train.source
        labelled = (train.images, train.labels)
        n_test = len(images) - n_s
        splits = {p: _stl10_split(n_s, n_test, seed, root, **q) for p, q in queries.items()}
    else:
        images, labels, _ = protocols.load_pool(dataset, root=root)
        sources[dataset] = data.load(dataset, "test", root=root).source
        splits = {p: test_query_split(dataset, seed=seed, n_train=n_train, root=root, **q)
                  for p, q in queries.items()}
    shape = images.shape[1:]
    deep_rows = lambda idx: images[idx]  # noqa: E731
    pixel_rows = _pixel_rows(images, pixel_side)
    made: dict = {}

    hashers: dict = {}  # (method, bits) -> _Rows, reused by every protocol

    def factory(method):
        def make(b):
            if (method, b) in hashers:
                return hashers[(method, b)]
            if method in ("dsth", PAPER_METHOD):
                reading = {"threshold": paper_threshold} if method == PAPER_METHOD else {}
                h = _Rows(DSTH(b, shape, **{"labelled": labelled, "progress": progress,
                                            **dsth, **reading, "seed": seed}), deep_rows)
            elif method == "cnnh":
                net = CNNH(b, shape, **{"progress": progress, **cnnh, "seed": seed})
                h = _Rows(net, deep_rows, fixed_training=labelled)
            else:
                h = _Rows(shallow.make(method, b, seed=seed, **baselines.get(method, {})),
                          pixel_rows)
            made[method] = h.hasher
            hashers[(method, b)] = h
            return h
        make.supervised = method in ("dsth", PAPER_METHOD, "cnnh") or \
            method in shallow.SUPERVISED
        return make

    extra = {m: factory(m) for m in methods}
    index = np.arange(len(images))[:, None]
    tables, codes = [], {}
    for prefix, split in splits.items():
        result = evaluation.run(list(methods), [bits], index, labels, split, seed=seed,
                                metric_keys=list(metric_keys), extra=extra, progress=progress)
        t, c = result.table, result.codes
        t.insert(0, "prefix", prefix)
        tables.append(t)
        codes[prefix] = c
    return Experiment(dataset, bits, splits, pd.concat(tables, ignore_index=True), codes,
                      labels, images,
                      {m: made[m] for m in ("dsth", PAPER_METHOD, "cnnh") if m in made},
                      sources)


# ---------------------------------------------------------------------------
# notebook 01: profile sizes, and the report of an experiment (tables, metrics, texts)

PROFILE_SIZES = {
    # the synthetic smoke data (300 MNIST training / 100 test images)
    "smoke": dict(n_train=300, stl10_train=50, q10=2, q1k=5, widths=(4, 8, 8), hidden=32,
                  feature_epochs=2, hash_epochs=2, batch_size=32, cnnh_train=300,
                  cnnh_epochs=2, sweeps=3, stl10_widths=(4, 4, 4)),
    # a third of the paper's training set and small CNNs, for 2 CPU cores
    "quick": dict(n_train=10000, stl10_train=10000, q10=10, q1k=100, widths=(8, 16, 32),
                  hidden=128, feature_epochs=3, hash_epochs=6, batch_size=64, cnnh_train=5000,
                  cnnh_epochs=6, sweeps=10, stl10_widths=(8, 16, 32)),
    # sec. 3 (30,000 MNIST / 10,000 STL-10 training images) with Xia et al.'s widths
    "paper": dict(n_train=30000, stl10_train=10000, q10=10, q1k=100, widths=(32, 64, 128),
                  hidden=500, feature_epochs=10, hash_epochs=20, batch_size=64,
                  cnnh_train=10000, cnnh_epochs=20, sweeps=20, stl10_widths=(32, 64, 128)),
}
"""Sizes of notebook 01 per profile: training images (``n_train``, ``stl10_train``), queries
per class of the two protocols (``q10``, ``q1k``), the CNNs (``widths``, ``hidden``,
``batch_size``, epochs) and CNNH's stage 1 (``cnnh_train`` images, ``sweeps``)."""


def method_params(sizes: Mapping, *, k: int, threshold: str, supervised_stage: bool = True,
                  finetune: bool = True, widths=None, feature_epochs=None,
                  hash_epochs=None) -> tuple[dict, dict]:
    """Keyword arguments of :class:`DSTH` and :class:`hashstudy.cnnh.CNNH` for notebook 01.

    ``sizes`` is a :data:`PROFILE_SIZES` entry; ``widths`` and the epochs override the
    profile's choice where given. Both networks share widths, hidden units and batch size.
    """
    net = dict(widths=tuple(widths or sizes["widths"]), hidden=sizes["hidden"],
               batch_size=sizes["batch_size"])
    dsth_params = dict(k=k, threshold=threshold, supervised_stage=supervised_stage,
                       finetune=finetune, feature_epochs=feature_epochs or sizes["feature_epochs"],
                       hash_epochs=hash_epochs or sizes["hash_epochs"], **net)
    cnnh_params = dict(n_train=sizes["cnnh_train"], epochs=sizes["cnnh_epochs"],
                       n_sweeps=sizes["sweeps"], **net)
    return dsth_params, cnnh_params


def report_experiment(report, exp: Experiment, *, verbose: bool = True) -> None:
    """Record an experiment's protocols (one per prefix), data sources and metrics."""
    for prefix, split in exp.splits.items():
        report.protocol(split, prefix=f"{prefix}/")
        if verbose:
            print(f"{prefix}/...: {split}\n    {split.description}")
    for name, source in exp.sources.items():
        report.source(name, source)
    for key, value in exp.metrics().items():
        report.add(key, value)


def report_label_stage(report, exp: Experiment, prefix: str, *,
                       labels: Optional[Mapping[str, str]] = None):
    """:func:`label_stage_summary` of ``dsth`` and of :data:`PAPER_METHOD`, recorded and tabled.

    Every key of ``dsth``'s summary goes to ``<prefix>/dsth/<bits>/label_stage_<key>``; the
    paper's reading shares the graph and eigenvectors, so only its ``hash_label_balance`` and
    ``hash_labels_reproduced`` are recorded. Returns both summaries side by side (DataFrame,
    columns named by ``labels``).
    """
    import pandas as pd

    labels = dict(labels or {})
    stage = label_stage_summary(exp)
    for key, value in stage.items():
        report.add(f"{prefix}/dsth/{exp.n_bits}/label_stage_{key}", value)
    paper = label_stage_summary(exp, pixel_knn=False, method=PAPER_METHOD)
    for key in ("hash_label_balance", "hash_labels_reproduced"):
        report.add(f"{prefix}/{PAPER_METHOD}/{exp.n_bits}/label_stage_{key}", paper[key])
    return pd.DataFrame({labels.get("dsth", "dsth"): pd.Series(stage),
                         labels.get(PAPER_METHOD, PAPER_METHOD): pd.Series(paper)})


def localisation_text(dominant, n_bits: Optional[int] = None) -> str:
    """What :func:`eigenvector_localisation` found, in two sentences (notebook 01, sec. 2.1b)."""
    dominant = np.asarray(dominant)
    n_bits = len(dominant) if n_bits is None else n_bits
    return (
        f"{int((dominant >= 0.9).sum())} of the {n_bits} eigenvectors keep at least 90% of "
        f"their squared mass in a single class, and {int((dominant >= 0.5).sum())} at least "
        f"half of it; the first {int(np.argmax(dominant >= 0.5))} spread over several classes. "
        "The sign of such an eigenvector separates images inside its class and is close to "
        "random on the others, which adds Hamming distance between same-class images of every "
        "other class; the normalised-cut threshold cuts it inside its class and gives every "
        "other image the same bit.")


def report_recall_tables(report, exp: Experiment, rows: Sequence[str]):
    """Precision at recall 0.1 ... 1.0 of every protocol, from the Hamming ranking
    (:meth:`Experiment.recall_table`, table ``<prefix>_precision_at_recall``) and read off the
    Hamming-radius curves (:meth:`Experiment.radius_recall_table`, table
    ``<prefix>_radius_precision_at_recall``), rows in the order ``rows``.

    Returns one DataFrame indexed by ``(protocol, curve, method)``, curve ``ranking`` or
    ``radius``.
    """
    import pandas as pd

    parts = {}
    for prefix in exp.splits:
        ranking = exp.recall_table(prefix).loc[list(rows)]
        radius = exp.radius_recall_table(prefix).loc[list(rows)]
        report.table(f"{prefix}_precision_at_recall", ranking, index=True)
        report.table(f"{prefix}_radius_precision_at_recall", radius, index=True)
        parts[(prefix, "ranking")], parts[(prefix, "radius")] = ranking, radius
    return pd.concat(parts, names=["protocol", "curve", "method"])


def report_leads(report, exp: Experiment, *, rivals: Sequence[str] = ("cnnh",),
                 baselines: Sequence[str] = ("sh", "sph", "sth", "itq"),
                 table: Optional[str] = None):
    """Over which recall range each DSTH reading stays ahead (:meth:`Experiment.leads`).

    For every protocol, both readings (``dsth``, :data:`PAPER_METHOD`) and both kinds of
    curve (:data:`CURVES`), records ``<prefix>/<method>/<bits>/[radius_]above_<rival>_until_recall``.
    Returns the levels as a DataFrame (one column per protocol/method/curve, ``radius_``
    dropped from the row names), also written as ``table`` when given.
    """
    import pandas as pd

    leads = {}
    for prefix in exp.splits:
        for method in ("dsth", PAPER_METHOD):
            for curve in CURVES:
                values = exp.leads(prefix, method, rivals=list(rivals), baselines=list(baselines),
                                   curve=curve)
                report.add_many(f"{prefix}/{method}/{exp.n_bits}", values)
                leads[f"{prefix}/{method}/{curve}"] = {k.removeprefix("radius_"): v
                                                       for k, v in values.items()}
    frame = pd.DataFrame(leads)
    if table:
        report.table(table, frame, index=True)
    return frame


_CURVE_WORDS = {"": "read on the ranking-based precision-at-recall table",
                "radius_": "read on the Hamming-radius PR curve (as Fig. 2)"}


def paper_vs_ours(report, *, threshold: str, paper_threshold: str, dataset: str = "mnist",
                  stl10_present: bool = False, labels: Optional[Mapping[str, str]] = None,
                  paper: str = "01_dsth_mm2015"):
    """The paper's recall levels (``paper_numbers.csv``) against ours, for both readings of
    eq. 7 and both kinds of curve: each transcribed ``.../dsth/...`` key is the reference of
    the same key for ``dsth`` and :data:`PAPER_METHOD`, with and without ``radius_``.

    Writes the table ``paper_vs_ours`` and the text ``paper_vs_ours.md`` (one line per key:
    ours, the paper's, the source and why they differ) and returns the table.
    """
    import pandas as pd

    from .reporting import compare_with_paper

    labels = dict(labels or {})
    why = {
        "stl10/dsth/": ("Ours: the profile's CNN sizes and training lengths; the baselines see "
                        "32x32 block-averaged pixels; queries and database from the test split."
                        if stl10_present else
                        "Not measured: STL-10 is not under the data root (section 3)."),
        "mnist/dsth/": (f"Ours: eq. 7's threshold, which the paper does not give, is "
                        f"`{threshold}` for dsth and `{paper_threshold}` for {PAPER_METHOD}; "
                        "the smaller CNNs, fewer training images and epochs of the profile; "
                        "Adam + cross-entropy instead of the perceptron rule; queries and "
                        "database from the test split; the paper's figure is an average over "
                        "100 queries, so small gaps between curves are within query-sampling "
                        "noise." if dataset == "mnist" else
                        f"Not measured: this run uses the dataset `{dataset}`, not MNIST."),
    }
    base = compare_with_paper(report.metrics, paper, why=why)
    rows = []
    for r in base.to_dict("records"):
        for method in ("dsth", PAPER_METHOD):
            for curve, words in _CURVE_WORDS.items():
                key = r["key"].replace("/dsth/", f"/{method}/").replace("/above_",
                                                                        f"/{curve}above_")
                ours = report.metrics.get(key)
                ours = float("nan") if ours is None else float(ours)
                reading = "the study's" if method == "dsth" else "the paper's"
                rows.append({**r, "key": key, "ours": ours, "difference": ours - r["paper"],
                             "note": f"{labels.get(method, method)}: {reading} threshold, "
                                     f"{words}. {r['note']}"})
    frame = pd.DataFrame(rows, columns=base.columns)
    report.table("paper_vs_ours", frame)
    lines = []
    for r in frame.itertuples():
        if pd.isna(r.ours):
            lines.append(f"- `{r.key}`: the paper's {r.paper:g} ({r.source}) has no measurement "
                         "in this run.")
        else:
            lines.append(f"- `{r.key}`: ours {r.ours:g} vs the paper's {r.paper:g} "
                         f"({r.source}). {r.note}")
    report.text("paper_vs_ours.md", "\n".join(lines) + "\n")
    return frame


def summary_note(metrics: Mapping[str, float], exp: Experiment, *, rows: Sequence[str],
                 labels: Optional[Mapping[str, str]] = None, readings: Mapping[str, str],
                 k: int, title: str, profile: str, localisation: str = "",
                 stl10_bits: Optional[int] = None) -> str:
    """Notebook 01's closing note (markdown) from a report's metrics: mAP@all and precision at
    recall 0.1/0.5/0.7 of every method and protocol at ``exp.n_bits``, the recall range over
    which each DSTH reading leads the shallow baselines and CNNH on both kinds of curve, what
    the unsupervised stage achieved, and STL-10's mAP@all (``stl10_bits``; ``None``: skipped).
    The verdicts themselves are the claims ledger's."""
    m, b, labels = metrics, exp.n_bits, dict(labels or {})
    first = next(iter(exp.splits))

    def row(prefix, method):
        return (f"| {prefix}/ | {labels.get(method, method)} | "
                f"{m[f'{prefix}/{method}/{b}/map_all']:.3f} | "
                + " | ".join(f"{m[f'{prefix}/{method}/{b}/precision@recall{lv}']:.3f}"
                             for lv in (0.1, 0.5, 0.7)) + " |")

    def lead(prefix, method, curve=""):
        return (f"at or above every shallow baseline up to recall "
                f"{m[f'{prefix}/{method}/{b}/{curve}above_baselines_until_recall']:g}; above "
                f"CNNH up to recall {m[f'{prefix}/{method}/{b}/{curve}above_cnnh_until_recall']:g}")

    stage = f"{first}/dsth/{b}/label_stage_"
    note = [f"**{title}, {b} bits, profile `{profile}`** (queries and database from the test "
            f"split; {exp.splits[first].train.size} training images; `{PAPER_METHOD}` is DSTH "
            f"with the paper's reading of eq. 7, `{readings[PAPER_METHOD]}`, `dsth` with the "
            f"study's, `{readings['dsth']}`):", "",
            "| protocol | method | mAP@all | P@R=0.1 | P@R=0.5 | P@R=0.7 |",
            "| --- | --- | --- | --- | --- | --- |"]
    note += [row(p, meth) for p in exp.splits for meth in rows]
    for p in exp.splits:
        for method, whose in ((PAPER_METHOD, "the paper's reading"),
                              ("dsth", "the study's threshold")):
            note += ["", f"- `{p}/`, DSTH with {whose} (`{readings[method]}`): on the ranking, "
                     f"{lead(p, method)}; on the Hamming-radius curve (as Fig. 2), "
                     f"{lead(p, method, 'radius_')}."]
    note += ["", f"- Unsupervised stage: {m[stage + 'knn_label_precision_cnn']:.1%} of the {k} "
             f"graph neighbours share the image's class in CNN-feature space "
             f"({m[stage + 'knn_label_precision_pixels']:.1%} in pixel space); the hash "
             f"function reproduces {m[stage + 'hash_labels_reproduced']:.1%} of the training "
             f"hash-label bits with the study's threshold and "
             f"{m[f'{first}/{PAPER_METHOD}/{b}/label_stage_hash_labels_reproduced']:.1%} with "
             f"the paper's reading. " + localisation]
    note += ["", "- STL-10 (Fig. 3): " + (
        f"DSTH mAP@all {m[f'stl10/dsth/{stl10_bits}/map_all']:.3f} (paper's reading "
        f"{m[f'stl10/{PAPER_METHOD}/{stl10_bits}/map_all']:.3f}), CNNH "
        f"{m[f'stl10/cnnh/{stl10_bits}/map_all']:.3f}." if stl10_bits else
        "skipped, the data are not on this machine (see section 3).")]
    return "\n".join(note)
