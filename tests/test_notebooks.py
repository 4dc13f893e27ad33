"""The house structure of every notebook (notebooks are their own single source; see docs/notebooks.md, "Which notebook
writes which file"): a markdown opening naming what it reproduces, reads and writes; exactly one `parameters`
cell of scalars, every one used and seen by papermill; no def / class / import *; a markdown cell after
each result."""

import ast
import re

import nbformat
import papermill as pm
import pytest

from desmarket.io import project_root

NOTEBOOKS = sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: A code cell that shows or writes a result; the house style puts a markdown interpretation after it.
RESULT = re.compile(r"\b(display|print|save_table|save_figure)\(")


def _code(cell) -> str:
    """Cell source without IPython magics and shell escapes, which are not Python."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _cells(path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opening_cell_names_what_it_reproduces_reads_and_writes(path):
    first = _cells(path)[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {path.stem[:2]} · "), "title: '# NN · what it is'"
    for word in ("Reproduces", "**Reads:**", "**Writes:**"):
        assert word in first.source, f"{path.name}: the opening cell must say {word}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_scalars_all_used_and_seen_by_papermill(path):
    cells = _cells(path)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    names = []
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), (
            f"{path.name}: the parameters cell holds only `name = value` lines"
        )
        value = stmt.value.operand if isinstance(stmt.value, ast.UnaryOp) else stmt.value
        assert isinstance(value, ast.Constant) and isinstance(value.value, (int, float, str, bool)), (
            f"{path.name}: parameter {stmt.targets[0].id} must be a scalar literal"
        )
        names.append(stmt.targets[0].id)
    # papermill parses the cell itself; a comment it cannot parse (e.g. one with '=') hides the parameter
    assert sorted(pm.inspect_notebook(str(path))) == sorted(names), f"{path.name}: papermill does not see all"
    used = {
        n.id
        for c in cells
        if c.cell_type == "code" and c is not tagged[0]
        for n in ast.walk(ast.parse(_code(c)))
        if isinstance(n, ast.Name)
    }
    assert not set(names) - used, f"{path.name}: parameters never used: {sorted(set(names) - used)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_definitions_or_star_imports(path):
    for cell in _cells(path):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(_code(cell))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                f"{path.name}: define functions in lib/desmarket, not in a notebook"
            )
            if isinstance(node, ast.ImportFrom):
                assert all(alias.name != "*" for alias in node.names), f"{path.name}: no `import *`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_result_is_followed_by_its_interpretation(path):
    cells = _cells(path)
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and RESULT.search(cell.source):
            assert i + 1 < len(cells) and cells[i + 1].cell_type == "markdown", (
                f"{path.name}: cell {i} shows a result; follow it with a markdown cell that says what it shows"
            )
