"""The study layer: the results of one run, and the built problems of one case for "what if" questions.

* :class:`Study` -- what one run computes: the case, M1, the clearing and the settlements M2 and M3;
  :func:`run_study` solves it, :func:`load_study` reads it back from the CSV files of notebooks 02-03.
* :class:`Workbench` -- M1 and the clearing of one case, built once (the pieces of the decomposed engine,
  :mod:`desmarket.pieces`, formulated by :func:`desmarket.formulation.formulate`), with prices, k^b/k^s,
  epsilon, net metering and battery size as cvxpy Parameters (:class:`desmarket.formulation.Parameters`).
  A question sets Parameter values and re-solves; it never rebuilds a problem, and it re-solves only what the
  question touches: k^b/k^s and the LMP leave M1 as it was, the profit rate and a subset of the scenarios
  re-solve nothing (see :meth:`Workbench.study`).
* :func:`sensitivity` and :func:`solver_agreement` -- the two checks of MODEL.md's [choices] and
  "Uniqueness", answered on a :class:`Workbench`.

:mod:`desmarket.report` turns studies into tables and never solves.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .case import Case
from .engine import DEFAULT_SOLVERS, clear_market, solve_independent
from .errors import CASE_FAILURES, CaseError, failure_reason
from .formulation import Prices, case_block, check_battery_scale, formulate
from .model import Operation, RoutingWarning, assemble_operation, trade_limits
from .paper import PAPER_PROFIT_RATE
from .pieces import (
    CHUNK_ROWS,
    clearing_pieces,
    gather,
    independent_pieces,
    solve_built,
)
from .report import headline
from .results import Study as Study  # re-exported: the study layer's record of one run
from .results import settled_study as settled_study
from .settlement import settle


def run_study(case: Case, profit_rate: float = PAPER_PROFIT_RATE, **solve_kw) -> Study:
    """Solve M1 and the clearing once and settle them under M2 and M3: the paper's comparison of one case.

    Parameters
    ----------
    case : Case
        The community.
    profit_rate : float, default :data:`desmarket.paper.PAPER_PROFIT_RATE`
        rho in [0, 1], the aggregator's share of Delta C.
    **solve_kw
        Passed on to :func:`desmarket.solve_independent` and :func:`desmarket.clear_market` (method, n_jobs, ...).

    Returns
    -------
    Study
        M1, the clearing and both settlements ($ per day), with the tables of the paper's figures.
    """
    return settled_study(case, solve_independent(case, **solve_kw), clear_market(case, **solve_kw), profit_rate)


def load_study(case: Case, operation_dir, profit_rate: float) -> Study:
    """A :class:`Study` from the operation CSVs of notebooks 02-03 (nothing re-solved), settled at ``profit_rate``."""
    from .io import load_operation

    return settled_study(
        case, load_operation(case, operation_dir, "m1"), load_operation(case, operation_dir, "market"), profit_rate
    )


def _quiet(progress: bool | None) -> bool:
    """tqdm's ``disable``: True hides the bar; None shows it only on a terminal."""
    return (not progress) if progress is not None else (not sys.stderr.isatty())


