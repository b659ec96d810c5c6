"""Convolutional autoencoder whose dense layers use a scaled tanh raised towards sign(x).

Reproduces S. Chowdhury, "Deep Unsupervised Hashing for Image Retrieval"
(2020; ``../shared/papers/tanh_autoencoder.txt``), sections 4 and 5.

The activation (sec. 4)
-----------------------
The paper prints ``tan'(x) = 2 / ((1 + e^(-b x)) - 1)``; the brackets are
misplaced (that expression has a pole at ``x = 0``). The function that
"approximates the sign function as b goes to infinity" is::

    f_b(x) = 2 / (1 + exp(-b x)) - 1 = tanh(b x / 2)
    f_b'(x) = (b / 2) * (1 - f_b(x)^2)

``f_b`` maps to ``(-1, 1)``, is odd, has slope ``b / 2`` at 0, and
``f_b(x) -> sign(x)`` pointwise as ``b -> inf``. ``|f_b(x)| >= 0.99`` exactly
when ``|x| >= 2 atanh(0.99) / b ~ 5.29 / b``.

The network (sec. 4 "Model Architecture", sec. 5 "Implementation Details")
--------------------------------------------------------------------------
Encoder: three blocks ``conv 3x3 (16, 32, 64 filters, padding 1) -> ReLU or
LeakyReLU -> 2x2 max-pooling`` (``ceil_mode``, so 28 -> 14 -> 7 -> 4 and
32 -> 16 -> 8 -> 4), then ``n_dense`` dense layers down to the code length,
*each* followed by ``f_b`` (``n_dense - 1`` hidden layers of width ``hidden``,
then the code layer of ``n_bits`` units). Decoder: the mirror image: dense
layers ``n_bits -> hidden ... -> 64 x 4 x 4`` with the convolutional
activation, then three blocks ``2x2 nearest up-sampling (cropped to the
encoder's size at that depth) -> conv 3x3`` with 32, 16 and ``C`` filters, the
last followed by a sigmoid. The loss is the mean squared error between the
input (pixels scaled to [0, 1]) and its reconstruction.

Training (sec. 4, sec. 5)
-------------------------
Adam, learning rate decreasing linearly from ``1e-3`` to ``1e-5`` over the
whole run (one :func:`hashstudy.training.fit` call). ``b`` follows a
:class:`BSchedule`: it is raised every epoch (or every stage of several
epochs) until the code layer is binary, then held at its final value while
the falling learning rate fine-tunes the network. A per-epoch hook records
``b``, the share of code activations with ``|f_b| >= 0.99`` and the
reconstruction error from the continuous and from the binarised codes, and,
given held-out images and their labels, the same on them plus their
precision@90.

The schedule's end and pace
---------------------------
The paper gives no values of ``b``. :meth:`BSchedule.paced` states a schedule
by its *end* ``b_end`` (where ``b`` stops rising) and its *pace* (epochs per
rung of a fixed ladder from ``b_start`` to 1000, :data:`PAPER_B_END`). The
study's reading of the paper's schedule is ``b_end = 1000`` at pace 1
(:data:`PAPER_B_END`, :data:`PAPER_PACE`). The defaults
(:data:`DEFAULT_B_END`, :data:`DEFAULT_PACE`) are what the rule
:func:`choose_schedule` picks from candidate schedules trained at every code
length and several seeds (:func:`selection_runs`) and measured at the *end* of
their training on held-out *training* images (:func:`validation_split`;
never a query or database image): only a schedule whose code layers all end
binary (:data:`MIN_BINARY_SHARE`) can be chosen, and among those the held-out
precision@90 and the reconstruction error from the binary codes decide
(:func:`final_table`, :func:`candidate_table`, :func:`ladder_table`,
:func:`hashstudy.plots.autoencoder.plot_schedule_selection`).

Notebook 03's report
--------------------
:func:`check_parameters`, :func:`report_selection`, :func:`report_comparison`,
:func:`report_validation_end`, :func:`report_claims`, :func:`paper_vs_ours`,
:func:`schedule_text` and :func:`summary_text` write its tables, metrics and
texts, so the notebook holds the story and one call per step. Its figures are
in :mod:`hashstudy.plots.autoencoder` (the ``plot_*`` names of this module
still resolve there).

Codes
-----
:class:`TanhAEHasher` returns ``{0, 1}`` codes (uint8): bit ``j`` is 1 where
the code unit ``f_b(x_j) >= 0``. Its ``fit(X)`` takes uint8 images
``(N, H, W, C)``, not pixel vectors, so it plugs into
:func:`hashstudy.evaluation.encode_split` with the image pool as ``X``.

Protocol (sec. 5)
-----------------
"We would use the encoder to create hash codes for the test images ... randomly
select an image, generate binary code and search through the codes derived
from test set." :func:`hashstudy.protocols.test_vs_test_split` draws random test images as
queries, uses the whole test split as the database and (a subset of) the
training split for training. A query is never its own result:
:func:`evaluate_excluding_self` ranks each query against the database with
the query's own item removed, and :func:`topk_excluding_self` does the same
for retrieval figures.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import baselines, cache, config, evaluation, hamming, metrics, protocols, training

__all__ = [
    "scaled_tanh",
    "ScaledTanh",
    "BSchedule",
    "SCHEDULE_KINDS",
    "DEFAULT_B_END",
    "DEFAULT_PACE",
    "PROFILE_SIZES",
    "PAPER_B_END",
    "PAPER_PACE",
    "CONV_ACTIVATIONS",
    "TanhAutoencoder",
    "images_to_tensor",
    "tensor_to_images",
    "binary_fraction",
    "BINARY_LEVEL",
    "HISTOGRAM_BINS",
    "train_autoencoder",
    "TanhAEHasher",
    "validation_split",
    "candidate_schedule",
    "selection_design",
    "selection_runs",
    "final_table",
    "ladder_table",
    "candidate_table",
    "MIN_BINARY_SHARE",
    "PRECISION_TIE",
    "choose_schedule",
    "check_b_end",
    "check_pace",
    "test_vs_test_split",
    "self_positions",
    "evaluate_excluding_self",
    "topk_excluding_self",
    "compare",
    "autoencoders",
    "GRAYSCALE_DATASETS",
    "RGB_DATASETS",
    "check_parameters",
    "rgb_skip_reason",
    "Selection",
    "report_selection",
    "report_comparison",
    "report_validation_end",
    "report_claims",
    "paper_vs_ours",
    "WHY_NUMBERS_DIFFER",
    "schedule_text",
    "summary_text",
]

SCHEDULE_KINDS = ("geometric", "linear", "constant")
CONV_ACTIVATIONS = ("relu", "leaky_relu")
BINARY_LEVEL = 0.99
"""An activation counts as binary when ``|f_b(x)| >= BINARY_LEVEL``."""
HISTOGRAM_BINS = np.linspace(-1.0, 1.0, 41)
"""Bin edges of the per-epoch histograms of code activations."""
PAPER_B_END = 1000.0
"""The study's reading of the paper's schedule: b raised "until the output of the final layer of
the encoder is completely discrete" (sec. 4); b = 1000 makes over 99.7 % of the code activations
binary. The paper prints no value."""
PAPER_PACE = 1
"""Epochs per value of b in the study's reading of the paper's schedule (one)."""
DEFAULT_B_END = 1000.0
"""The default end of the schedule: what :func:`choose_schedule` picks at profile quick from the
candidates of notebook 03, scored over every code length and seeds 0, 1, 2 on held-out training
images (the notebook prints the rule's choice and whether its parameters agree). Lower ends gave
better reconstructions and precision on the way up the ladder, but their code layers did not all
end binary."""
DEFAULT_PACE = 1
"""The default pace (epochs per rung of b), chosen with :data:`DEFAULT_B_END`."""
PROFILE_SIZES = {
    "smoke": dict(n_train=None, n_query=40, stages=2, finetune_stages=1, cifar_n_train=None,
                  cifar_bits=[16], n_monitor=200, n_val=40, select_seeds=[0], select_all_bits_seeds=[0]),
    "quick": dict(n_train=10000, n_query=1000, stages=7, finetune_stages=1, cifar_n_train=10000,
                  cifar_bits=[16, 64], n_monitor=1000, n_val=2000, select_seeds=[0, 1, 2],
                  select_all_bits_seeds=[0]),
    "paper": dict(n_train=None, n_query=1000, stages=20, finetune_stages=10, cifar_n_train=None,
                  cifar_bits=[8, 16, 32, 64], n_monitor=2000, n_val=5000, select_seeds=[0, 1, 2],
                  select_all_bits_seeds=[0, 1, 2]),
}
"""Notebook 03's sizes per profile. ``n_train``: training images of the split (None: the whole
training split: all 60,000 of MNIST at profile paper); ``n_query``: random test queries;
``stages``: rungs of the b ladder from ``b_start`` to 1000 (quick: x3.16 per rung: 1, 3.2, 10,
32, 100, 316, 1000); ``finetune_stages``: rungs' worth of epochs at ``b_end`` after the ladder;
``cifar_n_train``, ``cifar_bits``: the CIFAR-10 part; ``n_monitor``: training images of the
per-epoch statistics; ``n_val``: held-out training images of the schedule selection; the
candidate schedules are scored at the headline code length with every seed of ``select_seeds``
and at every code length with every seed of ``select_all_bits_seeds`` (:func:`selection_design`;
profile quick scores every length at seed 0 only, for time: one 8-epoch model costs minutes on
a shared 2-core CPU)."""


# --------------------------------------------------------------------------- #
# The scaled tanh
# --------------------------------------------------------------------------- #


def _check_b(b) -> float:
    b = float(b)
    if not math.isfinite(b) or b <= 0:
        raise ValueError(f"the slope b of the scaled tanh must be a positive finite number, got {b!r}")
    return b


def scaled_tanh(x: torch.Tensor, b: float) -> torch.Tensor:
    """The paper's binarising activation ``f_b(x) = 2 / (1 + exp(-b x)) - 1``.

    Parameters
    ----------
    x : torch.Tensor, any shape, floating dtype
    b : float > 0
        Slope parameter; ``f_b -> sign`` as ``b -> inf``.

    Returns
    -------
    torch.Tensor, same shape and dtype as ``x``, values in ``[-1, 1]``
        Computed as ``tanh(b x / 2)`` (the same function, numerically stable
        for large ``|b x|``); its derivative is ``(b / 2) (1 - f_b(x)^2)``.
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if torch.is_tensor(x) else ""))
    return torch.tanh(0.5 * _check_b(b) * x)


