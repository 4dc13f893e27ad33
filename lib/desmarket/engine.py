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

The library itself never imports dask. One exception to joblib: the coordinated process's home answers, whose
groups of homes each live in one worker process for the whole process (:class:`~desmarket.pieces.OwnedPool`,
``coordinated_jobs``), so that each home's controller is built once; M1 before it goes through joblib as above.

``stages=2`` (issue 20, :mod:`desmarket.twostage`) solves the two-stage clearing: a day-ahead purchase and sale
per hour shared by the scenarios, the real-time imbalances per scenario (:func:`desmarket.formulation.formulate`
with a :class:`~desmarket.formulation.FirstStage`). ``"central"`` solves it as one Clarabel problem. The default
``"decomposed"`` is exact by either of two routes [choice, :func:`two_stage_route`]:

* by default the *deterministic equivalent* as one PIQP problem (:data:`TWO_STAGE_OPTIONS`; one solve, no
  iteration; Birge & Louveaux, *Introduction to Stochastic Programming*, 2nd ed. 2011, Ch. 3), first in its
  pooled form (:func:`~desmarket.formulation.formulate_pooled`: the homes' own variables and one import and export
  per scenario and hour, about half the time), which is exact when its solution can be routed within every limit
  (:func:`_pooled_equivalent` checks it), else in full;
* when asked for (``lshaped=LShaped(...)``), the *L-shaped decomposition* of :mod:`desmarket.lshaped` (multi-cut
  Benders over the 48
  first-stage variables with level stabilisation; Birge & Louveaux Ch. 5, Fabian & Szoke 2007), whose every
  iteration re-solves the scenarios at a fixed position as pieces in parallel. It stops at a relative gap of
  ``lshaped.gap`` (:class:`~desmarket.lshaped.LShaped`, default 1e-8) and raises
  :class:`~desmarket.errors.NotConvergedError` past ``lshaped.max_iterations``; its iterations (lower and upper
  bound, gap) are ``Operation.convergence``.

The deterministic equivalent's first stage enters only the 2 x S x 24 balance rows of the community totals, so its
KKT system is block-angular. PIQP's general sparse factorisation does not exploit that, but it keeps the fill small
once the community totals are summed in groups other than the trade balance's
(:data:`~desmarket.formulation.POSITION_GROUP`; with the same groups one factorisation took 20 times as long), and
with :data:`TWO_STAGE_OPTIONS` it solves the problems it used to call infeasible, so no size goes to Clarabel. The
first stage still makes the problem harder than one stage: about 40-60 interior-point iterations against 15. At
1,000 homes x 10 scenarios the pooled problem took 19.6 s of PIQP against 38.5 s in full (random case, seed 0), and
``scripts/bench_two_stage.py`` printed 28.2 s for M1 and the two-stage clearing against 11.9 s in one stage (2.4x);
at 2,000 homes 3.7x: PIQP's time grows faster than the homes. The L-shaped method is linear in the homes per
iteration, but needs about 80-150 iterations of about two one-stage clearings each (at 100 homes x 10 scenarios 281
s, 77 iterations; at 1,000 x 10 a gap of 1e-2 after 12 iterations and 10 minutes; ``scripts/bench_two_stage.py``, a
loaded machine). So the default is the one-solve route, the faster of the two wherever both finished; the L-shaped
method is there for a case whose deterministic equivalent does not fit in memory, and as the starting point of a
faster decomposition.

``scripts/bench_two_stage.py`` measures both beside the one-stage pieces. With the position given
(``day_ahead``: the EEV problem, the realised day) the scenarios separate and "decomposed" solves them in pieces in
parallel as in one stage. "coordinated" has no two-stage version (a ValueError). In M1 the homes are as in one
stage and the aggregator's position is the closed-form newsvendor quantile (:func:`desmarket.model.m1_day_ahead`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import pandas as pd

