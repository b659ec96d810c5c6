import json

import numpy as np
import pandas as pd
import pytest

from hashstudy import reporting


def test_report_writes_flat_metrics_and_meta(tmp_path):
    rep = reporting.Report("00_demo", "quick")
    rep.add("mnist/pixels/itq/32/map_all", np.float32(0.25))
    rep.add_many("mnist/pixels/lsh/32", {"map@1000": 0.5, "hd2p": np.float64(0.125)})
    rep.parameters(bits=[16, 32], seed=0)
    rep.save()
    out = tmp_path / "reports" / "00_demo" / "quick"
    assert json.loads((out / "metrics.json").read_text()) == {
        "mnist/pixels/itq/32/map_all": 0.25, "mnist/pixels/lsh/32/map@1000": 0.5,
        "mnist/pixels/lsh/32/hd2p": 0.125}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["parameters"] == {"bits": [16, 32], "seed": 0} and meta["profile"] == "quick"


def test_ablation_run_goes_to_its_own_folder_per_profile(tmp_path):
    for profile, value in (("quick", 1.0), ("smoke", 2.0)):
        rep = reporting.Report("00_demo", profile, run="k50")
        rep.add("a/b", value)
        rep.save()
    runs = tmp_path / "reports" / "00_demo" / "runs" / "k50"
    assert rep.dir == runs / "smoke"
    # a smoke run of the same name does not overwrite the quick one
    assert json.loads((runs / "quick" / "metrics.json").read_text()) == {"a/b": 1.0}
    assert json.loads((runs / "smoke" / "metrics.json").read_text()) == {"a/b": 2.0}
    assert not (tmp_path / "reports" / "00_demo" / "quick").exists()
    for bad in ("..", ".", "a/b", "a b"):
        with pytest.raises(ValueError, match="plain token"):
            reporting.Report("00_demo", "quick", run=bad)


def test_bad_keys_values_and_profile():
    rep = reporting.Report("00_demo", "smoke")
    with pytest.raises(ValueError, match="metric key part"):
        rep.add("mnist/has space/x", 1.0)
    with pytest.raises(TypeError, match="numbers"):
        rep.add("a/b", "0.5")
    with pytest.raises(ValueError, match="allowed values"):
        reporting.Report("00_demo", "full")
    assert reporting.metric_key("cifar10", "itq", 32, "map@1000") == "cifar10/itq/32/map@1000"


def test_compare_with_paper(monkeypatch):
    frame = pd.DataFrame({"paper": ["p", "p", "q"], "key": ["a/x", "a/y", "a/x"],
                          "value": [0.5, 0.4, 0.9], "source": ["Table 1"] * 3, "note": ["", "n", ""]})
    monkeypatch.setattr(reporting, "paper_numbers",
                        lambda paper=None: frame[frame.paper == paper].reset_index(drop=True))
    table = reporting.compare_with_paper({"a/x": 0.55}, "p", why={"a/": "JPEG mirror."})
    assert table["key"].tolist() == ["a/x", "a/y"]
    assert table.loc[0, "difference"] == pytest.approx(0.05)
    assert np.isnan(table.loc[1, "ours"])
    assert table.loc[1, "note"] == "n JPEG mirror."


def test_paper_numbers_file_is_well_formed():
    frame = reporting.paper_numbers()
    assert list(frame.columns) == ["paper", "key", "value", "source", "note"]
    assert frame["value"].map(lambda v: isinstance(v, (int, float))).all()
    assert not frame.duplicated(["paper", "key", "source"]).any()
