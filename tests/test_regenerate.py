"""The report command: runs, up-to-date skips, failures, recorded skips, ablation runs."""
import json
import re

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
    run_dir = base / "runs" / "v7" / "smoke"  # keyed by profile: a quick run of v7 goes elsewhere
    assert json.loads((run_dir / "metrics.json").read_text()) == {"toy/value": 7}
    assert (run_dir / "10_good.ipynb").exists() and (run_dir / ".inputs.json").exists()
    assert json.loads((base / "smoke" / "metrics.json").read_text()) == {"toy/value": 1}
    nb = folder / "10_good.ipynb"
    assert regenerate.output_dir(nb, "smoke", "v7") == run_dir
    assert regenerate.output_dir(nb, "quick", "v7") == base / "runs" / "v7" / "quick"
    assert regenerate.up_to_date(nb, "smoke", {"value": 7}, "v7")
    assert not regenerate.up_to_date(nb, "quick", {"value": 7}, "v7")


TABLES = """
import os
import pandas as pd
from hashstudy import claims, reporting
version = os.environ["TABLE_VERSION"]
rep = reporting.Report("12_tables", profile)
rep.table("common", pd.DataFrame({"v": [version]}))
rep.table(f"only_v{version}", pd.DataFrame({"v": [version]}))
if os.environ.get("FAIL_AFTER_TABLES"):
    raise RuntimeError("stopped after writing two tables")
rep.add("toy/version", int(version))
rep.save()
# the notebook reads back what it has just written, not the previous report
assert reporting.load_metrics("12_tables", profile) == {"toy/version": int(version)}
ctx = claims._Context(profile)
assert ctx.report("12_tables")[0] == {"toy/version": int(version)}
assert ctx.where("12_tables") == f"reports/12_tables/{profile}/metrics.json"
print("reports in", rep.dir, "metrics at", rep.path("metrics.json"))
"""


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_report_reaches_its_folder_only_when_its_notebook_finishes(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "12_tables.ipynb", TABLES)
    quiet = dict(only=["12_tables"], folder=nbs, echo=lambda *a: None, force=True)
    monkeypatch.setenv("TABLE_VERSION", "1")
    assert regenerate.regenerate("smoke", **quiet)[0].status == "ran"
    folder = tmp_path / "reports" / "12_tables" / "smoke"
    assert sorted(_files(folder)) == [".inputs.json", "12_tables.ipynb", "common.csv",
                                      "meta.json", "metrics.json", "only_v1.csv"]
    state = json.loads((folder / ".inputs.json").read_text())
    assert state["files"] == ["common.csv", "meta.json", "metrics.json", "only_v1.csv"]
    # the executed notebook shows where a reader finds the report, not the staging folder
    assert f"reports in {folder}" in (folder / "12_tables.ipynb").read_text()
    (folder / "threads.csv").write_text("written by another command\n")
    before = _files(folder)

    # a run that fails after writing two tables changes nothing
    monkeypatch.setenv("TABLE_VERSION", "2")
    monkeypatch.setenv("FAIL_AFTER_TABLES", "1")
    out = regenerate.regenerate("smoke", **quiet)
    assert out[0].status == "failed" and "stopped after writing" in out[0].detail
    failed = _files(folder)
    assert failed.pop(".12_tables.log")  # papermill's output, kept to say what went wrong
    assert failed == before and not (folder / ".staging").exists()
    assert not (folder / "only_v2.csv").exists()

    # a run that finishes replaces the report: its files in, its predecessor's stale ones out
    monkeypatch.delenv("FAIL_AFTER_TABLES")
    assert regenerate.regenerate("smoke", **quiet)[0].status == "ran"
    after = _files(folder)
    assert sorted(after) == [".inputs.json", "12_tables.ipynb", "common.csv", "meta.json",
                             "metrics.json", "only_v2.csv", "threads.csv"]
    assert after["common.csv"].decode().split() == ["v", "2"]
    assert after["threads.csv"] == before["threads.csv"]  # not this notebook's file: kept
    assert json.loads(after["metrics.json"]) == {"toy/version": 2}
    assert not (folder / ".staging").exists()
    assert regenerate.up_to_date(nbs / "12_tables.ipynb", "smoke", {}, None)


