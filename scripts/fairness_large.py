"""The settlement rules of issue 22 on large communities (sampled game): a summer and a winter day.

Usage: python scripts/fairness_large.py [--homes 100] [--scenarios 5] [--samples 50] [--orders 8] [--seeds 1]
       [--rules equal,contribution,standalone,marginal,synergy] [--no-leave-one-out] [--method masked]

For each day (``--days``, default the paper day 2017-06-13 and the winter day 2017-01-15) and seed, the community of
--homes homes (:func:`desmarket.data.build_case`, --scenarios similar-day scenarios), M1 and the clearing, and
:func:`desmarket.fairness.sampled_rule_verdicts`: the core excess over every single home, every "everyone but
one" coalition and --samples random ones (a lower bound), and the L1 distances to the Shapley value sampled from
--orders orders of the homes (stand-alone control variate, with standard errors). Writes
results/tables/fairness_large_<homes>.csv (one row per day, seed and rule) and prints it.

At 1,000 homes x 10 scenarios only part of this fits a session (scripts/bench_fairness.py part 2): M1, the
clearing and the stand-alone values take about a minute, and they settle M2, M3, the stand-alone rule and M4;
every "everyone but one" coalition (the marginal rule) and every Shapley order cost N clearings of up to N
homes, about 20 s each there. So ``--no-leave-one-out --orders 0 --rules equal,contribution,standalone,synergy
--method direct`` checks those four rules on every single home and --samples random coalitions only (a weaker
lower bound on the core excess; no Shapley distance, NaN).
"""

import argparse
import time
import warnings

import pandas as pd

import desmarket as dm
from desmarket import data, fairness, io, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=100)
    parser.add_argument("--scenarios", type=int, default=5)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--orders", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--days", default="2017-06-13,2017-01-15")
    parser.add_argument("--rules", default="equal,contribution,standalone,marginal,synergy")
    parser.add_argument("--no-leave-one-out", action="store_true", help="skip the N 'everyone but one' coalitions")
    parser.add_argument("--method", default="masked", choices=("masked", "direct"))
    args = parser.parse_args()
    warnings.simplefilter("ignore", dm.RoutingWarning)
    parts = []
    for day in args.days.split(","):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            case = data.build_case(n_homes=args.homes, n_scenarios=args.scenarios, date=day, seed=seed)
            m1, market = dm.solve_independent(case), dm.clear_market(case)
            verdicts = fairness.sampled_rule_verdicts(
                case,
                m1,
                market,
                dm.PAPER_PROFIT_RATE,
                samples=args.samples,
                orders=args.orders,
                seed=seed,
                rules=args.rules.split(","),
                leave_one_out=not args.no_leave_one_out,
                method=args.method,
            )
            verdicts.insert(0, "seed", seed)
            verdicts.insert(0, "date", day)
            verdicts["orders"], verdicts["surplus_usd"] = args.orders, dm.cooperative_surplus(m1, market)
            parts.append(verdicts.reset_index())
            print(f"{day} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.concat(parts, ignore_index=True)
    table["rule"] = table["rule"].map(fairness.RULE_NAMES)
    path = report.save_table(
        table, io.project_root() / "results" / "tables" / f"fairness_large_{args.homes}.csv", index=False
    )
    print(table.round(3).to_string(index=False))
    print(f"written to {path.relative_to(io.project_root())}")


if __name__ == "__main__":
    main()
