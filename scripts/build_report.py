"""Static HTML report of the executed notebooks: ``make report`` (``make report RUN=results/runs/<tag>``).

Turns the executed notebooks of a run into one HTML page each, with nbconvert's HTMLExporter (nothing is
executed: the notebooks already carry their outputs), plus an ``index.html`` that links every page with the
title line of the notebook's first markdown cell, and a gallery of the run's figures (the PNG files the
notebooks save with ``plots.save_figure``). The figures are copied next to the pages, so the report folder
is self-contained: it can be zipped, mailed or opened from disk.

* the reference run: ``notebooks/NN_*.ipynb`` and ``results/figures/`` -> ``results/report/``;
* a parameterised run: ``<run>/notebooks/`` and ``<run>/figures/`` -> ``results/report/runs/<tag>/``;
* ``--out DIR`` writes elsewhere.

The pages load nothing from the network. nbconvert's ``lab`` template links require.js, MathJax and
Mermaid from a CDN; the notebooks use none of them (no widgets, no LaTeX, no diagrams, no JavaScript
outputs), so the template below drops those three script tags. The CSS of the lab template is inlined by
nbconvert, figures in outputs are base64 data URIs, and images in markdown cells are embedded too
(``embed_images``).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"  # as scripts/reproduce.py
MARKER = ".desmarket-report"  # marks a folder this script wrote, so it may clear it

# The lab template without the CDN scripts, with a link back to the index and the notebook's figures.
PAGE_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
  nav.report, section.report { max-width: 1100px; margin: 1em auto; padding: 0 1em; font-family: sans-serif; }
  section.report figure { display: inline-block; margin: 0.5em; width: 320px; vertical-align: top; }
  section.report img { width: 100%; border: 1px solid #ddd; }
</style>
{%- endblock extra_css -%}
{%- block body_header -%}
{{ super() }}
<nav class="report"><a href="index.html">&larr; report index</a> &middot; {{ resources.report.source | e }}</nav>
{%- endblock body_header -%}
{%- block body_footer -%}
{%- if resources.report.figures %}
<section class="report">
<h2>Figures saved by this notebook</h2>
{%- for name, present in resources.report.figures %}
{%- if present %}
<figure><a href="figures/{{ name | e }}"><img src="figures/{{ name | e }}" alt="{{ name | e }}"></a>
<figcaption>{{ name | e }}</figcaption></figure>
{%- else %}
<p>{{ name | e }}: not found in the run's figures folder (was the notebook run to the end?)</p>
{%- endif %}
{%- endfor %}
</section>
{%- endif %}
<nav class="report"><a href="index.html">&larr; report index</a></nav>
{{ super() }}
{%- endblock body_footer -%}
"""

INDEX_STYLE = """
body { max-width: 1100px; margin: 2em auto; padding: 0 1em; font-family: sans-serif; line-height: 1.45; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
figure { display: inline-block; margin: 0.5em; width: 320px; vertical-align: top; }
figure img { width: 100%; border: 1px solid #ddd; } code { background: #f4f4f4; }
"""


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def title_line(nb: nbformat.NotebookNode) -> str:
    """The first non-empty line of the first markdown cell, without its heading marks ('' if none)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.strip():
                    return line.strip().lstrip("#").strip()
            return ""
    return ""


def saved_figures(nb: nbformat.NotebookNode) -> list[str]:
    """The PNG file names that the notebook's code cells mention (its ``save_figure`` calls), in order."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            for name in re.findall(r"""["']([\w.\-]+\.png)["']""", cell.source):
                if name not in names:
                    names.append(name)
    return names


def is_executed(nb: nbformat.NotebookNode) -> bool:
    code = [c for c in nb.cells if c.cell_type == "code"]
    return not code or any(c.get("execution_count") or c.get("outputs") for c in code)


