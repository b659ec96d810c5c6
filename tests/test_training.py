import numpy as np
import pytest
import torch
from torch import nn

from hashstudy import training


def _problem(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _ce(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def test_fit_learns_and_is_deterministic():
    x, y = _problem()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = nn.Linear(5, 2)
        hist = training.fit(model, (x, y), _ce, epochs=15, batch_size=32, lr=0.05, seed=3,
                            progress=False)
        runs.append((hist.loss, model.weight.detach().clone()))
    assert runs[0][1].equal(runs[1][1]) and runs[0][0] == runs[1][0]
    assert runs[0][0][-1] < 0.5 * runs[0][0][0]
    acc = (training.predict(model, x).argmax(1) == y.numpy()).mean()
    assert acc > 0.9


def test_linear_schedule_reaches_the_floor():
    x, y = _problem(64)
    model = nn.Linear(5, 2)
    seen = []
    training.fit(model, (x, y), _ce, epochs=4, batch_size=16, lr=1.0, optimizer="sgd",
                 schedule="linear", final_lr_ratio=0.01, progress=False,
                 on_epoch_end=lambda e, m: seen.append(e))
    assert seen == [0, 1, 2, 3]


def test_bad_arguments():
    x, y = _problem(8)
    with pytest.raises(ValueError, match="allowed values: 'sgd', 'adam'"):
        training.fit(nn.Linear(5, 2), (x, y), _ce, epochs=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="same length"):
        training.fit(nn.Linear(5, 2), (x, y[:4]), _ce, epochs=1)
    with pytest.raises(ValueError, match="allowed values"):
        training.fit(nn.Linear(5, 2), (x, y), _ce, epochs=1, schedule="warm")


def test_cached_model_trains_once():
    x, y = _problem(64)
    calls = []

    def train(model):
        calls.append(1)
        h = training.fit(model, (x, y), _ce, epochs=2, progress=False)
        return {"history": h, "note": np.float32(1.5)}

    m1, info1, loaded1 = training.cached_model("toy", {"n": 64}, lambda: nn.Linear(5, 2), train)
    m2, info2, loaded2 = training.cached_model("toy", {"n": 64}, lambda: nn.Linear(5, 2), train)
    assert (loaded1, loaded2) == (False, True) and len(calls) == 1
    assert info1 == info2 and info2["note"] == 1.5 and len(info2["history"]["loss"]) == 2
    assert m1.weight.equal(m2.weight)
    training.cached_model("toy", {"n": 65}, lambda: nn.Linear(5, 2), train)
    assert len(calls) == 2  # a different key trains again


def test_cached_weights_are_kept_per_thread_count():
    x, y = _problem(64)
    calls = []

    def train(model):
        calls.append(torch.get_num_threads())
        training.fit(model, (x, y), _ce, epochs=1, progress=False)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        training.cached_model("toy-threads", {"n": 64}, lambda: nn.Linear(5, 2), train)
        training.cached_model("toy-threads", {"n": 64}, lambda: nn.Linear(5, 2), train)
        torch.set_num_threads(2)
        *_, loaded = training.cached_model("toy-threads", {"n": 64}, lambda: nn.Linear(5, 2), train)
    finally:
        torch.set_num_threads(before)
    assert calls == [1, 2] and not loaded
