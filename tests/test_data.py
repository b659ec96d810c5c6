"""Dataset loaders and the synthetic on-disk datasets they are tested on."""
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashstudy import cache, config, data, synthetic
from hashstudy.data import CorruptDatasetError, DatasetNotFoundError


@pytest.fixture
def root():
    return config.data_root()


@pytest.fixture
def registry():
    """Register datasets inside a test; whatever it registers is forgotten afterwards."""
    before = set(data.names())
    yield data.register_imagefolder
    for name in set(data.names()) - before:
        data.unregister(name)


def cache_files():
    """Files in the dataset cache, temporary ones included, lock files left out."""
    return sorted(p.name for p in config.cache_dir("datasets").iterdir()
                  if not p.name.endswith(".lock"))


# --------------------------------------------------------------------------- #
# Round trips through every writer and loader
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_round_trip(root, compress):
    written = synthetic.write_mnist_idx(root, n_train=40, n_test=20, seed=3, compress=compress)
    raw = root / "MNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte.gz").exists() == compress
    for split in ("train", "test"):
        ds = data.load("mnist", split)
        assert ds.images.dtype == np.uint8 and ds.images.shape == (len(ds), 28, 28, 1)
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.images, written[split]["images"])
        np.testing.assert_array_equal(ds.labels, written[split]["labels"])
        assert ds.classes == tuple("0123456789")
        assert str(raw) in ds.source and "IDX" in ds.source
    assert len(data.load("mnist", "train")) == 40 and len(data.load("mnist", "test")) == 20


