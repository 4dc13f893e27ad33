"""Pieces of the decomposed solve: the data of some (home, scenario) rows, their problem, and a parallel map.

A piece is the model of :mod:`desmarket.model` (M1, Eqs. 5-15, or the clearing, Eqs. 16-19) restricted to some
rows, written with variable bounds instead of bound constraints (solvers such as PIQP treat bounds natively,
which makes each piece 2-5x faster) and with the trade balance of Eq. 18 summed through groups of at most
:data:`TRADE_GROUP` homes, so that no constraint row is dense (a dense row of 10,000 homes makes PIQP's KKT
factorisation stall). Neither change moves the optimum or the dual of Eq. 18; ``tests/test_engine.py`` checks
both against the central problem, congested cases included. The daily minimum (Eq. 10) is left out of the rows
where the load bounds already imply it (a home with no load in a scenario: 0 <= d <= 0), the one formulation
change PIQP needs to solve such rows at all (:func:`daily_minimum`).

A piece whose solver (PIQP) does not return optimal is solved again with :data:`FALLBACK_SOLVER` (Clarabel,
the reference solver of the central problem), and it is an error only if that fails too
(:func:`solve_with_fallback`); the count of such pieces is recorded.
"""

from __future__ import annotations

import logging
import numbers
import sys
import time
from typing import NamedTuple

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from joblib import Parallel, cpu_count, delayed
from tqdm import tqdm

from .case import Case
from .model import SOLVED, Prices, SolverError, solve

#: Target number of (home, scenario) rows per piece: small pieces solve faster per row (interior-point cost
#: grows faster than linearly with size) but pay cvxpy's per-problem overhead (a few ms). Measured on this
#: machine: 0.44 ms per row at 200 rows, 0.8 ms at 20, 8 ms at 1 (PIQP, M1). Each piece is built afresh:
#: building and compiling is about 0.1 of those 0.44 ms, so a Parameter template per piece shape could save at
#: most about 20 %; pieces of the clearing differ in data, not only in prices, so it is not done.
CHUNK_ROWS = 256
#: Homes per partial sum in the trade balance of a piece (Eq. 18), so that no constraint row is dense.
TRADE_GROUP = 64
#: Solver of a piece whose own solver does not return optimal: Clarabel, the reference of the central problem.
#: PIQP 0.7 calls some feasible problems infeasible (a home controller of a 30-home case at one price, issue 17).
FALLBACK_SOLVER = "CLARABEL"

logger = logging.getLogger(__name__)


class Block(NamedTuple):
    """The data of a set of (home, scenario) rows: everything one piece needs, numpy only (cheap to ship).

    Rows are home-major; arrays (R, T) or (R,). Objective weights are 1 per row: pieces are independent, so
    the argmin of each is the argmin of its rows' part of the probability-weighted central problem.
    """

    rows: np.ndarray  # (R,) flat row index home * S + scenario in the case
    scenario: np.ndarray  # (R,) index of the row's trade balance within the block (0..K-1)
    load: np.ndarray  # D, baseline load, kW
    pv: np.ndarray  # available PV, kW
    load_min: np.ndarray  # lower load bound, kW (Eq. 9)
    load_max: np.ndarray  # upper load bound, kW (Eq. 9)
    battery_kw: np.ndarray  # charge / discharge limit, kW (Eqs. 11-12)
    e_min: np.ndarray  # kWh (Eq. 14)
    e_max: np.ndarray  # kWh (Eq. 14)
    e0: np.ndarray  # start = end state, kWh (Eqs. 13, 15)
    eta_c: np.ndarray
    eta_d: np.ndarray
    grid: np.ndarray  # connection limit, kW (Eq. 7)
    trade_limit: np.ndarray  # x_bar, kW (Eq. 19)
    a: np.ndarray  # utility a <= 0, $/kWh^2
    b: np.ndarray  # utility b >= 0, $/kWh
    prices: Prices