from .case import Case, check_imbalance_ratios
from .coalitions import routing
from .coordinated import Coordination, coordinate
from .errors import CaseError
from .feasibility import InfeasibleCaseError, check_feasible, infeasible_homes, says_infeasible
from .formulation import FirstStage, Prices, case_block, clearing_price, formulate, formulate_pooled
from .lshaped import LShaped, solve_two_stage
from .model import (
    Operation,
    SolverError,
    assemble_operation,
    build_clearing,
    central_clearing,
    central_independent,
    m1_day_ahead,
    read_operation,
    trade_limits,
    with_day_ahead,
)
from .pieces import (
    CHUNK_ROWS,
    check_n_jobs,
    clearing_pieces,
    gather,
    independent_pieces,
    run_tasks,
    solve_block,
    solve_built,
    solve_with_fallback,
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


def _solve_staged_block(block, stage: FirstStage, solver: str, solver_options: dict | None) -> dict:
    """One piece of the two-stage clearing at a fixed day-ahead position (its scenarios are then independent)."""
    t0 = time.perf_counter()
    problem, handles = formulate(block, True, first_stage=stage)
    out = solve_built(problem, handles, block.rows, True, solver, solver_options)
    out["build_seconds"] = time.perf_counter() - t0 - out["solve_seconds"]
    return out


def _decomposed(
    case: Case,
    market: bool,
    solver: str,
    solver_options: dict | None,
    tie_break: bool,
    n_jobs: int | None,
    chunk_rows: int,
    trade_limit,
    stage: FirstStage | None = None,
) -> Operation:
    t0 = time.perf_counter()
    chunk_rows = _check_chunk(chunk_rows)
    x_bar = trade_limits(case, trade_limit) if market else None
    pieces = clearing_pieces(case, chunk_rows) if market else independent_pieces(case, chunk_rows)
    day_ahead = None
    if stage is None:
        tasks: list[tuple] = [(case_block(case, rows, x_bar), market, solver, solver_options) for rows in pieces]
        results = run_tasks(solve_block, tasks, n_jobs)
    else:  # a fixed day-ahead position: the scenarios separate (two-stage tolerances, TWO_STAGE_OPTIONS)
        if stage.buy_kw is None or stage.sell_kw is None:
            raise ValueError("the decomposed two-stage solve by pieces needs a fixed day-ahead position")
        options = solver_options or TWO_STAGE_OPTIONS.get(str(solver).upper())
        tasks = [(case_block(case, rows, x_bar), stage, solver, options) for rows in pieces]
        results = run_tasks(_solve_staged_block, tasks, n_jobs)
        day_ahead = (stage.buy_kw, stage.sell_kw)
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
        first_stage=stage,
        day_ahead=day_ahead,
    )


def _deterministic_equivalent(
    case: Case, stage: FirstStage, solver: str, solver_options: dict | None, tie_break: bool, trade_limit
) -> Operation:
    """The two-stage clearing with a decided position as one problem solved by ``solver`` (default PIQP; Clarabel
    if it fails, :func:`~desmarket.pieces.solve_with_fallback`): method "decomposed" of ``stages=2``. The pooled
    problem first (:func:`_pooled_equivalent`), the full one where that is not exact."""
    t0 = time.perf_counter()
    if tie_break:
        pooled = _pooled_equivalent(case, stage, solver, solver_options, trade_limit)
        if pooled is not None:
            return dataclasses.replace(pooled, wall_seconds=time.perf_counter() - t0)
    problem, handles = build_clearing(case, trade_limit, first_stage=stage)
    t1 = time.perf_counter()
    options = solver_options or TWO_STAGE_OPTIONS.get(str(solver).upper())
    fallbacks = solve_with_fallback(problem, solver, options)
    t2 = time.perf_counter()
    op = read_operation(
        case,
        problem,
        handles,
        solver=solver_label(solver, fallbacks, 1, "problems"),
        tie_break=tie_break,
        solve_seconds=t2 - t1,
        build_seconds=t1 - t0,
    )
    return dataclasses.replace(op, method="decomposed", problem=None, wall_seconds=time.perf_counter() - t0)


