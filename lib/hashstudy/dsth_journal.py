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
With labels (sec. III-A, sec. IV-C, Table IV)
    "We finetune the network with labels to extract features." On a CPU the
    whole backbone is not fine-tuned end to end. By default (notebook
    parameter ``label_features="finetuned_backbone"``,
    :func:`finetuned_backbone_features`) Lite0's top block stage, head
    convolution and a classifier are fine-tuned with the training images'
    labels on cached stage-4 maps (:mod:`hashstudy.finetune`), and its pooled
    1,280-D activations are the features the same label stage uses; the same
    network is Table II's fine-tuned row. The alternative
    (``label_features="feature_head"``, :func:`finetuned_features`, also the
    fallback of a profile without a ``finetune`` size) trains a two-layer head
    ``Linear(D, 512) -> ReLU -> Linear(512, classes)`` by cross-entropy on the
    frozen backbone features of the training images and uses its class scores
    (logits).
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
    :func:`hashstudy.evaluation.run`. :func:`classification_accuracy`
    gives Table II, :func:`label_quality` measures the hash labels directly,
    and :func:`wide_table` lays out Tables III and IV; the figures are in
    :mod:`hashstudy.plots.dsth_journal`.

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

Notebook 05, one call per section
    :func:`toy_label_stage` and :func:`toy_slice_groups` run eq. 7-14 and the
    Slice encoder's grouping on inputs small enough to check by eye.
    :func:`plan` checks the notebook's parameters and derives the rest from
    the profile (:data:`PROFILE_SIZES`); :func:`load_for_report`,
    :func:`table_ii`, :func:`hash_label_tables`, :func:`table_iii`,
    :func:`without_labels`, :func:`pixel_baselines`, :func:`with_labels`,
    :func:`references` and :func:`other_datasets` each run one section and
    record its metrics and tables in the notebook's report;
    :func:`checks_table`, :func:`paper_vs_ours` and :func:`write_summary`
    give the comparisons the claims ledger does not decide, the paper's
    numbers beside ours, and ``summary.md``.

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
from .cnnh import CNNH, as_image_tensor

__all__ = [
    "TABLE_I", "INPUT_SIZES", "ENCODERS", "HEADS", "CONFIGS", "TABLE_METRICS", "METRIC_KEYS",
    "HIDDEN_ACTIVATIONS", "INPUTS",
    "SimpleNet", "MLPEncoder", "SliceEncoder", "HashNet", "FeatureHashNet", "eq18_loss",
    "codes_from_outputs", "HashLabels", "hash_labels", "finetuned_features", "train_hash_net",
    "label_agreement", "heldout_rows", "DSTHJournal", "LabelCopy",
    "Setting", "load_setting", "PoolRows", "dsth_factories", "label_copy_factory",
    "baseline_factories",
    "cnnh_factory", "evaluate_methods", "component_analysis", "label_quality",
    "classification_accuracy", "wide_table",
    "toy_label_stage", "toy_slice_groups",
    "can_finetune", "setting_maps", "finetuned_backbone", "finetuned_backbone_features",
    "NOTEBOOK", "PROFILE_SIZES", "BACKBONE_NAMES", "LABEL_FEATURES", "SECTIONS", "Plan", "plan", "load_for_report", "table_ii",
    "hash_label_tables", "table_iii", "without_labels", "pixel_baselines", "with_labels",
    "FIT_COLUMNS", "references", "other_datasets", "checks_table", "WHY_THEY_DIFFER",
    "PAPER_NOTES", "paper_differences", "paper_vs_ours", "write_summary",
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

    def divide_and_encode(self, hidden: torch.Tensor) -> torch.Tensor:
        """The 1024-D hidden vectors -> the codes' outputs, group ``g`` to bits ``q g .. q g + q - 1``."""
        parts = hidden.split(self.group_width, dim=1)
        return torch.cat([g(p) for g, p in zip(self.groups, parts)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.divide_and_encode(self.fc(x))


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
    parts = dict(stage="dsth-journal-labels", data=cache.array_digest(features), n_bits=n_bits, k=k,
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
                       progress: bool = False, device: Optional[str] = None) -> np.ndarray:
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
    device : str, optional
        Where the networks train and run (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Weights
        trained on a GPU are cached apart from the CPU's.

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
    key = dict(data=cache.array_digest(X, y), hidden=hidden, epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed)
    device = training.default_device(device)

    def build():
        torch.manual_seed(seed)
        return _FeatureHead(X.shape[1], n_classes, _positive("hidden", hidden))

    def train(model):
        hist = training.fit(model, (Xs, yt),
                            lambda m, xb, yb: nn.functional.cross_entropy(m(xb), yb),
                            epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                            seed=seed, progress=progress, desc="fine-tuned feature head",
                            device=device)
        return {"loss": hist.loss, "seconds": hist.seconds}

    model, _, _ = training.cached_model("dsth-journal-finetune", key, build, train, device=device)
    return training.predict(model, Xs, device=device).astype(np.float32)


# ---------------------------------------------------------------------------
# hash-function stage


def _run_phases(model, tensors, loss_fn, *, epochs, lrs, batch_size, momentum, weight_decay,
                seed, progress, desc, device=None) -> dict:
    """SGD in phases of decreasing learning rate (sec. IV-C); returns the loss history."""
    losses, seconds = [], 0.0
    for phase, (ep, lr) in enumerate(zip(epochs, lrs)):
        if ep == 0:
            continue
        hist = training.fit(model, tensors, loss_fn, epochs=ep, batch_size=batch_size, lr=lr,
                            optimizer="sgd", momentum=momentum, weight_decay=weight_decay,
                            seed=seed + phase, progress=progress, desc=f"{desc} (lr {lr:g})",
                            device=device)
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
                   hidden_activation: str = "relu", seed: int = 0, progress: bool = False,
                   device: Optional[str] = None) -> tuple[nn.Module, dict, bool]:
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
    device : str, optional
        Where the networks train and run (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Weights
        trained on a GPU are cached apart from the CPU's.

    Returns
    -------
    model, info, loaded : HashNet or FeatureHashNet (eval mode, on ``device``),
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
    key = dict(data=cache.array_digest(images, targets), arch=dict(arch), epochs=epochs, lrs=lrs,
               batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed)
    # the default reading stays out of the key, so weights cached before the parameter
    # existed are still found
    if hidden_activation != "relu":
        key["arch"]["hidden_activation"] = hidden_activation
    arch["hidden_activation"] = hidden_activation
    device = training.default_device(device)

    def build():
        torch.manual_seed(seed)
        return net(**arch)

    def train(model):
        model.set_input_stats(images)
        y = torch.from_numpy(targets.astype(np.float32))
        return _run_phases(model, (images, y), lambda m, xb, yb: eq18_loss(m(xb), yb),
                           epochs=epochs, lrs=lrs, batch_size=batch_size, momentum=momentum,
                           weight_decay=weight_decay, seed=seed, progress=progress,
                           desc=f"{what} {encoder}+{head} {n_bits} bits", device=device)

    return training.cached_model(name, key, build, train, device=device)


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
                 finetune_epochs: int, progress: bool, device=None) -> HashLabels:
    """The hash labels of the training images (sec. III-A), with labels first if asked."""
    if with_labels:
        if labels is None:
            raise ValueError("with_labels=True needs the training images' class labels")
        features = finetuned_features(features, labels, epochs=finetune_epochs, seed=seed,
                                      progress=progress, device=device)
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
    device : str, optional
        Where the networks train and run (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Weights
        trained on a GPU are cached apart from the CPU's.

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
                 progress: bool = False, device: Optional[str] = None):
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
        if device is not None:
            training.default_device(device)  # an unknown device fails here
        self.device = device

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
                                    self.with_labels, self.finetune_epochs, self.progress,
                                    self.device)
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
            hidden_activation=self.hidden_activation, seed=self.seed, progress=self.progress,
            device=self.device)
        m = min(self.n_fit_check, x_fit.shape[0])
        self.label_fit_ = float((self._codes(x_fit[:m]) == y_fit[:m]).mean())
        self.label_fit_report_ = _fit_report(self._codes, x, self.labels_.bits, fit_rows,
                                             held_rows)
        return self

    def _codes(self, x: torch.Tensor) -> np.ndarray:
        out = training.predict(self.model_, x, device=training.default_device(self.device))
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
    with_labels, finetune_epochs, heldout, seed, progress, device
        As in :class:`DSTHJournal` (held-out images do not vote; ``device`` is
        where the with-labels feature head trains).

    Attributes (after ``fit``): ``labels_``, ``fit_rows_``, ``heldout_rows_``,
    ``label_fit_report_`` as in :class:`DSTHJournal`.
    """

    def __init__(self, n_bits: int, *, k: int = 12, vote_k: int = 12, with_labels: bool = False,
                 finetune_epochs: int = 30, heldout: float = 0.0, seed: int = 0,
                 progress: bool = False, device: Optional[str] = None):
        self.n_bits = _check_bits(n_bits)
        if device is not None:
            training.default_device(device)  # an unknown device fails here
        self.device = device
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
                                    self.finetune_epochs, self.progress, self.device)
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
    pool_rows : int64 (M,), optional
        Row ``i``'s index in the dataset's pool (train then test split, the order
        of :func:`hashstudy.protocols.load_pool`), so that pool-level caches (the
        fine-tuned backbone's features, :mod:`hashstudy.finetune`) map onto the
        setting's rows: ``pool[pool_rows]``. For a dataset whose images are
        another's (:data:`_SAME_IMAGES`, CIFAR-100 coarse) the rows are the same
        in the other dataset's pool.
    root : path, optional
        The data root the setting was loaded from.
    """

    dataset: str
    split: protocols.Split
    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    features: dict = field(repr=False)
    sources: dict = field(default_factory=dict)
    pool_rows: Optional[np.ndarray] = field(default=None, repr=False)
    root: Optional[object] = field(default=None, repr=False)

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
                   {f"{dataset} train": train.source, f"{dataset} test": test.source},
                   pool_rows=used.astype(np.int64), root=root)