def case_block(case: Case, rows: np.ndarray, trade_limit: np.ndarray | None = None) -> Block:
    """The :class:`Block` of some flat rows (home * S + scenario) of a case."""
    rows = np.asarray(rows)
    s_count, t = case.n_scenarios, case.load.shape[-1]
    home, scen = np.divmod(rows, s_count)
    col = lambda name: case.column(name)[home]  # noqa: E731
    load = case.load.reshape(-1, t)[rows]
    cap = col("battery_kwh")
    x_bar = case.column("grid_limit_kw") if trade_limit is None else trade_limit
    return Block(
        rows=rows, scenario=np.unique(scen, return_inverse=True)[1],
        load=load, pv=case.pv.reshape(-1, t)[rows],
        load_min=col("load_min_factor")[:, None] * load, load_max=col("load_max_factor")[:, None] * load,
        battery_kw=col("battery_kw"), e_min=cap * col("soc_min"), e_max=cap * col("soc_max"),
        e0=cap * col("soc_initial"), eta_c=col("eta_charge"), eta_d=col("eta_discharge"),
        grid=col("grid_limit_kw"), trade_limit=np.asarray(x_bar, dtype=float)[home],
        a=col("utility_a"), b=col("utility_b"), prices=Prices.of_case(case),
    )


def check_battery_scale(battery_scale: float) -> float:
    """A battery scale f (multiplies every battery's kWh and kW) must be a finite number >= 0."""
    if not np.isfinite(battery_scale) or battery_scale < 0:
        raise ValueError(f"battery_scale must be a finite number >= 0, got {battery_scale!r}")
    return float(battery_scale)


#: The battery's variables in a piece: per unit of battery, scaled by ``PieceParameters.battery_scale``.
BATTERY = ("c", "e", "E")


class PieceParameters:
    """The Parameters of a built piece: what a what-if question may change without rebuilding it.

    Prices as in :class:`desmarket.model.Prices`, and ``battery_scale`` f >= 0, which multiplies every battery's
    capacity and power (Eqs. 11-15; 0 removes the batteries, 2 doubles them). Scaling a battery scales its
    feasible schedules by f (same efficiencies and state-of-charge fractions), so a piece solves for the
    schedule c', e', E' of the case's own battery and the home's flows are f c', f e', f E': the variable bounds
    stay constants and the problem stays DPP (cvxpy re-solves it without compiling again). The tie-break
    term epsilon sum (c^2 + e^2) is then epsilon f^2 sum (c'^2 + e'^2), one Parameter ``spread_weight``.
    """

    def __init__(self, prices: Prices, battery_scale: float = 1.0):
        t = len(prices.retail)
        self.retail = cp.Parameter(t, name="retail")  # p_t, $/kWh
        self.net_metering = cp.Parameter(name="net_metering", nonneg=True)  # q, $/kWh
        self.buy = cp.Parameter(t, name="buy")  # lambda^b_t, $/kWh
        self.sell = cp.Parameter(t, name="sell")  # lambda^s_t, $/kWh
        self.spread_weight = cp.Parameter(name="spread_weight", nonneg=True)  # epsilon f^2, $/kW^2
        self.battery_scale = cp.Parameter(name="battery_scale", nonneg=True)  # f
        self.set(prices, battery_scale)

    def set(self, prices: Prices, battery_scale: float = 1.0) -> None:
        """Give the Parameters new values (the next solve of the piece uses them)."""
        check_battery_scale(battery_scale)
        self.retail.value, self.net_metering.value = prices.retail, prices.net_metering
        self.buy.value, self.sell.value = prices.buy, prices.sell
        self.spread_weight.value = prices.regularization * battery_scale ** 2
        self.battery_scale.value = battery_scale
        self._regularization = float(prices.regularization)

    def prices(self) -> Prices:
        """The current values, as the :class:`~desmarket.model.Prices` an operation is costed with."""
        value = lambda p: np.asarray(p.value, dtype=float)  # noqa: E731
        return Prices(value(self.retail), float(self.net_metering.value), value(self.buy), value(self.sell),
                      self._regularization)


