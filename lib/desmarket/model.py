"""Operation of the homes: independent (mode M1, Eqs. 5-15) and market clearing (Eqs. 16-19), as one problem.

Three steps, kept apart (house style):

* **build** -- :func:`build_independent`, :func:`build_clearing` return a ``cp.Problem`` and a
  :class:`~desmarket.formulation.Handles` of its variables, Parameters and the trade-balance constraint whose
  dual is the clearing price: the model of :mod:`desmarket.formulation` (where every equation is written) over
  one block of all rows, each weighted by its scenario's probability. One variable per quantity, rows =
  (home, scenario) home-major, columns = hours.
* **solve** -- :func:`solve` names the solver and raises :class:`SolverError` on any status but optimal.
* **read** -- :func:`read_operation` turns handles into an :class:`Operation` of (N, S, T) arrays, after the
  tie-break of MODEL.md ("Uniqueness"), and prices it (:func:`clearing_price`).

:func:`central_independent` and :func:`central_clearing` do all three on one problem (method "central");
:mod:`desmarket.engine` solves the same formulation by pieces or by the coordinated market process, and every
method ends in :func:`assemble_operation`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
import weakref
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import pandas as pd

from .case import Case
from .errors import MismatchError, RoutingWarning, SolverError
from .formulation import (
    FirstStage,
    Handles,
    Prices,
    case_block,
    clearing_price,
    formulate,
    imbalances,
    newsvendor_position,
    operation_objective,
    two_stage_wholesale,
)

DEFAULT_SOLVER = "CLARABEL"
#: Tolerances used when no ``solver_options`` are given. The epsilon tie-break makes the operation unique but
#: only weakly so (epsilon = 1e-5 $/kW^2): at the solvers' own defaults (1e-8) the battery schedule lands up to
#: ~2e-3 kW from the optimum (M1 prices are flat within a TOU block, so only epsilon fixes the timing), which
#: moves R_A^0 and Delta C by ~1e-5 relative; at 1e-10 still ~5e-6 on small cases. At 1e-12 Clarabel and PIQP
#: agree on Delta C to 1e-8 relative (3 to 1,000 homes; tests/test_engine.py) for about 20 % more time.
#: Clarabel's linear solver is named, not left to "auto": above some size "auto" picks faer, a multithreaded
#: supernodal factorisation whose results depend on the thread count, and which was 5x slower than qdldl on the
#: two-stage deterministic equivalent (200 homes x 10 scenarios: 172 s against 34 s, the same 46 iterations and
#: optimum). On small problems "auto" is qdldl (bit for bit the same solution on the paper case).
DEFAULT_SOLVER_OPTIONS: dict[str, dict[str, float | str]] = {
    "CLARABEL": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "direct_solve_method": "qdldl"},
    "PIQP": {"eps_abs": 1e-12, "eps_rel": 1e-12},
}
#: The solved arrays every method hands to :func:`assemble_operation` (plus ``"x"`` for the market), kW / kWh.
SOLVED = ("d", "g", "c", "e", "E", "Pl", "Ps")
#: |net consumption| below this (kW) is solver noise and counts as zero in the tie-break.
NET_TOLERANCE = 1e-6
#: Allowed excess (kW) of a tie-broken flow over its limit before a :class:`RoutingWarning`; also how close to
#: its limit a flow counts as binding (``Operation.congested``).
LIMIT_TOLERANCE = 1e-5
#: A clearing price within this of k^b LMP or k^s LMP ($/kWh) is pinned to it (the exact methods' duals are
#: accurate to about 1e-7 $/kWh; the coordinated process passes its own, looser tolerance).
PRICE_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class Operation:
    """Result of M1 or of the market clearing. Dispatch arrays are (N, S, T) in kW (= kWh per hour).

    home_cost:          (N,) expected $ per day, retail bill - net-metering credit - utility (Eq. 5)
    aggregator_revenue: expected $ per day, R_A (Eq. 1)
    trade:              + = the home supplies the local market (zeros in M1)
    price:              (S, T) clearing price, $/kWh (None in M1), see :func:`clearing_price`
    balanced:           (S, T) True where the price is not pinned to k^b LMP or k^s LMP and no limit binds: the
                        community neither imports nor exports, or so little that any price in the band clears
    congested:          (S, T) True where a grid or trade limit binds (Eqs. 7, 19) and the price is not pinned:
                        scarcity pricing, which may lie outside [k^s LMP, k^b LMP] (None in M1)
    regularization_cost: the tie-break term epsilon * sum pi (c^2 + e^2) at the optimum, $ (not in any cost)
    over_limit_kw:      largest excess of a tie-broken trade or grid flow over grid_limit_kw (0 if none), kW
    build_seconds, solve_seconds: summed over all pieces (CPU time of the workers for parallel methods)
    convergence:        one row per iteration of the coordinated market process or of the L-shaped method (None
                        for the other methods and routes)
    fingerprint:        :func:`case_fingerprint` of the case (and prices) it was solved on; None: unknown (an
                        Operation built by hand). Settlement, fairness and the study check it
                        (:meth:`check_solved_on`), so a result is never used with another case's numbers.
    stages:             1 (every scenario its own decisions, the paper's program) or 2 (the two-stage clearing of
                        :mod:`desmarket.twostage`: a day-ahead position shared by the scenarios)
    day_ahead:          (stages 2) per hour ``buy_kw`` b_t and ``sell_kw`` a_t, the aggregator's day-ahead purchase
                        and sale, kW; aggregator_revenue then counts their cost and the imbalances' (None: one stage)
    imbalance_buy, imbalance_sell: (stages 2) (S, T) kW bought in real time at k^up LMP (shortfall u) and sold at
                        k^dn LMP (excess v) against the day-ahead position (:func:`~desmarket.formulation.imbalances`)
    """

    mode: str
    home_ids: tuple[str, ...]
    probability: np.ndarray
    load: np.ndarray
    pv_used: np.ndarray
    charge: np.ndarray
    discharge: np.ndarray
    energy: np.ndarray
    net_load: np.ndarray
    net_surplus: np.ndarray
    trade: np.ndarray
    price: np.ndarray | None
    balanced: np.ndarray | None
    retail_bill: np.ndarray
    net_metering_credit: np.ndarray
    utility: np.ndarray
    home_cost: np.ndarray
    aggregator_revenue: float
    regularization_cost: float
    over_limit_kw: float
    objective: float
    solver: str
    solve_seconds: float  # cvxpy compilation + solver
    build_seconds: float  # building the cvxpy expressions
    solver_seconds: float  # the solver alone (its own report; NaN where the solver does not report it)
    problem: cp.Problem | None = field(repr=False)  # the single cvxpy problem (method "central" only)
    method: str = "central"  # how it was solved: "central", "decomposed" or "coordinated" (see engine.METHODS)
    wall_seconds: float = np.nan  # wall-clock time of the whole call, all workers together
    convergence: pd.DataFrame | None = field(default=None, repr=False)  # per iteration (coordinated, L-shaped)
    congested: np.ndarray | None = None  # (S, T), see above
    fingerprint: str | None = None  # case_fingerprint of the case solved, see above
    stages: int = 1  # see above
    day_ahead: pd.DataFrame | None = field(default=None, repr=False)  # (T, 2) buy_kw, sell_kw (stages 2)
    imbalance_buy: np.ndarray | None = field(default=None, repr=False)  # (S, T) kW at k^up LMP (stages 2)
    imbalance_sell: np.ndarray | None = field(default=None, repr=False)  # (S, T) kW at k^dn LMP (stages 2)

    def check_solved_on(self, case: Case, name: str = "operation") -> None:
        """Raise :class:`MismatchError` unless this result was solved on ``case`` (same :func:`case_fingerprint`).

        name: what the caller calls this result in its message ("independent", "market", ...). A result whose
        fingerprint is None (built by hand) cannot be checked and passes.
        """
        if self.fingerprint is None:
            return
        expected = case_fingerprint(case)
        if self.fingerprint != expected:
            raise MismatchError(
                f"the {name} result was solved on another case than the one given ({case!r}): its "
                f"case fingerprint is {self.fingerprint}, this case's is {expected} (homes, profiles, scenarios, "
                "prices or market parameters differ). Solve it on this case, or pass the case it was solved on"
            )

    def cleared(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(price, balanced, congested), (S, T) each, of a market clearing: the clearing price in $/kWh and where
        it is balanced and congested (see the class docstring); ValueError for an M1 result, which has none."""
        if self.price is None or self.balanced is None or self.congested is None:
            raise ValueError(
                f"this {self.mode} result has no clearing prices (M1 is not a market clearing): pass the market result"
            )
        return self.price, self.balanced, self.congested

    @property
    def net_consumption(self) -> np.ndarray:
        """n = d + c - e - g, (N, S, T) kW: what the home needs from outside (Eq. 6 right-hand side)."""
        return self.load + self.charge - self.discharge - self.pv_used

    @property
    def traded_energy(self) -> np.ndarray:
        """(N,) expected energy traded in the local market, sum_s pi_s sum_t |x|, kWh per day."""
        return np.einsum("s,nst->n", self.probability, np.abs(self.trade))

    @property
    def community_net_load(self) -> np.ndarray:
        """(S, T) community import from the main grid minus export, kW."""
        return (self.net_load - self.net_surplus).sum(axis=0)


