"""Benchmark of the sensitivity table: rebuilding a case per row against one Workbench re-solved by Parameters.

Usage: python scripts/bench_study.py [--homes 10 200] [--scenarios 10] [--repeat 2]

For each size, in one run and one after the other (the machine is shared, so only the ratio of the two
is meaningful): "rebuild" validates a new case for each row of the table and solves it with the engine
(:func:`desmarket.study.run_study`, decomposed, all cores), which is how the table was computed before the
study layer; "workbench" builds the case's problems once and answers every row by Parameter values
(:func:`desmarket.study.sensitivity`, one process). Prints both wall times (best of --repeat), their ratio,
and the largest difference between the two tables. Prints only; writes nothing.
"""

import argparse
import time
import warnings

import numpy as np
import pandas as pd

import desmarket as dm
from desmarket import data
from desmarket import study as studies


def rebuilt_table(case: dm.Case, profit_rate: float) -> pd.DataFrame:
    """The sensitivity table the old way: one new case and one engine solve per row."""
    rows = []
    for choice, value, changes in studies.sensitivity_variants(case):
        market = {k: v for k, v in changes.items() if k in ("buy_ratio", "sell_ratio", "regularization")}
        variant = studies.variant_case(
            case, market=market, battery_scale=changes.get("battery_scale", 1.0), scenarios=changes.get("scenarios")
        )
        rows.append(studies.sensitivity_row(choice, value, studies.run_study(variant, profit_rate)))
    return pd.DataFrame(rows).set_index(["choice", "value"])


def best_of(repeat: int, func):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profit-rate", type=float, default=0.2)
    args = parser.parse_args()
    warnings.simplefilter("ignore", dm.RoutingWarning)
    rows = []
    for n in args.homes:
        case = data.build_case(n_homes=n, n_scenarios=args.scenarios, seed=0)
        rebuild_s, old = best_of(args.repeat, lambda: rebuilt_table(case, args.profit_rate))

        def workbench():
            bench = studies.Workbench(case)
            return bench, studies.sensitivity(bench, args.profit_rate)

        bench_s, (bench, new) = best_of(args.repeat, workbench)
        diff = float(np.nanmax(np.abs(old.to_numpy(float) - new.to_numpy(float))))
        rows.append(
            {
                "homes": n,
                "scenarios": args.scenarios,
                "rows": len(new),
                "rebuild_s": rebuild_s,
                "workbench_s": bench_s,
                "build_s": bench.build_seconds,
                "problems_solved": bench.solves,
                "speed_up": rebuild_s / bench_s,
                "max_abs_difference": diff,
            }
        )
        print(
            f"  {n} homes: rebuild {rebuild_s:.2f} s, workbench {bench_s:.2f} s "
            f"({rebuild_s / bench_s:.1f}x), tables differ by at most {diff:.1e}",
            flush=True,
        )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
