"""The summary: key parsing, protocol-aware ranking, README section, and the static page."""
import json

import pandas as pd
import papermill as pm
import pytest

from hashstudy import config, reporting, summary


def _write_report(nb, metrics, key_protocols, skipped=None):
    out = config.reports_dir(nb, "smoke")
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "meta.json").write_text(json.dumps({"key_protocols": key_protocols,
                                               "skipped": skipped or {}, "wall_time_s": 12.0}))


@pytest.fixture
def reports(monkeypatch):
    _write_report("00_baselines", {
        "cifar10/efficientnet_lite0/itq/32/map@1000": 0.30,
        "cifar10/efficientnet_lite0/lsh/32/map@1000": 0.20,
        "mnist/pixels/itq/32/map_all": 0.41,
    }, {"cifar10/": {"protocol": "query1k", "seed": 0}, "mnist/": {"protocol": "query1k", "seed": 0}})
    _write_report("04_ddh", {
        "cifar10/ddh/32/map@1000": 0.50, "cifar10/itq/32/map@1000": 0.31,
        "cifar10/validation/ddh/32/map@1000": 0.49,  # a model-selection split: never ranked
        "cifar10/labels/expanded/precision": 0.7,
    }, {"cifar10/": {"protocol": "test100pc-train", "seed": 0, "n_query": 1000, "n_database": 50000}},
        skipped={"oxford17": "not present"})
    papers = pd.DataFrame({"paper": ["04_ddh", "04_ddh"],
                           "key": ["cifar10/ddh/32/map@1000", "cifar10/ddh/16/map@1000"],
                           "value": [0.486, 0.447], "source": ["Table 2"] * 2, "note": ["", ""]})
    # the 16-bit number has no measurement in the fake report
    monkeypatch.setattr(reporting, "paper_numbers",
                        lambda paper=None: papers if paper is None else papers[papers.paper == paper])


def test_parse_key():
    assert summary.parse_key("mnist/pixels/itq/32/map_all") == {
        "dataset": "mnist", "method": "itq", "bits": 32, "metric": "map_all", "variant": "pixels"}
    assert summary.parse_key("mnist/latent/48/coarse_to_fine/precision@1000")["variant"] == "coarse_to_fine"
    assert summary.parse_key("cifar10/labels/expanded/precision") == {
        "dataset": "cifar10", "method": "expanded", "bits": None, "metric": "precision",
        "variant": "labels"}


def test_ranking_only_compares_within_a_protocol(reports):
    ranked = summary.ranking("smoke", "map@1000", "cifar10")
    assert set(ranked) == {"query1k", "test100pc-train"}
    q1k = ranked["query1k"]
    assert list(q1k.index) == ["itq (efficientnet_lite0) [00]", "lsh (efficientnet_lite0) [00]"]
    assert list(ranked["test100pc-train"].index) == ["ddh [04]", "itq [04]"]
    label = summary.protocol_label("smoke", "cifar10", "test100pc-train")
    assert label == ("cifar10, protocol `test100pc-train`, measured by 04_ddh "
                     "(1000 queries, 50000 database items, seed 0)")


def test_paper_tables_and_readme(reports, tmp_path):
    tables = summary.paper_tables("smoke")
    t = tables["04_ddh"].set_index("key")
    assert t.loc["cifar10/ddh/32/map@1000", "difference"] == pytest.approx(0.014)
    assert t.loc["cifar10/ddh/32/map@1000", "protocol"] == "test100pc-train"
    assert list(t.index) == ["cifar10/ddh/32/map@1000"]  # no row without a measurement
    assert len(summary.paper_tables("smoke", measured_only=False)["04_ddh"]) == 2
    long = summary.paper_vs_ours("smoke")
    assert list(long.columns[:3]) == ["notebook", "paper_title", "key"]
    assert long.source.tolist() == ["Table 2"] and long.ours.notna().all()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{summary.README_START}\nOLD-SECTION\n{summary.README_END}\noutro\n")
    assert summary.update_readme("smoke", readme)
    text = readme.read_text()
    from hashstudy import claims

    ledger = claims.load()
    # the results section is the verdict table: one row per claim of the ledger
    assert all(f"`{cid}`" in text or f"| {cid} |" in text for cid in ledger["id"])
    assert text.count("\n|") >= len(ledger) + 2
    assert "paper_vs_ours.csv" in text
    assert text.startswith("intro\n") and text.endswith("outro\n") and "OLD-SECTION" not in text
    assert not summary.update_readme("smoke", readme)  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no results markers"):
        summary.update_readme("smoke", readme)