# ======================================================================================== build
def trade_limits(case: Case, trade_limit: float | np.ndarray | None = None) -> np.ndarray:
    """x_bar of Eq. 19 per home, kW (N,) [choice: default = each home's grid_limit_kw]; validated."""
    if trade_limit is None:
        return case.column("grid_limit_kw")
    try:
        x_bar = np.broadcast_to(np.asarray(trade_limit, dtype=float), (case.n_homes,)).copy()
    except (TypeError, ValueError):
        raise ValueError(
            f"trade_limit must be a number or one per home ({case.n_homes}), got {trade_limit!r}"
        ) from None
    if np.any(~np.isfinite(x_bar)) or np.any(x_bar < 0):
        raise ValueError(f"trade_limit must be finite and >= 0 kW, got {trade_limit!r}")
    return x_bar


def _all_rows(case: Case) -> np.ndarray:
    return np.arange(case.n_homes * case.n_scenarios)


def build_independent(case: Case, *, cyclic_storage: bool = False) -> tuple[cp.Problem, Handles]:
    """M1: every home minimises its own expected bill minus utility at retail prices (Eq. 5, Eqs. 6-15).

    The homes are independent, so their problems are stacked into one separable problem: the formulation of
    :func:`desmarket.formulation.formulate` over one block of all rows, each weighted by pi_s.
    Objective: sum_i sum_s pi_s sum_t [p_t Pl - q Ps - U_i(d)] + epsilon sum pi (c^2 + e^2).

    Parameters
    ----------
    case : Case
        The community.
    cyclic_storage : bool, default False
        A daily storage cycle instead of Eq. 15 (see :func:`~desmarket.formulation.formulate`).

    Returns
    -------
    problem : cvxpy.Problem
        The unsolved problem ($ per day).
    handles : Handles
        Its variables (kW, kWh) and Parameters; solve with :func:`solve`, read with :func:`read_operation`.
    """
    return formulate(case_block(case, _all_rows(case), weighted=True), market=False, cyclic_storage=cyclic_storage)


