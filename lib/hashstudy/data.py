"""Dataset loaders: uint8 images, int64 labels and class names.

Every loader returns a :class:`Dataset` whose ``images`` are ``uint8`` arrays
of shape ``(N, H, W, C)`` (``C = 1`` for grayscale, ``3`` for RGB), whose
``labels`` are ``int64`` arrays of shape ``(N,)`` indexing ``classes``, and
whose ``source`` says in words where the pixels came from.

Names
-----
``mnist``
    28x28 grayscale digits; classes ``"0"`` .. ``"9"``.
``cifar10``
    32x32 RGB, 10 classes.
``cifar100``
    32x32 RGB with the 100 *fine* labels.
``cifar100-coarse``
    The same images with the 20 *coarse* (superclass) labels. CIFAR-100 is
    offered under two names rather than as extra fields, so that the label set
    is part of the name every split, cache file and report carries.
``stl10``
    96x96 RGB, 10 classes; splits ``train``, ``test`` and ``unlabeled``
    (labels ``-1``).
``fashion-mnist``
    Fashion-MNIST: 28x28 grayscale clothing images; torchvision's class names
    (``"T-shirt/top"``, ``"Trouser"``, ... ``"Ankle boot"``).
``kmnist``
    Kuzushiji-MNIST: 28x28 grayscale cursive Japanese characters; classes
    ``"o"``, ``"ki"``, ``"su"``, ... ``"wo"`` (torchvision's names).
``folder:<path>``
    Any ImageFolder holding ``train/<class>/<image>`` and
    ``test/<class>/<image>``. A relative ``<path>`` is resolved against the
    data root, an absolute one is used as is. Options may follow a ``?``:
    ``folder:<path>?channels=1&size=28x28`` (``channels`` 1 or 3,
    ``size`` height x width, or one number for a square), with the meaning
    of :func:`register_imagefolder`'s arguments. Being a plain string, the
    name works in any process, e.g. as a notebook parameter run by papermill.
    :func:`key_token` turns it into a short token for metric keys
    (``folder-<last folder name>``).
registered names
    Any ImageFolder dataset added with :func:`register_imagefolder` (known to
    the process that registered it only; use ``folder:<path>`` to name a
    folder across processes).

Splits are ``"train"`` and ``"test"`` (plus ``"unlabeled"`` for STL-10).

Where the data come from, first match wins
------------------------------------------
All paths are below the data root: ``root`` when given, else
:func:`hashstudy.config.data_root` (``HASHSTUDY_DATA``).

1. The original files, in torchvision's layout, read here with numpy:

   - ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or the same
     names with ``.gz``); likewise ``FashionMNIST/raw/`` and ``KMNIST/raw/``
     (torchvision's folders) for Fashion-MNIST and KMNIST;
   - ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
     ``test_batch``, ``batches.meta``);
   - ``cifar-100-python/`` (``train``, ``test``, ``meta``);
   - ``stl10_binary/`` (``{train,test,unlabeled}_X.bin``, ``{train,test}_y.bin``,
     ``class_names.txt``).

2. An ImageFolder mirror ``<mirror>/{train,test}/<class>/<image>``, with
   ``<mirror>`` one of ``mnist-png``, ``mnist-jpeg``, ``cifar10-png``,
   ``cifar10-jpeg``, ``cifar100-png``, ``cifar100-jpeg`` (fine-class folders;
   also serves ``cifar100-coarse``), ``stl10-png``, ``stl10-jpeg``; the lossless
   ``-png`` folder is preferred when both exist; likewise ``fashion-mnist-png``,
   ``fashion-mnist-jpeg``, ``kmnist-png`` and ``kmnist-jpeg``. The class
   folders must carry the dataset's class names (:data:`CLASSES`), so that
   labels mean the same as with the original files; Fashion-MNIST's and
   KMNIST's names are neither sorted nor all valid folder names
   (``T-shirt/top``), so their mirrors name the class folders by label,
   ``0`` .. ``9``. Images are converted to grayscale for the MNIST-like sets
   and to RGB otherwise (rules below). STL-10's ``unlabeled`` split has no
   mirror.

3. A download of the original archive into the data root, with torchvision's
   download helpers and checksums, unless the environment variable
   ``HASHSTUDY_DOWNLOAD`` is ``0`` (or ``false``/``no``/``off``) or the
   ``download`` argument is ``False``. The host is probed first (a few seconds
   at most), so an offline machine fails fast.

When all three fail, one :class:`DatasetNotFoundError` lists every path that
was looked for and how to provide the data. Damaged files raise
:class:`CorruptDatasetError` naming the file; nothing is guessed or padded.

Images in an ImageFolder
------------------------
Classes are the sorted names of the sub-folders of the split folder (as
torchvision's ``ImageFolder``; names starting with ``.`` are skipped), and
within a class the image files, searched recursively, are sorted by their
relative path. Files whose extension is not an image extension
(:data:`IMAGE_EXTENSIONS`, any case) are ignored, as torchvision does.

Modes: ``"1"`` and ``"L"`` decode as grayscale, ``"RGB"``, ``"P"`` (palette,
transparency dropped), ``"YCbCr"`` and ``"CMYK"`` as RGB. When a folder mixes
grayscale and RGB images, the grayscale ones are promoted to RGB by repeating
their channel (common in photo collections); a folder of grayscale images only
gives ``C = 1``. ``channels=1`` or ``3`` forces every image through Pillow's
``convert("L")`` (ITU-R 601-2 luma) or ``convert("RGB")``. Any other mode
(alpha channels, 16-bit or float images) is an error naming the file. All
images must share one size unless ``size`` is given, in which case each image
is resized with Pillow's bilinear filter (antialiased when shrinking; the
aspect ratio is not preserved).

Caching
-------
Decoding an ImageFolder (60,000 JPEG files for the CIFAR-10 mirror) happens
once: the arrays are cached in ``<cache>/datasets/`` with
:func:`hashstudy.cache.cached_arrays` (atomic writes, checksum verified on
load, a damaged file is rebuilt). The cache key is a hash of the folder's
absolute path, the ``size``/``channels`` options (of a registered dataset; a
built-in mirror always uses its dataset's mode) and the sorted listing of
relative file paths with their sizes and modification times (nanoseconds), so
adding, removing, replacing or touching any image decodes the folder anew; the
files' bytes are not hashed, which keeps a cache hit cheap. The original binary
formats are *not* cached: reading them is little more than a reshape of the
files' bytes (a second or two at most, for CIFAR-10's five training pickles),
while a cached copy would double the disk space (2.7 GB for STL-10's unlabeled
split alone).

CIFAR python batches are pickles; they are read with an unpickler that only
allows the few numpy constructors those files use, so a tampered file cannot
run code.
"""
from __future__ import annotations

