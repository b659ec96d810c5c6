"""Comparing two reports: shorthands, the sorted table, filters, CSV, clear errors."""
import csv
import json

import pytest

from hashstudy import compare


def _report(folder, metrics, parameters=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if parameters is not None:
        (folder / "meta.json").write_text(json.dumps({"parameters": parameters}))
    return folder


@pytest.fixture
def reports(tmp_path):
    root = tmp_path / "reports"
    _report(root / "04_ddh" / "quick",
            {"cifar10/ddh/32/map@1000": 0.50, "cifar10/ddh/16/map@1000": 0.40,
             "cifar10/itq/32/map@1000": 0.30, "cifar10/ddh/32/hd2p": None, "only/in_a": 1.0,
             "cifar10/ddh/ok": True},
            {"k1": 15, "k2": 6, "hidden": []})
    _report(root / "04_ddh" / "runs" / "k1_5" / "quick",
            {"cifar10/ddh/32/map@1000": 0.45, "cifar10/ddh/16/map@1000": 0.48,
             "cifar10/itq/32/map@1000": 0.30, "cifar10/ddh/32/hd2p": 0.2, "only/in_b": 2,
             "only/in_b2": 3, "cifar10/ddh/ok": False},
            {"k1": 5, "k2": 6, "hidden": []})
    _report(root / "04_ddh" / "runs" / "k1_5" / "smoke", {"cifar10/ddh/32/map@1000": 0.1})
    return root


def test_shared_keys_sorted_by_size_of_change(reports):
    result = compare.compare("04_ddh", "04_ddh/runs/k1_5")
    assert result.a == reports / "04_ddh" / "quick"
    assert result.b == reports / "04_ddh" / "runs" / "k1_5" / "quick"
    keys = [r[0] for r in result.rows]
    assert keys == ["cifar10/ddh/ok", "cifar10/ddh/16/map@1000", "cifar10/ddh/32/map@1000",
                    "cifar10/itq/32/map@1000", "cifar10/ddh/32/hd2p"]  # no difference: last
    assert result.rows[1][1:3] == (0.40, 0.48) and result.rows[1][3] == pytest.approx(0.08)
    assert result.rows[2][3] == pytest.approx(-0.05) and result.rows[0][3] == -1.0
    assert result.rows[-1] == ("cifar10/ddh/32/hd2p", None, 0.2, None)
    assert result.only_a == ["only/in_a"] and result.only_b == ["only/in_b", "only/in_b2"]
    assert result.parameters == {"k1": (15, 5)} and result.shared == 5


def test_spellings_of_a_report(reports, monkeypatch):
    run = reports / "04_ddh" / "runs" / "k1_5"
    assert compare.resolve("04_ddh:quick") == reports / "04_ddh" / "quick"
    assert compare.resolve("04_ddh/quick") == reports / "04_ddh" / "quick"
    assert compare.resolve("04_ddh/runs/k1_5:smoke") == run / "smoke"
    assert compare.resolve("04_ddh/runs/k1_5/smoke") == run / "smoke"
    assert compare.resolve(str(run / "smoke")) == run / "smoke"
    assert compare.resolve(run / "smoke" / "metrics.json") == run / "smoke"
    monkeypatch.chdir(reports)  # a folder of the working directory named like a notebook
    assert compare.resolve("04_ddh") == reports / "04_ddh" / "quick"
    assert compare.resolve("./04_ddh/quick").resolve() == reports / "04_ddh" / "quick"
    with pytest.raises(compare.ReportNotFound, match="04_ddh has no metrics.json; its folders: "
                                                     "quick, runs"):
        compare.resolve("./04_ddh")


def test_command_line_table_top_prefix_and_csv(reports, tmp_path, capsys):
    out_csv = tmp_path / "out" / "diff.csv"
    code = compare.main(["04_ddh", "04_ddh/runs/k1_5", "--prefix", "cifar10/ddh/", "--top", "2",
                         "--csv", str(out_csv)])
    assert code == 0
    out = capsys.readouterr().out
    assert "parameters that differ (A -> B):\n  k1: 15 -> 5" in out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("key")))
    assert lines[header + 1].split() == ["cifar10/ddh/ok", "true", "false", "-1.0000"]
    assert lines[header + 2].split() == ["cifar10/ddh/16/map@1000", "0.4000", "0.4800", "+0.0800"]
    assert "cifar10/itq" not in out
    assert "4 shared keys (2 largest changes shown); 0 only in A, 0 only in B" in out
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["key"] for r in rows] == ["cifar10/ddh/ok", "cifar10/ddh/16/map@1000"]
    assert float(rows[1]["difference"]) == pytest.approx(0.08) and rows[1]["a"] == "0.4"


def test_counts_of_keys_only_in_one_report(reports, capsys):
    assert compare.main(["04_ddh", "04_ddh/runs/k1_5"]) == 0
    assert "5 shared keys; 1 only in A, 2 only in B" in capsys.readouterr().out
    assert compare.main(["04_ddh", "04_ddh/runs/k1_5", "--prefix", "nothing/"]) == 0
    assert "no shared metric keys with that prefix" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["04_ddh", "04_ddh/runs/k1_6"], "error: no report at "),
    (["04_ddh", "04_ddh/runs/k1_6"], "runs of 04_ddh: k1_5"),
    (["04_ddh:smoke", "04_ddh"], "profiles of 04_ddh: quick"),
    (["04_ddh", "04_ddh/runs/k1_5:paper"], "profiles of run k1_5: quick, smoke"),
    (["04_dd", "04_ddh"], "(did you mean '04_ddh'?); reports in "),
    (["04_ddh:fast", "04_ddh"], "unknown profile 'fast'"),
    (["04_ddh/x/y", "04_ddh"], "neither a report folder nor NOTEBOOK[:PROFILE]"),
    (["/nonexistent/report", "04_ddh"], "error: no report folder /nonexistent/report"),
    (["04_ddh"], "error: the following arguments are required: B"),
    (["04_ddh", "04_ddh", "--top", "0"], "error: --top must be at least 1"),
])
def test_missing_reports_are_one_clear_line(reports, capsys, argv, message):
    assert compare.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ")


def test_folder_without_metrics(reports, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert compare.main([str(tmp_path / "empty"), "04_ddh"]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
    bad = _report(tmp_path / "bad", {})
    (bad / "metrics.json").write_text("[1, 2]")
    assert compare.main([str(bad), "04_ddh"]) == 2
    assert "is not a JSON object" in capsys.readouterr().err
