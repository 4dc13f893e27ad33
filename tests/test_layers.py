"""The package's layers import one way (issue 18): no import circle, counting every import — at module level,
inside functions and under ``TYPE_CHECKING`` — and the layer order the docs describe."""

import ast
from pathlib import Path

from desmarket.io import project_root

PACKAGE = project_root() / "lib" / "desmarket"

#: Bottom to top; a module may import only modules of its own layer or below (the package ``__init__`` and the
#: command line sit on top of everything).
LAYERS = [
    {"errors", "paper", "daycache"},
    {"case", "limits", "synthetic"},
    {"formulation"},
    {"model"},
    {"feasibility", "pieces", "settlement", "coalitions"},
    {"coordinated", "lshaped"},
    {"engine", "results"},
    {"claims", "data", "io"},
    {"report", "plots", "horizon", "fairness"},
    {"study"},
    {"year", "sizes", "twostage", "fairness_year"},
    {"robustness"},
    {"cli", "__init__", "__main__"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "__init__" if parts == ("__init__",) else parts[0]  # the data subpackage counts as one layer, "data"


def _imports(path: Path) -> set[str]:
    """Top-level desmarket modules that ``path`` imports anywhere in its code."""
    package = path.relative_to(PACKAGE).parts[:-1]  # () for desmarket/x.py, ("data",) for desmarket/data/x.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module or base else [[a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "desmarket":
                rest = node.module.split(".")[1:]
                names = [rest] if rest else [[a.name] for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "desmarket"]
            names = [n if n else ["__init__"] for n in names]
        else:
            continue
        found |= {n[0] if n else "__init__" for n in names}
    return found - {_module(path)}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        graph.setdefault(_module(path), set()).update(_imports(path))
    return graph


def test_every_module_has_a_layer():
    known = set().union(*LAYERS)
    assert set(_graph()) <= known, f"put {sorted(set(_graph()) - known)} into tests/test_layers.py LAYERS"


def test_imports_go_down_the_layers_only():
    level = {name: k for k, layer in enumerate(LAYERS) for name in layer}
    upward = sorted((a, b) for a, deps in _graph().items() for b in deps if b in level and level[b] > level[a])
    assert upward == [], f"modules importing a higher layer: {upward}"


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a path that comes back to its start), or None (depth-first search)."""
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_there_is_no_import_circle():
    circle = _circle(_graph())
    assert circle is None, f"import circle: {' -> '.join(circle)}"


def test_the_checker_sees_a_circle():
    """The checker can fail: report -> study -> report, as before issue 18, is found; a chain is not a circle."""
    assert _circle({"report": {"study"}, "study": {"report"}}) == ["report", "study", "report"]
    assert _circle({"report": {"model"}, "study": {"report", "model"}}) is None