#: kW: how far inside its limits every flow of the pooled problem's routing must stay, and how small the lesser of
#: b_t and a_t, for the pooled problem to count as exact (:func:`_pooled_equivalent`). Ten times the tolerance at
#: which a flow counts as binding (:data:`desmarket.model.LIMIT_TOLERANCE`), so that no limit binds in it.
POOLED_MARGIN = 1e-4


def _pooled_equivalent(
    case: Case, stage: FirstStage, solver: str, solver_options: dict | None, trade_limit
) -> Operation | None:
    """The deterministic equivalent solved as its pooled relaxation (:func:`~desmarket.formulation.formulate_pooled`,
    about half the time of the full problem at 1,000 homes x 10 scenarios), or None where that might not be the
    clearing's optimum: the solver failed, or the solution cannot be routed as reported.

    Exact when (checked here, by :data:`POOLED_MARGIN`) (1) the day-ahead purchase and sale are not both positive
    in any hour, so that the community's import and export can be netted at no cost (importing and exporting
    more against b and a only moves energy between two equal slopes, k^dn LMP or k^up LMP), and (2) the netted
    nets of every scenario can be routed within every home's grid limit (Eq. 7) and trade limit (Eq. 19)
    (:func:`~desmarket.coalitions.routing`). Then the routing is a feasible point of the full problem at the
    relaxation's optimal value, hence optimal. No limit binds in it, so the row I - X = sum n prices the energy
    as the trade balance does, and the tie-break reports the flows as for the full problem.
    """
    t0 = time.perf_counter()
    x_bar = trade_limits(case, trade_limit)
    n, s, t = case.load.shape
    block = case_block(case, np.arange(n * s), x_bar, weighted=True)
    problem, handles = formulate_pooled(block, stage)
    t1 = time.perf_counter()
    options = solver_options or TWO_STAGE_OPTIONS.get(str(solver).upper())
    try:
        fallbacks = solve_with_fallback(problem, solver, options)
    except SolverError:
        return None  # the full problem, with its own fallback, says what is wrong
    t2 = time.perf_counter()
    position = handles.day_ahead()
    assert position is not None  # the pooled problem always has a first stage
    buy, sell = position
    arrays = {k: v.reshape(n, s, t) for k, v in handles.values(("d", "g", "c", "e", "E")).items()}
    if (np.minimum(buy, sell) > POOLED_MARGIN).any():
        return None
    net = arrays["d"] + arrays["c"] - arrays["e"] - arrays["g"]
    grid = case.column("grid_limit_kw")
    routed = [routing(net[:, k], grid, x_bar, POOLED_MARGIN) for k in range(s)]
    if any(r is None for r in routed):
        return None
    for key, flows in zip(("x", "Pl", "Ps"), zip(*routed)):
        arrays[key] = np.stack(flows, axis=1)
    return assemble_operation(
        case,
        arrays,
        clearing_price(handles),
        Prices.of_case(case),
        regularization=case.market.regularization,
        solver=solver_label(solver, fallbacks, 1, "problems"),
        method="decomposed",
        trade_limit=x_bar,
        build_seconds=t1 - t0,
        solve_seconds=t2 - t1,
        first_stage=stage,
        day_ahead=(buy, sell),
    )


def _lshaped(
    case: Case,
    stage: FirstStage,
    solver: str,
    solver_options: dict | None,
    tie_break: bool,
    n_jobs: int | None,
    trade_limit,
    options: LShaped | None,
) -> Operation:
    """The two-stage clearing with a decided position by the L-shaped method (:mod:`desmarket.lshaped`): method
    "decomposed" of ``stages=2`` when its tolerances are given (:func:`two_stage_route`)."""
    t0 = time.perf_counter()
    x_bar = trade_limits(case, trade_limit)
    piece_options = solver_options or TWO_STAGE_OPTIONS.get(str(solver).upper())
    solved = solve_two_stage(case, stage, x_bar, solver, piece_options, n_jobs, options)
    return assemble_operation(
        case,
        solved.arrays,
        solved.price,
        Prices.of_case(case),
        regularization=case.market.regularization,
        solver=solver_label(solver, solved.fallbacks, solved.solves, "piece solves"),
        tie_break=tie_break,
        method="decomposed",
        trade_limit=x_bar,
        build_seconds=solved.build_seconds,
        solve_seconds=solved.solve_seconds,
        wall_seconds=time.perf_counter() - t0,
        convergence=solved.convergence,
        first_stage=stage,
        day_ahead=(solved.buy_kw, solved.sell_kw),
    )


