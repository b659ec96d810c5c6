"""The report command: runs, up-to-date skips, failures, recorded skips, ablation runs."""
import json

import nbformat
import pytest

from hashstudy import regenerate

PARAMS = 'profile = "quick"  # profile\nseed = 0  # seed\nrun = ""  # ablation run name\nvalue = 1  # a number\n'


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


GOOD = """
from hashstudy.reporting import Report
rep = Report("10_good", profile, run=run or None)
rep.add("toy/value", value)
rep.skip("stl10", "STL-10 is not present under the data root")
rep.save()
"""


@pytest.fixture
def folder(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "10_good.ipynb", GOOD)
    _notebook(nbs / "11_bad.ipynb", "raise RuntimeError('this notebook is broken')")
    return nbs


def test_failure_does_not_stop_others_and_skips_are_reported(folder, tmp_path):
    out = regenerate.regenerate("smoke", jobs=2, folder=folder, echo=lambda *a: None)
    status = {o.notebook: o for o in out}
    assert status["10_good"].status == "ran"
    assert status["11_bad"].status == "failed" and "broken" in status["11_bad"].detail
    assert status["10_good"].skipped_parts == {"stl10": "STL-10 is not present under the data root"}
    rep = tmp_path / "reports" / "10_good" / "smoke"
    assert json.loads((rep / "metrics.json").read_text()) == {"toy/value": 1}
    assert (rep / "10_good.ipynb").exists()
    # no partial executed notebook of the failed one
    assert not list((tmp_path / "reports" / "11_bad" / "smoke").glob("*.ipynb"))
    table = regenerate.summary_table(out)
    assert "1 ran, 0 up to date, 1 failed" in table and "skipped stl10" in table

    again = {o.notebook: o.status for o in regenerate.regenerate(
        "smoke", jobs=1, folder=folder, echo=lambda *a: None)}
    assert again == {"10_good": "up to date", "11_bad": "failed"}


def test_changed_notebook_reruns_and_ablation_runs_are_separate(folder, tmp_path):
    regenerate.regenerate("smoke", only=["10_good"], folder=folder, echo=lambda *a: None)
    _notebook(folder / "10_good.ipynb", GOOD + "\n# edited\n")
    out = regenerate.regenerate("smoke", only=["10_good"], folder=folder, echo=lambda *a: None)
    assert out[0].status == "ran"
    regenerate.regenerate("smoke", only=["10_good"], params={"value": 7}, run="v7",
                          folder=folder, echo=lambda *a: None)
    base = tmp_path / "reports" / "10_good"
    assert json.loads((base / "runs" / "v7" / "metrics.json").read_text()) == {"toy/value": 7}
    assert json.loads((base / "smoke" / "metrics.json").read_text()) == {"toy/value": 1}


def test_unknown_notebook_and_profile(folder):
    with pytest.raises(ValueError, match="unknown notebook '12_x'.*10_good"):
        regenerate.regenerate("smoke", only=["12_x"], folder=folder)
    with pytest.raises(ValueError, match="allowed values"):
        regenerate.regenerate("fast", folder=folder)


def test_compact_streams_keeps_what_a_terminal_shows(tmp_path):
    from hashstudy.regenerate import compact_streams

    bar = "".join(f"\rtraining: {i:3d}%" for i in range(0, 101, 10))
    nb = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "start\n"},
        {"output_type": "stream", "name": "stderr", "text": bar},
        {"output_type": "stream", "name": "stderr", "text": "\x1b[A\n"},
        {"output_type": "stream", "name": "stdout", "text": ["done ", "in 3 s\n"]},
        {"output_type": "execute_result", "data": {"text/plain": "1"}, "metadata": {},
         "execution_count": 1},
    ]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    compact_streams(path)
    outs = json.loads(path.read_text())["cells"][0]["outputs"]
    assert [o["output_type"] for o in outs] == ["stream", "stream", "stream", "execute_result"]
    assert outs[0]["text"] == "start\n"
    assert outs[1]["text"].strip() == "training: 100%"      # the last redraw only
    assert "\x1b" not in outs[1]["text"] and "\r" not in outs[1]["text"]
    assert outs[2]["text"] == "done in 3 s\n"
