"""Where a run spends its time: wall seconds per step, summed over a process.

The library marks its expensive functions with a *step* (:data:`STEPS`):

``decode``      reading image files and IDX archives into arrays;
``features``    a pretrained backbone's forward passes (feature extraction);
``graphs``      nearest-neighbour searches, affinity graphs, Laplacian
                eigenmaps, neighbour expansion and hash labels built from them;
``training``    fitting a hasher or a network (``fit`` of every method);
``evaluation``  ranking metrics, precision curves and searches.

Time is attributed *exclusively*: when a step runs inside another (a graph
built while a hasher trains), its seconds count for the inner step only, so
the steps of one process add up to at most its wall time; the rest (imports,
plotting, tables, cache loading) is reported as ``other`` by the callers that
know the wall time (:meth:`hashstudy.reporting.Report.save` writes
``meta.json["step_seconds"]``; ``python -m hashstudy.regenerate`` collects
them into ``reports/regeneration/<profile>/``).

Cache traffic is counted too (:func:`count`): ``cache_hits`` and
``cache_misses`` of :func:`hashstudy.cache.cached_arrays` and of the trained
models tell a cold run from a warm one. A trained model loaded from the cache
also brings the seconds its training took when it was trained
(:func:`loaded_training`), so a report whose trainings ran in earlier,
interrupted runs still says what they cost (``meta.json["trainings_loaded"]``).

>>> from hashstudy import timing
>>> timing.reset()
>>> with timing.step("training"):
...     with timing.step("graphs"):
...         pass
>>> sorted(timing.totals())
['graphs', 'training']
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter, defaultdict
from typing import Callable, Iterator, TypeVar

STEPS = ("decode", "features", "graphs", "training", "evaluation")

_lock = threading.Lock()
_totals: dict[str, float] = defaultdict(float)
_counts: Counter = Counter()
_loaded: dict[str, float] = {}  # cached model file -> seconds its training took
_local = threading.local()

F = TypeVar("F", bound=Callable)


def _stack() -> list:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _check(name: str) -> str:
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; the steps are {', '.join(STEPS)}")
    return name


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Count the wall time of the block for step ``name`` (exclusively; see the module)."""
    _check(name)
    stack = _stack()
    now = time.perf_counter()
    if stack:  # pause the enclosing step
        outer, since = stack[-1]
        with _lock:
            _totals[outer] += now - since
    stack.append([name, now])
    try:
        yield
    finally:
        end = time.perf_counter()
        inner, since = stack.pop()
        with _lock:
            _totals[inner] += end - since
        if stack:  # resume the enclosing step
            stack[-1][1] = end


def timed(name: str) -> Callable[[F], F]:
    """Decorator: every call of the function counts for step ``name``."""
    _check(name)

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with step(name):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``name`` (e.g. ``cache_hits``)."""
    with _lock:
        _counts[name] += n


def loaded_training(name: str, seconds) -> None:
    """Record that the trained model ``name`` came from the cache, and what its training took
    when it was trained (``None`` when its file predates that record)."""
    with _lock:
        _loaded[name] = None if seconds is None else float(seconds)


def trainings_loaded() -> dict[str, float]:
    """``{model file: training seconds}`` of every trained model loaded from the cache so far
    in this process (:func:`loaded_training`)."""
    with _lock:
        return dict(_loaded)


def totals() -> dict[str, float]:
    """Seconds per step so far in this process (steps never entered are absent).

    A step that is running counts up to now.
    """
    with _lock:
        out = dict(_totals)
    stack = _stack()
    if stack:
        name, since = stack[-1]
        out[name] = out.get(name, 0.0) + time.perf_counter() - since
    return {k: round(v, 3) for k, v in out.items()}


def counts() -> dict[str, int]:
    """The counters of :func:`count` so far in this process."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Forget every total and counter (the current thread's open steps restart now)."""
    with _lock:
        _totals.clear()
        _counts.clear()
        _loaded.clear()
    now = time.perf_counter()
    for entry in _stack():
        entry[1] = now
