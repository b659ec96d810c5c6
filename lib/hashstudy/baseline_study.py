"""Notebook 00's study of the shallow baselines: profiles, inputs, tables, checks and texts.

The hashers are :mod:`hashstudy.baselines` and the experiment is
:func:`hashstudy.evaluation.run`; this module holds what notebook 00 does
around them, so that the notebook reads as the methods' equations, one call
per step and the results:

* :data:`PROFILE_SIZES`, :data:`METRICS`, :func:`check_parameters`: the
  notebook's sizes per profile, the metrics every (method, bits) pair gets,
  and its parameters checked;
* :func:`load_settings`: the features, labels and split of every
  (dataset, feature type) the run asks for, with the protocol and data
  sources recorded in the report;
* :func:`run_settings`: :func:`hashstudy.evaluation.run` on every setting, its
  metrics ``<dataset>/<features>/<method>/<bits>/<metric>`` recorded;
* :func:`method_table`, :func:`report_tables`: the method x bits tables of
  every metric (CSV) and what the notebook shows of them;
* :func:`itq_check`, :func:`band_text`: ITQ against LSH and PCAH over several
  hasher seeds, and ITQ's MNIST mAP against the published band;
* :func:`paper_comparison`, :func:`paper_text`: our numbers beside the shallow
  baselines the DDH paper prints (``paper_numbers.csv``);
* :func:`summary_lines`: the best unsupervised method per setting.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from . import baselines, config, evaluation, protocols

__all__ = [
    "PROFILE_SIZES",
    "METRICS",
    "MNIST_ITQ32_BAND",
    "CHECK_BITS",
    "check_parameters",
    "Setting",
    "load_settings",
    "run_settings",
    "method_table",
    "report_tables",
    "itq_check",
    "band_text",
    "paper_comparison",
    "paper_text",
    "summary_lines",
]

# Everything that depends on the profile, in one place.
#   split:       size overrides of the protocol (none = the protocol as defined)
#   params:      per-method defaults of this profile (method_params overrides them)
#   input_size:  backbone input side (None = the input_size parameter)
#   max_bits:    longest code length run (None = every length in bits)
#   max_k:       last k of the precision@k curves
PROFILE_SIZES = {
    # synthetic data (400 images per dataset): 30 queries, 100 training images, codes up to
    # 32 bits; the backbone runs at 48 px so that feature extraction takes seconds
    # (at 32 px its pooled features are nearly constant)
    "smoke": {"split": {"query_per_class": 3, "train_per_class": 10}, "params": {},
              "input_size": 48, "max_bits": 32, "max_k": 100},
    # the full protocol; STH's graph and per-bit SVMs use 2,000 of the 5,000 training
    # images (all 5,000 take about 4 minutes at 64 bits on one core)
    "quick": {"split": {}, "params": {"sth": {"max_train": 2000}}, "input_size": None,
              "max_bits": None, "max_k": 1000},
    # the full protocol; STH uses every training image; the backbone at its native 224 px
    # (the papers resize to 224-256 px)
    "paper": {"split": {}, "params": {}, "input_size": 224, "max_bits": None, "max_k": 1000},
}
"""Notebook 00's sizes per profile (``python -m hashstudy.profiles 00_baselines`` shows them)."""

METRICS = ["map@1000", "map_all", "precision@100", "precision@1000", "hd2p", "hd2p_answered",
           "precision@recall0.1", "max_f@0.5"]
"""The metrics every (method, bits) pair gets in notebook 00's ``metrics.json``."""

MNIST_ITQ32_BAND = (0.38, 0.45)
"""The band other studies report for ITQ, 32 bits, MNIST pixels, mAP over the whole ranking."""

CHECK_BITS = (32, 64)
"""Code lengths of the ITQ-against-LSH-and-PCAH check (those of them that the run has)."""

_SHOWN = ("map@1000", "map_all", "hd2p")  # the metrics shown in the notebook's tables