def _pool_dataset(dataset: str) -> str:
    """The dataset whose pool holds ``dataset``'s images (itself, or its twin)."""
    return _SAME_IMAGES.get(dataset, dataset)


def can_finetune(setting: Setting) -> bool:
    """Whether the fine-tuned backbone (:mod:`hashstudy.finetune`) can run on the setting:
    RGB images of a dataset with train and test splits, and known pool rows."""
    return (setting.pool_rows is not None and setting.images.ndim == 4
            and setting.images.shape[-1] == 3)


def _finetune_identity(setting: Setting, input_size: int) -> dict:
    """The cache identity :func:`hashstudy.finetune.finetuned_features` gives the fine-tuning
    on the setting's training rows, so Table II and the with-labels features share one network."""
    from . import finetune

    name = _pool_dataset(setting.dataset)
    train_index = np.asarray(setting.pool_rows[setting.split.train], dtype=np.int64)
    return {"dataset": name,
            "pool_maps": [finetune.maps_cache_path_for(name, s, input_size, setting.root)
                          for s in ("train", "test")],
            "rows": cache.array_digest(train_index), "input_size": int(input_size)}


def setting_maps(setting: Setting, rows, input_size: int, *, mirror: bool = False,
                 progress: bool = False) -> np.ndarray:
    """Lite0's cached stage-4 maps (:func:`hashstudy.finetune.stage_maps`) of the setting's
    ``rows``, in that order: float16 (len(rows), 112, s, s), read from the pool's splits."""
    from . import finetune

    name = _pool_dataset(setting.dataset)
    tr = finetune.stage_maps(name, "train", input_size, mirror=mirror, root=setting.root,
                             progress=progress)
    te = finetune.stage_maps(name, "test", input_size, mirror=mirror, root=setting.root,
                             progress=progress)
    pool = np.asarray(setting.pool_rows)[np.asarray(rows, dtype=np.int64)]
    out = np.empty((len(pool), *tr.shape[1:]), dtype=np.float16)
    in_train = pool < len(tr)
    if in_train.any():
        out[in_train] = tr[pool[in_train]]
    if (~in_train).any():
        out[~in_train] = te[pool[~in_train] - len(tr)]
    return out


def finetuned_backbone(setting: Setting, *, input_size: int, stages: int = 1, epochs: int = 6,
                       seed: int = 0, progress: bool = False, device: Optional[str] = None):
    """Lite0's top fine-tuned with class labels on the setting's training images
    (:func:`hashstudy.finetune.finetune`, mirrored maps too).

    The weights are cached under the key that
    :func:`hashstudy.finetune.finetuned_features` uses for the same training rows
    and settings, so Table II's fine-tuned row and the with-labels features
    (:func:`finetuned_backbone_features`) read one network.

    Returns
    -------
    hashstudy.finetune.FineTuned
    """
    from . import finetune

    if not can_finetune(setting):
        raise ValueError(f"{setting.dataset}: the fine-tuned backbone needs RGB images and the "
                         "setting's pool rows")
    train = setting.split.train
    maps = setting_maps(setting, train, input_size, progress=progress)
    mirrored = setting_maps(setting, train, input_size, mirror=True, progress=progress)
    return finetune.finetune(maps, setting.labels[train], stages=stages, epochs=epochs,
                             mirror_maps=mirrored, seed=seed,
                             identity=_finetune_identity(setting, input_size),
                             progress=progress, device=device,
                             desc=f"{finetune.BACKBONE} on {len(train)} {setting.dataset} images")


def finetuned_backbone_features(setting: Setting, *, input_size: int, stages: int = 1,
                                epochs: int = 6, seed: int = 0,
                                progress: bool = False) -> np.ndarray:
    """The fine-tuned backbone's pooled 1,280-D features of every row of the setting.

    :func:`hashstudy.finetune.finetuned_features` on the pool (fine-tuned on
    ``setting.pool_rows[setting.split.train]`` with the setting's labels), rows
    ``setting.pool_rows`` taken. Float32 (M, 1280).
    """
    from . import finetune

    if not can_finetune(setting):
        raise ValueError(f"{setting.dataset}: the fine-tuned backbone needs RGB images and the "
                         "setting's pool rows")
    labels = np.concatenate([data.load(setting.dataset, s, root=setting.root).labels
                             for s in ("train", "test")]).astype(np.int64)
    if not np.array_equal(labels[setting.pool_rows], setting.labels):
        raise ValueError(f"{setting.dataset}: the pool's labels do not match the setting's rows")
    feats, _ = finetune.finetuned_features(
        _pool_dataset(setting.dataset), setting.pool_rows[setting.split.train], labels,
        input_size=input_size, stages=stages, epochs=epochs, seed=seed, root=setting.root,
        progress=progress)
    return np.ascontiguousarray(feats[setting.pool_rows], dtype=np.float32)


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

    :func:`hashstudy.evaluation.run` with the setting's index rows as
    ``X``; the returned long table gets a ``prefix`` column (the metric-key
    prefix, e.g. ``"cifar10/efficientnet_lite0"``).

    Returns
    -------
    hashstudy.evaluation.Result
        ``table`` (``prefix, method, bits, metric, value``), ``codes`` and
        ``fitted``; unpacks to ``(table, codes)`` as before.
    """
    from . import evaluation

    result = evaluation.run(dict(factories), bits, setting.index, setting.labels, setting.split,
                            metric_keys=list(metric_keys), progress=False)
    result.table.insert(0, "prefix", prefix)
    return result


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
                            finetune: Optional[Mapping] = None,
                            progress: bool = False, device: Optional[str] = None) -> dict:
    """Table II: test accuracy of each backbone and of SimpleNet, trained on the training images.

    Backbones: a multinomial logistic regression (scikit-learn, lbfgs,
    ``C = 1``) on standardised frozen features. With ``finetune`` (a
    :data:`PROFILE_SIZES` ``finetune`` entry: ``input_size``, ``stages``,
    ``epochs``) and a setting :func:`can_finetune` reads, the fine-tuned
    backbone too (:func:`finetuned_backbone`: Lite0's top stage(s) and
    classifier fine-tuned with labels on the training images' cached maps and
    their mirrors), under the name :data:`hashstudy.finetune.BACKBONE`: the
    paper's Table II networks are fine-tuned on the target images. SimpleNet: Table I's network
    with Caffe's "CIFAR-10 quick" classifier (64 hidden units), trained from
    scratch by cross-entropy with the hash function's SGD schedule. Both
    train on ``setting.split.train`` and are scored on the test images
    (queries and database).

    SimpleNet trains on ``device`` (see :func:`hashstudy.training.default_device`).

    Returns
    -------
    {name: accuracy}, ``name`` a backbone, ``"efficientnet_lite0_ft"`` or ``"simplenet"``.
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
    if finetune is not None and can_finetune(setting):
        from . import finetune as ft

        fitted = finetuned_backbone(setting, input_size=finetune["input_size"],
                                    stages=finetune["stages"], epochs=finetune["epochs"],
                                    seed=seed, progress=progress, device=device)
        out[ft.BACKBONE] = fitted.accuracy(setting_maps(setting, te, finetune["input_size"]),
                                           yte)
    epochs, lrs = _check_schedule(epochs, lrs)
    x = as_image_tensor(setting.images, setting.images.shape[1:])
    n_classes = int(setting.labels.max()) + 1
    key = dict(data=cache.array_digest(x[tr], ytr), classes=n_classes, epochs=epochs, lrs=lrs,
               batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed)
    device = training.default_device(device)

    def build():
        torch.manual_seed(seed)
        return _Classifier(setting.input_size, n_classes, x.shape[1])

    def train(model):
        model.standardize.set_stats(x[tr])
        return _run_phases(model, (x[tr], torch.from_numpy(ytr)),
                           lambda m, xb, yb: nn.functional.cross_entropy(m(xb), yb),
                           epochs=epochs, lrs=lrs, batch_size=batch_size, momentum=momentum,
                           weight_decay=weight_decay, seed=seed, progress=progress,
                           desc="SimpleNet classifier", device=device)

    model, _, _ = training.cached_model("dsth-journal-simplenet-cls", key, build, train,
                                        device=device)
    pred = training.predict(model, x[te], device=device).argmax(axis=1)
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


