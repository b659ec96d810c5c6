"""A fine-tuned EfficientNet-Lite0 on a CPU, trained on cached intermediate feature maps.

The papers fine-tune an ImageNet network end to end on the target images (AlexNet
at 227 px in the latent-layer paper, 0.89-0.92 CIFAR-10 accuracy for the
journal DSTH's Table II backbones). End-to-end training at 224 px is out of reach
of a two-core CPU, but most of its benefit is within reach: the early layers of an
ImageNet network change little in fine-tuning, so they can run once, and only the
top of the network is trained.

How
---
1. :func:`stage_maps` runs the frozen bottom of Lite0 (stem and block stages 0-4,
   output stride 16, 112 channels) once per dataset, split and input size, through
   ONNX Runtime (about 6x faster than PyTorch for this graph on a CPU, checked
   against PyTorch on the first batch), and stores the maps in half precision as a
   memory-mapped ``.npy`` file under ``<cache>/finetune``. ``mirror=True`` stores
   the maps of the horizontally mirrored images too, the one augmentation kept.
2. :class:`TopNet` is the rest of Lite0 (block stages 5 and 6, ``conv_head``,
   its batch norm and activation, global average pooling) and a linear classifier
   on the 1,280 pooled activations. ``stages`` of its block stages are trained
   (0: none, a linear classifier on frozen features; 1: stage 6 and the head
   convolution; 2: stages 5 and 6 and the head convolution); whatever is frozen
   below them is run once, before training.
3. :func:`finetune` trains it with class labels through :func:`hashstudy.training.fit`
   and caches the weights (:func:`hashstudy.training.cached_model`, keyed by the maps,
   the training rows, the labels and every setting).

The fine-tuned network is the backbone :data:`BACKBONE` (``efficientnet_lite0_ft``):
its pooled ``conv_head`` activations (1,280-D, like the frozen Lite0's) after
fine-tuning on a protocol's labelled training images, from
:func:`finetuned_features`. Unlike the frozen backbones of
:mod:`hashstudy.features` it depends on a training set, so its features are
computed per protocol and cached under a key that includes the training rows.

:func:`accuracy_curve` measures what the fine-tuning buys: test accuracy against
training-set size, stages trained, epochs and input size.

Cost on two CPU cores (measured when the module was written): the frozen bottom
runs at about 210 images/s at 224 px and 600 images/s at 128 px with ONNX
Runtime; training stage 6 and the head at 224 px runs at about 400 images/s,
stages 5 and 6 at about 75 images/s.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import cache, config, features, training

__all__ = [
    "BACKBONE", "SOURCE", "CUT", "FINETUNE_VERSION", "PROFILE_SIZES", "stage_maps",
    "pool_maps", "TopTrunk", "TopNet", "frozen_outputs", "FineTuned", "finetune",
    "finetuned_features", "train_subset",
    "accuracy_curve", "final_points", "report_curve", "curve_text",
    "TARGET_ACCURACY",
]

#: Registered name of the fine-tuned backbone.
BACKBONE = "efficientnet_lite0_ft"
#: The frozen backbone it starts from.
SOURCE = "efficientnet_lite0"
#: Block stages of Lite0 in the frozen bottom whose output is cached (stages 0-4).
CUT = 5
#: Lite0 has seven block stages (0-6); at most the two above the cut are trained.
MAX_STAGES = 2
#: Version of this module's numbers; part of every cache key.
FINETUNE_VERSION = "1"

PROFILE_SIZES = {
    # synthetic data: a few hundred images at 64 px
    "smoke": {"input_sizes": [64], "n_train": [100, 300], "n_train_input_size": 64,
              "stages": [[64, 0], [64, 1]],
              "stages_n_train": 100, "epochs": 2, "batch_size": 32,
              "main": {"input_size": 64, "stages": 1, "n_train": 300}},
    # CIFAR-10 test accuracy (10,000 test images) against the knobs, about 50 minutes of both
    # cores cold (the maps extracted once: about 25 minutes more), seconds warm: the training-
    # set sizes at 128 px, the stages at 128 px and 224 px on 10,000 images. 224 px on every
    # training image (about 20 minutes more) and both top stages at 224 px (about 13) are
    # the paper profile's
    "quick": {"input_sizes": [128], "n_train": [5000, 10000, 20000, 50000],
              "n_train_input_size": 128,
              "stages": [[128, 0], [128, 1], [128, 2], [224, 0], [224, 1]],
              "stages_n_train": 10000, "epochs": 6, "batch_size": 64,
              "main": {"input_size": 128, "stages": 1, "n_train": 50000}},
    # the same points trained twice as long, and both top stages on every training image
    "paper": {"input_sizes": [128, 224], "n_train": [5000, 10000, 20000, 50000],
              "n_train_input_size": 224,
              "stages": [[128, 0], [128, 1], [128, 2], [224, 0], [224, 1], [224, 2]],
              "stages_n_train": 50000, "epochs": 12, "batch_size": 64,
              "main": {"input_size": 224, "stages": 2, "n_train": 50000}},
}
"""Sizes of the accuracy curve per profile: ``main`` (the configuration the others vary
around: input size, block stages trained, training images), ``n_train`` (training-set sizes
tried with the main stages at ``n_train_input_size`` px), ``stages`` (``[input size, stages trained]``
pairs tried with ``stages_n_train`` training images, a smaller set where training two stages
would take hours), ``input_sizes`` (each tried with the main stages and training-set size), ``epochs`` and ``batch_size`` of every point (accuracy is logged after every epoch)."""


# --------------------------------------------------------------------------- #
# 1. The frozen bottom, run once
# --------------------------------------------------------------------------- #


def _lite0():
    """The frozen ImageNet Lite0 (timm network without classifier), loaded once per process."""
    if "net" not in _NET:
        _NET["net"] = features.load_backbone(SOURCE)
    return _NET["net"]


_NET: dict = {}


def _bottom() -> features.Backbone:
    """Lite0's stem and block stages 0-4, as a :class:`hashstudy.features.Backbone` whose
    "features" are the (112, s/16, s/16) maps, flattened by nothing."""
    bb = _lite0()
    net = bb.module
    module = nn.Sequential(net.conv_stem, net.bn1, net.blocks[:CUT]).eval()
    return features.Backbone(name=f"{SOURCE}_cut{CUT}", module=module, feature_dim=112,
                             mean=bb.mean, std=bb.std, input_size=bb.input_size,
                             min_input_size=32, layer=f"block stage {CUT - 1} output (maps)",
                             weights=bb.weights)


def _map_side(input_size: int) -> int:
    return -(-int(input_size) // 16)


def maps_cache_path(ds, input_size: int, mirror: bool = False) -> Path:
    """Where :func:`stage_maps` keeps the maps of a loaded dataset split."""
    from .data import file_token

    spec = features.BACKBONES[SOURCE]
    digest = cache.key({
        "version": FINETUNE_VERSION, "features_version": features.FEATURES_VERSION,
        "dataset": ds.name, "split": ds.split, "content": features._content_identity(ds),
        "backbone": SOURCE, "cut": CUT, "weights": features._weights_identity(spec),
        "input_size": int(input_size), "mirror": bool(mirror),
        "preprocess": {"mean": spec.mean, "std": spec.std, "resize": features.RESIZE,
                       "channels": features.CHANNELS},
        "runtime": features._runtime_identity("onnxruntime" if features._onnx_available()
                                              else "torch"),
    })
    name = f"{file_token(ds.name)}-{ds.split}-lite0cut{CUT}-{int(input_size)}px"
    return config.cache_dir("finetune") / f"{name}{'-mirror' if mirror else ''}-{digest}.npy"


def stage_maps(dataset, split: Optional[str] = None, input_size: int = 224, *,
               mirror: bool = False, root=None, batch_size: int = 64,
               progress: bool = True) -> np.ndarray:
    """Lite0's block-stage-4 maps of every image of a dataset split, cached on disk.

    Parameters
    ----------
    dataset : str or hashstudy.data.Dataset
        A name for :func:`hashstudy.data.load` (with ``split``) or a loaded split.
    input_size : int, default 224
        Side the images are resized to (:func:`hashstudy.features.preprocess`).
    mirror : bool, default False
        Maps of the horizontally mirrored images instead.

    Returns
    -------
    numpy.memmap of float16, shape (N, 112, s, s) with s = ceil(input_size / 16)
        Read-only, row ``i`` for image ``i`` of the split. The first call runs the
        network (ONNX Runtime when installed, else PyTorch) and writes the file
        atomically; later calls map it.
    """
    from tqdm.auto import tqdm

    from . import data

    ds = data.load(dataset, split, root=root) if isinstance(dataset, str) else dataset
    size = int(input_size)
    if size < 32:
        raise ValueError(f"input_size must be at least 32 px for the cut at stage {CUT}; got "
                         f"{input_size}")
    path = maps_cache_path(ds, size, mirror)
    side = _map_side(size)
    shape = (len(ds.images), 112, side, side)
    with cache.locked(path):
        if path.exists():
            try:
                maps = np.load(path, mmap_mode="r")
                if maps.shape == shape and maps.dtype == np.float16:
                    return maps
                print(f"cached maps {path.name} have shape {maps.shape}, expected {shape}; "
                      "rebuilding")
            except (ValueError, OSError) as exc:
                print(f"cached maps {path.name} unreadable ({exc}); rebuilding")
            path.unlink(missing_ok=True)
        bb = _bottom()
        session = features._onnx_session(bb, size) if features._onnx_available() else None
        images = ds.images
        with cache.atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            desc = f"{ds.name}/{ds.split} stage-{CUT - 1} maps @ {size} px" + (
                " (mirrored)" if mirror else "")
            with torch.inference_mode(), tqdm(total=len(images), unit="img", desc=desc,
                                              disable=not progress) as bar:
                for start in range(0, len(images), batch_size):
                    batch = images[start:start + batch_size]
                    if mirror:
                        batch = np.ascontiguousarray(batch[:, :, ::-1])
                    x = features.preprocess(batch, size, bb.mean, bb.std)
                    if session is None:
                        y = bb.module(x).numpy()
                    else:
                        y = session.run(None, {"x": x.numpy()})[0]
                        if start == 0:  # the exported graph must compute what the module does
                            ref = bb.module(x).numpy()
                            cos = features._min_cosine(y.reshape(len(y), -1),
                                                       ref.reshape(len(ref), -1))
                            if not cos >= features.ONNX_MIN_COSINE:
                                raise RuntimeError(
                                    f"ONNX Runtime's maps differ from PyTorch's (smallest cosine "
                                    f"{cos:.6f}); delete {features._onnx_path(bb, size)}")
                    out[start:start + len(batch)] = y.astype(np.float16)
                    bar.update(len(batch))
            out.flush()
            del out
    return np.load(path, mmap_mode="r")


def pool_maps(dataset: str, input_size: int = 224, *, mirror: bool = False, root=None,
              progress: bool = True) -> np.ndarray:
    """:func:`stage_maps` of the pool (train then test, the order of
    :func:`hashstudy.protocols.load_pool`), in memory, float16 (N, 112, s, s)."""
    return np.concatenate([stage_maps(dataset, s, input_size, mirror=mirror, root=root,
                                      progress=progress) for s in ("train", "test")])


# --------------------------------------------------------------------------- #
# 2. The top of the network
# --------------------------------------------------------------------------- #


def _check_stages(stages) -> int:
    if isinstance(stages, bool) or not isinstance(stages, (int, np.integer)) \
            or not 0 <= stages <= MAX_STAGES:
        raise ValueError(f"stages must be 0, 1 or 2 (block stages of Lite0 trained above the "
                         f"cached stage-{CUT - 1} maps); got {stages!r}")
    return int(stages)


class TopTrunk(nn.Module):
    """Lite0 above the cut, split into a frozen part and a trained part.

    ``frozen(maps)`` runs the block stages that are not trained (and, with
    ``stages=0``, the head convolution and pooling too), without gradients;
    ``forward(z)`` maps its output to the 1,280 pooled activations.

    Parameters
    ----------
    stages : {0, 1, 2}
        Block stages trained, counted from the top (stage 6, then stage 5); with
        ``stages >= 1`` the head convolution and its batch norm are trained too.
    """

    feature_dim = 1280

    def __init__(self, stages: int):
        super().__init__()
        self.stages = _check_stages(stages)
        net = copy.deepcopy(_lite0().module)
        first_trained = 7 - self.stages
        self.frozen_blocks = net.blocks[CUT:first_trained]
        head = [net.conv_head, net.bn2, nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if self.stages == 0:
            self.frozen_head = nn.Sequential(*head)
            self.top = nn.Sequential(nn.Identity())
        else:
            self.frozen_head = nn.Identity()
            self.top = nn.Sequential(net.blocks[first_trained:], *head)
        for m in (self.frozen_blocks, self.frozen_head):
            m.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen_blocks.eval()  # frozen batch norms keep their ImageNet statistics
        self.frozen_head.eval()
        return self

    @torch.no_grad()
    def frozen(self, maps) -> torch.Tensor:
        """The frozen part on float16/float32 maps (B, 112, s, s); float32 out."""
        self.frozen_blocks.eval()
        self.frozen_head.eval()
        dev = next(self.top.parameters(), next(self.frozen_head.parameters(), None))
        x = torch.from_numpy(np.array(maps, dtype=np.float32))  # a writable float32 copy
        x = x if dev is None else x.to(dev.device)
        return self.frozen_head(self.frozen_blocks(x)).cpu()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.top(z.float())


class TopNet(nn.Module):
    """:class:`TopTrunk` and a linear classifier on its 1,280 pooled activations.

    ``frozen(maps)`` is the trunk's; ``forward(z)`` maps the frozen part's output to
    logits, :meth:`embed` to the pooled activations.

    Parameters
    ----------
    stages : {0, 1, 2}
        See :class:`TopTrunk`.
    n_classes : int
    dropout : float, default 0.2
        Before the classifier (Lite0's own value).
    """

    def __init__(self, stages: int, n_classes: int, dropout: float = 0.2):
        super().__init__()
        self.trunk = TopTrunk(stages)
        self.stages = self.trunk.stages
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(TopTrunk.feature_dim, int(n_classes))

    def frozen(self, maps) -> torch.Tensor:
        return self.trunk.frozen(maps)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Pooled 1,280-D activations from the frozen part's output."""
        return self.trunk(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(z)))


