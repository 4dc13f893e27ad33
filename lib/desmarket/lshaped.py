"""The two-stage clearing by an L-shaped (Benders) decomposition over the day-ahead position (issue 20).

The two-stage clearing of :func:`desmarket.formulation.formulate` (with a decided
:class:`~desmarket.formulation.FirstStage`) is

    min_{x = (b, a) >= 0}  F(x) = lambda^b . b - lambda^s . a + w (b.b + a.a) + sum_s pi_s Q_s(x),

where Q_s(x) is the optimal second-stage cost of scenario s (the homes' operation and trades, Eqs. 6-19, and the
real-time imbalances at k^up LMP / k^dn LMP) with the day-ahead position x fixed, and w the position's tie-break
weight (``FirstStage.position_weight``). Each Q_s is convex (a convex QP in which x enters only the right-hand
side of the balance rows), and at a fixed x the scenarios separate: each is one *piece*, a problem of all N homes
in that scenario, solved by PIQP like the pieces of the one-stage decomposed clearing (:mod:`desmarket.pieces`).

A piece is formulated once with the position as a variable fixed by ``b == P_b, a == P_a`` to cvxpy Parameters
(DPP), so each iteration only sets the Parameters and re-solves: no rebuild, no recompilation. Its optimal value
is V_s(x) = lambda^b . b - lambda^s . a + Q_s(x), and minus the duals of its balance rows sum_i Pl = b + u - v and
sum_i Ps = a + v - u (the sensitivity of the optimal cost to their right-hand sides b, a) are a subgradient g_s of
Q_s at x. Not the duals of the fixing rows: where b_t = 0 its bound b_t >= 0 binds as well and takes an arbitrary
share of the multiplier (that gave invalid cuts and a stalled method).
One cut per scenario and iteration, theta_s >= Q_s(x^j) + g_s^j . (x - x^j): the *multi-cut* L-shaped method
(Birge & Louveaux, *Introduction to Stochastic Programming*, 2nd ed. 2011, Section 5.3).

The cut model m(x) = lambda^b . b - lambda^s . a + sum_s pi_s max_j cut_{s,j}(x) + max_j cut_{0,j}(x), the last
the cuts of the tie-break w |x|^2 (so that both master problems have linear constraints), is minimised over the
box of :func:`position_bounds` (it holds the optimum) by a small LP (cvxpy, Clarabel): its minimum is a lower
bound LB on F, and the best F(x^j) met so far an upper bound UB. Plain Kelley steps (x^{j+1} = argmin m)
oscillate in 48 dimensions, so the next point is the *level* step [choice] of the level bundle method (Lemarechal,
Nemirovskii & Nesterov, "New variants of bundle methods", Math. Programming 69, 1995), in its two-stage,
multi-cut form, the level decomposition of Fabian & Szoke ("Solving two-stage stochastic programming problems
with level decomposition", Computational Management Science 4, 2007): the projection of the best point x^* onto
the level set {x in box : m(x) <= LB + lambda (UB - LB)}, lambda = :attr:`LShaped.level`. The method stops when the
relative gap (UB - LB) / max(|UB|, 1 $) is at most :attr:`LShaped.gap` (default 1e-8) and returns the pieces'
solutions at x^*; past :attr:`LShaped.max_iterations` evaluations it raises
:class:`~desmarket.errors.NotConvergedError` with the iterations run, never a result.

The first point [choice] is the newsvendor quantile (:func:`~desmarket.formulation.newsvendor_position`) of the
community flows of the pieces solved at position zero, so the first two iterations are the start: the flows at
x = 0 are those of homes facing the real-time prices, a position near the optimal one's.

Parallel [choice]: the pieces live in ``workers`` processes for the whole solve (:class:`~desmarket.pieces.OwnedPool`:
piece k in worker k mod workers), so a built problem is re-solved where it was built; with one worker
(``n_jobs=1``, or one piece) they live in this process. A piece of N rows holds about 0.16 MB per row
once compiled (measured: 155 MB per 1,000-home piece), so beyond :attr:`LShaped.reuse_rows` rows in all the pieces
are built again at every iteration instead of kept (10,000 homes x 10 scenarios would need about 16 GB).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import clarabel
import cvxpy as cp
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linprog

from .case import Case
from .errors import NotConvergedError
from .formulation import Block, FirstStage, case_block, formulate, newsvendor_position
from .model import SOLVED, SolverError
from .pieces import OwnedPool, gather, solve_built, worker_count

logger = logging.getLogger(__name__)

#: Columns of ``Operation.convergence`` for an L-shaped solve: one row per iteration (evaluation of the pieces).
#: Decimals (of a kW) to which a position is rounded before the pieces are solved at it [choice]: the master's
#: Clarabel solution carries noise of about 1e-9 kW, and a purchase of 4e-9 kW where the optimum has none made a
#: piece that PIQP could not solve and Clarabel only to 'optimal_inaccurate' (30 homes x 10 scenarios, seed 0).
#: The cuts are exact at the rounded point, so rounding moves no bound; the position is then a multiple of 1 W.
POSITION_DECIMALS = 6
CONVERGENCE_COLUMNS = ("lower_usd", "upper_usd", "gap", "improved", "seconds")


@dataclasses.dataclass(frozen=True)
class LShaped:
    """Tolerances of the L-shaped decomposition (:mod:`desmarket.lshaped`).

    gap: relative optimality gap (UB - LB) / max(|UB|, 1 $) at which it stops, > 0.
    max_iterations: evaluations of all the pieces before :class:`~desmarket.errors.NotConvergedError`, >= 2.
    level: lambda of the level step, in (0, 1): the next point is the projection of the best one onto the set where
        the cut model is at most LB + lambda (UB - LB).
    reuse_rows: keep the built pieces between iterations when the case has at most this many (home, scenario)
        rows (about 0.16 MB per row); above it, build them again at every iteration.
    """

    gap: float = 1e-8
    max_iterations: int = 300
    level: float = 0.3
    reuse_rows: int = 20_000

    def __post_init__(self):
        if not (np.isfinite(self.gap) and self.gap > 0):
            raise ValueError(f"LShaped.gap must be a finite number > 0, got {self.gap!r}")
        if isinstance(self.max_iterations, bool) or not isinstance(self.max_iterations, int) or self.max_iterations < 2:
            raise ValueError(f"LShaped.max_iterations must be an integer >= 2, got {self.max_iterations!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"LShaped.level must lie strictly between 0 and 1, got {self.level!r}")
        if isinstance(self.reuse_rows, bool) or not isinstance(self.reuse_rows, int) or self.reuse_rows < 0:
            raise ValueError(f"LShaped.reuse_rows must be an integer >= 0, got {self.reuse_rows!r}")


# ======================================================================================== the pieces
class _Piece:
    """One scenario's second stage at a day-ahead position given by Parameters: built once (or per evaluation
    when ``reuse`` is False), evaluated at many positions. Keeps the solution of its last evaluation and of the
    evaluation the master last called the best."""

    def __init__(self, block: Block, stage: FirstStage, solver: str, options: dict | None, reuse: bool):
        self.block, self.solver, self.options, self.reuse = block, solver, options, reuse
        self.stage = stage._replace(buy_kw=None, sell_kw=None, position_weight=0.0)  # the tie-break is the master's
        self.built: tuple | None = None
        self.last: dict | None = None
        self.best: dict | None = None

    def _build(self):
        problem, handles = formulate(self.block, True, first_stage=self.stage)
        hours = self.block.load.shape[1]
        buy, sell = cp.Parameter((1, hours), name="fixed_buy"), cp.Parameter((1, hours), name="fixed_sell")
        balances = [_balance(problem, v) for v in (handles.buy_kw, handles.sell_kw)]
        problem = cp.Problem(problem.objective, [*problem.constraints, handles.buy_kw == buy, handles.sell_kw == sell])
        return problem, handles, buy, sell, balances

    def evaluate(self, position: np.ndarray, promote: bool) -> dict:
        """Solve at ``position`` (2T,) kW (b then a); ``promote``: the previous evaluation became the best."""
        if promote:
            self.best = self.last
        t0 = time.perf_counter()
        built = self.built or self._build()
        if self.reuse:
            self.built = built
        problem, handles, buy, sell, balances = built
        hours = self.block.load.shape[1]
        buy.value, sell.value = position[:hours].reshape(1, -1), position[hours:].reshape(1, -1)
        t1 = time.perf_counter()
        out = solve_built(problem, handles, self.block.rows, True, self.solver, self.options)
        prices = self.block.prices
        day_ahead = float(prices.buy @ position[:hours] - prices.sell @ position[hours:])
        gradient = np.concatenate([-np.asarray(c.dual_value, dtype=float).reshape(-1) for c in balances])
        self.last = {k: out[k] for k in (*SOLVED, "x", "price")}
        flows = (out["Pl"].sum(axis=0), out["Ps"].sum(axis=0))
        return {
            "value": float(problem.value) - day_ahead,  # Q_s(x), $ (weight 1)
            "gradient": gradient,  # dQ_s/dx, $/kW per hour
            "flows": flows,  # the community's sum Pl, sum Ps, (T,) kW each
            "fallbacks": out["fallbacks"],
            "build_seconds": t1 - t0,
            "solve_seconds": out["solve_seconds"],
        }

    def solution(self, best: bool) -> dict:
        """The arrays of the best evaluation (``best``) or of the last."""
        solution = self.best if best else self.last
        if solution is None:
            raise RuntimeError("the piece has no such evaluation")
        return solution


def _balance(problem: cp.Problem, position: cp.Variable) -> cp.Constraint:
    """The one constraint of a formulated two-stage piece that holds the position variable: the balance of the
    community's import against b (or its export against a), sum_i Pl = b + u - v (:func:`formulate`)."""
    found = [c for c in problem.constraints if any(v.id == position.id for v in c.variables())]
    if len(found) != 1 or found[0].shape != position.shape:
        raise RuntimeError(f"expected one balance row block of shape {position.shape} holding {position.name()}")
    return found[0]


