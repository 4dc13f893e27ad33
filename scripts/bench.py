"""Benchmark of the solving methods: wall time, peak memory and iterations of M1 + the clearing.

Usage: python scripts/bench.py [--homes 100 1000 10000] [--scenarios 10] [--save]

Each (homes, method) runs in its own process, so that peak memory (the process and its joblib workers,
sampled every 0.1 s) and timings do not leak between runs. Central runs up to --central-max homes (1,000)
and coordinated up to --coordinated-max (1,000): it is iterative, about 2 ms per home and iteration on this
machine and several hundred iterations, so 1,000 homes take about 20 minutes.
Prints each row as soon as it finishes; a row that fails (an error, or the child process killed) is printed
and kept with its reason, and the other rows still run. At the start it says roughly how long the run will
take, from the timings of the same rows in results/bench/bench.csv (the default run: about 27 minutes on a
2-core machine, 21 of them the coordinated process at 1,000 homes). At the end it prints the table, the ratio
of central to decomposed time at each size, and Delta C of each method relative to the reference (central
where it ran, else decomposed). With --save (``make bench SAVE=1``) it writes results/bench/bench.csv,
machine.txt and bench.png; otherwise nothing is written. Timings, not assertions.
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
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}, cvxpy {cp.__version__}"
    )


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
    return {
        "m1_s": t1 - t0,
        "clearing_s": t2 - t1,
        "solver": market.solver,
        "iterations": len(market.convergence) if market.convergence is not None else np.nan,
        "surplus_usd": dm.cooperative_surplus(m1, market),
    }


def child_run(homes: int, scenarios: int, method: str, seed: int) -> int:
    """The child's side: one JSON line, the row of :func:`one_run` or ``{"error": reason}``; exit code 0 or 1."""
    try:
        print(json.dumps(one_run(homes, scenarios, method, seed)), flush=True)
        return 0
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1


def _last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def measured(homes: int, scenarios: int, method: str, seed: int) -> dict:
    """Run :func:`one_run` in a child process; add its peak memory (child + workers), GiB. A failed run gives
    a row with ``error`` (the child's exception, or its exit code when it was killed)."""
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
    row = _last_json(out)
    if proc.returncode and "error" not in row:
        row = {"error": f"the run exited with code {proc.returncode} (killed, or out of memory?)"}
    return {"homes": homes, "scenarios": scenarios, "method": method, **row, "peak_memory_gib": peak / 2**30}


def describe(row: dict) -> str:
    """One finished row in a line: its times, memory, iterations and Delta C, or why it failed."""
    if "error" in row:
        return f"FAILED: {row['error']}"
    iterations = "" if row["iterations"] != row["iterations"] else f", {row['iterations']:.0f} iterations"
    return (
        f"{row['m1_s'] + row['clearing_s']:.1f} s (M1 {row['m1_s']:.1f} s, clearing {row['clearing_s']:.1f} s), "
        f"peak {row['peak_memory_gib']:.2f} GiB{iterations}, Delta C {row['surplus_usd']:.6g} $, "
        f"solver {row['solver']}"
    )


def expected_duration(runs: list[tuple[int, str]], scenarios: int) -> str:
    """Roughly how long the runs take: the saved timings of the same rows (results/bench/bench.csv)."""
    saved = ROOT / "results" / "bench" / "bench.csv"
    table = pd.read_csv(saved) if saved.exists() else pd.DataFrame(columns=["homes", "scenarios", "method", "total_s"])
    table = table[table.scenarios == scenarios].set_index(["homes", "method"]).total_s.dropna()
    known = [table[run] for run in runs if run in table.index]
    if not known:
        return (
            "unknown: results/bench/bench.csv has no timing of these runs (the default run takes about "
            "27 minutes on 2 cores)"
        )
    where = ROOT / "results" / "bench" / "machine.txt"
    total = sum(known)
    text = (f"about {total / 60:.0f} minutes" if total >= 120 else f"about {total:.0f} s") + (
        f" of solving, as measured on {where.read_text().strip() if where.exists() else 'the saved run'}"
    )
    if len(known) < len(runs):
        text += f", plus {len(runs) - len(known)} of the {len(runs)} runs with no saved timing"
    return text


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
        raise SystemExit(child_run(int(args.one[0]), args.scenarios, args.one[1], args.seed))
    limit = {"central": args.central_max, "coordinated": args.coordinated_max}
    runs = [(n, method) for n in args.homes for method in args.methods if n <= limit.get(method, n)]
    print(f"{len(runs)} runs; expected: {expected_duration(runs, args.scenarios)}", flush=True)
    rows = []
    for n, method in runs:
        print(f"  {n} homes x {args.scenarios} scenarios, {method} ...", end=" ", flush=True)
        rows.append(measured(n, args.scenarios, method, args.seed))
        print(describe(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    for column in ("solver", "m1_s", "clearing_s", "iterations", "surplus_usd", "error"):
        if column not in table:  # every run failed, or none did
            table[column] = np.nan
    table["total_s"] = table.m1_s + table.clearing_s
    reference = {}
    for n, group in table.groupby("homes"):
        ref = (
            group[group.method == "central"]
            if (group.method == "central").any()
            else group[group.method == "decomposed"]
        )
        reference[n] = ref.surplus_usd.iloc[0] if len(ref) else np.nan
    table["surplus_rel_diff"] = (table.surplus_usd / table.homes.map(reference) - 1).abs()
    table = table[
        [
            "homes",
            "scenarios",
            "method",
            "solver",
            "m1_s",
            "clearing_s",
            "total_s",
            "peak_memory_gib",
            "iterations",
            "surplus_usd",
            "surplus_rel_diff",
            "error",
        ]
    ]
    if table.error.isna().all():
        table = table.drop(columns="error")
    print(f"\nmachine: {machine()}")
    from desmarket.coordinated import Coordination

    print(f"coordinated settings in the bench: {Coordination.relaxed()}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for n, group in table.groupby("homes"):
        t = group.set_index("method").total_s.dropna()  # failed runs have no time
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
