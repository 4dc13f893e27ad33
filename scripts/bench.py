"""Benchmark of the solving methods: wall time, peak memory and iterations of M1 + the clearing.

Usage: python scripts/bench.py [--homes 100 1000 10000] [--scenarios 10] [--save]

Each (homes, method) runs in its own process, so that peak memory (the process and its joblib workers,
sampled every 0.1 s) and timings do not leak between runs. Central runs up to --central-max homes (1,000)
and coordinated up to --coordinated-max (1,000): it is iterative, about 2 ms per home and iteration on this
machine and several hundred iterations, so 1,000 homes take about 20 minutes.
Prints the table, the ratio of central to decomposed time at each size, and Delta C of each method relative
to the reference (central where it ran, else decomposed). With --save (``make bench SAVE=1``) it writes
results/bench/bench.csv, machine.txt and bench.png; otherwise nothing is written. Timings, not assertions.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from desmarket.io import project_root

ROOT = project_root()


def machine() -> str:
    import cvxpy as cp

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}, "
            f"cvxpy {cp.__version__}")


def one_run(homes: int, scenarios: int, method: str, seed: int) -> dict:
    """Generate the case, solve M1 and the clearing with ``method``, settle; one JSON-able row."""
    import warnings

    import desmarket as dm
    from desmarket.synthetic import random_case

    warnings.simplefilter("ignore", dm.RoutingWarning)
    case = random_case(seed, n_homes=homes, n_scenarios=scenarios)
    t0 = time.perf_counter()
    m1 = dm.solve_independent(case, method=method)
    t1 = time.perf_counter()
    # the coordinated process at dm.Coordination.relaxed(): Delta C within 1e-3 relative (the target)
    options = {"coordination": dm.Coordination.relaxed()} if method == "coordinated" else {}
    market = dm.clear_market(case, method=method, **options)
    t2 = time.perf_counter()
    return {"m1_s": t1 - t0, "clearing_s": t2 - t1, "solver": market.solver,
            "iterations": len(market.convergence) if market.convergence is not None else np.nan,
            "surplus_usd": dm.cooperative_surplus(m1, market)}


def measured(homes: int, scenarios: int, method: str, seed: int) -> dict:
    """Run :func:`one_run` in a child process; add its peak memory (child + workers), GiB."""
    cmd = [sys.executable, __file__, "--one", str(homes), method, "--scenarios", str(scenarios), "--seed", str(seed)]
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
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{method} at {homes} homes failed (exit {proc.returncode})")
    return {"homes": homes, "scenarios": scenarios, "method": method, **json.loads(out.strip().splitlines()[-1]),
            "peak_memory_gib": peak / 2**30}


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, rows in table.groupby("method", sort=False):
        ax.loglog(rows.homes, rows.total_s, marker="o", label=method)
    ax.set_xlabel("homes (x 10 scenarios)")
    ax.set_ylabel("wall time of M1 + clearing (s)")
    ax.set_title("Solve time against community size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="method")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["central", "decomposed", "coordinated"])
    parser.add_argument("--central-max", type=int, default=1000)
    parser.add_argument("--coordinated-max", type=int, default=1000)
    parser.add_argument("--save", action="store_true", help="write results/bench/ (bench.csv, machine.txt, bench.png)")
    parser.add_argument("--one", nargs=2, metavar=("HOMES", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(int(args.one[0]), args.scenarios, args.one[1], args.seed)))
        return
    limit = {"central": args.central_max, "coordinated": args.coordinated_max}
    rows = []
    for n in args.homes:
        for method in args.methods:
            if n > limit.get(method, n):
                continue
            print(f"  {n} homes x {args.scenarios} scenarios, {method} ...", end=" ", flush=True)
            rows.append(measured(n, args.scenarios, method, args.seed))
            print(f"{rows[-1]['m1_s'] + rows[-1]['clearing_s']:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    table["total_s"] = table.m1_s + table.clearing_s
    reference = {}
    for n, group in table.groupby("homes"):
        ref = group[group.method == "central"] if (group.method == "central").any() else group[group.method == "decomposed"]
        reference[n] = ref.surplus_usd.iloc[0] if len(ref) else np.nan
    table["surplus_rel_diff"] = (table.surplus_usd / table.homes.map(reference) - 1).abs()
    table = table[["homes", "scenarios", "method", "solver", "m1_s", "clearing_s", "total_s", "peak_memory_gib",
                   "iterations", "surplus_usd", "surplus_rel_diff"]]
    print(f"\nmachine: {machine()}")
    from desmarket.coordinated import Coordination  # noqa: PLC0415  (the parent stays light; workers import it)

    print(f"coordinated settings in the bench: {Coordination.relaxed()}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for n, group in table.groupby("homes"):
        t = group.set_index("method").total_s
        if {"central", "decomposed"} <= set(t.index):
            print(f"  {n} homes: central / decomposed = {t['central'] / t['decomposed']:.1f}x (same run)")
    if args.save:
        out = ROOT / "results" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "bench.csv", index=False, float_format="%.4g")
        (out / "machine.txt").write_text(machine() + "\n")
        figure(table, out / "bench.png")
        print(f"written: {out / 'bench.csv'}, machine.txt, bench.png")


if __name__ == "__main__":
    main()