def frozen_outputs(model, maps: np.ndarray, batch_size: int = 256, progress: bool = False,
                   desc: str = "frozen part") -> torch.Tensor:
    """The frozen part of ``model`` (a :class:`TopTrunk` or :class:`TopNet`) on every row of
    ``maps``: float16 in memory, float32 for ``stages=0`` (pooled features)."""
    from tqdm.auto import tqdm

    outs = []
    for start in tqdm(range(0, len(maps), batch_size), desc=desc, disable=not progress,
                      leave=False):
        z = model.frozen(maps[start:start + batch_size])
        outs.append(z if model.stages == 0 else z.half())
    return torch.cat(outs) if outs else torch.zeros((0,))


@torch.no_grad()
def _apply(model: TopNet, z: torch.Tensor, fn: str = "logits", batch_size: int = 512):
    """Logits (or pooled activations) of frozen-part outputs ``z``, on the model's device;
    returned in CPU memory."""
    model.eval()
    dev = model.classifier.weight.device
    out = []
    for start in range(0, len(z), batch_size):
        zb = z[start:start + batch_size].to(dev)
        out.append((model(zb) if fn == "logits" else model.embed(zb)).cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- #
# 3. Fine-tuning
# --------------------------------------------------------------------------- #


@dataclass
class FineTuned:
    """A fine-tuned :class:`TopNet` with what it was trained on.

    Attributes: ``model`` (eval mode), ``info`` (loss per epoch, per-epoch evaluation
    accuracy when an evaluation set was given, ``train_seconds``, ``frozen_seconds``),
    ``loaded`` (weights from the cache), ``settings``.
    """

    model: TopNet
    info: dict
    loaded: bool
    settings: dict

    def features(self, maps: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Pooled 1,280-D features (float32) of the images whose maps are given."""
        outs = []
        for start in range(0, len(maps), batch_size):
            z = self.model.frozen(maps[start:start + batch_size])
            outs.append(_apply(self.model, z, "embed").numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 1280), np.float32)

    def accuracy(self, maps: np.ndarray, labels) -> float:
        """Classification accuracy on the images whose maps are given."""
        pred = []
        for start in range(0, len(maps), 512):
            z = self.model.frozen(maps[start:start + 512])
            pred.append(_apply(self.model, z).argmax(1).numpy())
        return float(np.mean(np.concatenate(pred) == np.asarray(labels)))


def finetune(maps: np.ndarray, labels, *, stages: int = 1, epochs: int = 6,
             batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-5,
             mirror_maps: Optional[np.ndarray] = None, seed: int = 0,
             eval_maps: Optional[np.ndarray] = None, eval_labels=None,
             identity: Optional[Mapping] = None, progress: bool = True,
             desc: str = "fine-tuning", device=None) -> FineTuned:
    """Fine-tune the top of Lite0 and a linear classifier with class labels.

    Parameters
    ----------
    maps : float16 array (N, 112, s, s)
        :func:`stage_maps` rows of the training images.
    labels : int array (N,)
    stages : {0, 1, 2}
        See :class:`TopNet`.
    epochs, batch_size, lr, weight_decay
        Adam with a cosine learning-rate schedule to 1 % of ``lr``; cross-entropy.
    mirror_maps : float16 array like ``maps``, optional
        Maps of the mirrored images; each training sample then uses the mirrored
        one with probability 1/2 (seeded).
    eval_maps, eval_labels : optional
        Accuracy on them is logged after every epoch (``info["eval_accuracy"]``);
        nothing is selected by it.
    identity : mapping, optional
        What the maps are (dataset, split, rows, input size): the cache key of the
        weights. Without it the key hashes the arrays themselves (slow for large ones).
    device : str or torch.device, optional
        Where to train (:func:`hashstudy.training.default_device`); the maps and the
        frozen part's outputs stay in CPU memory, batches move.
    """
    device = training.default_device(device)
    stages = _check_stages(stages)
    labels = np.asarray(labels)
    if maps.ndim != 4 or maps.shape[1] != 112 or len(maps) != len(labels):
        raise ValueError(f"maps must be (N, 112, s, s) stage-{CUT - 1} maps with one label per "
                         f"row; got {maps.shape} and {labels.shape}")
    if mirror_maps is not None and mirror_maps.shape != maps.shape:
        raise ValueError(f"mirror_maps has shape {mirror_maps.shape}, maps {maps.shape}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    n_classes = max(2, int(labels.max()) + 1)
    ident = dict(identity) if identity is not None else {
        "maps": cache.array_digest(np.asarray(maps)),
        "mirror": None if mirror_maps is None else cache.array_digest(np.asarray(mirror_maps))}
    if eval_maps is not None:
        ident = {**ident, "eval": ident.get("eval") or cache.array_digest(
            np.asarray(eval_maps), np.asarray(eval_labels))}
    settings = dict(stages=stages, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                    weight_decay=float(weight_decay), mirror=mirror_maps is not None,
                    seed=int(seed), n_classes=n_classes)
    key = {"version": FINETUNE_VERSION, "source": SOURCE, "cut": CUT, **ident,
           "labels": cache.array_digest(labels.astype(np.int64)), **settings}

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return TopNet(stages, n_classes).to(device)

    def train(model):
        t0 = time.perf_counter()
        z = frozen_outputs(model, maps, progress=progress, desc=f"{desc}: frozen part")
        zm = None if mirror_maps is None else frozen_outputs(model, mirror_maps, progress=progress,
                                                          desc=f"{desc}: frozen part, mirrored")
        ze = None if eval_maps is None else frozen_outputs(model, eval_maps, progress=progress,
                                                        desc=f"{desc}: frozen part, evaluation")
        frozen_seconds = time.perf_counter() - t0
        y = torch.from_numpy(labels.astype(np.int64))
        ye = None if eval_labels is None else np.asarray(eval_labels)

        def loss_fn(m, idx, yb):
            rows = idx.cpu()  # the frozen outputs stay in CPU memory; the batch moves
            x = z[rows]
            if zm is not None:
                flip = torch.rand(len(rows)) < 0.5
                x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), zm[rows], x)
            return nn.functional.cross_entropy(m(x.to(yb.device).float()), yb)

        def on_epoch_end(epoch, m):
            if ze is None:
                return {}
            acc = float((_apply(m, ze).argmax(1).numpy() == ye).mean())
            return {"eval_accuracy": acc}

        hist = training.fit(model, (torch.arange(len(labels)), y), loss_fn, epochs=epochs,
                            batch_size=batch_size, lr=lr, optimizer="adam",
                            weight_decay=weight_decay, schedule="cosine", seed=seed,
                            progress=progress, desc=desc, on_epoch_end=on_epoch_end)
        # hist.seconds counts the epochs of every session of a resumed training
        return {"loss": hist.loss, "eval_accuracy": [h.get("eval_accuracy") for h in hist.logs],
                "frozen_seconds": frozen_seconds, "train_seconds": frozen_seconds + hist.seconds}

    model, info, loaded = training.cached_model(f"finetune-lite0-s{stages}", key, build, train,
                                                device=device)
    return FineTuned(model, info, loaded, settings)


def train_subset(labels, n: Optional[int], seed: int = 0) -> np.ndarray:
    """``n`` row indices of ``labels``, the same number per class (as far as possible),
    drawn with ``seed``, sorted; all rows when ``n`` is None or at least ``len(labels)``."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n < 1:
        raise ValueError(f"n_train must be positive, got {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = np.full(len(classes), n // len(classes))
    per[: n % len(classes)] += 1
    rows = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per)]
    return np.sort(np.concatenate(rows))


def finetuned_features(dataset: str, train_index, labels, *, input_size: int = 224,
                       stages: int = 1, epochs: int = 6, batch_size: int = 64,
                       lr: float = 1e-3, mirror: bool = True, seed: int = 0, root=None,
                       progress: bool = True) -> tuple[np.ndarray, FineTuned]:
    """Features of the fine-tuned backbone :data:`BACKBONE` for every image of a pool.

    The top of Lite0 is fine-tuned with ``labels[train_index]`` on the pool's
    ``train_index`` rows (a protocol's labelled training images, never its queries),
    then every pool image is described by its pooled 1,280-D activations.

    Parameters
    ----------
    dataset : str
        Pool of :func:`hashstudy.protocols.load_pool` (train then test split).
    train_index : int array
        Rows of the pool the network is trained on.
    labels : int array (N_pool,)

    Returns
    -------
    features : float32 (N_pool, 1280), cached under ``<cache>/finetune``
    fitted : FineTuned
    """
    train_index = np.asarray(train_index, dtype=np.int64)
    labels = np.asarray(labels)
    maps = pool_maps(dataset, input_size, root=root, progress=progress)
    if len(maps) != len(labels):
        raise ValueError(f"{len(labels)} labels for a pool of {len(maps)} images")
    mirrored = pool_maps(dataset, input_size, mirror=True, root=root,
                         progress=progress)[train_index] if mirror else None
    ident = {"dataset": dataset, "pool_maps": [maps_cache_path_for(dataset, s, input_size, root)
                                               for s in ("train", "test")],
             "rows": cache.array_digest(train_index), "input_size": int(input_size)}
    fitted = finetune(maps[train_index], labels[train_index], stages=stages, epochs=epochs,
                      batch_size=batch_size, lr=lr, mirror_maps=mirrored, seed=seed,
                      identity=ident, progress=progress,
                      desc=f"{BACKBONE} on {len(train_index)} {dataset} images")
    path = config.cache_dir("finetune") / (
        f"features-{dataset}-{BACKBONE}-{int(input_size)}px-"
        f"{cache.key(ident, fitted.settings, FINETUNE_VERSION)}.npz")
    arrays = cache.cached_arrays(path, lambda: {"features": fitted.features(maps)})
    return arrays["features"], fitted


def maps_cache_path_for(dataset: str, split: str, input_size: int, root=None) -> str:
    """The file name (not the folder) of :func:`stage_maps`'s cache for a dataset name."""
    from . import data

    return maps_cache_path(data.load(dataset, split, root=root), input_size).name


# --------------------------------------------------------------------------- #
# 4. What fine-tuning buys: the accuracy curve
# --------------------------------------------------------------------------- #


def curve_points(sizes: Mapping) -> list[dict]:
    """The configurations of :func:`accuracy_curve`, without repeats: the ``main`` one; the
    training-set sizes with the main stages at ``n_train_input_size`` px; the ``stages`` pairs (input size,
    stages trained) at ``stages_n_train`` images; every input size with the main stages and
    training-set size."""
    main = dict(sizes["main"])
    points = [main]
    n_px = sizes.get("n_train_input_size", main["input_size"])
    points += [{**main, "input_size": n_px, "n_train": n} for n in sizes["n_train"]]
    points += [{"input_size": px, "stages": st, "n_train": sizes["stages_n_train"]}
               for px, st in sizes["stages"]]
    points += [{**main, "input_size": px} for px in sizes["input_sizes"]]
    seen, out = set(), []
    for p in points:
        k = (p["input_size"], p["stages"], p["n_train"])
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def accuracy_curve(dataset: str = "cifar10", sizes: Optional[Mapping] = None, *,
                   profile: str = "quick", seed: int = 0, root=None, progress: bool = True,
                   points: Optional[Sequence[Mapping]] = None):
    """Test accuracy of the fine-tuned backbone against its knobs.

    Each point of :func:`curve_points` (or ``points``) fine-tunes on a stratified
    subset of the official training split (:func:`train_subset`) with mirrored maps
    and logs the accuracy on the whole official test split after every epoch.

    Returns
    -------
    pandas.DataFrame
        One row per point and epoch: ``input_size``, ``stages``, ``n_train``,
        ``epoch`` (1-based), ``test_accuracy``, ``train_loss``, ``train_seconds`` (the
        point's whole training, frozen part included), ``loaded``.
    """
    import pandas as pd

    from . import data

    sizes = PROFILE_SIZES[config.check_profile(profile)] if sizes is None else sizes
    rows = []
    todo = list(points) if points is not None else curve_points(sizes)
    train = data.load(dataset, "train", root=root)
    test = data.load(dataset, "test", root=root)
    for p in todo:
        px, stages, n = int(p["input_size"]), int(p["stages"]), int(p["n_train"])
        idx = train_subset(train.labels, n, seed)
        tr = stage_maps(train, input_size=px, progress=progress)
        trm = stage_maps(train, input_size=px, mirror=True, progress=progress)
        te = stage_maps(test, input_size=px, progress=progress)
        ident = {"dataset": dataset, "train_maps": maps_cache_path(train, px).name,
                 "rows": cache.array_digest(idx), "input_size": px,
                 "eval": maps_cache_path(test, px).name}
        fitted = finetune(np.asarray(tr[idx]), train.labels[idx], stages=stages,
                          epochs=sizes["epochs"], batch_size=sizes["batch_size"],
                          mirror_maps=np.asarray(trm[idx]), seed=seed, eval_maps=te,
                          eval_labels=test.labels, identity=ident, progress=progress,
                          desc=f"{px} px, {stages} stage(s), {n} images")
        info = fitted.info
        for e, (loss, acc) in enumerate(zip(info["loss"], info["eval_accuracy"]), start=1):
            rows.append({"input_size": px, "stages": stages, "n_train": len(idx), "epoch": e,
                         "test_accuracy": acc, "train_loss": loss,
                         "train_seconds": info.get("train_seconds"),
                         "frozen_seconds": info.get("frozen_seconds"), "loaded": fitted.loaded})
    return pd.DataFrame(rows)


def final_points(curve) -> "object":
    """The last epoch of every point of an :func:`accuracy_curve` table."""
    last = curve.groupby(["input_size", "stages", "n_train"]).epoch.transform("max")
    return curve[curve.epoch == last].reset_index(drop=True)


#: The accuracy the study aims at with a CPU-sized fine-tuning (issue of the papers'
#: settings); the papers' own fine-tuned accuracies are in ``paper_numbers.csv``.
TARGET_ACCURACY = 0.85


def report_curve(report, curve, *, dataset: str, sizes: Mapping):
    """Record :func:`accuracy_curve`'s table and its final points in ``report``.

    Tables ``curve`` (every epoch) and ``final`` (last epoch per point); metrics
    ``<dataset>/<px>px/stages<s>/n<n>/{test_accuracy,train_seconds,epochs}``, the main
    point's as ``<dataset>/main/...``, the stages axis at the main input size as
    ``<dataset>/frozen/test_accuracy`` and ``<dataset>/stages<s>/test_accuracy``, the best
    point's as ``<dataset>/best/...`` and
    ``<dataset>/reaches_target`` (1.0 when the main point reaches
    :data:`TARGET_ACCURACY`). Returns the final-points table.
    """
    final = final_points(curve)
    report.table("curve", curve)
    report.table("final", final)
    main = sizes["main"]
    for r in final.itertuples():
        prefix = f"{dataset}/{r.input_size}px/stages{r.stages}/n{r.n_train}"
        report.add(f"{prefix}/test_accuracy", r.test_accuracy)
        report.add(f"{prefix}/train_seconds", r.train_seconds)
        report.add(f"{prefix}/epochs", r.epoch)
    pick = final[(final.input_size == main["input_size"]) & (final.n_train == main["n_train"])]
    m = pick[pick.stages == main["stages"]]
    if len(m):
        report.add(f"{dataset}/main/test_accuracy", float(m.test_accuracy.iloc[0]))
        report.add(f"{dataset}/main/train_seconds", float(m.train_seconds.iloc[0]))
        report.add(f"{dataset}/reaches_target",
                   float(m.test_accuracy.iloc[0] >= TARGET_ACCURACY))
    axis = final[(final.input_size == main["input_size"])
                 & (final.n_train == sizes.get("stages_n_train", main["n_train"]))]
    for st, acc in zip(axis.stages, axis.test_accuracy):  # the stages axis at the main size
        report.add(f"{dataset}/{'frozen' if st == 0 else f'stages{st}'}/test_accuracy", acc)
    best = final.loc[final.test_accuracy.idxmax()]
    report.add(f"{dataset}/best/test_accuracy", float(best.test_accuracy))
    report.add(f"{dataset}/best/train_seconds", float(best.train_seconds))
    return final


def curve_text(final, *, dataset: str, sizes: Mapping) -> str:
    """What the curve shows, in sentences built from the final points."""
    main = sizes["main"]
    at = final[(final.input_size == main["input_size"]) & (final.n_train == main["n_train"])]
    lines = []
    m = at[at.stages == main["stages"]]
    if len(m):
        acc, sec = float(m.test_accuracy.iloc[0]), float(m.train_seconds.iloc[0])
        verdict = "reaches" if acc >= TARGET_ACCURACY else "does not reach"
        lines.append(f"- **Main configuration** ({main['input_size']} px, {main['stages']} "
                     f"stage(s) trained, {main['n_train']:,} images, {sizes['epochs']} epochs): "
                     f"test accuracy **{acc:.3f}**, which {verdict} the study's target of "
                     f"{TARGET_ACCURACY}; {sec:.0f} s of training on this machine, frozen part "
                     "included (the maps are extracted once before it).")
    n_axis = sizes.get("stages_n_train", main["n_train"])
    for px, g in final[final.n_train == n_axis].groupby("input_size"):
        g = g.sort_values("stages")
        parts = [f"{int(s)} stage(s): {a:.3f} ({t:.0f} s)" for s, a, t in
                 zip(g.stages, g.test_accuracy, g.train_seconds)]
        lines.append(f"- **{px} px**, {n_axis:,} images: " + "; ".join(parts) + ".")
    n_px = sizes.get("n_train_input_size", main["input_size"])
    n = final[(final.input_size == n_px) & (final.stages == main["stages"])
              ].sort_values("n_train")
    if len(n) > 1:
        parts = [f"{k:,}: {a:.3f}" for k, a in zip(n.n_train, n.test_accuracy)]
        gain = float(n.test_accuracy.iloc[-1] - n.test_accuracy.iloc[-2])
        lines.append(f"- **Training-set size** ({n_px} px, {main['stages']} "
                     f"stage(s)): " + "; ".join(parts) + f". The last step adds {gain:+.3f}.")
    if len(final):
        best = final.loc[final.test_accuracy.idxmax()]
        lines.append(f"- **Best point**: {best.input_size} px, {best.stages} stage(s), "
                     f"{best.n_train:,} images: {best.test_accuracy:.3f}.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hashstudy.finetune [--profile P] [--dataset D]``: fill the cache of the
    accuracy curve (maps and fine-tuned weights) and print the final accuracies."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hashstudy.finetune", description=main.__doc__)
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILE_SIZES))
    parser.add_argument("--dataset", default="cifar10")
    args = parser.parse_args(argv)
    training.set_threads()
    curve = accuracy_curve(args.dataset, profile=args.profile)
    print(final_points(curve).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
