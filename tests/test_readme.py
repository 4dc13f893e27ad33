"""The README and the docs pages: result tables generated from the committed result files, never typed; the
README short and its links alive. (tests/test_docs.py runs the blocks of every page.)"""

import re
import subprocess
import sys

from desmarket.io import project_root

ROOT = project_root()
FINDINGS = ROOT / "docs" / "findings.md"


def test_readme_blocks_match_results():
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_readme_and_docs_show_the_generated_tables():
    import pandas as pd

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    findings = FINDINGS.read_text(encoding="utf-8")
    for claim in pd.read_csv(ROOT / "results" / "tables" / "scorecard.csv")["claim"]:
        assert claim in readme  # the scorecard, in the README and on the findings page
        assert claim in findings
    assert "market_before_payment" in findings  # Table 4
    assert "Machine:" in (ROOT / "docs" / "usage" / "speed.md").read_text(encoding="utf-8")  # the benchmark


def test_every_figure_the_findings_show_exists():
    text = FINDINGS.read_text(encoding="utf-8")
    for name in (
        "figure2_home",
        "figure3_net_load",
        "figure4_cost_reduction",
        "figure5_profit_rate",
        "alpha_vs_traded",
    ):
        assert f"../results/figures/{name}.png" in text
        assert (ROOT / "results" / "figures" / f"{name}.png").is_file()


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250, "the README says what the project is; the rest belongs in docs/"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links {target}, which does not exist"
    assert "docs/model.md" in text and "make docs" in text and "CONTRIBUTING.md" in text
