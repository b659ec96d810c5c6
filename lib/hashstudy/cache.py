"""Atomic writes and content-keyed caches.

Every file the study writes goes through :func:`atomic_path`: the content is
written to a temporary file in the same folder and renamed into place only when
complete, so an interrupted run never leaves a half-written file behind.

Cached arrays are ``.npz`` files whose name carries a hash of everything they
depend on (:func:`key`), and whose content carries a checksum that is verified
on load; a damaged file is reported, removed and rebuilt.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from . import timing

log = logging.getLogger(__name__)

_CHECK = "__checksum__"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception (including ``KeyboardInterrupt``) the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp"
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically write ``obj`` as pretty, key-sorted JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def merge_json(path: str | os.PathLike, new: Mapping, owned_prefixes: tuple[str, ...]) -> Path:
    """Atomically merge flat ``new`` keys into the JSON object at ``path``.

    Existing keys that start with one of ``owned_prefixes`` are dropped first
    (the writer owns them, so keys it no longer produces disappear); every
    other existing key is kept. Used where two scripts write one report's
    ``metrics.json`` (the benchmarks), each owning its own key prefixes.
    """
    path = Path(path)
    old = json.loads(path.read_text()) if path.exists() else {}
    if not isinstance(old, dict):
        raise ValueError(f"{path} does not hold a JSON object; delete it to rewrite it")
    kept = {k: v for k, v in old.items() if not str(k).startswith(tuple(owned_prefixes))}
    return write_json(path, {**kept, **dict(new)})


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def key(*parts) -> str:
    """A short, stable hash of ``parts`` (JSON-encoded, keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def array_digest(*arrays, length: int = 20, with_dtype: bool = True) -> str:
    """A sha256 digest of arrays' shapes (and dtypes) and bytes, as ``length`` hex digits: the
    data part of a cache key. Torch tensors are read as NumPy arrays.

    Every method module keys its trained weights and graphs with it: ``length=20`` (CNNH,
    DSTH, DDH, the journal DSTH), 64 (the latent-layer CNN), ``length=16, with_dtype=False``
    (the autoencoder; the shape alone prefixes the bytes), so each keeps the keys its caches
    were written under.
    """
    h = hashlib.sha256()
    for a in arrays:
        if not isinstance(a, np.ndarray) and hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h.update((f"{a.dtype}{a.shape}" if with_dtype else str(a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:int(length)]


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Atomically save arrays to ``path`` (.npz) with an embedded checksum."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    check = np.frombuffer(_digest(arrays).encode(), dtype=np.uint8)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **{_CHECK: check})
    return Path(path)


class CacheError(RuntimeError):
    """A cache file exists but is unreadable or fails its checksum."""


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load arrays saved by :func:`save_arrays`, verifying the checksum."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, OSError ...
        raise CacheError(f"cache file {path} is unreadable ({exc})") from exc
    check = arrays.pop(_CHECK, None)
    if check is None or check.tobytes().decode(errors="replace") != _digest(arrays):
        raise CacheError(f"cache file {path} fails its checksum")
    return arrays


def load_if_intact(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path``, or ``None`` when there is no file or it is damaged
    (a damaged file is removed, so the caller draws or computes it anew)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_arrays(path)
    except CacheError as exc:
        log.warning("%s; drawing it anew", exc)
        path.unlink(missing_ok=True)
        return None


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (other processes wait).

    Used so that two notebooks running in parallel compute an expensive
    cached result once: the second waits, then finds the file.
    """
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_arrays(
    path: str | os.PathLike, compute: Callable[[], Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the arrays at ``path``, computing and saving them if absent or damaged.

    Concurrent callers for the same ``path`` are serialised with :func:`locked`.
    """
    path = Path(path)
    with locked(path):
        if path.exists():
            try:
                arrays = load_arrays(path)
                timing.count("cache_hits")
                return arrays
            except CacheError as exc:
                log.warning("%s; rebuilding it", exc)
                path.unlink(missing_ok=True)
        timing.count("cache_misses")
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        save_arrays(path, **arrays)
        return arrays
