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
# the schedule's end and pace
# --------------------------------------------------------------------------- #


def test_paced_schedule_stops_at_its_end_on_the_papers_ladder():
    reach = ae.BSchedule.paced(1000.0, 1, stages=7, finetune_stages=1)
    assert np.allclose(reach.values(), 10 ** np.array([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    # the paper's reach is the old default schedule, whose cache key it keeps
    assert (ae.BSchedule.paced(ae.PAPER_B_END, ae.PAPER_PACE, stages=7, finetune_stages=1,
                               hidden_b_end=100.0).as_dict()
            == ae.BSchedule("geometric", 1.0, 1000.0, 7, 1, 1, 100.0).as_dict())
    stop = ae.BSchedule.paced(100.0, 1, stages=7, finetune_stages=1)
    v = stop.values()
    assert stop.epochs == reach.epochs == 8
    assert np.allclose(v[:5], reach.values()[:5])  # the same rungs up to the end ...
    assert np.all(v[4:] == 100.0) and v.max() == 100.0  # ... then held there
    slow = ae.BSchedule.paced(100.0, 2, stages=7, finetune_stages=1)
    assert slow.epochs == 16 and np.array_equal(slow.values(), np.repeat(v, 2))  # each rung twice
    # hidden layers: their own ladder (b_max * hidden_b_end / b_end), cut at hidden_b_end
    h = ae.BSchedule.paced(100.0, 1, stages=7, finetune_stages=1, hidden_b_end=10.0)
    assert [h.layer_b(e, 2)[0] for e in (0, 3, 4, 7)] == pytest.approx([1.0, 10.0, 10.0, 10.0])
    # an end above the ladder's top raises the top
    assert ae.BSchedule.paced(5000.0, 1, stages=3, finetune_stages=0).values()[-1] == 5000.0
    lin = ae.BSchedule.paced(50.0, 1, stages=3, finetune_stages=1, kind="linear", b_max=101.0)
    assert np.allclose(lin.values(), [1.0, 50.0, 50.0, 50.0])


@pytest.mark.parametrize("kwargs, match", [
    ({"b_end": 0.5}, r"b_end .* must be a number in \[b_start, 1e\+06\] = \[1, 1e\+06\], got 0\.5"),
    ({"b_end": float("nan")}, r"b_end .* in \[b_start, 1e\+06\]"),
    ({"b_end": float("inf")}, r"b_end .* in \[b_start, 1e\+06\]"),
    ({"b_end": -3}, r"b_end .* in \[b_start, 1e\+06\]"),
    ({"b_end": "high"}, r"b_end .* in \[b_start, 1e\+06\] .*got 'high'"),
    ({"b_end": True}, r"b_end .* in \[b_start, 1e\+06\]"),
    ({"b_end": 2.0, "b_start": 4.0}, r"b_end .* = \[4, 1e\+06\], got 2\.0"),
    ({"pace": 0}, r"pace .* must be an integer in 1\.\.20, got 0"),
    ({"pace": 1.5}, r"pace .* must be an integer in 1\.\.20, got 1\.5"),
    ({"pace": 21}, r"pace .* integer in 1\.\.20"),
    ({"pace": True}, r"pace .* integer in 1\.\.20"),
    ({"pace": "2"}, r"pace .* integer in 1\.\.20"),
    ({"stages": 0}, "stages must be an integer >= 1"),
    ({"finetune_stages": -1}, "finetune_stages must be an integer >= 0"),
])
def test_paced_schedule_rejects_bad_end_and_pace(kwargs, match):
    args = {"b_end": 100.0, "pace": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        ae.BSchedule.paced(args.pop("b_end"), args.pop("pace"), **args)


def test_b_max_must_reach_b_end():
    with pytest.raises(ValueError, match="b_max .* at least b_end"):
        ae.BSchedule("geometric", 1.0, 100.0, b_max=50.0)
    assert "b_max" not in ae.BSchedule().as_dict()  # unset: the old keys stay valid
    assert ae.BSchedule(b_max=1000.0).as_dict()["b_max"] == 1000.0


def test_notebook_defaults_are_the_librarys():
    import ast
    import json

    from hashstudy import config

    nb = json.loads((config.repo_root() / "notebooks" / "03_tanh_autoencoder.ipynb").read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    params = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(first["source"])).body}
    assert params["b_end"] == ae.DEFAULT_B_END and params["stage_epochs"] == ae.DEFAULT_PACE
    assert ae.PAPER_B_END == 1000.0 and ae.PAPER_PACE == 1


def _final(spec):
    """spec: {(b_end, pace): {(bits, seed): (binary_fraction, precision, mse_binary)}} -> final_table rows."""
    import pandas as pd

    rows = [{"b_end": float(b), "pace": p, "bits": n, "seed": s, "epochs": 8 * p, "binary_fraction": bf,
             "mse_binary": mse, "mse_continuous": 0.03, "precision@90": prec}
            for (b, p), runs in spec.items() for (n, s), (bf, prec, mse) in runs.items()]
    return pd.DataFrame(rows, columns=list(ae.FINAL_COLUMNS))


DESIGN = ae.selection_design([8, 16], 16, [0], [0, 1])  # (8, 0), (16, 0), (16, 1)


def _runs(bf, prec, mse=0.04):
    return {(8, 0): (bf, prec, mse), (16, 0): (bf, prec, mse), (16, 1): (bf, prec, mse)}


def test_selection_design():
    assert DESIGN == [(8, 0), (16, 0), (16, 1)]
    assert ae.selection_design([8, 16, 32], 32, [0, 1], [2]) == [(8, 0), (8, 1), (16, 0), (16, 1),
                                                                 (32, 0), (32, 1), (32, 2)]
    with pytest.raises(ValueError, match="headline_bits"):
        ae.selection_design([8, 16], 32, [0], [0])
    with pytest.raises(ValueError, match="all_bits_seeds must be a list of integer seeds"):
        ae.selection_design([8], 8, "0", [0])
    with pytest.raises(ValueError, match="empty"):
        ae.selection_design([8], 8, [], [])


def test_choose_schedule_never_picks_a_schedule_that_does_not_binarise():
    # b = 100 retrieves better but one run ends with a continuous code layer: it cannot be chosen
    low = _runs(0.999, 0.60)
    low[(8, 0)] = (0.40, 0.62, 0.03)
    spec = {(100, 1): low, (1000, 1): _runs(0.998, 0.50)}
    got = ae.choose_schedule(_final(spec), DESIGN)
    assert (got["b_end"], got["pace"]) == (1000.0, 1)
    assert got["precision"] == pytest.approx(0.50) and got["binary_fraction"] == pytest.approx(0.998)
    cand = got["candidates"].set_index("b_end")
    assert not cand.loc[100.0, "qualifies"] and "not binary: 40.0%" in cand.loc[100.0, "reason"]
    assert "8 bits, seed 0" in cand.loc[100.0, "reason"] and "b_end = 100, pace 1: not binary" in got["text"]
    # exactly at the threshold qualifies, just below does not
    low[(8, 0)] = (ae.MIN_BINARY_SHARE, 0.62, 0.03)
    assert ae.choose_schedule(_final(spec), DESIGN)["b_end"] == 100.0
    low[(8, 0)] = (ae.MIN_BINARY_SHARE - 1e-3, 0.62, 0.03)
    assert ae.choose_schedule(_final(spec), DESIGN)["b_end"] == 1000.0
    assert ae.choose_schedule(_final(spec), DESIGN, min_binary_share=0.3)["b_end"] == 100.0
    # nothing binarises: one error naming every schedule's reason
    with pytest.raises(ValueError, match=r"no schedule qualifies \(b_end = 100, pace 1: not binary.*"
                                         r"b_end = 1000, pace 1: not binary"):
        ae.choose_schedule(_final({(100, 1): _runs(0.5, 0.6), (1000, 1): _runs(0.9, 0.5)}), DESIGN)


def test_choose_schedule_needs_every_run_of_the_design():
    partial = _runs(1.0, 0.90)
    del partial[(16, 1)]  # the best schedule, but not run at seed 1
    spec = {(316, 1): partial, (1000, 1): _runs(0.998, 0.50)}
    got = ae.choose_schedule(_final(spec), DESIGN)
    assert got["b_end"] == 1000.0
    cand = got["candidates"].set_index("b_end")
    assert cand.loc[316.0, "reason"] == "not measured at 16 bits seed 1" and not cand.loc[316.0, "complete"]
    # the design decides: without seed 1 in it, the partial schedule is complete and wins
    assert ae.choose_schedule(_final(spec), [(8, 0), (16, 0)])["b_end"] == 316.0


def test_choose_schedule_ranks_by_held_out_precision_then_pace_then_reconstruction():
    spec = {(316, 1): _runs(0.995, 0.55, mse=0.05), (1000, 1): _runs(0.999, 0.50, mse=0.04)}
    assert ae.choose_schedule(_final(spec), DESIGN)["b_end"] == 316.0  # better precision
    # within the tie margin (0.01) the lower reconstruction error from the binary codes wins
    spec = {(316, 1): _runs(0.995, 0.505, mse=0.05), (1000, 1): _runs(0.999, 0.50, mse=0.04)}
    assert ae.choose_schedule(_final(spec), DESIGN)["b_end"] == 1000.0
    assert ae.choose_schedule(_final(spec), DESIGN, tie=0.0)["b_end"] == 316.0
    spec = {(316, 1): _runs(0.995, 0.50, mse=0.04), (1000, 1): _runs(0.999, 0.50, mse=0.04)}
    assert ae.choose_schedule(_final(spec), DESIGN)["b_end"] == 316.0  # full tie: the smaller b
    # a slower pace must win by more than the tie margin
    spec = {(1000, 1): _runs(0.999, 0.50, mse=0.05), (1000, 2): _runs(0.999, 0.508, mse=0.03)}
    assert ae.choose_schedule(_final(spec), DESIGN)["pace"] == 1
    spec[(1000, 2)] = _runs(0.999, 0.52, mse=0.03)
    got = ae.choose_schedule(_final(spec), DESIGN)
    assert (got["b_end"], got["pace"]) == (1000.0, 2) and "pace 2 (16 epochs)" in got["text"]
    # the means are over the runs of the design; the spread over the seeds of the headline length
    runs = _runs(0.999, 0.5)
    runs[(16, 1)] = (0.999, 0.8, 0.04)
    got = ae.choose_schedule(_final({(1000, 1): runs}), DESIGN)
    assert got["precision"] == pytest.approx(0.6) and got["precision_std"] == pytest.approx(np.std([0.5, 0.8], ddof=1))
    with pytest.raises(ValueError, match="tie must be a number >= 0"):
        ae.choose_schedule(_final({(1000, 1): runs}), DESIGN, tie=-1)
    with pytest.raises(ValueError, match="min_binary_share must be in"):
        ae.choose_schedule(_final({(1000, 1): runs}), DESIGN, min_binary_share=1.5)


def test_validation_split_holds_out_training_images_only():
    from hashstudy import protocols

    def split(train):
        return protocols.Split(dataset="x", protocol="test-vs-test", name="t", seed=0,
                               query=np.arange(100, 110), database=np.arange(100, 150),
                               train=np.asarray(train), n_train_split=100, n_test_split=50)

    fit, val = ae.validation_split(split(np.arange(0, 100, 4)), 20, seed=1)  # 75 unused
    assert np.array_equal(fit, np.arange(0, 100, 4)) and len(val) == 20
    assert not set(val) & set(fit) and val.max() < 100
    again = ae.validation_split(split(np.arange(0, 100, 4)), 20, seed=1)[1]
    assert np.array_equal(val, again)
    fit, val = ae.validation_split(split(np.arange(100)), 20, seed=1)  # all used: held out of them
    assert len(fit) == 80 and len(val) == 20 and not set(val) & set(fit)
    assert sorted(np.concatenate([fit, val])) == list(range(100))
    with pytest.raises(ValueError, match="n_val"):
        ae.validation_split(split(np.arange(100)), 1)
    with pytest.raises(ValueError, match="fewer than 2"):
        ae.validation_split(split(np.arange(10)), 95)


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


def test_training_follows_the_end_and_the_pace():
    """If the end or the pace were ignored, the trained model's b per epoch would not follow them."""
    images, labels = _tiny_images(96)
    runs = {}
    for b_end, pace in ((8.0, 1), (8.0, 2), (1000.0, 1)):
        sched = ae.BSchedule.paced(b_end, pace, stages=3, finetune_stages=1, hidden_b_end=0.1 * b_end)
        hasher = ae.TanhAEHasher(6, seed=1, hidden=16, schedule=sched, batch_size=32, n_monitor=50,
                                 progress=False, validation=(images[:40], labels[:40])).fit(images[40:])
        runs[(b_end, pace)] = hasher
        logs = hasher.history_["logs"]
        assert len(logs) == (3 + 1) * pace == sched.epochs
        assert [r["b"] for r in logs] == pytest.approx(list(sched.values()))
        assert max(r["b"] for r in logs) == pytest.approx(b_end)
        assert hasher.model_.b == pytest.approx([0.1 * b_end, b_end])  # where training left b
        for r in logs:
            assert 0 <= r["val_precision@90"] <= 1 and r["val_mse_binary"] > 0
            assert 0 <= r["val_binary_fraction"] <= 1
    assert [r["b"] for r in runs[(8.0, 1)].history_["logs"]] == pytest.approx([1.0, 8.0, 8.0, 8.0])
    assert [r["b"] for r in runs[(8.0, 2)].history_["logs"]] == pytest.approx([1, 1, 8, 8, 8, 8, 8, 8])
    assert [r["b"] for r in runs[(1000.0, 1)].history_["logs"]] == pytest.approx([1, 31.6227766, 1000, 1000])
    # three settings, three trainings (none loaded from another's cache entry), three models
    assert not any(h.loaded_ for h in runs.values())
    codes = [h.activations(images[:40]) for h in runs.values()]
    assert not np.allclose(codes[0], codes[1]) and not np.allclose(codes[0], codes[2])
    keyed = {(b_end, pace, 6, 1): h for (b_end, pace), h in runs.items()}
    final = ae.final_table(keyed)
    assert list(final.columns) == list(ae.FINAL_COLUMNS) and list(final.epochs) == [4, 8, 4]
    for r in final.itertuples():  # the final table is the last epoch's held-out statistics
        last = runs[(r.b_end, r.pace)].history_["logs"][-1]
        assert (r.binary_fraction, r.mse_binary) == (last["val_binary_fraction"], last["val_mse_binary"])
    # one row per value of b while it rises, read at the last epoch at that value (the rungs held
    # at b_end count as one)
    ladder = ae.ladder_table(keyed)
    assert list(ladder.columns) == list(ae.LADDER_COLUMNS)
    assert ladder[ladder.pace == 2].epoch.tolist() == [2, 6] and ladder[ladder.pace == 2].b.tolist() == \
        pytest.approx([1, 8])
    assert ladder[(ladder.pace == 1) & (ladder.b_end == 1000)].b.tolist() == pytest.approx([1, 31.6227766, 1000])
    with pytest.raises(ValueError, match="without held-out"):
        ae.final_table({(8.0, 1, 6, 1): {"logs": [{"epoch": 1, "b": 1.0}], "schedule": {}}})
    with pytest.raises(ValueError, match="needs validation images"):
        ae.train_autoencoder(ae.TanhAutoencoder(1, (16, 16), 4, hidden=8), images[:8],
                             ae.BSchedule(anneal_epochs=1, finetune_epochs=0),
                             validation_labels=labels[:8], progress=False)


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
    from hashstudy import protocols

    assert ae.test_vs_test_split is protocols.test_vs_test_split  # the old name still works
    synthetic.write_mnist_idx(isolated_dirs / "data", 60, 40, seed=0)
    split = protocols.test_vs_test_split("mnist", 10, seed=2, n_train=30)
    assert split.n_train_split == 60 and split.n_test_split == 40
    assert np.array_equal(split.database, np.arange(60, 100))
    assert split.query.size == 10 and np.all((split.query >= 60) & (split.query < 100))
    assert split.train.size == 30 and np.all(split.train < 60)
    assert split.name == "test-vs-test[n_query=10,n_train=30]" and split.protocol == "test-vs-test"
    assert split.description == protocols.TEST_VS_TEST
    selves = ae.self_positions(split)
    assert np.array_equal(split.database[selves], split.query)
    saved = list((isolated_dirs / "cache" / "splits").glob("*test-vs-test*.npz"))
    assert len(saved) == 1  # drawn once, saved
    again = protocols.test_vs_test_split("mnist", 10, seed=2, n_train=30)  # loaded from the cache
    assert np.array_equal(again.query, split.query) and np.array_equal(again.train, split.train)
    other = protocols.test_vs_test_split("mnist", 10, seed=3, n_train=30)
    assert not np.array_equal(other.query, split.query)
    with pytest.raises(ValueError, match="exceeds"):
        protocols.test_vs_test_split("mnist", 41)


def test_compare_reports_every_method_on_the_same_queries(isolated_dirs):
    written = synthetic.write_mnist_idx(isolated_dirs / "data", 80, 40, seed=0)
    images = np.concatenate([written["train"]["images"], written["test"]["images"]])
    labels = np.concatenate([written["train"]["labels"], written["test"]["labels"]])
    split = ae.test_vs_test_split("mnist", 12, seed=0)
    sched = ae.BSchedule("geometric", 1.0, 50.0, anneal_epochs=2, finetune_epochs=1)
    result = ae.compare(
        images, labels, split, [4], methods=("lsh", "itq"), progress=False,
        autoencoder=dict(hidden=16, schedule=sched, batch_size=40))
    table, codes = result  # an evaluation.Result, as evaluation.run returns
    assert set(table["method"]) == {"tanh_ae", "lsh", "itq"}
    assert set(table["metric"]) == {"precision@90", "map_all", "binary_fraction", "fit_seconds"}
    assert codes[("tanh_ae", 4)].query.shape == (12, 4) and codes[("lsh", 4)].database.shape == (40, 4)
    assert set(result.fitted) == {("tanh_ae", 4), ("lsh", 4), ("itq", 4)}
    hashers = ae.autoencoders(result)
    assert list(hashers) == [4] and isinstance(hashers[4], ae.TanhAEHasher)
    assert np.array_equal(hashers[4].encode(images[split.query]), codes[("tanh_ae", 4)].query)
    assert result.metrics("mnist")["mnist/tanh_ae/4/binary_fraction"] == pytest.approx(
        ae.binary_fraction(hashers[4].activations(images[split.database])))
    lsh = table[(table.method == "lsh") & (table.metric == "precision@90")].value.item()
    c = codes[("lsh", 4)]
    want = ae.evaluate_excluding_self(c.query, c.database, labels[split.query], labels[split.database],
                                      ae.self_positions(split), ["precision@90"])["precision@90"]
    assert lsh == pytest.approx(want)


def test_profile_sizes_and_candidate_schedule():
    sizes = ae.PROFILE_SIZES
    assert sizes["paper"]["n_train"] is None  # profile paper trains on the whole training split
    assert sizes["quick"]["n_train"] == 10000 and len(sizes["quick"]["select_seeds"]) >= 3
    assert len(sizes["paper"]["select_all_bits_seeds"]) >= 3
    quick = ae.candidate_schedule(ae.DEFAULT_B_END, ae.DEFAULT_PACE, stages=sizes["quick"]["stages"],
                                  finetune_stages=sizes["quick"]["finetune_stages"])
    assert np.allclose(quick.values(), 10 ** np.array([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    low = ae.candidate_schedule(100.0, 1, stages=7, finetune_stages=1, hidden_b_ratio=0.5)
    assert np.allclose(low.values(), [1, 10 ** 0.5, 10, 10 ** 1.5, 100, 100, 100, 100])
    assert low.hidden_b_end == pytest.approx(50.0)
    for bad in (0, -1.0, float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="hidden_b_ratio must be a finite number > 0"):
            ae.candidate_schedule(100.0, 1, stages=7, finetune_stages=1, hidden_b_ratio=bad)
    with pytest.raises(ValueError, match="b_end .* must be a number"):
        ae.candidate_schedule(0.5, 1, stages=7, finetune_stages=1)


# --------------------------------------------------------------------------- #
# notebook 03's report helpers
# --------------------------------------------------------------------------- #


def _held_out(bf, prec, mse=0.04):
    """A run's history_ whose last epoch measured the held-out images."""
    log = {"epoch": 1, "b": 1000.0, "val_binary_fraction": bf, "val_mse_binary": mse,
           "val_mse_continuous": 0.03, "val_precision@90": prec}
    return {"logs": [log], "schedule": {"anneal_epochs": 1}}


def _selection_runs(low_bf=0.4):
    """b_end 100 retrieves better but one run ends continuous; b_end 1000 ends binary everywhere."""
    runs = {(1000.0, 1, b, s): _held_out(0.998, 0.50) for b, s in DESIGN}
    runs.update({(100.0, 1, b, s): _held_out(0.999, 0.60) for b, s in DESIGN})
    runs[(100.0, 1, 8, 0)] = _held_out(low_bf, 0.62)
    return runs


def test_report_selection_writes_the_rules_choice(isolated_dirs):
    from hashstudy.reporting import Report

    report = Report("03_tanh_autoencoder", "smoke")
    sel = ae.report_selection(report, _selection_runs(), DESIGN, key="mnist", b_end=1000.0, pace=1)
    assert sel.chosen["b_end"] == 1000.0 and len(sel.final) == 6 and len(sel.candidates) == 2
    m = report.metrics
    assert m["mnist/validation/schedule/b_end"] == 1000.0 and m["mnist/validation/schedule/pace"] == 1
    assert m["mnist/validation/schedule/precision@90"] == pytest.approx(0.50)
    assert m["mnist/validation/b_end_1000_pace_1/qualifies"] == 1.0
    assert m["mnist/validation/b_end_100_pace_1/qualifies"] == 0.0
    assert m["mnist/validation/b_end_100_pace_1/min_binary_fraction"] == pytest.approx(0.4)
    assert "(3 runs per schedule: 8 bits seed 0, 16 bits seed 0, 16 bits seed 1) chooses b_end = 1000" in sel.text
    assert sel.text.endswith("This run's parameters are the rule's choice.")
    for name in ("schedule_selection_runs", "schedule_ladder", "schedule_selection"):
        assert (report.dir / f"mnist_{name}.csv").exists()
    # another run's schedule is named; a rule that finds nothing writes no choice
    other = ae.report_selection(Report("03_tanh_autoencoder", "smoke", run="x"), _selection_runs(), DESIGN,
                                key="mnist", b_end=100.0, pace=1)
    assert other.text.endswith("This run uses b_end = 100 and stage_epochs = 1 instead.")
    runs = {k: _held_out(0.5, 0.6) for k in _selection_runs()}
    report = Report("03_tanh_autoencoder", "smoke", run="none")
    none = ae.report_selection(report, runs, DESIGN, key="mnist", b_end=1000.0, pace=1)
    assert none.chosen is None and none.text.startswith("**The rule on held-out training images** chooses nothing")
    assert not any("/schedule/" in k for k in report.metrics)
    assert report.metrics["mnist/validation/b_end_1000_pace_1/qualifies"] == 0.0
    empty = ae.report_selection(report, {}, DESIGN, key="mnist", b_end=1000.0, pace=1)
    assert empty.final is None and empty.chosen is None and "No selection runs" in empty.text


def _result(p90_ae=(0.6, 0.7), p90_lsh=(0.3, 0.4), bf=(0.995, 0.999), bits=(8, 16)):
    import pandas as pd

    from hashstudy import evaluation

    rows = []
    for m, p90 in (("tanh_ae", p90_ae), ("lsh", p90_lsh), ("itq", (0.65, 0.75))):
        for i, b in enumerate(bits):
            rows += [{"method": m, "bits": b, "metric": "precision@90", "value": p90[i]},
                     {"method": m, "bits": b, "metric": "map_all", "value": p90[i] / 2}]
            if m == "tanh_ae":
                rows.append({"method": m, "bits": b, "metric": "binary_fraction", "value": bf[i]})
            rows.append({"method": m, "bits": b, "metric": "fit_seconds", "value": 1.5})
    return evaluation.Result(pd.DataFrame(rows, columns=["method", "bits", "metric", "value"]))


def test_report_comparison_claims_and_texts(isolated_dirs):
    from hashstudy import protocols
    from hashstudy.reporting import Report

    report = Report("03_tanh_autoencoder", "smoke")
    wide = ae.report_comparison(report, _result(), "mnist")
    assert report.metrics["mnist/lsh/16/precision@90"] == 0.4
    assert "mnist/tanh_ae/8/binary_fraction" in report.metrics
    assert not any("fit_seconds" in k for k in report.metrics)
    assert wide.loc[("precision@90", "tanh_ae"), 16] == 0.7 and list(wide.columns) == [8, 16]
    assert (report.dir / "mnist_precision_vs_bits.csv").exists()
    ae.report_claims(report, _result(), "mnist")
    assert report.metrics["mnist/tanh_ae/all_bits/above_lsh_precision@90"] == 1.0
    assert report.metrics["mnist/tanh_ae/all_bits/min_binary_fraction"] == pytest.approx(0.995)
    ae.report_claims(report, _result(p90_lsh=(0.3, 0.7)), "mnist")  # equal at 16 bits is not above
    assert report.metrics["mnist/tanh_ae/all_bits/above_lsh_precision@90"] == 0.0
    table = ae.paper_vs_ours(report.metrics, "mnist")
    above = table.set_index("key").loc["mnist/tanh_ae/all_bits/above_lsh_precision@90"]
    assert above.ours == 0.0 and "each query excluded" in above.note
    assert all("Not measured" in n for n in ae.paper_vs_ours(report.metrics, "kmnist").note)

    split = protocols.Split(dataset="mnist", protocol="test-vs-test", name="tvt", seed=0, query=np.arange(2),
                            database=np.arange(4), train=np.arange(2))
    sched = ae.BSchedule("geometric", 1.0, 1000.0, anneal_epochs=3, finetune_epochs=1)
    text = ae.summary_text({"MNIST": (split, _result())}, seed=3, schedule=sched, b_end=1000.0, pace=1,
                           chosen={"b_end": 1000.0, "pace": 1})
    assert text.splitlines()[0] == ("- MNIST (tvt, seed 3): precision@90 of the autoencoder / LSH / ITQ: "
                                    "8 bits 0.600 / 0.300 / 0.650; 16 bits 0.700 / 0.400 / 0.750.")
    assert text.splitlines()[1].endswith("the rule on held-out training images: b_end 1e+03, pace 1.")
    sel = ae.Selection(text="The rule chose.")
    assert ae.schedule_text(sched, b_end=1000.0, pace=1, selection=sel).startswith(
        f"**Schedule.** b climbs to 1000 at 1 epoch(s) per rung ({sched.epochs} epochs); the paper's reading "
        "is b to 1000 at one epoch per rung (the same). The rule chose.")
    assert "(the same)" not in ae.schedule_text(sched, b_end=100.0, pace=1, selection=sel)


def test_report_validation_end(isolated_dirs):
    from types import SimpleNamespace

    from hashstudy.reporting import Report

    report = Report("03_tanh_autoencoder", "smoke")
    hashers = {8: SimpleNamespace(history_=_held_out(0.99, 0.5, 0.02)),
               16: SimpleNamespace(history_=_held_out(1.0, 0.6, 0.01))}
    end = ae.report_validation_end(report, hashers, key="mnist", b_end=1000.0, pace=1, seed=0)
    assert list(end.bits) == [8, 16]
    assert report.metrics["mnist/validation/tanh_ae/16/precision@90"] == 0.6
    assert report.metrics["mnist/validation/tanh_ae/8/mse_binary"] == 0.02
    assert (report.dir / "mnist_schedule_validation_end.csv").exists()


def test_check_parameters_and_rgb_skip_reason(isolated_dirs):
    kw = dict(headline_bits=16, b_schedule="geometric", conv_activation="relu", dataset="mnist",
              rgb_dataset="cifar10", b_start=1.0, select_b_ends=[100, 1000.0], select_paces=[1])
    assert ae.check_parameters([8, 16], **kw) == ([8, 16], [100.0, 1000.0], [1])
    with pytest.raises(ValueError, match="headline_bits"):
        ae.check_parameters([8, 32], **kw)
    with pytest.raises(ValueError, match="would share the metric keys"):
        ae.check_parameters([16], **{**kw, "dataset": "folder:a/x", "rgb_dataset": "folder:b/x"})
    with pytest.raises(ValueError, match="b_end"):
        ae.check_parameters([16], **{**kw, "select_b_ends": [0.5]})
    assert ae.rgb_skip_reason(False, "cifar10") == "switched off (cifar=False)"
    assert ae.rgb_skip_reason(True, "") == "switched off (rgb_dataset empty)"
    assert ae.rgb_skip_reason(True, "cifar10").startswith("CIFAR-10 not found under")
    assert ae.rgb_skip_reason(True, "folder:mine") is None  # a folder named by the user is loaded


def test_figures_moved_to_plots_and_the_new_ones():
    import matplotlib.pyplot as plt

    from hashstudy.plots import autoencoder as figures

    for name in ("plot_binarisation", "plot_schedule_selection", "plot_activation_histograms",
                 "plot_scaled_tanh", "plot_retrieval", "plot_reconstructions"):
        assert callable(getattr(figures, name)) and not hasattr(ae, name)  # figures live in plots
    fig = figures.plot_precision_vs_bits(_result(bits=(8, 32)), title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["8", "32"]
    ys = {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()}
    assert ys["tanh_ae"] == [0.6, 0.7] and ys["lsh"] == [0.3, 0.4]
    plt.close(fig)

    class Fake:
        n_bits = 4

        def reconstruct(self, x, binarise=True):
            return x if binarise else 255 - x

    images = np.zeros((3, 6, 6, 1), dtype=np.uint8)
    fig = figures.plot_hasher_reconstructions(Fake(), images)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["input", "continuous code", "4-bit code"] and len(fig.axes) == 9
    plt.close(fig)
    fig = figures.plot_hasher_reconstructions(Fake(), images, continuous=False)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["input", "4-bit code"]
    plt.close(fig)

    def history(fraction):
        return {"logs": [{"epoch": e, "b": 10.0 ** e, "binary_fraction": fraction, "mse_binary": 0.1,
                          "mse_continuous": 0.05} for e in (1, 2)]}

    from types import SimpleNamespace

    hashers = {8: SimpleNamespace(history_=history(0.9)), 16: SimpleNamespace(history_=history(0.99))}
    for key, n_marks in (("mnist", 1), ("cifar10", 0)):  # the paper states a share for MNIST, 16 bits
        fig = figures.plot_hashers_binarisation(hashers, key)
        marks = [ln for ln in fig.axes[1].get_lines() if getattr(ln, "_hashstudy_paper", None)]
        assert len(marks) == n_marks
        plt.close(fig)

