"""Ablation sweeps on Dask: cells, failures, reruns, command-line checks and aggregation."""
import json
import math
import time

import nbformat
import numpy as np
import pandas as pd
import pytest

from hashstudy import sweep

PARAMS = ('profile = "quick"  # profile\nseed = 0  # seed\nrun = ""  # ablation run name\n'
          'scale = 1.0  # the swept parameter\n')
# Report.save records torch's version; this toy notebook does not need torch itself, so a
# stand-in keeps each cell's kernel quick.
BODY = """
import sys, types
sys.modules.setdefault("torch", types.SimpleNamespace(__version__="not imported"))
from hashstudy import config
from hashstudy.reporting import Report
if scale < 0 and not (config.data_root() / "fixed").exists():
    raise ValueError(f"negative scale {scale}")
rep = Report("10_toy", profile, run=run or None)
rep.add("toy/a", scale * 10 + seed)
rep.add("toy/b", seed * seed)
rep.save()
"""


def _notebook(path, body=BODY, params=PARAMS):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def nbs(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "10_toy.ipynb")
    return folder


def _summary(path):
    return pd.read_csv(path).set_index(["scale", "metric"])


@pytest.fixture
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local:
        yield local


def test_sweep_on_a_local_cluster_fails_reruns_and_aggregates(nbs, tmp_path, capsys, cluster):
    t0 = time.time()
    argv = ["10_toy", "--notebooks", str(nbs), "--grid", "scale=1,-1", "--seeds", "0,1",
            "--profile", "smoke", "--name", "scales", "--scheduler", cluster.scheduler_address,
            "--no-progress", "--metric", "toy/a"]
    assert sweep.main(argv) == 1  # two cells fail
    out = capsys.readouterr().out
    assert "2 ran, 0 already done, 2 failed" in out
    assert f"dask: scheduler {cluster.scheduler_address} (2 worker(s) now)" in out

    root = tmp_path / "reports" / "10_toy" / "sweeps" / "scales" / "smoke"
    ok, bad = root / "scale=1,seed=0", root / "scale=-1,seed=1"
    assert sorted(p.name for p in ok.iterdir()) == ["10_toy.ipynb", "meta.json", "metrics.json",
                                                   "params.json"]
    assert json.loads((ok / "metrics.json").read_text()) == {"toy/a": 10.0, "toy/b": 0}
    assert json.loads((ok / "meta.json").read_text())["run"] == "scales"
    assert json.loads((ok / "params.json").read_text())["parameters"] == {"scale": 1.0, "seed": 0}
    assert "negative scale -1.0" in (bad / "error.txt").read_text()
    assert not (bad / "metrics.json").exists()
    assert "scale=-1,seed=1" in out and "ValueError: negative scale" in out
    # the notebook's report landed only in the cell folders; nothing half-written is left
    assert sorted(p.name for p in (tmp_path / "reports" / "10_toy").iterdir()) == ["sweeps"]
    assert not (root / ".partial").exists()

    summary = _summary(root / "summary.csv")  # --metric toy/a: only that metric
    assert list(summary.index) == [(1.0, "toy/a")]
    assert summary.loc[(1.0, "toy/a"), "mean"] == pytest.approx(10.5)
    assert summary.loc[(1.0, "toy/a"), "std"] == pytest.approx(math.sqrt(0.5))
    assert summary.loc[(1.0, "toy/a"), "n"] == 2
    assert sorted(p.name for p in (root / "figures").iterdir()) == ["toy__a.png"]
    tidy = pd.read_csv(root / "tidy.csv")
    assert list(tidy.columns) == ["scale", "seed", "metric", "value"] and len(tidy) == 4

    # the rerun: finished cells are kept, failed ones are retried
    (tmp_path / "data" / "fixed").touch()
    before = (ok / "metrics.json").stat().st_mtime_ns
    result = sweep.run_sweep(nbs / "10_toy.ipynb", {"scale": [1.0, -1.0]}, [0, 1], "smoke",
                             "scales", scheduler=cluster.scheduler_address, folder=nbs,
                             progress=False, echo=lambda *a: None)
    assert [(o.cell, o.status) for o in result.outcomes] == [
        ("scale=1,seed=0", "done before"), ("scale=1,seed=1", "done before"),
        ("scale=-1,seed=0", "ran"), ("scale=-1,seed=1", "ran")]
    assert not result.failed
    assert (ok / "metrics.json").stat().st_mtime_ns == before
    assert not (bad / "error.txt").exists() and (bad / "metrics.json").exists()
    summary = _summary(root / "summary.csv")
    assert summary.loc[(-1.0, "toy/a"), "mean"] == pytest.approx(-9.5)
    assert summary.loc[(-1.0, "toy/b"), "mean"] == pytest.approx(0.5)
    assert summary.loc[(-1.0, "toy/b"), "std"] == pytest.approx(math.sqrt(0.5))
    assert sorted(p.name for p in (root / "figures").iterdir()) == ["toy__a.png", "toy__b.png"]
    assert len(pd.read_csv(root / "tidy.csv")) == 8
    print(f"sweep test: {time.time() - t0:.0f} s")


