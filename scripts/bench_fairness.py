"""Benchmark of the fairness game: all coalition values of the paper case, and sampled Shapley for larger ones.

Usage: python scripts/bench_fairness.py [--homes 100] [--permutations 16]

Prints the time of all 2^N coalition values of the paper case (10 homes, 1,024 coalitions; joblib, all cores),
the time of one full clearing in the same run and their ratio, then the time of a sampled Shapley value of a
community of --homes homes with --permutations orders of the homes (each order clears its N prefixes; repeated
coalitions are cached): the library's estimate (aggregator's position averaged, stand-alone control variate)
against textbook permutation sampling from the same prefix values, and what 1,000 textbook permutations would
cost and give. Prints only; writes nothing.
"""

import argparse
import time
import warnings

import desmarket as dm
from desmarket import data, fairness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=100)
    parser.add_argument("--permutations", type=int, default=16)
    parser.add_argument("--scenarios", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("ignore", dm.RoutingWarning)
    case = data.build_case()
    m1 = dm.solve_independent(case)
    t0 = time.perf_counter()
    dm.clear_market(case, n_jobs=1)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    values = fairness.coalition_values(case, m1)
    every = time.perf_counter() - t0
    print(
        f"paper case, {case.n_homes} homes: all {len(values)} coalition values in {every:.1f} s; one full clearing "
        f"{one:.3f} s; ratio {every / one:.0f}"
    )
    big = data.build_case(n_homes=args.homes, n_scenarios=args.scenarios, seed=0)
    t0 = time.perf_counter()
    est = fairness.shapley_value(big, samples=args.permutations, seed=0)
    took = time.perf_counter() - t0
    cv, plain = est["std_error_usd"], est["plain_std_error_usd"]
    ratio = float((plain**2).sum() / (cv**2).sum())
    print(
        f"{args.homes} homes x {args.scenarios} scenarios: sampled Shapley with {args.permutations} permutations "
        f"in {took:.1f} s ({took / args.permutations:.1f} s per order, {args.homes} stand-alone clearings "
        f"included)"
    )
    print(
        f"  largest standard error: {cv.max():.4f} $/day (position averaged, stand-alone control variate), "
        f"{plain.max():.4f} textbook (same prefix values); summed variance ratio {ratio:.0f}"
    )
    k, n = args.permutations, args.homes
    # a textbook permutation clears only the prefixes from the aggregator's place on; with a clearing's cost
    # growing linearly in its homes, that is this share of an order's work
    share = sum(sum(range(max(slot, 1), n + 1)) for slot in range(n + 1)) / (n + 1) / sum(range(1, n + 1))
    print(
        f"  so these {k} orders are worth about {ratio * k:,.0f} textbook permutations; 1,000 textbook permutations "
        f"would take about {1000 * share * took / k / 3600:.1f} h here ({share:.0%} of an order's clearings each) "
        f"and leave a largest standard error of about {plain.max() * (k / 1000) ** 0.5:.3f} $/day"
    )


if __name__ == "__main__":
    main()
