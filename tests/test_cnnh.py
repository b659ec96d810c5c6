"""CNNH: stage-1 approximate codes (eq. 6) and the stage-2 network as a hasher."""
import numpy as np
import pytest
import torch

from hashstudy import cnnh, graph, metrics, synthetic, training


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _hamming(B):
    return (B[:, None, :] != B[None, :, :]).sum(-1)


def test_approximate_codes_reproduce_the_label_similarity():
    labels = np.repeat(np.arange(4), 6)
    S = graph.label_similarity(labels)
    H, objective = cnnh.approximate_codes(S, 16, seed=1, return_objective=True)
    assert H.shape == (24, 16) and H.dtype == np.float32
    assert H.min() >= -1 and H.max() <= 1
    assert all(b <= a + 1e-12 for a, b in zip(objective, objective[1:])), objective
    assert objective[-1] < 0.5 * objective[0]
    D = _hamming(H >= 0)
    same = labels[:, None] == labels[None, :]
    # every pair of a class is closer than every pair of different classes
    assert D[same].max() < D[~same].min()


def test_two_classes_are_reconstructed_exactly():
    labels = np.array([0, 1] * 10)
    S = graph.label_similarity(labels)
    H = cnnh.approximate_codes(S, 8, seed=0)
    B = np.where(H >= 0, 1, -1)
    assert cnnh.reconstruction_error(S, B) == 0.0


def test_approximate_codes_are_seeded():
    S = graph.label_similarity(np.arange(30) % 3)
    a = cnnh.approximate_codes(S, 12, seed=5)
    b = cnnh.approximate_codes(S, 12, seed=5)
    c = cnnh.approximate_codes(S, 12, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("S, match", [(np.ones((3, 4)), "square"),
                                      (np.array([[1.0, 1.0], [-1.0, 1.0]]), "symmetric"),
                                      (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite")])
def test_approximate_codes_reject_bad_similarities(S, match):
    with pytest.raises(ValueError, match=match):
        cnnh.approximate_codes(S, 4)


def test_image_tensor_accepts_images_and_pixel_rows():
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    a = cnnh.as_image_tensor(images, (8, 8, 3))
    b = cnnh.as_image_tensor(images.reshape(5, -1).astype(np.float32) / 255, (8, 8, 3))
    assert a.shape == (5, 3, 8, 8) and a.dtype == torch.uint8 and torch.equal(a, b)
    with pytest.raises(ValueError, match="do not match"):
        cnnh.as_image_tensor(images.reshape(5, -1)[:, :10] / 255.0, (8, 8, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cnnh.as_image_tensor(images.astype(np.float32), (8, 8, 3))


def _data(n, seed, n_classes=4):
    labels = np.arange(n) % n_classes
    return synthetic.class_images(labels, n_classes, size=16, channels=1, seed=seed), labels


def _small(**kw):
    return cnnh.CNNH(16, (16, 16, 1), widths=(4, 8, 8), hidden=32, epochs=12, batch_size=16,
                     lr=3e-3, progress=False, **kw)


def test_cnnh_learns_codes_that_retrieve_held_out_classes():
    train_x, train_y = _data(96, 0)
    test_x, test_y = _data(40, 1)
    hasher = _small().fit(train_x, train_y)
    assert hasher.target_codes_.shape == (96, 16)
    # the network reproduces its targets on the training images
    assert (hasher.encode(train_x) == hasher.target_codes_).mean() > 0.95
    q, db = hasher.encode(test_x), hasher.encode(train_x)
    assert q.dtype == np.uint8 and set(np.unique(q)) <= {0, 1}
    assert metrics.mean_average_precision(q, db, test_y, train_y, topk=None) > 0.9


def test_cnnh_second_fit_loads_from_the_cache(monkeypatch):
    x, y = _data(48, 0)
    first = _small().fit(x, y)

    def no_training(*a, **k):
        raise AssertionError("trained again instead of loading the cached weights")

    monkeypatch.setattr(training, "fit", no_training)
    second = _small().fit(x, y)
    assert np.array_equal(first.encode(x), second.encode(x))


def test_cnnh_needs_class_labels():
    x, _ = _data(12, 0)
    with pytest.raises(ValueError, match="unlabelled"):
        _small().fit(x, np.full(12, -1))
    with pytest.raises(RuntimeError, match="not fitted"):
        _small().encode(x)
