"""Tiny, learnable datasets written in the real on-disk formats.

The tests and the ``smoke`` profile of the notebooks read these files through
the same loaders (:mod:`hashstudy.data`) as the real datasets, so every byte
layout here is the original one:

- MNIST IDX: big-endian header, magic 2051 (images, ``N x 28 x 28``) and 2049
  (labels), then the uint8 payload; optionally gzip-compressed (``.gz``).
- CIFAR python batches: pickles (protocol 2) of dicts with bytes keys,
  ``b"data"`` a uint8 array (N, 3072) holding each image's R, G and B planes
  row-major, ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` and
  ``b"coarse_labels"`` (CIFAR-100) lists of ints, and the label names in
  ``batches.meta`` / ``meta``.
- STL-10 binaries: ``*_X.bin`` raw uint8 images, each stored channel by channel
  with every channel column-major (the layout of the official files),
  ``*_y.bin`` uint8 labels 1..10, and ``class_names.txt``.
- ImageFolder: ``<dir>/<class>/NNNN.png`` (lossless) or ``.jpg`` (JPEG,
  quality 90).

Images are learnable: each class has its own stripe orientation and
frequency, its own bright blob position and its own colour (for CIFAR-100 the
colour is shared by the five fine classes of a coarse class), with per-image
random stripe phase, jitter, contrast and Gaussian pixel noise. A
nearest-class-mean classifier on raw pixels already separates the classes,
so methods trained on these files should beat chance clearly.

Seeds may be an int, a sequence of ints, a ``numpy.random.SeedSequence`` or a
``numpy.random.Generator``; each split draws from its own child stream.
Every writer returns the arrays it wrote, split by split, in the order and
format the loaders return them (uint8 (N, H, W, C) images, int64 (N,) labels);
for JPEG files these are the pixels before compression.
"""
from __future__ import annotations

import colorsys
import gzip
import pickle
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from . import cache
from .data import CIFAR100_COARSE_OF_FINE, CLASSES, SYNTHETIC_MARKER

__all__ = [
    "class_images",
    "write_mnist_idx",
    "write_cifar10_batches",
    "write_cifar100_batches",
    "write_stl10_binary",
    "write_imagefolder",
    "make_smoke_root",
]

_PHI = (np.sqrt(5.0) - 1.0) / 2.0          # golden-ratio steps spread class parameters
_R2 = (0.7548776662466927, 0.5698402909980532)  # 2-D low-discrepancy steps for blob centres


