"""Files of a run: where they go, operation results as CSV (no pickles) so later notebooks never re-solve, and
the published tables (:func:`save_table`: rounded, byte-identical on a rerun). Every result file is written
here; the two other writers sit beside their format: a case (:meth:`desmarket.case.Case.save`, the case format's
own module) and a figure (:func:`desmarket.plots.save_figure`, a PNG without volatile metadata).

``save_operation`` writes ``<name>_dispatch.csv`` (home, scenario, hour, every (N, S, T) array),
``<name>_homes.csv`` (per-home costs), ``<name>_summary.json`` (totals, solver, and the case fingerprint of
:func:`desmarket.model.case_fingerprint`) and, for the market, ``<name>_prices.csv``; ``load_operation`` reads
them back into an :class:`~desmarket.model.Operation` (without the cvxpy problem), after checking that they were
solved on the case given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from .case import Case, long_table, scenario_table
from .claims import paper_claims as paper_claims  # re-exported: io.paper_claims(), as the notebooks call it
from .daycache import FLOAT_FORMAT
from .errors import DataError, MismatchError
from .model import Operation, case_fingerprint

DISPATCH = ("load", "pv_used", "charge", "discharge", "energy", "net_load", "net_surplus", "trade")
HOME_COSTS = ("retail_bill", "net_metering_credit", "utility", "home_cost")
EXACT = "%.12g"  # interchange files keep the solver's digits; published tables are rounded (report.save_table)
#: How the interchange files are read: only an empty cell is missing, so ids such as "NA", "null" or "nan"
#: come back exactly as written (as in :func:`desmarket.case.load_case`).
READ_IDS = {"keep_default_na": False, "na_values": [""]}


def project_root() -> Path:
    """The repository root, the one notion of it in the project (the package is installed editable from ``lib/``).

    Scripts, tests and :mod:`desmarket.data` resolve ``data/``, ``results/`` and ``notebooks/`` from here.
    """
    return Path(__file__).resolve().parents[2]


def resolve(path) -> Path:
    """A path relative to the project root (absolute paths pass through)."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


def _exact(value: float) -> float:
    """A float at the interchange files' :data:`EXACT` digits, as the CSV files keep it: the JSON summary then
    holds no digit below the solver's accuracy, which would change with the CPU's floating-point kernels."""
    return float(EXACT % value)


