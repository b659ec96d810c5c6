"""hashstudy.finetune: cached stage-4 maps of Lite0, its fine-tuned top, the accuracy curve,
and the latent-layer CNN trained on the maps."""
import numpy as np
import pytest
import torch

from hashstudy import cache, features, finetune, latent
from test_features import FakeDataset, two_pattern_classes

SIZE = 64  # input side: 4 x 4 maps, fast on one thread


@pytest.fixture(scope="module")
def patterns():
    images, labels = two_pattern_classes(24, 32, seed=0)
    return images, labels


def _ds(images, labels, split="train"):
    return FakeDataset("patterns", split, images, labels, ("check", "stripe"), "synthetic")


def test_stage_maps_are_the_frozen_bottom_cached_in_half_precision(patterns):
    images, labels = patterns
    maps = finetune.stage_maps(_ds(images, labels), input_size=SIZE, progress=False)
    assert maps.shape == (len(images), 112, 4, 4) and maps.dtype == np.float16
    bb = finetune._bottom()
    with torch.no_grad():
        ref = bb.module(features.preprocess(images[:8], SIZE, bb.mean, bb.std)).numpy()
    assert np.allclose(maps[:8], ref, atol=2e-2 * np.abs(ref).max())
    path = finetune.maps_cache_path(_ds(images, labels), SIZE)
    assert path.exists() and path.parent.name == "finetune"
    mirrored = finetune.stage_maps(_ds(images, labels), input_size=SIZE, mirror=True,
                                   progress=False)
    assert finetune.maps_cache_path(_ds(images, labels), SIZE, mirror=True) != path
    assert not np.allclose(mirrored, maps)


def test_stage_maps_load_from_disk_and_rebuild_damaged_files(patterns, monkeypatch):
    images, labels = patterns
    ds = _ds(images, labels)
    first = np.array(finetune.stage_maps(ds, input_size=SIZE, progress=False))  # a copy
    calls = []
    real = features.preprocess
    monkeypatch.setattr(features, "preprocess", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = finetune.stage_maps(ds, input_size=SIZE, progress=False)
    assert not calls and np.array_equal(again, first)
    path = finetune.maps_cache_path(ds, SIZE)
    with cache.atomic_path(path) as tmp:  # a file of the wrong shape (not the mapped inode)
        np.save(tmp, np.zeros((3, 112, 4, 4), np.float16))
    rebuilt = finetune.stage_maps(ds, input_size=SIZE, progress=False)
    assert calls and np.array_equal(rebuilt, first)


def test_interrupted_extraction_leaves_no_file(patterns, monkeypatch):
    images, labels = patterns
    ds = _ds(images[:20], labels[:20], split="test")
    real, seen = features.preprocess, []

    def fail_second(*a, **k):
        seen.append(1)
        if len(seen) > 2:  # the first batch runs twice (ONNX Runtime checked against torch)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(features, "preprocess", fail_second)
    with pytest.raises(KeyboardInterrupt):
        finetune.stage_maps(ds, input_size=SIZE, batch_size=8, progress=False)
    path = finetune.maps_cache_path(ds, SIZE)
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.suffix == ".npy"]


