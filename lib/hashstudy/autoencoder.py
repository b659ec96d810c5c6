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
reconstruction error from the continuous and from the binarised codes.

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
from test set." :func:`test_vs_test_split` draws random test images as
queries, uses the whole test split as the database and (a subset of) the
training split for training. A query is never its own result:
:func:`evaluate_excluding_self` ranks each query against the database with
the query's own item removed, and :func:`topk_excluding_self` does the same
for retrieval figures.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
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
    "CONV_ACTIVATIONS",
    "TanhAutoencoder",
    "images_to_tensor",
    "tensor_to_images",
    "binary_fraction",
    "BINARY_LEVEL",
    "HISTOGRAM_BINS",
    "train_autoencoder",
    "TanhAEHasher",
    "test_vs_test_split",
    "self_positions",
    "evaluate_excluding_self",
    "topk_excluding_self",
    "compare",
    "plot_binarisation",
    "plot_activation_histograms",
    "plot_scaled_tanh",
    "plot_retrieval",
    "plot_reconstructions",
]

SCHEDULE_KINDS = ("geometric", "linear", "constant")
CONV_ACTIVATIONS = ("relu", "leaky_relu")
BINARY_LEVEL = 0.99
"""An activation counts as binary when ``|f_b(x)| >= BINARY_LEVEL``."""
HISTOGRAM_BINS = np.linspace(-1.0, 1.0, 41)
"""Bin edges of the per-epoch histograms of code activations."""


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

    def __post_init__(self):
        config.check_choice("b schedule", self.kind, SCHEDULE_KINDS)
        _check_b(self.b_start)
        _check_b(self.b_end)
        if self.hidden_b_end is not None:
            _check_b(self.hidden_b_end)
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
        t = (epoch // self.stage_epochs) / (self.n_stages - 1) if self.n_stages > 1 else 1.0
        if self.kind == "geometric":
            return float(self.b_start * (end / self.b_start) ** t)
        return float(self.b_start + (end - self.b_start) * t)

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
        return dataclasses.asdict(self)


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


@torch.inference_mode()
def _monitor(model: TanhAutoencoder, x: torch.Tensor) -> dict:
    acts = torch.cat([model.code_activations(x[i:i + 512]) for i in range(0, len(x), 512)])
    cont = torch.cat([model.decode(acts[i:i + 512]) for i in range(0, len(x), 512)])
    signs = torch.where(acts >= 0, 1.0, -1.0)
    binr = torch.cat([model.decode(signs[i:i + 512]) for i in range(0, len(x), 512)])
    counts, _ = np.histogram(acts.numpy(), bins=HISTOGRAM_BINS)
    return {"binary_fraction": binary_fraction(acts),
            "mse_continuous": float(F.mse_loss(cont, x)),
            "mse_binary": float(F.mse_loss(binr, x)),
            "histogram": counts.tolist()}


def train_autoencoder(model: TanhAutoencoder, images: np.ndarray, schedule: BSchedule, *,
                      batch_size: int = 64, lr: float = 1e-3, final_lr: float = 1e-5, seed: int = 0,
                      monitor: Optional[np.ndarray] = None, progress: bool = True,
                      desc: str = "tanh autoencoder") -> dict:
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

    Returns
    -------
    dict
        ``loss`` (mean training MSE per epoch), ``logs`` (per epoch, measured
        on ``monitor`` at the end of the epoch: ``epoch``, ``b`` (code layer),
        ``binary_fraction``, ``mse_continuous`` and ``mse_binary`` (decoding
        the continuous codes and their signs), ``histogram`` (counts of code
        activations in :data:`HISTOGRAM_BINS`)), ``seconds``, ``schedule``.
    """
    if not isinstance(schedule, BSchedule):
        raise TypeError(f"schedule must be a BSchedule, got {type(schedule).__name__}")
    if not 0 < final_lr <= lr:
        raise ValueError(f"need 0 < final_lr <= lr, got lr={lr!r}, final_lr={final_lr!r}")
    x = images_to_tensor(images)
    x_mon = images_to_tensor(monitor if monitor is not None else images[:1000])
    model.set_b(schedule.layer_b(0, model.n_dense))
    # start the sigmoid output at the mean training pixel (per channel): from the default
    # bias of 0 (output 0.5) the first Adam steps saturate the decoder and the codes collapse
    mean = x.mean(dim=(0, 2, 3)).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():
        model.decoder_conv[-1].bias.copy_(torch.log(mean / (1 - mean)))

    def on_epoch_end(epoch: int, m: TanhAutoencoder) -> dict:
        logged = {"epoch": epoch + 1, "b": m.b[-1], **_monitor(m, x_mon)}
        if epoch + 1 < schedule.epochs:  # b for the next epoch
            m.set_b(schedule.layer_b(epoch + 1, m.n_dense))
        return logged

    hist = training.fit(model, (x,), _mse, epochs=schedule.epochs, batch_size=batch_size, lr=lr,
                        optimizer="adam", schedule="linear", final_lr_ratio=final_lr / lr, seed=seed,
                        progress=progress, desc=desc, on_epoch_end=on_epoch_end)
    return {"loss": hist.loss, "logs": hist.logs, "seconds": hist.seconds,
            "schedule": schedule.as_dict()}


def _digest(images: np.ndarray) -> str:
    h = hashlib.sha256(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()[:16]


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
    progress : bool
        Show a progress bar while training.

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
                 n_monitor: int = 1000, progress: bool = True):
        (self.n_bits,) = config.check_bits(n_bits)
        config.check_choice("conv_activation", conv_activation, CONV_ACTIVATIONS)
        self.seed, self.n_dense, self.hidden = int(seed), n_dense, hidden
        self.conv_activation = conv_activation
        self.schedule = schedule if schedule is not None else BSchedule()
        self.batch_size, self.lr, self.final_lr = batch_size, lr, final_lr
        self.n_monitor, self.progress = n_monitor, progress

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
        key = {"data": _digest(X), "n_bits": self.n_bits, "seed": self.seed, "n_dense": self.n_dense,
               "hidden": self.hidden, "conv_activation": self.conv_activation,
               "schedule": self.schedule.as_dict(), "batch_size": self.batch_size, "lr": self.lr,
               "final_lr": self.final_lr, "n_monitor": self.n_monitor}

        def train(model):
            return train_autoencoder(model, X, self.schedule, batch_size=self.batch_size, lr=self.lr,
                                     final_lr=self.final_lr, seed=self.seed, monitor=monitor,
                                     progress=self.progress, desc=f"tanh AE {self.n_bits} bits")

        self.model_, self.history_, self.loaded_ = training.cached_model(
            f"tanh-ae-{self.n_bits}b", key, lambda: self._build(channels, size), train)
        return self

    def _check_fitted(self) -> TanhAutoencoder:
        if not hasattr(self, "model_"):
            raise baselines.NotFittedError("TanhAEHasher is not fitted yet: call fit(images) first")
        return self.model_

    def activations(self, X: np.ndarray) -> np.ndarray:
        """Code-layer values ``f_b``: float32 ``(N, n_bits)`` in [-1, 1]."""
        model = self._check_fitted()
        return training.predict(model, images_to_tensor(np.asarray(X)),
                                fn=lambda m, batch: m.code_activations(batch)).astype(np.float32)

    def encode(self, X: np.ndarray) -> np.ndarray:
        """``{0, 1}`` codes, uint8 ``(N, n_bits)``: 1 where ``f_b >= 0``."""
        return np.ascontiguousarray(self.activations(X) >= 0, dtype=np.uint8)

    def reconstruct(self, X: np.ndarray, binarise: bool = True) -> np.ndarray:
        """Decoded images (uint8 ``(N, H, W, C)``) from the binarised (``sign``) or continuous codes."""
        model = self._check_fitted()
        z = self.activations(X)
        if binarise:
            z = np.where(z >= 0, 1.0, -1.0).astype(np.float32)
        out = training.predict(model, torch.from_numpy(z), fn=lambda m, batch: m.decode(batch))
        return tensor_to_images(out)


# --------------------------------------------------------------------------- #
# Protocol: test queries against the test set, a query never its own result
# --------------------------------------------------------------------------- #

TEST_VS_TEST = ("random test images as queries against the whole test split as database (each "
                "query's own image removed from its ranking); hash functions trained on the "
                "training split")


def test_vs_test_split(dataset: str, n_query: int, seed: int = 0, *, n_train: Optional[int] = None,
                       root=None) -> protocols.Split:
    """The sec. 5 protocol as a :class:`~hashstudy.protocols.Split` (pool indices), saved once.

    Parameters
    ----------
    dataset : str
        A name known to :mod:`hashstudy.data`.
    n_query : int
        Random test images used as queries (not stratified).
    seed : int
        Seed of the draw (queries first, then the training subset).
    n_train : int, optional
        A random subset of the training split to train on (default: all of it).

    Returns
    -------
    Split
        ``query``: sorted test pool indices; ``database``: every test pool
        index ``n_train_split .. n_train_split + n_test_split - 1``; ``train``:
        sorted training indices. Its name is ``"test-vs-test"`` plus the sizes,
        e.g. ``"test-vs-test[n_query=1000,n_train=20000]"``. The draw is saved
        under ``<cache>/splits`` and reloaded; a saved draw for different labels
        raises :class:`~hashstudy.protocols.SplitMismatchError`.
    """
    from . import data

    train = data.load(dataset, "train", root=root)
    test = data.load(dataset, "test", root=root)
    n_tr, n_te = len(train.labels), len(test.labels)
    for name, value, high in (("n_query", n_query, n_te), ("n_train", n_train, n_tr)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if value > high:
            raise ValueError(f"{name}={value} exceeds the {high} images available in {dataset}")
    h = hashlib.sha256(np.ascontiguousarray(train.labels).tobytes() + b"|"
                       + np.ascontiguousarray(test.labels).tobytes())
    digest = np.frombuffer(h.hexdigest()[:16].encode(), dtype=np.uint8)
    sizes = f"n_query={n_query}" + (f",n_train={n_train}" if n_train is not None else "")
    name = f"test-vs-test[{sizes}]"

    def draw():
        rng = np.random.default_rng(seed)
        query = np.sort(rng.choice(n_te, size=n_query, replace=False)) + n_tr
        tr = (np.arange(n_tr) if n_train is None
              else np.sort(rng.choice(n_tr, size=n_train, replace=False)))
        return {"query": query.astype(np.int64), "train": tr.astype(np.int64), "labels_digest": digest}

    path = config.cache_dir("splits") / f"{data.file_token(dataset)}-test-vs-test_{sizes.replace(',', '_').replace('=', '')}-seed{seed}.npz"
    saved = cache.cached_arrays(path, draw)
    if not np.array_equal(saved["labels_digest"], digest):
        raise protocols.SplitMismatchError(
            f"the saved split {path} was drawn for different {dataset} labels than the data now at "
            f"{train.source}; delete that file to draw the split anew")
    return protocols.Split(dataset=dataset, protocol="test-vs-test", name=name, seed=int(seed),
                           query=saved["query"], database=np.arange(n_tr, n_tr + n_te, dtype=np.int64),
                           train=saved["train"], n_train_split=n_tr, n_test_split=n_te,
                           description=TEST_VS_TEST)


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
        E.g. from :func:`test_vs_test_split`.
    bits : sequence of int
    methods : baselines of :mod:`hashstudy.baselines` to compare with
    seed : int
    autoencoder : dict, optional
        Keyword arguments of :class:`TanhAEHasher` (besides ``n_bits`` and ``seed``).
    metric_keys : see :func:`evaluate_excluding_self`

    Returns
    -------
    table : pandas.DataFrame
        Long format ``method, bits, metric, value`` (as
        :func:`hashstudy.evaluation.compare`), the autoencoder as ``tanh_ae``
        with an extra ``binary_fraction`` row (share of the database's code
        activations with ``|f| >= 0.99``), and a ``fit_seconds`` row per pair.
    codes : dict ``(method, bits) -> evaluation.Codes``
    hashers : dict ``bits -> TanhAEHasher`` (fitted)
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
    rows, codes, hashers = [], {}, {}
    pairs = [("tanh_ae", b) for b in bits] + [(m, b) for m in methods for b in bits]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="hashing", unit="method")
    for m, b in pairs:
        if m == "tanh_ae":
            hasher = TanhAEHasher(b, seed=seed, progress=progress, **dict(autoencoder or {}))
            q, d, secs = evaluation.encode_split(hasher, imgs, labs, local)
            hashers[b] = hasher
            extra = {"binary_fraction": binary_fraction(hasher.activations(imgs[local.database]))}
            secs = hasher.history_["seconds"]
        else:
            hasher = baselines.make(m, b, seed=seed)
            q, d, secs = evaluation.encode_split(hasher, vectors, labs, local)
            extra = {}
        codes[(m, b)] = evaluation.Codes(m, b, q, d, secs)
        values = {**evaluate_excluding_self(q, d, ql, dl, selves, metric_keys), **extra,
                  "fit_seconds": secs}
        rows += [{"method": m, "bits": b, "metric": k, "value": v} for k, v in values.items()]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return pd.DataFrame(rows, columns=["method", "bits", "metric", "value"]), codes, hashers


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #


def plot_binarisation(histories: Mapping[str, dict], title: str = "",
                      paper: Optional[Mapping[str, float]] = None, paper_source: str = ""):
    """Per-epoch ``b``, binary fraction and reconstruction error of several runs.

    ``histories``: ``{label: TanhAEHasher.history_}``. Three panels: ``b`` of
    the code layer (log scale); share of code activations with ``|f| >= 0.99``;
    reconstruction MSE from the continuous (dashed) and binarised (solid) codes.
    ``paper``: ``{label: share}`` the paper states for a run at the end of
    training (e.g. ``{"16 bits": 1.0}``, "completely discrete"), marked at that
    run's last epoch (:func:`hashstudy.plots.mark_paper`, legend
    ``paper (<paper_source>)``). One legend below the panels.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from . import plots

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    colours = {}
    for i, (label, hist) in enumerate(histories.items()):
        logs = hist["logs"]
        ep = [r["epoch"] for r in logs]
        colour = colours[label] = plt.get_cmap("tab10")(i % 10)
        axes[0].plot(ep, [r["b"] for r in logs], "o-", color=colour, ms=3, label=label)
        axes[1].plot(ep, [r["binary_fraction"] for r in logs], "o-", color=colour, ms=3, label=label,
                     clip_on=False)
        axes[2].plot(ep, [r["mse_binary"] for r in logs], "o-", color=colour, ms=3)
        axes[2].plot(ep, [r["mse_continuous"] for r in logs], "--", color=colour)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("b (code layer)")
    axes[1].set_ylabel(f"share of |f| >= {BINARY_LEVEL}")
    axes[1].set_ylim(0, 1)
    axes[1].axhline(BINARY_LEVEL, color="grey", lw=0.8, ls=":")
    axes[2].set_ylabel("reconstruction MSE")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    # the line styles of the right panel, explained once
    axes[2].add_line(Line2D([], [], color="black", marker="o", ms=3, label="MSE from the binary code"))
    axes[2].add_line(Line2D([], [], color="black", ls="--", label="MSE from the continuous code"))
    for label, value in (paper or {}).items():
        if label not in histories:
            continue
        last = histories[label]["logs"][-1]["epoch"]
        marks = plots.mark_paper(axes[1], last, value, source=paper_source or "paper",
                                 label=f"paper ({plots._short_source(paper_source)}): {label}, "
                                       f"{value:.0%}" if paper_source else None)
        marks.set_markeredgecolor(colours[label])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plots.figure_legend(fig)
    return fig


