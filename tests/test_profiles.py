"""python -m hashstudy.profiles: every notebook's profile table, read without running it."""
import ast
import json

import pytest

from hashstudy import config, crosspaper, profiles

NOTEBOOKS = sorted(p.stem for p in (config.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")
                   if not p.stem.startswith("99_"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_has_all_three_profiles(notebook):
    sizes = profiles.notebook_sizes(notebook)
    assert set(sizes) == set(profiles.PROFILES)


LIBRARY_TABLES = {"00_baselines": "baseline_study", "01_dsth_mm2015": "dsth",
                  "02_latent_layer_cnn": "latent", "03_tanh_autoencoder": "autoencoder",
                  "04_ddh": "ddh", "05_dsth_tcyb2018": "dsth_journal",
                  "06_cross_paper": "crosspaper", "07_finetuned_backbone": "finetune"}


@pytest.mark.parametrize("notebook", sorted(LIBRARY_TABLES))
def test_library_tables_are_read_from_the_library(notebook):
    import importlib

    module = importlib.import_module(f"hashstudy.{LIBRARY_TABLES[notebook]}")
    assert profiles.notebook_sizes(notebook) == module.PROFILE_SIZES


def _write_notebook(path, source):
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": source, "metadata": {},
                                           "outputs": [], "execution_count": None}],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_a_notebook_table_reads_as_python_would_evaluate_it(tmp_path):
    source = ("SIZES = {'smoke': dict(n=10, bits=(8, 16)), 'quick': {'n': 1000, 'net': None},\n"
              "         'paper': dict(n=None)}[profile]\n")
    nb = _write_notebook(tmp_path / "x.ipynb", source)
    expr = ast.parse(source).body[0].value.value
    evaluated = eval(compile(ast.Expression(expr), "<SIZES>", "eval"), {"dict": dict})
    assert profiles.notebook_sizes(str(nb)) == json.loads(json.dumps(evaluated))


def test_a_module_alias_finds_the_library_table(tmp_path):
    nb = _write_notebook(tmp_path / "y.ipynb",
                         "from hashstudy import dsth_journal as dj\nsize = dj.PROFILE_SIZES['quick']\n")
    from hashstudy import dsth_journal

    assert profiles.notebook_sizes(str(nb)) == dsth_journal.PROFILE_SIZES
    empty = _write_notebook(tmp_path / "z.ipynb", "x = 1\n")
    with pytest.raises(ValueError, match="PROFILE_SIZES"):
        profiles.notebook_sizes(str(empty))


def test_table_and_cli(capsys):
    t = profiles.table(["06_cross_paper"])
    row = t[t.setting == "split.train_per_class"].iloc[0]
    assert (row.smoke, row.quick, row.paper) == (
        str(crosspaper.PROFILE_SIZES["smoke"]["split"]["train_per_class"]),
        str(crosspaper.PROFILE_SIZES["quick"]["split"]["train_per_class"]), "")
    assert profiles.main(["06_cross_paper"]) == 0
    assert "| deep.epochs |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        profiles.main(["no_such_notebook"])
    assert exc.value.code == 2
    assert "allowed values" in capsys.readouterr().err