def test_mnist_idx_header_is_the_original_layout(root):
    written = synthetic.write_mnist_idx(root, n_train=7, n_test=3, seed=0)
    raw = (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    assert struct.unpack(">4I", raw[:16]) == (2051, 3, 28, 28)
    assert raw[16:16 + 28 * 28] == written["test"]["images"][0, :, :, 0].tobytes()
    labels = (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    assert struct.unpack(">2I", labels[:8]) == (2049, 3)
    assert list(labels[8:]) == written["test"]["labels"].tolist()


def test_cifar10_round_trip(root):
    written = synthetic.write_cifar10_batches(root, n_train=23, n_test=9, seed=1)
    for split in ("train", "test"):
        ds = data.load("cifar10", split)
        assert ds.images.shape == (len(written[split]["labels"]), 32, 32, 3)
        np.testing.assert_array_equal(ds.images, written[split]["images"])
        np.testing.assert_array_equal(ds.labels, written[split]["labels"])
        assert ds.classes == data.CLASSES["cifar10"]
        assert "python batches" in ds.source and str(root / "cifar-10-batches-py") in ds.source


def test_cifar_rows_are_rgb_planes_row_major(root):
    written = synthetic.write_cifar10_batches(root, n_train=5, n_test=2, seed=0)
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    row, img = batch[b"data"][1], written["test"]["images"][1]
    assert batch[b"data"].shape == (2, 3072) and batch[b"data"].dtype == np.uint8
    assert row[0] == img[0, 0, 0] and row[1] == img[0, 1, 0] and row[32] == img[1, 0, 0]
    assert row[1024] == img[0, 0, 1] and row[2048 + 33] == img[1, 1, 2]


def test_cifar100_fine_and_coarse(root):
    written = synthetic.write_cifar100_batches(root, n_train=300, n_test=100, seed=2)
    fine, coarse = data.load("cifar100", "train"), data.load("cifar100-coarse", "train")
    np.testing.assert_array_equal(fine.images, written["train"]["images"])
    np.testing.assert_array_equal(coarse.images, fine.images)
    np.testing.assert_array_equal(fine.labels, written["train"]["labels"])
    np.testing.assert_array_equal(coarse.labels, written["train"]["coarse_labels"])
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.classes == data.CLASSES["cifar100"] and coarse.classes[0] == "aquatic_mammals"
    # the real hierarchy: every fine class sits in exactly one coarse class
    np.testing.assert_array_equal(coarse.labels, data.CIFAR100_COARSE_OF_FINE[fine.labels])
    assert coarse.classes[data.CIFAR100_COARSE_OF_FINE[fine.classes.index("whale")]] \
        == "aquatic_mammals"
    assert coarse.classes[data.CIFAR100_COARSE_OF_FINE[fine.classes.index("tractor")]] \
        == "vehicles_2"
    assert np.bincount(data.CIFAR100_COARSE_OF_FINE).tolist() == [5] * 20
    assert "coarse" in coarse.source and "fine" in fine.source


def test_stl10_round_trip(root):
    written = synthetic.write_stl10_binary(root, n_train=12, n_test=6, n_unlabeled=4, seed=5)
    for split in ("train", "test", "unlabeled"):
        ds = data.load("stl10", split)
        assert ds.images.shape == (len(written[split]["labels"]), 96, 96, 3)
        np.testing.assert_array_equal(ds.images, written[split]["images"])
        np.testing.assert_array_equal(ds.labels, written[split]["labels"])
        assert ds.classes == data.CLASSES["stl10"]
    assert (data.load("stl10", "unlabeled").labels == -1).all()
    assert set(data.load("stl10", "train").labels) <= set(range(10))


def test_stl10_orientation_matches_the_official_column_major_files(root):
    """A file encoded as the official reader expects must come back the right way up."""
    img = np.zeros((96, 96, 3), dtype=np.uint8)
    img[:10, :, 0] = 255          # red band along the top
    img[:, :5, 1] = 200           # green band down the left edge
    img[90:, 80:, 2] = 77         # blue block bottom right
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    # official layout: per image, channel planes, each stored column by column
    planes = [img[:, :, c].T.tobytes() for c in range(3)]   # .T: columns become rows
    (base / "train_X.bin").write_bytes(b"".join(planes))
    (base / "train_y.bin").write_bytes(bytes([3]))
    (base / "class_names.txt").write_text("\n".join(data.CLASSES["stl10"]) + "\n")
    ds = data.load("stl10", "train")
    np.testing.assert_array_equal(ds.images[0], img)
    assert ds.labels.tolist() == [2]
    # and the writer lays out bytes the same way: byte (c, col, row)
    written = synthetic.write_stl10_binary(root / "w", n_train=2, n_test=1, n_unlabeled=0)
    raw = np.fromfile(root / "w" / "stl10_binary" / "train_X.bin", dtype=np.uint8)
    x = written["train"]["images"]
    row, column, channel = 7, 50, 2
    assert raw[96 * 96 * 3 + (channel * 96 + column) * 96 + row] == x[1, row, column, channel]
    assert not (root / "w" / "stl10_binary" / "unlabeled_X.bin").exists()


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_registered_imagefolder_round_trip(root, registry, ext):
    classes = ["tulip", "daisy", "iris"]
    written = synthetic.write_imagefolder(root / "flowers" / "train", classes, 4, size=(20, 24),
                                          channels=3, seed=0, ext=ext)
    synthetic.write_imagefolder(root / "flowers" / "test", classes, 2, size=(20, 24), seed=1,
                                ext=ext)
    registry("flowers17", "flowers", title="Oxford-17 Flowers")
    assert "flowers17" in data.names()
    ds = data.load("flowers17", "train")
    assert ds.classes == ("daisy", "iris", "tulip")             # sorted folder names
    assert ds.images.shape == (12, 20, 24, 3)
    np.testing.assert_array_equal(ds.labels, written["labels"])
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    diff = np.abs(ds.images.astype(int) - written["images"]).mean()
    if ext == "png":
        assert diff == 0
    else:   # JPEG drops the pixel noise but keeps each image's content in place
        assert 0 < diff < 15

        def block_means(x):  # 4x4 blocks of 5x6 pixels
            return x.reshape(12, 4, 5, 4, 6, 3).mean(axis=(2, 4))

        assert np.abs(block_means(ds.images) - block_means(written["images"])).max() < 12
    assert ds.source.startswith("Oxford-17 Flowers, train split")
    assert str(root / "flowers" / "train") in ds.source
    assert ("JPEG" if ext == "jpg" else "PNG") in ds.source
    assert len(data.load("flowers17", "test")) == 6


def test_imagefolder_files_sorted_by_name_and_gray_kept_gray(root, registry):
    split = root / "digits" / "train"
    for cls, names in {"b": ["10.png", "02.png"], "a": ["x.png"]}.items():
        (split / cls).mkdir(parents=True)
        for name in names:
            value = int(name[:2]) if name[0].isdigit() else 99
            Image.fromarray(np.full((5, 6), value, np.uint8)).save(split / cls / name)
    (split / "a" / "notes.txt").write_text("not an image")
    registry("digits", root / "digits")
    ds = data.load("digits")
    assert ds.images.shape == (3, 5, 6, 1)
    assert ds.images[:, 0, 0, 0].tolist() == [99, 2, 10]
    assert ds.labels.tolist() == [0, 1, 1]


def test_imagefolder_mixed_gray_and_rgb_promotes_gray(root, registry):
    split = root / "mixed" / "train" / "only"
    split.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 50, np.uint8)).save(split / "a.png")
    Image.fromarray(np.full((4, 4, 3), (1, 2, 3), np.uint8)).save(split / "b.png")
    registry("mixed", root / "mixed")
    ds = data.load("mixed")
    assert ds.images.shape == (2, 4, 4, 3)
    assert ds.images[0, 0, 0].tolist() == [50, 50, 50] and ds.images[1, 0, 0].tolist() == [1, 2, 3]
    registry("mixed-gray", root / "mixed", channels=1)
    assert data.load("mixed-gray").images.shape == (2, 4, 4, 1)


