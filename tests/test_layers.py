"""The library's imports go one way: each module imports only its own layer or lower ones."""
import pytest

import hashstudy
from hashstudy import regenerate

FILES = regenerate.library_modules.__globals__["_library_files"]()
IMPORTS = regenerate.library_modules.__globals__["_imported_modules"]


def _layer_of() -> dict:
    out = {}
    for rank, mods in enumerate(hashstudy.LAYERS.values()):
        for m in mods:
            out[m] = rank
    return out


def _rank(layer_of, mod):
    if mod in layer_of:
        return layer_of[mod]
    parent = mod.rpartition(".")[0]
    return layer_of.get(f"{parent}.*") if parent else None


def _deps(mod):
    return regenerate.module_imports(mod, FILES) - {"__init__"}


MODULES = sorted(m for m in FILES if m != "__init__")


def test_every_module_has_a_layer():
    layer_of = _layer_of()
    missing = [m for m in MODULES if _rank(layer_of, m) is None]
    assert not missing, f"add {missing} to hashstudy.LAYERS"
    listed = {m for mods in hashstudy.LAYERS.values() for m in mods if not m.endswith(".*")}
    assert listed <= set(FILES), f"LAYERS names modules that do not exist: {listed - set(FILES)}"


@pytest.mark.parametrize("mod", MODULES)
def test_imports_go_down_the_layers(mod):
    layer_of = _layer_of()
    upward = sorted(d for d in _deps(mod) if _rank(layer_of, d) > _rank(layer_of, mod))
    assert not upward, f"{mod} (layer {_rank(layer_of, mod)}) imports a higher layer: {upward}"


def test_no_import_cycles():
    graph = {m: _deps(m) for m in MODULES}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = "done"

    for m in MODULES:
        visit(m, [])


def test_the_check_sees_an_upward_import(tmp_path):
    # a module of the lowest layer that imported a method would be caught
    layer_of = _layer_of()
    found = IMPORTS("from . import ddh\n", "") & set(FILES)
    assert any(_rank(layer_of, d) > _rank(layer_of, "config") for d in found)
