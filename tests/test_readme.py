"""The README's result tables are generated from the committed result files, never typed."""

import subprocess
import sys
from desmarket.io import project_root

ROOT = project_root()


def test_readme_blocks_match_results():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_readme_shows_the_generated_tables():
    import pandas as pd

    text = (ROOT / "README.md").read_text()
    for claim in pd.read_csv(ROOT / "results" / "tables" / "scorecard.csv")["claim"]:
        assert claim in text
    assert "market_before_payment" in text  # Table 4
    assert "Machine:" in text  # the benchmark


def test_every_figure_the_readme_shows_exists():
    text = (ROOT / "README.md").read_text()
    for name in ("figure2_home", "figure3_net_load", "figure4_cost_reduction", "figure5_profit_rate",
                 "alpha_vs_traded"):
        assert f"results/figures/{name}.png" in text
        assert (ROOT / "results" / "figures" / f"{name}.png").is_file()
