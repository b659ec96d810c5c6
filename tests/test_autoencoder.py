"""The scaled-tanh autoencoder of notebook 03: activation, b schedule, training, codes, protocol."""
import numpy as np
import pytest
import torch

from hashstudy import autoencoder as ae
from hashstudy import baselines, hamming, metrics, synthetic, training


# --------------------------------------------------------------------------- #
# the scaled tanh
# --------------------------------------------------------------------------- #


def test_scaled_tanh_is_the_papers_formula_and_tends_to_sign():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    for b in (0.5, 1.0, 4.0, 30.0):
        expected = 2.0 / (1.0 + torch.exp(-b * x)) - 1.0
        assert torch.allclose(ae.scaled_tanh(x, b), expected, atol=1e-12)
    away = x[x.abs() >= 0.1]
    gaps = [float((ae.scaled_tanh(away, b) - torch.sign(away)).abs().max()) for b in (1, 10, 100, 1000)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps  # strictly closer to sign(x) as b grows
    assert gaps[0] > 0.5 and gaps[-1] < 1e-12
    assert float(ae.scaled_tanh(torch.zeros(1), 1000.0)) == 0.0
    assert torch.equal(ae.scaled_tanh(-x, 7.0), -ae.scaled_tanh(x, 7.0))  # odd
    # |f| >= 0.99 exactly when |x| >= 2 atanh(0.99) / b
    b = 50.0
    edge = 2 * np.arctanh(0.99) / b
    assert ae.binary_fraction(ae.scaled_tanh(torch.tensor([edge * 1.001, -edge * 1.001, edge * 0.999],
                                                          dtype=torch.float64), b)) == pytest.approx(2 / 3)


def test_scaled_tanh_derivative():
    for b in (0.5, 2.0, 40.0):
        x = torch.linspace(-2, 2, 81, dtype=torch.float64, requires_grad=True)
        f = ae.scaled_tanh(x, b)
        (grad,) = torch.autograd.grad(f.sum(), x)
        assert torch.allclose(grad, 0.5 * b * (1 - f.detach() ** 2), atol=1e-12)
        assert float(grad[40]) == pytest.approx(b / 2)  # slope b/2 at 0


def test_scaled_tanh_rejects_bad_input():
    with pytest.raises(ValueError, match="positive finite"):
        ae.scaled_tanh(torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="positive finite"):
        ae.scaled_tanh(torch.zeros(3), float("inf"))
    with pytest.raises(TypeError, match="floating-point torch tensor"):
        ae.scaled_tanh(np.zeros(3), 1.0)


# --------------------------------------------------------------------------- #
# the b schedule
# --------------------------------------------------------------------------- #


def test_geometric_schedule_rises_then_holds():
    s = ae.BSchedule("geometric", 1.0, 100.0, anneal_epochs=5, finetune_epochs=3)
    v = s.values()
    assert s.epochs == 8 and v.shape == (8,)
    assert v[0] == 1.0 and v[4] == pytest.approx(100.0) and np.all(v[4:] == v[4])
    ratios = v[1:5] / v[:4]
    assert np.allclose(ratios, ratios[0]) and ratios[0] > 1  # the same factor each epoch


def test_linear_and_staged_schedules():
    lin = ae.BSchedule("linear", 2.0, 10.0, anneal_epochs=5, finetune_epochs=0).values()
    assert np.allclose(lin, [2, 4, 6, 8, 10])
    staged = ae.BSchedule("geometric", 1.0, 100.0, anneal_epochs=6, finetune_epochs=1,
                          stage_epochs=2).values()
    assert np.allclose(staged, [1, 1, 10, 10, 100, 100, 100])
    const = ae.BSchedule("constant", 1.0, 3.0, anneal_epochs=2, finetune_epochs=2).values()
    assert np.allclose(const, 3.0)


def test_schedule_per_layer():
    s = ae.BSchedule("geometric", 1.0, 16.0, anneal_epochs=5, finetune_epochs=1, hidden_b_end=4.0)
    assert s.layer_b(4, 3) == [4.0, 4.0, 16.0]
    assert s.layer_b(2, 2) == pytest.approx([2.0, 4.0])
    assert s.layer_b(0, 1) == [1.0]
    assert ae.BSchedule("linear", 1.0, 9.0, 3, 0).layer_b(1, 2) == [5.0, 5.0]  # default: alike
    with pytest.raises(ValueError, match="outside"):
        s.code_b(6)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "cosine"}, "allowed values"),
    ({"b_start": -1.0}, "positive"),
    ({"anneal_epochs": 0}, "anneal_epochs"),
    ({"finetune_epochs": -1}, "finetune_epochs"),
    ({"stage_epochs": 1.5}, "stage_epochs"),
])
def test_schedule_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ae.BSchedule(**kwargs)


