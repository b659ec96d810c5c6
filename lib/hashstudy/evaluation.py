"""Run hashers on a split and evaluate them: the loop every notebook's comparison needs.

A *hasher* is anything with ``fit(X, y=None)`` and ``encode(X) -> {0,1}``:
the shallow baselines of :mod:`hashstudy.baselines` and the deep methods alike.

**The study's one experiment shape.** :func:`run` fits each (method, bits)
pair on the split's training images, encodes queries and database, evaluates
them with :func:`hashstudy.metrics.evaluate`, and returns a :class:`Result`:
the long table of metrics, the codes (for curves and retrieval figures) and
the fitted hashers (for what a notebook inspects: label fit, activations,
training curves). A method is a name of :data:`hashstudy.baselines.METHODS`
or a factory ``bits -> hasher`` (with ``factory.supervised = True`` when its
``fit`` takes the class labels), so a new method is added by writing one
module whose hasher has ``fit``/``encode`` and passing its factory here.
:func:`compare` is the same call for code that unpacks ``(table, codes)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from . import baselines, config, metrics, timing

__all__ = ["Codes", "Result", "as_vectors", "encode_split", "run", "compare", "long_to_metrics",
           "curves_by_method"]


@dataclass
class Codes:
    """Query and database codes of one method at one code length."""

    method: str
    bits: int
    query: np.ndarray = field(repr=False)
    database: np.ndarray = field(repr=False)
    fit_seconds: float = 0.0


@dataclass
class Result:
    """What :func:`run` returns: metrics, codes and fitted hashers of one experiment.

    ``table`` is long: ``method, bits, metric, value`` (one ``fit_seconds`` row
    per pair); ``codes[(method, bits)]`` and ``fitted[(method, bits)]`` hold
    each pair's :class:`Codes` and hasher. Unpacking gives ``(table, codes)``,
    the shape :func:`compare` has always returned.
    """

    table: "object"
    codes: dict = field(default_factory=dict, repr=False)
    fitted: dict = field(default_factory=dict, repr=False)

    def __iter__(self):
        return iter((self.table, self.codes))

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{f"{prefix}/{method}/{bits}/{metric}": value}``, the report's keys."""
        return long_to_metrics(self.table, prefix)

    def wide(self, metric: str):
        """One metric as a method x bits table (methods in the order they were run)."""
        rows = self.table[self.table.metric == metric]
        order = list(dict.fromkeys(rows.method))
        return rows.pivot(index="method", columns="bits", values="value").loc[order]

    def by_bits(self, metric: str, rename: Optional[Mapping[str, str]] = None) -> dict:
        """``{method: (bits, values)}`` of one metric, for :func:`hashstudy.plots.curves`."""
        rows = self.table[self.table.metric == metric].sort_values("bits", kind="stable")
        rename = dict(rename or {})
        return {rename.get(m, m): (g.bits.to_numpy(), g.value.to_numpy())
                for m, g in rows.groupby("method", sort=False)}


def as_vectors(images: np.ndarray) -> np.ndarray:
    """Flatten uint8 images (N, H, W, C) to float32 vectors in [0, 1] (pixel features)."""
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"expected a batch of images, got shape {images.shape}")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def encode_split(hasher, X: np.ndarray, labels: np.ndarray, split, supervised: bool = False):
    """Fit ``hasher`` on ``X[split.train]`` and encode queries and database.

    ``X`` and ``labels`` are indexed by pool position (see :mod:`hashstudy.protocols`).
    Returns ``(query_codes, database_codes, fit_seconds)``.
    """
    t0 = time.perf_counter()
    with timing.step("training"):
        if supervised:
            hasher.fit(X[split.train], labels[split.train])
        else:
            hasher.fit(X[split.train])
    seconds = time.perf_counter() - t0
    with timing.step("evaluation"):
        return hasher.encode(X[split.query]), hasher.encode(X[split.database]), seconds


