"""Benchmark of the fairness game: all coalition values of the paper case, the settlement rules of issue 22 on a
large community, and sampled Shapley for larger ones.

Usage: python scripts/bench_fairness.py [--homes 100] [--permutations 16] [--rule-homes 1000] [--marginal-sample 2]
       [--jobs -1] [--repeat 1] [--skip-shapley] [--skip-coalitions]

Prints, in one run so that the ratios compare like with like on a shared machine:

1. the time of all 2^N coalition values of the paper case (10 homes x 10 scenarios, 1,024 coalitions; joblib,
   --jobs workers, all cores by default) by each method of :data:`desmarket.fairness.COALITION_METHODS`:
   building and clearing a sub-community per coalition (``method="select"``), re-solving one grand clearing
   with homes masked out through a cvxpy Parameter (``"masked"``), and PIQP called directly on each coalition's
   rows of each scenario's compiled clearing (``"direct"``, :func:`desmarket.coalitions.certified_values`: the
   reduced problem, batched), and ``"full"``, "direct" with every coalition's full clearing in its own PIQP call
   (as before the reduced problem), with each one's largest difference to "select" and one full clearing for
   scale; with --repeat k, "direct" and "full" are run k times, alternated, and the best time of each kept;
2. every rule of :func:`desmarket.settle` on a community of --rule-homes homes x --scenarios scenarios: M1 and the
   clearing, the stand-alone values (one masked solve with nobody trading), M2, M3, the stand-alone rule and M4;
   the marginal rule needs N + 1 clearings of (nearly) the whole community, so --marginal-sample of them are timed
   (built over the coalition's rows, and by direct PIQP calls) and the whole is extrapolated (labelled so);
3. unless --skip-shapley, the time of a sampled Shapley value of a community of --homes homes with
   --permutations orders of the homes (the library's estimate against textbook permutation sampling).

Prints only; writes nothing.
"""

import argparse
import time
import warnings

import numpy as np

import desmarket as dm
from desmarket import coalitions, data, fairness


def coalition_timing(n_jobs: int, repeat: int = 1) -> None:
    case = data.build_case()
    m1 = dm.solve_independent(case)
    t0 = time.perf_counter()
    dm.clear_market(case, n_jobs=1)
    one = time.perf_counter() - t0
    timed = {}
    for method in fairness.COALITION_METHODS:
        t0 = time.perf_counter()
        values = fairness.coalition_values(case, m1, n_jobs=n_jobs, method=method)
        timed[method] = (time.perf_counter() - t0, values)
    # "direct" as it was before the reduced problem (issue 22): every coalition's full clearing, one PIQP call each
    masks = np.zeros((len(timed["select"][1]) - 1, case.n_homes), dtype=bool)
    for r, homes in enumerate(timed["select"][1].index[1:]):
        masks[r, [case.home_ids.index(h) for h in homes]] = True
    for k in range(repeat):  # alternated, the best of each: a shared machine's load comes and goes
        if k:
            t0 = time.perf_counter()
            values = fairness.coalition_values(case, m1, n_jobs=n_jobs, method="direct")
            timed["direct"] = min(timed["direct"], (time.perf_counter() - t0, values), key=lambda item: item[0])
        t0 = time.perf_counter()
        full, solved = coalitions.certified_values(case, m1, masks, n_jobs, reduced=False)
        values = timed["select"][1].copy()
        values.iloc[1:] = full
        values.attrs["clearings"] = solved
        took = time.perf_counter() - t0
        timed["full"] = min(timed.get("full", (np.inf, None)), (took, values), key=lambda item: item[0])
    ts, vs = timed["select"]
    print(
        f"paper case, {case.n_homes} homes x {case.n_scenarios} scenarios, all {len(vs)} coalition values "
        f"({n_jobs} joblib workers; one full clearing {one:.3f} s):"
    )
    for method, (took, values) in timed.items():
        gap = np.abs(values.to_numpy() - vs.to_numpy()).max()
        solved = values.attrs.get("clearings")
        extra = "" if solved is None else f", {solved} (coalition, scenario) problems solved"
        print(f"  {method:7s} {took:7.1f} s  {ts / took:5.1f}x select, largest difference to it {gap:.1e} $/day{extra}")
    best = f" (best of {repeat} each, alternated)" if repeat > 1 else ""
    print(f"  direct is {timed['full'][0] / timed['direct'][0]:.1f}x faster than full, the same run{best}")


