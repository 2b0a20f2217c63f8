"""Imports point down (DESIGN.md): a module imports only modules of a strictly lower layer."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "coverage_lab"

# Layer of each module, by dotted name under coverage_lab.
LAYERS = {
    "_validate": 0,
    "_sampling": 0,
    "_compile": 0,
    "sweep": 0,
    "plotting": 0,
    "timings": 0,
    "losses": 1,
    "bandits": 1,
    "transformer.config": 0,
    "transformer.model": 1,
    "knobs": 1,
    "coverage": 2,
    "policies": 2,
    "exact": 2,
    "minimisers": 3,
    "data": 3,
    "metrics": 4,
    "terms": 4,
    "objective": 4,
    "algorithms": 5,
    "train": 4,
    "transformer.task": 4,
    "transformer.sizes": 5,
    "transformer.policy": 5,
    "transformer.evaluate": 5,
    "fitting": 6,
    "simulation": 7,
    "transformer.reference": 6,
    "transformer.run": 7,
    "cli": 8,
    "__init__": 9,
    "transformer.__init__": 9,
}


def layer(name: str) -> int:
    return LAYERS[name]  # a KeyError means: place the new module in LAYERS


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path


def internal_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("coverage_lab"):
            base = node.module.removeprefix("coverage_lab").lstrip(".")
            names = [base] if base else [a.name for a in node.names]
            if base and all(f"{base}.{a.name}" in dict(modules()) for a in node.names):
                names = [f"{base}.{a.name}" for a in node.names]
            yield from names
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("coverage_lab."):
                    yield a.name.removeprefix("coverage_lab.")


def external_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("name, path", list(modules()), ids=[n for n, _ in modules()])
def test_imports_point_down(name, path):
    mine = layer(name)  # a KeyError here means: give the new module a layer above
    for target in internal_imports(path):
        assert layer(target) < mine, f"{name} (layer {mine}) imports {target} (layer {layer(target)})"


@pytest.mark.parametrize("name", ["plotting", "sweep"])
def test_plotting_and_sweep_never_import_jax(name):
    assert "jax" not in set(external_imports(ROOT / f"{name}.py"))


def test_the_transformer_model_is_a_leaf():
    """The model imports nothing of the library but its own ``Config`` (``transformer/config.py``), and that
    imports nothing of it at all."""
    path = ROOT / "transformer" / "model.py"
    if not path.exists():
        pytest.skip("no transformer model in this checkout")
    assert set(internal_imports(path)) <= {"transformer.config"}
    assert not list(internal_imports(ROOT / "transformer" / "config.py"))