def plot_activation_histograms(history: dict, final: Optional[np.ndarray] = None, n_panels: int = 4,
                               title: str = ""):
    """Histograms of the code activations ``f_b`` as ``b`` grows.

    Parameters
    ----------
    history : dict
        ``TanhAEHasher.history_`` (its per-epoch ``histogram`` counts, measured
        on the monitor images).
    final : float array ``(N, n_bits)``, optional
        Activations of the trained encoder on other images (e.g. the test
        set), drawn as a last panel.
    n_panels : int
        Epochs shown, spread evenly from the first to the last.
    """
    import matplotlib.pyplot as plt

    logs = history["logs"]
    picks = sorted(set(np.linspace(0, len(logs) - 1, min(n_panels, len(logs))).round().astype(int)))
    panels = [(f"epoch {logs[i]['epoch']}, b = {logs[i]['b']:.3g}\n"
               f"{logs[i]['binary_fraction']:.1%} with |f| >= {BINARY_LEVEL}",
               np.asarray(logs[i]["histogram"], dtype=float)) for i in picks]
    if final is not None:
        counts, _ = np.histogram(np.asarray(final).ravel(), bins=HISTOGRAM_BINS)
        panels.append((f"trained, test images\n{binary_fraction(final):.1%} with |f| >= {BINARY_LEVEL}",
                       counts.astype(float)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 2.7), squeeze=False)
    width = np.diff(HISTOGRAM_BINS)
    for ax, (label, counts) in zip(axes[0], panels):
        ax.bar(HISTOGRAM_BINS[:-1], counts / counts.sum(), width=width, align="edge", color="#3182bd")
        ax.set_yscale("log")
        ax.set_ylim(1e-5, 1.2)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("f_b(x)")
    axes[0, 0].set_ylabel("share of activations")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_scaled_tanh(bs: Sequence[float] = (1, 4, 16, 100), title: str = ""):
    """``f_b(x)`` for several ``b``, with ``sign(x)`` for reference."""
    import matplotlib.pyplot as plt

    x = torch.linspace(-3, 3, 1201, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for i, b in enumerate(bs):
        # viridis without its pale yellow end, which is hard to see on white
        ax.plot(x.numpy(), scaled_tanh(x, b).numpy(),
                color=plt.get_cmap("viridis")(0.85 * i / max(1, len(bs) - 1)), label=f"b = {b:g}")
    ax.step(x.numpy(), torch.sign(x).numpy(), where="mid", color="black", lw=0.8, ls=":", label="sign(x)")
    ax.axhspan(BINARY_LEVEL, 1.0, color="grey", alpha=0.15)
    ax.axhspan(-1.0, -BINARY_LEVEL, color="grey", alpha=0.15)
    ax.set_xlabel("x")
    ax.set_ylabel("f_b(x) = 2 / (1 + exp(-b x)) - 1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)  # the curves are near -1 there
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_retrieval(images: np.ndarray, labels: np.ndarray, split: protocols.Split, codes,
                   n_queries: int = 8, k: int = 10, seed: int = 0, title: str = ""):
    """Random queries of ``split`` with their top ``k`` results by Hamming distance (own image excluded).

    Parameters
    ----------
    images : uint8 ``(N_pool, H, W, C)``; labels : int ``(N_pool,)``
    split : Split
    codes : :class:`hashstudy.evaluation.Codes` of the split's queries and database
    n_queries, k : rows and results per row
    seed : int
        Which queries are shown.
    """
    from . import plots

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(split.query), size=min(n_queries, len(split.query)), replace=False))
    idx, _ = topk_excluding_self(codes.query[rows], codes.database, self_positions(split)[rows], k)
    q_pool, r_pool = split.query[rows], split.database[idx]
    relevant = labels[r_pool] == labels[q_pool][:, None]
    return plots.retrieval_grid(images[q_pool], images[r_pool], relevant, title=title)


def plot_reconstructions(rows: Mapping[str, np.ndarray], title: str = ""):
    """A grid of images: one row per ``{label: uint8 (n, H, W, C)}`` (e.g. input, continuous, binary)."""
    import matplotlib.pyplot as plt

    n = min(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.8 * n + 1.2, 0.85 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[r, j]
            img = imgs[j]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img,
                      cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig
