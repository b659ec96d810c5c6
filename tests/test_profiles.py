"""python -m hashstudy.profiles: every notebook's profile table, read without running it."""
import ast
import json

import pytest

from hashstudy import autoencoder, config, crosspaper, profiles

NOTEBOOKS = sorted(p.stem for p in (config.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")
                   if not p.stem.startswith("99_"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_has_all_three_profiles(notebook):
    sizes = profiles.notebook_sizes(notebook)
    assert set(sizes) == set(profiles.PROFILES)


def test_library_tables_are_read_from_the_library():
    assert profiles.notebook_sizes("03_tanh_autoencoder") == autoencoder.PROFILE_SIZES
    assert profiles.notebook_sizes("06_cross_paper") == crosspaper.PROFILE_SIZES


def test_a_notebook_table_reads_as_python_would_evaluate_it():
    cells = json.loads((config.repo_root() / "notebooks" / "01_dsth_mm2015.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "SIZES = {" in "".join(c["source"]))
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "SIZES")
    expr = node.value.value if isinstance(node.value, ast.Subscript) else node.value
    evaluated = eval(compile(ast.Expression(expr), "<SIZES>", "eval"), {"dict": dict})
    parsed = profiles.notebook_sizes("01_dsth_mm2015")
    as_lists = json.loads(json.dumps(evaluated))  # tuples read as lists
    assert parsed == as_lists


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