def test_outside_the_report_command_a_report_is_written_in_place(tmp_path, monkeypatch):
    from hashstudy import config, reporting

    rep = reporting.Report("12_tables", "smoke")
    assert rep._out == rep.dir
    rep.add("toy/a", 1)
    rep.save()
    assert json.loads((rep.dir / "metrics.json").read_text()) == {"toy/a": 1}
    # a staging folder set for another report does not redirect this one
    other = tmp_path / "reports" / "13_other" / "smoke" / config.STAGING_NAME
    monkeypatch.setenv(config.STAGING_ENV, str(other))
    assert config.written_dir(rep.dir) == rep.dir
    assert config.written_dir(other.parent) == other
    assert reporting.Report("12_tables", "smoke")._out == rep.dir


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


# -- checked parameters and the command line -----------------------------------

TYPED = '''profile = "quick"  # profile
seed = 0  # seed
run = ""  # ablation run name
flag = False  # a switch
k = 25  # neighbours
rate = 0.5  # a rate; 1 is fine too
name = "ncut"  # a word: ncut | zero
bits = [16, 32]  # code lengths
rates = [0.1, 1]  # numbers
hidden = []  # widths, any list
extra = {}  # per method, e.g. {"sth": {"max_train": 5000}}
epochs = None  # an integer; None: the profile's choice
widths: list = None  # e.g. [32, 64]
'''


@pytest.fixture
def typed(tmp_path):
    nbs = tmp_path / "typed"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(TYPED)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# typed"), cell, nbformat.v4.new_code_cell("k")]
    nbformat.write(nb, nbs / "20_typed.ipynb")
    return nbs


def test_parameters_are_read_from_the_tagged_cell(typed):
    params = regenerate.parameters("20_typed", folder=typed)
    assert list(params)[:4] == ["profile", "seed", "run", "flag"]
    assert params["k"].default == 25 and params["k"].kind == "int" and params["k"].help == "neighbours"
    assert params["rates"].item_kind == "float" and params["hidden"].item_kind is None
    assert params["epochs"].kind == "any" and params["widths"].help == "e.g. [32, 64]"


@pytest.mark.parametrize("name, raw, value", [
    ("flag", "true", True), ("flag", "True", True), ("flag", "FALSE", False), ("flag", "1", True),
    ("flag", "0", False), ("flag", "yes", True), ("flag", "No", False),
    ("k", "10", 10), ("k", " 7 ", 7), ("rate", "1", 1.0), ("rate", "0.25", 0.25),
    ("rate", "1e-3", 0.001), ("name", "zero", "zero"), ("name", "[1]", "[1]"),
    ("name", "true", "true"), ("bits", "[8, 64]", [8, 64]), ("bits", "[8,64]", [8, 64]),
    ("bits", "(8, 64)", [8, 64]), ("bits", "[]", []), ("rates", "[1, 0.5]", [1.0, 0.5]),
    ("hidden", "['a', 2]", ["a", 2]), ("extra", '{"sth": {"max_train": 5000}}',
                                      {"sth": {"max_train": 5000}}),
    ("extra", "{'sth': {}}", {"sth": {}}), ("epochs", "20", 20), ("epochs", "null", None),
    ("epochs", "None", None), ("epochs", "fast", "fast"), ("widths", "[32,64]", [32, 64]),
])
def test_values_take_the_type_of_the_default(typed, name, raw, value):
    out = regenerate.check_params(typed / "20_typed.ipynb", [(name, raw)])
    assert out == {name: value} and type(out[name]) is type(value)


@pytest.mark.parametrize("name, raw, message", [
    ("flag", "maybe", "parameter flag of 20_typed expects a boolean (true/false), got 'maybe'"),
    ("flag", "2", "expects a boolean"),
    ("k", "2.5", "parameter k of 20_typed expects an integer, got '2.5'"),
    ("k", "ten", "expects an integer"), ("rate", "fast", "expects a number, got 'fast'"),
    ("rate", "nan", "expects a number"), ("bits", "16", "expects a list of integers"),
    ("bits", "[16, 'x']", "expects a list of integers"), ("bits", "[16, true]", "list of integers"),
    ("bits", "[1, 2", "expects a list"), ("extra", "[1]", "expects a dict"),
    ("extra", "sth", "expects a dict"),
])
def test_bad_values_are_refused_saying_what_was_expected(typed, name, raw, message):
    with pytest.raises(regenerate.UsageError, match=re.escape(message)):
        regenerate.check_params(typed / "20_typed.ipynb", [(name, raw)])