# --------------------------------------------------------------------------- #
# the network
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("channels, size", [(1, (28, 28)), (3, (32, 32)), (1, (16, 12))])
@pytest.mark.parametrize("n_dense", [1, 3])
def test_autoencoder_shapes(channels, size, n_dense):
    model = ae.TanhAutoencoder(channels, size, 12, n_dense=n_dense, hidden=20)
    x = torch.rand(5, channels, *size)
    with torch.no_grad():
        z = model.code_activations(x)
    assert z.shape == (5, 12) and float(z.abs().max()) <= 1.0
    assert model(x).shape == x.shape
    assert len(model.b) == n_dense
    model.set_b([3.0] * n_dense)
    assert model.b == [3.0] * n_dense
    with pytest.raises(ValueError, match="one per dense layer"):
        model.set_b([1.0] * (n_dense + 1))
    with pytest.raises(ValueError, match="expected a float batch"):
        model.code_activations(torch.rand(5, channels, size[0] + 1, size[1]))


def test_autoencoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="allowed values"):
        ae.TanhAutoencoder(1, (28, 28), 8, conv_activation="gelu")
    with pytest.raises(ValueError, match="too small"):
        ae.TanhAutoencoder(1, (6, 6), 8)
    with pytest.raises(ValueError, match="n_dense"):
        ae.TanhAutoencoder(1, (28, 28), 8, n_dense=0)


def test_binary_fraction():
    assert ae.binary_fraction(np.array([1.0, -1.0, 0.995, 0.5])) == 0.75
    assert ae.binary_fraction(torch.tensor([[0.0, 0.2], [-0.999, 1.0]])) == 0.5
    with pytest.raises(ValueError, match="no activations"):
        ae.binary_fraction(np.array([]))


def _tiny_images(n=160, size=16, seed=0):
    labels = np.arange(n) % 4
    return synthetic.class_images(labels, 4, size=size, channels=1, seed=seed), labels


def test_training_reconstructs_better_than_the_mean_image_and_binarises():
    images, _ = _tiny_images()
    x = ae.images_to_tensor(images)
    mean_mse = float(((x - x.mean(0, keepdim=True)) ** 2).mean())
    training.seed_everything(0)
    model = ae.TanhAutoencoder(1, images.shape[1:3], 8, n_dense=2, hidden=32)
    # the hidden layer stops at b = 20, as the notebook's hidden_b_ratio = 0.1 does: with both
    # layers at b = 200 this tiny network can saturate into one constant code and decode
    # nothing but the mean image
    sched = ae.BSchedule("geometric", 1.0, 200.0, anneal_epochs=8, finetune_epochs=4,
                         hidden_b_end=20.0)
    hist = ae.train_autoencoder(model, images, sched, batch_size=16, lr=3e-3, final_lr=1e-4,
                                progress=False)
    logs = hist["logs"]
    assert [r["b"] for r in logs] == pytest.approx(list(sched.values()))
    assert logs[-1]["binary_fraction"] >= 0.99 > logs[0]["binary_fraction"]
    assert logs[-1]["mse_binary"] < 0.8 * mean_mse  # decoding the binary code beats the mean image
    with torch.no_grad():
        z = model.code_activations(x)
    assert ae.binary_fraction(z) >= 0.99


