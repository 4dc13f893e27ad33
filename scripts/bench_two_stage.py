"""Benchmark of the two-stage clearing (issue 20) beside the one-stage decomposed solve, in the same run.

Usage: python scripts/bench_two_stage.py [--homes 100 1000] [--scenarios 10] [--methods decomposed] [--timeout S]

Each (homes, stages) row runs in its own process (peak memory of the process and its joblib workers, sampled
every 0.1 s): M1 and the clearing of a seeded random community (:func:`desmarket.synthetic.random_case`) with
``stages=1`` and with ``stages=2`` (the day-ahead position shared by the scenarios), both by ``--methods``
(default "decomposed", the default method: the deterministic equivalent in one solve). At the end it prints the
table and, per size, the ratio of the two-stage to the one-stage wall time (the issue's target: at most 3 at
1,000 x 10) and Delta C of each. The pseudo-method "lshaped" (``--methods decomposed lshaped``) is "decomposed"
with the L-shaped route asked for (``lshaped=LShaped()``, :mod:`desmarket.lshaped`): ``iterations`` is its
number of iterations (evaluations of all the scenario pieces) and ``gap`` its final relative gap. ``--timeout``
(seconds, default 900) stops a row's process and records it as timed out; ``--verbose`` logs every L-shaped iteration.
Prints only; timings, not assertions. Add 10000 to --homes for the largest row (minutes).
"""

import argparse
import json
import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import psutil


def one_run(homes: int, scenarios: int, stages: int, method: str, seed: int) -> dict:
    """Generate the case, solve M1 and the clearing with ``stages``; one JSON-able row."""
    import warnings

    import desmarket as dm
    from desmarket.lshaped import LShaped
    from desmarket.synthetic import random_case

    warnings.simplefilter("ignore", dm.RoutingWarning)
    case = random_case(seed, n_homes=homes, n_scenarios=scenarios)
    route = {"lshaped": LShaped()} if method == "lshaped" and stages == 2 else {}
    method = "decomposed" if method == "lshaped" else method
    t0 = time.perf_counter()
    m1 = dm.solve_independent(case, method=method, stages=stages)
    t1 = time.perf_counter()
    market = dm.clear_market(case, method=method, stages=stages, **route)
    t2 = time.perf_counter()
    conv = market.convergence
    return {
        "m1_s": t1 - t0,
        "clearing_s": t2 - t1,
        "total_s": t2 - t0,
        "solver": market.solver,
        "surplus_usd": dm.cooperative_surplus(m1, market),
        "iterations": None if conv is None else len(conv),
        "gap": None if conv is None else float(conv["gap"].iloc[-1]),
    }


def measured(
    homes: int, scenarios: int, stages: int, method: str, seed: int, timeout: float = 900.0, verbose: bool = False
) -> dict:
    """:func:`one_run` in a child process, with its peak memory (GiB); a failed run gives a row with ``error``."""
    cmd = [sys.executable, __file__, "--one", str(homes), str(stages), method, "--scenarios", str(scenarios)]
    cmd += ["--seed", str(seed)] + (["--verbose"] if verbose else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, parent = 0, psutil.Process(proc.pid)

    def sample():
        nonlocal peak
        while proc.poll() is None:
            try:
                procs = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.communicate()
        thread.join()
        return {
            "homes": homes,
            "scenarios": scenarios,
            "stages": stages,
            "method": method,
            "error": f"timed out after {timeout:g} s",
            "peak_gib": peak / 2**30,
        }
    thread.join()
    row = {}
    for line in reversed(out.strip().splitlines()):
        try:
            row = json.loads(line)
            break
        except ValueError:
            continue
    if proc.returncode and "error" not in row:
        row = {"error": f"the run exited with code {proc.returncode} (killed, or out of memory?)"}
    return {"homes": homes, "scenarios": scenarios, "stages": stages, "method": method, **row, "peak_gib": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["decomposed"])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per row before it is stopped")
    parser.add_argument("--verbose", action="store_true", help="log every L-shaped iteration to stderr")
    parser.add_argument("--one", nargs=3, metavar=("HOMES", "STAGES", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        if args.verbose:
            logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stderr)
        try:
            print(json.dumps(one_run(int(args.one[0]), args.scenarios, int(args.one[1]), args.one[2], args.seed)))
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            raise SystemExit(1) from None
        return
    rows = []
    for n in args.homes:
        for method in args.methods:
            for stages in (1, 2):
                print(f"  {n} homes x {args.scenarios} scenarios, {method}, {stages} stage(s) ...", end=" ", flush=True)
                rows.append(measured(n, args.scenarios, stages, method, args.seed, args.timeout, args.verbose))
                r = rows[-1]
                if "error" in r:
                    print(f"FAILED: {r['error']}", flush=True)
                else:
                    print(
                        f"{r['total_s']:.1f} s (M1 {r['m1_s']:.1f} s, clearing {r['clearing_s']:.1f} s), "
                        f"peak {r['peak_gib']:.2f} GiB, Delta C {r['surplus_usd']:.6g} $, solver {r['solver']}"
                        + (
                            f", {r['iterations']} L-shaped iterations, gap {r['gap']:.2g}"
                            if r.get("iterations")
                            else ""
                        ),
                        flush=True,
                    )
    table = pd.DataFrame(rows)
    for column in ("total_s", "m1_s", "clearing_s", "surplus_usd", "solver", "iterations", "gap", "error"):
        if column not in table:
            table[column] = np.nan
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.drop(columns=["error"] if table["error"].isna().all() else []).to_string(index=False))
    wide = table.pivot_table(index=["homes", "method"], columns="stages", values="total_s")
    if {1, 2} <= set(wide.columns):
        print("\nwall time, two stages / one stage (target <= 3 at 1,000 x 10):")
        for (n, method), r in wide.iterrows():
            print(f"  {n:>6} homes, {method}: {r[2] / r[1]:.2f}x ({r[2]:.1f} s / {r[1]:.1f} s)")


if __name__ == "__main__":
    main()
