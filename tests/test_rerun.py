"""Reruns write identical files, whatever the number of workers and the CPU's floating-point kernels.

The source found (issue 17): reductions written as ``pi @ v`` go through BLAS, whose kernel (and so the order of
its additions) OpenBLAS picks by CPU; R_A then differed in its last digit between machines, and the JSON summary
kept all 17 digits. The library now reduces with einsum (a fixed order) and writes the summaries at the CSV
files' 12 significant digits. Here two runs in fresh processes, one with 1 worker and the default kernel, one
with 2 workers and OpenBLAS forced to another kernel (OPENBLAS_CORETYPE), must write the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desmarket.io import project_root

CASE = project_root() / "results" / "case"

SCRIPT = """
import sys, warnings
import desmarket as dm
from desmarket import io, report
from desmarket.study import settled_study
warnings.simplefilter("ignore")
case = dm.load_case(sys.argv[1])
out, n_jobs = sys.argv[2], int(sys.argv[3])
m1 = dm.solve_independent(case, n_jobs=n_jobs)
market = dm.clear_market(case, n_jobs=n_jobs)
io.save_operation(m1, case, out, "m1")
io.save_operation(market, case, out, "market")
study = settled_study(case, m1, market, 0.2)
report.save_table(report.table4_costs(study), f"{out}/table4_costs.csv")
report.save_table(report.price_table(case, market), f"{out}/clearing_prices.csv")
"""


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _run(tmp_path: Path, name: str, n_jobs: int, env_extra: dict) -> dict[str, str]:
    out = tmp_path / name
    env = {**os.environ, **env_extra}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CASE), str(out), str(n_jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return _digests(out)


@pytest.mark.skipif(not CASE.is_dir(), reason="the committed reference case results/case is absent")
def test_two_runs_at_different_workers_and_blas_kernels_write_identical_files(tmp_path):
    first = _run(tmp_path, "a", 1, {})
    second = _run(tmp_path, "b", 2, {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1"})
    assert len(first) == 9  # 2 x (dispatch, homes, summary) + market prices + 2 tables
    assert first == second