def _size(size) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in hw):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def class_images(labels, n_classes: int, *, size=32, channels: int = 3, seed=0,
                 groups=None, n_groups: int | None = None) -> np.ndarray:
    """Images whose class is visible: class-specific stripes, blob and colour, plus noise.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class of each image, in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes; it also sets the colour palette when ``groups`` is None.
    size : int or (int, int)
        Image height and width.
    channels : {1, 3}
        Grayscale or RGB.
    seed : int, sequence of int, numpy.random.SeedSequence or numpy.random.Generator
        Randomness of the per-image variation; the class patterns themselves
        are fixed: stripes and blob by the label, colour by the group.
    groups, n_groups : array-like of int (N,), int, optional
        A coarser class per image that sets the colour (default: the label).

    Returns
    -------
    ndarray of uint8, shape (N, H, W, channels)
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):
        raise ValueError(f"labels must be a 1-D array of ints in 0..{n_classes - 1}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if groups is None:
        groups, n_groups = labels, n_classes
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != labels.shape or n_groups is None \
            or (groups.size and (groups.min() < 0 or groups.max() >= n_groups)):
        raise ValueError("groups must have the labels' shape, come with n_groups and lie in "
                         "0..n_groups - 1")
    h, w = _size(size)
    rng = np.random.default_rng(seed)
    n = len(labels)
    c = labels.astype(np.float64)

    theta = np.pi * ((c * _PHI) % 1.0) + rng.uniform(-0.05, 0.05, n)
    freq = 2.0 + 3.0 * ((c * np.sqrt(2.0) + 0.25) % 1.0)       # cycles across the image
    phase = rng.uniform(0.0, 2.0 * np.pi, n)
    cy = 0.25 + 0.5 * ((c * _R2[0]) % 1.0) + rng.uniform(-0.04, 0.04, n)
    cx = 0.25 + 0.5 * ((c * _R2[1]) % 1.0) + rng.uniform(-0.04, 0.04, n)
    contrast = rng.uniform(0.85, 1.15, n)

    f32 = np.float32
    y = ((np.arange(h, dtype=f32) + 0.5) / h)[None, :, None]
    x = ((np.arange(w, dtype=f32) + 0.5) / w)[None, None, :]

    def col(v):  # (N,) -> (N, 1, 1), float32
        return v.astype(f32)[:, None, None]

    stripes = 0.5 + 0.5 * np.sin(
        2 * np.pi * col(freq) * (x * col(np.cos(theta)) + y * col(np.sin(theta))) + col(phase))
    blob = np.exp(-((y - col(cy)) ** 2 + (x - col(cx)) ** 2) / f32(2 * 0.12 ** 2))

    if channels == 3:
        table = np.array([colorsys.hsv_to_rgb(g / n_groups, 0.75, 0.9) for g in range(n_groups)])
    else:
        table = 0.3 + 0.5 * ((np.arange(n_groups) * _PHI) % 1.0)[:, None]
    colour = table.astype(f32)[groups][:, None, None, :]          # (N, 1, 1, channels)
    img = f32(255) * colour * (0.45 + 0.55 * stripes[..., None]) * col(contrast)[..., None]
    img += f32(110) * blob[..., None]
    img += f32(10) * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels cycling through the classes, shuffled: class sizes differ by at most one."""
    if n < 0:
        raise ValueError(f"the number of images must be >= 0, got {n}")
    return rng.permutation(np.arange(n, dtype=np.int64) % n_classes)


def _rngs(seed, k: int) -> list[np.random.Generator]:
    """``k`` independent generators derived from ``seed`` (one per split)."""
    if isinstance(seed, np.random.Generator):
        return seed.spawn(k)
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    return [np.random.default_rng(s) for s in seed.spawn(k)]


def _write_bytes(path: Path, payload: bytes) -> None:
    with cache.atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def _write_pickle(path: Path, obj) -> None:
    _write_bytes(path, pickle.dumps(obj, protocol=2))


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian sizes, payload."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist_idx(root, n_train: int = 300, n_test: int = 100, seed=0, *,
                    compress: bool = False, folder: str = "MNIST"
                    ) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (28x28 grayscale).

    ``compress=True`` writes the ``.gz`` files instead of the uncompressed ones.
    ``folder`` replaces ``MNIST``: ``"FashionMNIST"`` or ``"KMNIST"`` write
    the same layout for ``fashion-mnist`` or ``kmnist`` (10 classes each).
    Returns ``{"train": {"images", "labels"}, "test": {...}}`` with images
    uint8 (N, 28, 28, 1) and labels int64 (N,).
    """
    raw = Path(root) / folder / "raw"
    out = {}
    for split, prefix, n, rng in zip(("train", "test"), ("train", "t10k"), (n_train, n_test),
                                     _rngs(seed, 2)):
        labels = _balanced_labels(n, 10, rng)
        images = class_images(labels, 10, size=28, channels=1, seed=rng)
        for kind, array in (("images-idx3", images[..., 0]), ("labels-idx1", labels)):
            payload = _idx_bytes(array.astype(np.uint8))
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                _write_bytes(raw / f"{name}.gz", gzip.compress(payload, mtime=0))
            else:
                _write_bytes(raw / name, payload)
        out[split] = {"images": images, "labels": labels}
    return out


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> (N, 3072): the R, G and B planes of each image, row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def _filenames(index: np.ndarray) -> list[bytes]:
    return [f"synthetic_{i:06d}.png".encode() for i in index]


def write_cifar10_batches(root, n_train: int = 500, n_test: int = 100, seed=0
                          ) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/cifar-10-batches-py/`` (5 training batches, ``test_batch``, ``batches.meta``).

    The training images are spread over ``data_batch_1`` .. ``data_batch_5``
    in order. Returns ``{"train": {"images", "labels"}, "test": {...}}``.
    """
    base = Path(root) / "cifar-10-batches-py"
    names = CLASSES["cifar10"]
    out = {}
    for split, n, rng in zip(("train", "test"), (n_train, n_test), _rngs(seed, 2)):
        labels = _balanced_labels(n, 10, rng)
        images = class_images(labels, 10, size=32, channels=3, seed=rng)
        out[split] = {"images": images, "labels": labels}
    parts = np.array_split(np.arange(n_train), 5)
    for i, idx in enumerate(parts, start=1):
        _write_pickle(base / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": out["train"]["labels"][idx].tolist(),
            b"data": _cifar_rows(out["train"]["images"][idx]),
            b"filenames": _filenames(idx),
        })
    _write_pickle(base / "test_batch", {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": out["test"]["labels"].tolist(),
        b"data": _cifar_rows(out["test"]["images"]),
        b"filenames": _filenames(np.arange(n_test)),
    })
    _write_pickle(base / "batches.meta", {
        b"num_cases_per_batch": len(parts[0]),
        b"label_names": [s.encode() for s in names],
        b"num_vis": 3072,
    })
    return out


