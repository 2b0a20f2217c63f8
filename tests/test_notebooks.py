"""The notebooks run top to bottom without error, are committed without outputs, and define nothing reusable.

DESIGN.md: ``notebooks/`` is exploration — import and call, define nothing. Each notebook is executed with
nbclient in a fresh kernel of *this* interpreter: the test writes a kernel spec pointing at ``sys.executable``
into a temporary folder and puts it first on ``JUPYTER_PATH``, so nothing installed by hand is needed and no
other Python on the machine can be picked up. The kernel runs with ``JAX_NUMPY_RANK_PROMOTION=raise``, like the
rest of the suite (``conftest.py``).
"""

import ast
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"01_coverage_conditions", "02_offline_vs_online", "03_extrapolation", "04_transformer"}
KERNEL = "coverage-lab-tests"
CELL_TIMEOUT_S = 600

# Definitions a notebook may make: {notebook stem: {name, ...}}, for small plotting tweaks only. Keep it empty.
ALLOWED_DEFINITIONS: dict[str, set[str]] = {}

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def ids(paths):
    return [p.stem for p in paths]


def code_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec for this interpreter (``sys.executable``) in a temporary ``JUPYTER_PATH``."""
    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, display_name="coverage_lab tests", prefix=str(prefix))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        mp.setenv("JAX_NUMPY_RANK_PROMOTION", "raise")
        yield KERNEL


def test_the_four_notebooks_are_there():
    assert EXPECTED <= set(ids(NOTEBOOKS))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_valid_and_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_defines_no_function_or_class(path):
    allowed = ALLOWED_DEFINITIONS.get(path.stem, set())
    transform = TransformerManager().transform_cell  # IPython magics (%matplotlib) to plain Python
    found = []
    for i, cell in enumerate(code_cells(path)):
        for node in ast.walk(ast.parse(transform(cell.source))):
            if isinstance(node, DEFINITIONS) and getattr(node, "name", "<lambda>") not in allowed:
                found.append(f"code cell {i}, line {node.lineno}: {type(node).__name__} {getattr(node, 'name', '')}")
    assert not found, f"{path.name} defines {found}: put reusable code in the package and call it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path, kernel_name):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first cell that fails
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no figure"