def build_clearing(
    case: Case,
    trade_limit: float | np.ndarray | None = None,
    *,
    cyclic_storage: bool = False,
    first_stage: FirstStage | None = None,
) -> tuple[cp.Problem, Handles]:
    """Market clearing (Eqs. 16-19): all homes and the aggregator minimise sum_i C_i - R_A together.

    The retail and net-metering terms cancel, so the coalition faces the wholesale prices:
    sum_s pi_s sum_t [lambda^b_t Pl_tot - lambda^s_t Ps_tot] - E[U] + epsilon sum pi (c^2 + e^2),
    with Pl - Ps = d + c - e - g + x (Eq. 17), sum_i x = 0 per (s, t) (Eq. 18) and |x| <= x_bar (Eq. 19):
    :func:`desmarket.formulation.formulate` over one block of all rows, each weighted by pi_s.

    Parameters
    ----------
    case : Case
        The community.
    trade_limit : float or array_like, optional
        x_bar of Eq. 19, kW, scalar or (N,) [choice: default each home's grid_limit_kw].
    cyclic_storage : bool, default False
        A daily storage cycle instead of Eq. 15 (see :func:`~desmarket.formulation.formulate`).
    first_stage : FirstStage, optional
        The two-stage clearing (:class:`~desmarket.formulation.FirstStage`); None: one stage.

    Returns
    -------
    problem : cvxpy.Problem
        The unsolved problem ($ per day).
    handles : Handles
        Its variables, Parameters and the trade balance whose dual is the clearing price (:func:`clearing_price`).
    """
    block = case_block(case, _all_rows(case), trade_limits(case, trade_limit), weighted=True)
    return formulate(block, market=True, cyclic_storage=cyclic_storage, first_stage=first_stage)


# ======================================================================================== solve
#: cvxpy statuses by which a solver says the problem has no feasible point (``SolverError.status``).
INFEASIBLE_STATUSES = (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)


def solve(problem: cp.Problem, solver: str = DEFAULT_SOLVER, **options) -> float:
    """Solve with the named solver; raise :class:`SolverError` unless the status is exactly optimal.

    Parameters
    ----------
    problem : cvxpy.Problem
        A built problem (:func:`build_independent`, :func:`build_clearing`).
    solver : str, default "CLARABEL"
        A cvxpy solver name.
    **options
        Solver options; without any, the solver's entry of :data:`DEFAULT_SOLVER_OPTIONS` (tight tolerances).

    Returns
    -------
    float
        The optimal objective, $ per day (the tie-break term included).

    Raises
    ------
    SolverError
        Unless the status is "optimal". Its ``status`` is the cvxpy status (None if the solver itself failed),
        so callers test ``exc.status in INFEASIBLE_STATUSES``, never the message.
    """
    options = options or DEFAULT_SOLVER_OPTIONS.get(str(solver).upper(), {})
    try:
        with warnings.catch_warnings():  # an inaccurate solution raises below; no need to warn as well
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=solver, **options)
    except cp.error.SolverError as exc:
        raise SolverError(
            f"{solver} failed ({exc}). Try another solver (solver='SCS' or 'OSQP') or check the "
            "case for extreme values.",
            status=None,
        ) from exc
    if problem.status != cp.OPTIMAL:
        hint = {
            cp.INFEASIBLE: "the case is infeasible: check that each home's minimum load (load_min_factor x load) "
            "minus PV and battery power fits under grid_limit_kw, and the battery limits",
            cp.UNBOUNDED: "the problem is unbounded: check the prices and utility coefficients",
        }.get(problem.status, "tighten or loosen the solver tolerances, or try another solver")
        raise SolverError(f"{solver} returned status '{problem.status}', not 'optimal': {hint}.", status=problem.status)
    return float(problem.value)


