"""DSTH, journal version: deep self-taught hashing (Liu, Song, Zhou et al., IEEE TCYB 2018).

The method has two stages (sec. III, Fig. 1); this module implements both, the
with-labels variant, and the pieces the experiments of sec. IV need.

Hash-label generating stage (sec. III-A, eq. 7-14): :func:`hash_labels`
    Features ``x_i`` of the training images from a pretrained CNN (the paper:
    GoogLeNet or AlexNet; offline here: EfficientNet-Lite0 and its stage-5
    cut, see :mod:`hashstudy.features`) feed a kNN graph with ``mu = 12``
    neighbours and cosine weights (eq. 7, :func:`hashstudy.graph.knn_graph`;
    an edge when either point is among the other's 12 nearest, the reading
    of STH's eq. 1), the Laplacian eigenmap ``L v = lambda D v`` (eq. 8-12,
    :func:`hashstudy.graph.laplacian_eigenmap`, the ``t`` smallest
    non-trivial eigenvectors) and the per-bit mean threshold (eq. 13-14,
    :func:`hashstudy.graph.binarize` with ``rule="mean"``). The thresholds
    ``epsilon^p`` are kept: the BatchNorm head reuses them.
With labels (sec. III-A, sec. IV-C, Table IV): :func:`finetuned_features`
    "We finetune the network with labels to extract features." On a CPU the
    whole backbone is not fine-tuned; a two-layer head
    ``Linear(D, 512) -> ReLU -> Linear(512, classes)`` is trained by
    cross-entropy on the frozen backbone features of the training images, and
    its class scores (logits) are the fine-tuned features that the same
    label stage uses.
Hash-function learning stage (sec. III-B, eq. 15-22): :class:`HashNet`
    :class:`SimpleNet` exactly as Table I (the 32x32 column for CIFAR, the
    96x96 column for STL-10), then an encoder, then an output activation:

    * MLP (eq. 15): ``n`` blocks ``f^(i) = b + W h(b' + W' f^(i-1))`` with
      ``h`` = ReLU then BatchNorm, ``n = 3`` for 32x32 and ``5`` for 96x96
      inputs (:class:`MLPEncoder`); ``hidden_activation="sigmoid"`` puts the
      logistic function in place of the ReLU, sec. III-B's reading ("the core
      of h(x) in (15) is the logistic function"; :data:`HIDDEN_ACTIVATIONS`);
    * Slice, divide-and-encode: a fully connected layer maps the input to
      1024-D (then ``h``), the 1024-D vector is split into 16 groups of 64
      and each group is mapped to ``q`` outputs, ``16 q`` bits in all
      (:class:`SliceEncoder`);
    * Sigmoid (codes: output >= 0.5, eq. 22) or BatchNorm without scale and
      shift (eq. 19-21; codes: output >= the label stage's per-bit
      thresholds ``epsilon^p``, eq. 13-14) (:data:`HEADS`).

    The loss is eq. 18, the squared error between the outputs and the
    ``{0, 1}`` hash labels (:func:`eq18_loss`), minimised by SGD with momentum
    0.9 and weight decay 0.004 at learning rates 0.01, then 0.001, then
    0.0001 (sec. IV-C: 60,000, 5,000 and 5,000 iterations; here the epochs
    of the three phases are a parameter, scaled by the study's profiles).

Experiments (sec. IV)
    :func:`load_setting` gathers a dataset's images, labels and backbone
    features under one protocol (queries from the test split, the other test
    images as database, training on a random subset of the training split;
    :func:`hashstudy.dsth.test_query_split`). :func:`dsth_factories`,
    :func:`baseline_factories` and :func:`cnnh_factory` turn DSTH
    configurations, shallow baselines (on backbone features) and CNNH (on
    pixels) into hashers on pool indices for
    :func:`hashstudy.evaluation.compare`. :func:`classification_accuracy`
    gives Table II, :func:`label_quality` measures the hash labels directly,
    :func:`wide_table` lays out Tables III and IV, and :func:`radar` draws
    Fig. 3(b).

What the hash-function stage can reach
    :func:`label_agreement` counts the hash-label bits a function reproduces;
    ``DSTHJournal(heldout=...)`` leaves a random part of the training images
    out of the hash-function fit (:func:`heldout_rows`; the label stage still
    sees them, so they have hash labels) and reports the agreement on both
    parts (:attr:`DSTHJournal.label_fit_report_`). Two references use the
    same labels: :class:`LabelCopy` gives a new image the per-bit majority of
    the labels of its nearest training images in backbone-feature space
    (:func:`label_copy_factory`), and ``DSTHJournal(inputs="features")``
    trains the same encoder and head on the backbone features instead of
    SimpleNet on pixels (:class:`FeatureHashNet`).

Codes are ``uint8`` ``{0, 1}`` matrices (1 = the hash label 1 of eq. 13).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import baselines as shallow
from . import cache, config, data, graph, metrics, protocols, training
from .cnnh import CNNH, array_digest, as_image_tensor

__all__ = [
    "TABLE_I", "INPUT_SIZES", "ENCODERS", "HEADS", "CONFIGS", "TABLE_METRICS", "METRIC_KEYS",
    "HIDDEN_ACTIVATIONS", "INPUTS",
    "SimpleNet", "MLPEncoder", "SliceEncoder", "HashNet", "FeatureHashNet", "eq18_loss",
    "codes_from_outputs", "HashLabels", "hash_labels", "finetuned_features", "train_hash_net",
    "label_agreement", "heldout_rows", "DSTHJournal", "LabelCopy",
    "Setting", "load_setting", "PoolRows", "dsth_factories", "label_copy_factory",
    "baseline_factories",
    "cnnh_factory", "evaluate_methods", "component_analysis", "label_quality",
    "classification_accuracy", "wide_table", "radar",
]

# ---------------------------------------------------------------------------
# Table I

#: Table I of the paper, per input size: (step, type, kernel, pad, stride, output, pool style).
#: ``output`` is the number of channels of a convolution; a pooling step keeps them.
TABLE_I = {
    32: (
        (1, "conv", 5, 2, 1, 32, None), (2, "pool", 3, 0, 2, None, "max"),
        (3, "conv", 5, 2, 1, 32, None), (4, "pool", 3, 0, 2, None, "ave"),
        (5, "conv", 5, 2, 1, 64, None), (6, "pool", 3, 0, 2, None, "ave"),
    ),
    96: (
        (1, "conv", 5, 2, 1, 32, None), (2, "pool", 3, 0, 2, None, "max"),
        (3, "conv", 5, 2, 1, 32, None), (4, "pool", 3, 0, 2, None, "ave"),
        (5, "conv", 5, 2, 1, 64, None), (6, "pool", 3, 0, 2, None, "ave"),
        (7, "conv", 5, 2, 1, 64, None), (8, "pool", 3, 0, 2, None, "ave"),
        (9, "conv", 5, 2, 1, 128, None), (10, "pool", 3, 0, 2, None, "ave"),
    ),
}
INPUT_SIZES = tuple(TABLE_I)
#: MLP blocks ``n`` of eq. 15 per input size (sec. III-B).
MLP_BLOCKS = {32: 3, 96: 5}
ENCODERS = ("mlp", "slice")
HEADS = ("sigmoid", "batchnorm")
#: Readings of ``h(*)`` in eq. 15 (the hidden activation of the MLP and Slice encoders):
#: ``"relu"`` is ReLU then BatchNorm (eq. 15's text, "h(*) is ReLU and BatchNorm function");
#: ``"sigmoid"`` is the logistic function then BatchNorm (sec. III-B: "when we use sigmoid,
#: the core of h(x) in (15) is the logistic function"; sec. IV-E reports ReLU in the MLP
#: and Slice nets as bad).
HIDDEN_ACTIVATIONS = ("relu", "sigmoid")
#: What the hash function reads: the pixels (SimpleNet first, the paper's hash function) or
#: the label stage's backbone features (a reference that skips SimpleNet).
INPUTS = ("pixels", "features")
#: The four configurations of Table III, named ``<encoder>_<head>``.
CONFIGS = tuple(f"{e}_{h}" for e in ENCODERS for h in HEADS)
#: Columns of Tables III and IV: precision at six recall levels, max F-measure at two betas.
TABLE_METRICS = tuple(f"precision@recall{v!r}" for v in metrics.DEFAULT_RECALL_LEVELS) + (
    "max_f@0.5", "max_f@0.25")
#: Every metric the experiments record (Table III's plus HD3P, NC3P and mAP).
METRIC_KEYS = TABLE_METRICS + ("hd3p", "nc3p", "map@1000", "map_all")
SLICE_WIDTH = 1024
SLICE_GROUPS = 16
_check_choice = config.check_choice  # reachable where a parameter is called ``config``


def _split_config(name: str) -> tuple[str, str]:
    config.check_choice("configuration", name, CONFIGS)
    encoder, head = name.split("_")
    return encoder, head


def _check_input_size(input_size) -> int:
    if isinstance(input_size, bool) or int(input_size) not in TABLE_I:
        raise ValueError(f"SimpleNet is defined by Table I for {INPUT_SIZES[0]}x{INPUT_SIZES[0]} "
                         f"and {INPUT_SIZES[1]}x{INPUT_SIZES[1]} images, got input_size="
                         f"{input_size!r}; resize the images (the paper resizes other datasets "
                         "to 96x96)")
    return int(input_size)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------
# networks


class SimpleNet(nn.Module):
    """The hash-function CNN of Table I (Caffe's "CIFAR-10 quick" convolutions).

    Each convolution (5x5, pad 2, stride 1) is followed by a ReLU and a 3x3,
    stride-2 pooling (max for the first, average for the others) with Caffe's
    output size ``ceil((n - 3) / 2) + 1`` (``ceil_mode=True``): a 32x32 input
    goes 32 -> 16 -> 8 -> 4, so its output is 64 x 4 x 4 = 1024 values (the
    "1024-D vector" of the Slice encoder); a 96x96 input goes 96 -> 48 -> 24
    -> 12 -> 6 -> 3 with 128 channels, 1152 values. Table I lists no
    activation; the ReLUs are those of the Caffe network it transcribes.

    Parameters
    ----------
    input_size : {32, 96}
        Side of the square input (Table I's two columns).
    channels : int
        Input channels (3 for RGB).

    Input float ``(N, C, S, S)``; output ``(N, out_features)`` (flattened).
    """

    def __init__(self, input_size: int = 32, channels: int = 3):
        super().__init__()
        self.input_size = _check_input_size(input_size)
        c = _positive("channels", channels)
        layers = []
        for _, kind, kernel, pad, stride, out, style in TABLE_I[self.input_size]:
            if kind == "conv":
                layers += [nn.Conv2d(c, out, kernel, stride=stride, padding=pad), nn.ReLU()]
                c = out
            else:
                pool = nn.MaxPool2d if style == "max" else nn.AvgPool2d
                layers.append(pool(kernel, stride=stride, padding=pad, ceil_mode=True))
        self.layers = nn.Sequential(*layers)
        self.out_channels = c
        side = self.input_size
        for step in TABLE_I[self.input_size]:
            if step[1] == "pool":
                side = -(-(side + 2 * step[3] - step[2]) // step[4]) + 1
        self.out_side = side
        self.out_features = c * side * side

    def step_shapes(self, x: torch.Tensor) -> list[tuple[int, ...]]:
        """Shape ``(C, H, W)`` after each step of Table I (for checking the table)."""
        shapes = []
        for layer in self.layers:
            x = layer(x)
            if not isinstance(layer, nn.ReLU):
                shapes.append(tuple(x.shape[1:]))
        return shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


def _h(width: int, activation: str = "relu") -> list[nn.Module]:
    """``h(*)`` of eq. 15: ReLU (or the logistic function, see :data:`HIDDEN_ACTIVATIONS`),
    then BatchNorm."""
    config.check_choice("hidden_activation", activation, HIDDEN_ACTIVATIONS)
    core = nn.ReLU() if activation == "relu" else nn.Sigmoid()
    return [core, nn.BatchNorm1d(width)]


class MLPEncoder(nn.Module):
    """Eq. 15: ``n`` chained blocks ``f^(i)(x) = b + W h(b' + W' f^(i-1)(x))``.

    Block ``i`` is ``Linear(in, hidden) -> ReLU -> BatchNorm -> Linear(hidden,
    out)`` (the logistic function instead of ReLU with ``hidden_activation="sigmoid"``),
    with ``out = hidden`` except for the last block, whose output has
    ``n_outputs`` units: ``2 n`` fully connected layers in all. The paper
    does not give the hidden width.

    Parameters
    ----------
    in_features, n_outputs : int
    n_blocks : int
        ``n`` of eq. 15 (3 for 32x32 inputs, 5 for 96x96 in the paper).
    hidden : int
        Width of every hidden layer.
    hidden_activation : {"relu", "sigmoid"}
        The core of ``h(*)`` (:data:`HIDDEN_ACTIVATIONS`); BatchNorm follows it.
    """

    def __init__(self, in_features: int, n_outputs: int, n_blocks: int = 3, hidden: int = 512,
                 hidden_activation: str = "relu"):
        super().__init__()
        n_blocks, hidden = _positive("n_blocks", n_blocks), _positive("hidden", hidden)
        width = _positive("in_features", in_features)
        layers = []
        for i in range(n_blocks):
            out = _positive("n_outputs", n_outputs) if i == n_blocks - 1 else hidden
            layers += [nn.Linear(width, hidden), *_h(hidden, hidden_activation),
                       nn.Linear(hidden, out)]
            width = out
        self.layers = nn.Sequential(*layers)
        self.n_blocks = n_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SliceEncoder(nn.Module):
    """Divide and encode (sec. III-B): 1024-D, 16 groups of 64, each mapped to ``q`` outputs.

    ``x -> Linear(in, 1024) -> ReLU -> BatchNorm`` ("the first full connection
    layer maps the input into several groups"), then group ``g`` (units
    ``64 g .. 64 g + 63``) passes its own ``Linear(64, q)``; the outputs are
    concatenated group by group, so bits ``q g .. q g + q - 1`` depend on
    group ``g`` only. ``n_outputs = 16 q``.

    Parameters
    ----------
    in_features : int
    n_outputs : int
        Code length, a multiple of 16.
    hidden_activation : {"relu", "sigmoid"}
        The core of ``h(*)`` after the 1024-D layer (:data:`HIDDEN_ACTIVATIONS`).
    """

    def __init__(self, in_features: int, n_outputs: int, hidden_activation: str = "relu"):
        super().__init__()
        n_outputs = _positive("n_outputs", n_outputs)
        if n_outputs % SLICE_GROUPS:
            raise ValueError(f"the Slice encoder maps {SLICE_GROUPS} groups to q bits each, so "
                             f"the code length must be a multiple of {SLICE_GROUPS}; got "
                             f"{n_outputs}")
        self.q = n_outputs // SLICE_GROUPS
        self.group_width = SLICE_WIDTH // SLICE_GROUPS
        self.fc = nn.Sequential(nn.Linear(_positive("in_features", in_features), SLICE_WIDTH),
                                *_h(SLICE_WIDTH, hidden_activation))
        self.groups = nn.ModuleList(nn.Linear(self.group_width, self.q)
                                    for _ in range(SLICE_GROUPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.fc(x).split(self.group_width, dim=1)
        return torch.cat([g(p) for g, p in zip(self.groups, parts)], dim=1)


class _Standardize(nn.Module):
    """uint8 or [0, 255] float images -> per-channel standardised floats (stats are buffers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def set_stats(self, images: torch.Tensor) -> None:
        x = images.float().div(255.0)
        self.mean.copy_(x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
        self.std.copy_(x.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div(255.0) - self.mean) / self.std


def _encoder(d: int, n_bits: int, encoder: str, hidden: int, blocks: int,
             hidden_activation: str) -> nn.Module:
    config.check_choice("hidden_activation", hidden_activation, HIDDEN_ACTIVATIONS)
    if encoder == "mlp":
        return MLPEncoder(d, n_bits, blocks, hidden, hidden_activation)
    return SliceEncoder(d, n_bits, hidden_activation)


def _head(head: str, n_bits: int) -> nn.Module:
    return nn.Sigmoid() if head == "sigmoid" else nn.BatchNorm1d(n_bits, affine=False)


class HashNet(nn.Module):
    """SimpleNet + encoder + output activation: the hash function of sec. III-B.

    Parameters
    ----------
    input_size : {32, 96}
    n_bits : int
    encoder : {"mlp", "slice"}
    head : {"sigmoid", "batchnorm"}
        Sigmoid outputs lie in (0, 1); BatchNorm (eq. 19-21, no learned scale
        or shift) outputs are standardised per bit with the batch statistics
        in training and the running ones in evaluation.
    hidden : int
        MLP hidden width.
    mlp_blocks : int, optional
        ``n`` of eq. 15; default 3 for 32x32 and 5 for 96x96 inputs.
    channels : int
    hidden_activation : {"relu", "sigmoid"}
        The core of ``h(*)`` in eq. 15 (:data:`HIDDEN_ACTIVATIONS`).

    Input: uint8 tensor ``(N, C, S, S)`` (standardised inside with the
    training images' per-channel statistics, see :meth:`set_input_stats`);
    output ``(N, n_bits)`` float.
    """

    def __init__(self, input_size: int, n_bits: int, encoder: str = "slice",
                 head: str = "batchnorm", hidden: int = 512, mlp_blocks: Optional[int] = None,
                 channels: int = 3, hidden_activation: str = "relu"):
        super().__init__()
        config.check_choice("encoder", encoder, ENCODERS)
        config.check_choice("head", head, HEADS)
        self.n_bits = config.check_bits(n_bits)[0]
        self.encoder_name, self.head_name = encoder, head
        self.standardize = _Standardize(channels)
        self.simplenet = SimpleNet(input_size, channels)
        blocks = MLP_BLOCKS[self.simplenet.input_size] if mlp_blocks is None else mlp_blocks
        self.encoder = _encoder(self.simplenet.out_features, self.n_bits, encoder, hidden,
                                blocks, hidden_activation)
        self.head = _head(head, self.n_bits)

    def set_input_stats(self, images: torch.Tensor) -> None:
        """Store the per-channel mean and std of uint8 training images ``(N, C, S, S)``."""
        self.standardize.set_stats(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.simplenet(self.standardize(x))))


class _StandardizeFeatures(nn.Module):
    """Float feature rows -> per-dimension standardised rows (training stats are buffers)."""

    def __init__(self, d: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, d))
        self.register_buffer("std", torch.ones(1, d))

    def set_stats(self, x: torch.Tensor) -> None:
        x = x.float()
        self.mean.copy_(x.mean(dim=0, keepdim=True))
        self.std.copy_(x.std(dim=0, keepdim=True).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class FeatureHashNet(nn.Module):
    """The encoder and output activation of :class:`HashNet` on backbone features, no SimpleNet.

    A reference for the hash-function stage: the same MLP or Slice encoder and
    the same head, trained with eq. 18 on the same hash labels, but fed with
    the label stage's own (standardised) backbone features instead of pixels.
    It shows what the encoders can learn when the input already holds what
    the labels were computed from.

    Parameters
    ----------
    in_features : int
        Feature dimension.
    n_bits, encoder, head, hidden, hidden_activation
        As in :class:`HashNet`.
    mlp_blocks : int
        ``n`` of eq. 15.

    Input float ``(N, in_features)``; output ``(N, n_bits)``.
    """

    def __init__(self, in_features: int, n_bits: int, encoder: str = "slice",
                 head: str = "batchnorm", hidden: int = 512, mlp_blocks: int = 3,
                 hidden_activation: str = "relu"):
        super().__init__()
        config.check_choice("encoder", encoder, ENCODERS)
        config.check_choice("head", head, HEADS)
        self.n_bits = config.check_bits(n_bits)[0]
        self.encoder_name, self.head_name = encoder, head
        d = _positive("in_features", in_features)
        self.standardize = _StandardizeFeatures(d)
        self.encoder = _encoder(d, self.n_bits, encoder, hidden, _positive("mlp_blocks", mlp_blocks),
                                hidden_activation)
        self.head = _head(head, self.n_bits)

    def set_input_stats(self, x: torch.Tensor) -> None:
        """Store the per-dimension mean and std of the training features ``(N, D)``."""
        self.standardize.set_stats(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.standardize(x)))


def eq18_loss(outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "per_sample"
              ) -> torch.Tensor:
    """Eq. 18: ``sum_i sum_j (x_i^(j) - y_i^(j))^2`` over a batch of ``m`` samples and ``d`` bits.

    Parameters
    ----------
    outputs, targets : float tensors of shape (m, d)
        Network outputs and hash labels (``{0, 1}``).
    reduction : {"per_sample", "sum"}
        ``"sum"``: eq. 18 as printed; ``"per_sample"`` (used in training):
        the same sum divided by ``m``, Caffe's Euclidean loss without its
        factor 1/2, so the step size does not depend on the batch size.

    Returns
    -------
    scalar tensor
    """
    config.check_choice("reduction", reduction, ("per_sample", "sum"))
    if outputs.shape != targets.shape or outputs.ndim != 2:
        raise ValueError(f"outputs and targets must both be (m, d); got {tuple(outputs.shape)} "
                         f"and {tuple(targets.shape)}")
    total = (outputs - targets).pow(2).sum()
    return total if reduction == "sum" else total / outputs.shape[0]


def codes_from_outputs(outputs, head: str, thresholds=None) -> np.ndarray:
    """Binarise network outputs (sec. III-B).

    Parameters
    ----------
    outputs : array (N, d)
    head : {"sigmoid", "batchnorm"}
        Sigmoid: ``bit = [output >= 0.5]`` (eq. 22). BatchNorm: ``bit =
        [output >= epsilon^p]`` with the label stage's per-bit thresholds
        (eq. 13-14, "we apply the threshold values of each bit calculated in
        the hash label generating stage").
    thresholds : array (d,)
        Required for ``"batchnorm"``; not used for ``"sigmoid"``.

    Returns
    -------
    ndarray of uint8 (N, d), values {0, 1}
    """
    config.check_choice("head", head, HEADS)
    outputs = np.asarray(outputs)
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be (N, d), got shape {outputs.shape}")
    if head == "sigmoid":
        return np.ascontiguousarray(outputs >= 0.5, dtype=np.uint8)
    if thresholds is None:
        raise ValueError("the BatchNorm head thresholds at the label stage's per-bit values; "
                         "pass thresholds")
    return graph.binarize(outputs, thresholds=thresholds)[0]


# ---------------------------------------------------------------------------
# hash-label stage


@dataclass
class HashLabels:
    """The output of the hash-label stage (sec. III-A) for ``n`` training images.

    Attributes
    ----------
    bits : uint8 (n, t)
        Hash labels (eq. 13).
    thresholds : float64 (t,)
        ``epsilon^p`` (eq. 14), the per-bit means of ``embedding``.
    embedding : float64 (n, t)
        The eigenvectors (eq. 11-12), D-orthonormal.
    eigenvalues : float64 (t,)
    neighbors : int64 (n, k)
        Each image's k nearest training images (cosine), best first.
    components : int
        Connected components of the graph (1 = connected).
    """

    bits: np.ndarray = field(repr=False)
    thresholds: np.ndarray = field(repr=False)
    embedding: np.ndarray = field(repr=False)
    eigenvalues: np.ndarray = field(repr=False)
    neighbors: np.ndarray = field(repr=False)
    components: int = 1


def hash_labels(features, n_bits: int, k: int = 12, seed: int = 0) -> HashLabels:
    """Hash labels of training images from their features (eq. 7-14), cached on disk.

    Parameters
    ----------
    features : float array (n, D)
        Backbone features of the training images (no all-zero row).
    n_bits : int
        Code length ``t``; needs ``n > t + 1``.
    k : int
        Neighbours ``mu`` of the kNN graph (12 in sec. IV-C).
    seed : int
        Seeds the eigensolver's start vector.

    Returns
    -------
    HashLabels
    """
    import scipy.sparse.csgraph

    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (n, D), got shape {features.shape}")
    n_bits = config.check_bits(n_bits)[0]
    k = _positive("k", k)
    n = features.shape[0]
    if n <= max(k, n_bits + 1):
        raise ValueError(f"the label stage needs more training images than k={k} and "
                         f"n_bits+1={n_bits + 1}; got {n}")
    parts = dict(stage="dsth-journal-labels", data=array_digest(features), n_bits=n_bits, k=k,
                 seed=int(seed), symmetrize="max", weight="cosine", threshold="mean")
    path = config.cache_dir("dsth_journal") / f"labels-{cache.key(parts)}.npz"

    def compute():
        idx, val = graph.knn(features, k, metric="cosine")
        W = graph.knn_graph(features, k, weight="cosine", neighbors=(idx, val))
        n_comp, _ = scipy.sparse.csgraph.connected_components(W, directed=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", graph.DisconnectedGraphWarning)
            Y, ev = graph.laplacian_eigenmap(W, n_bits, seed=int(seed))
        bits, thr = graph.binarize(Y, rule="mean")
        return {"bits": bits, "thresholds": thr, "embedding": Y, "eigenvalues": ev,
                "neighbors": idx, "components": np.array(n_comp)}

    a = cache.cached_arrays(path, compute)
    return HashLabels(a["bits"], a["thresholds"], a["embedding"], a["eigenvalues"],
                      a["neighbors"], int(a["components"]))


class _FeatureHead(nn.Module):
    def __init__(self, d: int, n_classes: int, hidden: int):
        super().__init__()
        self.hidden = nn.Linear(d, hidden)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def finetuned_features(features, labels, *, hidden: int = 512, epochs: int = 30,
                       lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                       progress: bool = False) -> np.ndarray:
    """Label-tuned features for the with-labels variant (sec. IV-C, Table IV).

    A head ``Linear(D, hidden) -> ReLU -> Linear(hidden, classes)`` is trained
    with cross-entropy (Adam) on standardised frozen backbone features and
    their class labels; the returned features are its class scores (logits),
    in which images of one class point the same way, so the cosine kNN graph
    of the label stage links mostly images of a common class. This stands
    in for fine-tuning the whole backbone, which the paper does and a CPU
    cannot afford. Weights are cached.

    Parameters
    ----------
    features : float array (n, D)
    labels : int array (n,)
        Class labels ``>= 0`` (at least two classes).

    Returns
    -------
    float32 array (n, classes)
    """
    X = np.ascontiguousarray(features, dtype=np.float32)
    y = np.asarray(labels)
    if X.ndim != 2 or y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"need features (n, D) and n integer labels; got {X.shape} and "
                         f"{y.shape} {y.dtype}")
    if (y < 0).any() or np.unique(y).size < 2:
        raise ValueError("the with-labels variant needs class labels >= 0 of at least two "
                         "classes")
    mean, std = X.mean(0), X.std(0) + 1e-6
    Xs = torch.from_numpy((X - mean) / std)
    yt = torch.from_numpy(y.astype(np.int64))
    n_classes = int(y.max()) + 1
    key = dict(data=array_digest(X, y), hidden=hidden, epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed)

    def build():
        torch.manual_seed(seed)
        return _FeatureHead(X.shape[1], n_classes, _positive("hidden", hidden))

    def train(model):
        hist = training.fit(model, (Xs, yt),
                            lambda m, xb, yb: nn.functional.cross_entropy(m(xb), yb),
                            epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                            seed=seed, progress=progress, desc="fine-tuned feature head")
        return {"loss": hist.loss, "seconds": hist.seconds}

    model, _, _ = training.cached_model("dsth-journal-finetune", key, build, train)
    return training.predict(model, Xs).astype(np.float32)


# ---------------------------------------------------------------------------
# hash-function stage


def _run_phases(model, tensors, loss_fn, *, epochs, lrs, batch_size, momentum, weight_decay,
                seed, progress, desc) -> dict:
    """SGD in phases of decreasing learning rate (sec. IV-C); returns the loss history."""
    losses, seconds = [], 0.0
    for phase, (ep, lr) in enumerate(zip(epochs, lrs)):
        if ep == 0:
            continue
        hist = training.fit(model, tensors, loss_fn, epochs=ep, batch_size=batch_size, lr=lr,
                            optimizer="sgd", momentum=momentum, weight_decay=weight_decay,
                            seed=seed + phase, progress=progress, desc=f"{desc} (lr {lr:g})")
        losses += hist.loss
        seconds += hist.seconds
    return {"loss": losses, "seconds": seconds}


def _check_schedule(epochs, lrs) -> tuple[tuple[int, ...], tuple[float, ...]]:
    epochs, lrs = tuple(int(e) for e in epochs), tuple(float(v) for v in lrs)
    if len(epochs) != len(lrs) or not epochs or min(epochs) < 0 or sum(epochs) < 1:
        raise ValueError(f"epochs and lrs must be equally long, with non-negative epochs "
                         f"summing to at least 1; got {epochs} and {lrs}")
    if min(lrs) <= 0:
        raise ValueError(f"learning rates must be positive, got {lrs}")
    return epochs, lrs


def train_hash_net(images: torch.Tensor, targets: np.ndarray, *, encoder: str = "slice",
                   head: str = "batchnorm", hidden: int = 512, mlp_blocks: Optional[int] = None,
                   epochs: Sequence[int] = (6, 1, 1), lrs: Sequence[float] = (0.01, 1e-3, 1e-4),
                   batch_size: int = 100, momentum: float = 0.9, weight_decay: float = 0.004,
                   hidden_activation: str = "relu", seed: int = 0, progress: bool = False
                   ) -> tuple[nn.Module, dict, bool]:
    """Train a :class:`HashNet` to output hash labels (eq. 18), weights cached on disk.

    Parameters
    ----------
    images : uint8 tensor (n, C, S, S), or float tensor (n, D)
        Images (a :class:`HashNet`), or backbone features (a
        :class:`FeatureHashNet`, the reference without SimpleNet).
    targets : {0, 1} array (n, t)
        Hash labels.
    encoder, head, hidden, mlp_blocks, hidden_activation
        See :class:`HashNet` (for features, ``mlp_blocks`` defaults to 3).
    epochs, lrs : sequences of equal length
        Epochs per phase and its learning rate (the paper: 0.01, 0.001, 0.0001
        for 60,000, 5,000 and 5,000 iterations).
    batch_size, momentum, weight_decay, seed, progress

    Returns
    -------
    model, info, loaded : HashNet or FeatureHashNet (eval mode),
        {"loss": [...], "seconds": s}, bool
    """
    epochs, lrs = _check_schedule(epochs, lrs)
    config.check_choice("hidden_activation", hidden_activation, HIDDEN_ACTIVATIONS)
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be (n, t) for {images.shape[0]} images, got "
                         f"{targets.shape}")
    if images.ndim not in (2, 4):
        raise ValueError(f"inputs must be images (n, C, S, S) or features (n, D), got shape "
                         f"{tuple(images.shape)}")
    n_bits = targets.shape[1]
    if images.ndim == 4:
        size, channels = images.shape[-1], images.shape[1]
        arch = dict(input_size=int(size), n_bits=int(n_bits), encoder=encoder, head=head,
                    hidden=int(hidden), mlp_blocks=mlp_blocks, channels=int(channels))
        net, name, what = HashNet, "dsth-journal-hashnet", "SimpleNet"
    else:
        arch = dict(in_features=int(images.shape[1]), n_bits=int(n_bits), encoder=encoder,
                    head=head, hidden=int(hidden),
                    mlp_blocks=MLP_BLOCKS[32] if mlp_blocks is None else int(mlp_blocks))
        net, name, what = FeatureHashNet, "dsth-journal-featurenet", "features"
    key = dict(data=array_digest(images, targets), arch=dict(arch), epochs=epochs, lrs=lrs,
               batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed)
    # the default reading stays out of the key, so weights cached before the parameter
    # existed are still found
    if hidden_activation != "relu":
        key["arch"]["hidden_activation"] = hidden_activation
    arch["hidden_activation"] = hidden_activation

    def build():
        torch.manual_seed(seed)
        return net(**arch)

    def train(model):
        model.set_input_stats(images)
        y = torch.from_numpy(targets.astype(np.float32))
        return _run_phases(model, (images, y), lambda m, xb, yb: eq18_loss(m(xb), yb),
                           epochs=epochs, lrs=lrs, batch_size=batch_size, momentum=momentum,
                           weight_decay=weight_decay, seed=seed, progress=progress,
                           desc=f"{what} {encoder}+{head} {n_bits} bits")

    return training.cached_model(name, key, build, train)


def label_agreement(codes, targets) -> dict:
    """How many hash-label bits a hash function reproduces.

    Parameters
    ----------
    codes, targets : {0, 1} arrays (n, t)
        The function's codes and the hash labels of the same images.

    Returns
    -------
    {"bits": fraction of equal bits, "exact": fraction of rows with every bit equal}
        (NaN for ``n = 0``).
    """
    codes, targets = np.asarray(codes), np.asarray(targets)
    if codes.shape != targets.shape or codes.ndim != 2:
        raise ValueError(f"codes and targets must both be (n, t); got {codes.shape} and "
                         f"{targets.shape}")
    if codes.shape[0] == 0:
        return {"bits": float("nan"), "exact": float("nan")}
    equal = codes.astype(np.uint8) == targets.astype(np.uint8)
    return {"bits": float(equal.mean()), "exact": float(equal.all(axis=1).mean())}


def heldout_rows(n: int, heldout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` training images into the rows that fit a hash function and held-out rows.

    ``round(heldout * n)`` rows, drawn at random with ``seed``, are held out
    (their hash labels exist, the hash function never trains on them); both
    index arrays are sorted. ``heldout = 0`` keeps every row for the fit.
    """
    heldout = _check_heldout(heldout)
    m = int(round(heldout * n))
    if heldout and not 1 <= m <= n - 2:
        raise ValueError(f"heldout={heldout} of {n} training images holds out {m}; need at "
                         "least one held-out image and two to fit")
    rng = np.random.default_rng([int(seed), 7919])
    held = np.sort(rng.permutation(n)[:m])
    return np.setdiff1d(np.arange(n), held), held


def _check_heldout(heldout) -> float:
    if isinstance(heldout, bool) or not 0 <= float(heldout) < 1:
        raise ValueError(f"heldout is the fraction of training images held out of the "
                         f"hash-function fit, 0 <= heldout < 1; got {heldout!r}")
    return float(heldout)


def _label_stage(features, labels, n_bits: int, k: int, seed: int, with_labels: bool,
                 finetune_epochs: int, progress: bool) -> HashLabels:
    """The hash labels of the training images (sec. III-A), with labels first if asked."""
    if with_labels:
        if labels is None:
            raise ValueError("with_labels=True needs the training images' class labels")
        features = finetuned_features(features, labels, epochs=finetune_epochs, seed=seed,
                                      progress=progress)
    return hash_labels(features, n_bits, k, seed)


def _fit_report(encode, inputs, bits, fit_rows, held_rows) -> dict:
    """``label_fit`` entries: agreement on the fitted rows and on the held-out rows."""
    out = {}
    for part, rows in (("train", fit_rows), ("heldout", held_rows)):
        if part == "heldout" and rows.size == 0:
            continue
        a = label_agreement(encode(inputs[rows]), bits[rows])
        out[part], out[f"{part}_exact"] = a["bits"], a["exact"]
    return out


class DSTHJournal:
    """Deep self-taught hashing (journal version) as a hasher.

    ``fit(images, features, labels=None)`` runs the label stage on the
    training images' backbone ``features`` (with labels first through
    :func:`finetuned_features` when ``with_labels``) and trains SimpleNet on
    the training ``images``; ``encode(images)`` needs pixels only.

    With ``inputs="features"`` the hash function is the reference
    :class:`FeatureHashNet`: the same encoder and head on the backbone
    features instead of SimpleNet on pixels; ``fit(features, features)`` and
    ``encode(features)`` then read features.

    Parameters
    ----------
    n_bits : int
    input_size : {32, 96}
        Image side (Table I's columns; with ``inputs="features"`` it only
        chooses the MLP's ``n`` of eq. 15).
    config : one of :data:`CONFIGS`
        ``"<mlp|slice>_<sigmoid|batchnorm>"``.
    k : int
        Neighbours of the label stage's graph (``mu = 12``).
    hidden, mlp_blocks : see :class:`HashNet`.
    hidden_activation : {"relu", "sigmoid"}
        The core of ``h(*)`` in eq. 15 (:data:`HIDDEN_ACTIVATIONS`): ReLU
        (our default, eq. 15's text) or the logistic function (sec. III-B's
        reading).
    epochs, lrs, batch_size, momentum, weight_decay : see :func:`train_hash_net`.
    with_labels : bool
        Tune the features with class labels first (Table IV's "with-labels").
    finetune_epochs : int
        Epochs of the feature head of the with-labels variant.
    heldout : float
        Fraction ``0 <= heldout < 1`` of the training images held out of the
        hash-function fit (:func:`heldout_rows`): the label stage still sees
        every training image, so the held-out images have hash labels, and
        :attr:`label_fit_report_` measures how many of their bits the network
        reproduces. 0 (default) trains on every training image.
    inputs : {"pixels", "features"}
        What the hash function reads (:data:`INPUTS`).
    n_fit_check : int
        Training images (the first ones fitted) on which :attr:`label_fit_` is measured.
    seed : int
    progress : bool

    Attributes (after ``fit``)
    ----------
    labels_ : HashLabels
    thresholds_ : float64 (n_bits,)
        ``epsilon^p``, used by the BatchNorm head.
    model_ : HashNet or FeatureHashNet
    history_ : dict
        Loss per epoch and training seconds.
    fit_rows_, heldout_rows_ : int arrays
        Training rows the network was fitted on, and the held-out rows.
    label_fit_ : float
        Fraction of the hash-label bits of (up to ``n_fit_check``) fitted
        training images that the trained network reproduces.
    label_fit_report_ : dict
        ``train`` and ``train_exact``: bitwise agreement with the hash labels
        and the fraction of images with every bit right, on all fitted
        training images; ``heldout`` and ``heldout_exact`` the same on the
        held-out images (only when ``heldout > 0``).
    """

    def __init__(self, n_bits: int, input_size: int = 32, *, config: str = "slice_batchnorm",
                 k: int = 12, hidden: int = 512, mlp_blocks: Optional[int] = None,
                 hidden_activation: str = "relu",
                 epochs: Sequence[int] = (6, 1, 1), lrs: Sequence[float] = (0.01, 1e-3, 1e-4),
                 batch_size: int = 100, momentum: float = 0.9, weight_decay: float = 0.004,
                 with_labels: bool = False, finetune_epochs: int = 30, heldout: float = 0.0,
                 inputs: str = "pixels", n_fit_check: int = 1000, seed: int = 0,
                 progress: bool = False):
        self.n_bits = _check_bits(n_bits)
        self.input_size = _check_input_size(input_size)
        self.encoder, self.head = _split_config(config)
        if self.encoder == "slice" and self.n_bits % SLICE_GROUPS:
            raise ValueError(f"the Slice encoder needs a multiple of {SLICE_GROUPS} bits, got "
                             f"{self.n_bits}")
        self.config = config
        self.k, self.hidden = _positive("k", k), _positive("hidden", hidden)
        self.mlp_blocks = None if mlp_blocks is None else _positive("mlp_blocks", mlp_blocks)
        _check_choice("hidden_activation", hidden_activation, HIDDEN_ACTIVATIONS)
        self.hidden_activation = hidden_activation
        self.epochs, self.lrs = _check_schedule(epochs, lrs)
        self.batch_size = _positive("batch_size", batch_size)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.with_labels = bool(with_labels)
        self.finetune_epochs = _positive("finetune_epochs", finetune_epochs)
        self.heldout = _check_heldout(heldout)
        _check_choice("inputs", inputs, INPUTS)
        self.inputs = inputs
        self.n_fit_check = _positive("n_fit_check", n_fit_check)
        self.seed, self.progress = int(seed), bool(progress)

    @property
    def supervised(self) -> bool:
        """Whether ``fit`` needs class labels (the with-labels variant)."""
        return self.with_labels

    def __repr__(self) -> str:
        return (f"DSTHJournal(n_bits={self.n_bits}, input_size={self.input_size}, "
                f"config={self.config!r}, k={self.k}, with_labels={self.with_labels}, "
                f"hidden_activation={self.hidden_activation!r}, heldout={self.heldout}, "
                f"inputs={self.inputs!r})")

    def _as_input(self, X) -> torch.Tensor:
        X = np.asarray(X)
        if self.inputs == "features":
            if X.ndim != 2:
                raise ValueError(f"inputs='features' reads feature rows (n, D), got shape "
                                 f"{X.shape}")
            return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        return as_image_tensor(X, (self.input_size, self.input_size, X.shape[-1]))

    def fit(self, images, features, labels=None) -> "DSTHJournal":
        """Label stage on ``features``, then the hash function trained on ``images``.

        Parameters
        ----------
        images : uint8 (n, S, S, C), or float (n, D) with ``inputs="features"``
        features : float (n, D)
            Backbone features of the same images, row for row.
        labels : int (n,), optional
            Class labels; required with ``with_labels``.
        """
        x = self._as_input(images)
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] != x.shape[0]:
            raise ValueError(f"features must be (n, D) for the {x.shape[0]} images, got "
                             f"{features.shape}")
        self.labels_ = _label_stage(features, labels, self.n_bits, self.k, self.seed,
                                    self.with_labels, self.finetune_epochs, self.progress)
        self.thresholds_ = self.labels_.thresholds
        fit_rows, held_rows = heldout_rows(x.shape[0], self.heldout, self.seed)
        self.fit_rows_, self.heldout_rows_ = fit_rows, held_rows
        # with nothing held out the network sees exactly the arrays it always saw
        x_fit, y_fit = ((x, self.labels_.bits) if held_rows.size == 0 else
                        (x[torch.from_numpy(fit_rows)], self.labels_.bits[fit_rows]))
        blocks = self.mlp_blocks
        if self.inputs == "features" and blocks is None:
            blocks = MLP_BLOCKS[self.input_size]
        self.model_, self.history_, _ = train_hash_net(
            x_fit, y_fit, encoder=self.encoder, head=self.head, hidden=self.hidden,
            mlp_blocks=blocks, epochs=self.epochs, lrs=self.lrs,
            batch_size=self.batch_size, momentum=self.momentum, weight_decay=self.weight_decay,
            hidden_activation=self.hidden_activation, seed=self.seed, progress=self.progress)
        m = min(self.n_fit_check, x_fit.shape[0])
        self.label_fit_ = float((self._codes(x_fit[:m]) == y_fit[:m]).mean())
        self.label_fit_report_ = _fit_report(self._codes, x, self.labels_.bits, fit_rows,
                                             held_rows)
        return self

    def _codes(self, x: torch.Tensor) -> np.ndarray:
        out = training.predict(self.model_, x)
        return codes_from_outputs(out, self.head, self.thresholds_)

    def encode(self, images) -> np.ndarray:
        """Codes of images (or features), uint8 {0, 1} of shape ``(N, n_bits)``."""
        if not hasattr(self, "model_"):
            raise RuntimeError("DSTHJournal is not fitted yet: call fit(images, features)")
        return self._codes(self._as_input(images))


class LabelCopy:
    """Reference: the hash labels carried to new images by their nearest training images.

    ``fit(features, labels=None)`` runs the label stage exactly as
    :class:`DSTHJournal` does (same graph, eigenmap, thresholds; with labels
    first through :func:`finetuned_features` when ``with_labels``) and keeps
    the training images' backbone features and hash labels. ``encode`` gives
    each image, per bit, the majority vote of the hash labels of its
    ``vote_k`` nearest fitted training images by cosine similarity of the
    backbone features (ties: the nearest one's bit). This is what a hash
    function that copies the labels perfectly from the label stage's own
    feature space would give: a bound for the hash-function stage, not a
    method of the paper. With labels, the neighbours are still found with
    the untuned backbone features (the tuning head needs class labels).

    Parameters
    ----------
    n_bits : int
    k : int
        Neighbours of the label stage's graph (``mu``).
    vote_k : int
        Neighbours whose labels vote for a new image.
    with_labels, finetune_epochs, heldout, seed, progress
        As in :class:`DSTHJournal` (held-out images do not vote).

    Attributes (after ``fit``): ``labels_``, ``fit_rows_``, ``heldout_rows_``,
    ``label_fit_report_`` as in :class:`DSTHJournal`.
    """

    def __init__(self, n_bits: int, *, k: int = 12, vote_k: int = 12, with_labels: bool = False,
                 finetune_epochs: int = 30, heldout: float = 0.0, seed: int = 0,
                 progress: bool = False):
        self.n_bits = _check_bits(n_bits)
        self.k, self.vote_k = _positive("k", k), _positive("vote_k", vote_k)
        self.with_labels = bool(with_labels)
        self.finetune_epochs = _positive("finetune_epochs", finetune_epochs)
        self.heldout = _check_heldout(heldout)
        self.seed, self.progress = int(seed), bool(progress)

    @property
    def supervised(self) -> bool:
        return self.with_labels

    def __repr__(self) -> str:
        return (f"LabelCopy(n_bits={self.n_bits}, k={self.k}, vote_k={self.vote_k}, "
                f"with_labels={self.with_labels}, heldout={self.heldout})")

    def fit(self, features, labels=None) -> "LabelCopy":
        X = np.ascontiguousarray(features, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"features must be (n, D), got shape {X.shape}")
        self.labels_ = _label_stage(X, labels, self.n_bits, self.k, self.seed, self.with_labels,
                                    self.finetune_epochs, self.progress)
        fit_rows, held_rows = heldout_rows(X.shape[0], self.heldout, self.seed)
        if self.vote_k > fit_rows.size:
            raise ValueError(f"vote_k={self.vote_k} is more than the {fit_rows.size} fitted "
                             "training images")
        self.fit_rows_, self.heldout_rows_ = fit_rows, held_rows
        self.features_, self.bits_ = X[fit_rows], self.labels_.bits[fit_rows]
        self.label_fit_report_ = _fit_report(self.encode, X, self.labels_.bits, fit_rows,
                                             held_rows)
        return self

    def encode(self, features) -> np.ndarray:
        """Codes, uint8 {0, 1} ``(N, n_bits)``: per-bit majority of the ``vote_k`` nearest."""
        if not hasattr(self, "bits_"):
            raise RuntimeError("LabelCopy is not fitted yet: call fit(features)")
        X = np.ascontiguousarray(features, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.features_.shape[1]:
            raise ValueError(f"features must be (N, {self.features_.shape[1]}), got shape "
                             f"{X.shape}")
        if X.shape[0] == 0:
            return np.zeros((0, self.n_bits), dtype=np.uint8)
        idx, _ = graph.knn_query(X, self.features_, self.vote_k, metric="cosine")
        votes = self.bits_[idx].sum(axis=1, dtype=np.int64)  # (N, t) ones among the k
        twice = 2 * votes
        codes = (twice > self.vote_k).astype(np.uint8)
        tie = twice == self.vote_k
        nearest = self.bits_[idx[:, 0]]
        codes[tie] = nearest[tie]
        return codes


def _check_bits(n_bits) -> int:
    return config.check_bits(n_bits)[0]


# ---------------------------------------------------------------------------
# data: one protocol, images, labels and backbone features


@dataclass
class Setting:
    """A dataset under one protocol, with everything the methods read.

    Arrays hold only the images the split uses (its training images, queries
    and database), in pool order; ``split`` indexes them.

    Attributes
    ----------
    dataset : str
    split : hashstudy.protocols.Split
        Indices into the arrays below (``record()`` gives the protocol).
    images : uint8 (M, S, S, C)
    labels : int64 (M,)
    features : {backbone: float32 (M, D)}
    sources : {name: str}
    """

    dataset: str
    split: protocols.Split
    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    features: dict = field(repr=False)
    sources: dict = field(default_factory=dict)

    @property
    def index(self) -> np.ndarray:
        """Row indices ``(M, 1)``: the ``X`` that :func:`hashstudy.evaluation.compare` gets."""
        return np.arange(len(self.labels))[:, None]

    @property
    def input_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def test_rows(self) -> np.ndarray:
        """Queries and database together (the test images), sorted."""
        return np.union1d(self.split.query, self.split.database)


#: Datasets whose images are another dataset's (features are computed once, for the other).
_SAME_IMAGES = {"cifar100-coarse": "cifar100"}


def _rows_features(ds, rows: np.ndarray, backbone: str, input_size: int, whole: bool,
                   progress: bool) -> np.ndarray:
    from . import features as backbones

    if whole or rows.size == len(ds):
        feats, _ = backbones.dataset_features(ds, backbone=backbone, input_size=input_size,
                                              progress=progress)
        return feats[rows]
    subset = data.Dataset(ds.name, ds.split, ds.images[rows], ds.labels[rows], ds.classes,
                          f"{ds.source} ({rows.size} of its {len(ds)} images)")
    return backbones.dataset_features(subset, backbone=backbone, input_size=input_size,
                                      progress=progress)[0]


def load_setting(dataset: str, backbones: Sequence[str], *, query_per_class: int,
                 n_train: Optional[int], seed: int = 0, input_size: int = 128,
                 whole_split: Sequence[str] = (), root=None, progress: bool = False) -> Setting:
    """Images, labels and backbone features of ``dataset`` under the study's DSTH protocol.

    The protocol (:func:`hashstudy.dsth.test_query_split`): ``query_per_class``
    random test images per class are the queries, the other test images the
    database, and ``n_train`` random training images (all when ``None``)
    train every method. The paper states the train/test split sizes only
    (sec. IV-A); evaluating on test images alone makes every database item
    out-of-sample, the property the paper stresses.

    Parameters
    ----------
    dataset : str
        A name of :mod:`hashstudy.data` with labelled train and test splits.
    backbones : sequence of str
        Feature extractors (:data:`hashstudy.features.BACKBONES`).
    query_per_class, n_train, seed
        The protocol's sizes and seed.
    input_size : int
        Backbone input side in pixels.
    whole_split : sequence of str
        Backbones whose features are taken from the cache of whole splits
        (shared with other notebooks; extracted for every image of a split
        when missing). The other backbones are run on the images the split
        uses only (the whole test split is one such cache anyway).
    root : path, optional
        Data root.

    Returns
    -------
    Setting
    """
    from . import dsth

    for b in whole_split:
        config.check_choice("backbone in whole_split", b, backbones)
    full = dsth.test_query_split(dataset, seed=seed, query_per_class=query_per_class,
                                 n_train=n_train, root=root)
    train = data.load(dataset, "train", root=root)
    test = data.load(dataset, "test", root=root)
    # the same images under another label set share one feature cache
    twin = _SAME_IMAGES.get(dataset)
    f_train, f_test = ((data.load(twin, "train", root=root), data.load(twin, "test", root=root))
                       if twin else (train, test))
    n_tr = len(train)
    used = np.union1d(np.union1d(full.train, full.query), full.database)
    tr_rows, te_rows = used[used < n_tr], used[used >= n_tr] - n_tr
    images = np.concatenate([train.images[tr_rows], test.images[te_rows]])
    labels = np.concatenate([train.labels[tr_rows], test.labels[te_rows]])
    feats = {}
    for b in backbones:
        parts = [_rows_features(ds, rows, b, input_size, b in whole_split, progress)
                 for ds, rows in ((f_train, tr_rows), (f_test, te_rows)) if rows.size]
        feats[b] = np.concatenate(parts).astype(np.float32)
    pos = np.searchsorted(used, np.arange(n_tr + len(test)))
    split = dataclasses.replace(full, query=pos[full.query], database=pos[full.database],
                                train=pos[full.train])
    return Setting(dataset, split, images, labels, feats,
                   {f"{dataset} train": train.source, f"{dataset} test": test.source})


# ---------------------------------------------------------------------------
# hashers on pool rows, for evaluation.compare


class PoolRows:
    """A hasher fed with rows of a :class:`Setting`, selected by index.

    :func:`hashstudy.evaluation.compare` passes ``X[split.train]`` with ``X``
    the setting's index column, so each method reads its own representation
    of the same images (pixels, backbone features, or both).

    Parameters
    ----------
    hasher : object with ``fit`` and ``encode``
    fit_inputs : callable ``(rows) -> tuple``
        Positional arguments of ``hasher.fit`` for those rows (labels appended
        when ``supervised``).
    encode_inputs : callable ``(rows) -> array``
    supervised : bool
    """

    def __init__(self, hasher, fit_inputs, encode_inputs, supervised: bool = False):
        self.hasher, self.fit_inputs, self.encode_inputs = hasher, fit_inputs, encode_inputs
        self.supervised = supervised

    def fit(self, index, y=None) -> "PoolRows":
        rows = np.asarray(index).ravel()
        args = self.fit_inputs(rows)
        self.hasher.fit(*args, y) if self.supervised else self.hasher.fit(*args)
        return self

    def encode(self, index) -> np.ndarray:
        return self.hasher.encode(self.encode_inputs(np.asarray(index).ravel()))


def _factory(make, supervised: bool, fitted: dict):
    def factory(bits):
        h = make(bits)
        fitted[bits] = h.hasher
        return h
    factory.supervised = supervised
    factory.fitted = fitted
    return factory


def dsth_factories(setting: Setting, backbone: str, configs: Sequence[str] = CONFIGS, *,
                   with_labels: bool = False, suffix: str = "", inputs: str = "pixels",
                   **params) -> dict:
    """``{name: factory(bits)}`` of DSTH configurations for :func:`hashstudy.evaluation.compare`.

    Each factory builds a :class:`DSTHJournal` whose label stage reads
    ``setting.features[backbone]`` and whose hash function reads the pixels
    (or, with ``inputs="features"``, the same backbone features). A
    factory's ``fitted`` dict keeps the fitted hasher of each code length
    (for :attr:`DSTHJournal.label_fit_report_` and the hash labels).

    Parameters
    ----------
    configs : names in :data:`CONFIGS`
    with_labels : bool
        The with-labels variant (factories are then ``supervised``).
    suffix : str
        Appended to each name (e.g. ``"_labels"``).
    inputs : {"pixels", "features"}
        What the hash function reads (:data:`INPUTS`).
    **params
        Keyword arguments of :class:`DSTHJournal`.
    """
    config.check_choice("backbone", backbone, setting.features)
    config.check_choice("inputs", inputs, INPUTS)
    feats = setting.features[backbone]
    source = feats if inputs == "features" else setting.images
    out = {}
    for c in configs:
        _split_config(c)

        def make(bits, c=c):
            h = DSTHJournal(bits, setting.input_size, config=c, with_labels=with_labels,
                            inputs=inputs, **params)
            return PoolRows(h, lambda r: (source[r], feats[r]), lambda r: source[r],
                            supervised=with_labels)

        out[c + suffix] = _factory(make, with_labels, {})
    return out


def label_copy_factory(setting: Setting, backbone: str, *, with_labels: bool = False,
                       **params):
    """A factory of :class:`LabelCopy` on ``setting.features[backbone]`` (label stage and votes).

    ``params`` are keyword arguments of :class:`LabelCopy`; the factory is
    ``supervised`` with ``with_labels``.
    """
    config.check_choice("backbone", backbone, setting.features)
    feats = setting.features[backbone]

    def make(bits):
        return PoolRows(LabelCopy(bits, with_labels=with_labels, **params),
                        lambda r: (feats[r],), lambda r: feats[r], supervised=with_labels)

    return _factory(make, with_labels, {})


def baseline_factories(setting: Setting, backbone: str, methods: Sequence[str], *,
                       params: Optional[Mapping[str, dict]] = None, seed: int = 0) -> dict:
    """``{method: factory(bits)}`` of shallow baselines on ``setting.features[backbone]``."""
    config.check_choice("backbone", backbone, setting.features)
    feats = setting.features[backbone]
    params = dict(params or {})
    out = {}
    for m in methods:
        config.check_choice("baseline", m, shallow.METHODS)
        sup = m in shallow.SUPERVISED

        def make(bits, m=m, sup=sup):
            h = shallow.make(m, bits, seed=seed, **params.get(m, {}))
            return PoolRows(h, lambda r: (feats[r],), lambda r: feats[r], supervised=sup)

        out[m] = _factory(make, sup, {})
    return out


def cnnh_factory(setting: Setting, **params):
    """A supervised factory of :class:`hashstudy.cnnh.CNNH` on the setting's pixels."""
    shape = setting.images.shape[1:]

    def make(bits):
        return PoolRows(CNNH(bits, shape, **params), lambda r: (setting.images[r],),
                        lambda r: setting.images[r], supervised=True)

    return _factory(make, True, {})


def evaluate_methods(setting: Setting, factories: Mapping, bits: Sequence[int], prefix: str,
                     metric_keys: Sequence[str] = METRIC_KEYS):
    """Fit, encode and evaluate ``factories`` at each code length on the setting's split.

    :func:`hashstudy.evaluation.compare` with the setting's index rows as
    ``X``; the returned long table gets a ``prefix`` column (the metric-key
    prefix, e.g. ``"cifar10/efficientnet_lite0"``).

    Returns
    -------
    table : pandas.DataFrame (``prefix, method, bits, metric, value``)
    codes : {(method, bits): hashstudy.evaluation.Codes}
    """
    from . import evaluation

    table, codes = evaluation.compare(list(factories), bits, setting.index, setting.labels,
                                      setting.split, extra=dict(factories),
                                      metric_keys=list(metric_keys), progress=False)
    table.insert(0, "prefix", prefix)
    return table, codes


def component_analysis(setting: Setting, backbones: Sequence[str], configs: Sequence[str],
                       n_bits: int, **params):
    """Table III on one dataset: every configuration on every backbone's hash labels.

    For each backbone, the configurations' :class:`DSTHJournal` hashers
    (``params`` as in :class:`DSTHJournal`) are evaluated at ``n_bits`` with
    :func:`evaluate_methods` under the prefix ``"<dataset>/<backbone>"``.

    Returns
    -------
    table : pandas.DataFrame
        Long table of every backbone, with a ``prefix`` column.
    codes : {(backbone, config): hashstudy.evaluation.Codes}
    fitted : {(backbone, config): DSTHJournal}
    """
    import pandas as pd

    tables, codes, fitted = [], {}, {}
    for b in backbones:
        factories = dsth_factories(setting, b, configs, **params)
        t, c = evaluate_methods(setting, factories, [n_bits], f"{setting.dataset}/{b}")
        tables.append(t)
        for cfg in configs:
            codes[(b, cfg)] = c[(cfg, n_bits)]
            fitted[(b, cfg)] = factories[cfg].fitted[n_bits]
    return pd.concat(tables, ignore_index=True), codes, fitted


# ---------------------------------------------------------------------------
# diagnostics and tables


def label_quality(setting: Setting, features, n_bits: int, k: int = 12, seed: int = 0,
                  metric_keys: Sequence[str] = ("max_f@0.5", "map@1000", "hd3p")) -> dict:
    """How good the hash labels of the training images are, measured with class labels.

    ``knn_precision``: the fraction of the graph's kNN pairs (eq. 7) whose
    images share a class; ``components``: connected components of the graph;
    ``ones``: mean fraction of 1-bits; then ``metric_keys`` of the hash labels
    used as codes, every tenth training image (by position) a query against
    the other training images.

    Parameters
    ----------
    setting : Setting
    features : float (n_train, D)
        Label-stage features of ``setting.split.train``, row for row.
    n_bits, k, seed : as in :func:`hash_labels`.

    Returns
    -------
    dict of str to float
    """
    y = setting.labels[setting.split.train]
    hl = hash_labels(features, n_bits, k, seed)
    q = np.arange(len(y)) % 10 == 0
    out = {"knn_precision": graph.label_precision(hl.neighbors, y),
           "components": float(hl.components), "ones": float(hl.bits.mean())}
    out.update(metrics.evaluate(hl.bits[q], hl.bits[~q], y[q], y[~q], list(metric_keys)))
    return out


class _Classifier(nn.Module):
    """SimpleNet + Caffe CIFAR-10 quick's classifier (``ip1`` 64 units, ``ip2`` classes)."""

    def __init__(self, input_size: int, n_classes: int, channels: int = 3):
        super().__init__()
        self.standardize = _Standardize(channels)
        self.simplenet = SimpleNet(input_size, channels)
        self.head = nn.Sequential(nn.Linear(self.simplenet.out_features, 64), nn.ReLU(),
                                  nn.Linear(64, n_classes))

    def forward(self, x):
        return self.head(self.simplenet(self.standardize(x)))


def classification_accuracy(setting: Setting, backbones: Sequence[str], *,
                            epochs: Sequence[int] = (6, 1, 1),
                            lrs: Sequence[float] = (0.01, 1e-3, 1e-4), batch_size: int = 100,
                            momentum: float = 0.9, weight_decay: float = 0.004, seed: int = 0,
                            progress: bool = False) -> dict:
    """Table II: test accuracy of each backbone and of SimpleNet, trained on the training images.

    Backbones: a multinomial logistic regression (scikit-learn, lbfgs,
    ``C = 1``) on standardised frozen features. SimpleNet: Table I's network
    with Caffe's "CIFAR-10 quick" classifier (64 hidden units), trained from
    scratch by cross-entropy with the hash function's SGD schedule. Both
    train on ``setting.split.train`` and are scored on the test images
    (queries and database).

    Returns
    -------
    {name: accuracy}, ``name`` a backbone or ``"simplenet"``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr, te = setting.split.train, setting.test_rows
    ytr, yte = setting.labels[tr], setting.labels[te]
    out = {}
    for b in backbones:
        config.check_choice("backbone", b, setting.features)
        X = setting.features[b]
        scaler = StandardScaler().fit(X[tr])
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(X[tr]), ytr)
        out[b] = float((clf.predict(scaler.transform(X[te])) == yte).mean())
    epochs, lrs = _check_schedule(epochs, lrs)
    x = as_image_tensor(setting.images, setting.images.shape[1:])
    n_classes = int(setting.labels.max()) + 1
    key = dict(data=array_digest(x[tr], ytr), classes=n_classes, epochs=epochs, lrs=lrs,
               batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed)

    def build():
        torch.manual_seed(seed)
        return _Classifier(setting.input_size, n_classes, x.shape[1])

    def train(model):
        model.standardize.set_stats(x[tr])
        return _run_phases(model, (x[tr], torch.from_numpy(ytr)),
                           lambda m, xb, yb: nn.functional.cross_entropy(m(xb), yb),
                           epochs=epochs, lrs=lrs, batch_size=batch_size, momentum=momentum,
                           weight_decay=weight_decay, seed=seed, progress=progress,
                           desc="SimpleNet classifier")

    model, _, _ = training.cached_model("dsth-journal-simplenet-cls", key, build, train)
    pred = training.predict(model, x[te]).argmax(axis=1)
    out["simplenet"] = float((pred == yte).mean())
    return out


def wide_table(values: Mapping[str, float], rows: Mapping, columns: Sequence[str] = TABLE_METRICS):
    """Lay out metrics as a table: one row per ``rows`` entry, one column per metric.

    Parameters
    ----------
    values : {key: value}
        E.g. ``report.metrics`` or paper numbers.
    rows : {row label (str or tuple): key prefix}
        Row ``r`` holds ``values[f"{rows[r]}/{column}"]`` (NaN when absent).
    columns : metric names

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    labels = list(rows)
    index = (pd.MultiIndex.from_tuples(labels) if labels and isinstance(labels[0], tuple)
             else pd.Index(labels))
    body = [[values.get(f"{rows[r]}/{c}", np.nan) for c in columns] for r in labels]
    return pd.DataFrame(body, index=index, columns=list(columns), dtype=float)


def radar(frame, *, title: str = "", scale: float = 1.0, paper=None, paper_source: str = ""):
    """Radar chart of Fig. 3(b): one polygon per row of ``frame``, one axis per column.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows are configurations, columns metrics in [0, 1].
    scale : float
        Multiplies every value (the paper multiplies some axes by 1.23 "to
        highlight the curve"; 1 draws the values as they are).
    paper : pandas.DataFrame, optional
        The paper's values in the same layout (rows a subset of ``frame``'s,
        NaN where the paper has none); each is an open star edged in its
        configuration's colour, legend ``paper (<paper_source>)``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from . import plots

    cols = list(frame.columns)
    if len(cols) < 3:
        raise ValueError("a radar chart needs at least three metrics")
    angles = np.linspace(0, 2 * np.pi, len(cols), endpoint=False)
    fig, ax = plt.subplots(figsize=(5.2, 5.2), subplot_kw={"polar": True})
    look = plots.styles([str(n) for n in frame.index])
    for name, row in frame.iterrows():
        v = np.asarray(row, dtype=float) * scale
        colour = look[str(name)]["color"]
        ax.plot(np.r_[angles, angles[:1]], np.r_[v, v[:1]], color=colour, lw=1.6,
                label=str(name))
        ax.fill(np.r_[angles, angles[:1]], np.r_[v, v[:1]], color=colour, alpha=0.08)
    top = float(np.nanmax(frame.to_numpy(dtype=float))) * scale
    if paper is not None:
        for name, row in paper.reindex(columns=cols).iterrows():
            if str(name) not in look:
                continue
            marks = plots.mark_paper(ax, angles, np.asarray(row, dtype=float) * scale,
                                     source=paper_source or "paper", marker="*")
            marks.set_markeredgecolor(look[str(name)]["color"])
        if np.isfinite(paper.to_numpy(dtype=float)).any():
            top = max(top, float(np.nanmax(paper.to_numpy(dtype=float))) * scale)
    ax.set_xticks(angles)
    ax.set_xticklabels([c.replace("precision@recall", "P@R ") for c in cols], fontsize=8)
    ax.set_ylim(0, max(1.0, top))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.05), frameon=False)
    if title:
        ax.set_title(title, fontsize=10, pad=18)
    return fig