def check_parameters(*, datasets: Sequence[str], features: Mapping[str, Sequence[str]], protocol: str,
                     bits: Sequence[int], methods: Sequence[str], method_params: Mapping[str, dict],
                     size: Mapping) -> tuple[list[int], dict]:
    """Check notebook 00's parameters against the library, one clear ``ValueError`` per bad value.

    ``size`` is the profile's :data:`PROFILE_SIZES` entry. Returns
    ``(bits, params)``: the code lengths the profile runs (those up to its
    ``max_bits``) and every method's constructor arguments, the profile's
    defaults overridden by ``method_params``.
    """
    from . import data
    from . import features as backbones

    for d in datasets:
        config.check_choice("dataset", d, data.names())
        if d not in features:
            raise ValueError(f"features has no entry for dataset {d!r}; give e.g. {{{d!r}: ['pixels']}}")
        for f in features[d]:
            config.check_choice(f"feature type of {d}", f, ["pixels", *backbones.BACKBONES])
    config.check_choice("protocol", protocol, protocols.PROTOCOLS)
    bits = [b for b in config.check_bits(bits) if size["max_bits"] is None or b <= size["max_bits"]]
    for m in methods:
        config.check_choice("method", m, baselines.METHODS)
    for m in method_params:
        config.check_choice("method in method_params", m, methods)
    params = {m: {**size["params"].get(m, {}), **method_params.get(m, {})} for m in methods}
    return bits, params


@dataclass
class Setting:
    """One (dataset, feature type) of notebook 00: the pool's features and labels, and the split."""

    X: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    split: protocols.Split


def load_settings(report, datasets: Sequence[str], features: Mapping[str, Sequence[str]], protocol: str,
                  seed: int, *, split_sizes: Mapping, backbone_size: int,
                  metric_keys: Sequence[str] = METRICS) -> dict:
    """The features, labels and split of every (dataset, feature type) of the run.

    A dataset without a local copy is skipped (``report.skip``). ``pixels``
    are the images flattened to [0, 1] (:func:`hashstudy.evaluation.as_vectors`);
    a backbone name means its pooled features at ``backbone_size`` px
    (:func:`hashstudy.features.dataset_features`, cached on disk). One split
    per dataset (:func:`hashstudy.protocols.get_split` with ``split_sizes``),
    recorded in the report for each of its feature types, with the data and
    backbone sources. Prints what it loaded.

    Returns ``{(dataset, feature type): Setting}``.
    """
    from . import data
    from . import features as backbones

    settings = {}
    for d in datasets:
        if not (data.available(d, "train") and data.available(d, "test")):
            report.skip(d, f"no local copy of {d} under {config.data_root()} (see data/README.md)")
            continue
        split = protocols.get_split(d, protocol, seed, **split_sizes)
        for f in features[d]:
            t0 = time.perf_counter()
            if f == "pixels":
                images, labels, _ = protocols.load_pool(d)
                X = evaluation.as_vectors(images)
                del images
            else:  # pool order: training split, then test split
                parts = [backbones.dataset_features(d, s, f, backbone_size) for s in ("train", "test")]
                X = np.concatenate([p[0] for p in parts])
                labels = np.concatenate([p[1] for p in parts])
                spec = backbones.BACKBONES[f]
                report.source(f"{d}/{f}", f"{f}: {spec.layer}, {spec.feature_dim}-D, input "
                              f"{backbone_size} px, ImageNet weights from {spec.weights}")
            settings[(d, f)] = Setting(X, labels, split)
            report.protocol(split, prefix=f"{d}/{f}/")
            print(f"{d}/{f}: {X.shape[1]}-D features of {X.shape[0]} images "
                  f"({time.perf_counter() - t0:.1f} s)")
        report.source(d, data.load(d, "train").source)
        print(f"  protocol {split}; relevant = same class; metrics {', '.join(metric_keys)}")
        print(f"  data: {data.load(d, 'train').source}")
    if "cifar10" in datasets:
        print("note: the CIFAR-10 mirror here is re-encoded as JPEG; pixels differ slightly from the "
              "original python batches, so results are close to, not identical with, theirs.")
    return settings


