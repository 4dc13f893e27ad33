"""Benchmark: build and solve times of M1 and the market clearing on generated communities.

Usage: python scripts/bench.py [--homes 10 100 1000] [--scenarios 10] [--seed 0]
Prints a table (seconds) and the machine it ran on. Timings, not assertions: nothing here can fail a build.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd

import desmarket as dm
from desmarket.synthetic import random_case


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, cvxpy {cp.__version__}, "
            f"solver {dm.DEFAULT_SOLVER}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for n in args.homes:
        t0 = time.perf_counter()
        case = random_case(args.seed, n_homes=n, n_scenarios=args.scenarios)
        generate = time.perf_counter() - t0
        m1 = dm.solve_independent(case)
        mk = dm.clear_market(case)
        st = dm.settle(case, m1, mk, 0.2)
        rows.append({
            "homes": n, "scenarios": args.scenarios, "variables": sum(v.size for v in mk.problem.variables()),
            "generate_s": generate,
            "M1_build_s": m1.build_seconds + m1.solve_seconds - m1.solver_seconds,  # expressions + cvxpy compile
            "M1_solve_s": m1.solver_seconds,  # Clarabel's own time
            "M1_total_s": m1.build_seconds + m1.solve_seconds,
            "clearing_build_s": mk.build_seconds + mk.solve_seconds - mk.solver_seconds,
            "clearing_solve_s": mk.solver_seconds,
            "clearing_total_s": mk.build_seconds + mk.solve_seconds,
            "surplus_usd": st.surplus,
        })
        print(f"  {n} homes done", flush=True)
    table = pd.DataFrame(rows).set_index("homes")
    out = Path(__file__).resolve().parents[1] / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    table.round(3).to_csv(out / "bench.csv")
    (out / "machine.txt").write_text(machine() + "\n")
    print(f"\nmachine: {machine()}  (table written to {out / 'bench.csv'})")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string())
    np.testing.assert_(all(np.isfinite(table.surplus_usd)))


if __name__ == "__main__":
    main()
