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


# -- resumable training ---------------------------------------------------------------


class _Interrupt(Exception):
    pass


def _staged_training(x, y, calls, stop_at=None):
    """Two fit calls (stages) with dropout (the torch generator) and a loss that counts
    its calls; raises _Interrupt at loss call number ``stop_at``."""

    def loss(model, xb, yb):
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at:
            raise _Interrupt
        return nn.functional.cross_entropy(nn.functional.dropout(model(xb), 0.2), yb)

    def train(model):
        h1 = training.fit(model, (x, y), loss, epochs=3, batch_size=16, lr=0.05,
                          schedule="cosine", seed=1, progress=False,
                          on_epoch_end=lambda e, m: {"e": e})
        h2 = training.fit(model, (x, y), loss, epochs=2, batch_size=16, lr=0.01,
                          optimizer="sgd", seed=2, progress=False)
        return {"loss": h1.loss + h2.loss, "logs": h1.logs}

    return train


def _build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))


def _checkpoints():
    from hashstudy import config
    return sorted(p.name for p in config.cache_dir("models").glob("*.ckpt"))


@pytest.mark.parametrize("stop_at", [2 * 4 + 1, 3 * 4 + 1 * 4 + 2])  # in stage 1; in stage 2
def test_interrupted_training_resumes_bit_identically(stop_at):
    x, y = _problem(64)  # 4 batches per epoch
    calls = []
    ref, ref_info, _ = training.cached_model("toy-ref", {"n": 64}, _build,
                                             _staged_training(x, y, calls))
    total = len(calls)
    assert total == 5 * 4 and not _checkpoints()

    calls = []
    with pytest.raises(_Interrupt):
        training.cached_model("toy-resume", {"n": 64}, _build,
                              _staged_training(x, y, calls, stop_at=stop_at))
    done = (stop_at - 1) // 4 * 4  # loss calls of the finished epochs
    assert _checkpoints()  # the finished epochs are saved
    calls = []
    model, info, loaded = training.cached_model("toy-resume", {"n": 64}, _build,
                                                _staged_training(x, y, calls))
    assert not loaded and len(calls) == total - done  # finished epochs are not repeated
    assert info["loss"] == ref_info["loss"] and info["logs"] == ref_info["logs"]
    for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
        assert a.equal(b)
    assert not _checkpoints()  # deleted once the weights are saved


def test_interruption_in_on_epoch_end_repeats_only_that_epoch():
    x, y = _problem(64)
    calls = []

    def train(model, stop=None):
        def hook(e, m):
            if e == stop:
                raise _Interrupt

        return training.fit(model, (x, y), lambda m, a, b: (calls.append(1), _ce(m, a, b))[1],
                            epochs=4, batch_size=32, seed=5, progress=False, on_epoch_end=hook)

    ref, ref_info, _ = training.cached_model("toy-hook-ref", {}, _build, train)
    with pytest.raises(_Interrupt):
        training.cached_model("toy-hook", {}, _build, lambda m: train(m, stop=2))
    calls.clear()
    model, info, _ = training.cached_model("toy-hook", {}, _build, train)
    assert len(calls) == 2 * 2  # epochs 3 and 4 (epoch 3 ended in the interrupted hook)
    assert info["loss"] == ref_info["loss"]
    assert all(a.equal(b) for a, b in zip(ref.parameters(), model.parameters()))


def test_train_seconds_count_every_run_of_a_resumed_training():
    """A training resumed from its checkpoints reports the time of all its runs, and a later
    load from the cache hands that figure to the report (timing.trainings_loaded)."""
    import time

    from hashstudy import timing

    x, y = _problem(64)

    def train(model, stop=None):
        def hook(e, m):
            time.sleep(0.25)  # each epoch takes at least a quarter of a second
            if e == stop:
                raise _Interrupt

        return training.fit(model, (x, y), _ce, epochs=4, batch_size=32, seed=5,
                            progress=False, on_epoch_end=hook)

    with pytest.raises(_Interrupt):
        training.cached_model("toy-secs", {}, _build, lambda m: train(m, stop=2))  # 2 saved
    t0 = time.perf_counter()
    _, info, loaded = training.cached_model("toy-secs", {}, _build, train)
    last_run = time.perf_counter() - t0  # epochs 3 and 4 only: about half a second
    assert not loaded
    assert info["train_seconds"] >= max(0.25 * 4, last_run)  # the two saved epochs count too
    timing.reset()
    _, again, loaded = training.cached_model("toy-secs", {}, _build, train)
    assert loaded and again["train_seconds"] == info["train_seconds"]
    (stem,) = timing.trainings_loaded()
    assert stem.startswith("toy-secs-") and timing.trainings_loaded()[stem] == info["train_seconds"]