def write_cifar100_batches(root, n_train: int = 500, n_test: int = 100, seed=0
                           ) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels.

    Coarse labels follow the real CIFAR-100 hierarchy
    (:data:`hashstudy.data.CIFAR100_COARSE_OF_FINE`), and fine classes of one
    coarse class share a colour. Returns ``{"train": {"images", "labels",
    "coarse_labels"}, "test": {...}}`` (``labels`` are the fine labels).
    """
    base = Path(root) / "cifar-100-python"
    out = {}
    for split, n, rng in zip(("train", "test"), (n_train, n_test), _rngs(seed, 2)):
        fine = _balanced_labels(n, 100, rng)
        coarse = CIFAR100_COARSE_OF_FINE[fine]
        images = class_images(fine, 100, size=32, channels=3, seed=rng, groups=coarse,
                              n_groups=20)
        _write_pickle(base / split, {
            b"filenames": _filenames(np.arange(n)),
            b"batch_label": f"{'training' if split == 'train' else 'testing'} batch 1 of 1"
            .encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": coarse.tolist(),
            b"data": _cifar_rows(images),
        })
        out[split] = {"images": images, "labels": fine, "coarse_labels": coarse}
    _write_pickle(base / "meta", {
        b"fine_label_names": [s.encode() for s in CLASSES["cifar100"]],
        b"coarse_label_names": [s.encode() for s in CLASSES["cifar100-coarse"]],
    })
    return out


def write_stl10_binary(root, n_train: int = 100, n_test: int = 50, n_unlabeled: int = 20,
                       seed=0) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/stl10_binary/`` (96x96 RGB) in the official column-major layout.

    Files: ``{train,test}_X.bin``, ``{train,test}_y.bin`` (labels 1..10),
    ``class_names.txt`` and, when ``n_unlabeled > 0``, ``unlabeled_X.bin``
    (images of random classes). Returns ``{"train": ..., "test": ...,
    "unlabeled": ...}`` with 0-based labels, ``-1`` for the unlabeled split.
    """
    base = Path(root) / "stl10_binary"
    out = {}
    for split, n, rng in zip(("train", "test", "unlabeled"), (n_train, n_test, n_unlabeled),
                             _rngs(seed, 3)):
        if split == "unlabeled" and n == 0:
            continue
        labels = _balanced_labels(n, 10, rng)
        images = class_images(labels, 10, size=96, channels=3, seed=rng)
        # (N, row, column, channel) -> file order (N, channel, column, row)
        _write_bytes(base / f"{split}_X.bin", np.ascontiguousarray(
            images.transpose(0, 3, 2, 1)).tobytes())
        if split == "unlabeled":
            labels = np.full(n, -1, dtype=np.int64)
        else:
            _write_bytes(base / f"{split}_y.bin", (labels + 1).astype(np.uint8).tobytes())
        out[split] = {"images": images, "labels": labels}
    _write_bytes(base / "class_names.txt", "".join(f"{c}\n" for c in CLASSES["stl10"]).encode())
    return out