def test_unknown_reserved_and_repeated_names(typed):
    with pytest.raises(regenerate.UsageError) as err:
        regenerate.check_params("20_typed", [("kk", "5")], folder=typed)
    assert str(err.value) == ("unknown parameter 'kk' of 20_typed (did you mean 'k'?); its "
                              "parameters: seed, flag, k, rate, name, bits, rates, hidden, extra, "
                              "epochs, widths")
    with pytest.raises(regenerate.UsageError, match="use --profile"):
        regenerate.check_params("20_typed", [("profile", "paper")], folder=typed)
    with pytest.raises(regenerate.UsageError, match="use --run"):
        regenerate.check_params("20_typed", [("run", "x")], folder=typed)
    with pytest.raises(regenerate.UsageError, match="k is given twice"):
        regenerate.check_params("20_typed", [("k", "5"), ("k", "6")], folder=typed)
    # typed values (the library call) are checked the same way
    assert regenerate.check_params("20_typed", {"k": 5, "rate": 1}, folder=typed) == \
        {"k": 5, "rate": 1.0}
    with pytest.raises(regenerate.UsageError, match="expects an integer, got '5'"):
        regenerate.check_params("20_typed", {"k": "5"}, folder=typed)


def test_regenerate_checks_params_before_running(folder, tmp_path):
    with pytest.raises(regenerate.UsageError, match="did you mean 'value'"):
        regenerate.regenerate("smoke", only=["10_good"], params={"valu": 7}, run="x",
                              folder=folder, echo=lambda *a: None)
    with pytest.raises(regenerate.UsageError, match="expects an integer"):
        regenerate.regenerate("smoke", only=["10_good"], params={"value": "7"}, run="x",
                              folder=folder, echo=lambda *a: None)
    assert not (tmp_path / "reports" / "10_good").exists()


def test_parse_command_converts_and_resolves(typed):
    cmd = regenerate.parse_command(["--only", "20_typed.ipynb", "-p", "flag", "True", "-p", "bits",
                                    "[8]", "--run", "f", "--profile", "smoke"], folder=typed)
    assert cmd.only == ["20_typed"] and cmd.profile == "smoke" and cmd.run == "f"
    assert cmd.params == {"flag": True, "bits": [8]}
    assert regenerate.parse_command([], folder=typed).only is None