@contextlib.contextmanager
def routing_quiet():
    """Re-solves of a case already reported: its RoutingWarning (MODEL.md tie-break) is not repeated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        yield


# ================================================================================ variants of a case
def variant_case(
    case: Case,
    *,
    market: dict | None = None,
    retail=None,
    lmp=None,
    battery_scale: float = 1.0,
    scenarios: Sequence[str] | None = None,
) -> Case:
    """The case with other market parameters, prices, battery sizes or a subset of its scenarios (validated).

    battery_scale multiplies battery_kwh and battery_kw of every home. scenarios: ids to keep, in the case's
    order; their probabilities are renormalised to sum to 1.
    """
    frames = case.to_frames()
    if market:
        frames["market"] = {**frames["market"], **market}
    if retail is not None:
        frames["prices"]["retail_usd_per_kwh"] = np.asarray(retail, dtype=float)
    if lmp is not None:
        frames["prices"]["lmp_usd_per_kwh"] = np.asarray(lmp, dtype=float)
    if battery_scale != 1.0:
        for col in ("battery_kwh", "battery_kw"):
            frames["homes"][col] = frames["homes"][col] * battery_scale
    if scenarios is not None:
        unknown = sorted(set(scenarios) - set(case.scenarios))
        if unknown or not len(scenarios):
            raise CaseError(
                "scenarios",
                f"the scenarios to keep must be a non-empty subset of the case's "
                f"{list(case.scenarios)}; unknown: {unknown}",
                "pass ids of scenarios.csv",
            )
        sc = frames["scenarios"][frames["scenarios"]["scenario"].isin(list(scenarios))].copy()
        sc["probability"] = sc["probability"] / sc["probability"].sum()
        frames["scenarios"] = sc
        frames["profiles"] = frames["profiles"][frames["profiles"]["scenario"].isin(list(scenarios))]
    return Case.from_frames(**frames)


# ===================================================================================== the workbench
class Workbench:
    """M1 and the market clearing of one case, built once and re-solved for "what if" questions.

    The problems are the pieces of the decomposed engine (:mod:`desmarket.pieces`), kept in this process and
    solved one after the other; prices, epsilon and the battery scale are their Parameters
    (:class:`~desmarket.formulation.Parameters`). Each answer is an :class:`~desmarket.model.Operation`
    assembled exactly as the engine assembles it (same tie-break, same costs), costed at the prices solved.
    Solutions are cached by the values that reach each problem, so a question re-solves only the problems it
    changes.

    case: the case; solver / solver_options: as :func:`desmarket.engine.solve_independent` (default PIQP);
    trade_limit: x_bar of Eq. 19 (default grid_limit_kw); chunk_rows: rows per piece (as the engine).
    """

    #: Solutions kept (per problem: M1 or clearing); the oldest is dropped first.
    CACHE_SIZE = 32

    def __init__(
        self,
        case: Case,
        *,
        solver: str | None = None,
        solver_options: dict | None = None,
        trade_limit: float | np.ndarray | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ):
        if not isinstance(case, Case):
            raise TypeError(f"expected a desmarket.Case, got {type(case).__name__}; use desmarket.load_case(path)")
        self.case = case
        self.solver = solver or DEFAULT_SOLVERS["decomposed"]
        self.solver_options = solver_options
        self.trade_limit = trade_limit
        self.chunk_rows = int(chunk_rows)
        self._built: dict[bool, list] = {}
        self._cache: OrderedDict = OrderedDict()
        self.build_seconds = 0.0
        self.solves = 0  # problems re-solved so far (each piece counts once)

    def pieces(self, market: bool) -> list:
        """The built pieces of M1 (``market=False``) or of the clearing: (rows, problem, handles), built once."""
        if market not in self._built:
            t0 = time.perf_counter()
            case = self.case
            x_bar = trade_limits(case, self.trade_limit) if market else None
            row_sets = clearing_pieces(case, self.chunk_rows) if market else independent_pieces(case, self.chunk_rows)
            self._built[market] = [(rows, *formulate(case_block(case, rows, x_bar), market)) for rows in row_sets]
            self.build_seconds += time.perf_counter() - t0
        return self._built[market]

    def _solved(
        self,
        market: bool,
        prices: Prices,
        regularization: float,
        battery_scale: float,
        solver: str,
        options: dict | None,
    ):
        """(arrays, price, seconds) of one problem at these values, from the cache or re-solved in place."""
        relevant = (prices.buy, prices.sell) if market else (prices.retail, prices.net_metering)
        key = (
            market,
            *(np.asarray(v, dtype=float).tobytes() for v in relevant),
            float(regularization),
            float(battery_scale),
            solver,
            repr(sorted((options or {}).items())),
        )
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t0 = time.perf_counter()
        built = self.pieces(market)
        results = []
        for rows, problem, handles in built:
            handles.parameters.set(prices, regularization, battery_scale)
            results.append(solve_built(problem, handles, rows, market, solver, options))
        self.solves += len(built)
        arrays, price = gather(self.case, [rows for rows, *_ in built], results, market)
        self._cache[key] = (arrays, price, time.perf_counter() - t0)
        while len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return self._cache[key]

    def operations(
        self,
        *,
        buy_ratio: float | None = None,
        sell_ratio: float | None = None,
        regularization: float | None = None,
        net_metering: float | None = None,
        retail=None,
        lmp=None,
        battery_scale: float = 1.0,
        scenarios: Sequence[str] | None = None,
        solver: str | None = None,
        solver_options: dict | None = None,
        tie_break: bool = True,
    ) -> tuple[Case, Operation, Operation]:
        """(variant case, M1, clearing) with some inputs changed; None keeps the case's value.

        buy_ratio, sell_ratio: k^b, k^s (Eq. 4); regularization: epsilon; net_metering: q, $/kWh; retail, lmp:
        (T,) $/kWh; battery_scale: multiplies every battery's kWh and kW; scenarios: keep only these ids, their
        probabilities renormalised. A subset of the scenarios needs no solve: M1 separates by (home, scenario)
        and the clearing by scenario (Eq. 18 holds per scenario and hour), and a scenario's probability scales
        its whole part of the objective, so each scenario's optimum does not depend on the others'.
        """
        check_battery_scale(battery_scale)  # before the variant case, whose own error would name battery_kwh
        market = {
            k: v
            for k, v in (
                ("buy_ratio", buy_ratio),
                ("sell_ratio", sell_ratio),
                ("regularization", regularization),
                ("net_metering_usd_per_kwh", net_metering),
            )
            if v is not None
        }
        full = variant_case(self.case, market=market, retail=retail, lmp=lmp, battery_scale=battery_scale)
        variant = full if scenarios is None else variant_case(full, scenarios=scenarios)
        prices, regularization = Prices.of_case(full), full.market.regularization
        solver = solver or self.solver
        options = solver_options if solver_options is not None else self.solver_options
        keep = (
            np.arange(self.case.n_scenarios)
            if scenarios is None
            else np.flatnonzero(np.isin(self.case.scenarios, list(scenarios)))
        )
        ops = []
        for is_market in (False, True):
            arrays, price, seconds = self._solved(is_market, prices, regularization, battery_scale, solver, options)
            ops.append(
                assemble_operation(
                    variant,
                    {k: v[:, keep] for k, v in arrays.items()},
                    None if price is None else price[keep],
                    prices,
                    regularization=regularization,
                    solver=solver,
                    tie_break=tie_break,
                    method="decomposed",
                    wall_seconds=seconds,
                    trade_limit=trade_limits(self.case, self.trade_limit),
                )
            )
        return variant, ops[0], ops[1]

    def study(self, profit_rate: float = PAPER_PROFIT_RATE, **changes) -> Study:
        """A settled :class:`Study` with some inputs changed (keywords of :meth:`operations`)."""
        variant, m1, market = self.operations(**changes)
        return settled_study(variant, m1, market, profit_rate)


# ===================================================================================== the checks
#: Headline numbers shown in the sensitivity table (keys of :func:`desmarket.report.headline`).
SENSITIVITY_COLUMNS = (
    "surplus_usd",
    "m3_reduction_min_usd",
    "m3_reduction_max_usd",
    "aggregator_change_m3_pct",
    "load_change_pct",
    "storage_change_pct",
    "peak_net_load_reduction_kwh",
)


def sensitivity_variants(case: Case, n_scenarios_options=(1, 5)) -> list[tuple[str, str, dict]]:
    """The rows of the sensitivity table: (choice, value, keywords of :meth:`Workbench.operations`)."""
    eps = case.market.regularization
    variants: list[tuple[str, str, dict]] = [("baseline", "MODEL.md default", {})]
    variants += [
        ("k^b / k^s", f"{kb} / {ks}", {"buy_ratio": kb, "sell_ratio": ks})
        for kb, ks in ((1.05, 0.95), (1.2, 0.8), (1.0, 1.0))
    ]
    variants += [("battery kWh and kW", f"x{f}", {"battery_scale": f}) for f in (0.0, 0.5, 2.0)]
    variants += [
        ("scenarios", f"first {k}", {"scenarios": case.scenarios[:k]})
        for k in n_scenarios_options
        if k < case.n_scenarios
    ]
    variants += [("epsilon", f"{e:g}", {"regularization": e}) for e in (eps / 10, eps * 10)]
    return variants


def sensitivity_row(choice: str, value: str, study: Study) -> dict:
    """One row of the sensitivity table: the changed choice, its value, the headline numbers and epsilon's cost
    (``reason`` empty: the row was computed)."""
    h = headline(study)
    return {
        "choice": choice,
        "value": value,
        **{k: h[k] for k in SENSITIVITY_COLUMNS},
        "regularization_cost_usd": study.market.regularization_cost,
        "reason": "",
    }


def failed_sensitivity_row(choice: str, value: str, exc: Exception) -> dict:
    """The row of a variant that cannot be computed (one of :data:`~desmarket.errors.CASE_FAILURES`: nobody trades,
    the solve fails, the variant is not a valid case): NaN numbers and the reason, "<error type>: <message>"."""

    return {
        "choice": choice,
        "value": value,
        **dict.fromkeys(SENSITIVITY_COLUMNS, np.nan),
        "regularization_cost_usd": np.nan,
        "reason": failure_reason(exc),
    }


def sensitivity(
    bench: Workbench, profit_rate: float = PAPER_PROFIT_RATE, n_scenarios_options=(1, 5), progress: bool | None = None
) -> pd.DataFrame:
    """Headline numbers when each [choice] of MODEL.md changes, one at a time, on one :class:`Workbench`.

    No problem is rebuilt: k^b/k^s re-solve the clearing only, battery size and epsilon both problems, and a
    subset of the scenarios nothing (see :meth:`Workbench.operations`). progress: a tqdm bar on stderr (None:
    only when stderr is a terminal, so executed notebooks stay byte-identical).
    A variant that cannot be computed (no trade, a failed solve, an invalid variant:
    :data:`~desmarket.errors.CASE_FAILURES`) is a row of NaN with its ``reason`` (:func:`failed_sensitivity_row`);
    the other rows are unchanged and their ``reason`` is empty.
    """
    rows = []
    variants = sensitivity_variants(bench.case, n_scenarios_options)
    for choice, value, changes in tqdm(variants, desc="sensitivity", unit="row", disable=_quiet(progress)):
        try:
            with routing_quiet():
                study = bench.study(profit_rate, **changes)
        except CASE_FAILURES as exc:
            rows.append(failed_sensitivity_row(choice, value, exc))
        else:
            rows.append(sensitivity_row(choice, value, study))
    return pd.DataFrame(rows).set_index(["choice", "value"])


#: A second solver and tight tolerances for the solver-independence check (MODEL.md "Uniqueness").
SECOND_SOLVER = ("SCS", {"eps": 1e-9, "max_iters": 200_000})
#: Largest case (homes x scenarios) that :func:`solver_agreement` re-solves; SCS at tight tolerance is slow.
AGREEMENT_MAX_ROWS = 200


def solver_agreement(
    bench: Workbench,
    study: Study,
    solver: tuple[str, dict] = SECOND_SOLVER,
    tolerance: float = 1e-3,
    max_rows: int = AGREEMENT_MAX_ROWS,
) -> pd.DataFrame | None:
    """Re-solve the workbench's problems with a second solver and compare the per-home answers with ``study``.

    With the tie-break of MODEL.md the home costs, alpha and Delta C must agree within ``tolerance``
    ($ or, for alpha, absolute). Returns one row per quantity with the largest difference and the verdict,
    or None (nothing solved) when the case has more than ``max_rows`` home x scenario rows.
    """
    case = bench.case
    if case.n_homes * case.n_scenarios > max_rows:
        return None
    name, options = solver
    with routing_quiet():
        _, m1, mk = bench.operations(solver=name, solver_options=options)
    m3 = settle(case, m1, mk, study.profit_rate)
    diffs = {
        "M1 home costs ($)": np.abs(m1.home_cost - study.independent.home_cost).max(),
        "market home costs ($)": np.abs(mk.home_cost - study.market.home_cost).max(),
        "alpha (M3)": np.abs(m3.alpha - study.m3.alpha).max(),
        "Delta C ($)": abs(m3.surplus - study.m3.surplus),
    }
    return pd.DataFrame(
        {
            "quantity": list(diffs),
            "second_solver": name,
            "tolerance": tolerance,
            "max_abs_difference": list(diffs.values()),
            "agree": [d <= tolerance for d in diffs.values()],
        }
    ).set_index("quantity")
