"""Notebook 05 with the fine-tuned backbone (hashstudy.finetune): pool rows of a setting,
Table II's fine-tuned row and the with-labels features."""
import dataclasses

import numpy as np
import pytest

from hashstudy import data, finetune
from hashstudy import dsth_journal as dj
from hashstudy.reporting import Report
from test_dsth_journal import _PLAN, _root, _small_plan, fake_backbone  # noqa: F401

FT = {"input_size": 64, "stages": 1, "epochs": 1}  # 4 x 4 maps, one epoch


def _pool(dataset):
    parts = [data.load(dataset, s) for s in ("train", "test")]
    return (np.concatenate([p.images for p in parts]),
            np.concatenate([p.labels for p in parts]))


def _plan(**changes):
    p = _small_plan()
    return dataclasses.replace(p, size={**p.size, "finetune": FT}, **changes)


def test_pool_rows_map_setting_rows_onto_the_pool(tmp_path, fake_backbone):  # noqa: F811
    _root(tmp_path)
    for dataset in ("cifar100", "cifar100-coarse"):
        s = dj.load_setting(dataset, ["b1"], query_per_class=1, n_train=60)
        images, labels = _pool(dataset)
        assert s.pool_rows.dtype == np.int64 and s.pool_rows.shape == s.labels.shape
        np.testing.assert_array_equal(labels[s.pool_rows], s.labels)
        np.testing.assert_array_equal(images[s.pool_rows], s.images)
        # the twin's pool holds the same images at the same rows
        twin_images, _ = _pool(dj._pool_dataset(dataset))
        np.testing.assert_array_equal(twin_images[s.pool_rows], s.images)
        assert dj.can_finetune(s)


def test_label_features_is_a_checked_choice():
    p = dj.plan("smoke", **_PLAN)
    assert p.label_features == "finetuned_backbone" and p.label_source == "finetuned_backbone"
    assert p.size["finetune"] == {"input_size": 64, "stages": 1, "epochs": 1}
    assert p.parameters(1)["label_features"] == "finetuned_backbone"
    assert dj.plan("smoke", **_PLAN, label_features="feature_head").label_source == \
        "feature_head"
    assert _small_plan().label_source == "feature_head"  # no finetune size: the head
    with pytest.raises(ValueError, match="'finetuned_backbone', 'feature_head'"):
        dj.plan("smoke", **_PLAN, label_features="finetuned")
    assert all("finetune" in size for size in dj.PROFILE_SIZES.values())


def test_table_ii_fine_tuned_row_and_with_labels_share_one_network(tmp_path, fake_backbone,  # noqa: F811
                                                                    monkeypatch):
    _root(tmp_path)
    p, d = _plan(), "cifar100-coarse"
    report = Report("05_test", "smoke")
    s = dj.load_for_report(report, p, d)
    loaded, real = [], finetune.finetune

    def spy(*a, **k):
        fitted = real(*a, **k)
        loaded.append(fitted.loaded)
        return fitted

    monkeypatch.setattr(finetune, "finetune", spy)
    t2 = dj.table_ii(report, s, p)
    assert list(t2.index) == [p.name(b) for b in p.backbones] + [
        "Lite0 fine-tuned (top stage)", "simplenet"]
    key = f"{d}/classification/efficientnet_lite0_ft/accuracy"
    assert 0 <= report.metrics[key] <= 1
    assert t2.loc["Lite0 fine-tuned (top stage)", "ours"] == report.metrics[key]
    assert report.meta["sources"][finetune.BACKBONE].startswith("efficientnet_lite0_ft: ")
    assert loaded == [False]

    def no_head(*a, **k):
        raise AssertionError("the head on frozen features must not run")

    monkeypatch.setattr(dj, "finetuned_features", no_head)
    _, table_iv, _, quality = dj.with_labels(report, s, p)
    assert loaded == [False, True]  # Table II's network, from the cache
    feats = s.features[finetune.BACKBONE]
    assert feats.shape == (len(s.labels), 1280) and feats.dtype == np.float32
    assert list(quality.index) == p.backbones + ["with labels"]
    expected = dj.label_quality(s, feats[s.split.train], p.bits, k=p.k, seed=p.seed)
    assert quality.loc["with labels", "knn_precision"] == expected["knn_precision"]
    assert np.isfinite(table_iv.loc["with labels", ("ours", "max_f@0.5")])


def test_feature_head_choice_keeps_the_head(tmp_path, fake_backbone, monkeypatch):  # noqa: F811
    _root(tmp_path)
    p, d = _plan(label_features="feature_head"), "cifar100-coarse"
    report = Report("05_test", "smoke")
    s = dj.load_for_report(report, p, d)

    def no_backbone(*a, **k):
        raise AssertionError("the fine-tuned backbone must not run")

    monkeypatch.setattr(dj, "finetuned_backbone_features", no_backbone)
    calls, real = [], dj.finetuned_features
    monkeypatch.setattr(dj, "finetuned_features",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    dj.with_labels(report, s, p)
    assert calls and finetune.BACKBONE not in s.features
    assert f"{d}/efficientnet_lite0/slice_batchnorm_labels/16/max_f@0.5" in report.metrics
