"""Render the library's plain-text docstrings as valid reStructuredText for autodoc.

The docstrings of ``lib/desmarket`` are written to be read in a terminal (``help(dm.settle)``), not as
reST: aligned ``name:   description`` blocks with hanging indents, and formulas such as ``|x|`` or
``k^b LMP``. Read as reST they give docutils errors (unexpected indentation, ``|x|`` taken for an undefined
substitution), which ``-W`` turns into a failed build. This hook runs before napoleon and rewrites each
docstring, without touching the library:

* a paragraph whose lines are indented, or whose later lines hang deeper than its first, is an aligned
  block: it becomes a ``parsed-literal`` block, so its columns stay as written and its roles
  (``:func:`...```) still link;
* every other paragraph is prose and stays reST; bullet lists (``* item`` with its continuation lines)
  are kept as lists;
* outside inline literals, ``|`` and a word-final ``_`` are escaped, so ``|x|`` and ``x_`` are text;
* numpydoc sections of named fields (``Parameters``, ``Returns``, ``Raises``, ... under a line of dashes) are
  left to napoleon as written (escaped as prose), so they render as field lists.
"""

from __future__ import annotations

import re

_LITERAL_OR_ROLE = re.compile(r"(``.+?``|:[a-z:]+:`[^`]+`)")
_BULLET = re.compile(r"^([*\-+]|\d+\.) ")


def _escape(text: str, literal_block: bool = False) -> str:
    """Escape | (and, in a literal block, *), plus a word-final _, outside ``literals`` and :roles:`...`."""
    parts = _LITERAL_OR_ROLE.split(text)
    for i in range(0, len(parts), 2):           # even indices: outside literals and roles
        part = parts[i].replace("\\", "\\\\").replace("|", "\\|")
        part = re.sub(r"(\w)_(?=[^\w`]|$)", r"\1\\_", part)
        if literal_block:
            part = part.replace("*", "\\*").replace("`", "\\`")
        parts[i] = part
    return "".join(parts)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_bullet_list(par: list[str]) -> bool:
    base = _indent(par[0])
    if base or not _BULLET.match(par[0]):
        return False
    for line in par[1:]:
        if _indent(line) == base and _BULLET.match(line):
            continue
        if _indent(line) not in (2, 3):
            return False
    return True


def _is_aligned(par: list[str]) -> bool:
    if _is_bullet_list(par):
        return False
    first = _indent(par[0])
    return first > 0 or any(_indent(line) > first for line in par[1:])


#: numpydoc sections whose entries napoleon turns into field lists (the others, e.g. Notes, are prose)
FIELD_SECTIONS = {"Parameters", "Other Parameters", "Returns", "Yields", "Raises", "Warns", "Attributes"}


def _section(lines: list[str], i: int) -> str | None:
    """The numpydoc section that starts at line i (its title above a line of dashes), else None."""
    title = lines[i].strip()
    if i + 1 < len(lines) and title and _indent(lines[i]) == 0 and lines[i + 1].strip() == "-" * len(title):
        return title
    return None


def rewrite(lines: list[str]) -> list[str]:
    """The docstring's lines, reST-safe (see the module docstring)."""
    out: list[str] = []
    par: list[str] = []

    def flush() -> None:
        if not par:
            return
        if _is_aligned(par):
            base = min(_indent(line) for line in par)
            out.extend(["", ".. parsed-literal::", ""])
            out.extend("   " + _escape(line[base:], literal_block=True) for line in par)
            out.append("")
        else:
            out.extend(_escape(line) for line in par)
        par.clear()

    code_indent = None          # inside a literal block opened by "::": the indentation of its paragraph
    fields = False              # inside a numpydoc field section (napoleon's)
    for i, line in enumerate(lines):
        section = _section(lines, i)
        if section is not None:
            flush()
            fields = section in FIELD_SECTIONS
        if fields:
            out.append(_escape(line.rstrip()))
            continue
        if code_indent is not None:
            if not line.strip() or _indent(line) > code_indent:
                out.append(line)
                continue
            code_indent = None
        if line.lstrip().startswith(">>>"):
            flush()
            out.append(line)    # a doctest: leave as written
            continue
        if not line.strip():
            flush()
            out.append("")
            continue
        par.append(line.rstrip())
        if line.rstrip().endswith("::"):   # an explicit reST literal block follows: keep it as written
            code_indent = _indent(par[0])
            flush()
    flush()
    return out


def _process(app, what, name, obj, options, lines):  # noqa: ARG001  (autodoc's signature)
    lines[:] = rewrite(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process, priority=400)   # before napoleon (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