# ---------------------------------------------------------------------------
# toy inputs a reader can check by eye


def toy_label_stage(n_per_blob: int = 6, k: int = 6, n_bits: int = 1, seed: int = 0):
    """The label stage (eq. 7-14) on two tiny blobs of 2-D features, one row per point.

    Blob A points lie near the direction 10 degrees, blob B near 80 degrees
    (cosine similarity is all eq. 7 looks at). :func:`hash_labels` builds the
    kNN graph (``k`` neighbours, cosine weights), solves ``L v = lambda D v``
    and thresholds each eigenvector at its mean. The first eigenvector is
    smooth on the graph, so it takes one sign per blob, and the first hash
    label bit is the blob.

    Returns
    -------
    pandas.DataFrame
        ``blob``, ``angle`` (degrees), ``neighbours`` (rows of the point's
        ``k`` nearest points, best first), and per bit ``p``: ``y~p`` (the
        eigenvector), ``eps p`` (its mean, eq. 14) and ``y p`` (the hash
        label, eq. 13).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    angles = np.r_[10 + rng.uniform(-6, 6, n_per_blob), 80 + rng.uniform(-6, 6, n_per_blob)]
    x = np.c_[np.cos(np.radians(angles)), np.sin(np.radians(angles))].astype(np.float32)
    hl = hash_labels(x, n_bits, k=k, seed=seed)
    out = pd.DataFrame({"blob": ["A"] * n_per_blob + ["B"] * n_per_blob,
                        "angle": angles.round(1),
                        "neighbours": [" ".join(map(str, r)) for r in hl.neighbors]})
    for p in range(n_bits):
        out[f"y~{p + 1}"] = hl.embedding[:, p].round(3)
        out[f"eps {p + 1}"] = round(float(hl.thresholds[p]), 3)
        out[f"y {p + 1}"] = hl.bits[:, p]
    return out


def toy_slice_groups(n_bits: int = 32, in_features: int = 8, seed: int = 0):
    """Which of the Slice encoder's 1024 hidden units feed which bit (sec. III-B), measured.

    A :class:`SliceEncoder` with ``n_bits`` outputs reads one random input of
    ``in_features`` values; the Jacobian of its outputs with respect to the
    1024-D hidden vector (after the first layer and ``h``) says which hidden
    units each output depends on. Bits with the same set form one row.

    Returns
    -------
    pandas.DataFrame
        One row per group of 16: ``group``, ``hidden units`` (first-last of
        1024), ``bits`` (first-last of ``n_bits``), ``units per bit``.
    """
    import pandas as pd

    torch.manual_seed(seed)
    enc = SliceEncoder(in_features, n_bits).eval()
    with torch.no_grad():
        hidden = enc.fc(torch.randn(1, in_features))
    jac = torch.autograd.functional.jacobian(enc.divide_and_encode, hidden)[0, :, 0, :]
    feeds = [tuple(np.flatnonzero(row.numpy())) for row in jac]
    rows = []
    for units in dict.fromkeys(feeds):
        bits = [b for b, f in enumerate(feeds) if f == units]
        rows.append({"group": len(rows), "hidden units": f"{units[0]}-{units[-1]}",
                     "bits": f"{bits[0]}-{bits[-1]}", "units per bit": len(units)})
    return pd.DataFrame(rows).set_index("group")


# ---------------------------------------------------------------------------
# notebook 05: its parameters, checked, and one call per section of sec. IV

#: The notebook whose paper numbers (``paper_numbers.csv``) these experiments stand beside.
NOTEBOOK = "05_dsth_tcyb2018"

#: Everything of notebook 05 that depends on the profile, in one place.
#:
#: ``split``: per dataset, queries per test class and training images (None = the whole
#: training split); the database is the rest of the test split. ``epochs``: SimpleNet
#: epochs at each learning rate of ``lrs`` (the paper: 60,000 + 5,000 + 5,000 iterations
#: of an unstated batch size on 50,000 images). ``sweep_bits``: code lengths of Fig. 2 and
#: Fig. 7(e)-(f) (None = the sweep_bits parameter). ``label_bits``: code lengths of the
#: with-labels comparison (Fig. 8(e)-(f); None = sweep_bits). ``cnnh``: CNNH's training
#: images and epochs; ``finetune_epochs``: the with-labels head. ``sth_train``: STH's graph
#: and SVMs use at most this many training images. ``input_size``: backbone input side
#: (None = the input_size parameter). ``whole_split``: backbones read from the cache of
#: whole splits (shared with other notebooks). ``rip_max``: last number of returned images
#: of the RIP curves. ``finetune``: the fine-tuned backbone (:mod:`hashstudy.finetune`,
#: Lite0's top ``stages`` block stage(s), head convolution and a classifier trained with
#: labels for ``epochs`` epochs on the training images' cached stage-4 maps at
#: ``input_size`` px): Table II's fine-tuned row and, with ``label_features=
#: "finetuned_backbone"``, the with-labels features; without the entry neither runs.
PROFILE_SIZES = {
    # synthetic data (30 train / 10 test images per class); seconds
    "smoke": {"split": {"cifar10": {"query_per_class": 2, "n_train": None},
                        "cifar100-coarse": {"query_per_class": 2, "n_train": 100},
                        "cifar100": {"query_per_class": 1, "n_train": 100},
                        "stl10": {"query_per_class": 2, "n_train": 60}},
              "epochs": [1, 1, 0], "sweep_bits": [16, 48], "label_bits": [48],
              "cnnh": {"n_train": 300, "epochs": 1},
              "finetune_epochs": 10, "sth_train": None, "input_size": 48, "whole_split": [],
              "rip_max": 50, "finetune": {"input_size": 64, "stages": 1, "epochs": 1}},
    # 5,000 random training images, 1,000 test queries against the other 9,000 test images
    "quick": {"split": {"cifar10": {"query_per_class": 100, "n_train": 5000},
                        "cifar100-coarse": {"query_per_class": 50, "n_train": 5000},
                        "cifar100": {"query_per_class": 10, "n_train": 5000},
                        "stl10": {"query_per_class": 100, "n_train": None}},
              "epochs": [6, 1, 1], "sweep_bits": None, "label_bits": [16, 48, 128],
              "cnnh": {"n_train": 2000, "epochs": 8}, "finetune_epochs": 30, "sth_train": 2000,
              "input_size": None, "whole_split": ["efficientnet_lite0"], "rip_max": 1000,
              "finetune": {"input_size": 128, "stages": 1, "epochs": 6}},
    # every training image; 60,000 + 5,000 + 5,000 iterations of 100 images on 50,000 images
    "paper": {"split": {"cifar10": {"query_per_class": 100, "n_train": None},
                        "cifar100-coarse": {"query_per_class": 50, "n_train": None},
                        "cifar100": {"query_per_class": 10, "n_train": None},
                        "stl10": {"query_per_class": 100, "n_train": None}},
              "epochs": [120, 10, 10], "sweep_bits": None, "label_bits": None,
              "cnnh": {"n_train": 5000, "epochs": 50}, "finetune_epochs": 30, "sth_train": None,
              "input_size": 224, "whole_split": ["efficientnet_lite0", "efficientnet_lite0_stage5"],
              "rip_max": 1000, "finetune": {"input_size": 224, "stages": 1, "epochs": 10}},
}

#: How the tables name the two offline backbones (the paper's network each stands in for).
BACKBONE_NAMES = {"efficientnet_lite0": "Lite0 (GoogLeNet's role)",
                  "efficientnet_lite0_stage5": "Lite0 stage 5 (AlexNet's role)",
                  "efficientnet_lite0_ft": "Lite0 fine-tuned (top stage)"}

#: What the with-labels variant's label stage reads (sec. IV-C, "we finetune the network
#: with labels to extract features"): ``finetuned_backbone``, the pooled features of Lite0
#: with its top fine-tuned on the training images (:func:`finetuned_backbone_features`;
#: needs the profile's ``finetune`` entry, else the head is used); ``feature_head``, the
#: logits of a two-layer head trained on frozen features (:func:`finetuned_features`).
LABEL_FEATURES = ("finetuned_backbone", "feature_head")

#: The notebook's sections that train networks, in notebook order; the ``sections``
#: parameter runs a subset (the hash labels of section 3 and the closing sections always
#: run). ``table2``: Table II's classifiers (section 2); ``table3``: the component analysis
#: (section 4); ``without_labels``: the code-length sweep and the baselines on features and
#: pixels (section 5); ``with_labels``: Table IV, Fig. 8 (section 6); ``references``: the
#: held-out label fit and the references (section 6b); ``other_datasets``: CIFAR-100 and
#: STL-10 (section 7). A paper-scale run that must fit one sitting on two cores keeps the
#: sections its claims are decided on (:mod:`hashstudy.scale`); a claim whose numbers a run
#: leaves out is then decided by the next report the ledger reads.
SECTIONS = ("table2", "table3", "without_labels", "with_labels", "references", "other_datasets")


@dataclass(frozen=True)
class Plan:
    """Notebook 05's parameters, checked (:func:`plan`), with the values derived from them.

    The fields are the notebook's parameters after validation (``bits`` and
    ``stl10_bits`` one int each, code-length lists sorted, ``sweep_bits`` and
    ``label_bits`` as the profile sets them, ``input_size`` the backbone input
    side actually used) and ``size``, the profile's row of
    :data:`PROFILE_SIZES`.
    """

    profile: str
    seed: int
    backbones: list
    configs: list
    main_config: str
    k: int
    hidden: int
    hidden_activation: str
    lrs: list
    momentum: float
    weight_decay: float
    batch_size: int
    bits: int
    stl10_bits: int
    sweep_bits: list
    label_bits: list
    fit_bits: list
    unsupervised: list
    supervised: list
    extra_datasets: list
    input_size: int
    heldout: float
    vote_k: int
    size: dict = field(repr=False)
    label_features: str = "finetuned_backbone"
    sections: list = field(default_factory=lambda: list(SECTIONS))
    sth_train: int = 0  # STH's training subsample; 0: the profile's ``sth_train``

    def runs(self, section: str) -> bool:
        """Whether ``section`` (one of :data:`SECTIONS`) is in this run; prints why not."""
        config.check_choice("section", section, SECTIONS)
        if section in self.sections:
            return True
        print(f"section '{section}' skipped: not in sections={self.sections} (its metrics stay "
              f"absent from this report)")
        return False

    @property
    def label_source(self) -> str:
        """The with-labels features this run uses: ``label_features``, or ``feature_head``
        when the profile has no ``finetune`` entry."""
        if self.label_features == "finetuned_backbone" and self.size.get("finetune"):
            return "finetuned_backbone"
        return "feature_head"

    @property
    def main(self) -> str:
        """The stronger backbone (the paper's GoogLeNet), used in sec. IV-C."""
        return self.backbones[0]

    @property
    def other_activation(self) -> str:
        """The reading of ``h(*)`` in eq. 15 that this run does not use by default."""
        return next(a for a in HIDDEN_ACTIVATIONS if a != self.hidden_activation)

    @property
    def sgd(self) -> dict:
        """The hash-function stage's training schedule, shared by every SimpleNet."""
        return dict(epochs=self.size["epochs"], lrs=self.lrs, batch_size=self.batch_size,
                    momentum=self.momentum, weight_decay=self.weight_decay, seed=self.seed)

    @property
    def dsth(self) -> dict:
        """Keyword arguments of every :class:`DSTHJournal` of the notebook."""
        return dict(k=self.k, hidden=self.hidden, hidden_activation=self.hidden_activation,
                    **self.sgd)

    @property
    def probe(self) -> dict:
        """:attr:`dsth` with a part of the training images held out of the fit (section 6b)."""
        return dict(self.dsth, heldout=self.heldout)

    @property
    def baseline_params(self) -> dict:
        """STH's graph and SVMs use ``sth_train`` images (when set), else the profile's."""
        return {"sth": {"max_train": self.sth_train or self.size["sth_train"]}}

    @property
    def whole_split(self) -> list:
        return [b for b in self.backbones if b in self.size["whole_split"]]

    @property
    def paper(self) -> dict:
        """``{metric key: the paper's value}`` of every transcribed number."""
        from .reporting import paper_numbers

        numbers = paper_numbers(NOTEBOOK)
        return dict(zip(numbers.key, numbers.value))

    def name(self, backbone: str) -> str:
        """A backbone as the tables name it (:data:`BACKBONE_NAMES`)."""
        return BACKBONE_NAMES.get(backbone, backbone)

    def dataset_bits(self, dataset: str) -> int:
        """Table III's code length of ``dataset`` (32 on STL-10, else ``bits``)."""
        return self.stl10_bits if dataset == "stl10" else self.bits

    def parameters(self, threads: int) -> dict:
        """What ``report.parameters`` records for this run."""
        return dict(profile=self.profile, seed=self.seed, backbones=self.backbones,
                    configs=self.configs, main_config=self.main_config, k=self.k,
                    hidden=self.hidden, hidden_activation=self.hidden_activation,
                    fit_bits=self.fit_bits, heldout=self.heldout, vote_k=self.vote_k,
                    lrs=self.lrs, momentum=self.momentum, weight_decay=self.weight_decay,
                    batch_size=self.batch_size, bits=self.bits, stl10_bits=self.stl10_bits,
                    sweep_bits=self.sweep_bits, label_bits=self.label_bits,
                    unsupervised=self.unsupervised, supervised=self.supervised,
                    extra_datasets=self.extra_datasets, input_size=self.input_size,
                    label_features=self.label_features, sections=self.sections,
                    sth_train=self.sth_train, sizes=self.size, threads=threads)


def plan(profile: str, *, seed: int, backbones, configs, main_config: str, k: int, hidden: int,
         hidden_activation: str, lrs, momentum: float, weight_decay: float, batch_size: int,
         bits, stl10_bits, sweep_bits, unsupervised, supervised, extra_datasets,
         input_size: int, fit_bits, heldout: float, vote_k: int,
         label_features: str = "finetuned_backbone", sections=SECTIONS,
         sth_train: int = 0) -> Plan:
    """Check notebook 05's parameters and derive the rest from them and the profile.

    Raises ``ValueError`` (or ``TypeError``) naming the parameter at fault.
    """
    from . import features as backbone_registry

    config.check_profile(profile)
    size = PROFILE_SIZES[profile]
    if not backbones:
        raise ValueError("give at least one backbone")
    for b in backbones:
        config.check_choice("backbone", b, backbone_registry.BACKBONES)
    for c in configs:
        config.check_choice("configuration", c, CONFIGS)
    config.check_choice("main_config", main_config, configs)
    config.check_choice("hidden_activation", hidden_activation, HIDDEN_ACTIVATIONS)
    config.check_choice("label_features", label_features, LABEL_FEATURES)
    fit_bits = sorted(config.check_bits(fit_bits))
    if isinstance(heldout, bool) or not 0 < heldout < 1:
        raise ValueError(f"heldout is the fraction of training images left out of the fit in "
                         f"section 6b, 0 < heldout < 1; got {heldout!r}")
    if isinstance(vote_k, bool) or int(vote_k) != vote_k or vote_k < 1:
        raise ValueError(f"vote_k must be a positive integer, got {vote_k!r}")
    bits, stl10_bits = config.check_bits(bits)[0], config.check_bits(stl10_bits)[0]
    sweep_bits = sorted(config.check_bits(size["sweep_bits"] or sweep_bits))
    label_bits = sorted(config.check_bits(size["label_bits"] or sweep_bits))
    if bits not in sweep_bits or bits not in label_bits:
        raise ValueError(f"sweep_bits and the profile's label_bits must contain bits={bits}")
    if bits not in fit_bits or not set(fit_bits) <= set(sweep_bits):
        raise ValueError(f"fit_bits={fit_bits} must contain bits={bits} and lie within the "
                         f"code lengths of section 5, {sweep_bits}")
    for m in unsupervised:
        config.check_choice("unsupervised baseline", m,
                            sorted(set(shallow.METHODS) - shallow.SUPERVISED))
    for m in supervised:
        config.check_choice("supervised baseline", m, ["cnnh", *sorted(shallow.SUPERVISED)])
    for d in extra_datasets:
        config.check_choice("extra dataset", d, ["cifar100-coarse", "cifar100", "stl10"])
    if isinstance(sections, str):
        raise TypeError(f"sections is a list of section names from {list(SECTIONS)}, "
                        f"got the string {sections!r}")
    for name in sections:
        config.check_choice("section", name, SECTIONS)
    if isinstance(sth_train, bool) or int(sth_train) != sth_train or sth_train < 0:
        raise ValueError(f"sth_train is STH's number of training images (0: the profile's), "
                         f"a non-negative integer; got {sth_train!r}")
    if "references" in sections and "table3" not in sections:
        raise ValueError("sections: 'references' compares with the main configuration's "
                         "network of 'table3'; add 'table3' or leave 'references' out")
    return Plan(profile=profile, seed=seed, backbones=list(backbones), configs=list(configs),
                main_config=main_config, k=k, hidden=hidden, hidden_activation=hidden_activation,
                lrs=list(lrs), momentum=momentum, weight_decay=weight_decay,
                batch_size=batch_size, bits=bits, stl10_bits=stl10_bits, sweep_bits=sweep_bits,
                label_bits=label_bits, fit_bits=fit_bits, unsupervised=list(unsupervised),
                supervised=list(supervised), extra_datasets=list(extra_datasets),
                input_size=size["input_size"] or input_size, heldout=heldout, vote_k=vote_k,
                size=size, label_features=label_features,
                sections=[n for n in SECTIONS if n in sections], sth_train=int(sth_train))


def _add_long(report, table, prefix: str) -> None:
    """Record a long table of :func:`evaluate_methods` under ``prefix``."""
    from . import evaluation

    for key, value in evaluation.long_to_metrics(table, prefix).items():
        report.add(key, value)


def _add_label_fit(report, prefix: str, factories: Mapping) -> None:
    """Record each fitted DSTH hasher's label fit (``<prefix>/<name>/<bits>/label_fit/...``)."""
    for name, f in factories.items():
        for nb, h in f.fitted.items():
            report.add_many(f"{prefix}/{name}/{nb}/label_fit", h.label_fit_report_)


def _under(values: Mapping[str, float], prefix: str) -> dict:
    """``{name: value}`` of the keys ``<prefix>/<name>`` (one level below ``prefix``)."""
    head = prefix.rstrip("/") + "/"
    return {k[len(head):]: v for k, v in values.items()
            if k.startswith(head) and "/" not in k[len(head):]}


def _by_metric(table, bits: int):
    """A long table's rows at ``bits`` as method x metric (:data:`METRIC_KEYS` columns)."""
    wide = table[table.bits == bits].pivot(index="method", columns="metric", values="value")
    return wide[list(METRIC_KEYS)]


def load_for_report(report, plan: Plan, dataset: str) -> Setting:
    """:func:`load_setting` at the plan's sizes, its protocol and sources recorded in ``report``."""
    from . import features as backbone_registry

    s = load_setting(dataset, plan.backbones, seed=plan.seed, input_size=plan.input_size,
                     whole_split=plan.whole_split, **plan.size["split"][dataset])
    report.protocol(s.split, prefix=f"{dataset}/")
    for name, source in s.sources.items():
        report.source(name, source)
    for b in plan.backbones:
        spec = backbone_registry.BACKBONES[b]
        report.source(b, f"{b}: {spec.layer}, {spec.feature_dim}-D, input {plan.input_size} px, "
                      f"ImageNet weights from {spec.weights}")
    return s


def table_ii(report, setting: Setting, plan: Plan):
    """Table II: :func:`classification_accuracy` recorded and beside the paper's values.

    Records ``<dataset>/classification/<net>/accuracy`` (with the profile's
    ``finetune`` entry, the fine-tuned backbone ``efficientnet_lite0_ft`` too,
    whose paper value is the fine-tuned GoogLeNet's), writes
    ``table_ii_<dataset>.csv`` and returns the table (rows: networks).
    """
    import pandas as pd

    d = setting.dataset
    accuracy = classification_accuracy(setting, plan.backbones,
                                       finetune=plan.size.get("finetune"), **plan.sgd)
    _finetune_source(report, setting, plan, accuracy)
    for net, value in accuracy.items():
        report.add(f"{d}/classification/{net}/accuracy", value)
    paper = plan.paper
    table = pd.DataFrame({"ours": accuracy, "paper": {
        net: paper.get(f"{d}/classification/{net}/accuracy", np.nan) for net in accuracy}})
    table.index = [plan.name(n) for n in table.index]
    report.table(f"table_ii_{d}", table, index=True)
    return table


def _finetune_source(report, setting: Setting, plan: Plan, names) -> None:
    """Describe the fine-tuned backbone in the report's sources when it ran."""
    from . import finetune

    ft = plan.size.get("finetune")
    if finetune.BACKBONE in names and ft:
        report.source(finetune.BACKBONE, (
            f"{finetune.BACKBONE}: EfficientNet-Lite0 (ImageNet weights) with its top "
            f"{ft['stages']} block stage(s), head convolution and a linear classifier "
            f"fine-tuned with class labels for {ft['epochs']} epoch(s) on the "
            f"{setting.split.train.size} training images of {setting.dataset} (cached "
            f"stage-4 maps at {ft['input_size']} px and their mirrors); pooled 1280-D"))


def hash_label_tables(report, setting: Setting, plan: Plan):
    """Section 3: :func:`label_quality` of each backbone's hash labels, at ``bits`` and ``fit_bits``.

    Records ``<dataset>/<backbone>/hash_labels/<bits>/...``, writes
    ``hash_label_quality_<dataset>.csv`` (at ``bits``) and
    ``hash_label_quality_by_bits_<dataset>.csv``; returns both tables.
    """
    import pandas as pd

    d, train = setting.dataset, setting.split.train
    quality = {}
    for b in plan.backbones:
        quality[b] = label_quality(setting, setting.features[b][train], plan.bits, k=plan.k,
                                   seed=plan.seed)
        report.add_many(f"{d}/{b}/hash_labels/{plan.bits}", quality[b])
    table = pd.DataFrame(quality).T
    table.index = [plan.name(b) for b in table.index]
    report.table(f"hash_label_quality_{d}", table, index=True)
    # the other code lengths of section 6b: the eigenmap keeps fewer or more eigenvectors
    by_bits = {(plan.name(b), plan.bits): quality[b] for b in plan.backbones}
    for nb in plan.fit_bits:
        if nb == plan.bits:
            continue
        for b in plan.backbones:
            q = label_quality(setting, setting.features[b][train], nb, k=plan.k, seed=plan.seed)
            report.add_many(f"{d}/{b}/hash_labels/{nb}", q)
            by_bits[(plan.name(b), nb)] = q
    table_by_bits = pd.DataFrame(by_bits).T.sort_index()
    table_by_bits.index.names = ["backbone", "bits"]
    report.table(f"hash_label_quality_by_bits_{d}", table_by_bits, index=True)
    return table, table_by_bits


def _table_iii_metrics(report, setting: Setting, plan: Plan, n_bits: int):
    """Run and record :func:`component_analysis`; the fitted hashers and Table III's row keys."""
    long, _, fitted = component_analysis(setting, plan.backbones, plan.configs, n_bits,
                                         **plan.dsth)
    for prefix, part in long.groupby("prefix"):
        _add_long(report, part, prefix)
    rows = {(plan.name(b), c): f"{setting.dataset}/{b}/{c}/{n_bits}"
            for b in plan.backbones for c in plan.configs}
    return fitted, rows


def table_iii(report, setting: Setting, plan: Plan):
    """Section 4: Table III on CIFAR-10 (every configuration on every backbone) and the label fit.

    Records the metrics and ``.../<config>/<bits>/label_fit[/...]``, writes
    ``table_iii_<dataset>.csv`` (columns ``(ours|paper, metric)``, precision at
    recall shortened to ``P@R <level>``); returns Table III and the label-fit
    table of the trained networks.
    """
    import pandas as pd

    d, bits = setting.dataset, plan.bits
    fitted, rows = _table_iii_metrics(report, setting, plan, bits)
    for (b, c), h in fitted.items():
        report.add(f"{d}/{b}/{c}/{bits}/label_fit", h.label_fit_)
        report.add_many(f"{d}/{b}/{c}/{bits}/label_fit", h.label_fit_report_)
    table = pd.concat({"ours": wide_table(report.metrics, rows),
                       "paper": wide_table(plan.paper, rows)}, axis=1)
    table.columns = pd.MultiIndex.from_tuples(
        [(who, m.replace("precision@recall", "P@R ")) for who, m in table.columns])
    report.table(f"table_iii_{d}", table, index=True)
    label_fit = pd.DataFrame(
        {(plan.name(b), c): {"bits right (first 1,000 training images)": h.label_fit_,
                             "bits right (all training images)": h.label_fit_report_["train"],
                             "images with every bit right": h.label_fit_report_["train_exact"]}
         for (b, c), h in fitted.items()}).T
    return table, label_fit


def without_labels(report, setting: Setting, plan: Plan):
    """Section 5: the main configuration and the unsupervised baselines at every ``sweep_bits``.

    The baselines read the main backbone's features. Records the metrics
    under ``<dataset>/<main>/...`` (and DSTH's label fit), writes
    ``without_labels_<dataset>.csv`` (method x metric at ``bits``, best max F
    first) and returns that table and the :class:`hashstudy.evaluation.Result`
    (for the figures).
    """
    prefix = f"{setting.dataset}/{plan.main}"
    factories = {**dsth_factories(setting, plan.main, [plan.main_config], **plan.dsth),
                 **baseline_factories(setting, plan.main, plan.unsupervised,
                                      params=plan.baseline_params, seed=plan.seed)}
    result = evaluate_methods(setting, factories, plan.sweep_bits, prefix)
    _add_long(report, result.table, prefix)
    _add_label_fit(report, prefix, {plan.main_config: factories[plan.main_config]})
    table = _by_metric(result.table, plan.bits).sort_values("max_f@0.5", ascending=False)
    report.table(f"without_labels_{setting.dataset}", table, index=True)
    return table, result


def pixel_baselines(report, setting: Setting, plan: Plan, without):
    """Section 5: the unsupervised baselines on raw pixels (3,072-D in [0, 1]) at ``bits``.

    Adds ``"pixels"`` to ``setting.features``, records
    ``<dataset>/pixels/<method>/<bits>/...`` and writes
    ``without_labels_pixel_baselines_<dataset>.csv``: the baselines and DSTH's
    row of ``without`` (:func:`without_labels`), best max F first.
    """
    from . import evaluation

    d = setting.dataset
    setting.features["pixels"] = evaluation.as_vectors(setting.images)
    factories = baseline_factories(setting, "pixels", plan.unsupervised,
                                   params=plan.baseline_params, seed=plan.seed)
    result = evaluate_methods(setting, factories, [plan.bits], f"{d}/pixels")
    _add_long(report, result.table, f"{d}/pixels")
    table = _by_metric(result.table, plan.bits)
    table.loc[f"DSTH {plan.main_config}"] = without.loc[plan.main_config]
    table = table.sort_values("max_f@0.5", ascending=False)
    report.table(f"without_labels_pixel_baselines_{d}", table, index=True)
    return table


def with_labels(report, setting: Setting, plan: Plan):
    """Section 6: DSTH with class labels against the supervised baselines (Table IV, Fig. 8).

    DSTH's label stage reads the features :attr:`Plan.label_source` names:
    the fine-tuned backbone's (``finetuned_backbone``,
    :func:`finetuned_backbone_features`, added to ``setting.features`` as
    ``efficientnet_lite0_ft``; the labels are used by the fine-tuning, the
    label stage then runs as without labels) or the head on the main
    backbone's frozen features (``feature_head``, :func:`finetuned_features`).
    The keys stay ``<dataset>/<main>/<config>_labels/...`` either way.
    CCA-ITQ (and the other non-CNNH supervised baselines) read the main
    backbone's features; CNNH
    the pixels (keys ``<dataset>/pixels/cnnh/...``). Records the metrics,
    the label fit and the quality of the class-tuned hash labels
    (``.../hash_labels_with_labels/<bits>``); writes ``table_iv_<dataset>``,
    ``with_labels_<dataset>`` and ``hash_label_quality_<dataset>`` (now with
    a ``with labels`` row).

    Returns
    -------
    result : hashstudy.evaluation.Result
        Every with-labels method at ``label_bits`` (for the figure).
    table_iv, table, quality : pandas.DataFrame
    """
    import pandas as pd

    from . import evaluation

    from . import finetune

    d, main, cfg, bits = setting.dataset, plan.main, plan.main_config, plan.bits
    train = setting.split.train
    if plan.label_source == "finetuned_backbone" and can_finetune(setting):
        ft = plan.size["finetune"]
        setting.features[finetune.BACKBONE] = finetuned_backbone_features(
            setting, input_size=ft["input_size"], stages=ft["stages"], epochs=ft["epochs"],
            seed=plan.seed)
        _finetune_source(report, setting, plan, [finetune.BACKBONE])
        factories = dsth_factories(setting, finetune.BACKBONE, [cfg], suffix="_labels",
                                   **plan.dsth)
        tuned = setting.features[finetune.BACKBONE][train]
    else:
        tune = dict(finetune_epochs=plan.size["finetune_epochs"])
        factories = dsth_factories(setting, main, [cfg], with_labels=True, suffix="_labels",
                                   **tune, **plan.dsth)
        tuned = finetuned_features(setting.features[main][train], setting.labels[train],
                                   epochs=plan.size["finetune_epochs"], seed=plan.seed)
    factories.update(baseline_factories(setting, main,
                                        [m for m in plan.supervised if m != "cnnh"],
                                        seed=plan.seed))
    result = evaluate_methods(setting, factories, plan.label_bits, f"{d}/{main}")
    _add_long(report, result.table, f"{d}/{main}")
    if "cnnh" in plan.supervised:
        cnnh = evaluate_methods(
            setting, {"cnnh": cnnh_factory(setting, seed=plan.seed, progress=False,
                                           **plan.size["cnnh"])},
            plan.label_bits, f"{d}/pixels")
        _add_long(report, cnnh.table, f"{d}/pixels")
        result = evaluation.Result(pd.concat([result.table, cnnh.table]),
                                   {**result.codes, **cnnh.codes},
                                   {**result.fitted, **cnnh.fitted})
    quality = {b: _under(report.metrics, f"{d}/{b}/hash_labels/{bits}") for b in plan.backbones}
    quality["with labels"] = label_quality(setting, tuned, bits, k=plan.k, seed=plan.seed)
    report.add_many(f"{d}/{main}/hash_labels_with_labels/{bits}", quality["with labels"])
    for nb in plan.fit_bits:
        if nb != bits:
            report.add_many(f"{d}/{main}/hash_labels_with_labels/{nb}",
                            label_quality(setting, tuned, nb, k=plan.k, seed=plan.seed))
    _add_label_fit(report, f"{d}/{main}", {f"{cfg}_labels": factories[f"{cfg}_labels"]})

    rows = {"without labels": f"{d}/{main}/{cfg}/{bits}",
            "with labels": f"{d}/{main}/{cfg}_labels/{bits}"}
    table_iv = pd.concat({"ours": wide_table(report.metrics, rows),
                          "paper": wide_table(plan.paper, {
                              "without labels": f"{d}/efficientnet_lite0/slice_batchnorm/{bits}",
                              "with labels": f"{d}/efficientnet_lite0/slice_batchnorm_labels/{bits}"})},
                         axis=1)
    report.table(f"table_iv_{d}", table_iv, index=True)
    table = _by_metric(result.table, bits).sort_values("max_f@0.5", ascending=False)
    report.table(f"with_labels_{d}", table, index=True)
    quality = pd.DataFrame(quality).T
    report.table(f"hash_label_quality_{d}", quality, index=True)
    return result, table_iv, table, quality


#: Columns of the label-fit and reference table of section 6b.
FIT_COLUMNS = ("label_fit/train", "label_fit/heldout", "label_fit/heldout_exact", "map@1000",
               "max_f@0.5", "max_f@0.25", "hd3p")


def references(report, setting: Setting, plan: Plan):
    """Section 6b: the label fit on held-out training images and two references.

    At each ``fit_bits``: SimpleNet (main configuration) fitted without the
    held-out images (``<config>_heldout``), the kNN label copy
    (``knn_copy``), every configuration's encoder on the backbone features
    (``<config>_on_features``) and the same with the other reading of
    ``h(*)`` (``<config>_h<activation>_on_features``). At ``bits``: SimpleNet
    with the other ``h(*)``, and the kNN copy and the encoder on features of
    the class-tuned labels (``..._labels``; these two read the head on frozen
    features, :func:`finetuned_features`, whatever ``label_features`` says,
    while the SimpleNet ``<config>_labels`` row is section 6's). Records every row's metrics and
    label fit, writes ``label_fit_and_references_<dataset>.csv`` and returns
    that table (rows ``(bits, hash function)``, columns :data:`FIT_COLUMNS`).
    """
    d, main, cfg, bits = setting.dataset, plan.main, plan.main_config, plan.bits
    other = plan.other_activation
    tag = f"_h{other}"
    probe_other = dict(plan.probe, hidden_activation=other)
    tune = dict(with_labels=True, finetune_epochs=plan.size["finetune_epochs"])
    copy = dict(k=plan.k, vote_k=plan.vote_k, heldout=plan.heldout, seed=plan.seed)
    groups = [  # (factories, code lengths)
        ({"knn_copy": label_copy_factory(setting, main, **copy),
          **dsth_factories(setting, main, [cfg], suffix="_heldout", **plan.probe),
          **dsth_factories(setting, main, plan.configs, inputs="features",
                           suffix="_on_features", **plan.probe),
          **dsth_factories(setting, main, plan.configs, inputs="features",
                           suffix=f"{tag}_on_features", **probe_other)}, plan.fit_bits),
        ({**dsth_factories(setting, main, [cfg], suffix=f"{tag}_heldout", **probe_other),
          "knn_copy_labels": label_copy_factory(setting, main, **copy, **tune),
          **dsth_factories(setting, main, [cfg], inputs="features",
                           suffix="_on_features_labels", **tune, **plan.probe)}, [bits]),
    ]
    for group, group_bits in groups:
        result = evaluate_methods(setting, group, group_bits, f"{d}/{main}")
        _add_long(report, result.table, f"{d}/{main}")
        _add_label_fit(report, f"{d}/{main}", group)

    pix = f"SimpleNet {cfg}"
    rows = {}
    for nb in plan.fit_bits:
        rows.update({
            (nb, f"{pix}, all training images (sections 4-5)"): f"{cfg}/{nb}",
            (nb, f"{pix}, held-out split"): f"{cfg}_heldout/{nb}",
            (nb, "(a) kNN label copy"): f"knn_copy/{nb}",
            **{(nb, f"(b) {c} on features"): f"{c}_on_features/{nb}" for c in plan.configs},
            **{(nb, f"(b) {c} on features, h = {other}"): f"{c}{tag}_on_features/{nb}"
               for c in plan.configs},
        })
    rows.update({
        (bits, f"{pix}, h = {other}, held-out split"): f"{cfg}{tag}_heldout/{bits}",
        (bits, f"with labels: {pix}, all training images (section 6)"): f"{cfg}_labels/{bits}",
        (bits, "with labels: (a) kNN label copy"): f"knn_copy_labels/{bits}",
        (bits, f"with labels: (b) {cfg} on features"): f"{cfg}_on_features_labels/{bits}",
    })
    table = wide_table(report.metrics, {r: f"{d}/{main}/{p}" for r, p in rows.items()},
                       columns=FIT_COLUMNS)
    table.index.names = ["bits", "hash function"]
    report.table(f"label_fit_and_references_{d}", table, index=True)
    return table


def other_datasets(report, plan: Plan) -> dict:
    """Section 7: Table III, the hash labels and Table II on CIFAR-100 (coarse, fine) and STL-10.

    A dataset without a local copy is recorded as skipped. For each other
    dataset: its protocol and sources, the component analysis at its code
    length (:meth:`Plan.dataset_bits`), :func:`label_quality` of each
    backbone's labels and the classification accuracies; writes
    ``table_iii_<dataset>.csv`` and returns ``{dataset: Table III}``.
    """
    import time

    import pandas as pd

    tables = {}
    for d in plan.extra_datasets:
        if not (data.available(d, "train") and data.available(d, "test")):
            report.skip(d, f"no local copy of {d} under {config.data_root()} (see "
                           "data/README.md); its Table III rows are not measured")
            continue
        t0 = time.perf_counter()
        d_bits = plan.dataset_bits(d)
        s = load_for_report(report, plan, d)
        _, rows = _table_iii_metrics(report, s, plan, d_bits)
        for b in plan.backbones:
            report.add_many(f"{d}/{b}/hash_labels/{d_bits}",
                            label_quality(s, s.features[b][s.split.train], d_bits, k=plan.k,
                                          seed=plan.seed))
        accuracy = classification_accuracy(s, plan.backbones, finetune=plan.size.get("finetune"),
                                           **plan.sgd)
        _finetune_source(report, s, plan, accuracy)
        for net, value in accuracy.items():
            report.add(f"{d}/classification/{net}/accuracy", value)
        tables[d] = pd.concat({"ours": wide_table(report.metrics, rows),
                               "paper": wide_table(plan.paper, rows)}, axis=1)
        report.table(f"table_iii_{d}", tables[d], index=True)
        print(f"{d}, {d_bits} bits: protocol {s.split}; {time.perf_counter() - t0:.0f} s")
    return tables


def checks_table(metrics: Mapping[str, float], plan: Plan, dataset: str = "cifar10"):
    """The notebook's comparisons that the claims ledger does not decide, one row each.

    The ledger (``claims.csv``) decides the paper's claims; this table keeps
    the other comparisons the notebook makes visible: the stronger against
    the weaker backbone on Table II and on the hash labels themselves, the
    spread between the configurations (ours and the paper's), SimpleNet
    against the two references of section 6b, and the two readings of
    ``h(*)`` in eq. 15. A value whose section did not run (``sections``) is NaN; a row
    with neither value is left out.

    Returns
    -------
    pandas.DataFrame
        ``comparison, a, value a, b, value b, a - b``.
    """
    import pandas as pd

    d, bits, main, cfg = dataset, plan.bits, plan.main, plan.main_config
    other, tag = plan.other_activation, f"_h{plan.other_activation}"
    paper = plan.paper
    rows = []

    def row(what, a, value_a, b, value_b):
        rows.append({"comparison": what, "a": a, "value a": value_a, "b": b,
                     "value b": value_b, "a - b": value_a - value_b})

    def get(key):
        return metrics.get(key, np.nan)

    def f05(name, nb=bits):
        return get(f"{d}/{main}/{name}/{nb}/max_f@0.5")

    def fit(name, nb=bits, part="heldout"):
        return get(f"{d}/{main}/{name}/{nb}/label_fit/{part}")

    def spread(values, backbone, nb):  # NaN where a value is missing
        f = [values.get(f"{d}/{backbone}/{c}/{nb}/max_f@0.5", np.nan) for c in plan.configs]
        return float(np.max(f) - np.min(f))

    if len(plan.backbones) >= 2:
        s, w = plan.backbones[:2]
        row("Table II: classification accuracy", s, get(f"{d}/classification/{s}/accuracy"),
            w, get(f"{d}/classification/{w}/accuracy"))
        for name, what in (("knn_precision", "kNN precision"), ("max_f@0.5", "max F (beta 0.5)"),
                           ("map@1000", "mAP@1000")):
            row(f"hash labels, {bits} bits: {what}", s, get(f"{d}/{s}/hash_labels/{bits}/{name}"),
                w, get(f"{d}/{w}/hash_labels/{bits}/{name}"))
    row(f"Table III, {bits} bits: spread of max F over the configurations",
        f"ours ({main})", spread(metrics, main, bits), "paper (GoogLeNet)",
        spread(paper, "efficientnet_lite0", 48))
    for nb in plan.fit_bits:
        row(f"{nb} bits: held-out label bits reproduced", f"SimpleNet {cfg}",
            fit(f"{cfg}_heldout", nb), "kNN label copy", fit("knn_copy", nb))
        row(f"{nb} bits: max F (beta 0.5)", f"SimpleNet {cfg}", f05(cfg, nb),
            f"{cfg} on features", f05(f"{cfg}_on_features", nb))
        row(f"{nb} bits: max F (beta 0.5)", f"SimpleNet {cfg}", f05(cfg, nb), "kNN label copy",
            f05("knn_copy", nb))
    h, o = f"h = {plan.hidden_activation}", f"h = {other}"
    row(f"eq. 15, {bits} bits: held-out label bits reproduced by SimpleNet", h,
        fit(f"{cfg}_heldout"), o, fit(f"{cfg}{tag}_heldout"))
    row(f"eq. 15, {bits} bits: max F of SimpleNet (held-out split)", h, f05(f"{cfg}_heldout"), o,
        f05(f"{cfg}{tag}_heldout"))
    row(f"eq. 15, {bits} bits: mean max F of the encoders on features", h,
        float(np.mean([f05(f"{c}_on_features") for c in plan.configs])), o,
        float(np.mean([f05(f"{c}{tag}_on_features") for c in plan.configs])))
    row(f"class-tuned labels, {bits} bits: max F (beta 0.5)", f"SimpleNet {cfg}",
        f05(f"{cfg}_labels"), "kNN label copy", f05("knn_copy_labels"))
    table = pd.DataFrame(rows)
    return table[table[["value a", "value b"]].notna().any(axis=1)].reset_index(drop=True)


#: Why our numbers differ from the paper's (``paper_vs_ours.md``); ``{n_train}``,
#: ``{epochs}``, ``{iterations}`` and ``{batch_size}`` are this run's SimpleNet schedule.
WHY_THEY_DIFFER = (
    "**Why they differ.** (1) *Features*: EfficientNet-Lite0 (and its "
    "stage-5 cut) on 32-px images upsampled to the backbone input stand in for GoogLeNet and "
    "AlexNet fine-tuned at 256 px; no backbone is fine-tuned here, so the graph of the label "
    "stage is built on generic ImageNet features. (2) *Training*: SimpleNet sees "
    "{n_train} training images for {epochs} epochs "
    "({iterations} iterations of {batch_size}) "
    "instead of 70,000 iterations over the whole training split, so it reproduces the hash "
    "labels less faithfully (the `label_fit` rows show how many label bits it gets "
    "right on training images). (3) *Protocol*: the paper does not state its queries and "
    "database; ours are unseen test images, and precision at recall comes from the Hamming "
    "ranking without interpolation (averaged over the orders of images at equal distance), and "
    "the max F-measure is the largest over those six points, as the paper's tables compute it; "
    "other readings of precision at recall give other numbers, especially at recall 1. The paper's "
    "values at recall 1 (about 0.5 on CIFAR-10, where a random ranking gives 0.1) mean that "
    "its codes retrieve every relevant image before the irrelevant half of the database, a "
    "level no unsupervised method of this study approaches; the paper gives no detail that "
    "would let us check how it was computed. (4) *Data*: the CIFAR-10 copy is a JPEG "
    "re-encoding. (5) *Table II*: ours are linear classifiers on frozen features and a "
    "briefly trained SimpleNet; the paper's are fine-tuned networks. The comparison that "
    "carries over is therefore the ordering (stronger vs weaker features, configurations, "
    "with vs without labels, DSTH vs baselines), which the claims ledger checks, not the values.")

#: Notes added to the paper-vs-ours rows whose key starts with the given prefix.
PAPER_NOTES = {
    "cifar10/classification/": "Ours: logistic regression on frozen features (backbones) and "
    "SimpleNet from scratch on the training subset; theirs: fine-tuned networks on all images.",
    "cifar10/efficientnet_lite0": "Stand-in backbone; SimpleNet trained briefly on a subset; "
    "test-only queries and database.",
}


def paper_differences(comparison):
    """Ours minus the paper's, summarised per table, dataset, network and kind of number.

    ``comparison`` is :func:`hashstudy.reporting.compare_with_paper`'s table
    with a ``table`` column (``"Table II"`` ...). Returns one row per
    ``(table, dataset, network, kind)`` with the ``numbers`` the paper
    prints, how many this run ``measured`` and the ``min``, ``max`` and
    ``mean`` of ours minus the paper's over the measured ones (NaN when none).
    """
    import pandas as pd

    parts = comparison.key.str.split("/")
    frame = pd.DataFrame({
        "table": comparison.table.fillna("-"), "dataset": parts.str[0],
        "network": np.where(parts.str[1] == "classification", parts.str[2], parts.str[1]),
        "kind": np.select([comparison.key.str.contains("precision@recall", regex=False),
                           comparison.key.str.contains("max_f@", regex=False)],
                          ["precision at recall", "max F-measure"], "accuracy"),
        "difference": comparison.difference})
    return (frame.groupby(["table", "dataset", "network", "kind"], sort=False).difference
            .agg(numbers="size", measured="count", min="min", max="max", mean="mean"))


def _markdown_table(frame) -> str:
    """A small DataFrame as a Markdown pipe table (index included, floats signed to 3 places,
    NaN as ``-``)."""
    frame = frame.reset_index()
    cells = [["-" if isinstance(v, float) and np.isnan(v) else
              f"{v:+.3f}" if isinstance(v, float) else str(v) for v in r]
             for r in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def paper_vs_ours(report, plan: Plan, n_train: int):
    """Section 9: every transcribed number of Tables II-IV beside ours, and why they differ.

    Writes ``paper_vs_ours.csv`` (:func:`hashstudy.reporting.compare_with_paper`
    with :data:`PAPER_NOTES` and a ``table`` column) and ``paper_vs_ours.md``
    (:func:`paper_differences` and :data:`WHY_THEY_DIFFER`, with this run's
    SimpleNet schedule on ``n_train`` images).

    Returns
    -------
    comparison, differences : pandas.DataFrame
    why : str
        The Markdown paragraph on why the numbers differ.
    """
    from .reporting import compare_with_paper

    comparison = compare_with_paper(report.metrics, NOTEBOOK, why=PAPER_NOTES)
    comparison.insert(1, "table", comparison.source.str.extract(r"(Table [IVX]+)", expand=False))
    report.table("paper_vs_ours", comparison)
    differences = paper_differences(comparison)
    epochs = sum(plan.size["epochs"])
    why = WHY_THEY_DIFFER.format(n_train=n_train, epochs=epochs, batch_size=plan.batch_size,
                                 iterations=epochs * n_train // plan.batch_size)
    report.text("paper_vs_ours.md", "Ours minus the paper's, per table, dataset, network and "
                "kind of number:\n\n" + _markdown_table(differences) + "\n\n" + why + "\n")
    return comparison, differences, why


def write_summary(report, plan: Plan, split, seconds: float, threads: int) -> str:
    """Section 10: ``summary.md``, the headline numbers, the protocol and the wall time.

    The headline numbers are max F (beta 0.5) at ``bits`` on ``split.dataset``:
    DSTH with and without labels (the latter named as not run where ``plan.sections``
    leaves it out), the best unsupervised baseline on the backbone features and on
    pixels, and the hash labels themselves.
    """
    m, d, bits = report.metrics, split.dataset, plan.bits
    main, cfg = plan.main, plan.main_config

    def f05(prefix, method):
        return m.get(f"{d}/{prefix}/{method}/{bits}/max_f@0.5", float("nan"))

    parts = [f"DSTH {cfg} {f05(main, cfg):.3f}",
             f"with class labels {f05(main, cfg + '_labels'):.3f}" if plan.runs("with_labels")
             else "with class labels not run (`sections` leaves out `with_labels`)"]
    for where, prefix in (("the same features", main), ("pixels", "pixels")):
        scores = {b: f05(prefix, b) for b in plan.unsupervised}
        if scores:
            best = max(scores, key=scores.get)
            parts.append(f"the best unsupervised baseline on {where}, {best}, {scores[best]:.3f}")
    parts.append(f"the hash labels themselves (training images) "
                 f"{m.get(f'{d}/{main}/hash_labels/{bits}/max_f@0.5', float('nan')):.3f}")
    text = "\n".join([
        f"- Max F (beta 0.5) on {d} at {bits} bits, hash labels from {main}: "
        + "; ".join(parts) + ".",
        f"- The paper's claims: decided by the claims ledger, "
        f"`claims.for_notebook(\"{NOTEBOOK}\", \"{plan.profile}\")`.",
        f"- Protocol: {split}. Wall time of this run: {seconds:.0f} s ({plan.profile} profile, "
        f"{threads} thread(s)).",
    ])
    report.text("summary.md", text + "\n")
    return text