@pytest.mark.parametrize("argv, message", [
    (["--only", "20_typed", "-p", "kk", "5", "--run", "typo"],
     "error: unknown parameter 'kk' of 20_typed (did you mean 'k'?); its parameters: seed, flag,"),
    (["--only", "20_typed", "-p", "flag", "maybe", "--run", "x"],
     "error: parameter flag of 20_typed expects a boolean (true/false), got 'maybe'"),
    (["--only", "20_typd"], "error: unknown notebook '20_typd' (did you mean '20_typed'?); "
                            "available: 20_typed"),
    (["-p", "k", "5", "--run", "x"], "error: -p and --run need --only NOTEBOOK"),
    (["--run", "x"], "error: -p and --run need --only NOTEBOOK"),
    (["--only", "20_typed", "-p", "k", "5"], "error: -p needs --run NAME"),
    (["--only", "20_typed", "-p", "k", "5", "--run", "a b"], "error: run name 'a b' must be"),
    (["--only", "20_typed", "-p", "k", "5", "--run", ".."], "error: run name '..' must be"),
    (["--only", "20_typed", "-p", "k"], "error: argument -p/--param: expected 2 arguments"),
    (["--profile", "fast"], "error: argument --profile: invalid choice: 'fast'"),
    (["--jobs", "0"], "error: --jobs must be at least 1"),
    (["--bogus"], "error: unrecognized arguments: --bogus"),
])
def test_command_line_mistakes_are_one_line_and_exit_2(typed, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(regenerate, "_folder", lambda folder: typed)
    monkeypatch.setattr(regenerate, "regenerate", lambda *a, **k: pytest.fail("must not run"))
    assert regenerate.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_misspelt_parameter_of_a_real_notebook_is_refused(capsys):
    argv = ["--only", "01_dsth_mm2015", "-p", "kk", "5", "--run", "typo"]
    assert regenerate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown parameter 'kk' of 01_dsth_mm2015 (did you mean 'k'?)")
    assert regenerate.parse_command(["--only", "01_dsth_mm2015", "-p", "finetune", "False", "--run",
                                     "x"]).params == {"finetune": False}


# --------------------------------------------------------------------------- #
# Finer up-to-date keys, shared inputs, timings
# --------------------------------------------------------------------------- #


def test_library_modules_follow_imports_not_mentions(tmp_path):
    a, b, c = tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "c.ipynb"
    _notebook(a, "from hashstudy import dsth\n%matplotlib inline\n")
    _notebook(b, "from hashstudy import ddh\n")
    # a comment, a string and a docstring naming ddh are not imports
    _notebook(c, "import hashstudy.dsth\n# see hashstudy.ddh\nx = 'hashstudy.ddh is another'\n")
    mods_a = regenerate.library_modules(a)
    assert "dsth" in mods_a and "training" in mods_a and "__init__" in mods_a
    assert "ddh" not in mods_a and "regenerate" not in mods_a
    assert "ddh" in regenerate.library_modules(b)
    assert regenerate.library_modules(c) == mods_a
    assert regenerate._library_digest(a) == regenerate._library_digest(c)
    assert regenerate._library_digest(a) != regenerate._library_digest(b)


def test_a_real_notebook_depends_on_its_method_only():
    nbs = regenerate.notebooks()
    mods = {nb.stem: set(regenerate.library_modules(nb)) for nb in nbs}
    assert "dsth" in mods["01_dsth_mm2015"] and "ddh" not in mods["01_dsth_mm2015"]
    assert "autoencoder" in mods["03_tanh_autoencoder"]
    assert "dsth_journal" not in mods["04_ddh"]
    # importlib.import_module("hashstudy.data") inside features counts as an import
    assert "data" in regenerate.library_modules.__globals__["_imported_modules"](
        'importlib.import_module("hashstudy.data")')


def test_summary_goes_stale_when_a_report_it_shows_changes(tmp_path):
    summary = tmp_path / f"{regenerate.SUMMARY}.ipynb"
    _notebook(summary, "from hashstudy import claims\n")
    other = tmp_path / "10_good.ipynb"
    _notebook(other, "from hashstudy import claims\n")
    key = regenerate.inputs_key(summary, "smoke", {}, None)
    key_other = regenerate.inputs_key(other, "smoke", {}, None)
    metrics = tmp_path / "reports" / "10_good" / "smoke" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"a": 1}')
    assert regenerate.inputs_key(summary, "smoke", {}, None) != key
    key = regenerate.inputs_key(summary, "smoke", {}, None)
    metrics.write_text('{"a": 2}')
    assert regenerate.inputs_key(summary, "smoke", {}, None) != key
    # another notebook does not read it, but it reads the benchmarks its verdicts cite
    assert regenerate.inputs_key(other, "smoke", {}, None) == key_other
    bench = tmp_path / "reports" / "benchmarks" / "smoke" / "metrics.json"
    bench.parent.mkdir(parents=True)
    bench.write_text('{"b": 1}')
    assert regenerate.inputs_key(other, "smoke", {}, None) != key_other


def test_shared_features_are_what_the_notebooks_use_by_default():
    # the prepared feature sets must be the ones the notebooks ask for at each profile, or
    # preparing is waste: a profile's input_size, else the notebook's input_size parameter
    import importlib

    modules = {"00_baselines": "baseline_study", "02_latent_layer_cnn": "latent",
               "04_ddh": "ddh", "05_dsth_tcyb2018": "dsth_journal", "06_cross_paper": "crosspaper"}
    assert set(modules) == set(regenerate.SHARED_USERS)
    for profile in ("quick", "paper"):
        sizes = set()
        for stem in regenerate.SHARED_USERS:
            params = regenerate.parameters(stem)
            table = importlib.import_module(f"hashstudy.{modules[stem]}").PROFILE_SIZES[profile]
            size = table.get("input_size") or (params["input_size"].default
                                               if "input_size" in params else None)
            if size:
                sizes.add(size)
            assert "cifar10" in regenerate._notebook_path(stem, None).read_text(), stem
        shared = {size for name, split, backbone, size in regenerate.SHARED_FEATURES[profile]}
        assert sizes == shared, (profile, sizes, shared)
        for name, split, backbone, size in regenerate.SHARED_FEATURES[profile]:
            assert (name, backbone) == ("cifar10", "efficientnet_lite0")
            assert split in ("train", "test")