def test_imagefolder_size_mismatch_is_an_error_unless_resized(root, registry):
    split = root / "sizes" / "train" / "c"
    split.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(split / "a.png")
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(split / "b.png")
    registry("sizes", root / "sizes")
    with pytest.raises(CorruptDatasetError, match=r"b\.png.*8x9.*a\.png.*8x8.*size="):
        data.load("sizes")
    registry("sizes-resized", root / "sizes", size=6)
    ds = data.load("sizes-resized")
    assert ds.images.shape == (2, 6, 6, 3) and "resized to 6x6" in ds.source


def test_imagefolder_alpha_channel_is_rejected(root, registry):
    split = root / "alpha" / "train" / "c"
    split.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(split / "a.png")
    registry("alpha", root / "alpha")
    with pytest.raises(CorruptDatasetError, match=r"a\.png.*'RGBA'"):
        data.load("alpha")


def test_register_validates_and_unregisters(registry):
    with pytest.raises(ValueError, match="built-in"):
        registry("cifar10", "x")
    with pytest.raises(ValueError, match="not allowed"):
        registry("../up", "x")
    with pytest.raises(ValueError, match="size"):
        registry("ok", "x", size=(0, 3))
    with pytest.raises(ValueError, match="channels"):
        registry("ok", "x", channels=2)
    registry("gone", "x")
    data.unregister("gone")
    assert "gone" not in data.names()
    with pytest.raises(KeyError, match="gone"):
        data.unregister("gone")


def test_registered_missing_folder_error(root, registry):
    registry("absent", "nowhere")
    assert not data.available("absent")
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("absent", "test")
    msg = str(err.value)
    assert "'absent'" in msg and str(root / "nowhere" / "test") in msg and "HASHSTUDY_DATA" in msg


# --------------------------------------------------------------------------- #
# Sources and their order
# --------------------------------------------------------------------------- #


def test_original_files_are_preferred_over_the_mirror(root):
    written = synthetic.write_cifar10_batches(root, n_train=10, n_test=5, seed=0)
    synthetic.write_imagefolder(root / "cifar10-jpeg" / "train", data.CLASSES["cifar10"], 1,
                                seed=9, ext="jpg")
    ds = data.load("cifar10", "train")
    assert "python batches" in ds.source
    np.testing.assert_array_equal(ds.images, written["train"]["images"])
    for f in (root / "cifar-10-batches-py").iterdir():
        f.unlink()
    mirror = data.load("cifar10", "train")
    assert len(mirror) == 10 and "JPEG ImageFolder mirror" in mirror.source
    assert str(root / "cifar10-jpeg" / "train") in mirror.source
    assert "pixels differ slightly" in mirror.source


