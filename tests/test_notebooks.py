"""Static checks of the committed notebooks (their execution is nbval's job)."""
import ast
import json
from pathlib import Path

import pytest

from hashstudy import config

NOTEBOOKS = sorted((config.repo_root() / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_commented_literals(path: Path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), \
        f"{path.name}: the first code cell must be tagged 'parameters'"
    source = "".join(first["source"])
    names = []
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"{path.name}: the parameters cell may only assign literals"
        ast.literal_eval(node.value)  # raises on anything that is not a literal
        names.append(node.targets[0].id)
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    starts = [ln for ln in lines if not ln.startswith((" ", "\t", "]", "}", ")"))]
    assert all("#" in ln for ln in starts), f"{path.name}: every parameter needs a one-line comment"
    assert "profile" in names and "seed" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{path.name}: strip outputs before committing (reports/ holds the results)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path: Path):
    """`papermill --help-notebook` lists each parameter with its comment; a comment it
    cannot parse (an '=' or quotes in it, for example) silently drops the parameter."""
    papermill = pytest.importorskip("papermill")
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    names = [node.targets[0].id for node in ast.parse("".join(first["source"])).body]
    found = papermill.inspect_notebook(str(path))
    assert sorted(found) == sorted(names), f"{path.name}: papermill misses {set(names) - set(found)}"