def test_the_local_cluster_is_sized_to_the_machine(monkeypatch):
    import distributed

    made = []

    class Cluster:
        def __init__(self, **kwargs):
            made.append(kwargs)

        def close(self):
            pass

    class Client:
        def __init__(self, cluster):
            pass

        def close(self):
            pass

    monkeypatch.setattr(distributed, "LocalCluster", Cluster)
    monkeypatch.setattr(distributed, "Client", Client)
    monkeypatch.setattr(sweep, "_cores", lambda: 8)
    threads = []
    for workers, cells in ((None, 3), (None, 20), (2, 20)):
        with sweep._dask(None, workers, cells, lambda *a: None) as (_, per_cell):
            threads.append(per_cell)
    assert [m["n_workers"] for m in made] == [3, 8, 2] and threads == [2, 1, 4]
    assert all(m["threads_per_worker"] == 1 and m["processes"] for m in made)


@pytest.mark.parametrize("extra, message", [
    (["--grid", "scal=1,2"], "error: unknown parameter 'scal' of 10_toy (did you mean 'scale'?)"),
    (["--grid", "scale=1,big"], "error: parameter scale of 10_toy expects a number, got 'big'"),
    (["--grid", "seed=1,2"], "error: seed cannot be a grid parameter: use --seeds"),
    (["--grid", "scale"], "error: --grid takes NAME=V1,V2,..., got 'scale'"),
    (["--grid", "scale=1,,2"], "error: --grid 'scale=1,,2' has an empty value"),
    (["--grid", "scale=1,1.0"], "error: scale value 1 is given twice"),
    (["--grid", "scale=1", "--grid", "scale=2"], "error: grid parameter scale is given twice"),
    (["--seeds", "0,x"], "error: parameter seed of 10_toy expects an integer, got 'x'"),
    (["--name", "a b"], "error: sweep name 'a b' must be a plain token"),
    (["--workers", "2", "--scheduler", "tcp://x:1"], "error: --workers sizes the local cluster"),
])
def test_mistakes_are_one_error_line_and_nothing_runs(nbs, tmp_path, capsys, extra, message):
    assert sweep.main(["10_toy", "--notebooks", str(nbs), "--profile", "smoke", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "reports" / "10_toy").exists()


def test_unknown_notebook(nbs, capsys):
    assert sweep.main(["10_tyo", "--notebooks", str(nbs)]) == 2
    assert "error: unknown notebook '10_tyo' (did you mean '10_toy'?)" in capsys.readouterr().err


def test_cells_and_slugs(nbs):
    cells = sweep.plan(nbs / "10_toy.ipynb", {"scale": [0.5, 2, 1e-5]}, [0, 1])
    assert [c.slug for c in cells] == [
        "scale=0.5,seed=0", "scale=0.5,seed=1", "scale=2,seed=0", "scale=2,seed=1",
        "scale=1e-05,seed=0", "scale=1e-05,seed=1"]
    assert cells[2].params == {"scale": 2.0, "seed": 0}
    odd = sweep._slug({"bits": [16, 32], "name": "a b", "seed": 0})
    assert odd.startswith("bits=16_32,name=a_b,seed=0~") and "/" not in odd
    assert sweep.split_values("[16,32],[64], 'a,b'") == ["[16,32]", "[64]", "'a,b'"]


def _write_cell(root, params, metrics, swept, failed=False):
    cell = sweep.Cell(sweep._slug(params), params, tuple(swept))
    folder = root / cell.slug
    folder.mkdir(parents=True)
    record = sweep._record("10_toy", root.name, root.parent.name, cell)
    (folder / "params.json").write_text(json.dumps(record))
    (folder / "10_toy.ipynb").write_text("{}")
    if failed:
        (folder / "error.txt").write_text("boom\n")
    else:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return cell


def test_aggregation_of_written_cells(tmp_path):
    root = tmp_path / "reports" / "10_toy" / "sweeps" / "grid" / "smoke"
    rng = np.random.default_rng(0)
    expected = {}
    for k in (1, 3):
        for opt in ("adam", "sgd"):
            for seed in (0, 1, 2):
                m = {"c/ddh/16/map@1000": float(rng.random()), "c/ddh/32/map@1000": k + seed,
                     "c/itq/16/map@1000": 0.1}
                _write_cell(root, {"k": k, "opt": opt, "seed": seed}, m, ["k", "opt"])
                expected.setdefault((k, opt), []).append(m["c/ddh/16/map@1000"])
    _write_cell(root, {"k": 5, "opt": "adam", "seed": 0}, {}, ["k", "opt"], failed=True)
    (root / ".partial" / "junk").mkdir(parents=True)

    agg = sweep.aggregate("10_toy", "grid", "smoke", metrics=["c/ddh/*/map@1000"],
                          echo=lambda *a: None)
    assert agg.cells == 12 and agg.missing == ["k=5,opt=adam,seed=0"]
    tidy = pd.read_csv(root / "tidy.csv")
    assert list(tidy.columns) == ["k", "opt", "seed", "metric", "value"] and len(tidy) == 36
    summary = pd.read_csv(root / "summary.csv")
    assert list(summary.columns) == ["k", "opt", "metric", "mean", "std", "n"]
    assert set(summary["metric"]) == {"c/ddh/16/map@1000", "c/ddh/32/map@1000"}
    rows = summary.set_index(["k", "opt", "metric"])
    for (k, opt), values in expected.items():
        row = rows.loc[(k, opt, "c/ddh/16/map@1000")]
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["n"] == 3
        assert rows.loc[(k, opt, "c/ddh/32/map@1000"), "mean"] == pytest.approx(k + 1)
    assert sorted(p.name for p in (root / "figures").iterdir()) == [
        "c__ddh__16__map@1000.png", "c__ddh__32__map@1000.png"]

    # restricted to the cells of a grid: the others do not count
    cells = [sweep.Cell(sweep._slug(p), p, ("k", "opt"))
             for p in ({"k": 3, "opt": "sgd", "seed": s} for s in (0, 1, 2, 3))]
    agg = sweep.aggregate("10_toy", "grid", "smoke", cells=cells, echo=lambda *a: None)
    assert agg.cells == 3 and agg.missing == ["k=3,opt=sgd,seed=3"]
    assert set(pd.read_csv(root / "tidy.csv")["k"]) == {3}
    assert len(list((root / "figures").iterdir())) == 3  # default: every metric

    with pytest.raises(ValueError, match="varies k, opt"):
        sweep.summary_metrics("10_toy", "grid", "smoke")
    with pytest.raises(ValueError, match="no sweep 'nope' of 10_toy"):
        sweep.aggregate("10_toy", "nope", "smoke")


def test_summary_metrics_of_a_seed_sweep(nbs, tmp_path, capsys):
    root = tmp_path / "reports" / "10_toy" / "sweeps" / "seeds" / "smoke"
    for seed, v in enumerate((0.5, 0.7, 0.9)):
        _write_cell(root, {"seed": seed}, {"c/ddh/16/map@1000": v, "c/ddh/16/time": 2.0}, [])
    got = sweep.summary_metrics("10_toy", "seeds", "smoke", metrics=["*/map@1000"])
    assert got.keys() == {"c/ddh/16/map@1000_mean", "c/ddh/16/map@1000_std",
                          "c/ddh/16/map@1000_n"}
    assert got["c/ddh/16/map@1000_mean"] == pytest.approx(0.7)
    assert got["c/ddh/16/map@1000_std"] == pytest.approx(0.2)
    assert got["c/ddh/16/map@1000_n"] == 3
    # the command line re-aggregates without running anything; a seed sweep plots each seed
    assert sweep.main(["10_toy", "--name", "seeds", "--profile", "smoke", "--aggregate-only",
                       "--notebooks", str(nbs)]) == 0
    assert "aggregated 3 cell(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "figures").iterdir()) == [
        "c__ddh__16__map@1000.png", "c__ddh__16__time.png"]
    summary = pd.read_csv(root / "summary.csv")
    assert list(summary.columns) == ["metric", "mean", "std", "n"] and len(summary) == 2
