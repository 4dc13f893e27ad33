"""`make report` (scripts/build_report.py): a page per executed notebook, an index, figures, no broken links.

The report is built into a temporary folder from the committed notebooks (about 3 s), and once from a
small fake run folder to cover ``--run``.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_report.py"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


class _Links(HTMLParser):
    """Every href and src of a page, and the URLs it would load on opening (scripts, styles, images)."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.loads: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])


def _links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and bool(parts.path)


def _build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def _check_report(out: Path, notebooks: list[Path], figures: list[Path]) -> None:
    index = out / "index.html"
    assert index.is_file()
    pages = {p.name for p in out.glob("*.html")} - {"index.html"}
    assert pages == {f"{nb.stem}.html" for nb in notebooks}, "one page per executed notebook"
    assert {p.name for p in (out / "figures").glob("*.png")} == {f.name for f in figures}, (
        "every figure of the run is copied into the report"
    )

    index_links = _links(index).links
    for page in pages:
        assert page in index_links, f"index.html does not link {page}"

    for page in out.glob("*.html"):
        parsed = _links(page)
        for url in parsed.links:
            if _is_local(url):
                target = (page.parent / unquote(urlsplit(url).path)).resolve()
                assert target.is_file(), f"{page.name} links {url}, which does not exist"
                assert target.is_relative_to(out.resolve()), f"{page.name} links {url}, outside the report"
        remote = [u for u in parsed.loads if urlsplit(u).scheme in ("http", "https") or u.startswith("//")]
        assert not remote, f"{page.name} loads {remote} from the network; the report must work offline"


@pytest.fixture(scope="module")
def reference_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = _build("--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_reference_report_has_every_notebook_and_no_broken_link(reference_report):
    assert NOTEBOOKS, "no notebooks found"
    _check_report(reference_report, NOTEBOOKS, sorted((ROOT / "results" / "figures").glob("*.png")))


def test_index_describes_each_notebook_by_its_title_line(reference_report):
    import nbformat

    index = (reference_report / "index.html").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "markdown").source.splitlines()[0]
        title = first.lstrip("#").strip()
        assert html.escape(title) in index, f"{path.name}: title line {title!r} not in index.html"


def test_pages_carry_the_executed_outputs(reference_report):
    # the notebooks show their figures inline; the pages keep them as embedded images, not re-executed
    embedded = sum(
        (reference_report / f"{nb.stem}.html").read_text(encoding="utf-8").count("data:image/png") for nb in NOTEBOOKS
    )
    assert embedded > 0


def test_a_run_folder_gets_its_own_report(tmp_path):
    run = tmp_path / "runs" / "n_homes-3"
    (run / "notebooks").mkdir(parents=True)
    (run / "figures").mkdir()
    notebooks = NOTEBOOKS[:2]
    for nb in notebooks:
        shutil.copy(nb, run / "notebooks" / nb.name)
    figure = next((ROOT / "results" / "figures").glob("*.png"))
    shutil.copy(figure, run / "figures" / figure.name)

    out = tmp_path / "report"
    result = _build("--run", str(run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    _check_report(out, notebooks, [figure])

    # a rebuild replaces the earlier report (a page that is gone disappears)
    (run / "notebooks" / notebooks[1].name).unlink()
    assert _build("--run", str(run), "--out", str(out)).returncode == 0
    _check_report(out, notebooks[:1], [figure])


def test_refuses_to_write_into_a_folder_it_did_not_create(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = _build("--out", str(tmp_path))
    assert result.returncode != 0
    assert "not written by build_report.py" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_run_without_notebooks_is_a_clear_error(tmp_path):
    result = _build("--run", str(tmp_path), "--out", str(tmp_path / "report"))
    assert result.returncode != 0
    assert "make reproduce" in result.stderr