import gzip
import logging
import os
import pickle
import re
import socket
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence
from urllib.parse import urlparse

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import cache, config, timing

__all__ = [
    "Dataset",
    "FOLDER_PREFIX",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "CLASSES",
    "CIFAR100_COARSE_OF_FINE",
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_MARKER",
    "load",
    "available",
    "names",
    "is_folder",
    "check_name",
    "title",
    "key_token",
    "file_token",
    "register_imagefolder",
    "unregister",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions (lower case) that an ImageFolder reads; other files are ignored."""

SYNTHETIC_MARKER = "SYNTHETIC.txt"
"""A file of this name in a data root marks it as synthetic (see :mod:`hashstudy.synthetic`);
``Dataset.source`` then says so."""

_CIFAR100_COARSE = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
_CIFAR100_FINE = tuple(sorted(f for fines in _CIFAR100_COARSE.values() for f in fines))

CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
    "cifar100": _CIFAR100_FINE,
    "cifar100-coarse": tuple(sorted(_CIFAR100_COARSE)),
    "stl10": ("airplane", "bird", "car", "cat", "deer",
              "dog", "horse", "monkey", "ship", "truck"),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}
"""Class names of the built-in datasets, in label order (the order of the original files)."""

CIFAR100_COARSE_OF_FINE = np.array(
    [CLASSES["cifar100-coarse"].index(coarse)
     for fine in _CIFAR100_FINE
     for coarse, fines in _CIFAR100_COARSE.items() if fine in fines],
    dtype=np.int64,
)
"""int64 (100,): the coarse label of each CIFAR-100 fine label (the fixed CIFAR-100 hierarchy)."""


class DatasetNotFoundError(FileNotFoundError):
    """No source of a dataset was found; the message lists what was looked for and where."""


class CorruptDatasetError(ValueError):
    """A dataset file exists but is damaged, truncated or inconsistent; the message names it."""


# --------------------------------------------------------------------------- #
# The data type
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, repr=False)
class Dataset:
    """One split of one dataset.

    Attributes
    ----------
    name : str
        The name it was loaded under (e.g. ``"cifar100-coarse"``).
    split : str
        ``"train"``, ``"test"`` or ``"unlabeled"``.
    images : ndarray of uint8, shape (N, H, W, C)
        Pixels, channels last; ``C`` is 1 (grayscale) or 3 (RGB).
    labels : ndarray of int64, shape (N,)
        Class indices into ``classes``; ``-1`` where unlabeled.
    classes : tuple of str
        Class names in label order.
    source : str
        Human-readable description of the files read: format and absolute
        path, plus any caveat (e.g. a re-encoded JPEG mirror).
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must be a uint8 array of shape (N, H, W, C) with C in (1, 3), got "
                f"{_describe(images)}"
            )
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 \
                or labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be an int64 array of shape ({len(images)},), got {_describe(labels)}"
            )
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if labels.size and (labels.min() < -1 or labels.max() >= len(self.classes)):
            raise ValueError(
                f"labels must lie in -1..{len(self.classes) - 1} for {len(self.classes)} classes, "
                f"got values {labels.min()}..{labels.max()}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, images={_describe(self.images)}, "
            f"labels={_describe(self.labels)}, classes={len(self.classes)}, source={self.source!r})"
        )


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype}{tuple(a.shape)}"
    return type(a).__name__


# --------------------------------------------------------------------------- #
# Original formats
# --------------------------------------------------------------------------- #


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when it ends in ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDatasetError(f"{path}: cannot decompress the gzip file ({exc})") from exc