def test_timings_are_collected_per_notebook_and_step(folder, tmp_path):
    out = regenerate.regenerate("smoke", jobs=1, only=["10_good"], folder=folder,
                                echo=lambda *a: None)
    out.append(regenerate.Outcome("(shared inputs)", "ran", 3.0,
                                  meta={"step_seconds": {"features": 2.5, "other": 0.5},
                                        "cache": {"cache_misses": 2}}))
    table = regenerate.timings_table(out, "smoke")
    assert list(table.notebook) == ["10_good", "(shared inputs)"]
    assert table.set_index("notebook").loc["(shared inputs)", "features"] == 2.5
    good = table.set_index("notebook").loc["10_good"]
    assert good.wall_s > 0 and good.other >= 0
    where = regenerate.write_timings(out, "smoke", 10.0, 1, echo=lambda *a: None)
    assert where == tmp_path / "reports" / "regeneration" / "smoke"
    text = (where / "timings.md").read_text()
    assert "| (shared inputs) | 3 | 0 | 2 |" in text and "partly cached" not in text
    meta = json.loads((where / "meta.json").read_text())
    assert meta["caches"] == "cold" and meta["cache_computed"] == 2
    assert (where / "timings.png").stat().st_size > 1000
    # a run that loads what it cached itself is cold only if the cache was empty at its start
    out[-1] = regenerate.Outcome("(shared inputs)", "ran", 1.0,
                                 meta={"cache": {"cache_hits": 3, "cache_misses": 1}})
    regenerate.write_timings(out, "smoke", 10.0, 1, echo=lambda *a: None, entries_at_start=5)
    assert json.loads((where / "meta.json").read_text())["caches"] == "partly cached"
    regenerate.write_timings(out, "smoke", 10.0, 1, echo=lambda *a: None, entries_at_start=0)
    meta = json.loads((where / "meta.json").read_text())
    assert meta["caches"] == "cold" and meta["cache_entries_at_start"] == 0
    assert "was empty at the start" in (where / "timings.md").read_text()


def test_cache_entries_counts_files_but_not_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHSTUDY_CACHE", str(tmp_path / "c"))
    assert regenerate.cache_entries() == 0
    (tmp_path / "c" / "features").mkdir(parents=True)
    (tmp_path / "c" / "features" / "a.npz").write_bytes(b"x")
    (tmp_path / "c" / "features" / "a.npz.lock").write_bytes(b"")
    assert regenerate.cache_entries() == 1


def test_longest_notebooks_start_first(tmp_path):
    nbs = []
    for name, wall in (("10_a", 5.0), ("11_b", None), ("12_c", 50.0), ("13_d", 20.0)):
        nb = tmp_path / f"{name}.ipynb"
        _notebook(nb, "pass")
        nbs.append(nb)
        if wall is not None:
            meta = tmp_path / "reports" / name / "quick" / "meta.json"
            meta.parent.mkdir(parents=True)
            meta.write_text(json.dumps({"wall_time_s": wall}))
    order = [nb.stem for nb in regenerate.longest_first(nbs, "quick")]
    assert order == ["11_b", "12_c", "13_d", "10_a"]  # never run (unknown) first, then longest


def test_library_modules_follow_a_subpackage(tmp_path):
    find = regenerate.library_modules.__globals__["_imported_modules"]
    assert {"plots", "plots.ddh"} <= find("from hashstudy.plots import ddh")
    assert {"plots", "plots.ddh"} <= find("import hashstudy.plots.ddh")
    # inside plots/ddh.py, `from .. import ddh` is the method module, `from . import x` a sibling
    assert "ddh" in find("from .. import ddh", package="plots")
    assert "plots.style" in find("from . import style", package="plots")
    assert "dsth" in find("from . import dsth", package="")
    nb = tmp_path / "a.ipynb"
    _notebook(nb, "from hashstudy import plots\n")
    mods = regenerate.library_modules(nb)
    assert "plots" in mods and "__init__" in mods
    # the package's file is hashed: a notebook using plots depends on plots/__init__.py
    files = regenerate.library_modules.__globals__["_library_files"]()
    assert files["plots"].name == "__init__.py" and files["plots"].parent.name == "plots"


