"""The public API documents itself in numpydoc form: every function of ``desmarket.__all__`` has a Parameters
section naming exactly its parameters (with a type and a description each) and a Returns section.

Sphinx (``make docs``, napoleon) renders these sections as field lists; ``help(dm.settle)`` shows them as
written. The check parses the docstring text itself, so a parameter added to a signature but not to its
docstring (or left behind after a rename) fails here.
"""

from __future__ import annotations

import inspect
import re

import pytest

import desmarket as dm

SECTION = re.compile(r"^(\w[\w ]*)\n(-+)\n", re.M)
ENTRY = re.compile(r"^(\*{0,2}\w+(?:, \*{0,2}\w+)*)(?: : .+)?$")


def sections(doc: str) -> dict[str, str]:
    """numpydoc section title -> its text (up to the next section)."""
    found = [m for m in SECTION.finditer(doc) if len(m.group(2)) == len(m.group(1))]
    return {
        m.group(1): doc[m.end() : (found[k + 1].start() if k + 1 < len(found) else len(doc))]
        for k, m in enumerate(found)
    }


def documented_parameters(text: str) -> list[str]:
    """The names of a Parameters section: its unindented entry lines, ``a, b : type`` giving two names."""
    names = []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            match = ENTRY.match(line)
            assert match, f"not a numpydoc entry line: {line!r}"
            names += [n.strip().lstrip("*") for n in match.group(1).split(",")]
    return names


PUBLIC_FUNCTIONS = sorted(name for name in dm.__all__ if inspect.isfunction(getattr(dm, name)))


def test_the_checks_see_the_public_functions():
    assert len(PUBLIC_FUNCTIONS) >= 25
    text = "Summary.\n\nParameters\n----------\na, b : float\n    Two.\n**kw\n    More.\n\nReturns\n-------\nint\n"
    assert documented_parameters(sections(text)["Parameters"]) == ["a", "b", "kw"]


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_function_has_numpydoc_parameters_and_returns(name):
    func = getattr(dm, name)
    doc = inspect.getdoc(func) or ""
    parts = sections(doc)
    assert "Returns" in parts, f"dm.{name}: no 'Returns' section under a line of dashes"
    wanted = [p for p in inspect.signature(func).parameters if p != "self"]
    if not wanted:
        assert "Parameters" not in parts, f"dm.{name} takes no parameters but documents some"
        return
    assert "Parameters" in parts, f"dm.{name}: no 'Parameters' section"
    documented = documented_parameters(parts["Parameters"])
    assert sorted(documented) == sorted(wanted), f"dm.{name}: documents {documented}, signature has {wanted}"


def test_the_api_page_has_every_module_in_layer_order():
    """docs/api.md documents every module of tests/test_layers.py LAYERS, bottom layer first."""
    from test_layers import LAYERS

    from desmarket.io import project_root

    page = (project_root() / "docs" / "api.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\.\. automodule:: desmarket\.(\w+)$", page, re.M)
    modules = set().union(*LAYERS) - {"__init__", "__main__"}
    assert sorted(listed) == sorted(modules), "add the module to docs/api.md (or remove it)"
    level = {m: k for k, layer in enumerate(LAYERS) for m in layer}
    ranks = [level[m] for m in listed]
    assert ranks == sorted(ranks), f"docs/api.md is not in layer order: {listed}"