@timing.timed("decode")
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file holding a uint8 array with ``ndim`` dimensions.

    The header is the magic number ``0x0000 08 <ndim>`` (2051 for images,
    2049 for labels) followed by ``ndim`` big-endian uint32 sizes; the payload
    must have exactly the product of the sizes in bytes.
    """
    raw = _read_bytes(path)
    expected = 0x0800 | ndim
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDatasetError(
            f"{path}: {len(raw)} bytes is shorter than an IDX header ({header} bytes); "
            "the file is truncated"
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected:
        raise CorruptDatasetError(
            f"{path}: magic number {magic} (0x{magic:08x}) is not {expected} (0x{expected:08x}), "
            f"the IDX code of a uint8 array with {ndim} dimension(s); the file is damaged or is "
            "not the expected IDX file"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    needed = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != needed:
        problem = "truncated" if len(raw) < needed else "followed by extra bytes"
        raise CorruptDatasetError(
            f"{path}: the header announces shape {dims} ({needed} bytes in all) but the file has "
            f"{len(raw)} bytes: it is {problem}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _check_labels(labels: np.ndarray, n_images: int, low: int, high: int, what: str) -> None:
    if len(labels) != n_images:
        raise CorruptDatasetError(f"{what}: {len(labels)} labels for {n_images} images")
    if labels.size and (labels.min() < low or labels.max() > high):
        raise CorruptDatasetError(
            f"{what}: labels must lie in {low}..{high}, found {labels.min()}..{labels.max()}"
        )


def _idx_reader(name: str) -> Callable:
    """Reader of the IDX image and label files of an MNIST-like dataset (28x28, 10 classes)."""
    classes = CLASSES[name]

    def read(files: Sequence[Path], coarse: bool):
        image_file, label_file = files
        images = _read_idx(image_file, 3)
        if images.shape[1:] != (28, 28):
            raise CorruptDatasetError(
                f"{image_file}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
        labels = _read_idx(label_file, 1).astype(np.int64)
        _check_labels(labels, len(images), 0, len(classes) - 1, f"{label_file} and {image_file}")
        return images[..., None], labels, classes

    return read


_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only constructs numpy arrays and bytes (what CIFAR batches hold)."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: CIFAR batches hold only numpy arrays, "
                "lists and strings"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """Load a CIFAR python batch; keys (bytes in the original files) come back as str."""
    try:
        with open(path, "rb") as fh:
            obj = _BatchUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # a damaged pickle can fail in many ways
        raise CorruptDatasetError(
            f"{path}: not a readable CIFAR python batch ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise CorruptDatasetError(
            f"{path}: the batch has no {key!r} entry (found {sorted(map(str, batch))})"
        )
    return batch[key]


def _cifar_rows(batch: dict, path: Path) -> np.ndarray:
    """The batch's uint8 (N, 3072) rows: each image's R, G and B planes, row-major."""
    data = _batch_field(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise CorruptDatasetError(
            f"{path}: 'data' must be a uint8 array of shape (N, 3072), found {_describe(data)}"
        )
    return data


def _cifar_names(path: Path, key: str, n: int) -> tuple[str, ...]:
    names = _batch_field(_unpickle(path), key, path)
    names = tuple(x.decode("latin-1") if isinstance(x, bytes) else str(x) for x in names)
    if len(names) != n:
        raise CorruptDatasetError(f"{path}: {key!r} lists {len(names)} names, expected {n}")
    return names


def _read_cifar(batch_files: Sequence[Path], meta: Path, label_key: str, names_key: str,
                n_classes: int):
    rows, labels = [], []
    for path in batch_files:
        batch = _unpickle(path)
        data = _cifar_rows(batch, path)
        labs = np.asarray(_batch_field(batch, label_key, path))
        if labs.ndim != 1 or (labs.size and not np.issubdtype(labs.dtype, np.integer)):
            raise CorruptDatasetError(
                f"{path}: {label_key!r} must be a list of integers, found {_describe(labs)}"
            )
        labs = labs.astype(np.int64)
        _check_labels(labs, len(data), 0, n_classes - 1, f"{path} ({label_key!r})")
        rows.append(data)
        labels.append(labs)
    classes = _cifar_names(meta, names_key, n_classes)
    images = np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.concatenate(labels), classes


def _read_cifar10(files: Sequence[Path], coarse: bool):
    *batches, meta = files
    return _read_cifar(batches, meta, "labels", "label_names", 10)


def _read_cifar100(files: Sequence[Path], coarse: bool):
    batch, meta = files
    if coarse:
        return _read_cifar([batch], meta, "coarse_labels", "coarse_label_names", 20)
    return _read_cifar([batch], meta, "fine_labels", "fine_label_names", 100)


_STL_SIDE = 96
_STL_IMAGE_BYTES = 3 * _STL_SIDE * _STL_SIDE


def _read_stl10(files: Sequence[Path], coarse: bool):
    """STL-10 binaries: uint8 images stored channel by channel, each channel column-major."""
    names_file, image_file, *label_file = files
    n_bytes = image_file.stat().st_size
    if n_bytes == 0 or n_bytes % _STL_IMAGE_BYTES:
        raise CorruptDatasetError(
            f"{image_file}: {n_bytes} bytes is not a whole number of 96x96 colour images "
            f"({_STL_IMAGE_BYTES} bytes each); the file is truncated or damaged"
        )
    raw = np.fromfile(image_file, dtype=np.uint8)
    # file order per image: channel, column, row  ->  (N, row, column, channel)
    images = np.ascontiguousarray(
        raw.reshape(-1, 3, _STL_SIDE, _STL_SIDE).transpose(0, 3, 2, 1))
    classes = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    if len(classes) != 10:
        raise CorruptDatasetError(f"{names_file}: lists {len(classes)} class names, expected 10")
    if not label_file:
        return images, np.full(len(images), -1, dtype=np.int64), classes
    labels = np.fromfile(label_file[0], dtype=np.uint8).astype(np.int64)
    _check_labels(labels, len(images), 1, 10, f"{label_file[0]} and {image_file}")
    return images, labels - 1, classes


# --------------------------------------------------------------------------- #
# ImageFolder
# --------------------------------------------------------------------------- #

_FORMAT_NAMES = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
_LOSSY = (".jpg", ".jpeg", ".webp")
_GRAY_MODES = frozenset({"1", "L"})
_COLOUR_MODES = frozenset({"RGB", "P", "YCbCr", "CMYK"})


def _decode_image(path: Path, size: Optional[tuple[int, int]], channels: Optional[int]
                  ) -> np.ndarray:
    """Decode one image file to uint8 (H, W) when grayscale or (H, W, 3) when RGB.

    ``size`` is (height, width) to resize to, or None; ``channels`` 1 or 3
    forces the mode, None keeps grayscale as grayscale and colour as RGB.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in _GRAY_MODES | _COLOUR_MODES:
                raise CorruptDatasetError(
                    f"{path}: unsupported image mode {img.mode!r}; only 8-bit grayscale and "
                    "colour images without alpha are read (convert the file to 'L' or 'RGB')"
                )
            target = {1: "L", 3: "RGB"}.get(channels, "L" if img.mode in _GRAY_MODES else "RGB")
            out = img.convert(target) if img.mode != target else img
            if size is not None and out.size != (size[1], size[0]):
                out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.array(out, dtype=np.uint8)
    except CorruptDatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDatasetError(
            f"{path}: cannot decode the image ({type(exc).__name__}: {exc}); replace or remove "
            "the file"
        ) from exc