def write_imagefolder(dir, classes: Sequence[str], n_per_class: int, size=32,
                      channels: int = 3, seed=0, ext: str = "png") -> dict[str, np.ndarray]:
    """Write ``dir/<class>/NNNN.<ext>``: ``n_per_class`` learnable images per class.

    Parameters
    ----------
    dir : path-like
        The split folder to create (e.g. ``<root>/cifar10-jpeg/train``); it
        must be absent or empty, so no stale image mixes in.
    classes : sequence of str
        Class folder names (unique). Labels follow their sorted order, as the
        loaders' do.
    n_per_class : int
    size : int or (int, int)
        Height and width.
    channels : {1, 3}
        Grayscale (PNG mode "L"; JPEG grayscale) or RGB.
    seed : int, sequence of int, numpy.random.SeedSequence or numpy.random.Generator
    ext : {"png", "jpg"}
        Lossless PNG, or JPEG at quality 90.

    Returns
    -------
    dict
        ``images`` uint8 (N, H, W, channels) and ``labels`` int64 (N,) in
        loader order; for JPEG the pixels before compression.
    """
    dir = Path(dir)
    if ext not in ("png", "jpg"):
        raise ValueError(f"ext must be 'png' or 'jpg', got {ext!r}")
    names = sorted(str(c) for c in classes)
    if len(set(names)) != len(names) or any(not c or "/" in c or c.startswith(".")
                                            for c in names):
        raise ValueError(f"class names must be unique, non-empty folder names, got {classes!r}")
    if dir.exists() and any(dir.iterdir()):
        raise FileExistsError(f"{dir} is not empty; write an ImageFolder into a new folder")
    labels = np.repeat(np.arange(len(names), dtype=np.int64), n_per_class)
    images = class_images(labels, len(names), size=size, channels=channels, seed=seed)
    fmt, options = ("PNG", {}) if ext == "png" else ("JPEG", {"quality": 90})
    for i, (img, label) in enumerate(zip(images, labels)):
        path = dir / names[label] / f"{i % n_per_class:04d}.{ext}"
        with cache.atomic_path(path) as tmp:
            Image.fromarray(img[..., 0] if channels == 1 else img).save(tmp, fmt, **options)
    return {"images": images, "labels": labels}


def make_smoke_root(root, seed=0) -> Path:
    """Write a complete small data root for the smoke profile; returns its path.

    Contents (all learnable, see :func:`class_images`):

    - ``MNIST/raw/``: 300 training and 100 test images (IDX files);
    - ``cifar10-jpeg/{train,test}/``: the CIFAR-10 JPEG mirror layout, 30
      training and 10 test images per class;
    - ``cifar-100-python/``: 1,000 training and 200 test images;
    - ``stl10_binary/``: 200 training, 100 test and 50 unlabeled images;
    - ``SYNTHETIC.txt``: a marker that makes every ``Dataset.source`` loaded
      from this root say the data are synthetic.

    ``root`` must be absent or empty (nothing real is ever overwritten).
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; the smoke data root must be a new folder")
    seeds = np.random.SeedSequence(seed).spawn(5)
    write_mnist_idx(root, 300, 100, seeds[0])
    write_imagefolder(root / "cifar10-jpeg" / "train", CLASSES["cifar10"], 30, 32, 3, seeds[1],
                      ext="jpg")
    write_imagefolder(root / "cifar10-jpeg" / "test", CLASSES["cifar10"], 10, 32, 3, seeds[2],
                      ext="jpg")
    write_cifar100_batches(root, 1000, 200, seeds[3])
    write_stl10_binary(root, 200, 100, 50, seeds[4])
    cache.write_text(root / SYNTHETIC_MARKER,
                     "Synthetic smoke-test data written by hashstudy.synthetic.make_smoke_root "
                     f"(seed={seed}); not a real dataset.\n")
    return root