@pytest.fixture
def cross_report(reports):
    """A fake notebook-06 report: its ranking, a results table and a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _write_report("06_cross_paper", {"cifar10/itq/32/map@1000": 0.31},
                  {"cifar10/": {"protocol": "cross", "seed": 0}})
    out = config.reports_dir("06_cross_paper", "smoke")
    meta = json.loads((out / "meta.json").read_text())
    meta["parameters"] = {"datasets": ["cifar10"], "headline_bits": 32}
    (out / "meta.json").write_text(json.dumps(meta))
    pd.DataFrame({"rank": [1, 2], "method": ["CrossMethodA", "ITQ"], "key": ["a", "itq"],
                  "mean": [0.5, 0.31], "std": [0.01, 0.02], "seeds": [3, 3],
                  "vs_next": [">", ""]}).to_csv(out / "cifar10_ranking_32.csv", index=False)
    pd.DataFrame({"method": ["CrossMethodA"], "map@1000": ["0.500 ± 0.010"]}).to_csv(
        out / "cifar10_results_32.csv", index=False)
    fig, ax = plt.subplots()
    ax.plot([16, 32], [0.4, 0.5])
    fig.savefig(out / "cifar10_map_vs_bits.png")
    plt.close(fig)
    return out


def test_page_without_notebook_06_ranks_within_each_protocol(reports, tmp_path):
    executed = tmp_path / "99.ipynb"
    pm.execute_notebook(str(config.repo_root() / "notebooks" / "99_summary.ipynb"), str(executed),
                        parameters={"profile": "smoke"}, progress_bar=False, kernel_name="python3",
                        cwd=str(tmp_path))
    html = summary.render_html(executed, tmp_path / "summary.html").read_text()
    assert "Notebook 06 not available" in html
    assert "query1k" in html and "test100pc-train" in html
    assert (config.reports_dir("99_summary", "smoke") / "map1000_cifar10.png").exists()


def test_cross_paper_reads_notebook_06(cross_report):
    cross = summary.cross_paper("smoke")
    assert list(cross["rankings"]) == ["cifar10"]
    assert cross["rankings"]["cifar10"].method.tolist() == ["CrossMethodA", "ITQ"]
    assert list(cross["results"]) == [("cifar10", 32)]
    assert cross["figures"]["cifar10"].name == "cifar10_map_vs_bits.png"
    (cross_report / "metrics.json").unlink()
    assert "regenerate --profile smoke --only 06_cross_paper" in summary.cross_paper("smoke")["meta"]["missing"]


def test_summary_notebook_renders_a_static_page_with_tables_and_images(cross_report, tmp_path):
    executed = tmp_path / "99.ipynb"
    pm.execute_notebook(str(config.repo_root() / "notebooks" / "99_summary.ipynb"), str(executed),
                        parameters={"profile": "smoke"}, progress_bar=False, kernel_name="python3",
                        cwd=str(tmp_path))
    # the kernel is a separate process: it saw the real paper_numbers.csv, not the fixture's
    page = summary.render_html(executed, tmp_path / "summary.html")
    html = page.read_text()
    assert "<table" in html and "data:image/png;base64" in html
    assert html.index('id="verdicts"') < html.index("CrossMethodA")  # verdicts lead the page
    assert "test100pc-train" in html and "oxford17: not present" in html
    assert "0.500 ± 0.010" in html, "notebook 06's results table is on the page"
    assert "import matplotlib" not in html  # code cells are hidden
    out = config.reports_dir("99_summary", "smoke")
    assert (out / "status.csv").exists() and (out / "cross_paper_ranking_cifar10.csv").exists()
    assert "Notebook 06 not available" not in html