def prepare_out(out: Path) -> None:
    """Create ``out``, or clear the pages and figures of an earlier report there (never anything else)."""
    if out.exists():
        if not out.is_dir():
            raise SystemExit(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise SystemExit(
                f"--out {out} is not empty and was not written by build_report.py; choose an empty or new folder"
            )
        for page in out.glob("*.html"):
            page.unlink()
        shutil.rmtree(out / "figures", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "written by scripts/build_report.py; its *.html and figures/ are replaced on the next build\n", encoding="utf-8"
    )


def build(notebooks: list[Path], figures_dir: Path, out: Path, source: str) -> Path:
    """Write one page per notebook, the figures and index.html into ``out``; returns index.html."""
    prepare_out(out)
    figures = sorted(figures_dir.glob("*.png")) if figures_dir.is_dir() else []
    if figures:
        (out / "figures").mkdir()
        for png in figures:
            shutil.copy2(png, out / "figures" / png.name)
    present = {png.name for png in figures}

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"report.html.j2": PAGE_TEMPLATE})])
    exporter.template_file = "report.html.j2"
    exporter.embed_images = True  # images in markdown cells become data URIs
    exporter.exclude_anchor_links = True

    rows = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        title = title_line(nb) or path.stem
        if not is_executed(nb):
            print(f"warning: {_rel(path)} has no outputs; run `make reproduce` first", file=sys.stderr)
        names = saved_figures(nb)
        resources = {
            "metadata": {"name": title, "path": str(path.parent)},
            "report": {"source": source, "figures": [(n, n in present) for n in names]},
        }
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        page = f"{path.stem}.html"
        (out / page).write_text(body, encoding="utf-8")
        rows.append((page, path.name, title, [n for n in names if n in present]))
        print(f"  {page}")

    parameters = {}
    if notebooks:
        parameters = nbformat.read(notebooks[0], as_version=4).metadata.get("papermill", {}).get("parameters", {})
    index = out / "index.html"
    index.write_text(_index_html(rows, figures, source, parameters), encoding="utf-8")
    return index


def _index_html(rows, figures, source, parameters) -> str:
    e = html.escape
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">',
        f"<title>desmarket report: {e(source)}</title>",
        f"<style>{INDEX_STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>desmarket: executed notebooks</h1>",
        f"<p>Reproduction of Hu et al. (2024). Source: <code>{e(source)}</code>. "
        "Static pages built by <code>make report</code> (<code>scripts/build_report.py</code>); "
        "nothing was re-executed.</p>",
    ]
    shown = ", ".join(f"{e(str(k))} = {e(str(v))}" for k, v in parameters.items() if k != "run_dir")
    if shown:
        lines.append(f"<p>Run parameters (the rest are the notebooks' defaults): {shown}.</p>")
    lines += ["<h2>Notebooks</h2>", "<table>", "<tr><th>page</th><th>what it does</th><th>figures</th></tr>"]
    for page, name, title, names in rows:
        figs = " ".join(f'<a href="figures/{e(n)}">{e(n)}</a>' for n in names)
        lines.append(f'<tr><td><a href="{e(page)}">{e(name)}</a></td><td>{e(title)}</td><td>{figs}</td></tr>')
    lines.append("</table>")
    if figures:
        lines.append("<h2>Figures</h2>")
        for png in figures:
            n = e(png.name)
            lines.append(
                f'<figure><a href="figures/{n}"><img src="figures/{n}" alt="{n}"></a>'
                f"<figcaption>{n}</figcaption></figure>"
            )
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder, results/runs/<tag> (default: the reference run)")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: results/report/, or results/report/runs/<tag>/ for --run)"
    )
    args = parser.parse_args(argv)

    if args.run is None:
        notebook_dir, figures_dir = ROOT / "notebooks", ROOT / "results" / "figures"
        out = args.out or ROOT / "results" / "report"
        source = "reference run (notebooks/, results/figures/)"
    else:
        run = args.run if args.run.is_absolute() else Path.cwd() / args.run
        if not run.is_dir():
            raise SystemExit(f"--run {args.run}: no such folder (runs are in results/runs/)")
        notebook_dir, figures_dir = run / "notebooks", run / "figures"
        out = args.out or ROOT / "results" / "report" / "runs" / run.resolve().name
        source = f"run {_rel(run)}"
    notebooks = sorted(notebook_dir.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise SystemExit(f"no executed notebooks ({NOTEBOOK_GLOB}) in {_rel(notebook_dir)}; run `make reproduce` first")

    print(f"building the report of the {source} into {_rel(out)}/")
    index = build(notebooks, figures_dir, out, source)
    print(f"done: {len(notebooks)} pages; open {_rel(index)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