#: The routes of the two-stage "decomposed" clearing with a decided position (:func:`two_stage_route`).
TWO_STAGE_ROUTES = ("deterministic_equivalent", "lshaped")


def two_stage_route(lshaped: LShaped | None = None) -> str:
    """How method "decomposed" solves a two-stage clearing with a decided position [choice, module docstring]:
    "lshaped" when its tolerances are given (``clear_market(..., lshaped=LShaped(...))``), else
    "deterministic_equivalent" (one PIQP problem), the faster of the two wherever both were measured."""
    if lshaped is not None and not isinstance(lshaped, LShaped):
        raise TypeError(f"lshaped must be a desmarket.lshaped.LShaped or None, got {type(lshaped).__name__}")
    return TWO_STAGE_ROUTES[1] if lshaped is not None else TWO_STAGE_ROUTES[0]


STAGES = (1, 2)
#: Tolerances of every two-stage PIQP solve (the deterministic equivalent and the pieces at a fixed position) when
#: no ``solver_options`` are given: PIQP 0.7 calls such problems infeasible at the 1e-12 of
#: :data:`desmarket.model.DEFAULT_SOLVER_OPTIONS` (100 homes x 10 scenarios; a fixed-position piece of the year
#: study, 2017-07-11, where Clarabel's fallback then ended 'optimal_inaccurate'), and solves them at 1e-10 (the
#: objective at 1e-10 and 1e-9 agreed to 2e-9 $ on the first). Its infeasibility tolerances (default 1e-4) are
#: tightened to 1e-9, at which it no longer calls feasible deterministic equivalents infeasible (random cases of 400
#: homes x 10 scenarios and 200 x 20, measured homes of 200 x 10), and every linear solve is refined
#: iteratively (by default only when PIQP judges it needed): without it, near the optimum the regularisation fell
#: to 1e-13, the solves lost accuracy and the steps stalled until the iteration limit (measured homes, 500 x 10;
#: keeping the regularisation at 1e-10 instead fixed that case but not a random one of 400 x 10). Measured
#: 2026-12-02 against Clarabel on the same problems.
TWO_STAGE_OPTIONS = {
    "PIQP": {
        "eps_abs": 1e-10,
        "eps_rel": 1e-10,
        "eps_primal_inf": 1e-9,
        "eps_dual_inf": 1e-9,
        "iterative_refinement_always_enabled": True,
    }
}


def check_stages(stages, case: Case, day_ahead) -> FirstStage | None:
    """The :class:`~desmarket.formulation.FirstStage` of a solve with ``stages`` (None for one stage).

    stages: 1 or 2 (else ValueError); two stages need k^up >= k^b >= k^s >= k^dn (:class:`CaseError` on
    market.json otherwise). day_ahead: a fixed position (two stages only), see :func:`day_ahead_position`.
    """
    if isinstance(stages, bool) or stages not in STAGES:
        raise ValueError(f"stages must be 1 (the paper's program) or 2 (day-ahead and real time), got {stages!r}")
    if stages == 1:
        if day_ahead is not None:
            raise ValueError("day_ahead fixes the first stage of the two-stage clearing: pass stages=2 with it")
        return None
    check_imbalance_ratios(case.market)
    position = None if day_ahead is None else day_ahead_position(day_ahead, case.lmp.shape[-1])
    return FirstStage.of_case(case, *(position or (None, None)))