# ========================================================================================= read
def pro_rata_flows(
    net: np.ndarray, *, match: bool = True, tol: float = NET_TOLERANCE, matched: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tie-break step 2 of MODEL.md: trades and grid flows from net consumption by pro-rata matching.

    net: (N, S, T) n = d + c - e - g in kW; |n| < tol counts as 0 (solver noise).
    match=False (mode M1, no market): no trades, Pl = max(n, 0), Ps = max(-n, 0).
    In each (s, t), matched energy m = min(supply, demand) with supply = sum max(-n, 0), demand = sum
    max(n, 0); a surplus home supplies x = m max(-n, 0) / supply, a deficit home receives m max(n, 0) / demand.
    matched: (S, T) a smaller m where the optimum trades less than that (binding trade limits), so that the
    community's totals stay those of the optimum (see :func:`assemble_operation`).
    Returns (trade x, net load Pl = max(n + x, 0), net surplus Ps = max(-(n + x), 0)), each (N, S, T).
    """
    net = np.where(np.abs(net) < tol, 0.0, net)
    surplus, deficit = np.maximum(-net, 0.0), np.maximum(net, 0.0)
    supply, demand = surplus.sum(axis=0), deficit.sum(axis=0)
    full = np.minimum(supply, demand) if match else np.zeros_like(supply)
    matched = full if matched is None else np.minimum(full, matched)
    with np.errstate(invalid="ignore", divide="ignore"):
        give = np.where(supply > 0, matched / supply, 0.0)
        take = np.where(demand > 0, matched / demand, 0.0)
    x = surplus * give - deficit * take
    residual = net + x
    return x, np.maximum(residual, 0.0), np.maximum(-residual, 0.0)


#: Digest of each case's homes, scenarios and profiles (the part of :func:`case_fingerprint` that is costly to hash).
_CASE_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FINGERPRINT_DIGITS = 16  # hex digits of sha256 kept in a fingerprint


def _float_bytes(values) -> bytes:
    """Shape and little-endian float64 bytes of an array, C order, -0.0 as 0.0: the same on every machine."""
    array = np.ascontiguousarray(np.asarray(values, dtype=float) + 0.0, dtype="<f8")
    return json.dumps(array.shape).encode() + array.tobytes()


def _case_digest(case: Case) -> bytes:
    """sha256 of what the case's homes face and are (homes table, scenario ids and probabilities, load, PV)."""
    if case in _CASE_DIGESTS:
        return _CASE_DIGESTS[case]
    h = hashlib.sha256(b"desmarket case v1")
    h.update(json.dumps([list(case.home_ids), list(case.homes.columns), list(case.scenarios)]).encode())
    for values in (case.homes.to_numpy(dtype=float), case.probability, case.load, case.pv):
        h.update(_float_bytes(values))
    _CASE_DIGESTS[case] = h.digest()
    return _CASE_DIGESTS[case]


def case_fingerprint(case: Case, prices: Prices | None = None, regularization: float | None = None) -> str:
    """A short stable hash of everything that determines a solve of ``case``.

    It covers the homes table, the scenario ids and probabilities, the load and PV profiles, the prices of
    Eqs. 1-5 (:class:`~desmarket.formulation.Prices`: retail p_t, q, lambda^b_t = k^b LMP_t, lambda^s_t = k^s LMP_t)
    and the tie-break weight epsilon. Floats are hashed as little-endian float64 bytes in a fixed order, so the
    value is the same in every process and on every machine, and a case saved and loaded back keeps it. Every
    :class:`Operation` records the fingerprint of what it was solved on (:func:`assemble_operation`).

    Parameters
    ----------
    case : Case
        The case.
    prices : Prices, optional
        The prices solved with; default the case's own.
    regularization : float, optional
        epsilon, $/kW^2; default the case's own.

    Returns
    -------
    str
        16 hex digits of sha256.
    """
    prices = Prices.of_case(case) if prices is None else prices
    regularization = case.market.regularization if regularization is None else regularization
    h = hashlib.sha256(_case_digest(case))
    for values in (prices.retail, prices.net_metering, prices.buy, prices.sell, regularization):
        h.update(_float_bytes(values))
    market = case.market
    if market.imbalance_buy_ratio is not None or market.imbalance_sell_ratio is not None:  # two-stage prices
        h.update(_float_bytes(market.imbalance_ratios))  # hashed only when given: one-stage prints stay the same
    return h.hexdigest()[:FINGERPRINT_DIGITS]


def read_operation(
    case: Case,
    problem: cp.Problem,
    handles: Handles,
    *,
    solver: str,
    solve_seconds: float = np.nan,
    build_seconds: float = np.nan,
    tie_break: bool = True,
) -> Operation:
    """Arrays, costs and prices of a solved problem (Eqs. 1-5), after the tie-break of the model reference.

    Prices and epsilon are read from the problem's Parameters, so a re-solve after setting ``handles.buy.value`` is
    costed at the prices it was solved with.

    Parameters
    ----------
    case : Case
        The case the problem was built from.
    problem : cvxpy.Problem
        The solved problem.
    handles : Handles
        Its handles (:func:`build_independent`, :func:`build_clearing`).
    solver : str
        The solver's name, recorded in ``Operation.solver``.
    solve_seconds, build_seconds : float, optional
        Timings to record, s.
    tie_break : bool, default True
        [choice] Recompute trades and per-home grid flows by :func:`pro_rata_flows`; False reports the solver's own
        (non-unique) x, Pl, Ps.

    Returns
    -------
    Operation
        Dispatch (kW), costs ($ per day) and, for a clearing, the clearing price ($/kWh).
    """
    n, s = case.n_homes, case.n_scenarios
    market = handles.x is not None
    arrays = {k: v.reshape(n, s, -1) for k, v in handles.values(SOLVED + (("x",) if market else ())).items()}
    price = clearing_price(handles) if market else None
    x_bar = None
    if market:  # x_bar per home, from the block's rows (home-major)
        x_bar = np.empty(n)
        x_bar[handles.block.rows // s] = handles.block.trade_limit
    parameters = handles.parameters
    return assemble_operation(
        case,
        arrays,
        price,
        parameters.prices(),
        regularization=parameters.regularization,
        solver=solver,
        tie_break=tie_break,
        method="central",
        problem=problem,
        trade_limit=x_bar,
        objective=float(problem.value),
        solve_seconds=solve_seconds,
        build_seconds=build_seconds,
        solver_seconds=float(getattr(problem.solver_stats, "solve_time", None) or np.nan),
        first_stage=handles.first_stage,
        day_ahead=handles.day_ahead(),
    )


def assemble_operation(
    case: Case,
    arrays: dict,
    price: np.ndarray | None,
    prices: Prices,
    *,
    solver: str,
    regularization: float | None = None,
    tie_break: bool = True,
    method: str = "central",
    problem: cp.Problem | None = None,
    objective: float | None = None,
    solve_seconds: float = np.nan,
    build_seconds: float = np.nan,
    solver_seconds: float = np.nan,
    wall_seconds: float = np.nan,
    convergence=None,
    trade_limit: np.ndarray | None = None,
    price_tolerance: float = PRICE_TOLERANCE,
    limit_tolerance: float = LIMIT_TOLERANCE,
    first_stage: FirstStage | None = None,
    day_ahead: tuple[np.ndarray, np.ndarray] | None = None,
) -> Operation:
    """One :class:`Operation` from solved (N, S, T) arrays: the tie-break, then the costs of Eqs. 1-5.

    Every method (central, decomposed, coordinated) ends here, so they share one contract.

    Parameters
    ----------
    case : Case
        The case the arrays were solved on.
    arrays : dict of numpy.ndarray
        ``d, g, c, e, E`` and the solver's own ``Pl, Ps`` (and ``x`` for the market), (N, S, T) kW (E in kWh).
    price : numpy.ndarray or None
        (S, T) clearing price, $/kWh, un-weighted; None in M1.
    prices : Prices
        The prices (:class:`~desmarket.formulation.Prices`) the arrays were solved with.
    solver : str
        The solver's name, recorded in ``Operation.solver``.
    regularization : float, optional
        epsilon the arrays were solved with, $/kW^2 (default the case's); it prices ``regularization_cost``.
    tie_break : bool, default True
        Recompute trades and flows by pro-rata matching (:func:`pro_rata_flows`).
    method, problem, objective, solve_seconds, build_seconds, solver_seconds, wall_seconds, convergence
        Recorded as given (see :class:`Operation`); ``objective`` ($ per day) is recomputed when None.
    trade_limit : numpy.ndarray, optional
        x_bar per home, kW (default grid_limit_kw).
    price_tolerance, limit_tolerance : float
        When a price counts as pinned ($/kWh) and a flow as binding (kW), see :func:`price_states`.
    first_stage : FirstStage, optional
        The two-stage clearing's prices (None: one stage).
    day_ahead : tuple of numpy.ndarray, optional
        Its solved or fixed day-ahead purchase and sale (b, a), (T,) kW each; required with ``first_stage``. The
        tie-break then matches as much as the optimum allows and the revenue counts the day-ahead and imbalance
        costs (:func:`with_day_ahead`).

    Returns
    -------
    Operation
        The result, with ``fingerprint`` = :func:`case_fingerprint` of ``case`` and ``prices``.
    """
    is_market = price is not None
    regularization = case.market.regularization if regularization is None else float(regularization)
    over = 0.0
    x_bar = trade_limits(case, trade_limit)
    net = arrays["d"] + arrays["c"] - arrays["e"] - arrays["g"]
    binds = _binding(case, arrays, x_bar, limit_tolerance) if price is not None else None
    if first_stage is not None and day_ahead is None:
        raise ValueError("assemble_operation: a two-stage result needs its day_ahead position (buy_kw, sell_kw)")
    if tie_break:
        matched = None
        if binds is not None:
            matched = (
                _optimal_match(net, arrays, prices, binds)
                if first_stage is None or day_ahead is None
                else _two_stage_match(net, arrays, binds, day_ahead, first_stage)
            )
        x, Pl, Ps = pro_rata_flows(net, match=is_market, matched=matched)
        over = _check_limits(case, x, Pl, Ps, x_bar)
    else:
        x = arrays["x"] if is_market else np.zeros_like(arrays["d"])
        Pl, Ps = arrays["Pl"], arrays["Ps"]
    d = arrays["d"]
    pi = case.probability
    a, b = case.column("utility_a"), case.column("utility_b")
    if objective is None:
        objective = operation_objective(pi, arrays, prices, regularization, a, b, is_market)
        if first_stage is not None and day_ahead is not None and is_market:  # the two-stage problem's objective
            objective += _two_stage_objective_change(pi, arrays, prices, day_ahead, first_stage)
    q = prices.net_metering
    expect = lambda v: np.einsum("s,nst->n", pi, v)
    retail_bill = expect(Pl * prices.retail)
    credit = expect(Ps * q)
    utility = expect(a[:, None, None] * d**2 + b[:, None, None] * d)
    Pl_tot, Ps_tot = Pl.sum(axis=0), Ps.sum(axis=0)  # (S, T), Eqs. 2-3
    # Eq. 1; einsum, not BLAS (pi @ ...): BLAS kernels differ by CPU, and so would the last digits of R_A
    revenue = np.einsum("s,st->", pi, (prices.retail - prices.buy) * Pl_tot + (prices.sell - q) * Ps_tot)
    spread = regularization * float(expect(arrays["c"] ** 2 + arrays["e"] ** 2).sum())
    balanced = congested = None
    if price is not None and binds is not None:  # two stages: the real-time prices k^up LMP, k^dn LMP are the pins
        pins = prices if first_stage is None else prices._replace(buy=first_stage.up, sell=first_stage.down)
        balanced, congested = _price_states(case, net, price, pins, binds, price_tolerance)
    op = Operation(
        mode="market" if is_market else "independent",
        home_ids=case.home_ids,
        probability=pi.copy(),
        load=d,
        pv_used=arrays["g"],
        charge=arrays["c"],
        discharge=arrays["e"],
        energy=arrays["E"],
        net_load=Pl,
        net_surplus=Ps,
        trade=x,
        price=price,
        balanced=balanced,
        retail_bill=retail_bill,
        net_metering_credit=credit,
        utility=utility,
        home_cost=retail_bill - credit - utility,
        aggregator_revenue=float(revenue),
        regularization_cost=spread,
        over_limit_kw=over,
        objective=float(objective),
        solver=solver,
        solve_seconds=solve_seconds,
        build_seconds=build_seconds,
        solver_seconds=solver_seconds,
        problem=problem,
        method=method,
        wall_seconds=wall_seconds,
        convergence=convergence,
        congested=congested,
        fingerprint=case_fingerprint(case, prices, regularization),
    )
    if first_stage is None or day_ahead is None:
        return op
    op = with_day_ahead(case, op, *day_ahead, first_stage, prices)
    if is_market and not first_stage.fixed:  # the position's tie-break, like epsilon out of every reported cost
        spread = first_stage.position_weight * float(np.sum(np.square(day_ahead)))
        op = dataclasses.replace(op, regularization_cost=op.regularization_cost + spread)
    return op


def _two_stage_objective_change(pi, arrays: dict, prices: Prices, day_ahead, first_stage: FirstStage) -> float:
    """What turns :func:`~desmarket.formulation.operation_objective` of a clearing (Eq. 16) into the objective of
    the two-stage clearing (:func:`~desmarket.formulation.formulate`): its wholesale part at the position instead
    of Eq. 16's, plus the position's tie-break when the position was decided."""
    b, a = (np.maximum(np.asarray(v, dtype=float).reshape(-1), 0.0) for v in day_ahead)
    imports, exports = arrays["Pl"].sum(axis=0), arrays["Ps"].sum(axis=0)
    one_stage = np.einsum("s,st->", pi, prices.buy * imports - prices.sell * exports)
    change = two_stage_wholesale(pi, imports, exports, b, a, prices, first_stage) - one_stage
    if not first_stage.fixed:
        change += first_stage.position_weight * float(np.sum(b**2) + np.sum(a**2))
    return float(change)


def with_day_ahead(
    case: Case, op: Operation, buy_kw, sell_kw, first_stage: FirstStage, prices: Prices | None = None
) -> Operation:
    """``op`` settled in two stages: the day-ahead purchase b and sale a, (T,) kW, and the real-time imbalances of
    its community flows against them (:func:`~desmarket.formulation.imbalances`).

    R_A = sum_s pi_s sum_t [p Pl_tot - q Ps_tot] - [lambda^b . b - lambda^s . a] - sum_s pi_s sum_t [k^up LMP u -
    k^dn LMP v] (Eq. 1 with the wholesale part of the two-stage clearing); the homes' costs do not change. For M1
    this is the aggregator's account of the issue's M1: the homes as today, the aggregator's position its own.
    """
    prices = Prices.of_case(case) if prices is None else prices
    b, a = (np.maximum(np.asarray(v, dtype=float).reshape(-1), 0.0) for v in (buy_kw, sell_kw))
    imports, exports = op.net_load.sum(axis=0), op.net_surplus.sum(axis=0)
    pi = op.probability
    retail = np.einsum("s,st->", pi, prices.retail * imports - prices.net_metering * exports)
    wholesale = two_stage_wholesale(pi, imports, exports, b, a, prices, first_stage)
    short, excess = imbalances(imports, exports, b, a)
    return dataclasses.replace(
        op,
        aggregator_revenue=float(retail - wholesale),
        stages=2,
        day_ahead=pd.DataFrame({"buy_kw": b, "sell_kw": a}, index=pd.RangeIndex(len(b), name="hour")),
        imbalance_buy=short,
        imbalance_sell=excess,
    )


def m1_day_ahead(case: Case, op: Operation, first_stage: FirstStage) -> tuple[np.ndarray, np.ndarray]:
    """The aggregator's best day-ahead purchase and sale for the M1 community flows, (T,) kW each: the two-stage
    wholesale problem without home variables, solved in closed form per hour (the newsvendor quantile,
    :func:`~desmarket.formulation.newsvendor_position`). A fixed position in ``first_stage`` is returned as given."""
    if first_stage.buy_kw is not None and first_stage.sell_kw is not None:  # a fixed position
        return first_stage.buy_kw, first_stage.sell_kw
    pi, up, down = op.probability, first_stage.up, first_stage.down
    buy = newsvendor_position(op.net_load.sum(axis=0), pi, case.buy_price, up, down, "buy")
    sell = newsvendor_position(op.net_surplus.sum(axis=0), pi, case.sell_price, up, down, "sell")
    return buy, sell


def _two_stage_match(net, arrays: dict, binds, day_ahead, stage: FirstStage) -> np.ndarray:
    """(S, T) energy matched inside the community in the two-stage clearing: the most that is still optimal.

    With a day-ahead position, netting a kWh lowers the import and the export by one each, which saves the
    import's marginal real-time price and loses the export's: often a gain, sometimes neutral (both at k^dn LMP)
    and, against a held sale, a loss. The cost is convex and piecewise linear in the matched energy m, with kinks
    at m = demand - b and m = supply - a; the largest minimiser among those kinks and the ends is booked
    [choice: full netting where neutral, the natural accounting of MODEL.md]. Where a limit binds, the solver's
    own import total fixes m (as in one stage).
    """
    b, a = (np.asarray(v, dtype=float)[None, :] for v in day_ahead)
    clean = np.where(np.abs(net) < NET_TOLERANCE, 0.0, net)
    demand, supply = np.maximum(clean, 0).sum(axis=0), np.maximum(-clean, 0).sum(axis=0)
    most = np.minimum(demand, supply)
    candidates = np.clip(np.stack([np.zeros_like(most), most, demand - b, supply - a]), 0.0, most)
    short, excess = imbalances(demand - candidates, supply - candidates, b, a)
    cost = stage.up * short - stage.down * excess
    best = cost.min(axis=0)
    scale = np.abs(stage.up) + np.abs(stage.down) + 1e-12
    optimal = cost <= best + 1e-9 * scale * (1.0 + most)
    matched = np.where(optimal, candidates, -np.inf).max(axis=0)
    own = np.maximum(demand - arrays["Pl"].sum(axis=0), 0.0)
    return np.where(binds, own, matched)


def price_states(
    case: Case,
    arrays: dict,
    price: np.ndarray,
    prices: Prices,
    trade_limit: np.ndarray | None = None,
    price_tolerance: float = PRICE_TOLERANCE,
    limit_tolerance: float = LIMIT_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """(balanced, congested), each (S, T): what the clearing price of each scenario and hour means (Eq. 18).

    pinned:    the price equals k^b LMP (the community imports) or k^s LMP (it exports), within price_tolerance.
    congested: a home's grid flow or trade is at its limit (Eqs. 7, 19, within limit_tolerance, on the solver's
               own flows) and the price is not pinned: it prices the scarcity and may leave the band.
    balanced:  not congested, and the community's net is zero (within NET_TOLERANCE per home) or the price is
               strictly inside the band: any price in [k^s LMP, k^b LMP] clears, the price is not unique.
    Wherever neither holds, the price is pinned and lies in the band.
    """
    net = arrays["d"] + arrays["c"] - arrays["e"] - arrays["g"]
    binds = _binding(case, arrays, trade_limits(case, trade_limit), limit_tolerance)
    return _price_states(case, net, price, prices, binds, price_tolerance)


def _price_states(
    case: Case, net: np.ndarray, price: np.ndarray, prices: Prices, binds: np.ndarray, price_tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`price_states` from the net consumption (N, S, T) and where a limit binds (S, T)."""
    pinned = (np.abs(price - prices.buy) <= price_tolerance) | (np.abs(price - prices.sell) <= price_tolerance)
    quiet = (np.maximum(net, 0).sum(axis=0) < NET_TOLERANCE * case.n_homes) & (
        np.maximum(-net, 0).sum(axis=0) < NET_TOLERANCE * case.n_homes
    )
    congested = binds & ~pinned
    return ~congested & (quiet | ~pinned), congested


def _binding(case: Case, arrays: dict, x_bar: np.ndarray, tol: float) -> np.ndarray:
    """(S, T) True where a home's grid flow or trade sits at its limit in the solver's own flows (Eqs. 7, 19)."""
    grid = case.column("grid_limit_kw")[:, None, None]
    return (
        (arrays["Pl"] >= grid - tol)
        | (arrays["Ps"] >= grid - tol)
        | (np.abs(arrays["x"]) >= x_bar[:, None, None] - tol)
    ).any(axis=0)


def _optimal_match(net: np.ndarray, arrays: dict, prices: Prices, binds: np.ndarray) -> np.ndarray:
    """(S, T) energy to match inside the community so that the booked totals are the optimum's.

    With k^b > k^s every kWh netted saves (k^b - k^s) LMP, so where no limit binds the optimum nets fully and
    the tie-break books full netting (inf here), whatever the solver's noise. Where a grid or trade limit binds
    (:func:`_binding`) the optimum may net less; there the solver's own import total fixes it: matched =
    demand - sum Pl. Where k^b = k^s any netting is optimal at the same cost: full netting keeps it unique.
    net: (N, S, T) net consumption; binds: (S, T) from :func:`_binding`.
    """
    demand = np.maximum(net, 0).sum(axis=0)
    follow = binds & (prices.buy > prices.sell + PRICE_TOLERANCE)
    return np.where(follow, np.maximum(demand - arrays["Pl"].sum(axis=0), 0.0), np.inf)


def _check_limits(case: Case, x, Pl, Ps, x_bar: np.ndarray) -> float:
    """Largest excess (kW) of a tie-broken flow over its limit (grid_limit_kw, or x_bar for trades); warns."""
    grid = case.column("grid_limit_kw")[:, None, None]
    worst = 0.0
    for name, flow, limit in (
        ("trade", np.abs(x), np.asarray(x_bar)[:, None, None]),
        ("net load", Pl, grid),
        ("net surplus", Ps, grid),
    ):
        over = flow - limit
        if np.any(over > LIMIT_TOLERANCE):
            i, s, t = np.unravel_index(np.argmax(over), over.shape)
            kind = "trade limit" if name == "trade" else "grid_limit_kw"
            warnings.warn(
                f"pro-rata accounting books home '{case.home_ids[i]}' a {name} of {flow[i, s, t]:.4f} kW in "
                f"scenario '{case.scenarios[s]}', hour {t}, above its {kind} "
                f"{limit[i, 0, 0]:g} ({int((over > LIMIT_TOLERANCE).sum())} such flows): the optimum routes energy "
                "through other homes there. Totals and the operation are unaffected; raise the limit to avoid it, "
                "or pass tie_break=False for the solver's own (non-unique) routing.",
                RoutingWarning,
                stacklevel=4,
            )
            worst = max(worst, float(over.max()))
    return worst


# ===================================================================================== drivers
def _run(case: Case, build, solver: str, solver_options: dict | None, tie_break: bool, **build_kw) -> Operation:
    t0 = time.perf_counter()
    problem, handles = build(case, **build_kw)
    t1 = time.perf_counter()
    solve(problem, solver, **(solver_options or {}))
    t2 = time.perf_counter()
    op = read_operation(
        case, problem, handles, solver=solver, solve_seconds=t2 - t1, build_seconds=t1 - t0, tie_break=tie_break
    )
    return dataclasses.replace(op, wall_seconds=time.perf_counter() - t0)


def central_independent(
    case: Case, *, solver: str = DEFAULT_SOLVER, solver_options: dict | None = None, tie_break: bool = True
) -> Operation:
    """M1 as one problem over all homes and scenarios (method "central", the reference)."""
    return _run(case, build_independent, solver, solver_options, tie_break)


def central_clearing(
    case: Case,
    *,
    solver: str = DEFAULT_SOLVER,
    solver_options: dict | None = None,
    tie_break: bool = True,
    trade_limit: float | np.ndarray | None = None,
    first_stage: FirstStage | None = None,
) -> Operation:
    """The clearing as one problem over all homes and scenarios (method "central", the reference); with a
    ``first_stage`` the two-stage clearing (:mod:`desmarket.twostage`)."""
    kw = (
        {"trade_limit": trade_limit}
        if first_stage is None
        else {"trade_limit": trade_limit, "first_stage": first_stage}
    )
    return _run(case, build_clearing, solver, solver_options, tie_break, **kw)