def test_frozen_top_reproduces_the_frozen_backbone(patterns):
    """stages=0 is the frozen Lite0: its pooled output from the cached maps equals the
    features of hashstudy.features (up to the half precision of the maps)."""
    images, labels = patterns
    maps = finetune.stage_maps(_ds(images, labels), input_size=SIZE, progress=False)
    pooled = finetune.frozen_outputs(finetune.TopTrunk(0), maps).numpy()
    direct = features.extract(images, "efficientnet_lite0", SIZE, progress=False,
                              runtime="torch")
    cos = np.sum(pooled * direct, 1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(direct, axis=1)
    assert cos.min() > 0.995


def test_stages_set_what_is_trained():
    counts = []
    for s in (0, 1, 2):
        net = finetune.TopNet(s, n_classes=3)
        counts.append(sum(p.numel() for p in net.parameters() if p.requires_grad))
        frozen = [p for p in net.trunk.frozen_blocks.parameters()] + \
                 [p for p in net.trunk.frozen_head.parameters()]
        assert not any(p.requires_grad for p in frozen)
        net.train()
        assert not net.trunk.frozen_blocks.training and net.trunk.top.training
    assert counts[0] == 1280 * 3 + 3 and counts[0] < counts[1] < counts[2]
    for bad in (-1, 3, 1.5, True):
        with pytest.raises(ValueError, match="stages must be 0, 1 or 2"):
            finetune.TopNet(bad, n_classes=2)


def test_finetune_learns_caches_and_leaves_the_frozen_part_alone(patterns):
    images, labels = patterns
    maps = np.asarray(finetune.stage_maps(_ds(images, labels), input_size=SIZE, progress=False))
    frozen_before = {k: v.clone() for k, v in finetune.TopNet(1, 2).trunk.frozen_blocks
                     .state_dict().items()}
    fitted = finetune.finetune(maps, labels, stages=1, epochs=4, batch_size=8, lr=1e-3,
                               seed=0, progress=False)
    assert not fitted.loaded and fitted.info["loss"][-1] < fitted.info["loss"][0]
    assert fitted.accuracy(maps, labels) >= 0.9
    after = fitted.model.trunk.frozen_blocks.state_dict()
    assert all(torch.equal(frozen_before[k], after[k]) for k in frozen_before)
    feats = fitted.features(maps)
    assert feats.shape == (len(maps), 1280) and feats.dtype == np.float32
    again = finetune.finetune(maps, labels, stages=1, epochs=4, batch_size=8, lr=1e-3, seed=0,
                              progress=False)
    assert again.loaded and np.array_equal(again.features(maps), feats)
    other = finetune.finetune(maps, labels, stages=1, epochs=4, batch_size=8, lr=1e-3, seed=1,
                              progress=False)
    assert not other.loaded


def test_eval_accuracy_is_logged_per_epoch_and_mirrors_are_used(patterns):
    images, labels = patterns
    ds = _ds(images, labels)
    maps = np.asarray(finetune.stage_maps(ds, input_size=SIZE, progress=False))
    mirrored = np.asarray(finetune.stage_maps(ds, input_size=SIZE, mirror=True, progress=False))
    fitted = finetune.finetune(maps[:32], labels[:32], stages=0, epochs=3, batch_size=8,
                               mirror_maps=mirrored[:32], eval_maps=maps[32:],
                               eval_labels=labels[32:], seed=0, progress=False)
    acc = fitted.info["eval_accuracy"]
    assert len(acc) == 3 and all(0 <= a <= 1 for a in acc)
    assert fitted.settings["mirror"]
    with pytest.raises(ValueError, match="mirror_maps has shape"):
        finetune.finetune(maps[:32], labels[:32], mirror_maps=mirrored[:31], progress=False)
    with pytest.raises(ValueError, match="stage-4 maps"):
        finetune.finetune(maps[:32, :50], labels[:32], progress=False)


def test_train_subset_is_stratified_seeded_and_sorted():
    labels = np.repeat(np.arange(4), [30, 30, 30, 10])
    idx = finetune.train_subset(labels, 40, seed=0)
    assert len(idx) == 40 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(idx, finetune.train_subset(labels, 40, seed=0))
    assert not np.array_equal(idx, finetune.train_subset(labels, 40, seed=1))
    assert np.array_equal(finetune.train_subset(labels, None), np.arange(100))
    assert np.array_equal(finetune.train_subset(labels, 500), np.arange(100))
    with pytest.raises(ValueError, match="positive"):
        finetune.train_subset(labels, 0)


def test_curve_points_cover_every_axis_once():
    sizes = finetune.PROFILE_SIZES["quick"]
    points = finetune.curve_points(sizes)
    main = sizes["main"]
    assert points[0] == main
    keys = [(p["input_size"], p["stages"], p["n_train"]) for p in points]
    assert len(keys) == len(set(keys))
    n_px = sizes["n_train_input_size"]
    for n in sizes["n_train"]:  # training-set sizes with the main stages
        assert (n_px, main["stages"], n) in keys
    for px, st in sizes["stages"]:  # the stages axis, on one training set
        assert (px, st, sizes["stages_n_train"]) in keys
    for px in sizes["input_sizes"]:
        assert (px, main["stages"], main["n_train"]) in keys
    assert {st for _, st in sizes["stages"]} == {0, 1, 2}
    assert len(keys) == len({(main["input_size"], main["stages"], main["n_train"]),
                             *[(n_px, main["stages"], n) for n in sizes["n_train"]],
                             *[(px, st, sizes["stages_n_train"]) for px, st in sizes["stages"]],
                             *[(px, main["stages"], main["n_train"])
                               for px in sizes["input_sizes"]]})


def test_report_curve_writes_final_points_and_the_main_point(tmp_path):
    import pandas as pd

    from hashstudy.reporting import Report

    sizes = {"main": {"input_size": 64, "stages": 1, "n_train": 100}, "epochs": 2,
             "stages_n_train": 100}
    curve = pd.DataFrame([
        dict(input_size=64, stages=1, n_train=100, epoch=1, test_accuracy=0.5, train_loss=1.0,
             train_seconds=3.0, frozen_seconds=1.0, loaded=False),
        dict(input_size=64, stages=1, n_train=100, epoch=2, test_accuracy=0.9, train_loss=0.5,
             train_seconds=3.0, frozen_seconds=1.0, loaded=False),
        dict(input_size=64, stages=0, n_train=100, epoch=1, test_accuracy=0.6, train_loss=1.0,
             train_seconds=1.0, frozen_seconds=1.0, loaded=False),
        dict(input_size=64, stages=0, n_train=100, epoch=2, test_accuracy=0.7, train_loss=0.9,
             train_seconds=1.0, frozen_seconds=1.0, loaded=False)])
    report = Report("07_finetuned_backbone", "smoke")
    final = finetune.report_curve(report, curve, dataset="d", sizes=sizes)
    assert len(final) == 2 and set(final.epoch) == {2}
    m = report.metrics
    assert m["d/main/test_accuracy"] == 0.9 and m["d/reaches_target"] == 1.0
    assert m["d/frozen/test_accuracy"] == 0.7 and m["d/64px/stages1/n100/epochs"] == 2
    text = finetune.curve_text(final, dataset="d", sizes=sizes)
    assert "0.900" in text and "reaches" in text


def test_latent_hasher_trains_lite0_top_on_maps(patterns):
    images, labels = patterns
    maps = np.asarray(finetune.stage_maps(_ds(images, labels), input_size=SIZE, progress=False))
    h = latent.LatentHasher(8, trunk=finetune.BACKBONE, stages=1, input_size=SIZE, epochs=3,
                            batch_size=8, fc7_dim=16, dropout=0.0, seed=0, progress=False,
                            device="cpu")
    h.fit(maps, labels)
    codes = h.encode(maps)
    assert codes.shape == (len(maps), 8) and set(np.unique(codes)) <= {0, 1}
    assert "block stage 6" in h.describe()
    trained = h.model_.trunk.top
    fresh = finetune.TopTrunk(1).top
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                      fresh.state_dict().values()))
    with pytest.raises(ValueError, match="stage-4 maps"):
        h.fit(images, labels)
    again = latent.LatentHasher(8, trunk=finetune.BACKBONE, stages=1, input_size=SIZE, epochs=3,
                                batch_size=8, fc7_dim=16, dropout=0.0, seed=0, progress=False,
                                device="cpu").fit(maps, labels)
    assert again.loaded_ and np.array_equal(again.encode(maps), codes)
    other = latent.LatentHasher(8, trunk=finetune.BACKBONE, stages=0, input_size=SIZE, epochs=3,
                                batch_size=8, fc7_dim=16, dropout=0.0, seed=0, progress=False,
                                device="cpu").fit(maps, labels)
    assert not other.loaded_


def test_finetune_mode_reads_booleans_and_names():
    assert latent.finetune_mode(False) == "none" and latent.finetune_mode(True) == "whole"
    assert latent.finetune_mode("top") == "top"
    with pytest.raises(ValueError, match="top"):
        latent.finetune_mode("partial")


def test_maps_cache_key_tracks_content_and_size(patterns):
    images, labels = patterns
    a = finetune.maps_cache_path(_ds(images, labels), 64)
    assert a != finetune.maps_cache_path(_ds(images, labels), 96)
    changed = images.copy()
    changed[0] = 255 - changed[0]
    assert a != finetune.maps_cache_path(_ds(changed, labels), 64)
    assert cache.key("x") != a.stem
