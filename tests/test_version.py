"""The version lives in one place, desmarket.__version__; the installed metadata, CITATION.cff and
CHANGELOG.md follow it."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import yaml

import desmarket

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"], "the version belongs in lib/desmarket/__init__.py only"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "desmarket.__version__"}


def test_installed_metadata_matches_the_package():
    installed = importlib.metadata.version("desmarket")
    assert installed == desmarket.__version__, (
        f"installed metadata says {installed}, desmarket.__version__ is {desmarket.__version__}: reinstall "
        "with `.venv/bin/pip install --no-deps --no-build-isolation -e .` (or `rm .venv/.installed; make setup`)"
    )


def test_citation_cff_is_valid_and_cites_this_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors"):  # required by CFF 1.2.0
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == desmarket.__version__
    assert cff["license"] == "MIT"
    paper = cff["references"][0]
    assert paper["doi"] == "10.3389/fenrg.2024.1476691"
    assert all(a.get("family-names") or a.get("name") for a in cff["authors"] + paper["authors"])


def test_changelog_has_a_section_for_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    match = re.search(rf"^## \[{re.escape(desmarket.__version__)}\] - (\d{{4}}-\d{{2}}-\d{{2}})$", changelog, re.M)
    assert match, f"CHANGELOG.md has no section '## [{desmarket.__version__}] - YYYY-MM-DD'"
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(cff["date-released"]) == match.group(1), "CITATION.cff date-released is the release's date"


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "2026 the desmarket contributors" in text