def test_mirror_serves_cifar100_coarse_and_checks_class_names(root):
    written = synthetic.write_imagefolder(root / "cifar100-png" / "test",
                                          data.CLASSES["cifar100"], 1, seed=0)
    fine, coarse = data.load("cifar100", "test"), data.load("cifar100-coarse", "test")
    np.testing.assert_array_equal(fine.images, written["images"])
    np.testing.assert_array_equal(fine.labels, np.arange(100))
    np.testing.assert_array_equal(coarse.labels, data.CIFAR100_COARSE_OF_FINE)
    assert coarse.classes == data.CLASSES["cifar100-coarse"]
    assert "PNG ImageFolder mirror" in fine.source and "pixels differ" not in fine.source
    synthetic.write_imagefolder(root / "mnist-png" / "train", ["0", "1", "seven"], 1, size=28,
                                channels=1)
    with pytest.raises(CorruptDatasetError, match=r"missing: \['2'.*unexpected: \['seven'\]"):
        data.load("mnist", "train")


def test_available(root):
    assert not data.available("mnist", "train")
    synthetic.write_mnist_idx(root, n_train=10, n_test=0)
    assert data.available("mnist", "train") and data.available("mnist", "test")
    assert not data.available("cifar10", "test")
    synthetic.write_imagefolder(root / "cifar10-jpeg" / "test", data.CLASSES["cifar10"], 1,
                                ext="jpg")
    assert data.available("cifar10", "test") and not data.available("cifar10", "train")
    assert data.available("mnist", root=root) and not data.available("mnist", root=root / "x")
    with pytest.raises(ValueError, match="known datasets"):
        data.available("imagenet")


def test_missing_data_error_says_what_where_and_how(root):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("cifar10", "train")
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert "'cifar10'" in msg and "'train'" in msg
    assert str(root / "cifar-10-batches-py" / "data_batch_1") in msg
    assert str(root / "cifar10-jpeg" / "train") in msg and str(root / "cifar10-png") in msg
    assert "HASHSTUDY_DATA" in msg and "cifar-10-python.tar.gz" in msg
    assert "torchvision" in msg and "download" in msg
    with pytest.raises(DatasetNotFoundError, match=r"train-images-idx3-ubyte or .*ubyte\.gz"):
        data.load("mnist")


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="known datasets: mnist, cifar10, cifar100"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unlabeled"):
        data.load("stl10", "validation")
    with pytest.raises(ValueError, match="'test'"):
        data.load("mnist", "unlabeled")


def test_download_is_skipped_when_disabled_and_used_when_allowed(root, monkeypatch):
    calls = []

    def fake_download(name, where):
        calls.append((name, where))
        synthetic.write_mnist_idx(where, n_train=6, n_test=2, compress=True)

    monkeypatch.setattr(data, "_download", fake_download)
    with pytest.raises(DatasetNotFoundError, match="skipped"):
        data.load("mnist")                       # HASHSTUDY_DOWNLOAD=0 (conftest)
    assert calls == []
    ds = data.load("mnist", download=True)
    assert calls == [("mnist", root)] and len(ds) == 6
    monkeypatch.setattr(data, "_download", lambda name, where: "no route to host")
    with pytest.raises(DatasetNotFoundError, match="failed: no route to host"):
        data.load("stl10", root=root / "empty", download=True)


# --------------------------------------------------------------------------- #
# The decode cache
# --------------------------------------------------------------------------- #


def _small_folder(root, registry, name="small"):
    written = synthetic.write_imagefolder(root / name / "train", ["a", "b"], 3, size=8, seed=0)
    registry(name, root / name)
    return written


