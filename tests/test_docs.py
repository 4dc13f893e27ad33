"""Every block of the README, CONTRIBUTING.md and the docs pages works as written, on a fresh checkout.

The tracked files (and new ones not yet committed, but never ignored ones) are copied into a temporary folder
with ``.venv`` linked in, which is what a user has after ``git clone`` and ``make setup``. There:

* the Python blocks of each page run, in order, in one interpreter (a page's blocks may build on each other);
* each shell block runs in one ``bash -e`` whose PATH does not hold ``.venv/bin``, so a block that calls
  ``desmarket`` without saying where it lives fails as it would for the user. ``desmarket`` and ``.venv/bin/``
  commands run for real; ``make`` lines run as ``make -n`` (the target must exist and its recipe parse; the
  real ``make test`` and ``make reproduce`` are too slow here); any other command is an error, so a new kind
  of command gets a rule here first;
* afterwards no file may have appeared that git would show as untracked.

The site itself is built with warnings as errors by ``make docs``, which ``make test`` runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desmarket.io import project_root

ROOT = project_root()
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")])
PAGES = [p for p in PAGES if not any(part.startswith("_") for part in p.relative_to(ROOT).parts)]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
SHELL = {"bash", "sh", "shell", "console"}


def blocks(page: Path, languages: set[str]) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text(encoding="utf-8")) if lang in languages]


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _files() -> list[str]:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    return [f for f in listed if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A fresh checkout of the work tree: its tracked and new files, ``.venv`` linked in."""
    root = tmp_path_factory.mktemp("pristine") / "desmarket"
    for name in _files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    (root / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return root


@pytest.fixture
def checkout(pristine, tmp_path) -> Path:
    """A copy of the fresh checkout for one test: each page's blocks start from a clone, as a reader's would."""
    return Path(shutil.copytree(pristine, tmp_path / "desmarket", symlinks=True))


def _untracked(root: Path, before: set[str]) -> list[str]:
    """Files that appeared under ``root`` and that git would not ignore (as ``git status`` would list them)."""
    now = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not str(p.relative_to(root)).startswith(".venv/")
    }
    new = sorted(now - before)
    if not new:
        return []
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(new), capture_output=True, text=True
    ).stdout.split()
    return [f for f in new if f not in set(ignored)]


def _env() -> dict:
    env = dict(os.environ)
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(
        p
        for p in env.get("PATH", "").split(os.pathsep)
        if p and not p.rstrip("/").endswith(".venv/bin") and p != venv_bin
    )
    env.pop("VIRTUAL_ENV", None)
    env["MPLBACKEND"] = "Agg"
    return env


def shell_script(block: str) -> str:
    """The block as a bash script: comments kept out, ``make`` lines as ``make -n``, unknown commands refused."""
    lines = []
    for raw in block.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        words = shlex.split(line)
        first = words[0]
        if first == "make":
            lines.append("make -n " + shlex.join(words[1:]) + " >/dev/null")
        elif first in (".", "source") or first == "desmarket" or first.startswith(".venv/bin/"):
            lines.append(line)
        else:
            raise AssertionError(f"no rule for the command {first!r} in {line!r}: add one to tests/test_docs.py")
    return "\n".join(lines)


SHELL_BLOCKS = [(page, i, body) for page in PAGES for i, body in enumerate(blocks(page, SHELL))]
PYTHON_PAGES = [page for page in PAGES if blocks(page, {"python"})]


def test_the_pages_have_blocks_to_run():
    assert any(_rel(p) == "README.md" for p, _, _ in SHELL_BLOCKS)
    assert PYTHON_PAGES, "no Python block found in the README or the docs"


@pytest.mark.parametrize("page,index,body", SHELL_BLOCKS, ids=[f"{_rel(p)}-{i}" for p, i, _ in SHELL_BLOCKS])
def test_shell_block_runs_as_written(checkout, page, index, body):
    before = {
        str(p.relative_to(checkout))
        for p in checkout.rglob("*")
        if p.is_file() and not str(p.relative_to(checkout)).startswith(".venv/")
    }
    script = "set -euo pipefail\n" + shell_script(body)
    run = subprocess.run(["bash", "-c", script], cwd=checkout, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (
        f"{_rel(page)}, shell block {index}:\n{script}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    assert not _untracked(checkout, before), (
        f"{_rel(page)}, shell block {index} leaves untracked files: {_untracked(checkout, before)[:10]}"
    )


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_rel)
def test_python_blocks_run_as_written(checkout, page):
    before = {
        str(p.relative_to(checkout))
        for p in checkout.rglob("*")
        if p.is_file() and not str(p.relative_to(checkout)).startswith(".venv/")
    }
    code = "\n\n".join(blocks(page, {"python"}))
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"{_rel(page)}:\n{code}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert not _untracked(checkout, before), f"{_rel(page)} leaves untracked files"


def test_make_docs_is_a_target_and_ignores_its_output():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^docs: .*## ", makefile, re.M), "make docs, with its help line"
    assert "sphinx-build -W" in makefile
    ignored = subprocess.run(
        [
            "git",
            "check-ignore",
            "--no-index",
            "docs/_build/html/index.html",
            "docs/_generated/notebooks/01_data_prep.ipynb",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(ignored) == 2