def run(methods, bits: Iterable[int], X: np.ndarray, labels: np.ndarray, split,
        *, seed: int = 0, metric_keys: Sequence[str] = metrics.DEFAULT_METRICS,
        params: Optional[Mapping[str, dict]] = None,
        extra: Optional[Mapping[str, Callable[[int], object]]] = None,
        progress: bool = True) -> Result:
    """Fit, encode and evaluate every method at every code length on ``split``.

    Parameters
    ----------
    methods : sequence of str, or {name: factory(bits) -> hasher}
        Names in :data:`hashstudy.baselines.METHODS` or keys of ``extra``; a
        mapping adds its factories to ``extra`` and runs them in its order.
    bits : iterable of int
    X : float array (N_pool, D)
        Features of the whole pool (pixels via :func:`as_vectors`, or backbone features).
    labels : int array (N_pool,)
    split : :class:`hashstudy.protocols.Split`
    seed : int
        Seed of every method.
    params : {method: {param: value}}, optional
        Extra constructor parameters per baseline.
    extra : {name: factory(bits) -> hasher}, optional
        Further hashers (e.g. deep methods) under their own names.

    Returns
    -------
    :class:`Result`
        ``table``: long format, ``method, bits, metric, value`` plus a
        ``fit_seconds`` row per pair; ``codes[(method, bits)]``: :class:`Codes`;
        ``fitted[(method, bits)]``: the fitted hasher.
    """
    import pandas as pd

    extra = dict(extra or {})
    if isinstance(methods, Mapping):
        extra.update(methods)
        methods = list(methods)
    params = dict(params or {})
    bits = config.check_bits(list(bits))
    for m in methods:
        if m not in extra:
            config.check_choice("method", m, list(baselines.METHODS) + list(extra))
    pairs = [(m, b) for m in methods for b in bits]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(pairs, desc="hashing", unit="method")
    rows, codes, fitted = [], {}, {}
    ql, dl = labels[split.query], labels[split.database]
    for m, b in pairs:
        if bar is not None:
            bar.set_postfix_str(f"{m} {b} bits")
        if m in extra:
            hasher, supervised = extra[m](b), bool(getattr(extra[m], "supervised", False))
        else:
            hasher = baselines.make(m, b, seed=seed, **params.get(m, {}))
            supervised = m in baselines.SUPERVISED
        q, d, secs = encode_split(hasher, X, labels, split, supervised=supervised)
        codes[(m, b)] = Codes(m, b, q, d, secs)
        fitted[(m, b)] = hasher
        for key, value in metrics.evaluate(q, d, ql, dl, metric_keys).items():
            rows.append({"method": m, "bits": b, "metric": key, "value": value})
        rows.append({"method": m, "bits": b, "metric": "fit_seconds", "value": secs})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return Result(pd.DataFrame(rows, columns=["method", "bits", "metric", "value"]), codes, fitted)


def compare(methods, bits: Iterable[int], X: np.ndarray, labels: np.ndarray, split, **kwargs):
    """:func:`run`, unpacked: ``(table, codes)`` (the parameters are :func:`run`'s)."""
    return tuple(run(methods, bits, X, labels, split, **kwargs))


def long_to_metrics(table, prefix: str) -> dict[str, float]:
    """``{f"{prefix}/{method}/{bits}/{metric}": value}`` from a :func:`compare` table."""
    return {f"{prefix}/{r.method}/{int(r.bits)}/{r.metric}": float(r.value)
            for r in table.itertuples() if r.metric != "fit_seconds"}


def curves_by_method(codes: Mapping, q_labels, db_labels, bits: int, kind: str = "pr",
                     max_k: int = 1000, empty: str = "skip") -> dict[str, tuple]:
    """``{method: (x, y)}`` curves at one code length, for :func:`hashstudy.plots.curves`.

    ``kind="pr"``: (recall, precision) of the Hamming-radius PR curve, one
    point per radius ``0..bits``. With ``empty="skip"`` (the figures' choice)
    a query that has no database item within a radius is left out of the
    precision average at that radius, so long codes, whose small balls are
    mostly empty, do not show a spurious drop to precision 0 near recall 0;
    ``"zero"`` counts such a query as precision 0 (as ``hd2p`` does). Recall
    always averages over every query. :data:`hashstudy.plots.PR_YLABEL`
    labels the axis accordingly.

    ``kind="precision@k"``: (k, precision@k) for k = 1..max_k, from the Hamming
    ranking with items at equal distance averaged over all their orders
    (``ties="average"``, as every reported metric).
    """
    config.check_choice("kind", kind, ("pr", "precision@k"))
    out = {}
    for (m, b), c in codes.items():
        if b != bits:
            continue
        if kind == "pr":
            curve = metrics.pr_curve(c.query, c.database, q_labels, db_labels, empty=empty)
            out[m] = (curve.recall, curve.precision)
        else:
            prec = metrics.precision_curve(c.query, c.database, q_labels, db_labels, max_k=max_k,
                                           ties="average")
            out[m] = (np.arange(1, len(prec) + 1), prec)
    return out
