"""The command line: ``desmarket validate | build-case | run`` (installed with the package; also ``python -m desmarket``).

Exit codes: 0 done; 1 bad input or a case the model cannot serve (one clear line on stderr, no traceback);
2 usage (argparse). Nothing is written when the input is bad.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path



def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def validate(args) -> int:
    """Load and validate a case directory; print what it holds."""
    import desmarket as dm  # noqa: PLC0415  (keeps `desmarket --help` fast)

    case = dm.load_case(args.case)
    print(f"valid: {case}")
    print(f"homes: {', '.join(case.home_ids)}")
    print(f"scenarios: {', '.join(case.scenarios)} (probabilities {', '.join(f'{p:g}' for p in case.probability)})")
    return 0


def build_case(args) -> int:
    """Build a case from the measured data (the data layer) and write it in the case format."""
    from desmarket import data  # noqa: PLC0415

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    case = data.build_case(n_homes=args.homes, n_scenarios=args.scenarios, date=args.date or data.PAPER_DATE,
                           seed=args.seed)
    case.save(out)
    copies = data.resampled_homes(case.home_ids)
    print(f"wrote {out}: {case}" + (f"; {len(copies)} homes are resampled copies of measured ones" if copies else ""))
    return 0


def run(args) -> int:
    """M1, the clearing, M2 and M3 on a case: the tables and figures of notebooks 02-06, without the scorecard."""
    import desmarket as dm  # noqa: PLC0415
    from desmarket import io, plots, report  # noqa: PLC0415
    from desmarket.study import settled_study  # noqa: PLC0415

    case = dm.load_case(args.case)  # before anything is written
    if not 0.0 <= args.profit_rate <= 1.0:
        raise ValueError(f"--profit-rate must lie in [0, 1], got {args.profit_rate}")
    out = Path(args.out)
    paths = io.RunPaths(out, out / "case", out / "operation", out / "tables", out / "figures")
    steps = [("M1 (each home alone)", lambda: dm.solve_independent(case, method=args.method)),
             ("market clearing", lambda: dm.clear_market(case, method=args.method))]
    ops = []
    for name, step in steps:
        t0 = time.perf_counter()
        _say(f"solving {name}, method {args.method} ...")
        ops.append(step())
        _say(f"  done in {time.perf_counter() - t0:.1f} s")
    study = settled_study(case, ops[0], ops[1], args.profit_rate)
    for p in paths[1:]:
        p.mkdir(parents=True, exist_ok=True)
    case.save(paths.case)
    io.save_operation(study.independent, case, paths.operation, "m1")
    io.save_operation(study.market, case, paths.operation, "market")
    tables = {
        "m1_costs": report.cost_breakdown(study.independent, case),
        "market_costs": report.cost_breakdown(study.market, case),
        "clearing_prices": report.price_table(case, study.market),
        "contribution_rates": report.contribution_table(case, study.market, args.profit_rate),
        "table3_energy": report.table3_energy(study),
        "table4_costs": report.table4_costs(study),
        "settlement": report.settlement_table(study),
    }
    for name, table in tables.items():
        report.save_table(table, paths.tables / f"{name}.csv")
    sweep = dm.profit_rate_sweep(case, study.independent, study.market, [i / 20 for i in range(21)])
    report.save_table(sweep, paths.tables / "figure5_profit_rate.csv", index=False)
    community = report.hourly_profile(study)
    report.save_table(community, paths.tables / "figure3_net_load.csv", index=False)
    home = report.showcase_home(study)
    reduction = report.headline(study)["peak_net_load_reduction_kwh"]
    rates = tables["contribution_rates"]
    figures = {
        "inputs": plots.figure_inputs(report.inputs_hourly(case)),
        "figure2_home": plots.figure2_home_curves(report.hourly_profile(study, home), home),
        "figure3_net_load": plots.figure3_net_load(community, reduction),
        "figure4_cost_reduction": plots.figure4_cost_reduction(tables["settlement"]),
        "figure5_profit_rate": plots.figure5_profit_rate(sweep),
        "alpha_vs_traded": plots.figure_alpha_vs_traded(rates, report.correlation(rates["alpha"],
                                                                                  rates["traded_kwh"])),
    }
    for name, fig in figures.items():
        plots.save_figure(fig, paths.figures / f"{name}.png")
    print(f"ΔC = {study.m3.surplus:.4f} $/day; ρ = {args.profit_rate}; aggregator gain {study.m3.aggregator_gain:.4f} "
          f"$/day; M3 home gains {study.m3.home_gain.min():.4f} to {study.m3.home_gain.max():.4f} $/day")
    print(f"wrote {len(tables) + 2} tables and {len(figures)} figures under {out}/")
    return 0


def parser() -> argparse.ArgumentParser:
    from desmarket import __version__  # noqa: PLC0415

    top = argparse.ArgumentParser(prog="desmarket", description="Distributed energy trading with a market value "
                                  "allocation mechanism (a reproduction of Hu et al. 2024).")
    top.add_argument("--version", action="version", version=f"desmarket {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="{validate,build-case,run}")
    p = sub.add_parser("validate", help="check a case directory (README, 'Case format')",
                       description="Load and validate a case directory; exit 1 with the first problem found.")
    p.add_argument("case", help="a case directory: homes.csv, profiles.csv, scenarios.csv, prices.csv, market.json")
    p.set_defaults(func=validate)
    p = sub.add_parser("build-case", help="build a case from the measured data",
                       description="Build a case from the measured CityLearn homes (homes beyond the 12 measured "
                       "ones are resampled copies) and a seeded PJM-like LMP, and write it to OUT.")
    p.add_argument("out", help="a new (or empty) folder")
    p.add_argument("--homes", type=int, default=10)
    p.add_argument("--scenarios", type=int, default=10)
    p.add_argument("--date", default="", help="target day YYYY-MM-DD (default the paper's day)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=build_case)
    p = sub.add_parser("run", help="M1, market clearing, M2 and M3 on a case: tables and figures",
                       description="Solve M1 and the market clearing of a case, settle under M2 and M3, and write "
                       "the case, the operations, the tables and the figures of notebooks 02-06 to --out.")
    p.add_argument("case", help="a case directory")
    p.add_argument("--out", required=True, help="output folder (case/, operation/, tables/, figures/)")
    p.add_argument("--profit-rate", type=float, default=0.2, help="ρ, the aggregator's profit rate (default 0.2)")
    p.add_argument("--method", default="decomposed", choices=("central", "decomposed", "coordinated"))
    p.set_defaults(func=run)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except Exception as exc:  # user errors: one line, exit 1; anything else is a bug: traceback
        from desmarket.errors import DesmarketError  # noqa: PLC0415

        if isinstance(exc, (DesmarketError, ValueError, FileExistsError, FileNotFoundError)):
            _say(f"desmarket {args.command}: error: {exc}")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
