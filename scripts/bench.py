"""Benchmark of the solving methods and of the market process's techniques: time, memory, rounds, accuracy.

Usage: python scripts/bench.py [--homes 100 1000 10000] [--scenarios 10] [--techniques 10 100 1000]
       [--spread 10] [--spread-seeds 10] [--save]

``make bench`` runs the default sizes (about 10 minutes on a 2-core machine): the methods at 100 and 1,000
homes (the coordinated process at 100) and the technique table at 10 and 100 homes. ``make bench FULL=1``
runs the full sizes: the methods up to 10,000 homes (the coordinated process included) and the technique
table at 10, 100 and 1,000 homes (several hours: the plain ADMM rows at 1,000 homes alone take more than one).

Each run is its own process, so that peak memory (the process and its joblib workers, sampled every 0.1 s)
and timings do not leak between runs. Central runs up to --central-max homes (1,000) and coordinated up to
--coordinated-max. Every row is printed as soon as it finishes; a row that fails (an error, or the child
process killed) is printed and kept with its reason, and the other rows still run. With --save
(``make bench SAVE=1``) every finished row is written at once to results/bench/ (bench.csv, techniques.csv,
machine.txt; bench.png at the end), so an interrupted run keeps what finished; otherwise nothing is written.

The technique table: for each size and technique of the market process (:data:`TECHNIQUES`), the rounds,
the seconds of the clearing, the ratio to the decomposed (exact) clearing timed in the same process, and the
accuracy against it: Delta C relative and the largest difference of a home's M3 gain, $. ``--spread HOMES``
runs the default process on seeds 0..K-1 (``--spread-seeds``) of each size and prints the spread of its rounds
(:func:`spread`; spread.csv with --save). Timings, not assertions.
"""

import argparse
import json
import os
import platform
import signal
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
    market = dm.clear_market(case, method=method)  # the coordinated process at its defaults
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


#: Seconds after which a run is stopped (``--time-box``); None: no limit.
TIME_BOX: float | None = None


