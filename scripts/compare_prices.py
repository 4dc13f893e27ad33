"""Compare the PJM-like generator with a real PJM year: writes results/tables/lmp_comparison.csv.

Usage: python scripts/compare_prices.py [PATH]   (default: $DESMARKET_PJM_FILE or ../shared/data/pjm_rto_da_2025.csv)
The real file is validation data and is never copied into the project; without it this script says so and stops.
"""

import os
import sys
from pathlib import Path

import desmarket.data as D
from desmarket import report
from desmarket.io import project_root

ROOT = project_root()


def main() -> int:
    default = os.environ.get("DESMARKET_PJM_FILE", str(ROOT.parent / "shared" / "data" / "pjm_rto_da_2025.csv"))
    path = Path(sys.argv[1] if len(sys.argv) > 1 else default)
    if not path.is_file():
        print(f"no real PJM file at {path}: nothing to compare (pass a Data Miner 2 da_hrl_lmps export)")
        return 1
    real = D.load_pjm_lmps(path)
    year = int(real.index[len(real) // 2].year)
    synthetic = D.synthetic_lmp(year, seed=0, annual_mean_usd_per_mwh=float(real.mean()))
    table = D.compare_lmp(synthetic, real)
    out = report.save_table(table, ROOT / "results" / "tables" / "lmp_comparison.csv", decimals=2)
    print(table.round(2).to_string())
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
