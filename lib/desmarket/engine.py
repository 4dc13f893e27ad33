"""The solving engine: M1 and the market clearing by three methods, in parallel through joblib.

``solve_independent(case, method=...)`` and ``clear_market(case, method=...)`` are the public entry points.

* ``"central"`` -- one cvxpy problem over all homes and scenarios (:func:`desmarket.model.build_independent`,
  :func:`desmarket.model.build_clearing`), solved by Clarabel: the reference.
* ``"decomposed"`` (default) -- exact. Nothing couples two (home, scenario) rows in M1 (Eqs. 5-15) and nothing
  couples two scenarios in the clearing (Eq. 18 holds per scenario and hour), so the rows of M1 and the
  scenarios of the clearing are grouped into *pieces* of about ``chunk_rows`` rows, each piece is solved as its
  own problem, in parallel, and the pieces are assembled into one :class:`~desmarket.model.Operation` by
  :func:`~desmarket.model.assemble_operation`: the same tie-break, prices and costs as central.
* ``"coordinated"`` -- the paper's price-coordinated market process (Section 2.1.1), an iterative algorithm in
  :mod:`desmarket.coordinated`. M1 has no market to coordinate (each home's controller optimises alone), so
  for M1 it is the decomposed solve.

Every method solves the one formulation of :mod:`desmarket.formulation` (Eqs. 5-19): central as one block of
all rows weighted by pi_s, decomposed as pieces of weight 1, coordinated as one home's rows at a time. A piece
(or a home's response in the coordinated process) that PIQP does not solve is solved again with Clarabel, and
``Operation.solver`` then says how many, e.g. ``"PIQP (CLARABEL for 1 of 3 pieces)"``; only if Clarabel fails
too is it an error, and only if Clarabel finds it infeasible is the case reported infeasible
(:class:`InfeasibleCaseError`, naming homes).

Parallelism goes through :class:`joblib.Parallel` without naming a backend: loky processes by default
(``n_jobs``, default all cores), or any backend set by the caller, e.g. Dask::

    from dask.distributed import Client
    import joblib
    client = Client("tcp://scheduler:8786")          # every worker needs desmarket installed
    with joblib.parallel_config(backend="dask"):
        market = dm.clear_market(case)

The library itself never imports dask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np

from .case import Case
from .coordinated import Coordination, coordinate
from .errors import CaseError
from .feasibility import InfeasibleCaseError, check_feasible, infeasible_homes, says_infeasible
from .formulation import Prices, case_block
from .model import (
    Operation,
    SolverError,
    assemble_operation,
    central_clearing,
    central_independent,
    trade_limits,
)
from .pieces import (
    CHUNK_ROWS,
    check_n_jobs,
    clearing_pieces,
    gather,
    independent_pieces,
    run_tasks,
    solve_block,
    solver_label,
)

METHODS = ("central", "decomposed", "coordinated")
DEFAULT_METHOD = "decomposed"
#: Solver used by each method when ``solver`` is not given. PIQP (a proximal interior-point QP solver) handles
#: variable bounds natively; Clarabel stays the reference of the central problem.
DEFAULT_SOLVERS = {"central": "CLARABEL", "decomposed": "PIQP", "coordinated": "PIQP"}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    return method


def _check_chunk(chunk_rows) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return int(chunk_rows)


def _decomposed(
    case: Case,
    market: bool,
    solver: str,
    solver_options: dict | None,
    tie_break: bool,
    n_jobs: int | None,
    chunk_rows: int,
    trade_limit,
) -> Operation:
    t0 = time.perf_counter()
    chunk_rows = _check_chunk(chunk_rows)
    x_bar = trade_limits(case, trade_limit) if market else None
    pieces = clearing_pieces(case, chunk_rows) if market else independent_pieces(case, chunk_rows)
    tasks = [(case_block(case, rows, x_bar), market, solver, solver_options) for rows in pieces]
    results = run_tasks(solve_block, tasks, n_jobs)
    arrays, price = gather(case, pieces, results, market)
    fallbacks = sum(r["fallbacks"] for r in results)
    return assemble_operation(
        case,
        arrays,
        price,
        Prices.of_case(case),
        regularization=case.market.regularization,
        solver=solver_label(solver, fallbacks, len(results), "pieces"),
        tie_break=tie_break,
        method="decomposed",
        trade_limit=x_bar,
        build_seconds=sum(r["build_seconds"] for r in results),
        solve_seconds=sum(r["solve_seconds"] for r in results),
        wall_seconds=time.perf_counter() - t0,
    )


# ==================================================================================== entry points
def _check_case(case) -> Case:
    if not isinstance(case, Case):
        raise TypeError(f"expected a desmarket.Case, got {type(case).__name__}; use desmarket.load_case(path)")
    if case.n_homes == 0:
        raise CaseError(
            "homes.csv", "the case has no homes", "solve a case of at least one home (Case.select with at least one id)"
        )
    return case


@contextlib.contextmanager
def _naming_culprits(case: Case):
    """An infeasible solve that the checks of :mod:`desmarket.feasibility` did not foresee: name the homes
    whose M1 alone is infeasible (M1 separates by home, so this costs one small solve per home)."""
    try:
        yield
    except SolverError as exc:
        if not says_infeasible(exc):
            raise
        homes = infeasible_homes(case)
        raise InfeasibleCaseError(
            f"{exc} Homes that cannot be served even alone (M1): {homes or 'none; the limits conflict only jointly'}"
            " (a combination of limits, e.g. a battery that cannot cover several hours and still end where it started)."
            " Fix: check their grid_limit_kw, load_min_factor and battery limits."
        ) from exc


def solve_independent(
    case: Case,
    *,
    method: str = DEFAULT_METHOD,
    solver: str | None = None,
    solver_options: dict | None = None,
    tie_break: bool = True,
    n_jobs: int | None = -1,
    chunk_rows: int = CHUNK_ROWS,
) -> Operation:
    """Mode M1: each home alone at the retail TOU price (Eqs. 5-15); the disagreement point C^0, R_A^0.

    method: "central", "decomposed" (default) or "coordinated" (same as decomposed: M1 has no market).
    solver: default per method (:data:`DEFAULT_SOLVERS`). n_jobs: joblib workers (default all cores).
    chunk_rows: (home, scenario) rows per piece of the decomposed solve.
    """
    _check_case(case)
    method = check_method(method)
    n_jobs = check_n_jobs(n_jobs)
    solver = solver or DEFAULT_SOLVERS[method]
    check_feasible(case, market=False)
    with _naming_culprits(case):
        if method == "central":
            return central_independent(case, solver=solver, solver_options=solver_options, tie_break=tie_break)
        op = _decomposed(case, False, solver, solver_options, tie_break, n_jobs, chunk_rows, None)
    return op if method == "decomposed" else dataclasses.replace(op, method="coordinated")


def clear_market(
    case: Case,
    *,
    method: str = DEFAULT_METHOD,
    solver: str | None = None,
    solver_options: dict | None = None,
    tie_break: bool = True,
    trade_limit: float | np.ndarray | None = None,
    n_jobs: int | None = -1,
    chunk_rows: int = CHUNK_ROWS,
    coordination: Coordination | None = None,
    callback=None,
    coordinated_jobs: int | None = 1,
) -> Operation:
    """Market clearing (Eqs. 16-19): the cooperative operation C*, R_A*, trades and clearing prices.

    method: "central" (one problem), "decomposed" (default; exact, by scenario pieces in parallel) or
    "coordinated" (the paper's price-coordinated process; ``coordination`` is a
    :class:`~desmarket.coordinated.Coordination` of its tolerances). solver: default per method
    (:data:`DEFAULT_SOLVERS`). trade_limit: x_bar in kW, scalar or (N,) [choice: default grid_limit_kw].
    callback (coordinated only): called with the aggregator's state after every iteration.
    coordinated_jobs: joblib workers for the homes' responses of the coordinated process. Default 1: the
    controllers live in this process and keep their built problems between iterations (about 2 ms per home
    and iteration with PIQP). With more workers each keeps its own copies, and loky restarts a worker whose
    memory grows by 300 MB, so beyond about 150 homes per worker the problems are rebuilt and it gets slower.
    """
    _check_case(case)
    method = check_method(method)
    n_jobs, coordinated_jobs = check_n_jobs(n_jobs), check_n_jobs(coordinated_jobs, "coordinated_jobs")
    solver = solver or DEFAULT_SOLVERS[method]
    check_feasible(case, market=True, trade_limit=trade_limits(case, trade_limit))
    with _naming_culprits(case):
        if method == "central":
            return central_clearing(
                case, solver=solver, solver_options=solver_options, tie_break=tie_break, trade_limit=trade_limit
            )
        if method == "decomposed":
            return _decomposed(case, True, solver, solver_options, tie_break, n_jobs, chunk_rows, trade_limit)
        return coordinate(
            case,
            coordination,
            solver=solver,
            solver_options=solver_options,
            tie_break=tie_break,
            trade_limit=trade_limit,
            n_jobs=coordinated_jobs,
            callback=callback,
        )