def test_second_load_is_a_cache_hit(root, registry, monkeypatch):
    written = _small_folder(root, registry)
    first = data.load("small")
    assert len(cache_files()) == 1

    def refuse(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_decode_image", refuse)
    again = data.load("small")
    np.testing.assert_array_equal(again.images, written["images"])
    np.testing.assert_array_equal(again.labels, first.labels)
    # a changed listing is a different key: touching one file forces a new decode
    f = root / "small" / "train" / "a" / "0000.png"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        data.load("small")


def test_damaged_cache_is_rebuilt(root, registry):
    written = _small_folder(root, registry)
    data.load("small")
    (path,) = config.cache_dir("datasets").glob("*.npz")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(cache.CacheError):
        cache.load_arrays(path)
    ds = data.load("small")
    np.testing.assert_array_equal(ds.images, written["images"])
    assert set(cache.load_arrays(path)) == {"images", "labels"}


def test_interrupted_decode_or_write_leaves_no_cache_file(root, registry, monkeypatch):
    _small_folder(root, registry)
    real = data._decode_image
    count = []

    def fail_on_third(*args):
        count.append(1)
        if len(count) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(data, "_decode_image", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        data.load("small")
    assert cache_files() == []
    monkeypatch.setattr(data, "_decode_image", real)

    def half_written(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(cache.np, "savez", half_written)
        with pytest.raises(OSError, match="disk full"):
            data.load("small")
    assert cache_files() == []
    assert len(data.load("small")) == 6 and len(cache_files()) == 1


# --------------------------------------------------------------------------- #
# Damaged files
# --------------------------------------------------------------------------- #


def test_truncated_idx_file(root):
    synthetic.write_mnist_idx(root, n_train=10, n_test=2)
    f = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CorruptDatasetError, match=r"train-images-idx3-ubyte.*truncated"):
        data.load("mnist")
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CorruptDatasetError, match="shorter than an IDX header"):
        data.load("mnist")


def test_truncated_gzip_idx_file(root):
    synthetic.write_mnist_idx(root, n_train=10, n_test=2, compress=True)
    f = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(CorruptDatasetError, match=r"train-labels-idx1-ubyte\.gz"):
        data.load("mnist")


def test_wrong_idx_magic_and_count_mismatch(root):
    synthetic.write_mnist_idx(root, n_train=10, n_test=2)
    raw = root / "MNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    good_images = images.read_bytes()
    images.write_bytes(struct.pack(">I", 2049) + good_images[4:])
    with pytest.raises(CorruptDatasetError, match=r"magic number 2049.*is not 2051"):
        data.load("mnist")
    images.write_bytes(good_images)
    labels.write_bytes(struct.pack(">2I", 2049, 9) + bytes(9))
    with pytest.raises(CorruptDatasetError, match="9 labels for 10 images"):
        data.load("mnist")
    labels.write_bytes(struct.pack(">2I", 2049, 10) + bytes([0] * 9 + [10]))
    with pytest.raises(CorruptDatasetError, match=r"labels must lie in 0\.\.9"):
        data.load("mnist")


def test_truncated_stl10_file(root):
    synthetic.write_stl10_binary(root, n_train=3, n_test=2, n_unlabeled=0)
    f = root / "stl10_binary" / "train_X.bin"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(CorruptDatasetError, match=r"train_X\.bin.*truncated"):
        data.load("stl10")
    f.write_bytes(f.read_bytes()[:96 * 96 * 3 * 2])     # whole images, one too few
    with pytest.raises(CorruptDatasetError, match=r"3 labels for 2 images"):
        data.load("stl10")


def test_damaged_cifar_batches(root):
    synthetic.write_cifar10_batches(root, n_train=10, n_test=4)
    base = root / "cifar-10-batches-py"
    good = (base / "test_batch").read_bytes()
    (base / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptDatasetError, match="test_batch.*not a readable CIFAR"):
        data.load("cifar10", "test")
    bad = {b"data": np.zeros((4, 3071), np.uint8), b"labels": [0, 1, 2, 3]}
    (base / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(CorruptDatasetError, match=r"shape \(N, 3072\).*\(4, 3071\)"):
        data.load("cifar10", "test")
    bad = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}
    (base / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(CorruptDatasetError, match="3 labels for 4 images"):
        data.load("cifar10", "test")


def test_cifar_pickle_cannot_run_code(root, tmp_path):
    synthetic.write_cifar10_batches(root, n_train=10, n_test=4)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CorruptDatasetError, match="refusing to load"):
        data.load("cifar10", "test")
    assert not marker.exists()


def test_undecodable_image_names_the_file(root, registry):
    _small_folder(root, registry)
    bad = root / "small" / "train" / "b" / "0001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(CorruptDatasetError, match=r"b/0001\.png: cannot decode"):
        data.load("small")
    assert cache_files() == []


def test_empty_class_folder_is_an_error(root, registry):
    _small_folder(root, registry)
    (root / "small" / "train" / "c").mkdir()
    with pytest.raises(CorruptDatasetError, match="holds no image files"):
        data.load("small")


# --------------------------------------------------------------------------- #
# The data type and the synthetic data
# --------------------------------------------------------------------------- #


def test_dataset_checks_its_arrays():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        data.Dataset("x", "train", images.astype(np.float32), np.zeros(2, np.int64), ("a",), "")
    with pytest.raises(ValueError, match=r"int64 array of shape \(2,\)"):
        data.Dataset("x", "train", images, np.zeros(3, np.int64), ("a",), "")
    with pytest.raises(ValueError, match=r"-1\.\.0"):
        data.Dataset("x", "train", images, np.array([0, 1]), ("a",), "")
    ds = data.Dataset("x", "train", images, np.array([0, -1]), ["a"], "somewhere")
    assert ds.classes == ("a",) and "uint8(2, 4, 4, 3)" in repr(ds)
    with pytest.raises(AttributeError):
        ds.name = "y"


def test_synthetic_classes_are_learnable():
    """Nearest class mean on raw pixels must be far above chance (10%)."""
    rng = np.random.default_rng(0)
    for channels in (1, 3):
        train_y, test_y = np.arange(200) % 10, rng.integers(0, 10, 100)
        x = synthetic.class_images(train_y, 10, size=28, channels=channels, seed=1)
        q = synthetic.class_images(test_y, 10, size=28, channels=channels, seed=2)
        means = np.stack([x[train_y == k].reshape(20, -1).mean(0) for k in range(10)])
        d = ((q.reshape(100, 1, -1).astype(float) - means[None]) ** 2).sum(-1)
        assert (d.argmin(1) == test_y).mean() > 0.8
        # and images vary within a class
        assert np.abs(x[0].astype(int) - x[10]).mean() > 5


def test_make_smoke_root_is_complete_deterministic_and_safe(tmp_path):
    a = synthetic.make_smoke_root(tmp_path / "a", seed=0)
    synthetic.make_smoke_root(tmp_path / "b", seed=0)
    for rel in ("MNIST/raw/train-images-idx3-ubyte", "cifar-100-python/train",
                "stl10_binary/unlabeled_X.bin", "cifar10-jpeg/test/truck/0009.jpg"):
        assert (a / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    sizes = {("mnist", "train"): 300, ("mnist", "test"): 100, ("cifar10", "train"): 300,
             ("cifar10", "test"): 100, ("cifar100", "train"): 1000,
             ("cifar100-coarse", "test"): 200, ("stl10", "train"): 200,
             ("stl10", "unlabeled"): 50}
    for (name, split), n in sizes.items():
        ds = data.load(name, split, root=a)
        assert len(ds) == n and "synthetic" in ds.source
    assert "JPEG ImageFolder mirror" in data.load("cifar10", root=a).source
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic.make_smoke_root(a)
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic.write_imagefolder(a / "cifar10-jpeg" / "train", ["x"], 1)


def test_writers_are_seeded(tmp_path):
    one = synthetic.write_cifar100_batches(tmp_path / "one", 20, 5, seed=4)
    two = synthetic.write_cifar100_batches(tmp_path / "two", 20, 5, seed=4)
    other = synthetic.write_cifar100_batches(tmp_path / "three", 20, 5, seed=5)
    np.testing.assert_array_equal(one["train"]["images"], two["train"]["images"])
    assert not np.array_equal(one["train"]["images"], other["train"]["images"])
    assert not np.array_equal(one["train"]["images"][:5], one["test"]["images"])


# --------------------------------------------------------------------------- #
# Fashion-MNIST and KMNIST (torchvision's IDX layouts)
# --------------------------------------------------------------------------- #

IDX_SETS = [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")]


@pytest.mark.parametrize("name,folder", IDX_SETS)
@pytest.mark.parametrize("compress", [False, True])
def test_mnist_like_round_trip(root, name, folder, compress):
    written = synthetic.write_mnist_idx(root, n_train=30, n_test=10, seed=4, compress=compress,
                                        folder=folder)
    raw = root / folder / "raw"
    assert (raw / "t10k-labels-idx1-ubyte.gz").exists() == compress
    for split in ("train", "test"):
        ds = data.load(name, split)
        assert ds.name == name and ds.images.shape == (len(ds), 28, 28, 1)
        np.testing.assert_array_equal(ds.images, written[split]["images"])
        np.testing.assert_array_equal(ds.labels, written[split]["labels"])
        assert ds.classes == data.CLASSES[name] and len(ds.classes) == 10
        assert str(raw) in ds.source and "IDX" in ds.source
    assert data.available(name, "test") and not data.available("mnist")
    assert data.CLASSES["fashion-mnist"][0] == "T-shirt/top" and data.CLASSES["kmnist"][1] == "ki"


@pytest.mark.parametrize("name,folder", IDX_SETS)
def test_mnist_like_damaged_files(root, name, folder):
    synthetic.write_mnist_idx(root, n_train=10, n_test=2, folder=folder)
    images = root / folder / "raw" / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(struct.pack(">I", 2049) + good[4:])
    with pytest.raises(CorruptDatasetError, match=r"train-images-idx3-ubyte.*magic number 2049"):
        data.load(name)
    images.write_bytes(good[:-5])
    with pytest.raises(CorruptDatasetError, match="truncated"):
        data.load(name)
    images.write_bytes(struct.pack(">4I", 2051, 10, 28, 27) + bytes(10 * 28 * 27))
    with pytest.raises(CorruptDatasetError, match="28x27, expected 28x28"):
        data.load(name)
    images.write_bytes(good)
    labels = root / folder / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">2I", 2049, 10) + bytes([0] * 9 + [10]))
    with pytest.raises(CorruptDatasetError, match=r"labels must lie in 0\.\.9"):
        data.load(name)


@pytest.mark.parametrize("name,folder", IDX_SETS)
def test_mnist_like_missing_names_every_path(root, name, folder):
    synthetic.write_mnist_idx(root, n_train=10, n_test=2)          # MNIST is not a stand-in
    with pytest.raises(DatasetNotFoundError) as err:
        data.load(name, "test")
    msg = str(err.value)
    assert f"{name!r}" in msg and "'test'" in msg
    assert str(root / folder / "raw" / "t10k-images-idx3-ubyte") in msg
    assert str(root / folder / "raw" / "t10k-labels-idx1-ubyte.gz") in msg
    assert str(root / f"{name}-png" / "test") in msg and str(root / f"{name}-jpeg") in msg
    assert "skipped" in msg and "HASHSTUDY_DATA" in msg
    assert f"torchvision.datasets.{folder}(" in msg


@pytest.mark.parametrize("name,folder", IDX_SETS)
def test_mnist_like_download_goes_to_torchvision_folder(root, monkeypatch, name, folder):
    calls = []

    def fake_download(which, where):
        calls.append(which)
        synthetic.write_mnist_idx(where, n_train=6, n_test=2, compress=True, folder=folder)

    monkeypatch.setattr(data, "_download", fake_download)
    assert len(data.load(name, download=True)) == 6 and calls == [name]


def test_mnist_like_mirror_uses_label_folders(root):
    written = synthetic.write_imagefolder(root / "fashion-mnist-png" / "train",
                                          [str(d) for d in range(10)], 2, size=28, channels=1)
    ds = data.load("fashion-mnist")
    np.testing.assert_array_equal(ds.images, written["images"])
    assert ds.classes == data.CLASSES["fashion-mnist"] and "mirror" in ds.source
    synthetic.write_imagefolder(root / "kmnist-png" / "train", ["o", "ki"], 1, size=28,
                                channels=1)
    with pytest.raises(CorruptDatasetError, match=r"named \['0', '1'"):
        data.load("kmnist")


def test_mnist_like_download_uses_torchvision_checksums(root, monkeypatch):
    """The real download path: torchvision's md5 per file, into <root>/<Class>/raw."""
    import torchvision.datasets.utils as tvu

    got = []
    monkeypatch.setattr(data, "_probe", lambda url, timeout=5.0: None)
    monkeypatch.setattr(tvu, "download_and_extract_archive",
                        lambda url, where, filename, md5, remove_finished: got.append(
                            (url, Path(where), filename, md5)))
    assert data._download("kmnist", root) is None
    import torchvision.datasets as tvd
    assert [(g[2], g[3]) for g in got] == list(tvd.KMNIST.resources)
    assert {g[1] for g in got} == {root / "KMNIST" / "raw"}
    assert got[0][0].startswith(tvd.KMNIST.mirrors[0])


# --------------------------------------------------------------------------- #
# folder:<path> names
# --------------------------------------------------------------------------- #


def _two_split_folder(base, channels=1, size=12):
    out = {}
    for i, split in enumerate(("train", "test")):
        out[split] = synthetic.write_imagefolder(base / split, ["cat", "dog", "emu"], 3 - i,
                                                 size=size, channels=channels, seed=i)
    return out


def test_folder_name_relative_and_absolute(root, tmp_path):
    written = _two_split_folder(root / "my images")
    rel = data.load("folder:my images", "train")
    assert rel.name == "folder:my images" and rel.images.shape == (9, 12, 12, 1)
    np.testing.assert_array_equal(rel.images, written["train"]["images"])
    np.testing.assert_array_equal(rel.labels, written["train"]["labels"])
    assert rel.classes == ("cat", "dog", "emu")
    assert str(root / "my images" / "train") in rel.source
    outside = tmp_path / "elsewhere" / "pics"
    written = _two_split_folder(outside, channels=3, size=10)
    ds = data.load(f"folder:{outside}", "test")
    assert ds.images.shape == (6, 10, 10, 3)
    np.testing.assert_array_equal(ds.images, written["test"]["images"])
    assert data.available(f"folder:{outside}", "test")
    assert data.key_token(f"folder:{outside}") == "folder-pics"
    assert data.key_token("folder:my images") == "folder-my-images"
    assert data.key_token("fashion-mnist") == "fashion-mnist"
    assert data.file_token("mnist") == "mnist"
    assert data.file_token(f"folder:{outside}") != data.file_token("folder:pics")


def test_folder_name_options(root):
    _two_split_folder(root / "rgb", channels=3, size=10)
    ds = data.load("folder:rgb?channels=1&size=8x6")
    assert ds.images.shape == (9, 8, 6, 1) and "resized to 8x6" in ds.source
    assert data.load("folder:rgb?size=5").images.shape == (9, 5, 5, 3)
    for bad, match in [("folder:rgb?channels=2", "channels must be 1 or 3"),
                       ("folder:rgb?colour=1", "unknown option"),
                       ("folder:rgb?size=0", "size must be"), ("folder:", "names no folder")]:
        with pytest.raises(ValueError, match=match):
            data.load(bad)


def test_folder_name_missing_folder_or_split(root):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("folder:nowhere", "test")
    msg = str(err.value)
    assert str(root / "nowhere" / "test") in msg and "does not exist" in msg
    assert "HASHSTUDY_DATA" in msg
    synthetic.write_imagefolder(root / "half" / "train", ["a", "b"], 2, size=8)
    assert data.available("folder:half", "train") and not data.available("folder:half", "test")
    assert len(data.load("folder:half", "train")) == 4
    with pytest.raises(DatasetNotFoundError, match=r"half/test.*exists but has no test/"):
        data.load("folder:half", "test")
    with pytest.raises(ValueError, match="'test'"):
        data.load("folder:half", "unlabeled")
    with pytest.raises(ValueError, match="folder:<path>"):
        data.load("my-images")


def test_folder_name_is_cached_like_a_registered_folder(root, monkeypatch):
    _two_split_folder(root / "cached")
    data.load("folder:cached")
    monkeypatch.setattr(data, "_decode_image", lambda *a: (_ for _ in ()).throw(
        AssertionError("decoded again")))
    assert len(data.load("folder:cached")) == 9


def test_check_name_and_title():
    gray = ["mnist", "fashion-mnist", "kmnist"]
    assert data.check_name("dataset", "kmnist", gray) == "kmnist"
    assert data.check_name("dataset", "folder:x?channels=1", gray) == "folder:x?channels=1"
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'; allowed values: 'mnist', "
                                         r"'fashion-mnist', 'kmnist', 'folder:<path>'$"):
        data.check_name("dataset", "cifar10", gray)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        data.check_name("dataset", "folder:x?channels=4", gray)
    assert data.check_name("rgb_dataset", "", ["cifar10"], empty=True) == ""
    with pytest.raises(ValueError, match=r"allowed values: 'cifar10', 'folder:<path>', ''"):
        data.check_name("rgb_dataset", "mnist", ["cifar10"], empty=True)
    assert data.title("fashion-mnist") == "Fashion-MNIST" and data.title("mnist") == "MNIST"
    assert data.title("folder:/a/pics") == "folder-pics"