def test_images_round_trip():
    images, _ = _tiny_images(6)
    t = ae.images_to_tensor(images)
    assert t.shape == (6, 1, 16, 16) and t.dtype == torch.float32 and float(t.max()) <= 1
    assert np.array_equal(ae.tensor_to_images(t), images)
    with pytest.raises(ValueError, match="uint8"):
        ae.images_to_tensor(images.astype(np.float32))


# --------------------------------------------------------------------------- #
# the hasher
# --------------------------------------------------------------------------- #


def _hasher(**kw):
    sched = ae.BSchedule("geometric", 1.0, 100.0, anneal_epochs=3, finetune_epochs=1)
    return ae.TanhAEHasher(6, seed=1, hidden=16, schedule=sched, batch_size=32, n_monitor=50,
                           progress=False, **kw)


def test_hasher_codes_cache_and_determinism():
    images, _ = _tiny_images(96)
    with pytest.raises(baselines.NotFittedError):
        _hasher().encode(images)
    first = _hasher().fit(images)
    codes = first.encode(images)
    assert codes.dtype == np.uint8 and codes.shape == (96, 6) and set(np.unique(codes)) <= {0, 1}
    assert np.array_equal(codes, (first.activations(images) >= 0).astype(np.uint8))
    again = _hasher().fit(images)
    assert (first.loaded_, again.loaded_) == (False, True)
    assert np.array_equal(again.encode(images), codes)
    assert again.history_["logs"] == first.history_["logs"]
    other = _hasher(conv_activation="leaky_relu").fit(images)
    assert other.loaded_ is False  # a different parameter trains anew
    recon = first.reconstruct(images[:4])
    assert recon.shape == (4, 16, 16, 1) and recon.dtype == np.uint8


# --------------------------------------------------------------------------- #
# protocol: the query is not its own result
# --------------------------------------------------------------------------- #


def _naive(q, d, ql, dl, selves, k):
    """Per-query loop: rank D without the query's own row (stable sort), precision@k and AP@all."""
    prec, aps = [], []
    for i in range(len(q)):
        keep = np.array([j for j in range(len(d)) if j != selves[i]])
        dist = (q[i] != d[keep]).sum(1)
        rel = dl[keep][np.argsort(dist, kind="stable")] == ql[i]
        prec.append(rel[:k].mean())
        hits = np.flatnonzero(rel)
        aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)) if len(hits) else 0.0)
    return np.mean(prec), np.mean(aps)


def test_evaluate_excluding_self_matches_a_naive_loop_and_drops_the_query():
    rng = np.random.default_rng(3)
    d = rng.integers(0, 2, (120, 8)).astype(np.uint8)
    dl = rng.integers(0, 3, 120)
    selves = np.array([0, 5, 17, 60, 119, -1])
    q = np.vstack([d[selves[:-1]], rng.integers(0, 2, (1, 8))]).astype(np.uint8)
    ql = np.append(dl[selves[:-1]], 1)
    got = ae.evaluate_excluding_self(q, d, ql, dl, selves, ["precision@10", "map_all"], ties="index")
    want = _naive(q, d, ql, dl, selves, 10)
    assert got["precision@10"] == pytest.approx(want[0]) and got["map_all"] == pytest.approx(want[1])
    with_self = metrics.evaluate(q, d, ql, dl, ["precision@10"], ties="index")["precision@10"]
    assert with_self > got["precision@10"]  # the query at distance 0 would count as a hit
    # the default averages over tie orders: the same as evaluating each query on its own
    averaged = ae.evaluate_excluding_self(q, d, ql, dl, selves, ["precision@10"])["precision@10"]
    per_query = [metrics.evaluate(q[i:i + 1], np.delete(d, s, 0) if s >= 0 else d, ql[i:i + 1],
                                  np.delete(dl, s) if s >= 0 else dl, ["precision@10"])["precision@10"]
                 for i, s in enumerate(selves)]
    assert averaged == pytest.approx(np.mean(per_query))
    with pytest.raises(ValueError, match="not a mean over queries"):
        ae.evaluate_excluding_self(q, d, ql, dl, selves, ["max_f@0.5"])
    with pytest.raises(ValueError, match="self_index"):
        ae.evaluate_excluding_self(q, d, ql, dl, selves[:3], ["map_all"])