def test_in_progress_lists_interrupted_trainings_until_they_finish():
    from hashstudy import config, scale

    x, y = _problem(64)
    assert training.in_progress() == []
    calls = []
    with pytest.raises(_Interrupt):  # stage 1 (3 epochs) done, stage 2 stopped in its 2nd epoch
        training.cached_model("toy-prog", {"n": 64}, _build,
                              _staged_training(x, y, calls, stop_at=3 * 4 + 4 + 2))
    (row,) = training.in_progress()
    assert row["model"].startswith("toy-prog-") and (row["fit"], row["epoch"], row["epochs"]) == \
        (2, 1, 2)
    assert row["seconds"] > 0 and row["seconds_per_epoch"] > 0
    text = scale.progress_text()
    assert f"{row['model']}  fit 2: epoch 1/2" in text
    (config.cache_dir("models") / "broken-net.fit1.ckpt").write_bytes(b"not a checkpoint")
    assert {r["model"]: r["epoch"] for r in training.in_progress()}["broken-net"] is None
    assert "broken-net  fit 1: checkpoint unreadable" in scale.progress_text()
    (config.cache_dir("models") / "broken-net.fit1.ckpt").unlink()
    training.cached_model("toy-prog", {"n": 64}, _build, _staged_training(x, y, []))
    assert training.in_progress() == []  # finished: its checkpoints are gone
    assert "none" in scale.progress_text()


def test_a_finished_fit_restores_its_state_without_training(tmp_path):
    x, y = _problem(64)
    path = tmp_path / "one.ckpt"
    m1 = _build()
    h1 = training.fit(m1, (x, y), _ce, epochs=2, batch_size=16, seed=3, progress=False,
                      checkpoint=path)
    after = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert path.exists()
    m2 = _build()
    h2 = training.fit(m2, (x, y), lambda *a: pytest.fail("trained again"), epochs=2,
                      batch_size=16, seed=3, progress=False, checkpoint=path)
    assert h2.loss == h1.loss and all(a.equal(b) for a, b in zip(m1.parameters(), m2.parameters()))
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert after[0].equal(again[0]) and after[1:] == again[1:]  # the random states go on


def test_no_checkpoint_outside_cached_model_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _problem(32)
    training.fit(_build(), (x, y), _ce, epochs=2, progress=False)
    training.cached_model("toy-off", {}, _build, lambda m: training.fit(
        m, (x, y), _ce, epochs=2, progress=False, checkpoint=False))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_damaged_or_foreign_checkpoint_is_reported_and_ignored(tmp_path, capsys):
    x, y = _problem(64)
    ref = _build()
    h_ref = training.fit(ref, (x, y), _ce, epochs=2, batch_size=16, progress=False)
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"not a checkpoint")
    model = _build()
    hist = training.fit(model, (x, y), _ce, epochs=2, batch_size=16, progress=False,
                        checkpoint=path)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "bad.ckpt unusable" in out and "from scratch" in out
    assert hist.loss == h_ref.loss and all(a.equal(b) for a, b in zip(ref.parameters(),
                                                                       model.parameters()))
    # a checkpoint of another training (here: another learning rate) is not used either
    training.fit(_build(), (x, y), _ce, epochs=2, batch_size=16, lr=0.1, progress=False,
                 checkpoint=path)
    assert "differs in lr" in capsys.readouterr().out


def test_damaged_checkpoint_inside_cached_model(capsys):
    from hashstudy import cache, config
    x, y = _problem(64)
    parts = {"n": 64}
    stem = f"toy-bad-{cache.key({**parts, '_threads': torch.get_num_threads()})}"
    bad = config.cache_dir("models") / f"{stem}.fit1.ckpt"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\x00" * 10)
    calls = []
    _, info, _ = training.cached_model("toy-bad", parts, _build, _staged_training(x, y, calls))
    assert len(calls) == 5 * 4 and "unusable" in capsys.readouterr().out
    assert not _checkpoints()


