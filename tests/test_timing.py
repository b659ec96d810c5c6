"""Step timings: exclusive attribution, counters, and what reports record."""
import json
import time

import numpy as np
import pytest

from hashstudy import cache, timing
from hashstudy.reporting import Report


@pytest.fixture(autouse=True)
def fresh():
    timing.reset()
    yield
    timing.reset()


def test_nested_steps_count_exclusively():
    with timing.step("training"):
        time.sleep(0.05)
        with timing.step("graphs"):
            time.sleep(0.10)
        time.sleep(0.05)
    t = timing.totals()
    assert 0.09 <= t["graphs"] < 0.2
    # the outer step does not also count the inner one's 0.1 s
    assert 0.09 <= t["training"] < 0.18


def test_decorator_and_reset():
    @timing.timed("evaluation")
    def work():
        time.sleep(0.03)
        return 7

    assert work() == 7 and work() == 7
    assert timing.totals()["evaluation"] >= 0.05
    timing.reset()
    assert timing.totals() == {}


def test_unknown_step_is_refused_with_the_allowed_names():
    with pytest.raises(ValueError, match="decode, features, graphs, training, evaluation"):
        with timing.step("fitting"):
            pass
    with pytest.raises(ValueError, match="unknown step"):
        timing.timed("plots")


def test_an_exception_still_closes_the_step():
    with pytest.raises(KeyError):
        with timing.step("training"):
            with timing.step("decode"):
                raise KeyError("x")
    assert set(timing.totals()) == {"training", "decode"}
    with timing.step("graphs"):
        pass
    assert "graphs" in timing.totals()


def test_cached_arrays_counts_misses_then_hits(tmp_path):
    path = tmp_path / "a.npz"
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    cache.cached_arrays(path, compute)
    cache.cached_arrays(path, compute)
    cache.cached_arrays(path, compute)
    assert len(calls) == 1
    assert timing.counts() == {"cache_misses": 1, "cache_hits": 2}


def test_report_records_its_own_steps_and_cache_traffic(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHSTUDY_REPORTS", str(tmp_path))
    with timing.step("decode"):  # before the report exists: not its time
        time.sleep(0.05)
    timing.count("cache_hits", 5)
    report = Report("00_test", "smoke")
    with timing.step("training"):
        time.sleep(0.05)
    cache.cached_arrays(tmp_path / "c.npz", lambda: {"x": np.zeros(2)})
    report.add("k", 1.0)
    report.save()
    meta = json.loads((report.dir / "meta.json").read_text())
    steps = meta["step_seconds"]
    assert "decode" not in steps
    assert steps["training"] >= 0.04
    assert steps["other"] >= 0
    assert sum(steps.values()) <= meta["wall_time_s"] + 0.2
    assert meta["cache"] == {"cache_hits": 0, "cache_misses": 1}
    assert meta["trainings_loaded"] == {} and meta["trainings_loaded_seconds"] == 0
    assert meta["threads"] >= 1


def test_report_lists_the_trainings_it_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHSTUDY_REPORTS", str(tmp_path))
    timing.reset()
    timing.loaded_training("before-the-report", 99.0)  # another report's load: not counted
    report = Report("00_test", "smoke")
    timing.loaded_training("net-a", 120.04)
    timing.loaded_training("net-b", 30.0)
    timing.loaded_training("old-file", None)  # weights saved before the time was recorded
    report.save()
    meta = json.loads((report.dir / "meta.json").read_text())
    assert meta["trainings_loaded"] == {"net-a": 120.0, "net-b": 30.0, "old-file": None}
    assert meta["trainings_loaded_seconds"] == 150.0