def test_topk_excluding_self():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 2, (50, 4)).astype(np.uint8)  # many ties at 4 bits
    selves = np.array([3, 10, 49, -1])
    q = np.vstack([d[selves[:3]], d[:1]])
    idx, dist = ae.topk_excluding_self(q, d, selves, 7)
    assert idx.shape == dist.shape == (4, 7)
    full = hamming.distances(q, d)
    for i, s in enumerate(selves):
        assert s not in idx[i]
        order = [j for j in np.argsort(full[i], kind="stable") if j != s][:7]
        assert list(idx[i]) == order and list(dist[i]) == list(full[i][order])
    with pytest.raises(ValueError, match="k must be"):
        ae.topk_excluding_self(q, d, selves, 50)


def test_test_vs_test_split(isolated_dirs):
    synthetic.write_mnist_idx(isolated_dirs / "data", 60, 40, seed=0)
    split = ae.test_vs_test_split("mnist", 10, seed=2, n_train=30)
    assert split.n_train_split == 60 and split.n_test_split == 40
    assert np.array_equal(split.database, np.arange(60, 100))
    assert split.query.size == 10 and np.all((split.query >= 60) & (split.query < 100))
    assert split.train.size == 30 and np.all(split.train < 60)
    assert split.name == "test-vs-test[n_query=10,n_train=30]"
    selves = ae.self_positions(split)
    assert np.array_equal(split.database[selves], split.query)
    again = ae.test_vs_test_split("mnist", 10, seed=2, n_train=30)  # loaded from the cache
    assert np.array_equal(again.query, split.query) and np.array_equal(again.train, split.train)
    other = ae.test_vs_test_split("mnist", 10, seed=3, n_train=30)
    assert not np.array_equal(other.query, split.query)
    with pytest.raises(ValueError, match="exceeds"):
        ae.test_vs_test_split("mnist", 41)


def test_compare_reports_every_method_on_the_same_queries(isolated_dirs):
    written = synthetic.write_mnist_idx(isolated_dirs / "data", 80, 40, seed=0)
    images = np.concatenate([written["train"]["images"], written["test"]["images"]])
    labels = np.concatenate([written["train"]["labels"], written["test"]["labels"]])
    split = ae.test_vs_test_split("mnist", 12, seed=0)
    sched = ae.BSchedule("geometric", 1.0, 50.0, anneal_epochs=2, finetune_epochs=1)
    table, codes, hashers = ae.compare(
        images, labels, split, [4], methods=("lsh", "itq"), progress=False,
        autoencoder=dict(hidden=16, schedule=sched, batch_size=40))
    assert set(table["method"]) == {"tanh_ae", "lsh", "itq"}
    assert set(table["metric"]) == {"precision@90", "map_all", "binary_fraction", "fit_seconds"}
    assert codes[("tanh_ae", 4)].query.shape == (12, 4) and codes[("lsh", 4)].database.shape == (40, 4)
    assert 4 in hashers
    lsh = table[(table.method == "lsh") & (table.metric == "precision@90")].value.item()
    c = codes[("lsh", 4)]
    want = ae.evaluate_excluding_self(c.query, c.database, labels[split.query], labels[split.database],
                                      ae.self_positions(split), ["precision@90"])["precision@90"]
    assert lsh == pytest.approx(want)