def _list_imagefolder(split_dir: Path) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """Class names (sorted folder names) and (relative path, label) of every image file."""
    classes = tuple(sorted(e.name for e in os.scandir(split_dir)
                           if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        raise CorruptDatasetError(
            f"{split_dir}: no class folders; an ImageFolder split holds one folder per class "
            "(<split>/<class>/<image>)"
        )
    items = []
    for label, name in enumerate(classes):
        files = []
        for dirpath, dirnames, filenames in os.walk(split_dir / name, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(split_dir)
            files += [(rel / f).as_posix() for f in filenames
                      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            raise CorruptDatasetError(
                f"{split_dir / name}: the class folder holds no image files "
                f"(extensions read: {', '.join(IMAGE_EXTENSIONS)})"
            )
        items += [(f, label) for f in sorted(files)]
    return classes, items


@timing.timed("decode")
def _decode_folder(split_dir: Path, files: Sequence[str], size, channels) -> np.ndarray:
    """Decode ``files`` (relative to ``split_dir``) in order into uint8 (N, H, W, C)."""
    paths = [split_dir / f for f in files]
    workers = min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    arrays: list[np.ndarray] = []
    try:
        results = pool.map(lambda p: _decode_image(p, size, channels), paths)
        with tqdm(total=len(paths), desc=f"decoding {split_dir}", unit="img",
                  disable=len(paths) < 2000, leave=False) as bar:
            for path, arr in zip(paths, results):
                if arrays and arr.shape[:2] != arrays[0].shape[:2]:
                    h, w = arrays[0].shape[:2]
                    raise CorruptDatasetError(
                        f"{path}: image is {arr.shape[0]}x{arr.shape[1]} (height x width) but "
                        f"{paths[0]} is {h}x{w}; all images of an ImageFolder must have one "
                        "size (for a registered dataset, pass size=(height, width) to "
                        "register_imagefolder to resize them)"
                    )
                arrays.append(arr)
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    n_gray = sum(a.ndim == 2 for a in arrays)
    colour = n_gray < len(arrays)
    if colour and n_gray:
        log.info("%s: %d grayscale image(s) promoted to RGB", split_dir, n_gray)
    h, w = arrays[0].shape[:2]
    out = np.empty((len(arrays), h, w, 3 if colour else 1), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a[..., None] if a.ndim == 2 else a
    return out


def _load_imagefolder(split_dir: Path, size, channels, expected: Optional[tuple[str, ...]]):
    """Images, labels, classes, format name and lossiness of an ImageFolder split, via the cache."""
    classes, items = _list_imagefolder(split_dir)
    if expected is not None and classes != expected:
        missing = sorted(set(expected) - set(classes))
        extra = sorted(set(classes) - set(expected))
        raise CorruptDatasetError(
            f"{split_dir}: the class folders do not match the dataset's classes "
            f"(missing: {missing or 'none'}; unexpected: {extra or 'none'}); the folders must "
            f"be named {list(expected)}"
        )
    files = [f for f, _ in items]
    listing = []
    for f in files:
        st = (split_dir / f).stat()
        listing.append((f, st.st_size, st.st_mtime_ns))
    digest = cache.key("imagefolder-v1", str(split_dir), size, channels, listing)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{split_dir.parent.name}-{split_dir.name}")
    path = config.cache_dir("datasets") / f"imagefolder-{slug}-{digest}.npz"
    arrays = cache.cached_arrays(path, lambda: {
        "images": _decode_folder(split_dir, files, size, channels),
        "labels": np.array([label for _, label in items], dtype=np.int64),
    })
    extensions = {Path(f).suffix.lower() for f in files}
    fmt = "/".join(sorted({_FORMAT_NAMES.get(e, e.lstrip(".").upper()) for e in extensions}))
    return arrays["images"], arrays["labels"], classes, fmt, bool(extensions & set(_LOSSY))


# --------------------------------------------------------------------------- #
# Built-in datasets
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Builtin:
    title: str
    folder: str                                   # canonical folder below the data root
    splits: tuple[str, ...]
    files: Callable[[str], list[tuple[str, ...]]]  # split -> required files, alternatives each
    read: Callable                                # (found files, coarse) -> images, labels, classes
    fmt: str                                      # words for Dataset.source
    mirrors: tuple[str, ...]
    channels: int
    coarse: bool = False
    mirror_classes: Optional[tuple[str, ...]] = None  # class folder names, when not CLASSES


def _mnist_files(split):
    prefix = "train" if split == "train" else "t10k"
    return [(f"raw/{prefix}-{kind}-ubyte", f"raw/{prefix}-{kind}-ubyte.gz")
            for kind in ("images-idx3", "labels-idx1")]


def _cifar10_files(split):
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return [(b,) for b in batches] + [("batches.meta",)]


def _stl10_files(split):
    return [("class_names.txt",), (f"{split}_X.bin",)] + (
        [(f"{split}_y.bin",)] if split != "unlabeled" else [])


_BUILTIN = {
    "mnist": _Builtin("MNIST", "MNIST", ("train", "test"), _mnist_files, _idx_reader("mnist"),
                      "original IDX files", ("mnist-png", "mnist-jpeg"), 1),
    "cifar10": _Builtin("CIFAR-10", "cifar-10-batches-py", ("train", "test"), _cifar10_files,
                        _read_cifar10, "original python batches",
                        ("cifar10-png", "cifar10-jpeg"), 3),
    "cifar100": _Builtin("CIFAR-100 (100 fine classes)", "cifar-100-python", ("train", "test"),
                         lambda split: [(split,), ("meta",)], _read_cifar100,
                         "original python batches", ("cifar100-png", "cifar100-jpeg"), 3),
    "cifar100-coarse": _Builtin("CIFAR-100 (20 coarse superclasses)", "cifar-100-python",
                                ("train", "test"), lambda split: [(split,), ("meta",)],
                                _read_cifar100, "original python batches",
                                ("cifar100-png", "cifar100-jpeg"), 3, coarse=True),
    "stl10": _Builtin("STL-10", "stl10_binary", ("train", "test", "unlabeled"), _stl10_files,
                      _read_stl10, "original binary files", ("stl10-png", "stl10-jpeg"), 3),
    "fashion-mnist": _Builtin("Fashion-MNIST", "FashionMNIST", ("train", "test"), _mnist_files,
                              _idx_reader("fashion-mnist"), "original IDX files",
                              ("fashion-mnist-png", "fashion-mnist-jpeg"), 1,
                              mirror_classes=tuple(str(d) for d in range(10))),
    "kmnist": _Builtin("KMNIST (Kuzushiji-MNIST)", "KMNIST", ("train", "test"), _mnist_files,
                       _idx_reader("kmnist"), "original IDX files", ("kmnist-png", "kmnist-jpeg"),
                       1, mirror_classes=tuple(str(d) for d in range(10))),
}


def _find_files(spec: _Builtin, root: Path, split: str):
    """(found paths or None, description of the files looked for)."""
    base = root / spec.folder
    found, wanted = [], []
    for alternatives in spec.files(split):
        paths = [base / a for a in alternatives]
        wanted.append(" or ".join(str(p) for p in paths))
        hit = next((p for p in paths if p.is_file()), None)
        found.append(hit)
    return (found if all(found) else None), wanted


def _mirror_dirs(spec: _Builtin, root: Path, split: str) -> list[Path]:
    return [] if split == "unlabeled" else [root / m / split for m in spec.mirrors]


def _synthetic_note(root: Path) -> str:
    return (" (synthetic smoke-test data written by hashstudy.synthetic, not the real dataset)"
            if (root / SYNTHETIC_MARKER).exists() else "")


def _load_builtin(name: str, spec: _Builtin, split: str, root: Path, download: bool) -> Dataset:
    found, wanted = _find_files(spec, root, split)
    if found is None:
        for split_dir in _mirror_dirs(spec, root, split):
            if split_dir.is_dir():
                return _load_mirror(name, spec, split, split_dir, root)
        if not download:
            note = "skipped (HASHSTUDY_DOWNLOAD=0 or download=False)"
        else:
            problem = _download(name, root)
            found, wanted = _find_files(spec, root, split)
            note = (f"failed: {problem}" if problem else
                    "finished, but the files above are still missing")
        if found is None:
            raise DatasetNotFoundError(_not_found_message(name, spec, split, root, wanted, note))
    images, labels, classes = spec.read(found, spec.coarse)
    where = sorted({str(p.parent) for p in found})
    return Dataset(name, split, images, labels, classes,
                   f"{spec.title}, {split} split, from the {spec.fmt} in {', '.join(where)}"
                   f"{_synthetic_note(root)}")


def _load_mirror(name: str, spec: _Builtin, split: str, split_dir: Path, root: Path) -> Dataset:
    base = "cifar100" if spec.coarse else name
    images, labels, classes, fmt, lossy = _load_imagefolder(split_dir, None, spec.channels,
                                                            spec.mirror_classes or CLASSES[base])
    classes = CLASSES[base]
    if spec.coarse:
        labels, classes = CIFAR100_COARSE_OF_FINE[labels], CLASSES["cifar100-coarse"]
    caveat = ("images re-encoded with lossy compression, so pixels differ slightly from the "
              "original files, and the order of images within a class is not the original "
              "order" if lossy else
              "the order of images within a class may differ from the original files")
    return Dataset(name, split, images, labels, classes,
                   f"{spec.title}, {split} split, from the {fmt} ImageFolder mirror {split_dir} "
                   f"(caveat: {caveat}){_synthetic_note(root)}")


def _not_found_message(name, spec, split, root, wanted, download_note) -> str:
    mirrors = _mirror_dirs(spec, root, split)
    looked = [f"the {spec.fmt}: " + "; ".join(wanted)]
    if mirrors:
        looked.append("an ImageFolder mirror <class>/<image> in: "
                      + " or ".join(str(m) for m in mirrors))
    looked.append(f"a download into {root}: {download_note}")
    source = _DOWNLOADS[name]
    held = f"{spec.folder}/" + (" or a mirror" if mirrors else "")
    return "\n".join(
        [f"dataset {name!r} ({spec.title}), split {split!r}, was not found under the data root "
         f"{root}. Looked for:"]
        + [f"  {i}. {line}" for i, line in enumerate(looked, start=1)]
        + [f"To provide it: {source.how.format(root=root)} (with network access, "
           f"torchvision.datasets.{source.torchvision}(root={str(root)!r}, download=True) does "
           f"this){', or put an ImageFolder mirror there' if mirrors else ''}, or set "
           f"HASHSTUDY_DATA to the folder that already holds {held}."]
    )


# --------------------------------------------------------------------------- #
# Download (torchvision's helpers, checksums included)
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class _Download:
    urls: tuple[str, ...]   # probed before torchvision is imported (importing it takes seconds)
    torchvision: str        # class in torchvision.datasets that knows the files and checksums
    how: str                # instructions for a manual download, with {root}


_CIFAR100_DOWNLOAD = _Download(
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",), "CIFAR100",
    "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and unpack it in {root}")
_DOWNLOADS = {
    "mnist": _Download(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        "MNIST",
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
        "https://ossci-datasets.s3.amazonaws.com/mnist/ into {root}/MNIST/raw"),
    "cifar10": _Download(
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), "CIFAR10",
        "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it in {root}"),
    "cifar100": _CIFAR100_DOWNLOAD,
    "cifar100-coarse": _CIFAR100_DOWNLOAD,
    "stl10": _Download(
        ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",), "STL10",
        "download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and unpack it in "
        "{root}"),
    "fashion-mnist": _Download(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), "FashionMNIST",
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into {root}/FashionMNIST/raw"),
    "kmnist": _Download(
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",), "KMNIST",
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/ into {root}/KMNIST/raw"),
}
_PROBES: dict[str, Optional[str]] = {}


def _download_enabled(download: Optional[bool]) -> bool:
    if download is not None:
        return bool(download)
    value = os.environ.get("HASHSTUDY_DOWNLOAD", "1").strip().lower()
    return value not in {"0", "false", "no", "off"}


def _probe(url: str, timeout: float = 5.0) -> Optional[str]:
    """None when ``url``'s host accepts a connection within ``timeout`` s, else why not.

    The answer is remembered for the process, so an offline machine pays once.
    """
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if host in _PROBES:
        return _PROBES[host]
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result = [f"no answer from {host}:{port} within {timeout:g} s"]

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = None
        except OSError as exc:
            result[0] = f"cannot reach {host}:{port} ({exc})"

    worker = threading.Thread(target=connect, daemon=True)  # a hung DNS lookup must not block
    worker.start()
    worker.join(timeout)
    _PROBES[host] = result[0]
    return result[0]


def _download(name: str, root: Path) -> Optional[str]:
    """Download and unpack ``name``'s original archive into ``root``.

    Returns None on success, else why it failed (the message of the error).
    """
    source = _DOWNLOADS[name]
    problems = [f"{url}: {p}" for url in source.urls if (p := _probe(url)) is not None]
    if len(problems) == len(source.urls):
        return "; ".join(problems)

    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(tvd, source.torchvision)
    try:
        if issubclass(cls, tvd.MNIST):    # MNIST, FashionMNIST, KMNIST: four .gz files
            raw = root / _BUILTIN[name].folder / "raw"
            for filename, md5 in cls.resources:
                errors = []
                for mirror in cls.mirrors:
                    problem = _probe(mirror)
                    if problem is None:
                        try:
                            download_and_extract_archive(mirror + filename, raw,
                                                         filename=filename, md5=md5,
                                                         remove_finished=True)
                            break
                        except Exception as exc:  # network and checksum errors alike
                            problem = f"{type(exc).__name__}: {exc}"
                    errors.append(f"{mirror}{filename}: {problem}")
                else:
                    return "; ".join(errors)
            return None
        problem = _probe(cls.url)
        if problem is not None:
            return f"{cls.url}: {problem}"
        log.info("downloading %s into %s", cls.url, root)
        download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5,
                                     remove_finished=True)
        return None
    except Exception as exc:  # network, disk and checksum errors alike
        return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- #
# Registered ImageFolder datasets
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Registered:
    path: Path
    size: Optional[tuple[int, int]]
    channels: Optional[int]
    title: str


_REGISTRY: dict[str, _Registered] = {}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_FOLDER_SPLITS = ("train", "test")


def register_imagefolder(name: str, path, *, size=None, channels: Optional[int] = None,
                         title: Optional[str] = None) -> None:
    """Make an ImageFolder dataset loadable as ``load(name, split)``.

    Parameters
    ----------
    name : str
        Letters, digits and ``_ . + -``, not starting with punctuation, and not
        a built-in name. Registering a name again replaces its entry.
    path : str or path-like
        Folder holding ``train/<class>/<image>`` and ``test/<class>/<image>``.
        A relative path is resolved against the data root at load time
        (``root`` argument or ``HASHSTUDY_DATA``), so datasets move with it.
    size : int or (int, int), optional
        Resize every image to (height, width) (an int means square); needed
        when the images differ in size, e.g. Oxford-17 Flowers. Default: all
        images must share one size.
    channels : {None, 1, 3}
        Force grayscale (1) or RGB (3); None keeps grayscale folders
        grayscale and promotes grayscale images in a colour folder to RGB.
    title : str, optional
        Name used in ``Dataset.source`` (default: ``name``).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"dataset name {name!r} is not allowed: use letters, digits and '_.+-', starting "
            "with a letter or digit"
        )
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in dataset; register the folder under another name")
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    if channels is not None:
        config.check_choice("channels", channels, (1, 3))
    _REGISTRY[name] = _Registered(Path(path).expanduser(), size, channels, title or name)


def unregister(name: str) -> None:
    """Forget a dataset added with :func:`register_imagefolder` (KeyError if unknown)."""
    if name not in _REGISTRY:
        raise KeyError(f"no registered dataset {name!r}; registered: {sorted(_REGISTRY)}")
    del _REGISTRY[name]


FOLDER_PREFIX = "folder:"
"""Prefix of the ``folder:<path>[?channels=1&size=28x28]`` dataset names."""


def _parse_size(text: str, name: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(f"dataset name {name!r}: size must be HEIGHTxWIDTH or one positive "
                         f"number, e.g. size=28x28, got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) is not None else h


def _parse_folder(name: str) -> _Registered:
    """The ImageFolder entry of a ``folder:<path>[?channels=1&size=HxW]`` name."""
    spec = name[len(FOLDER_PREFIX):]
    path, _, query = spec.partition("?")
    if not path.strip():
        raise ValueError(f"dataset name {name!r} names no folder; write folder:<path>, e.g. "
                         "folder:myimages (below the data root) or folder:/abs/path")
    size = channels = None
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in ("channels", "size"):
            raise ValueError(f"dataset name {name!r}: unknown option {item!r}; the options are "
                             "channels=1|3 and size=HEIGHTxWIDTH (e.g. folder:x?channels=1&size=28x28)")
        if key == "size":
            size = _parse_size(value, name)
        elif value.strip() in ("1", "3"):
            channels = int(value)
        else:
            raise ValueError(f"dataset name {name!r}: channels must be 1 or 3, got {value!r}")
    return _Registered(Path(path).expanduser(), size, channels, f"ImageFolder {path}")


def is_folder(name: str) -> bool:
    """Whether ``name`` is a ``folder:<path>`` dataset name."""
    return isinstance(name, str) and name.startswith(FOLDER_PREFIX)


def key_token(name: str) -> str:
    """``name`` as one token of a metric key (no ``/``, ``:`` or ``?``).

    Built-in and registered names are returned unchanged (``mnist``,
    ``fashion-mnist``); ``folder:<path>[?...]`` becomes ``folder-<last folder
    name of path>``, e.g. ``folder:~/pics/my images`` -> ``folder-my-images``.
    """
    if not is_folder(name):
        return name
    entry = _parse_folder(name)
    last = entry.path.name or entry.path.resolve().name or "root"
    return "folder-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", last).strip("-.") or "folder")


def file_token(name: str) -> str:
    """``name`` as part of a file name: :func:`key_token`, plus a short hash of the full name
    for ``folder:`` names, so that two folders with the same last name never share a file."""
    if not is_folder(name):
        return name
    return f"{key_token(name)}-{cache.key(name)[:8]}"


def check_name(parameter: str, name, allowed: Sequence[str], *, folder: bool = True,
               empty: bool = False) -> str:
    """Check a dataset-name parameter of a notebook; returns ``name``.

    ``allowed`` lists the built-in (or registered) names the method accepts;
    ``folder`` also accepts any ``folder:<path>[?...]`` name (its options are
    checked here, the folder itself when loading); ``empty`` accepts ``""``
    (the notebook then skips that part). Anything else raises one
    ``ValueError`` listing the allowed values.
    """
    if isinstance(name, str) and (name in allowed or (empty and name == "")):
        return name
    if folder and is_folder(name):
        _parse_folder(name)
        return name
    values = [repr(a) for a in allowed] + (["'folder:<path>'"] if folder else []) \
        + (["'' (skip this part)"] if empty else [])
    raise ValueError(f"unknown {parameter} {name!r}; allowed values: {', '.join(values)}")


def title(name: str) -> str:
    """A dataset's name in words for titles: ``"MNIST"``, ``"Fashion-MNIST"``, ``"CIFAR-10"``;
    a registered dataset's title; ``folder:<path>`` names as :func:`key_token`."""
    if name in _BUILTIN:
        return _BUILTIN[name].title
    if name in _REGISTRY:
        return _REGISTRY[name].title
    return key_token(name)


def _load_registered(name: str, entry: _Registered, split: str, root: Path) -> Dataset:
    base = entry.path if entry.path.is_absolute() else root / entry.path
    split_dir = base.resolve() / split
    if not split_dir.is_dir():
        if is_folder(name):
            found = (f"the folder {base.resolve()} exists but has no {split}/ in it"
                     if base.is_dir() else f"the folder {base.resolve()} does not exist")
            raise DatasetNotFoundError(
                f"ImageFolder dataset {name!r}, split {split!r}, was not found: looked for the "
                f"folder {split_dir} (holding <class>/<image>); {found}. The folder named must "
                f"hold train/ and test/ with one sub-folder per class; a relative path is "
                f"resolved against the data root {root} (set HASHSTUDY_DATA to change it)."
            )
        raise DatasetNotFoundError(
            f"registered ImageFolder dataset {name!r}, split {split!r}, was not found: looked for "
            f"the folder {split_dir} (holding <class>/<image>). Put the images there, or "
            f"register the dataset again with the folder that holds train/ and test/ "
            f"(register_imagefolder({name!r}, path)); a relative path is resolved against the "
            f"data root {root} (set HASHSTUDY_DATA to change it)."
        )
    images, labels, classes, fmt, _ = _load_imagefolder(split_dir, entry.size, entry.channels,
                                                        None)
    resized = (f", resized to {entry.size[0]}x{entry.size[1]} (height x width)"
               if entry.size else "")
    return Dataset(name, split, images, labels, classes,
                   f"{entry.title}, {split} split, from the {fmt} ImageFolder {split_dir}"
                   f"{resized}")


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #


def names() -> tuple[str, ...]:
    """Known dataset names: the built-in ones, then registered ones (sorted)."""
    return tuple(_BUILTIN) + tuple(sorted(_REGISTRY))


def _resolve(name: str, split: str, root) -> tuple[Path, object]:
    if name in _BUILTIN:
        entry, splits = _BUILTIN[name], _BUILTIN[name].splits
    elif name in _REGISTRY:
        entry, splits = _REGISTRY[name], _FOLDER_SPLITS
    elif is_folder(name):
        entry, splits = _parse_folder(name), _FOLDER_SPLITS
    else:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(names())}, or "
            "folder:<path> for an ImageFolder with train/ and test/ (or add one with "
            "register_imagefolder)"
        )
    config.check_choice(f"split of {name!r}", split, splits)
    root = Path(root).expanduser().resolve() if root is not None else config.data_root()
    return root, entry


def available(name: str, split: str = "train", root=None) -> bool:
    """Whether ``load(name, split, root=root)`` would find files without downloading.

    A cheap existence check (no decoding); a present but damaged file still
    makes :func:`load` raise :class:`CorruptDatasetError`. Unknown names and
    splits raise ``ValueError`` as in :func:`load`.
    """
    root, entry = _resolve(name, split, root)
    if isinstance(entry, _Registered):
        base = entry.path if entry.path.is_absolute() else root / entry.path
        return (base / split).is_dir()
    found, _ = _find_files(entry, root, split)
    return found is not None or any(d.is_dir() for d in _mirror_dirs(entry, root, split))


def load(name: str, split: str = "train", *, root=None, download: Optional[bool] = None
         ) -> Dataset:
    """Load one split of a dataset.

    Parameters
    ----------
    name : str
        One of :func:`names` (``mnist``, ``cifar10``, ``cifar100``,
        ``cifar100-coarse``, ``stl10``, ``fashion-mnist``, ``kmnist`` or a
        registered ImageFolder), or ``folder:<path>[?channels=1&size=HxW]``.
    split : str
        ``"train"`` or ``"test"``; STL-10 also ``"unlabeled"``.
    root : str or path-like, optional
        Data root; default :func:`hashstudy.config.data_root` (``HASHSTUDY_DATA``).
    download : bool, optional
        Allow downloading the original archive into ``root`` when no local
        source exists; default: allowed unless ``HASHSTUDY_DOWNLOAD=0``.

    Returns
    -------
    Dataset
        uint8 images (N, H, W, C), int64 labels (N,), class names, source.

    Raises
    ------
    ValueError
        Unknown name or split.
    DatasetNotFoundError
        No source found; the message lists every path looked for.
    CorruptDatasetError
        A file is damaged, truncated or inconsistent; the message names it.
    """
    root, entry = _resolve(name, split, root)
    if isinstance(entry, _Registered):
        return _load_registered(name, entry, split, root)
    return _load_builtin(name, entry, split, root, _download_enabled(download))