def save_operation(op: Operation, case: Case, directory, name: str) -> list[Path]:
    """Write one operation result as CSV files named ``name_*.csv`` in ``directory``; returns the paths."""
    directory = resolve(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dispatch = long_table(case.home_ids, case.scenarios, **{k: getattr(op, k) for k in DISPATCH})
    homes = pd.DataFrame({k: getattr(op, k) for k in HOME_COSTS}, index=pd.Index(case.home_ids, name="home"))
    meta = {
        "mode": op.mode,
        "aggregator_revenue": _exact(op.aggregator_revenue),
        "regularization_cost": _exact(op.regularization_cost),
        "over_limit_kw": _exact(op.over_limit_kw),
        "objective": _exact(op.objective),
        "solver": op.solver,
        "method": op.method,
        "case_fingerprint": op.fingerprint,
    }
    paths = [directory / f"{name}_dispatch.csv", directory / f"{name}_homes.csv", directory / f"{name}_summary.json"]
    dispatch.to_csv(paths[0], index=False, float_format=EXACT, lineterminator="\n")
    homes.to_csv(paths[1], float_format=EXACT, lineterminator="\n")
    paths[2].write_text(json.dumps(meta, indent=2) + "\n")
    if op.price is not None:
        price, balanced, congested = op.cleared()
        prices = scenario_table(case.scenarios, price_usd_per_kwh=price, balanced=balanced, congested=congested)
        paths.append(directory / f"{name}_prices.csv")
        prices.to_csv(paths[-1], index=False, float_format=EXACT, lineterminator="\n")
    return paths


def load_operation(case: Case, directory, name: str) -> Operation:
    """Read an operation written by :func:`save_operation` for the same case.

    Raises :class:`MismatchError` when the files were solved on another case (other homes or scenarios, or
    another case fingerprint: other profiles, prices or market parameters), or predate the fingerprint.
    """
    directory = resolve(directory)
    n, s, t = case.load.shape
    meta = json.loads((directory / f"{name}_summary.json").read_text())
    _check_fingerprint(case, directory / f"{name}_summary.json", meta.get("case_fingerprint"))
    dispatch = pd.read_csv(directory / f"{name}_dispatch.csv", dtype={"home": str, "scenario": str}, **READ_IDS)
    if len(dispatch) != n * s * t or tuple(dispatch["home"].iloc[:: s * t]) != case.home_ids:
        raise MismatchError(
            f"{directory / (name + '_dispatch.csv')} does not belong to this case "
            f"({n} homes x {s} scenarios); rerun the notebook that writes it"
        )
    homes = pd.read_csv(directory / f"{name}_homes.csv", dtype={"home": str}, **READ_IDS).set_index("home")
    price = balanced = congested = None
    if meta["mode"] == "market":
        prices = pd.read_csv(directory / f"{name}_prices.csv", dtype={"scenario": str}, **READ_IDS)
        if "congested" not in prices:
            raise DataError(
                str(directory / f"{name}_prices.csv"),
                "the file predates the 'congested' column",
                "rerun the notebook that writes it (03)",
                column="congested",
            )
        price = prices["price_usd_per_kwh"].to_numpy().reshape(s, t)
        balanced = prices["balanced"].to_numpy(dtype=bool).reshape(s, t)
        congested = prices["congested"].to_numpy(dtype=bool).reshape(s, t)
    cube = {k: dispatch[k].to_numpy(dtype=float).reshape(n, s, t) for k in DISPATCH}
    return Operation(
        mode=meta["mode"],
        home_ids=case.home_ids,
        probability=case.probability.copy(),
        **cube,
        price=price,
        balanced=balanced,
        congested=congested,
        **{k: homes[k].to_numpy(dtype=float) for k in HOME_COSTS},
        aggregator_revenue=meta["aggregator_revenue"],
        regularization_cost=meta["regularization_cost"],
        over_limit_kw=meta["over_limit_kw"],
        objective=meta["objective"],
        solver=meta["solver"],
        solve_seconds=float("nan"),
        build_seconds=float("nan"),
        solver_seconds=float("nan"),
        problem=None,
        method=meta.get("method", "central"),
        fingerprint=meta["case_fingerprint"],
    )


#: The notebook that writes each operation of a run (its fix when the files are stale).
WRITERS = {"m1": "02_independent", "market": "03_market_clearing"}


def _check_fingerprint(case: Case, path: Path, recorded: str | None) -> None:
    """The operation files at ``path`` were solved on ``case`` (same :func:`~desmarket.model.case_fingerprint`)."""
    name = path.name.removesuffix("_summary.json")
    writer = f"the notebook {WRITERS[name]}" if name in WRITERS else "what wrote it"
    writer += " (or `python -m desmarket run`, which writes the same files)"
    if recorded is None:
        raise MismatchError(
            f"{path} has no case_fingerprint (written before results recorded the case they were "
            f"solved on), so it cannot be checked against this case; rerun {writer}"
        )
    expected = case_fingerprint(case)
    if recorded != expected:
        raise MismatchError(
            f"{path} was solved on another case (case fingerprint {recorded}) than the one given "
            f"({case!r}, fingerprint {expected}): homes, profiles, scenarios, prices or market "
            f"parameters differ. Rerun {writer} on this case, or pass the case it was solved on"
        )


class RunPaths(NamedTuple):
    """Folders of one run: ``case/``, ``operation/`` (interchange CSV), ``tables/``, ``figures/``."""

    root: Path
    case: Path
    operation: Path
    tables: Path
    figures: Path


#: If set, runs write under this folder instead of the project root (``make test`` points it at a temporary
#: folder so that nbval's re-execution of the notebooks never touches the committed results).
OUTPUT_ROOT_ENV = "DESMARKET_OUTPUT_ROOT"


def cache_tables(run_dir, name: str) -> list[Path]:
    """Earlier tables ``name`` whose rows a per-day study may reuse (:mod:`desmarket.daycache`): the published
    table of run ``run_dir`` under the project root, then the committed reference table ``results/tables/name``
    -- those that exist. A run executes into a staging folder, so its own output folder is never among them."""
    root = project_root()
    candidates = [resolve(run_dir) / "tables" / name, root / "results" / "tables" / name]
    return [p for p in dict.fromkeys(candidates) if p.is_file()]


def run_paths(run_dir="results") -> RunPaths:
    """The folders of a run under ``run_dir`` (relative to the project root, or to $DESMARKET_OUTPUT_ROOT)."""
    base = os.environ.get(OUTPUT_ROOT_ENV)
    root = Path(base) / run_dir if base and not Path(run_dir).is_absolute() else resolve(run_dir)
    paths = RunPaths(root, root / "case", root / "operation", root / "tables", root / "figures")
    for p in paths[2:]:
        p.mkdir(parents=True, exist_ok=True)
    return paths


# ================================================================================ published tables
def save_table(frame: pd.DataFrame, path, decimals: int = 4, index: bool = True) -> Path:
    """Write a CSV rounded to ``decimals`` (well above solver tolerance, so reruns give identical bytes).

    Rounding is part of honesty here: digits below the solver's accuracy are not results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    numeric = frame.select_dtypes("number").columns
    out = frame.copy()
    out[numeric] = out[numeric].round(decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    out.to_csv(path, index=index, float_format=FLOAT_FORMAT, lineterminator="\n")
    return path


#: How each table of one settled study is written, by notebooks 02-06 and ``desmarket run`` alike: the digits
#: kept (:func:`save_table`) and whether the index is written.
STUDY_TABLE_FORMATS = {
    "m1_costs": (4, True),
    "market_costs": (4, True),
    "clearing_prices": (5, True),
    "contribution_rates": (5, True),
    "table3_energy": (2, True),
    "table4_costs": (3, True),
    "settlement": (4, True),
    "figure3_net_load": (3, False),
    "figure5_profit_rate": (4, False),
}
#: Tables a run writes only when asked (``desmarket run --rule``: :func:`desmarket.report.rules_table`), in the
#: same form.
OPTIONAL_TABLE_FORMATS = {"settlement_rules": (4, True), "day_ahead": (4, True), "stochastic_value": (4, True)}


def save_study_table(frame: pd.DataFrame, folder, name: str) -> Path:
    """Write table ``name`` of a study as ``<folder>/<name>.csv`` in its format (:data:`STUDY_TABLE_FORMATS`,
    :data:`OPTIONAL_TABLE_FORMATS`)."""
    formats = {**STUDY_TABLE_FORMATS, **OPTIONAL_TABLE_FORMATS}
    if name not in formats:
        raise ValueError(f"{name!r} is not a table of a study; the tables: {', '.join(formats)}")
    decimals, index = formats[name]
    return save_table(frame, Path(folder) / f"{name}.csv", decimals=decimals, index=index)