def test_resumed_progress_bar_starts_at_the_resumed_position(tmp_path, monkeypatch):
    import tqdm.auto
    x, y = _problem(64)
    path = tmp_path / "bar.ckpt"
    with pytest.raises(_Interrupt):
        training.fit(_build(), (x, y), _ce, epochs=3, batch_size=16, progress=False,
                     checkpoint=path, on_epoch_end=lambda e, m: e == 1 and (_ for _ in ()).throw(_Interrupt()))
    seen = {}
    real = tqdm.auto.tqdm

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    training.fit(_build(), (x, y), _ce, epochs=3, batch_size=16, progress=True, checkpoint=path)
    assert seen["initial"] == 1 * 4 and seen["total"] == 3 * 4


# -- devices --------------------------------------------------------------------------


def test_default_device(monkeypatch):
    monkeypatch.delenv("HASHSTUDY_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert training.default_device() == torch.device(expected)
    assert training.default_device("CPU") == torch.device("cpu")
    assert training.default_device("cuda:1") == torch.device("cuda:1")
    assert training.default_device(torch.device("mps")) == torch.device("mps")
    monkeypatch.setenv("HASHSTUDY_DEVICE", "cpu")
    assert training.default_device() == torch.device("cpu")
    assert training.default_device("cuda") == torch.device("cuda")  # the argument wins
    monkeypatch.setenv("HASHSTUDY_DEVICE", "gpu")
    with pytest.raises(ValueError, match="HASHSTUDY_DEVICE 'gpu'.*'cpu', 'cuda', 'cuda:N', 'mps'"):
        training.default_device()
    for bad in ("gpu", "cuda:x", "tpu", 3):
        with pytest.raises(ValueError, match="allowed values: 'cpu', 'cuda', 'cuda:N', 'mps'"):
            training.default_device(bad)


def test_fit_and_predict_on_an_explicit_cpu_match_the_default(monkeypatch):
    monkeypatch.setenv("HASHSTUDY_DEVICE", "cpu")
    x, y = _problem(64)
    results = []
    for device in (None, "cpu", torch.device("cpu")):
        model = _build()
        hist = training.fit(model, (x, y), _ce, epochs=2, batch_size=16, progress=False,
                            device=device)
        results.append((hist.loss, training.predict(model, x, device=device)))
    for loss, out in results[1:]:
        assert loss == results[0][0] and np.array_equal(out, results[0][1])
    assert isinstance(results[0][1], np.ndarray)
    with pytest.raises(ValueError, match="allowed values"):
        training.fit(_build(), (x, y), _ce, epochs=1, progress=False, device="gpu")


def test_cpu_cache_key_is_unchanged():
    from hashstudy import cache, config
    x, y = _problem(32)
    parts = {"n": 32, "lr": 0.1, "name": "x"}
    threads = torch.get_num_threads()
    expected = config.cache_dir("models") / f"toy-key-{cache.key({**parts, '_threads': threads})}.pt"
    for device in (None, "cpu"):
        training.cached_model("toy-key", parts, _build,
                              lambda m: training.fit(m, (x, y), _ce, epochs=1, progress=False),
                              device=device)
        assert expected.exists()
        assert [p.name for p in expected.parent.glob("toy-key-*.pt")] == [expected.name]


def _hasher_makers():
    from hashstudy import autoencoder, cnnh, ddh, dsth, dsth_journal
    return [lambda d: dsth.DSTH(8, (8, 8, 1), widths=(4,), hidden=8, device=d),
            lambda d: cnnh.CNNH(8, (8, 8, 1), device=d),
            lambda d: autoencoder.TanhAEHasher(8, device=d),
            lambda d: ddh.DDH(8, device=d),
            lambda d: dsth_journal.DSTHJournal(32, device=d),
            lambda d: dsth_journal.LabelCopy(8, device=d)]


@pytest.mark.parametrize("which", range(6))
def test_every_hasher_takes_a_device(which):
    make = _hasher_makers()[which]
    assert make("cpu").device == "cpu" and make(None).device is None
    with pytest.raises(ValueError, match="unknown device 'gpu0'; allowed values: 'cpu', "):
        make("gpu0")


def test_ddh_key_and_repr_do_not_depend_on_the_device_argument():
    from hashstudy import ddh
    assert ddh.DDH(8)._key_params() == ddh.DDH(8, device="cpu")._key_params()
    assert "device" not in ddh.DDH(8)._key_params()