def run_settings(report, settings: Mapping[tuple, Setting], methods: Sequence[str], bits: Sequence[int], *,
                 seed: int, params: Mapping[str, dict], metric_keys: Sequence[str] = METRICS) -> dict:
    """:func:`hashstudy.evaluation.run` on every setting; its metrics go into the report.

    Keys ``<dataset>/<features>/<method>/<bits>/<metric>``. Returns
    ``{(dataset, feature type): evaluation.Result}``.
    """
    results = {}
    for (d, f), s in settings.items():
        t0 = time.perf_counter()
        results[(d, f)] = evaluation.run(methods, bits, s.X, s.labels, s.split, seed=seed,
                                         metric_keys=metric_keys, params=params, progress=False)
        for key, value in results[(d, f)].metrics(f"{d}/{f}").items():
            report.add(key, value)
        print(f"{d}/{f}: {len(methods) * len(bits)} (method, bits) pairs in "
              f"{time.perf_counter() - t0:.0f} s")
    return results


def _split_methods(methods: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(unsupervised, supervised)`` methods of ``methods``, each in its order."""
    return ([m for m in methods if m not in baselines.SUPERVISED],
            [m for m in methods if m in baselines.SUPERVISED])


def method_table(result, metric: str, methods: Sequence[str]):
    """One metric as a method x bits table, the unsupervised methods first.

    Rows: a ``(labels, method)`` MultiIndex, ``labels`` being ``unsupervised``
    or ``supervised``; columns ``"<bits> bits"``.
    """
    import pandas as pd

    unsupervised, supervised = _split_methods(methods)
    table = result.table
    w = table[table.metric == metric].pivot(index="method", columns="bits", values="value")
    w = w.reindex(unsupervised + supervised)
    w.index = pd.MultiIndex.from_tuples(
        [("supervised" if m in supervised else "unsupervised", m) for m in w.index],
        names=["labels", "method"])
    w.columns = [f"{b} bits" for b in w.columns]
    return w


def report_tables(report, results: Mapping[tuple, object], settings: Mapping[tuple, Setting],
                  methods: Sequence[str], metric_keys: Sequence[str] = METRICS) -> list:
    """Write every setting's tables and return what the notebook shows of them.

    Tables ``<dataset>_<features>_<metric>`` (``@`` written ``_at_``) for each
    metric (:func:`method_table`) and ``<dataset>_<features>_fit_seconds``.
    Returns, per setting, a Markdown caption and a styled table of mAP@1000,
    mAP over the whole ranking and HD2P (best per column in bold), for
    ``IPython.display.display(*...)``.
    """
    import pandas as pd
    from IPython.display import Markdown

    shown = []
    for (d, f), result in results.items():
        for metric in metric_keys:
            report.table(f"{d}_{f}_{metric.replace('@', '_at_')}", method_table(result, metric, methods),
                         index=True)
        report.table(f"{d}_{f}_fit_seconds", result.wide("fit_seconds").reindex(methods), index=True)
        frame = pd.concat({m: method_table(result, m, methods) for m in _SHOWN}, axis=1)
        shown += [Markdown(f"**{d} / {f}** — {settings[(d, f)].split}"),
                  frame.style.format("{:.3f}").highlight_max(axis=0, props="font-weight: bold")]
    return shown


def itq_check(report, settings: Mapping[tuple, Setting], results: Mapping[tuple, object], *,
              methods: Sequence[str], bits: Sequence[int], seed: int, check_seeds: Sequence[int]):
    """ITQ against LSH and PCAH at 32 and 64 bits, over several hasher seeds.

    LSH and ITQ have random steps (the projections; ITQ's initial rotation),
    so the check re-runs those two with the ``check_seeds`` other than
    ``seed`` on the same split (seed ``seed`` comes from ``results``) and
    compares the worst ITQ run with the best LSH run on mAP@1000 and mAP over
    the whole ranking; PCAH is deterministic (its value is read from
    ``report.metrics``). Writes the table ``check_itq_vs_lsh_pcah``.

    Returns ``(checks, verdict)``: the table (one row per setting, bits and
    metric; empty when the run lacks itq, lsh or pcah or both code lengths)
    and one Markdown sentence.
    """
    import pandas as pd

    check_bits = [b for b in CHECK_BITS if b in bits]
    rows = []
    if {"itq", "lsh", "pcah"} <= set(methods) and check_bits:
        for (d, f), s in settings.items():
            spread = pd.concat([results[(d, f)].table.assign(seed=seed)] + [
                evaluation.run(["itq", "lsh"], check_bits, s.X, s.labels, s.split, seed=k,
                               metric_keys=["map@1000", "map_all"], progress=False).table.assign(seed=k)
                for k in check_seeds if k != seed])
            for b in check_bits:
                for metric in ("map@1000", "map_all"):
                    at = spread[(spread.bits == b) & (spread.metric == metric)]
                    itq, lsh = at[at.method == "itq"].value, at[at.method == "lsh"].value
                    pcah = report.metrics[f"{d}/{f}/pcah/{b}/{metric}"]
                    rows.append({"setting": f"{d}/{f}", "bits": b, "metric": metric,
                                 "seeds": len(itq), "itq_min": itq.min(), "itq_mean": itq.mean(),
                                 "itq_std": itq.std(ddof=0), "lsh_mean": lsh.mean(),
                                 "lsh_max": lsh.max(), "pcah": pcah,
                                 "itq_beats_both": bool(itq.min() > max(lsh.max(), pcah))})
    checks = pd.DataFrame(rows)
    if not len(checks):
        return checks, "The ITQ check needs itq, lsh and pcah among the methods and 32 or 64 among the bits."
    report.table("check_itq_vs_lsh_pcah", checks)
    lost = checks[~checks.itq_beats_both]
    if lost.empty:
        return checks, ("ITQ beats LSH and PCAH in every setting at "
                        f"{' and '.join(map(str, check_bits))} bits, on both mAP@1000 and mAP over the whole "
                        f"ranking, for every hasher seed in {sorted({seed, *check_seeds})}.")
    return checks, ("ITQ does **not** beat both LSH and PCAH in: " + "; ".join(
        f"{r.setting} {r.bits} bits {r.metric} (ITQ worst seed {r.itq_min:.3f}, "
        f"best LSH {r.lsh_max:.3f}, PCAH {r.pcah:.3f})" for r in lost.itertuples()) + ".")


def band_text(metrics: Mapping[str, float], settings: Mapping[tuple, Setting], profile: str) -> str:
    """Where ITQ's 32-bit mAP over the whole ranking on MNIST pixels falls against
    :data:`MNIST_ITQ32_BAND`, one Markdown sentence (the band applies to real MNIST, not to the
    smoke profile's synthetic digits)."""
    key = "mnist/pixels/itq/32/map_all"
    if key not in metrics:
        return "MNIST pixels with ITQ at 32 bits were not part of this run."
    ours = metrics[key]
    lo, hi = MNIST_ITQ32_BAND
    inside = lo <= ours <= hi
    split = settings[("mnist", "pixels")].split
    return (f"MNIST pixels, ITQ 32 bits: mAP over the whole ranking **{ours:.3f}** "
            f"({'inside' if inside else 'outside'} the reported band {lo:.2f}–{hi:.2f}); "
            f"protocol {split}. " + (
                "Ours uses the same query/database definition as those studies."
                if inside and profile != "smoke" else
                "The smoke profile runs on synthetic digits; the band applies to real MNIST."
                if profile == "smoke" else
                "See the protocol above: the band assumes 1,000 queries against the rest of "
                "the 70,000 images and pixels in [0, 1]."))


def paper_comparison(metrics: Mapping[str, float], feature_types: Sequence[str], backbone_size: int):
    """Our numbers beside the shallow baselines the DDH paper prints (Tables 2 and 4).

    :func:`hashstudy.reporting.compare_with_paper` with columns ``table``,
    ``method`` and ``bits`` read from each row, and one column
    ``ours (<features>)`` per other feature type of the run (``feature_types``),
    holding the same method and bits on those features (e.g. CIFAR-10 pixels).
    """
    from .reporting import compare_with_paper

    why = {"cifar10/efficientnet_lite0/": (
        f"Ours: EfficientNet-Lite0 pooled features (1280-D) of {backbone_size}-px upsampled "
        "JPEG-mirror images, query1k split; theirs: CNN-F fc7 (Table 4) or hand-crafted (Table 2) "
        "features, split not stated.")}
    comparison = compare_with_paper(metrics, "00_baselines", why=why)
    comparison.insert(1, "table", comparison.source.str.extract(r"(Table \d+)", expand=False))
    comparison.insert(2, "method", comparison.key.str.split("/").str[2])
    comparison.insert(3, "bits", comparison.key.str.split("/").str[3])
    for f in sorted(set(feature_types) - set(comparison.key.str.split("/").str[1])):
        comparison[f"ours ({f})"] = [
            metrics.get("/".join([k.split("/")[0], f, *k.split("/")[2:]]), np.nan) for k in comparison.key]
    return comparison


def paper_text(comparison) -> str:
    """What :func:`paper_comparison` shows, in Markdown: the range of the differences per table,
    whether ITQ ranks above LSH in both, and how the protocols differ."""
    measured = comparison.dropna(subset=["ours"])
    if not len(measured):
        return "No number printed in the papers matches a setting of this run."
    t4 = measured[measured.table == "Table 4"]
    t2 = measured[measured.table == "Table 2"]
    parts = []
    if len(t4):
        parts.append(
            f"Against Table 4 (shallow hashers on CNN-F features) our numbers differ by "
            f"{t4.difference.min():+.3f} to {t4.difference.max():+.3f} mAP@1000 "
            f"({len(t4)} comparisons).")
    if len(t2):
        parts.append(
            f"Against Table 2 (hand-crafted features) the differences are {t2.difference.min():+.3f} "
            f"to {t2.difference.max():+.3f} ({len(t2)} comparisons): mostly the gap between "
            "ImageNet CNN features and hand-crafted ones.")
    order_ok = []
    for tab in (t2, t4):
        for b in sorted(set(tab.bits)):
            at = tab[tab.bits == b].set_index("method")
            if {"itq", "lsh"} <= set(at.index):
                order_ok.append((at.loc["itq", "paper"] > at.loc["lsh", "paper"])
                                == (at.loc["itq", "ours"] > at.loc["lsh", "ours"]))
    if order_ok:
        parts.append(f"Whether ITQ ranks above LSH agrees between the paper and us in "
                     f"{sum(order_ok)} of {len(order_ok)} (table, bits) cases.")
    parts.append(
        "Protocol differences: (1) features — EfficientNet-Lite0 (1280-D, a 2019 mobile network "
        "with far better ImageNet accuracy than the 2014 CNN-F) instead of CNN-F fc7 or "
        "hand-crafted descriptors; CIFAR-10's 32-px images are upsampled to the backbone input; "
        "(2) data — our CIFAR-10 is a JPEG re-encoding of the original images; (3) split — ours is "
        "query1k (1,000 queries, 100 per class, from all 60,000 images, the rest as database, "
        "5,000 training images), theirs is not stated; (4) implementations — ours are the "
        "study's own re-implementations (`hashstudy.baselines`), theirs the authors' code; "
        "(5) code lengths — Table 4's 12 and 24 bits are not in our sweep.")
    return " ".join(parts)


def summary_lines(results: Mapping[tuple, object], *, methods: Sequence[str], bits: Sequence[int]) -> list[str]:
    """One Markdown line per setting and code length of :data:`CHECK_BITS`: the best unsupervised
    method by mAP over the whole ranking, with ITQ, LSH, PCAH and the supervised CCA-ITQ."""
    unsupervised, _ = _split_methods(methods)
    lines = []
    for (d, f), result in results.items():
        t = result.table[result.table.metric == "map_all"]
        for b in [b for b in CHECK_BITS if b in bits]:
            at = t[t.bits == b].set_index("method").value
            best = at.reindex(unsupervised).idxmax()
            lines.append(f"- **{d} / {f}, {b} bits**: best unsupervised method by mAP over the whole "
                         f"ranking is `{best}` ({at[best]:.3f}); ITQ {at.get('itq', float('nan')):.3f}, "
                         f"LSH {at.get('lsh', float('nan')):.3f}, PCAH {at.get('pcah', float('nan')):.3f}"
                         + (f"; supervised CCA-ITQ {at['cca_itq']:.3f}" if "cca_itq" in at else "") + ".")
    return lines