class BlockHandles(NamedTuple):
    """Variables of a built piece, (R, T); ``trade_balance`` (K, T) is Eq. 18 per scenario of the piece."""

    d: cp.Variable
    g: cp.Variable
    c: cp.Variable
    e: cp.Variable
    E: cp.Variable
    Pl: cp.Variable
    Ps: cp.Variable
    x: cp.Variable | None
    trade_balance: cp.Constraint | None
    parameters: PieceParameters  # c, e, E above are per unit of battery: the flows are battery_scale times them

    def values(self, keys) -> dict:
        """The solved arrays by name, battery flows scaled (see :class:`PieceParameters`)."""
        scale = float(self.parameters.battery_scale.value)
        return {k: np.asarray(getattr(self, k).value, dtype=float) * (scale if k in BATTERY else 1.0) for k in keys}


def _group_sums(scenario: np.ndarray, group: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(Y, R) sums rows into groups of at most ``group`` rows of one scenario; (K, Y) sums groups by scenario."""
    r = len(scenario)
    order = np.argsort(scenario, kind="stable")
    rank = np.empty(r, dtype=int)
    starts = np.searchsorted(scenario[order], np.arange(scenario.max() + 1))
    rank[order] = np.arange(r) - starts[scenario[order]]
    key = np.stack([scenario, rank // group], axis=1)
    groups, gid = np.unique(key, axis=0, return_inverse=True)
    gid = gid.reshape(-1)
    rows_to_groups = sp.csr_matrix((np.ones(r), (gid, np.arange(r))), shape=(len(groups), r))
    groups_to_scen = sp.csr_matrix((np.ones(len(groups)), (groups[:, 0], np.arange(len(groups)))),
                                   shape=(scenario.max() + 1, len(groups)))
    return rows_to_groups, groups_to_scen


def block_model(block: Block, market: bool) -> tuple[BlockHandles, list, cp.Expression]:
    """Variables, local constraints and objective of a piece's rows, without the trade balance (Eq. 18).

    The model is that of :func:`desmarket.model.build_independent` / :func:`~desmarket.model.build_clearing`
    with weight 1 per row; bounds (Eqs. 7-9, 11-12, 14, 19) are variable bounds. Objective, $ per day:
    M1 sum [p Pl - q Ps - U(d)] (Eq. 5); market sum [lb Pl - ls Ps - U(d)] (Eq. 16); both + eps sum (c^2 + e^2).
    Prices, epsilon and the battery scale are :class:`PieceParameters` (``handles.parameters``), set from the
    block's prices and scale 1; c, e, E are per unit of battery (the flows are scale times them).
    """
    R, T = block.load.shape
    per_row = lambda v: np.broadcast_to(np.asarray(v, dtype=float)[:, None], (R, T))  # noqa: E731
    zero = np.zeros((R, T))
    p = PieceParameters(block.prices)
    d = cp.Variable((R, T), name="load", bounds=[block.load_min, block.load_max])  # Eq. 9
    g = cp.Variable((R, T), name="pv_used", bounds=[zero, block.pv])  # Eq. 8
    c = cp.Variable((R, T), name="charge", bounds=[zero, per_row(block.battery_kw)])  # Eq. 11, per unit
    e = cp.Variable((R, T), name="discharge", bounds=[zero, per_row(block.battery_kw)])  # Eq. 12, per unit
    E = cp.Variable((R, T), name="energy", bounds=[per_row(block.e_min), per_row(block.e_max)])  # Eq. 14, per unit
    Pl = cp.Variable((R, T), name="net_load", bounds=[zero, per_row(block.grid)])  # Eq. 7
    Ps = cp.Variable((R, T), name="net_surplus", bounds=[zero, per_row(block.grid)])  # Eq. 7
    stored_before = cp.hstack([block.e0[:, None], E[:, :-1]])  # E_{t-1}, with E_{-1} = E0
    constraints = daily_minimum(d, block) + [
        E == stored_before + cp.multiply(per_row(block.eta_c), c) - cp.multiply(per_row(1 / block.eta_d), e),  # 13
        E[:, -1] == block.e0,  # Eq. 15
    ]
    net = d + p.battery_scale * (c - e) - g
    disutility = cp.sum(cp.multiply(per_row(-block.a), cp.square(d))) - cp.sum(cp.multiply(per_row(block.b), d))
    spread = cp.sum(cp.square(c)) + cp.sum(cp.square(e))
    x = None
    if market:
        x_bar = per_row(block.trade_limit)
        x = cp.Variable((R, T), name="trade", bounds=[-x_bar, x_bar])  # Eq. 19
        constraints.append(Pl - Ps == net + x)  # Eq. 17
        cost = cp.sum(Pl @ p.buy) - cp.sum(Ps @ p.sell)  # wholesale (Eq. 16)
    else:
        constraints.append(Pl - Ps == net)  # Eq. 6
        cost = cp.sum(Pl @ p.retail) - p.net_metering * cp.sum(Ps)  # retail bill - credit (Eq. 5)
    handles = BlockHandles(d, g, c, e, E, Pl, Ps, x, None, p)
    return handles, constraints, cost + disutility + p.spread_weight * spread


def daily_minimum(d: cp.Variable, block: Block) -> list:
    """Eq. 10, sum_t d >= sum_t D, for the rows where the load bounds (Eq. 9) do not already imply it.

    A row whose lower bounds sum to its baseline (no load all day: 0 <= d <= 0, or load_min_factor = 1) meets
    Eq. 10 at every bounded d; written out for a home with zero load it reads 0 >= 0 over fixed variables, which
    PIQP declares infeasible (issue 17). Leaving it out of those rows changes neither the feasible set nor the
    optimum; every other row keeps the constraint exactly as before.
    """
    daily = block.load.sum(axis=1)
    needed = block.load_min.sum(axis=1) < daily
    if needed.all():
        return [cp.sum(d, axis=1) >= daily]
    if not needed.any():
        return []
    rows = np.flatnonzero(needed)
    return [cp.sum(d[rows], axis=1) >= daily[rows]]


def build_block(block: Block, market: bool) -> tuple[cp.Problem, BlockHandles]:
    """One piece of M1 (Eqs. 5-15) or of the clearing (Eqs. 16-19) as a cvxpy problem (:func:`block_model`).

    The clearing's trade balance (Eq. 18) holds per scenario of the piece, summed through partial sums of at
    most :data:`TRADE_GROUP` homes.
    """
    h, constraints, objective = block_model(block, market)
    if market:
        to_groups, to_scen = _group_sums(block.scenario, TRADE_GROUP)
        partial = cp.Variable((to_groups.shape[0], block.load.shape[1]), name="trade_partial_sums")
        trade_balance = to_scen @ partial == 0  # Eq. 18, one row per (scenario, hour)
        constraints += [partial == to_groups @ h.x, trade_balance]
        h = h._replace(trade_balance=trade_balance)
    return cp.Problem(cp.Minimize(objective), constraints), h


def solver_error(exc: SolverError, message: str) -> SolverError:
    """A :class:`SolverError` with a new message that keeps the cvxpy ``status`` of ``exc`` (see
    :func:`desmarket.model.solve`), so that callers can still tell an infeasible problem by its status."""
    return SolverError(message, status=getattr(exc, "status", None))


def solve_with_fallback(problem: cp.Problem, solver: str, solver_options: dict | None = None) -> int:
    """Solve a built problem with ``solver``; if it does not return optimal, solve it again with
    :data:`FALLBACK_SOLVER` at that solver's default tolerances. Returns the number of fallbacks, 0 or 1.

    Raises :class:`SolverError` only if the fallback fails as well, with the fallback's status: a problem is
    reported infeasible only when Clarabel says so. A solver that cvxpy does not have (a misspelt name) is the
    caller's error and raises at once.
    """
    try:
        solve(problem, solver, **(solver_options or {}))
        return 0
    except SolverError as first:
        if str(solver).upper() == FALLBACK_SOLVER or str(solver).upper() not in cp.installed_solvers():
            raise
        try:
            solve(problem, FALLBACK_SOLVER)
        except SolverError as second:
            raise solver_error(second, f"{second} ({solver} before it: status "
                                       f"'{getattr(first, 'status', None)}')") from second
        logger.info("%s returned status '%s' on a problem that %s solved", solver, getattr(first, "status", None),
                    FALLBACK_SOLVER)
        return 1


def solve_built(problem: cp.Problem, handles: BlockHandles, rows: np.ndarray, market: bool, solver: str,
                solver_options: dict | None = None) -> dict:
    """Solve a built piece at its Parameters' current values and read its (R, T) arrays, prices and time.

    The price (K, T) is the dual of Eq. 18 signed as in :func:`desmarket.model.clearing_price`; the piece has
    weight 1 per scenario, so it is already per scenario and un-weighted. ``fallbacks`` is 1 if the piece was
    solved by :data:`FALLBACK_SOLVER` (:func:`solve_with_fallback`), else 0.
    """
    t0 = time.perf_counter()
    try:
        fallbacks = solve_with_fallback(problem, solver, solver_options)
    except SolverError as exc:
        raise solver_error(exc, f"{exc} (piece of {len(rows)} home-scenario rows, case rows "
                                f"{rows.min()}-{rows.max()})") from exc
    out = handles.values(SOLVED + (("x",) if market else ()))
    out["fallbacks"] = fallbacks
    if market:
        out["price"] = -np.asarray(handles.trade_balance.dual_value, dtype=float).reshape(-1, out["d"].shape[1])
    out["build_seconds"], out["solve_seconds"] = 0.0, time.perf_counter() - t0
    return out


def solve_block(block: Block, market: bool, solver: str, solver_options: dict | None = None) -> dict:
    """Build, solve and read one piece (:func:`build_block`, :func:`solve_built`)."""
    t0 = time.perf_counter()
    problem, handles = build_block(block, market)
    out = solve_built(problem, handles, block.rows, market, solver, solver_options)
    out["build_seconds"] = time.perf_counter() - t0 - out["solve_seconds"]
    return out


def gather(case: Case, row_sets: list[np.ndarray], results: list[dict], market: bool
           ) -> tuple[dict, np.ndarray | None]:
    """The pieces' arrays put back in place: (N, S, T) arrays by :data:`~desmarket.model.SOLVED` name (and
    ``"x"``), and the (S, T) clearing price for the market (None for M1)."""
    n, s, t = case.load.shape
    keys = SOLVED + (("x",) if market else ())
    flat = {k: np.empty((n * s, t)) for k in keys}
    price = np.empty((s, t)) if market else None
    for rows, res in zip(row_sets, results):
        for k in keys:
            flat[k][rows] = res[k]
        if market:
            price[np.unique(rows % s)] = res["price"]
    return {k: v.reshape(n, s, t) for k, v in flat.items()}, price


def solver_label(solver: str, fallbacks: int, total: int, unit: str) -> str:
    """The ``Operation.solver`` of a result: the solver's name, and how many of its ``total`` problems (pieces,
    home responses) :data:`FALLBACK_SOLVER` solved instead, if any: "PIQP (CLARABEL for 1 of 4 pieces)"."""
    if not fallbacks:
        return solver
    logger.info("%s did not solve %d of %d %s; %s solved them", solver, fallbacks, total, unit, FALLBACK_SOLVER)
    return f"{solver} ({FALLBACK_SOLVER} for {fallbacks} of {total} {unit})"


# ===================================================================================== parallel
def check_n_jobs(n_jobs, name: str = "n_jobs") -> int | None:
    """The one rule for a number of joblib workers, checked up front whatever the number of tasks.

    None (joblib's default: one, or the ``joblib.parallel_config`` in force), a positive integer, or a negative
    integer in joblib's sense (-1 all cores, -2 all but one, ...) down to minus the number of cores (one worker).
    0, booleans, floats and more negative values raise one ValueError naming ``name``.
    """
    if n_jobs is None:
        return None
    cores = cpu_count()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0 or n_jobs < -cores:
        raise ValueError(f"{name} must be None, a positive integer, or -1 (all {cores} cores) down to -{cores} "
                         f"(one worker), got {n_jobs!r}")
    return int(n_jobs)


def worker_count(n_jobs) -> int:
    """Workers that a checked ``n_jobs`` stands for on this machine (None and -1: every core)."""
    n_jobs = check_n_jobs(n_jobs)
    cores = cpu_count()
    if n_jobs is None:
        return cores
    return n_jobs if n_jobs > 0 else cores + 1 + n_jobs


def run_tasks(func, tasks: list[tuple], n_jobs: int | None = -1, progress: str | None = None) -> list:
    """``[func(*task) for task in tasks]``, in parallel through joblib when there is more than one task.

    No backend is named here, so ``joblib.parallel_config(backend="dask")`` (or any other) applies.
    n_jobs: :func:`check_n_jobs`. progress: a description for a tqdm bar over the tasks, shown only when stderr
    is a terminal (so executed notebooks stay byte-identical); None shows none.
    """
    n_jobs = check_n_jobs(n_jobs)
    bar = tqdm(total=len(tasks), desc=progress, unit="task", disable=progress is None or not sys.stderr.isatty())
    with bar:
        if len(tasks) <= 1 or n_jobs == 1:
            out = []
            for task in tasks:
                out.append(func(*task))
                bar.update()
            return out
        out = []
        for result in Parallel(n_jobs=n_jobs, return_as="generator")(delayed(func)(*task) for task in tasks):
            out.append(result)
            bar.update()
        return out


def map_chunks(func, items, args: tuple = (), n_jobs: int | None = -1, chunks: int = 16,
               progress: str | None = None) -> list:
    """``func(chunk, *args)`` over ``chunks`` strided chunks of ``items`` (item k goes to chunk k mod chunks), one
    :func:`run_tasks` task each; the results (one per item) come back flattened in the order of ``items``.

    Each chunk is fixed by the items alone, so the result does not depend on ``n_jobs``; striding spreads items
    sorted by cost (small coalitions first, say) evenly over the chunks.
    """
    items = list(items)
    count = min(int(chunks), len(items))
    results = run_tasks(func, [(items[k::count], *args) for k in range(count)], n_jobs, progress)
    out = [None] * len(items)
    for k, result in enumerate(results):
        out[k::count] = list(result)
    return out


def independent_pieces(case: Case, chunk_rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """Flat rows of M1 in consecutive pieces of at most ``chunk_rows`` (any split is exact: rows are independent)."""
    total = case.n_homes * case.n_scenarios
    return [np.arange(k, min(k + chunk_rows, total)) for k in range(0, total, max(1, int(chunk_rows)))]


def clearing_pieces(case: Case, chunk_rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """Flat rows of the clearing in pieces of whole scenarios (all homes), about ``chunk_rows`` rows each."""
    n, s = case.n_homes, case.n_scenarios
    per_piece = max(1, int(chunk_rows) // n)
    pieces = []
    for k in range(0, s, per_piece):
        scen = np.arange(k, min(k + per_piece, s))
        pieces.append((np.arange(n)[:, None] * s + scen[None, :]).reshape(-1))  # home-major
    return pieces