def measured(
    homes: int, scenarios: int, method: str, seed: int, flag: str = "--one", timeout: float | None = None
) -> dict:
    """Run :func:`one_run` (``flag`` "--technique": :func:`technique_run`, ``method`` a technique) in a child
    process; add its peak memory (child + workers), GiB. A failed run gives a row with ``error`` (the child's
    exception, or its exit code when it was killed); a run longer than ``timeout`` seconds (default
    :data:`TIME_BOX`, ``--time-box``) is stopped (its process group) and its row says so."""
    timeout = TIME_BOX if timeout is None else timeout
    cmd = [sys.executable, __file__, flag, str(homes), method, "--scenarios", str(scenarios), "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
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
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its joblib workers, nothing else
        proc.communicate()
        thread.join()
        key = "technique" if flag == "--technique" else "method"
        row = {"error": f"stopped after the time box of {timeout:.0f} s"}
        return {"homes": homes, "scenarios": scenarios, key: method, **row, "peak_memory_gib": peak / 2**30}
    thread.join()
    row = _last_json(out)
    if proc.returncode and "error" not in row:
        row = {"error": f"the run exited with code {proc.returncode} (killed, or out of memory?)"}
    key = "technique" if flag == "--technique" else "method"
    return {"homes": homes, "scenarios": scenarios, key: method, **row, "peak_memory_gib": peak / 2**30}


#: The stop of the techniques without the economic stop: the residuals of ``Coordination.plain()``.
RESIDUALS_ONLY = dict(economic=False, patience=1, tol_imbalance=1e-5)
#: Techniques of the market process in the technique table: their :class:`desmarket.Coordination` settings.
#: "plain ADMM" is Boyd et al.'s exchange ADMM at the default's fixed penalty from the midpoint price; the
#: single techniques stop on its residual tolerances, the default and its variants on the default's.
TECHNIQUES = {
    "plain ADMM": "plain",
    "previous default (residual balancing)": dict(
        rho=0.002,
        adaptive=True,
        relaxation=1.0,
        warm_start=False,
        anderson=0,
        economic=False,
        patience=1,
        tol_residual=1e-5,
        tol_price=1e-7,
    ),
    "default at penalty 0.004 (the first round's)": dict(rho=0.004, adaptive_hours=False),
    "over-relaxation 1.6": dict(relaxation=1.6, warm_start=False, anderson=0, adaptive_hours=False, **RESIDUALS_ONLY),
    "over-relaxation + warm start": dict(
        relaxation=1.6, warm_start=True, anderson=0, adaptive_hours=False, **RESIDUALS_ONLY
    ),
    "Anderson (memory 5)": dict(relaxation=1.0, warm_start=False, anderson=5, adaptive_hours=False, **RESIDUALS_ONLY),
    "spectral penalty per hour (Xu et al. 2017)": dict(spectral="hour"),
    "spectral penalty per home and hour": dict(spectral="home"),
    "previous default (fixed penalty 0.001)": dict(adaptive_hours=False),
    "default (all, economic stop)": {},
    "default, homes batched": dict(batched=True),
    "default, 10 % of answers lost": dict(dropout=0.1),
}
#: The techniques ``make bench`` runs by default (the others with FULL=1 or --all-techniques).
DEFAULT_TECHNIQUES = (
    "plain ADMM",
    "previous default (residual balancing)",
    "default at penalty 0.004 (the first round's)",
    "default (all, economic stop)",
    "previous default (fixed penalty 0.001)",
    "default, 10 % of answers lost",
)


def coordination(technique: str):
    import desmarket as dm

    spec = TECHNIQUES[technique]
    return dm.Coordination.plain() if spec == "plain" else dm.Coordination(**spec)


def technique_run(homes: int, scenarios: int, technique: str, seed: int) -> dict:
    """The exact (decomposed) clearing and the process with ``technique`` on one case; one JSON-able row."""
    import warnings

    import desmarket as dm
    from desmarket.synthetic import random_case

    warnings.simplefilter("ignore", dm.RoutingWarning)
    case = random_case(seed, n_homes=homes, n_scenarios=scenarios)
    m1 = dm.solve_independent(case)
    t0 = time.perf_counter()
    exact = dm.clear_market(case)
    t1 = time.perf_counter()
    market = dm.clear_market(case, method="coordinated", coordination=coordination(technique))
    t2 = time.perf_counter()
    ref, got = dm.settle(case, m1, exact, 0.2), dm.settle(case, m1, market, 0.2)
    log = market.convergence
    return {
        "rounds": len(log),
        "clearing_s": t2 - t1,
        "decomposed_s": t1 - t0,
        "surplus_rel_diff": abs(got.surplus / ref.surplus - 1),
        "gain_max_diff_usd": float(np.abs(got.home_gain - ref.home_gain).max()),
        "unanswered_share": float(log.unanswered.sum() / (homes * len(log))),
        "solver": market.solver,
    }


def child_technique(homes: int, scenarios: int, technique: str, seed: int) -> int:
    try:
        print(json.dumps(technique_run(homes, scenarios, technique, seed)), flush=True)
        return 0
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1


def describe_technique(row: dict) -> str:
    if "error" in row:
        return f"FAILED: {row['error']}"
    met = row["rounds"] <= 50 and row["surplus_rel_diff"] <= 1e-4 and row["gain_max_diff_usd"] <= 1e-3
    return (
        f"{'meets' if met else 'misses'} the targets (<= 50 rounds, Delta C to 1e-4, gains to 1e-3 $): "
        f"{row['rounds']} rounds, {row['clearing_s']:.1f} s ({row['clearing_s'] / row['decomposed_s']:.0f}x the "
        f"decomposed {row['decomposed_s']:.2f} s), peak {row['peak_memory_gib']:.2f} GiB, Delta C within "
        f"{row['surplus_rel_diff']:.1e} relative, gains within {row['gain_max_diff_usd']:.1e} $"
    )


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
            "unknown: results/bench/bench.csv has no timing of these runs (make bench takes about 10 minutes, "
            "make bench FULL=1 several hours, on 2 cores)"
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


def _table(rows: list[dict]) -> pd.DataFrame:
    """The methods' rows as a table, with total time and Delta C relative to the reference of each size
    (central where it ran, else decomposed)."""
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
    return table.drop(columns="error") if table.error.isna().all() else table


def _technique_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in ("rounds", "clearing_s", "decomposed_s", "surplus_rel_diff", "gain_max_diff_usd", "error"):
        if column not in table:
            table[column] = np.nan
    table["x_decomposed"] = table.clearing_s / table.decomposed_s
    columns = ["homes", "scenarios", "technique", "rounds", "clearing_s", "decomposed_s", "x_decomposed"]
    columns += ["surplus_rel_diff", "gain_max_diff_usd", "peak_memory_gib", "error"]
    table = table[columns]
    return table.drop(columns="error") if table.error.isna().all() else table


#: The techniques whose spread over seeds ``--spread`` measures: the default (residual balancing per hour) and
#: the previous default (a fixed penalty).
SPREAD_TECHNIQUES = ("default (all, economic stop)", "previous default (fixed penalty 0.001)")


def spread(
    sizes: list[int], scenarios: int, seeds: int, out: Path | None, techniques: tuple[str, ...] = SPREAD_TECHNIQUES
) -> pd.DataFrame:
    """Each of ``techniques`` on ``seeds`` random communities of each size (seeds 0..seeds-1), each beside its
    exact clearing: one row per seed as it finishes, then rounds (median, min, max) and how many seeds meet
    the targets. One seed says little: at 10 homes x 10 scenarios the rounds ranged from 56 to 392 over seeds
    0-9 (issue 21; the slow seeds spend most rounds with prices drifting inside [lambda^s, lambda^b] in hours
    where no answer moves)."""
    print(f"\nspread over seeds: {len(techniques)} techniques, {seeds} seeds per size, each beside the exact clearing")
    rows = []
    for n in sizes:
        for name in techniques:
            for seed in range(seeds):
                print(f"  {n} homes x {scenarios} scenarios, {name}, seed {seed} ...", end=" ", flush=True)
                rows.append({**measured(n, scenarios, name, seed, flag="--technique"), "seed": seed})
                print(describe_technique(rows[-1]), flush=True)
                if out is not None:
                    pd.DataFrame(rows).to_csv(out / "spread.csv", index=False, float_format="%.4g")
            done = pd.DataFrame([r for r in rows if r["homes"] == n and r["technique"] == name and "error" not in r])
            if len(done):
                met = (done.rounds <= 50) & (done.surplus_rel_diff <= 1e-4) & (done.gain_max_diff_usd <= 1e-3)
                print(
                    f"  {n} homes, {name}: rounds median {done.rounds.median():.0f}, min {done.rounds.min()}, max "
                    f"{done.rounds.max()}; {int(met.sum())} of {seeds} seeds meet the targets; x decomposed median "
                    f"{(done.clearing_s / done.decomposed_s).median():.0f}",
                    flush=True,
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, nargs="*", default=[100, 1000, 10_000])
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["central", "decomposed", "coordinated"])
    parser.add_argument("--central-max", type=int, default=1000)
    parser.add_argument("--coordinated-max", type=int, default=1000)
    parser.add_argument("--techniques", type=int, nargs="*", default=[], metavar="HOMES", help="technique table sizes")
    parser.add_argument("--all-techniques", action="store_true", help="every technique, not only the defaults")
    parser.add_argument("--technique-names", nargs="+", choices=list(TECHNIQUES), help="these techniques only")
    parser.add_argument("--save", action="store_true", help="write results/bench/ (bench.csv, machine.txt, bench.png)")
    parser.add_argument("--time-box", type=float, default=None, metavar="SECONDS", help="stop a run after this long")
    parser.add_argument("--spread", type=int, nargs="*", default=[], metavar="HOMES", help="the default over seeds")
    parser.add_argument("--spread-seeds", type=int, default=10, metavar="K", help="seeds 0..K-1 of --spread")
    parser.add_argument("--one", nargs=2, metavar=("HOMES", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--technique", nargs=2, metavar=("HOMES", "TECHNIQUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global TIME_BOX
    TIME_BOX = args.time_box
    if args.one:
        raise SystemExit(child_run(int(args.one[0]), args.scenarios, args.one[1], args.seed))
    if args.technique:
        raise SystemExit(child_technique(int(args.technique[0]), args.scenarios, args.technique[1], args.seed))
    out = ROOT / "results" / "bench"
    if args.save:
        out.mkdir(parents=True, exist_ok=True)
        (out / "machine.txt").write_text(machine() + "\n")
    limit = {"central": args.central_max, "coordinated": args.coordinated_max}
    runs = [(n, method) for n in args.homes for method in args.methods if n <= limit.get(method, n)]
    names = args.technique_names or (list(TECHNIQUES) if args.all_techniques else list(DEFAULT_TECHNIQUES))
    technique_runs = [(n, name) for n in args.techniques for name in names]
    print(f"{len(runs)} runs; expected: {expected_duration(runs, args.scenarios)}", flush=True)
    rows = []
    for n, method in runs:
        print(f"  {n} homes x {args.scenarios} scenarios, {method} ...", end=" ", flush=True)
        rows.append(measured(n, args.scenarios, method, args.seed))
        print(describe(rows[-1]), flush=True)
        if args.save:  # what finished is kept, whatever happens to the next runs
            _table(rows).to_csv(out / "bench.csv", index=False, float_format="%.4g")
    table = _table(rows) if rows else pd.DataFrame(columns=["homes", "method", "total_s"])
    print(f"\nmachine: {machine()}")
    from desmarket.coordinated import Coordination

    print(f"coordinated settings in the bench: {Coordination()}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for n, group in table.groupby("homes"):
        t = group.set_index("method").total_s.dropna()  # failed runs have no time
        if {"central", "decomposed"} <= set(t.index):
            print(f"  {n} homes: central / decomposed = {t['central'] / t['decomposed']:.1f}x (same run)")
        if {"coordinated", "decomposed"} <= set(t.index):
            print(f"  {n} homes: coordinated / decomposed = {t['coordinated'] / t['decomposed']:.1f}x (same run)")
    if technique_runs:
        print(f"\ntechnique table: {len(technique_runs)} runs of the market process, each beside the exact clearing")
        trows = []
        for n, name in technique_runs:
            print(f"  {n} homes x {args.scenarios} scenarios, {name} ...", end=" ", flush=True)
            trows.append(measured(n, args.scenarios, name, args.seed, flag="--technique"))
            print(describe_technique(trows[-1]), flush=True)
            if args.save:
                _technique_table(trows).to_csv(out / "techniques.csv", index=False, float_format="%.4g")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(_technique_table(trows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.spread:
        spread(args.spread, args.scenarios, args.spread_seeds, out if args.save else None)
    if args.save:
        if rows:
            figure(table, out / "bench.png")
        print(f"written: {out}/ (bench.csv, techniques.csv, machine.txt, bench.png)")


if __name__ == "__main__":
    main()