# ======================================================================================== the master
class _Cuts:
    """The cuts theta_s >= value + gradient . (x - x^j), stored as theta_s >= constant + gradient . x."""

    def __init__(self, scenarios: int, size: int):
        self.owner = np.zeros(0, dtype=int)
        self.gradient = np.zeros((0, size))
        self.constant = np.zeros(0)
        self.scenarios = scenarios

    def add(self, position: np.ndarray, values: np.ndarray, gradients: np.ndarray) -> None:
        """One cut per owner (row of ``gradients``): values (K,) $ and gradients (K, 2T) $/kW at ``position``."""
        g, v = np.asarray(gradients, dtype=float), np.asarray(values, dtype=float)
        self.owner = np.concatenate([self.owner, np.arange(len(v))])
        self.gradient = np.vstack([self.gradient, g])
        self.constant = np.concatenate([self.constant, v - g @ position])


def _master(
    cuts: _Cuts,
    linear: np.ndarray,
    probability: np.ndarray,
    upper: np.ndarray,
    center: np.ndarray | None = None,
    level: float | None = None,
) -> tuple[np.ndarray, float] | None:
    """The cut model's minimum over the box (``center`` None): (argmin, min), an LP in z = (x, theta) solved by
    HiGHS (:func:`scipy.optimize.linprog`, a simplex vertex: the lower bound must be exact); or the projection of
    ``center`` onto {m(x) <= level}, a QP solved by Clarabel at its default tolerances (any point is a valid next
    point): its point and m there, None if Clarabel does not solve it. The last cut owner, ``cuts.scenarios - 1``,
    is the position's tie-break w |x|^2 (weight 1), the others the scenarios (weights pi_s). Both are written out
    as matrices, not cvxpy problems: rebuilding a cvxpy master at every iteration cost more than the pieces of a
    small case."""
    size, owners = len(linear), cuts.scenarios
    weights = np.append(probability, 1.0)
    rows = len(cuts.constant)
    # cuts: gradient . x - theta_owner <= -constant
    cut_rows = sp.hstack(
        [
            sp.csr_matrix(cuts.gradient),
            -sp.csr_matrix((np.ones(rows), (np.arange(rows), cuts.owner)), shape=(rows, owners)),
        ]
    )
    objective = np.concatenate([linear, weights])
    if center is None:
        bounds = [(0.0, u) for u in upper] + [(None, None)] * owners
        result = linprog(objective, A_ub=cut_rows.tocsc(), b_ub=-cuts.constant, bounds=bounds, method="highs")
        if result.status != 0:
            raise SolverError(f"the L-shaped lower bound (HiGHS) ended with status {result.status}: {result.message}")
        point = np.clip(result.x[:size], 0.0, upper)
        return point, float(result.fun)
    identity = sp.eye(size, format="csc")
    box = sp.hstack([identity, sp.csc_matrix((size, owners))])
    A = sp.vstack([cut_rows, sp.csr_matrix(objective[None, :]), box, -box]).tocsc()
    b = np.concatenate([-cuts.constant, [level], upper, np.zeros(size)])
    P = sp.block_diag([2.0 * identity, sp.csc_matrix((owners, owners))], format="csc")
    q = np.concatenate([-2.0 * center, np.zeros(owners)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solution = clarabel.DefaultSolver(P, q, A, b, [clarabel.NonnegativeConeT(A.shape[0])], settings).solve()
    if str(solution.status) != "Solved":
        return None
    point = np.clip(np.asarray(solution.x[:size], dtype=float), 0.0, upper)
    return point, _model_value(cuts, linear, weights, point)


def _model_value(cuts: _Cuts, linear, weights, point) -> float:
    theta = np.full(cuts.scenarios, -np.inf)
    np.maximum.at(theta, cuts.owner, cuts.constant + cuts.gradient @ point)
    return float(linear @ point + weights @ theta)


# ======================================================================================== the method
def position_bounds(case: Case, trade_limit: np.ndarray) -> np.ndarray:
    """(2T,) kW: upper bounds of the optimal day-ahead purchase b_t and sale a_t (the master's box).

    In scenario s the community imports at most I_{s,t} = sum_i min(grid_i, Dmax_{i,s,t} + battery_kw_i) and
    exports at most X_{s,t} = sum_i min(grid_i, PV_{i,s,t} + battery_kw_i) (Eqs. 7-12). A purchase above
    max_s I_{s,t} leaves an excess in every scenario, sold at k^dn LMP < lambda^b: lowering it to max_s I_{s,t}
    lowers the cost, so the optimum lies in the box; so for a sale (bought back at k^up LMP > lambda^s).
    """
    grid = case.column("grid_limit_kw")[:, None, None]
    battery = case.column("battery_kw")[:, None, None]
    maximum = case.load * case.column("load_max_factor")[:, None, None]
    imports = np.minimum(grid, maximum + battery).sum(axis=0).max(axis=0)
    exports = np.minimum(grid, case.pv + battery).sum(axis=0).max(axis=0)
    return np.concatenate([imports, exports]).astype(float)


@dataclasses.dataclass
class Solved:
    """What :func:`solve_two_stage` returns: the pieces' solutions at the best position and how it got there."""

    arrays: dict  # (N, S, T) by SOLVED name and "x", kW
    price: np.ndarray  # (S, T) clearing price, $/kWh
    buy_kw: np.ndarray  # (T,) day-ahead purchase b
    sell_kw: np.ndarray  # (T,) day-ahead sale a
    objective: float  # F at the best position, $ (tie-breaks included)
    convergence: pd.DataFrame  # one row per iteration, CONVERGENCE_COLUMNS
    fallbacks: int  # piece solves that Clarabel did instead of the solver
    solves: int  # piece solves in all
    build_seconds: float
    solve_seconds: float


def solve_two_stage(
    case: Case,
    stage: FirstStage,
    trade_limit: np.ndarray,
    solver: str,
    solver_options: dict | None,
    n_jobs: int | None,
    options: LShaped | None = None,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> Solved:
    """The two-stage clearing with a decided day-ahead position by the L-shaped method (module docstring).

    stage: the case's :class:`~desmarket.formulation.FirstStage` (not fixed); trade_limit: x_bar per home (N,) kW;
    solver, solver_options: the pieces' solver (PIQP) and its options; n_jobs: worker processes (joblib's
    convention, :func:`~desmarket.pieces.worker_count`); options: :class:`LShaped` (default tolerances);
    start: a first position (buy_kw, sell_kw), (T,) kW each, instead of the newsvendor start.
    Raises :class:`~desmarket.errors.NotConvergedError` (with the iterations run) if the gap is not closed.
    """
    options = options or LShaped()
    n, s, hours = case.load.shape
    pi = np.asarray(case.probability, dtype=float)
    reuse = n * s <= options.reuse_rows
    row_sets = [np.arange(n) * s + k for k in range(s)]  # one piece per scenario, home-major
    pieces = [_Piece(case_block(case, rows, trade_limit), stage, solver, solver_options, reuse) for rows in row_sets]
    linear = np.concatenate([case.buy_price, -case.sell_price])
    weight = float(stage.position_weight)
    upper = position_bounds(case, trade_limit)
    cuts = _Cuts(s + 1, 2 * hours)  # the scenarios' Q_s and the position's tie-break w |x|^2
    rows, solves, fallbacks, build_s, solve_s = [], 0, 0, 0.0, 0.0
    best_x, best_f, best_is_last = None, np.inf, False
    pool = OwnedPool(pieces, worker_count(n_jobs))
    t0 = time.perf_counter()
    try:
        point = np.zeros(2 * hours) if start is None else np.concatenate([np.asarray(v, float) for v in start])
        point = np.clip(point, 0.0, upper)
        for iteration in range(1, options.max_iterations + 1):
            point = np.clip(np.round(point, POSITION_DECIMALS), 0.0, upper)
            results = pool.call("evaluate", (point, best_is_last))
            solves += len(results)
            fallbacks += sum(r["fallbacks"] for r in results)
            build_s += sum(r["build_seconds"] for r in results)
            solve_s += sum(r["solve_seconds"] for r in results)
            values = np.array([r["value"] for r in results] + [weight * point @ point])
            cuts.add(point, values, np.stack([r["gradient"] for r in results] + [2 * weight * point]))
            value = float(linear @ point + np.append(pi, 1.0) @ values)
            improved = value < best_f
            if improved:
                best_x, best_f = point, value
            best_is_last = improved
            bound = _master(cuts, linear, pi, upper)
            if bound is None:
                raise SolverError("the L-shaped lower bound has no solution")
            lower_point, lower = bound
            gap = (best_f - lower) / max(abs(best_f), 1.0)
            rows.append((lower, best_f, gap, improved, time.perf_counter() - t0))
            logger.info(
                "L-shaped iteration %d: bounds %.10g .. %.10g $, gap %.3g, %.1f s",
                iteration,
                lower,
                best_f,
                gap,
                rows[-1][-1],
            )
            if gap <= options.gap:
                break
            if iteration == 1 and start is None:  # the newsvendor quantile of the flows at position zero
                imports = np.stack([r["flows"][0] for r in results])
                exports = np.stack([r["flows"][1] for r in results])
                point = np.concatenate(
                    [
                        newsvendor_position(imports, pi, case.buy_price, stage.up, stage.down, "buy"),
                        newsvendor_position(exports, pi, case.sell_price, stage.up, stage.down, "sell"),
                    ]
                )
                continue
            level = lower + options.level * (best_f - lower)
            step = _master(cuts, linear, pi, upper, best_x, level)
            point = lower_point if step is None else step[0]
        else:
            raise NotConvergedError(
                f"the L-shaped decomposition of the two-stage clearing did not close its relative gap to "
                f"{options.gap:g} in {options.max_iterations} iterations (gap {rows[-1][2]:.3g}, bounds "
                f"{rows[-1][0]:.10g} .. {rows[-1][1]:.10g} $). Fix: raise LShaped(max_iterations=...) or "
                "LShaped(gap=...), or solve with method='central'.",
                _table(rows),
            )
        solutions = pool.call("solution", (not best_is_last,))
    finally:
        pool.close()
    if best_x is None:
        raise SolverError("the L-shaped decomposition evaluated no position")
    arrays, price = gather(case, row_sets, solutions, market=True)  # the scenario pieces put back in place
    if price is None:  # gather gives a price for a market's pieces
        raise AssertionError("the L-shaped pieces are a market clearing: they have a clearing price")
    return Solved(
        arrays=arrays,
        price=price,
        buy_kw=best_x[:hours].copy(),
        sell_kw=best_x[hours:].copy(),
        objective=best_f,
        convergence=_table(rows),
        fallbacks=fallbacks,
        solves=solves,
        build_seconds=build_s,
        solve_seconds=solve_s,
    )


def _table(rows) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(CONVERGENCE_COLUMNS))
    table.index = pd.RangeIndex(1, len(table) + 1, name="iteration")
    return table