class ScaledTanh(nn.Module):
    """``f_b`` as a layer; ``b`` is a buffer (saved with the weights) set by the schedule."""

    def __init__(self, b: float = 1.0):
        super().__init__()
        self.register_buffer("b", torch.tensor(_check_b(b), dtype=torch.float32))

    def set_b(self, b: float) -> None:
        self.b.fill_(_check_b(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_tanh(x, float(self.b))

    def extra_repr(self) -> str:
        return f"b={float(self.b):g}"


# --------------------------------------------------------------------------- #
# The b schedule
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class BSchedule:
    """How ``b`` grows over the epochs, per dense layer.

    Parameters
    ----------
    kind : {"geometric", "linear", "constant"}
        ``geometric``: ``b`` multiplied by the same factor at every stage, from
        ``b_start`` to ``b_end``; ``linear``: the same steps in ``b``;
        ``constant``: ``b_end`` from the first epoch (no annealing; with
        ``b_end = 1`` this is a plain tanh autoencoder whose codes are
        thresholded afterwards, the "filter" approach of sec. 2).
    b_start, b_end : float > 0
        ``b`` of the code layer in the first and in the last annealing stage.
    anneal_epochs : int >= 1
        Epochs during which ``b`` rises.
    finetune_epochs : int >= 0
        Further epochs at ``b_end`` (the learning rate keeps falling).
    stage_epochs : int >= 1
        ``b`` changes every ``stage_epochs`` epochs (1: every epoch). The
        ``ceil(anneal_epochs / stage_epochs)`` stages are spaced evenly from
        ``b_start`` to ``b_end``.
    hidden_b_end : float > 0, optional
        ``b`` of the hidden dense layers (those before the code layer) in the
        last annealing stage; they follow the same steps from ``b_start``.
        Default: ``b_end`` (every layer is annealed alike). Only the code layer
        has to become binary; a hidden layer driven to a very large ``b``
        saturates, and its gradient, ``(b / 2)(1 - f^2)``, vanishes.
    b_max : float >= b_end, optional
        The top of the ladder the stages climb: the stages are spaced from
        ``b_start`` to ``b_max`` and ``b`` stops rising at ``b_end``
        (``b = min(ladder, b_end)``), so a schedule that ends lower follows
        the same steps as one that goes on, and then holds. The hidden layers'
        ladder tops out at ``b_max * hidden_b_end / b_end``, cut at
        ``hidden_b_end``. Default: ``b_end`` (the stages end at ``b_end``).

    Examples
    --------
    >>> BSchedule("geometric", 1, 100, anneal_epochs=3, finetune_epochs=1).values()
    array([  1.,  10., 100., 100.])
    """

    kind: str = "geometric"
    b_start: float = 1.0
    b_end: float = 100.0
    anneal_epochs: int = 6
    finetune_epochs: int = 2
    stage_epochs: int = 1
    hidden_b_end: Optional[float] = None
    b_max: Optional[float] = None

    def __post_init__(self):
        config.check_choice("b schedule", self.kind, SCHEDULE_KINDS)
        _check_b(self.b_start)
        _check_b(self.b_end)
        if self.hidden_b_end is not None:
            _check_b(self.hidden_b_end)
        if self.b_max is not None and not _check_b(self.b_max) >= self.b_end:
            raise ValueError(f"b_max (the top of the ladder) must be at least b_end = {self.b_end:g}, "
                             f"got {self.b_max!r}")
        for name, low in (("anneal_epochs", 1), ("finetune_epochs", 0), ("stage_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    @property
    def epochs(self) -> int:
        """Total number of training epochs (annealing plus fine-tuning)."""
        return int(self.anneal_epochs + self.finetune_epochs)

    @property
    def n_stages(self) -> int:
        return -(-int(self.anneal_epochs) // int(self.stage_epochs))

    def _b(self, epoch: int, end: float) -> float:
        if not 0 <= epoch < self.epochs:
            raise ValueError(f"epoch {epoch} is outside 0..{self.epochs - 1}")
        if self.kind == "constant" or epoch >= self.anneal_epochs:
            return float(end)
        top = end if self.b_max is None else self.b_max * end / self.b_end  # the ladder's top
        t = (epoch // self.stage_epochs) / (self.n_stages - 1) if self.n_stages > 1 else 1.0
        if self.kind == "geometric":
            b = self.b_start * (top / self.b_start) ** t
        else:
            b = self.b_start + (top - self.b_start) * t
        return float(end) if b >= end * (1 - 1e-9) else float(b)  # a rung at b_end is b_end

    def code_b(self, epoch: int) -> float:
        """``b`` of the code layer during ``epoch`` (0-based)."""
        return self._b(epoch, self.b_end)

    def layer_b(self, epoch: int, n_layers: int) -> list[float]:
        """``b`` of each of ``n_layers`` activated dense layers (the code layer last)."""
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        hidden = self._b(epoch, self.hidden_b_end if self.hidden_b_end is not None else self.b_end)
        return [hidden] * (n_layers - 1) + [self.code_b(epoch)]

    def values(self) -> np.ndarray:
        """``b`` of the code layer for every epoch, float64 ``(epochs,)``."""
        return np.array([self.code_b(e) for e in range(self.epochs)])

    def as_dict(self) -> dict:
        """The fields as a dict (``b_max`` only when set, so older cache keys stay valid)."""
        out = dataclasses.asdict(self)
        if out["b_max"] is None:
            del out["b_max"]
        return out

    @classmethod
    def paced(cls, b_end: float = DEFAULT_B_END, pace: int = DEFAULT_PACE, *, stages: int = 7,
              finetune_stages: int = 1, b_max: float = PAPER_B_END, kind: str = "geometric",
              b_start: float = 1.0, hidden_b_end: Optional[float] = None) -> "BSchedule":
        """The schedule given by its end and its pace, on a fixed ladder of ``b``.

        The ladder has ``stages`` rungs spaced by ``kind`` from ``b_start`` to
        ``max(b_max, b_end)`` (by default the reach of the paper's schedule as
        the study reads it, 1000). ``b`` climbs one rung every ``pace`` epochs
        and stops at ``b_end``, where it stays for the remaining rungs and for
        ``finetune_stages * pace`` more epochs. So the end changes only where
        ``b`` stops, and the pace stretches the whole run:
        ``epochs = (stages + finetune_stages) * pace``.

        Parameters
        ----------
        b_end : float
            ``b`` of the code layer at the end, a finite number in
            ``[b_start, 1e6]``.
        pace : int
            Epochs per rung of the ladder, an integer in ``1..20``.
        stages, finetune_stages : int >= 1, >= 0
            Rungs of the ladder; rungs' worth of epochs at ``b_end`` after it.
        b_max : float
            The top of the ladder (raised to ``b_end`` when lower).
        kind, b_start, hidden_b_end : see :class:`BSchedule`

        Raises
        ------
        ValueError
            One message naming the bad argument and its allowed range.

        Examples
        --------
        >>> BSchedule.paced(100, 2, stages=4, finetune_stages=1, b_max=1000).values()
        array([  1.,   1.,  10.,  10., 100., 100., 100., 100., 100., 100.])
        """
        check_pace(pace)
        b_start = _check_b(b_start)
        b_end = check_b_end(b_end, b_start)
        for name, value, low in (("stages", stages, 1), ("finetune_stages", finetune_stages, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        top = max(_check_b(b_max), b_end)
        return cls(kind, b_start, b_end, anneal_epochs=int(stages * pace),
                   finetune_epochs=int(finetune_stages * pace), stage_epochs=int(pace),
                   hidden_b_end=hidden_b_end, b_max=None if top == b_end else top)


MAX_PACE = 20
MAX_B_END = 1e6


def check_pace(pace) -> int:
    """``pace`` (epochs per value of b) as an int; ValueError unless it is an integer in 1..20."""
    if isinstance(pace, bool) or not isinstance(pace, (int, np.integer)) or not 1 <= pace <= MAX_PACE:
        raise ValueError(f"pace (epochs per value of b, the notebook's stage_epochs) must be an "
                         f"integer in 1..{MAX_PACE}, got {pace!r}")
    return int(pace)


def check_b_end(b_end, b_start: float = 1.0) -> float:
    """``b_end`` as a float; ValueError unless it is a finite number in ``[b_start, 1e6]``."""
    try:
        value = float(b_end)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(b_end, bool) or not (b_start <= value <= MAX_B_END):
        raise ValueError(f"b_end (b of the code layer at the end of the schedule) must be a number "
                         f"in [b_start, {MAX_B_END:g}] = [{b_start:g}, {MAX_B_END:g}], got {b_end!r}")
    return value


# --------------------------------------------------------------------------- #
# The network
# --------------------------------------------------------------------------- #


def _conv_activation(name: str) -> nn.Module:
    config.check_choice("conv_activation", name, CONV_ACTIVATIONS)
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(0.01)


class TanhAutoencoder(nn.Module):
    """The convolutional autoencoder of sec. 4 with ``f_b`` on its encoder's dense layers.

    Parameters
    ----------
    in_channels : int
        1 (MNIST) or 3 (RGB, e.g. CIFAR-10).
    image_size : (int, int)
        Input height and width (each >= 8).
    n_bits : int
        Code length (units of the code layer).
    n_dense : int >= 1
        Dense layers carrying ``f_b`` in the encoder (the last one is the code
        layer); the decoder mirrors them.
    hidden : int
        Width of the hidden dense layers (used when ``n_dense >= 2``).
    conv_activation : {"relu", "leaky_relu"}
        Activation of the convolutions and of the decoder's dense layers
        (LeakyReLU with slope 0.01).
    filters : tuple of int
        Filters of the encoder's convolutions (the paper: 16, 32, 64).

    Shapes
    ------
    ``forward``: float32 ``(N, C, H, W)`` in [0, 1] -> reconstruction, same shape.
    ``code_activations``: ``(N, C, H, W)`` -> ``(N, n_bits)`` in [-1, 1].
    ``decode``: ``(N, n_bits)`` -> ``(N, C, H, W)``.
    """

    def __init__(self, in_channels: int, image_size: Sequence[int], n_bits: int, *, n_dense: int = 2,
                 hidden: int = 256, conv_activation: str = "relu",
                 filters: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
        h, w = (int(s) for s in image_size)
        if min(h, w) < 2 ** len(filters):
            raise ValueError(f"images of {h}x{w} are too small for {len(filters)} 2x2 poolings")
        (n_bits,) = config.check_bits(n_bits)
        if isinstance(n_dense, bool) or not isinstance(n_dense, int) or n_dense < 1:
            raise ValueError(f"n_dense must be an integer >= 1, got {n_dense!r}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden!r}")
        config.check_choice("conv_activation", conv_activation, CONV_ACTIVATIONS)
        self.in_channels, self.n_bits, self.n_dense = in_channels, n_bits, n_dense
        # spatial sizes at each depth: ceil-mode pooling halves and rounds up
        self.sizes = [(h, w)]
        for _ in filters:
            ph, pw = self.sizes[-1]
            self.sizes.append((-(-ph // 2), -(-pw // 2)))
        chans = [in_channels, *filters]
        enc = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(cin, cout, 3, padding=1), _conv_activation(conv_activation),
                    nn.MaxPool2d(2, ceil_mode=True)]
        self.encoder_conv = nn.Sequential(*enc)
        flat = chans[-1] * self.sizes[-1][0] * self.sizes[-1][1]
        widths = [flat] + [hidden] * (n_dense - 1) + [n_bits]
        self.encoder_dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(ScaledTanh() for _ in range(n_dense))
        back = widths[::-1]
        self.decoder_dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:]))
        self.decoder_act = _conv_activation(conv_activation)
        rev = chans[::-1]
        self.decoder_conv = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1)
                                          for cin, cout in zip(rev[:-1], rev[1:]))

    # -- b --------------------------------------------------------------------
    @property
    def b(self) -> list[float]:
        """``b`` of each activated dense layer (code layer last)."""
        return [float(a.b) for a in self.activations]

    def set_b(self, values: Sequence[float]) -> None:
        values = list(values)
        if len(values) != self.n_dense:
            raise ValueError(f"need {self.n_dense} values of b (one per dense layer), got {len(values)}")
        for act, value in zip(self.activations, values):
            act.set_b(value)

    # -- passes ---------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        want = (self.in_channels, *self.sizes[0])
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected a float batch of shape (N, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {tuple(x.shape)}")

    def code_activations(self, x: torch.Tensor) -> torch.Tensor:
        """The code layer's ``f_b`` values, ``(N, n_bits)`` in [-1, 1]."""
        self._check_input(x)
        h = self.encoder_conv(x).flatten(1)
        for layer, act in zip(self.encoder_dense, self.activations):
            h = act(layer(h))
        return h

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from codes ``z`` (``(N, n_bits)``, continuous or ``{-1, +1}``)."""
        if z.ndim != 2 or z.shape[1] != self.n_bits:
            raise ValueError(f"codes must have shape (N, {self.n_bits}), got {tuple(z.shape)}")
        h = z
        for layer in self.decoder_dense:
            h = self.decoder_act(layer(h))
        depth_h, depth_w = self.sizes[-1]
        h = h.view(len(h), -1, depth_h, depth_w)
        for i, conv in enumerate(self.decoder_conv):
            th, tw = self.sizes[-2 - i]
            h = F.interpolate(h, scale_factor=2, mode="nearest")[:, :, :th, :tw]
            h = conv(h)
            h = torch.sigmoid(h) if i == len(self.decoder_conv) - 1 else self.decoder_act(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.code_activations(x))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``(N, H, W, C)`` -> float32 tensor ``(N, C, H, W)`` in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 images of shape (N, H, W, C) with C in (1, 3), got "
                         f"{images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)


def tensor_to_images(x) -> np.ndarray:
    """float ``(N, C, H, W)`` in [0, 1] (tensor or array) -> uint8 images ``(N, H, W, C)``."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return np.clip(np.rint(x.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)


def binary_fraction(activations, level: float = BINARY_LEVEL) -> float:
    """Share of activations with ``|f| >= level`` (1.0 means the codes are binary).

    Parameters
    ----------
    activations : array or tensor of float, any shape (e.g. ``(N, n_bits)``)
    level : float in (0, 1]
    """
    a = activations.detach().cpu().numpy() if torch.is_tensor(activations) else np.asarray(activations)
    if a.size == 0:
        raise ValueError("no activations given")
    if not 0 < level <= 1:
        raise ValueError(f"level must lie in (0, 1], got {level!r}")
    return float(np.mean(np.abs(a) >= level))


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


def _mse(model: TanhAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(model(x), x)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def _monitor(model: TanhAutoencoder, x: torch.Tensor) -> dict:
    x = x.to(_model_device(model))  # the monitor images follow the model (a no-op on the CPU)
    acts = torch.cat([model.code_activations(x[i:i + 512]) for i in range(0, len(x), 512)])
    cont = torch.cat([model.decode(acts[i:i + 512]) for i in range(0, len(x), 512)])
    signs = torch.where(acts >= 0, 1.0, -1.0)
    binr = torch.cat([model.decode(signs[i:i + 512]) for i in range(0, len(x), 512)])
    counts, _ = np.histogram(acts.cpu().numpy(), bins=HISTOGRAM_BINS)
    return {"binary_fraction": binary_fraction(acts),
            "mse_continuous": float(F.mse_loss(cont, x)),
            "mse_binary": float(F.mse_loss(binr, x)),
            "histogram": counts.tolist()}


VALIDATION_K = 90
"""Cut-off of the precision measured on held-out images along the schedule (the paper's top 90)."""


@torch.inference_mode()
def _validate(model: TanhAutoencoder, x: torch.Tensor, labels: Optional[np.ndarray]) -> dict:
    """The monitor statistics on held-out images, prefixed ``val_``, plus their precision@90."""
    stats = _monitor(model, x)
    out = {f"val_{k}": v for k, v in stats.items() if k != "histogram"}
    if labels is not None:
        x = x.to(_model_device(model))
        acts = torch.cat([model.code_activations(x[i:i + 512]) for i in range(0, len(x), 512)])
        codes = (acts >= 0).cpu().numpy().astype(np.uint8)
        k = min(VALIDATION_K, len(x) - 1)
        out[f"val_precision@{VALIDATION_K}"] = evaluate_excluding_self(
            codes, codes, labels, labels, np.arange(len(x)), [f"precision@{k}"])[f"precision@{k}"]
    return out


def train_autoencoder(model: TanhAutoencoder, images: np.ndarray, schedule: BSchedule, *,
                      batch_size: int = 64, lr: float = 1e-3, final_lr: float = 1e-5, seed: int = 0,
                      monitor: Optional[np.ndarray] = None, validation: Optional[np.ndarray] = None,
                      validation_labels: Optional[np.ndarray] = None, progress: bool = True,
                      desc: str = "tanh autoencoder", device: Optional[str] = None) -> dict:
    """Train ``model`` in place with Adam, a linearly falling learning rate and ``schedule`` for b.

    Parameters
    ----------
    model : TanhAutoencoder
    images : uint8 ``(N, H, W, C)``
        Training images.
    schedule : BSchedule
        ``b`` per epoch and layer; the run lasts ``schedule.epochs`` epochs.
    batch_size, lr, final_lr : the learning rate falls linearly from ``lr``
        to ``final_lr`` over all steps (sec. 4: 1e-3 to 1e-5).
    seed : int
        Seed of the batch order.
    monitor : uint8 images, optional
        Images on which each epoch's statistics are measured (default: the
        first 1,000 training images).
    validation : uint8 images, optional
        Held-out images (not in ``images``) on which the same statistics are
        measured every epoch, as ``val_binary_fraction``, ``val_mse_continuous``
        and ``val_mse_binary``.
    validation_labels : int ``(len(validation),)``, optional
        Their labels: each epoch then also logs ``val_precision@90``, the
        precision of the top 90 when every validation image queries the codes
        of the others (its own excluded; ties averaged). Labels are used for
        this measurement only, never for training.
    device : str, optional
        Where to train (see :func:`hashstudy.training.default_device`); the
        images stay in CPU memory and move to it batch by batch.

    Returns
    -------
    dict
        ``loss`` (mean training MSE per epoch), ``logs`` (per epoch, measured
        on ``monitor`` at the end of the epoch: ``epoch``, ``b`` (code layer),
        ``binary_fraction``, ``mse_continuous`` and ``mse_binary`` (decoding
        the continuous codes and their signs), ``histogram`` (counts of code
        activations in :data:`HISTOGRAM_BINS`), and the ``val_*`` entries when
        ``validation`` is given), ``seconds``, ``schedule``.
    """
    if not isinstance(schedule, BSchedule):
        raise TypeError(f"schedule must be a BSchedule, got {type(schedule).__name__}")
    if not 0 < final_lr <= lr:
        raise ValueError(f"need 0 < final_lr <= lr, got lr={lr!r}, final_lr={final_lr!r}")
    x = images_to_tensor(images)
    x_mon = images_to_tensor(monitor if monitor is not None else images[:1000])
    x_val = images_to_tensor(validation) if validation is not None else None
    y_val = None
    if validation_labels is not None:
        if x_val is None:
            raise ValueError("validation_labels needs validation images")
        y_val = np.asarray(validation_labels)
        if y_val.shape != (len(x_val),):
            raise ValueError(f"validation_labels must have shape ({len(x_val)},), got {y_val.shape}")
        if len(x_val) < 2:
            raise ValueError("precision on validation images needs at least 2 of them")
    model.set_b(schedule.layer_b(0, model.n_dense))
    # start the sigmoid output at the mean training pixel (per channel): from the default
    # bias of 0 (output 0.5) the first Adam steps saturate the decoder and the codes collapse
    mean = x.mean(dim=(0, 2, 3)).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():
        model.decoder_conv[-1].bias.copy_(torch.log(mean / (1 - mean)))

    def on_epoch_end(epoch: int, m: TanhAutoencoder) -> dict:
        logged = {"epoch": epoch + 1, "b": m.b[-1], **_monitor(m, x_mon)}
        if x_val is not None:
            logged.update(_validate(m, x_val, y_val))
        if epoch + 1 < schedule.epochs:  # b for the next epoch
            m.set_b(schedule.layer_b(epoch + 1, m.n_dense))
        return logged

    hist = training.fit(model, (x,), _mse, epochs=schedule.epochs, batch_size=batch_size, lr=lr,
                        optimizer="adam", schedule="linear", final_lr_ratio=final_lr / lr, seed=seed,
                        progress=progress, desc=desc, on_epoch_end=on_epoch_end, device=device)
    return {"loss": hist.loss, "logs": hist.logs, "seconds": hist.seconds,
            "schedule": schedule.as_dict()}


class TanhAEHasher:
    """The autoencoder as a hasher: ``fit(images)``, ``encode(images) -> {0, 1}``.

    Trained weights are cached with :func:`hashstudy.training.cached_model`,
    keyed by a digest of the training images and every parameter below, so a
    re-run with the same inputs loads them.

    Parameters
    ----------
    n_bits : int
    seed : int
        Seeds the weight initialisation, the batch order and the monitor subset.
    n_dense, hidden, conv_activation : see :class:`TanhAutoencoder`
    schedule : BSchedule, optional
        Default ``BSchedule()``.
    batch_size, lr, final_lr : see :func:`train_autoencoder`
    n_monitor : int
        Training images (a seeded random subset) on which the per-epoch
        statistics are measured.
    validation : (uint8 images, int labels), optional
        Held-out images and their labels, measured every epoch (the ``val_*``
        entries of :func:`train_autoencoder`); part of the cache key.
    progress : bool
        Show a progress bar while training.
    device : str, optional
        Where the network trains and encodes (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``); default :func:`hashstudy.training.default_device`. Weights
        trained on a GPU are cached apart from the CPU's.

    Attributes (after ``fit``)
    --------------------------
    model_ : TanhAutoencoder (eval mode)
    history_ : dict from :func:`train_autoencoder`
    loaded_ : bool, True when the weights came from the cache
    """

    supervised = False

    def __init__(self, n_bits: int, seed: int = 0, *, n_dense: int = 2, hidden: int = 256,
                 conv_activation: str = "relu", schedule: Optional[BSchedule] = None,
                 batch_size: int = 64, lr: float = 1e-3, final_lr: float = 1e-5,
                 n_monitor: int = 1000, validation: Optional[tuple] = None, progress: bool = True,
                 device: Optional[str] = None):
        (self.n_bits,) = config.check_bits(n_bits)
        if device is not None:
            training.default_device(device)  # an unknown device fails here
        if schedule is not None and not isinstance(schedule, BSchedule):
            raise TypeError(f"schedule must be a BSchedule, got {type(schedule).__name__}")
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise ValueError("validation must be a pair (uint8 images, labels)")
            images_to_tensor(np.asarray(validation[0])[:1])  # shape and dtype check
            if len(validation[1]) != len(validation[0]):
                raise ValueError(f"validation has {len(validation[0])} images but "
                                 f"{len(validation[1])} labels")
            validation = (np.asarray(validation[0]), np.asarray(validation[1]))
        self.validation = validation
        config.check_choice("conv_activation", conv_activation, CONV_ACTIVATIONS)
        self.seed, self.n_dense, self.hidden = int(seed), n_dense, hidden
        self.conv_activation = conv_activation
        self.schedule = schedule if schedule is not None else BSchedule()
        self.batch_size, self.lr, self.final_lr = batch_size, lr, final_lr
        self.n_monitor, self.progress = n_monitor, progress
        self.device = device

    def __repr__(self) -> str:
        return (f"TanhAEHasher(n_bits={self.n_bits}, seed={self.seed}, n_dense={self.n_dense}, "
                f"hidden={self.hidden}, conv_activation={self.conv_activation!r}, "
                f"schedule={self.schedule})")

    def _build(self, channels: int, size) -> TanhAutoencoder:
        training.seed_everything(self.seed)
        return TanhAutoencoder(channels, size, self.n_bits, n_dense=self.n_dense,
                               hidden=self.hidden, conv_activation=self.conv_activation)

    def fit(self, X: np.ndarray, y=None) -> "TanhAEHasher":
        """Train on uint8 images ``X`` ``(N, H, W, C)`` (labels are ignored)."""
        X = np.asarray(X)
        images_to_tensor(X[:1])  # shape and dtype check
        if len(X) < 2:
            raise ValueError(f"fit needs at least 2 training images, got {len(X)}")
        channels, size = X.shape[-1], X.shape[1:3]
        monitor = X[np.sort(np.random.default_rng(self.seed).permutation(len(X))[:self.n_monitor])]
        key = {"data": cache.array_digest(X, length=16, with_dtype=False), "n_bits": self.n_bits, "seed": self.seed, "n_dense": self.n_dense,
               "hidden": self.hidden, "conv_activation": self.conv_activation,
               "schedule": self.schedule.as_dict(), "batch_size": self.batch_size, "lr": self.lr,
               "final_lr": self.final_lr, "n_monitor": self.n_monitor}
        val_images = val_labels = None
        if self.validation is not None:  # the key of a run without validation stays as it was
            val_images, val_labels = self.validation
            key["validation"] = (cache.array_digest(val_images, length=16, with_dtype=False) + "-"
                                 + cache.array_digest(val_labels.astype(np.int64), length=16,
                                                      with_dtype=False))

        device = training.default_device(self.device)

        def train(model):
            return train_autoencoder(model, X, self.schedule, batch_size=self.batch_size, lr=self.lr,
                                     final_lr=self.final_lr, seed=self.seed, monitor=monitor,
                                     validation=val_images, validation_labels=val_labels,
                                     progress=self.progress, desc=f"tanh AE {self.n_bits} bits",
                                     device=device)

        self.model_, self.history_, self.loaded_ = training.cached_model(
            f"tanh-ae-{self.n_bits}b", key, lambda: self._build(channels, size), train,
            device=device)
        return self

    def _check_fitted(self) -> TanhAutoencoder:
        if not hasattr(self, "model_"):
            raise baselines.NotFittedError("TanhAEHasher is not fitted yet: call fit(images) first")
        return self.model_

    def activations(self, X: np.ndarray) -> np.ndarray:
        """Code-layer values ``f_b``: float32 ``(N, n_bits)`` in [-1, 1]."""
        model = self._check_fitted()
        return training.predict(model, images_to_tensor(np.asarray(X)),
                                fn=lambda m, batch: m.code_activations(batch),
                                device=training.default_device(self.device)).astype(np.float32)

    def encode(self, X: np.ndarray) -> np.ndarray:
        """``{0, 1}`` codes, uint8 ``(N, n_bits)``: 1 where ``f_b >= 0``."""
        return np.ascontiguousarray(self.activations(X) >= 0, dtype=np.uint8)

    def reconstruct(self, X: np.ndarray, binarise: bool = True) -> np.ndarray:
        """Decoded images (uint8 ``(N, H, W, C)``) from the binarised (``sign``) or continuous codes."""
        model = self._check_fitted()
        z = self.activations(X)
        if binarise:
            z = np.where(z >= 0, 1.0, -1.0).astype(np.float32)
        out = training.predict(model, torch.from_numpy(z), fn=lambda m, batch: m.decode(batch),
                               device=training.default_device(self.device))
        return tensor_to_images(out)


# --------------------------------------------------------------------------- #
# Choosing the schedule's end and pace on held-out training images
# --------------------------------------------------------------------------- #

MIN_BINARY_SHARE = 0.99
"""A schedule qualifies only when, at the end of training, at least this share of the held-out
code activations is binary (``|f_b| >= BINARY_LEVEL``) in *every* run (every code length and
seed): the study's reading of "completely discrete" (sec. 4), the threshold of the claims
ledger's row ``tanh-binary-codes``. A schedule that does not binarise cannot be chosen."""
PRECISION_TIE = 0.01
"""Qualifying schedules whose mean held-out precision@90 is within this of the best are tied."""
FINAL_COLUMNS = ("b_end", "pace", "bits", "seed", "epochs", "binary_fraction", "mse_binary",
                 "mse_continuous", f"precision@{VALIDATION_K}")
LADDER_COLUMNS = ("b_end", "pace", "bits", "seed", "epoch", "b", "binary_fraction", "mse_binary",
                  "mse_continuous", f"precision@{VALIDATION_K}")
CANDIDATE_COLUMNS = ("b_end", "pace", "epochs", "runs", "complete", "min_binary_fraction",
                     "mean_binary_fraction", f"precision@{VALIDATION_K}", f"precision@{VALIDATION_K}_std",
                     f"min_precision@{VALIDATION_K}", "mse_binary", "mse_continuous", "qualifies", "reason")


def _history(run) -> dict:
    """A run as its history dict (a fitted :class:`TanhAEHasher` or its ``history_``)."""
    hist = getattr(run, "history_", run)
    if not isinstance(hist, Mapping) or "logs" not in hist or "schedule" not in hist:
        raise ValueError("a run must be a fitted TanhAEHasher or its history_ dict")
    if not hist["logs"] or "val_mse_binary" not in hist["logs"][-1]:
        raise ValueError("a run was trained without held-out (validation) images")
    return hist


def _val_row(log: dict) -> dict:
    return {"binary_fraction": float(log["val_binary_fraction"]), "mse_binary": float(log["val_mse_binary"]),
            "mse_continuous": float(log["val_mse_continuous"]),
            f"precision@{VALIDATION_K}": float(log.get(f"val_precision@{VALIDATION_K}", np.nan))}


def final_table(runs: Mapping[tuple, object]):
    """The held-out statistics of every run *at the end of its training*, one row per run.

    Parameters
    ----------
    runs : ``{(b_end, pace, bits, seed): fitted TanhAEHasher or its history_}``
        E.g. :func:`selection_runs`; every run trained with held-out images.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FINAL_COLUMNS`, sorted by ``b_end``, ``pace``, ``bits``,
        ``seed``: the last epoch's share of binary held-out activations,
        reconstruction MSE from the binary and from the continuous codes, and
        held-out precision@90.
    """
    import pandas as pd

    rows = []
    for (b_end, pace, n_bits, seed), run in runs.items():
        hist = _history(run)
        rows.append({"b_end": float(b_end), "pace": int(pace), "bits": int(n_bits), "seed": int(seed),
                     "epochs": len(hist["logs"]), **_val_row(hist["logs"][-1])})
    table = pd.DataFrame(rows, columns=list(FINAL_COLUMNS))
    return table.sort_values(["b_end", "pace", "bits", "seed"], kind="stable").reset_index(drop=True)


def ladder_table(runs: Mapping[tuple, object]):
    """The held-out statistics while ``b`` rises: one row per run and value of ``b``.

    What a run shows on its way up, not the state training ends in: for each
    value the code layer's ``b`` takes while it rises (the annealing epochs;
    rungs held at ``b_end`` count as one), the reading at the last epoch at
    that value. Columns :data:`LADDER_COLUMNS`.
    """
    import pandas as pd

    rows = []
    for (b_end, pace, n_bits, seed), run in runs.items():
        hist = _history(run)
        sched = hist["schedule"]
        rising = [r for r in hist["logs"] if r["epoch"] <= sched["anneal_epochs"]]
        for i, r in enumerate(rising):
            if i + 1 < len(rising) and np.isclose(rising[i + 1]["b"], r["b"]):
                continue  # not the rung's last epoch
            rows.append({"b_end": float(b_end), "pace": int(pace), "bits": int(n_bits), "seed": int(seed),
                         "epoch": int(r["epoch"]), "b": float(r["b"]), **_val_row(r)})
    return pd.DataFrame(rows, columns=list(LADDER_COLUMNS))


def candidate_table(final, design: Optional[Sequence[tuple[int, int]]] = None,
                    min_binary_share: float = MIN_BINARY_SHARE):
    """Each schedule (``b_end``, ``pace``) of :func:`final_table` summarised over its runs.

    A schedule *qualifies* when it was measured at every ``(bits, seed)`` run
    of ``design`` (:func:`selection_design`; default: every pair in the
    table) and each of those runs ends with at least ``min_binary_share`` of
    its held-out activations binary. ``precision@90`` and the MSE columns are
    means over those runs; ``precision@90_std`` is the standard deviation over
    seeds of the runs of the code length measured with most seeds (NaN for
    one seed); ``reason`` says why a schedule does not qualify. Columns
    :data:`CANDIDATE_COLUMNS`.
    """
    import pandas as pd

    key = f"precision@{VALIDATION_K}"
    if not 0 < float(min_binary_share) <= 1:
        raise ValueError(f"min_binary_share must be in (0, 1], got {min_binary_share!r}")
    design = sorted(set(zip(final["bits"], final["seed"]))) if design is None else \
        sorted({(int(b), int(s)) for b, s in design})
    rows = []
    for (b_end, pace), runs in final.groupby(["b_end", "pace"], sort=True):
        runs = runs[[(b, s) in set(design) for b, s in zip(runs.bits, runs.seed)]]
        have = set(zip(runs.bits, runs.seed))
        missing = [(b, s) for b, s in design if (b, s) not in have]
        worst = runs.loc[runs.binary_fraction.idxmin()] if len(runs) else None
        most = runs.bits.value_counts().idxmax() if len(runs) else None
        per_seed = runs[runs.bits == most][key]
        binary = worst is not None and worst.binary_fraction >= min_binary_share
        reason = ("not measured at " + ", ".join(f"{b} bits seed {s}" for b, s in missing[:4])
                  + (" ..." if len(missing) > 4 else "")) if missing else \
            "" if binary else (f"not binary: {worst.binary_fraction:.1%} of the held-out activations "
                               f"at {int(worst.bits)} bits, seed {int(worst.seed)} "
                               f"(needs {min_binary_share:.0%} in every run)")
        rows.append({"b_end": float(b_end), "pace": int(pace),
                     "epochs": int(runs.epochs.max()) if len(runs) else 0, "runs": len(runs),
                     "complete": not missing,
                     "min_binary_fraction": float(runs.binary_fraction.min()) if len(runs) else np.nan,
                     "mean_binary_fraction": float(runs.binary_fraction.mean()) if len(runs) else np.nan,
                     key: float(runs[key].mean()) if len(runs) else np.nan,
                     f"{key}_std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan,
                     f"min_{key}": float(runs[key].min()) if len(runs) else np.nan,
                     "mse_binary": float(runs.mse_binary.mean()) if len(runs) else np.nan,
                     "mse_continuous": float(runs.mse_continuous.mean()) if len(runs) else np.nan,
                     "qualifies": bool(not missing and binary), "reason": reason})
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))


def choose_schedule(final, design: Optional[Sequence[tuple[int, int]]] = None,
                    min_binary_share: float = MIN_BINARY_SHARE, tie: float = PRECISION_TIE) -> dict:
    """The rule of notebook 03 that picks the schedule's end and pace, from held-out training images.

    On the *final state* of the runs of every candidate schedule
    (:func:`final_table` of :func:`selection_runs`) at the ``(bits, seed)``
    runs of ``design`` (:func:`selection_design`: every code length, and
    several seeds):

    1. a schedule qualifies only when it was run at every run of the design
       and every one of those runs ends with at least ``min_binary_share``
       (99 %) of its held-out code activations binary (``|f_b| >= 0.99``):
       a schedule that leaves some code layer continuous cannot be chosen,
       however well it retrieves (thresholding a continuous code is the
       "filter" approach of sec. 2);
    2. the qualifying schedules are ranked by their held-out precision@90,
       the mean over the runs of the design; those within ``tie`` (0.01) of
       the best are tied;
    3. among the tied: the fastest pace (a slower pace costs proportionally
       more training, so it has to win by more than ``tie``), then the lowest
       held-out reconstruction error from the binary codes (sec. 4: "if the
       image can be reconstructed from the binary latent representation"),
       then the smaller ``b_end``.

    Returns
    -------
    dict
        ``b_end``, ``pace``, ``precision`` (mean held-out precision@90) and
        ``precision_std`` (over seeds), ``mse_binary``, ``binary_fraction``
        (the smallest share of any of its runs), ``candidates``
        (:func:`candidate_table`), ``text`` (the choice and why the others
        lost, in one paragraph).

    Raises
    ------
    ValueError
        When no schedule qualifies (the message lists why each one fails).
    """
    key = f"precision@{VALIDATION_K}"
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or not tie >= 0:
        raise ValueError(f"tie must be a number >= 0, got {tie!r}")
    cand = candidate_table(final, design, min_binary_share)
    ok = cand[cand.qualifies & cand[key].notna()]
    if ok.empty:
        why = "; ".join(f"b_end = {r.b_end:g}, pace {r.pace}: {r.reason or 'no held-out precision'}"
                        for r in cand.itertuples())
        raise ValueError(f"no schedule qualifies ({why or 'no runs'}); try a larger b_end")
    tied = ok[ok[key] >= ok[key].max() - tie]
    top = tied.sort_values(["pace", "mse_binary", "b_end"], kind="stable").iloc[0]
    others = []
    for _, r in cand.iterrows():
        if r.b_end == top.b_end and r.pace == top.pace:
            continue
        others.append(f"b_end = {r.b_end:g}, pace {int(r.pace)}: " + (
            r.reason if not r.qualifies else f"qualifies, precision@{VALIDATION_K} {r[key]:.3f}, "
                                             f"reconstruction MSE from the binary codes {r.mse_binary:.4f}"))
    text = (f"b_end = {top.b_end:g} at pace {int(top.pace)} ({int(top.epochs)} epochs): held-out "
            f"precision@{VALIDATION_K} {top[key]:.3f} (mean of {int(top.runs)} runs; seed std "
            f"{top[key + '_std']:.3f}), reconstruction MSE from the "
            f"binary codes {top.mse_binary:.4f}, at least {top.min_binary_fraction:.1%} of the held-out "
            f"activations binary in every run"
            + (". Others: " + "; ".join(others) if others else ""))
    return {"b_end": float(top.b_end), "pace": int(top.pace), "precision": float(top[key]),
            "precision_std": float(top[f"{key}_std"]), "mse_binary": float(top.mse_binary),
            "binary_fraction": float(top.min_binary_fraction), "candidates": cand, "text": text}


# --------------------------------------------------------------------------- #
# Protocol: test queries against the test set, a query never its own result
# --------------------------------------------------------------------------- #

# (moved to hashstudy.protocols.test_vs_test_split; the old names stay importable)
TEST_VS_TEST = protocols.TEST_VS_TEST
test_vs_test_split = protocols.test_vs_test_split


def validation_split(split: protocols.Split, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Held-out *training* images on which the schedule is chosen: ``(fit, val)`` pool indices.

    Only images of the training split are used, never a query or database
    (test) image. When the split trains on a subset and at least ``n_val``
    training images are left over (profile quick: 50,000 of 60,000),
    ``val`` is ``n_val`` of those and ``fit`` is ``split.train`` itself, so a
    model trained for the selection is the same as one trained on the
    split. Otherwise (profile paper trains on all 60,000) ``val`` is ``n_val``
    of ``split.train`` and ``fit`` the rest of it.

    Parameters
    ----------
    split : Split
        From :func:`hashstudy.protocols.test_vs_test_split` (pool indices: training split first).
    n_val : int >= 2
    seed : int
        Seed of the draw.

    Returns
    -------
    fit, val : sorted int64 arrays of pool indices, disjoint, both in the training split
    """
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or n_val < 2:
        raise ValueError(f"n_val must be an integer >= 2, got {n_val!r}")
    n_tr = int(split.n_train_split)
    train = np.asarray(split.train, dtype=np.int64)
    if train.size and (train.min() < 0 or train.max() >= n_tr):
        raise ValueError("split.train must hold training-split pool indices (0..n_train_split-1)")
    rng = np.random.default_rng([int(seed), 20200507])  # the paper's date: its own stream
    unused = np.setdiff1d(np.arange(n_tr, dtype=np.int64), train)
    if len(unused) >= n_val:
        return np.sort(train), np.sort(rng.choice(unused, size=n_val, replace=False))
    if len(train) < n_val + 2:
        raise ValueError(f"n_val={n_val} leaves fewer than 2 of the {len(train)} training images "
                         "to train on")
    val = np.sort(rng.choice(train, size=n_val, replace=False))
    return np.setdiff1d(train, val), val


def candidate_schedule(b_end: float, pace: int, *, stages: int, finetune_stages: int,
                       kind: str = "geometric", b_start: float = 1.0,
                       hidden_b_ratio: float = 0.1) -> BSchedule:
    """Notebook 03's schedule for an end and a pace: :meth:`BSchedule.paced` on the ladder to 1000.

    The ladder reaches :data:`PAPER_B_END` whatever the end, and the hidden
    dense layers stop at ``hidden_b_ratio * b_end``; ``stages`` and
    ``finetune_stages`` are the profile's.
    """
    if isinstance(hidden_b_ratio, bool) or not isinstance(hidden_b_ratio, (int, float, np.floating)) \
            or not 0 < hidden_b_ratio < math.inf:
        raise ValueError(f"hidden_b_ratio must be a finite number > 0, got {hidden_b_ratio!r}")
    b_end = check_b_end(b_end, _check_b(b_start))
    return BSchedule.paced(b_end, pace, stages=stages, finetune_stages=finetune_stages, kind=kind,
                           b_start=b_start, b_max=PAPER_B_END, hidden_b_end=hidden_b_ratio * b_end)


def selection_design(bits: Sequence[int], headline_bits: int, all_bits_seeds: Sequence[int],
                     headline_seeds: Sequence[int]) -> list[tuple[int, int]]:
    """The ``(bits, seed)`` runs on which every candidate schedule is scored.

    Every code length of ``bits`` with every seed of ``all_bits_seeds``, and
    ``headline_bits`` with every seed of ``headline_seeds``; sorted, no repeats.

    >>> selection_design([8, 16, 32], 16, [0], [0, 1, 2])
    [(8, 0), (16, 0), (16, 1), (16, 2), (32, 0)]
    """
    bits = config.check_bits(bits)
    config.check_choice("headline_bits", headline_bits, bits)
    for name, seeds in (("all_bits_seeds", all_bits_seeds), ("headline_seeds", headline_seeds)):
        if isinstance(seeds, (str, bytes)) or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                                      for s in seeds):
            raise ValueError(f"{name} must be a list of integer seeds, got {seeds!r}")
    pairs = {(int(b), int(s)) for b in bits for s in all_bits_seeds}
    pairs |= {(int(headline_bits), int(s)) for s in headline_seeds}
    if not pairs:
        raise ValueError("the selection design is empty: give all_bits_seeds or headline_seeds")
    return sorted(pairs)


def selection_runs(images: np.ndarray, labels: np.ndarray, dataset: str, *,
                   design: Sequence[tuple[int, int]], b_ends: Sequence[float], paces: Sequence[int],
                   n_query: int, n_train: Optional[int], n_val: int, stages: int,
                   finetune_stages: int, kind: str = "geometric", b_start: float = 1.0,
                   hidden_b_ratio: float = 0.1, progress: bool = False, **hasher_params) -> dict:
    """Train every candidate schedule at every code length and seed, measured on held-out images.

    For each run ``(bits, s)`` of ``design`` (:func:`selection_design`): the
    split of notebook 03 with seed ``s`` (:func:`hashstudy.protocols.test_vs_test_split`) and its
    held-out *training* images (:func:`validation_split`, seed ``s``); then,
    for each end in ``b_ends`` and pace in ``paces``, a :class:`TanhAEHasher`
    with seed ``s`` and :func:`candidate_schedule` trained on the split's
    training images (at profile quick: exactly the images the comparison's
    autoencoders train on, so the candidate that the notebook uses is the
    same cached model) and measured every epoch on the held-out images. No
    query or database image is used.

    Parameters
    ----------
    images, labels : the dataset's pool (:func:`hashstudy.protocols.load_pool`)
    dataset : str
    design : ``[(bits, seed), ...]``
    b_ends, paces : the candidate schedules
    n_query, n_train : the notebook's split sizes
    n_val : int
        Held-out training images per seed.
    stages, finetune_stages, kind, b_start, hidden_b_ratio : see :func:`candidate_schedule`
    **hasher_params
        The other :class:`TanhAEHasher` arguments (``n_dense``, ``hidden``, ...).

    Returns
    -------
    dict ``(b_end, pace, bits, seed) -> fitted TanhAEHasher`` (its ``history_`` holds the
    per-epoch held-out statistics)
    """
    b_ends = [check_b_end(b, b_start) for b in b_ends]
    paces = [check_pace(p) for p in paces]
    design = [(config.check_bits([b])[0], int(s)) for b, s in design]
    for name, values in (("b_ends", b_ends), ("paces", paces), ("design", design)):
        if not values:
            raise ValueError(f"{name} must name at least one value")
    out = {}
    for seed in sorted({s for _, s in design}):
        split = protocols.test_vs_test_split(dataset, n_query, seed, n_train=n_train)
        fit, val = validation_split(split, n_val, seed)
        validation = (images[val], labels[val])
        for b_end in b_ends:
            for pace in paces:
                sched = candidate_schedule(b_end, pace, stages=stages, finetune_stages=finetune_stages,
                                           kind=kind, b_start=b_start, hidden_b_ratio=hidden_b_ratio)
                for n_bits in sorted(b for b, s in design if s == seed):
                    hasher = TanhAEHasher(n_bits, seed=seed, schedule=sched, validation=validation,
                                          progress=progress, **hasher_params).fit(images[fit])
                    out[(b_end, pace, n_bits, seed)] = hasher
    return out


def self_positions(split: protocols.Split) -> np.ndarray:
    """Position of each query in ``split.database`` (``-1`` where a query is not in it), int64 ``(Q,)``."""
    pos = np.searchsorted(split.database, split.query)
    pos = np.minimum(pos, max(len(split.database) - 1, 0))
    found = (len(split.database) > 0) & (split.database[pos] == split.query)
    return np.where(found, pos, -1).astype(np.int64)


_PER_QUERY = re.compile(r"^(map@\d+|map_all|precision@\d+|precision@recall[0-9.]+|hd\d+p(_answered)?)$")


def evaluate_excluding_self(q_codes, db_codes, q_labels, db_labels, self_index,
                            metric_keys: Sequence[str] = ("precision@90", "map_all"),
                            ties: str = "average") -> dict:
    """:func:`hashstudy.metrics.evaluate` with each query's own item removed from the database.

    Query ``i`` is ranked against the database without row ``self_index[i]``,
    so a query is never its own result; the per-query values are averaged over
    queries. Ties are averaged over their orders (``ties="average"``, as for
    every reported metric of the study) or broken by index (``"index"``).

    Parameters
    ----------
    q_codes : {0,1} codes ``(Q, bits)``
    db_codes : {0,1} codes ``(N, bits)``
    q_labels, db_labels : int ``(Q,)``, ``(N,)``
    self_index : int ``(Q,)``
        Row of ``db_codes`` holding query ``i`` itself, or ``-1`` (nothing removed).
    metric_keys : sequence of str
        Keys of :func:`hashstudy.metrics.evaluate` that are means over queries
        (``map@k``, ``map_all``, ``precision@k``, ``precision@recall<l>``,
        ``hd<r>p``, ``hd<r>p_answered``).
    ties : {"average", "index"}
        Tie order of the ranking metrics (see :func:`hashstudy.metrics.evaluate`).

    Returns
    -------
    dict of str to float
    """
    keys = list(metric_keys)
    for key in keys:
        if not _PER_QUERY.match(key):
            raise ValueError(f"{key!r} is not a mean over queries; evaluate_excluding_self supports "
                             "map@k, map_all, precision@k, precision@recall<l>, hd<r>p(_answered)")
    q, d = hamming.pack(q_codes), hamming.pack(db_codes)
    ql, dl = np.asarray(q_labels), np.asarray(db_labels)
    self_index = np.asarray(self_index, dtype=np.int64)
    if self_index.shape != (len(q),):
        raise ValueError(f"self_index must have shape ({len(q)},), got {self_index.shape}")
    if np.any((self_index < -1) | (self_index >= len(d))):
        raise ValueError(f"self_index entries must lie in -1..{len(d) - 1}")
    everything = np.arange(len(d))
    sums = dict.fromkeys(keys, 0.0)
    for i, s in enumerate(self_index):
        keep = everything if s < 0 else np.delete(everything, s)
        for key, value in metrics.evaluate(q[i:i + 1], d[keep], ql[i:i + 1], dl[keep], keys,
                                      ties).items():
            sums[key] += value
    return {key: total / len(q) for key, total in sums.items()}


def topk_excluding_self(q_codes, db_codes, self_index, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` database rows per query by Hamming distance, the query's own row left out.

    Returns ``(indices int64 (Q, k), distances uint16 (Q, k))`` in the study's
    tie order (distance, then index).
    """
    q, d = hamming.pack(q_codes), hamming.pack(db_codes)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < len(d):
        raise ValueError(f"k must be an integer in 1..{len(d) - 1} (the database minus the query), "
                         f"got {k!r}")
    self_index = np.asarray(self_index, dtype=np.int64)
    if self_index.shape != (len(q),):
        raise ValueError(f"self_index must have shape ({len(q)},), got {self_index.shape}")
    idx, dist = hamming.topk(q, d, k + 1)
    keep = idx != self_index[:, None]
    keep[keep.all(axis=1), -1] = False  # own row not among the k + 1: the first k are the answer
    return idx[keep].reshape(len(q), k), dist[keep].reshape(len(q), k)


# --------------------------------------------------------------------------- #
# The comparison of sec. 5
# --------------------------------------------------------------------------- #


def compare(images: np.ndarray, labels: np.ndarray, split: protocols.Split, bits: Sequence[int], *,
            methods: Sequence[str] = ("lsh", "itq"), seed: int = 0,
            autoencoder: Optional[Mapping] = None,
            metric_keys: Sequence[str] = ("precision@90", "map_all"), progress: bool = True):
    """Train the autoencoder and the pixel baselines at every code length and evaluate them.

    Every method trains on ``split.train`` (the autoencoder on the images, the
    baselines on pixel vectors, :func:`hashstudy.evaluation.as_vectors`) and
    is evaluated with :func:`evaluate_excluding_self` on the same queries.

    Parameters
    ----------
    images : uint8 ``(N_pool, H, W, C)``
        The pool (training split then test split).
    labels : int ``(N_pool,)``
    split : Split
        E.g. from :func:`hashstudy.protocols.test_vs_test_split`.
    bits : sequence of int
    methods : baselines of :mod:`hashstudy.baselines` to compare with
    seed : int
    autoencoder : dict, optional
        Keyword arguments of :class:`TanhAEHasher` (besides ``n_bits`` and ``seed``).
    metric_keys : see :func:`evaluate_excluding_self`

    Returns
    -------
    :class:`hashstudy.evaluation.Result`
        ``table``: long format ``method, bits, metric, value`` (as
        :func:`hashstudy.evaluation.run`), the autoencoder as ``tanh_ae``
        with an extra ``binary_fraction`` row (share of the database's code
        activations with ``|f| >= 0.99``), and a ``fit_seconds`` row per pair;
        ``codes[(method, bits)]``: :class:`hashstudy.evaluation.Codes`;
        ``fitted[(method, bits)]``: the fitted hashers (:func:`autoencoders`
        picks the autoencoders out by code length).
    """
    import pandas as pd

    bits = config.check_bits(list(bits))
    for m in methods:
        config.check_choice("method", m, baselines.METHODS)
    # only the images the split uses, with the split re-indexed onto them
    used = np.unique(np.concatenate([split.train, split.query, split.database]))
    local = dataclasses.replace(split, train=np.searchsorted(used, split.train),
                                query=np.searchsorted(used, split.query),
                                database=np.searchsorted(used, split.database))
    imgs, labs = np.asarray(images)[used], np.asarray(labels)[used]
    vectors = evaluation.as_vectors(imgs) if methods else None
    selves = self_positions(split)
    ql, dl = labs[local.query], labs[local.database]
    rows, codes, fitted = [], {}, {}
    pairs = [("tanh_ae", b) for b in bits] + [(m, b) for m in methods for b in bits]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="hashing", unit="method")
    for m, b in pairs:
        if m == "tanh_ae":
            hasher = TanhAEHasher(b, seed=seed, progress=progress, **dict(autoencoder or {}))
            q, d, secs = evaluation.encode_split(hasher, imgs, labs, local)
            extra = {"binary_fraction": binary_fraction(hasher.activations(imgs[local.database]))}
            secs = hasher.history_["seconds"]
        else:
            hasher = baselines.make(m, b, seed=seed)
            q, d, secs = evaluation.encode_split(hasher, vectors, labs, local)
            extra = {}
        codes[(m, b)] = evaluation.Codes(m, b, q, d, secs)
        fitted[(m, b)] = hasher
        values = {**evaluate_excluding_self(q, d, ql, dl, selves, metric_keys), **extra,
                  "fit_seconds": secs}
        rows += [{"method": m, "bits": b, "metric": k, "value": v} for k, v in values.items()]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return evaluation.Result(pd.DataFrame(rows, columns=["method", "bits", "metric", "value"]), codes, fitted)


def autoencoders(result) -> dict:
    """The fitted autoencoders of a :func:`compare` result by code length: ``{bits: TanhAEHasher}``."""
    return {b: h for (m, b), h in result.fitted.items() if m == "tanh_ae"}


# --------------------------------------------------------------------------- #
# Notebook 03's report: parameters, tables, metrics and texts
# --------------------------------------------------------------------------- #

GRAYSCALE_DATASETS = ("mnist", "fashion-mnist", "kmnist")
"""Datasets notebook 03's parameter ``dataset`` names (or ``folder:<path>``)."""
RGB_DATASETS = ("cifar10",)
"""Datasets notebook 03's parameter ``rgb_dataset`` names (or ``folder:<path>``, or empty)."""
WHY_NUMBERS_DIFFER = (
    "**Why numbers can differ.** The paper's figure values are not available, its training length and "
    "values of b are not given, and it does not say whether a query is excluded from its own results "
    "(we exclude it, which lowers precision slightly). Its LSH may also be a different variant from ours "
    "(random hyperplanes through the mean of the training pixels).")
"""The paragraph of notebook 03's ``paper_vs_ours.md`` on why the paper's numbers and ours differ."""


def check_parameters(bits: Sequence[int], *, headline_bits: int, b_schedule: str, conv_activation: str,
                     dataset: str, rgb_dataset: str, b_start: float, select_b_ends: Sequence[float],
                     select_paces: Sequence[int]) -> tuple[list[int], list[float], list[int]]:
    """Check notebook 03's parameters, one clear ``ValueError`` per bad value.

    Returns ``(bits, select_b_ends, select_paces)`` as checked
    (:func:`hashstudy.config.check_bits`, :func:`check_b_end`,
    :func:`check_pace`). Two datasets whose metric keys would share their
    first part (``data.key_token``) are refused.
    """
    from . import data

    bits = config.check_bits(bits)
    config.check_choice("headline_bits", headline_bits, bits)
    config.check_choice("b_schedule", b_schedule, SCHEDULE_KINDS)
    config.check_choice("conv_activation", conv_activation, CONV_ACTIVATIONS)
    data.check_name("dataset", dataset, list(GRAYSCALE_DATASETS))
    data.check_name("rgb_dataset", rgb_dataset, list(RGB_DATASETS), empty=True)
    if dataset and rgb_dataset and data.key_token(dataset) == data.key_token(rgb_dataset):
        raise ValueError(f"dataset {dataset!r} and rgb_dataset {rgb_dataset!r} would share the metric "
                         f"keys {data.key_token(dataset)}/...; name folders with different last names")
    return (bits, [check_b_end(b, b_start) for b in select_b_ends],
            [check_pace(p) for p in select_paces])


def rgb_skip_reason(run: bool, rgb_dataset: str) -> Optional[str]:
    """Why notebook 03's colour experiment does not run, or ``None`` when it does.

    It is off when ``run`` is false (parameter ``cifar``) or ``rgb_dataset`` is
    empty; CIFAR-10 needs both of its splits under the data root; a folder
    named by the user is loaded (and fails loudly if it is not there).
    """
    from . import data

    if not run:
        return "switched off (cifar=False)"
    if not rgb_dataset:
        return "switched off (rgb_dataset empty)"
    if rgb_dataset == "cifar10" and not (data.available("cifar10", "train")
                                         and data.available("cifar10", "test")):
        return f"CIFAR-10 not found under {config.data_root()}"
    return None


@dataclass
class Selection:
    """The schedule selection as notebook 03 shows it (:func:`report_selection`).

    ``final``, ``ladder``: :func:`final_table`, :func:`ladder_table` of the
    runs; ``candidates``: :func:`candidate_table` (with the rule's columns);
    ``chosen``: :func:`choose_schedule`'s result, ``None`` when no candidate
    qualifies; ``text``: one Markdown paragraph on the rule's choice. All
    ``None`` but ``text`` when there were no selection runs.
    """

    final: Optional[object] = field(default=None, repr=False)
    ladder: Optional[object] = field(default=None, repr=False)
    candidates: Optional[object] = field(default=None, repr=False)
    chosen: Optional[dict] = field(default=None, repr=False)
    text: str = "No selection runs (select_b_ends or select_paces is empty)."


def report_selection(report, runs: Mapping[tuple, object], design: Sequence[tuple[int, int]], *,
                     key: str, b_end: float, pace: int) -> Selection:
    """Judge the selection runs with :func:`choose_schedule` and write what notebook 03 reports of them.

    Parameters
    ----------
    report : :class:`hashstudy.reporting.Report`
    runs : :func:`selection_runs`' result (empty: nothing is written)
    design : :func:`selection_design`
    key : str
        The dataset's key token (``"mnist"``).
    b_end, pace : the schedule this run uses, compared with the rule's choice

    Writes the tables ``<key>_schedule_selection_runs``, ``<key>_schedule_ladder``
    and ``<key>_schedule_selection``; the metrics
    ``<key>/validation/schedule/{b_end,pace,precision@90,mse_binary,binary_fraction}``
    (the choice, when there is one) and, per candidate,
    ``<key>/validation/b_end_<b>_pace_<p>/{qualifies,min_binary_fraction}``.
    """
    if not runs:
        return Selection()
    final, ladder = final_table(runs), ladder_table(runs)
    report.table(f"{key}_schedule_selection_runs", final)
    report.table(f"{key}_schedule_ladder", ladder)
    chosen = None
    try:
        chosen = choose_schedule(final, design)
    except ValueError as err:  # no candidate binarises everywhere
        candidates = candidate_table(final, design)
        text = f"**The rule on held-out training images** chooses nothing: {err}."
    else:
        candidates = chosen["candidates"]
        for name in ("b_end", "pace", "precision", "mse_binary", "binary_fraction"):
            report.add(f"{key}/validation/schedule/{name if name != 'precision' else 'precision@90'}",
                       chosen[name])
        agree = np.isclose(chosen["b_end"], b_end) and chosen["pace"] == pace
        text = (f"**The rule on held-out training images** ({len(design)} runs per schedule: "
                f"{', '.join(f'{b} bits seed {s}' for b, s in design)}) chooses {chosen['text']}. "
                + ("This run's parameters are the rule's choice." if agree else
                   f"This run uses b_end = {b_end:g} and stage_epochs = {pace} instead."))
    report.table(f"{key}_schedule_selection", candidates)
    for r in candidates.itertuples():
        report.add(f"{key}/validation/b_end_{r.b_end:g}_pace_{r.pace}/qualifies", float(r.qualifies))
        report.add(f"{key}/validation/b_end_{r.b_end:g}_pace_{r.pace}/min_binary_fraction",
                   r.min_binary_fraction)
    return Selection(final, ladder, candidates, chosen, text)


def report_comparison(report, result, key: str):
    """Write a :func:`compare` result: its metrics ``<key>/<method>/<bits>/<metric>`` and the table
    ``<key>_precision_vs_bits`` (rows ``metric, method``, one column per code length), returned."""
    for name, value in result.metrics(key).items():
        report.add(name, value)
    wide = result.table.pivot_table(index=["metric", "method"], columns="bits", values="value", sort=False)
    report.table(f"{key}_precision_vs_bits", wide, index=True)
    return wide


def report_validation_end(report, hashers: Mapping[int, "TanhAEHasher"], *, key: str, b_end: float,
                          pace: int, seed: int):
    """The comparison's autoencoders at the end of training, on their held-out training images.

    ``hashers``: ``{bits: TanhAEHasher}`` trained with validation images
    (:func:`autoencoders`). Writes the metrics
    ``<key>/validation/tanh_ae/<bits>/{precision@90,mse_binary,binary_fraction}``
    and the table ``<key>_schedule_validation_end`` (:func:`final_table`), returned.
    """
    end = final_table({(b_end, pace, b, seed): h for b, h in hashers.items()})
    for _, r in end.iterrows():
        for name in (f"precision@{VALIDATION_K}", "mse_binary", "binary_fraction"):
            report.add(f"{key}/validation/tanh_ae/{int(r.bits)}/{name}", r[name])
    report.table(f"{key}_schedule_validation_end", end)
    return end


def report_claims(report, result, key: str) -> None:
    """The two numbers the paper's claims are judged on (the claims ledger, ``tanh-*`` rows).

    ``<key>/tanh_ae/all_bits/above_lsh_precision@90``: 1.0 when the
    autoencoder's precision@90 is above LSH's at every code length of
    ``result``, else 0.0; ``<key>/tanh_ae/all_bits/min_binary_fraction``: the
    smallest share of binary code activations over the code lengths.
    """
    p90 = result.wide(f"precision@{VALIDATION_K}")
    report.add(f"{key}/tanh_ae/all_bits/above_lsh_precision@{VALIDATION_K}",
               float((p90.loc["tanh_ae"] > p90.loc["lsh"]).all()))
    t = result.table
    report.add(f"{key}/tanh_ae/all_bits/min_binary_fraction",
               float(t[(t.method == "tanh_ae") & (t.metric == "binary_fraction")].value.min()))


def paper_vs_ours(metrics: Mapping[str, float], dataset: str):
    """:func:`hashstudy.reporting.compare_with_paper` for notebook 03, with why ours may differ.

    The paper's numbers are about MNIST; on another ``dataset`` every row
    says it was not measured.
    """
    from .reporting import compare_with_paper

    why = {"mnist/tanh_ae/all_bits/above": "Ours: the same queries and training images for all methods, each "
                                           "query excluded from its own results; the paper's training length "
                                           "is unknown.",
           "mnist/tanh_ae/16/binary_fraction": "Ours counts |f| >= 0.99 on the test-set codes."}
    if dataset != "mnist":
        why = {"mnist/": f"Not measured: this run uses the dataset `{dataset}`, not MNIST."}
    return compare_with_paper(metrics, "03_tanh_autoencoder", why=why)


def schedule_text(schedule: BSchedule, *, b_end: float, pace: int, selection: Selection) -> str:
    """Notebook 03's ``paper_vs_ours.md``: this run's schedule against the paper's reading, the rule's
    choice (``selection.text``) and :data:`WHY_NUMBERS_DIFFER`."""
    same = np.isclose(b_end, PAPER_B_END) and pace == PAPER_PACE
    return (f"**Schedule.** b climbs to {b_end:g} at {pace} epoch(s) per rung ({schedule.epochs} epochs); "
            f"the paper's reading is b to {PAPER_B_END:g} at one epoch per rung"
            + (" (the same)" if same else "") + ". " + selection.text + "\n\n" + WHY_NUMBERS_DIFFER)


def summary_text(results: Mapping[str, tuple], *, seed: int, schedule: BSchedule, b_end: float, pace: int,
                 chosen: Optional[Mapping] = None) -> str:
    """Notebook 03's ``summary.md``: precision@90 per code length of each experiment, and the schedule.

    ``results``: ``{dataset title: (split, compare result)}``. The verdicts
    on the paper's claims are the claims ledger's (:mod:`hashstudy.claims`),
    not repeated here.
    """
    key = f"precision@{VALIDATION_K}"
    lines = []
    for title, (split, result) in results.items():
        p = result.wide(key)
        lines.append(f"- {title} ({split.name}, seed {seed}): {key} of the autoencoder / LSH / ITQ: "
                     + "; ".join(f"{b} bits {p.loc['tanh_ae', b]:.3f} / {p.loc['lsh', b]:.3f} / "
                                 f"{p.loc['itq', b]:.3f}" for b in p.columns) + ".")
    lines.append(f"- Schedule: b to {b_end:g}, {pace} epoch(s) per rung ({schedule.epochs} epochs)"
                 + (f"; the rule on held-out training images: b_end {chosen['b_end']:.3g}, "
                    f"pace {chosen['pace']}." if chosen else "."))
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# How far one seed moves between torch thread counts
# --------------------------------------------------------------------------- #

THREAD_COLUMNS = ("seed", "bits", "threads", f"precision@{VALIDATION_K}", "map_all", "binary_fraction",
                  f"val_precision@{VALIDATION_K}", "val_binary_fraction", "val_mse_binary",
                  "bit_agreement", "train_seconds", "loaded")


def thread_runs(images: np.ndarray, labels: np.ndarray, dataset: str, *, bits: Sequence[int],
                seeds: Sequence[int], threads: Sequence[int] = (1, 2), b_end: float = DEFAULT_B_END,
                pace: int = DEFAULT_PACE, sizes: Optional[Mapping] = None, **hasher_params):
    """The same seed and schedule trained with each torch thread count, and what it changes.

    On a CPU, torch splits its floating-point sums by thread, so one seed gives
    other weights on another thread count (the cache keeps them apart,
    :func:`hashstudy.training.cached_model`). For every seed and code length,
    the model of :func:`selection_runs` (the notebook's model at that seed) is
    trained once per count in ``threads`` and evaluated under notebook 03's
    protocol: precision@90 and mAP of the test queries, the share of binary
    test activations, the held-out statistics at the end of training, and
    ``bit_agreement``, the share of database code bits equal to those of the
    first thread count's model.

    ``sizes``: the profile's :data:`PROFILE_SIZES` entry (default: quick).
    Returns a DataFrame with columns :data:`THREAD_COLUMNS`. torch's thread
    count is restored afterwards.
    """
    import pandas as pd

    sizes = dict(PROFILE_SIZES["quick"] if sizes is None else sizes)
    threads = [int(t) for t in threads]
    if not threads or any(isinstance(t, bool) or t < 1 for t in threads):
        raise ValueError(f"threads must be a non-empty list of integers >= 1, got {threads!r}")
    before = torch.get_num_threads()
    rows = []
    try:
        for seed in seeds:
            split = protocols.test_vs_test_split(dataset, sizes["n_query"], seed, n_train=sizes["n_train"])
            selves = self_positions(split)
            ql, dl = labels[split.query], labels[split.database]
            for n_bits in config.check_bits(bits):
                reference = None
                for t in threads:
                    torch.set_num_threads(t)  # read by the cache key when the model is fitted
                    (hasher,) = selection_runs(
                        images, labels, dataset, design=[(n_bits, seed)], b_ends=[b_end], paces=[pace],
                        n_query=sizes["n_query"], n_train=sizes["n_train"], n_val=sizes["n_val"],
                        stages=sizes["stages"], finetune_stages=sizes["finetune_stages"],
                        n_monitor=sizes["n_monitor"], **hasher_params).values()
                    q, d = hasher.encode(images[split.query]), hasher.encode(images[split.database])
                    reference = d if reference is None else reference
                    values = evaluate_excluding_self(q, d, ql, dl, selves, [f"precision@{VALIDATION_K}", "map_all"])
                    last = hasher.history_["logs"][-1]
                    rows.append({"seed": int(seed), "bits": n_bits, "threads": t, **values,
                                 "binary_fraction": binary_fraction(hasher.activations(images[split.database])),
                                 f"val_precision@{VALIDATION_K}": last[f"val_precision@{VALIDATION_K}"],
                                 "val_binary_fraction": last["val_binary_fraction"],
                                 "val_mse_binary": last["val_mse_binary"],
                                 "bit_agreement": float((d == reference).mean()),
                                 "train_seconds": float(hasher.history_["seconds"]), "loaded": bool(hasher.loaded_)})
    finally:
        torch.set_num_threads(before)
    return pd.DataFrame(rows, columns=list(THREAD_COLUMNS))


def _main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hashstudy.autoencoder threads``: :func:`thread_runs` written beside notebook 03's report."""
    import argparse

    from . import data, protocols

    parser = argparse.ArgumentParser(
        prog="python -m hashstudy.autoencoder",
        description="Notebook 03's autoencoder at one seed trained with several torch thread counts; "
                    "writes threads.csv and threads.md into reports/03_tanh_autoencoder/<profile>/.")
    parser.add_argument("command", choices=["threads"])
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--bits", default="32", help="code lengths, comma-separated (default 32)")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated (default 0)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (default 1,2)")
    parser.add_argument("--b-end", type=float, default=DEFAULT_B_END,
                        help=f"end of the b schedule (default {DEFAULT_B_END:g}, the notebook's)")
    parser.add_argument("--pace", type=int, default=DEFAULT_PACE,
                        help=f"epochs per rung of b (default {DEFAULT_PACE}, the notebook's)")
    args = parser.parse_args(argv)
    try:
        ints = {name: [int(v) for v in getattr(args, name).split(",") if v.strip()]
                for name in ("bits", "seeds", "threads")}
    except ValueError as err:
        parser.error(f"--bits, --seeds and --threads take comma-separated integers ({err})")
    data.check_name("dataset", args.dataset, ["mnist", "fashion-mnist", "kmnist"])
    sizes = PROFILE_SIZES[args.profile]
    images, labels, _ = protocols.load_pool(args.dataset)
    try:
        b_end, pace = check_b_end(args.b_end), check_pace(args.pace)
        table = thread_runs(images, labels, args.dataset, bits=ints["bits"], seeds=ints["seeds"],
                            threads=ints["threads"], b_end=b_end, pace=pace, sizes=sizes)
    except ValueError as err:
        parser.error(str(err))
    out = config.reports_dir("03_tanh_autoencoder", args.profile)
    table.to_csv(out / "threads.csv", index=False)
    lines = []
    for (seed, n_bits), rows in table.groupby(["seed", "bits"], sort=True):
        p = rows[f"precision@{VALIDATION_K}"]
        lines.append(f"- {data.title(args.dataset)}, b_end = {b_end:g}, pace {pace}, {n_bits} bits, seed {seed}: "
                     f"precision@{VALIDATION_K} "
                     + ", ".join(f"{v:.3f} on {t} thread(s)" for t, v in zip(rows.threads, p))
                     + f" (range {p.max() - p.min():.3f}); share of binary test activations "
                     + ", ".join(f"{v:.2%}" for v in rows.binary_fraction)
                     + "; database code bits equal to the first count's: "
                     + ", ".join(f"{v:.1%}" for v in rows.bit_agreement) + ".")
    command = (f"python -m hashstudy.autoencoder threads --profile {args.profile} --dataset {args.dataset} "
               f"--bits {args.bits} --seeds {args.seeds} --threads {args.threads} --b-end {b_end:g} --pace {pace}")
    (out / "threads.md").write_text(f"One seed trained with several torch thread counts (`{command}`; "
                                    "table: threads.csv):\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print("written:", out / "threads.csv", out / "threads.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