def rules_timing(n_homes: int, n_scenarios: int, marginal_sample: int) -> None:
    t0 = time.perf_counter()
    case = data.build_case(n_homes=n_homes, n_scenarios=n_scenarios, seed=0)
    m1 = dm.solve_independent(case)
    market = dm.clear_market(case)
    base = time.perf_counter() - t0
    t0 = time.perf_counter()
    standalone = coalitions.standalone_values(case, m1)
    alone = time.perf_counter() - t0
    values = dm.settlement.RuleValues(standalone, np.full(n_homes, np.nan), float("nan"))
    t0 = time.perf_counter()
    for rule in ("equal", "contribution", "standalone", "synergy"):
        dm.settle(case, m1, market, 0.2, rule, values=values)
    closed = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks = ~np.eye(n_homes, dtype=bool)[:marginal_sample]
    coalitions.masked_values(case, m1, masks, n_jobs=1, chunks=1)
    per = (time.perf_counter() - t0) / marginal_sample
    t0 = time.perf_counter()
    programs = [coalitions.ScenarioProgram(case, s) for s in range(n_scenarios)]
    compiled = time.perf_counter() - t0
    t0 = time.perf_counter()
    for program in programs:
        for k in range(marginal_sample):
            if program.solve(np.flatnonzero(masks[k])) is None:
                raise RuntimeError("PIQP did not solve a leave-one-out clearing")
    direct = (time.perf_counter() - t0) / marginal_sample
    print(
        f"{n_homes} homes x {n_scenarios} scenarios: M1 + clearing {base:.1f} s; stand-alone values (every home "
        f"alone, {coalitions.STANDALONE_CHUNK} homes per problem) {alone:.1f} s; M2, M3, stand-alone and M4 "
        f"from them {closed:.2f} s: every rule but the marginal one in {base + alone + closed:.1f} s"
    )
    print(
        f"  marginal rule: {marginal_sample} leave-one-out clearings timed, {per:.1f} s each built over the "
        f"coalition's rows (one worker; above {coalitions.MAX_MASKED_ROWS} rows), {direct:.1f} s each by direct "
        f"PIQP calls on the scenario programs (compiled once, {compiled:.1f} s for the {n_scenarios}); so its "
        f"{n_homes + 1} clearings would take about {(n_homes + 1) * per / 60:.0f} min and "
        f"{(compiled + (n_homes + 1) * direct) / 60:.0f} min on one worker (extrapolated, not run)"
    )


def shapley_timing(homes: int, permutations: int, scenarios: int) -> None:
    big = data.build_case(n_homes=homes, n_scenarios=scenarios, seed=0)
    t0 = time.perf_counter()
    est = fairness.shapley_value(big, samples=permutations, seed=0)
    took = time.perf_counter() - t0
    cv, plain = est["std_error_usd"], est["plain_std_error_usd"]
    ratio = float((plain**2).sum() / (cv**2).sum())
    print(
        f"{homes} homes x {scenarios} scenarios: sampled Shapley with {permutations} permutations "
        f"in {took:.1f} s ({took / permutations:.1f} s per order, {homes} stand-alone clearings "
        f"included)"
    )
    print(
        f"  largest standard error: {cv.max():.4f} $/day (position averaged, stand-alone control variate), "
        f"{plain.max():.4f} textbook (same prefix values); summed variance ratio {ratio:.0f}"
    )
    k, n = permutations, homes
    # a textbook permutation clears only the prefixes from the aggregator's place on; with a clearing's cost
    # growing linearly in its homes, that is this share of an order's work
    share = sum(sum(range(max(slot, 1), n + 1)) for slot in range(n + 1)) / (n + 1) / sum(range(1, n + 1))
    print(
        f"  so these {k} orders are worth about {ratio * k:,.0f} textbook permutations; 1,000 textbook permutations "
        f"would take about {1000 * share * took / k / 3600:.1f} h here ({share:.0%} of an order's clearings each) "
        f"and leave a largest standard error of about {plain.max() * (k / 1000) ** 0.5:.3f} $/day"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=100)
    parser.add_argument("--permutations", type=int, default=16)
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--rule-homes", type=int, default=1000)
    parser.add_argument("--marginal-sample", type=int, default=2)
    parser.add_argument("--skip-shapley", action="store_true")
    parser.add_argument("--skip-coalitions", action="store_true")
    parser.add_argument("--jobs", type=int, default=-1, help="joblib workers of part 1 (-1: all cores)")
    parser.add_argument("--repeat", type=int, default=1, help="times direct and full of part 1 are run (best kept)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", dm.RoutingWarning)
    if not args.skip_coalitions:
        coalition_timing(args.jobs, args.repeat)
    if args.rule_homes > 0:
        rules_timing(args.rule_homes, args.scenarios, args.marginal_sample)
    if not args.skip_shapley:
        shapley_timing(args.homes, args.permutations, args.scenarios)


if __name__ == "__main__":
    main()