def day_ahead_position(day_ahead, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """(buy_kw, sell_kw), (T,) kW each, from ``Operation.day_ahead`` (a frame with those columns) or a pair of
    arrays; ValueError unless both are finite, >= 0 and one value per hour."""
    if isinstance(day_ahead, pd.DataFrame):
        missing = {"buy_kw", "sell_kw"} - set(day_ahead.columns)
        if missing:
            raise ValueError(f"day_ahead needs the columns buy_kw and sell_kw (Operation.day_ahead), missing {missing}")
        pair = (day_ahead["buy_kw"].to_numpy(dtype=float), day_ahead["sell_kw"].to_numpy(dtype=float))
    else:
        try:
            buy, sell = day_ahead
            pair = (np.asarray(buy, dtype=float).reshape(-1), np.asarray(sell, dtype=float).reshape(-1))
        except (TypeError, ValueError):
            raise ValueError(
                "day_ahead must be Operation.day_ahead or a pair (buy_kw, sell_kw) of arrays, one value per hour"
            ) from None
    for name, values in zip(("buy_kw", "sell_kw"), pair):
        if values.shape != (hours,) or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"day_ahead {name} must be {hours} finite values >= 0 kW, got {values!r}")
    return pair


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
    stages: int = 1,
    day_ahead=None,
) -> Operation:
    """Mode M1: each home alone at the retail TOU price (Eqs. 5-15); the disagreement point C^0, R_A^0.

    Parameters
    ----------
    case : Case
        The community.
    method : str, default "decomposed"
        "central", "decomposed" or "coordinated" (same as decomposed: M1 has no market).
    solver : str, optional
        A cvxpy solver name; default per method (:data:`DEFAULT_SOLVERS`).
    solver_options : dict, optional
        Its options (default: tight tolerances, :data:`desmarket.model.DEFAULT_SOLVER_OPTIONS`).
    tie_break : bool, default True
        Report the tie-broken flows (the model reference's tie-break).
    n_jobs : int or None, default -1
        joblib workers (default all cores).
    chunk_rows : int, default :data:`~desmarket.pieces.CHUNK_ROWS`
        (home, scenario) rows per piece of the decomposed solve.
    stages : int, default 1
        1 or 2: the homes as in one stage, and the aggregator's best day-ahead position for their flows
        (:func:`desmarket.model.m1_day_ahead`), its cost and the imbalances' in R_A^0 (:mod:`desmarket.twostage`).
    day_ahead : pandas.DataFrame or tuple of array_like, optional
        Stages 2: a fixed position instead, ``Operation.day_ahead`` or (buy_kw, sell_kw) arrays (T,) kW.

    Returns
    -------
    Operation
        Dispatch (kW), each home's cost C_i^0 and the aggregator's revenue R_A^0 ($ per day).

    Raises
    ------
    InfeasibleCaseError
        Naming the homes whose limits cannot be met.
    SolverError
        When no solver returns an optimal status.
    """
    _check_case(case)
    method = check_method(method)
    n_jobs = check_n_jobs(n_jobs)
    stage = check_stages(stages, case, day_ahead)
    solver = solver or DEFAULT_SOLVERS[method]
    check_feasible(case, market=False)
    with _naming_culprits(case):
        if method == "central":
            op = central_independent(case, solver=solver, solver_options=solver_options, tie_break=tie_break)
        else:
            op = _decomposed(case, False, solver, solver_options, tie_break, n_jobs, chunk_rows, None)
    op = op if method != "coordinated" else dataclasses.replace(op, method="coordinated")
    return op if stage is None else with_day_ahead(case, op, *m1_day_ahead(case, op, stage), stage)


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
    coordinated_jobs: int | None = -1,
    stages: int = 1,
    day_ahead=None,
    lshaped: LShaped | None = None,
) -> Operation:
    """Market clearing (Eqs. 16-19): the cooperative operation C*, R_A*, trades and clearing prices.

    Parameters
    ----------
    case : Case
        The community.
    method : str, default "decomposed"
        "central" (one problem), "decomposed" (exact, by scenario pieces in parallel) or "coordinated" (the paper's
        price-coordinated process).
    solver : str, optional
        A cvxpy solver name; default per method (:data:`DEFAULT_SOLVERS`).
    solver_options : dict, optional
        Its options.
    tie_break : bool, default True
        Report the tie-broken trades and flows.
    trade_limit : float or array_like, optional
        x_bar of Eq. 19, kW, scalar or (N,) [choice: default grid_limit_kw].
    n_jobs : int or None, default -1
        joblib workers of the decomposed pieces.
    chunk_rows : int, default :data:`~desmarket.pieces.CHUNK_ROWS`
        (home, scenario) rows per piece.
    coordination : Coordination, optional
        Method "coordinated": the process's settings (:class:`~desmarket.coordinated.Coordination`).
    callback : callable, optional
        Method "coordinated": called with the aggregator's state after every round.
    coordinated_jobs : int or None, default -1
        Worker processes for the homes' responses of the coordinated process (-1: every core; 1 or None: this
        process). Each group of homes (:data:`~desmarket.coordinated.BATCH_ROWS` rows; one group up to about 200
        homes of 10 scenarios) lives in one worker for the whole process (:class:`~desmarket.pieces.OwnedPool`),
        which keeps its homes' controllers between rounds (about 2.4 ms per home and round with PIQP), so the
        result is the same whatever the number of workers. Not joblib: a joblib backend is not used here.
    stages : int, default 1
        1 or 2, the two-stage clearing (a day-ahead position shared by the scenarios, real-time imbalances at
        k^up LMP / k^dn LMP; :mod:`desmarket.twostage`), by "central" or "decomposed" (module docstring).
    day_ahead : pandas.DataFrame or tuple of array_like, optional
        Stages 2: a fixed position, ``Operation.day_ahead`` or (buy_kw, sell_kw) arrays (T,) kW; only the second
        stage is solved (the EEV problem, the realised day).
    lshaped : LShaped, optional
        Stages 2, "decomposed": solve by the L-shaped route with these tolerances (relative gap, iteration cap;
        :class:`~desmarket.lshaped.LShaped`), its iterations then in ``Operation.convergence``; None (default): the
        deterministic equivalent in one solve (module docstring).

    Returns
    -------
    Operation
        Dispatch and trades (kW), costs C_i* and R_A* ($ per day), the clearing price ($/kWh) and its states.

    Raises
    ------
    InfeasibleCaseError
        Naming the homes whose limits cannot be met.
    SolverError
        When no solver returns an optimal status; NotConvergedError when an iterative method stops unconverged.
    """
    _check_case(case)
    method = check_method(method)
    n_jobs, coordinated_jobs = check_n_jobs(n_jobs), check_n_jobs(coordinated_jobs, "coordinated_jobs")
    stage = check_stages(stages, case, day_ahead)
    if stage is not None and method == "coordinated":
        raise ValueError(
            "the coordinated market process has no two-stage version; use method='decomposed' or 'central'"
        )
    solver = solver or DEFAULT_SOLVERS[method]
    check_feasible(case, market=True, trade_limit=trade_limits(case, trade_limit))
    with _naming_culprits(case):
        if stage is not None:
            if method == "central":
                return central_clearing(
                    case,
                    solver=solver,
                    solver_options=solver_options,
                    tie_break=tie_break,
                    trade_limit=trade_limit,
                    first_stage=stage,
                )
            if stage.fixed:
                return _decomposed(
                    case, True, solver, solver_options, tie_break, n_jobs, chunk_rows, trade_limit, stage
                )
            if two_stage_route(lshaped) == "lshaped":
                return _lshaped(case, stage, solver, solver_options, tie_break, n_jobs, trade_limit, lshaped)
            return _deterministic_equivalent(case, stage, solver, solver_options, tie_break, trade_limit)
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
