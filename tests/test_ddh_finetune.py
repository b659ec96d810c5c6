"""hashstudy.ddh: DDH's fine-tuning modes, above all finetune="top" (Lite0's top block
stages trained with DDH's loss on cached stage-4 maps)."""
import numpy as np
import pytest
import torch

from hashstudy import cache, ddh, finetune
from test_features import FakeDataset, two_pattern_classes

SIZE = 64  # input side: 4 x 4 maps, fast on one thread


@pytest.fixture(scope="module")
def maps():
    images, labels = two_pattern_classes(16, 32, seed=0)
    ds = FakeDataset("patterns", "train", images, labels, ("check", "stripe"), "synthetic")
    return np.asarray(finetune.stage_maps(ds, input_size=SIZE, progress=False)), labels


def _top(**kw):
    params = dict(finetune="top", k1=3, k2=2, epochs=2, batch_size=8, optimizer="adam", warmup=1,
                  progress=False)
    return ddh.DDH(8, **{**params, **kw})


def test_top_fits_on_maps_trains_only_the_top_and_loads_from_the_cache(maps):
    X, _ = maps
    h = _top().fit(X)
    codes = h.encode(X)
    assert codes.shape == (len(X), 8) and codes.dtype == np.uint8 and set(np.unique(codes)) <= {0, 1}
    assert h.embed(X).shape == (len(X), 8)
    assert not h.from_cache_["weights"] and isinstance(h.model_.trunk, finetune.TopTrunk)
    assert h.model_.trunk.stages == 1 and h.model_.center.shape == (1280,)
    fresh = finetune.TopTrunk(1)
    trained = h.model_.trunk.state_dict()
    for name, value in fresh.state_dict().items():
        same = torch.equal(trained[name].cpu(), value)
        if name.startswith("frozen_blocks") or name.startswith("frozen_head"):
            assert same, f"frozen {name} changed"
    top_weights = [n for n, p in fresh.named_parameters() if n.startswith("top")]
    assert top_weights and any(not torch.equal(trained[n].cpu(), fresh.state_dict()[n])
                               for n in top_weights)
    again = _top().fit(X)
    assert again.from_cache_ == {"weights": True, "neighbors": True}
    np.testing.assert_array_equal(again.encode(X), codes)


def test_top_builds_the_neighbourhood_on_the_frozen_pooled_features(maps):
    X, _ = maps
    h = _top(epochs=0).fit(X)
    pooled = finetune.frozen_outputs(finetune.TopTrunk(0), X).numpy()
    S = ddh.neighborhood(pooled, 3, 2)
    assert (h.S_ != S).nnz == 0
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(h.model_.center.numpy(), unit.mean(0), atol=1e-5)


def test_top_with_early_stopping_and_two_stages(maps):
    X, y = maps
    h = _top(stages=2, holdout=6, patience=1, epochs=2, use_cache=False).fit(X, y)
    assert h.model_.trunk.stages == 2 and h.holdout_index_.size == 6
    assert "holdout_map@1000" in h.info_["logs"][0]
    assert h.encode(X[:5]).shape == (5, 8)


def test_top_refuses_images_and_feature_matrices(maps):
    images, _ = two_pattern_classes(4, 32, seed=1)
    with pytest.raises(ValueError, match="finetune='top'.*stage-4 maps.*finetune='whole'"):
        _top().fit(images)
    with pytest.raises(ValueError, match="finetune='top'"):
        _top().fit(np.random.default_rng(0).normal(size=(20, 1280)).astype(np.float32))
    h = _top(epochs=0).fit(maps[0])
    with pytest.raises(ValueError, match="stage-4 maps"):
        h.encode(images)


def test_finetune_values_map_and_unknown_ones_are_refused():
    assert ddh.DDH(8).finetune == "none" and ddh.DDH(8, finetune=False).finetune == "none"
    assert ddh.DDH(8, finetune=True).finetune == "whole"
    assert ddh.DDH(8, finetune="whole").finetune == "whole"
    with pytest.raises(ValueError, match="'none', 'top', 'whole'"):
        ddh.DDH(8, finetune="partial")
    with pytest.raises(ValueError, match="init"):
        ddh.DDH(8, finetune="top", init="itq")
    with pytest.raises(ValueError, match="backbone"):
        ddh.DDH(8, finetune="top", backbone="resnet50")
    with pytest.raises(ValueError, match="stages"):
        ddh.DDH(8, finetune="top", stages=3)
    assert ddh.finetune_mode(np.bool_(True)) == "whole"


def test_cache_keys_of_existing_settings_are_unchanged():
    """Weights cached before finetune took strings (and before ``stages``) keep their key."""
    for value, as_bool in ((False, False), ("none", False), (True, True), ("whole", True)):
        h = ddh.DDH(16, finetune=value, stages=2)
        expected = {k: v for k, v in h.get_params().items()
                    if k not in ("use_cache", "progress", "device", "stages")}
        expected["finetune"] = as_bool
        if expected["warmup"] == 0:
            del expected["warmup"]
        if expected["holdout"] == 0:
            del expected["holdout"], expected["patience"]
        assert h._key_params() == expected
    # the key of a default DDH as computed before this change (hashstudy 04's cached weights)
    default = cache.key({"version": ddh._VERSION, "params": ddh.DDH(16)._key_params()})
    assert default == "09ad7f44ea26fda1"
    top1, top2 = (ddh.DDH(16, finetune="top", stages=s)._key_params() for s in (1, 2))
    assert top1["finetune"] == "top" and top1["stages"] == 1 and "top" in top1
    assert top1 != top2


def test_notebook_helpers_know_the_modes():
    params = dict(epochs=3, hidden=[], init="random", warmup=1, holdout=0, patience=3)
    assert list(ddh.model_variants({**params, "finetune": "top"}, 2)) == ["ddh_epoch0", "ddh"]
    assert "ddh_itq_init" in ddh.model_variants({**params, "finetune": "none"}, 2)
    assert ddh.default_backbone("top") == "efficientnet_lite0"
    assert ddh.pool_inputs("cifar10", "none", 64) is None