SLOW = """
import pathlib, time
import pandas as pd
from hashstudy.reporting import Report
import numpy as np
Report("12_slow", profile).table("partial", pd.DataFrame({{"x": [1]}}))
pathlib.Path({flag!r}).write_text("started")
t0 = time.time()
try:
    while time.time() - t0 < 300:  # busy, as a training is
        np.linalg.svd(np.random.default_rng(0).random((300, 300)))
except KeyboardInterrupt:
    time.sleep(3)  # slow to stop, as a training that saves a checkpoint first
    raise
"""

DRIVER = """
import sys
from pathlib import Path
from hashstudy import regenerate
regenerate._folder = lambda folder: Path(sys.argv[1])
sys.exit(regenerate.main(["--profile", "smoke", "--only", "12_slow"]))
"""


def _wait_for(path, proc, seconds=120):
    import time

    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, "the report command ended before its notebook started"
        assert time.time() - t0 < seconds, "the notebook did not start"
        time.sleep(0.2)


@pytest.mark.parametrize("command, how", [("regenerate", "once"), ("scale", "once"),
                                          ("regenerate", "twice"), ("regenerate", "timeout")])
def test_sigterm_interrupts_cleanly_and_leaves_no_partial_report(tmp_path, command, how):
    """``kill PID`` (SIGTERM) of the report command, or of ``python -m hashstudy.scale`` in front
    of it, stops the running notebook and its kernel and removes the unfinished notebook, as
    Ctrl-C does: exit status 130, no ``.running.ipynb``, no table of the unfinished run, the
    previous report untouched, no kernel left running. A second SIGTERM while the command
    waits for its notebook to stop (``how="twice"``) does not cut that clean-up short; nor
    does signalling as ``timeout`` does (``how="timeout"``: SIGTERM to the command, then to
    its whole process group, papermill and the kernel included)."""
    import time

    import os
    import signal
    import subprocess
    import sys

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    flag = tmp_path / "started"
    _notebook(nbs / "12_slow.ipynb", SLOW.format(flag=str(flag)))
    driver = tmp_path / "driver.py"
    if command == "regenerate":
        driver.write_text(DRIVER)
    else:  # scale's front end, with a scale run pointing at the slow notebook
        driver.write_text(
            "import sys, subprocess\n"
            "from hashstudy import scale\n"
            "scale.SCALE_RUNS = (scale.ScaleRun(notebook='12_slow', run='r', profile='smoke'),)\n"
            "real = subprocess.Popen\n"  # the child is the plain report command on our folder
            f"subprocess.Popen = lambda argv: real([sys.executable, {str(tmp_path / 'inner.py')!r},"
            " sys.argv[1]])\n"
            "sys.exit(scale.main(['12_slow']))\n")
        (tmp_path / "inner.py").write_text(DRIVER)
    folder = tmp_path / "reports" / "12_slow" / "smoke"
    folder.mkdir(parents=True)
    previous = {"metrics.json": '{"toy/value": 0}', "12_slow.ipynb": "{}", "partial.csv": "x\n0\n"}
    for name, text in previous.items():
        (folder / name).write_text(text)
    proc = subprocess.Popen([sys.executable, str(driver), str(nbs)], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_for(flag, proc)
        proc.send_signal(signal.SIGTERM)
        if how == "twice":  # the notebook takes 3 s to stop: the command is still waiting
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)
        elif how == "timeout":
            os.killpg(proc.pid, signal.SIGTERM)  # the driver leads its own session
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    # the previous report as it was: the unfinished run's table never reached the folder
    left = {p.name: p.read_text() for p in folder.iterdir() if p.name != ".12_slow.log"}
    assert left == previous, out  # (the hidden log of papermill's output stays, ignored by git)
    # nothing of the session is left: the kernel died with its notebook
    assert _session_members(proc.pid) == [], "processes of the run are still alive"


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (read from /proc: Linux; elsewhere none are seen)."""
    from pathlib import Path

    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            members.append(int(stat.parent.name))
    return members
