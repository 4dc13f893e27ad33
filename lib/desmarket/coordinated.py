"""The paper's price-coordinated market process (Section 2.1.1, steps 2-3; privacy, Section 2.1.2).

The aggregator announces prices; each home's energy management controller optimises its own resources against
them and reports only its trading schedule; the aggregator updates the prices until trades balance. We solve
it as the *exchange problem* of Boyd et al., "Distributed optimization and statistical learning via the
alternating direction method of multipliers", Found. Trends Mach. Learn. 3(1), 2011, Section 7.3.2:

    minimise sum_i F_i(z_i)  subject to  sum_i x_i = 0  for every (scenario, hour)      (Eqs. 16-18)

where F_i is home i's part of the clearing objective (its wholesale-priced grid flows minus its utility, plus
the tie-break term) over its local constraints (Eqs. 6-15, 17, 19), and x_i its trade. Why ADMM and not plain
dual decomposition (price = subgradient step): F_i is piecewise linear in the grid flows, so at a pinned price
a home is indifferent between the grid and the market and its best response jumps; dual decomposition then
oscillates and needs diminishing steps, while ADMM's proximal term makes each response unique and converges
for any penalty rho > 0 (Boyd et al., Section 3.2).

One iteration k, with clearing price lambda^k (S, T) and the community's mean imbalance xbar^k = mean_i x_i^k:

* aggregator -> every home: the coordinated price  p^k = lambda^k - rho xbar^k  and the penalty rho;
* home i (:func:`home_response`, its own data only):
  x_i^{k+1} = argmin F_i(z_i) - p^k . x_i + rho/2 ||x_i - x_i^k||^2;
* home i -> aggregator: its trade schedule x_i^{k+1} (S, T) and nothing else;
* aggregator (:func:`aggregator_update`, schedules only): lambda^{k+1} = lambda^k - rho xbar^{k+1}.

(The home update is Boyd's x_i-step (rho/2)||x_i - x_i^k + xbar^k + u^k||^2 with the scaled dual
u = -lambda/rho, rewritten so that the home needs only a price and its own last schedule.) The clearing price
lambda is the multiplier of Eq. 18 with the sign of :func:`desmarket.model.clearing_price`. The process stops
when the largest trade imbalance |sum_i x_i| is at most ``tol_residual`` kW and both the largest price change
and the dual residual rho max |(x_i - xbar)^{k+1} - (x_i - xbar)^k| are at most ``tol_price`` $/kWh. The penalty
adapts by residual balancing (Boyd et al., Section 3.4.1) unless ``adaptive=False``.

The homes' final dispatch goes through :func:`desmarket.model.assemble_operation`, with the same tie-break as
the other methods, so the reported trades balance exactly.
"""

from __future__ import annotations

import itertools
import numbers
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pandas as pd

from .case import Case
from .errors import NotConvergedError
from .formulation import BATTERY, Block, Prices, case_block, formulate, operation_objective
from .model import (
    DEFAULT_SOLVER_OPTIONS,
    SOLVED,
    Operation,
    SolverError,
    assemble_operation,
    trade_limits,
)
from .pieces import (
    FALLBACK_SOLVER,
    check_n_jobs,
    run_tasks,
    solve_with_fallback,
    solver_error,
    solver_label,
    worker_count,
)

FLOAT_BYTES = 8


@dataclass(frozen=True)
class Coordination:
    """Settings of the coordinated market process (ADMM for the exchange problem).

    rho:            initial ADMM penalty, $/kWh per kW of trade change
    tol_residual:   kW, largest |sum_i x_{i,s,t}| accepted at convergence (trade balance, Eq. 18)
    tol_price:      $/kWh, largest price change and dual residual accepted at convergence
    max_iterations: iterations before :class:`NotConvergedError`
    adaptive:       residual balancing of rho (Boyd et al. 2011, Section 3.4.1): x2 or /2 when one residual
                    exceeds ``balance`` times the other

    rho, the tolerances and ``balance`` accept any finite real number > 0 (numpy scalars included, not bool),
    ``max_iterations`` any integer >= 1 (numpy integers included, not bool); they are stored as float and int.
    """

    rho: float = 0.002
    tol_residual: float = 1e-5
    tol_price: float = 1e-7
    max_iterations: int = 2000
    adaptive: bool = True
    balance: float = 10.0

    def __post_init__(self):
        for name in ("rho", "tol_residual", "tol_price", "balance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value > 0):
                raise ValueError(f"Coordination.{name} must be a finite number > 0, got {value!r}")
            object.__setattr__(self, name, float(value))  # numpy scalars stored as Python numbers
        value = self.max_iterations
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Coordination.max_iterations must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "max_iterations", int(value))

    @classmethod
    def relaxed(cls) -> Coordination:
        """Tolerances for large communities (``make bench`` uses them): 1e-3 kW of trade imbalance and 1e-5 $/kWh,
        up to 3,000 iterations. Enough for Delta C to 1e-3 relative; each home's gain then agrees with the exact
        clearing to about a cent (1e-2 $ measured at 30 and 100 homes, against 1e-3 with the defaults). The
        defaults need more than 2,000 iterations at 100 homes; these about 640."""
        return cls(tol_residual=1e-3, tol_price=1e-5, max_iterations=3000)


# ====================================================================================== home side
class HomeController:
    """One home's energy management controller: its own problem, built once; prices enter as Parameters.

    It holds only the home's own data (a :class:`~desmarket.formulation.Block` of its scenario rows), and its
    problem is the model's (:func:`~desmarket.formulation.formulate`, without the trade balance, which the
    aggregator's prices stand for) plus the process's price and proximal terms. With PIQP (the
    default) the problem is compiled by cvxpy once and then re-solved through PIQP's own ``update``: only the
    linear term (price) and the proximal weight (rho) change between iterations, which takes about half the
    time of a cvxpy re-solve and a tenth of the memory (``tests/test_engine.py`` checks both paths agree).

    A response that PIQP does not solve (it calls some feasible ones infeasible) is solved again with
    :data:`~desmarket.pieces.FALLBACK_SOLVER` through cvxpy, built on first need; ``fallbacks`` counts them.
    """

    KEYS = (*SOLVED, "x")

    def __init__(self, home: Block, solver: str, solver_options: dict | None = None, direct: bool = True):
        s, t = home.load.shape
        self.shape = (s, t)
        self.home, self.fallbacks, self._fallback = home, 0, None
        local, self.handles = formulate(home, market=True, trade_balance=False)  # F_i over Eqs. 6-15, 17, 19
        self.linear = cp.Parameter((s, t), name="price_plus_prox")  # p^k + rho x_i^k, $/kWh
        self.half_rho = cp.Parameter(nonneg=True, name="half_rho")  # rho / 2
        x = self.handles.x
        objective = local.objective.expr - cp.sum(cp.multiply(self.linear, x)) + self.half_rho * cp.sum_squares(x)
        self.problem = cp.Problem(cp.Minimize(objective), local.constraints)
        self.solver = solver
        self.solver_options = solver_options or DEFAULT_SOLVER_OPTIONS.get(str(solver).upper(), {})
        self._piqp = self._compile_piqp() if direct and str(solver).upper() == "PIQP" else None
        if self._piqp is not None:
            self.problem = None  # the compiled data is all that is needed; frees the cvxpy tensors

    def _compile_piqp(self):
        """PIQP's standard form min 1/2 z'Pz + q'z at linear = 0, half_rho = 1, and where price and rho enter."""
        import piqp

        self.linear.value, self.half_rho.value = np.zeros(self.shape), 1.0
        data = self.problem.get_problem_data("PIQP")[0]
        cols = data["param_prob"].var_id_to_col
        offsets = {k: cols[getattr(self.handles, k).id] for k in self.KEYS}
        x_cols = offsets["x"] + np.arange(self.handles.x.size)  # column-major (S, T)
        P = data["P"].tocsc().copy()
        diag = np.array(
            [P.indptr[j] + np.flatnonzero(P.indices[P.indptr[j] : P.indptr[j + 1]] == j)[0] for j in x_cols]
        )
        if not np.allclose(P.data[diag], 2.0):  # rho/2 ||x||^2 = 1/2 x' (rho I) x: 2 at half_rho = 1
            return None
        solver = piqp.SparseSolver()
        for key, value in self.solver_options.items():
            setattr(solver.settings, key, value)
        solver.setup(
            P=P,
            c=data["q"],
            A=data["A"],
            b=data["b"],
            G=data["F"],
            h_u=data["G"],
            x_l=data["lower_bounds"],
            x_u=data["upper_bounds"],
        )
        return {
            "solver": solver,
            "P": P,
            "diag": diag,
            "q": data["q"].copy(),
            "x_cols": x_cols,
            "offsets": offsets,
            "solved": piqp.PIQP_SOLVED,
        }

    def respond(self, price: np.ndarray, previous: np.ndarray, rho: float) -> dict:
        """Best response to the coordinated price: argmin F_i - p.x + rho/2 ||x - previous||^2.

        price: (S, T) $/kWh; previous: this home's last trade schedule (S, T) kW. Returns the home's dispatch
        (its own record); only ``x`` is reported to the aggregator.
        """
        linear = price + rho * previous
        if self._piqp is None:
            self.linear.value, self.half_rho.value = linear, rho / 2
            self.fallbacks += solve_with_fallback(self.problem, self.solver, self.solver_options)
            return self.handles.values(self.KEYS)
        fast = self._piqp
        q = fast["q"].copy()
        q[fast["x_cols"]] -= linear.reshape(-1, order="F")
        fast["P"].data[fast["diag"]] = rho
        fast["solver"].update(P=fast["P"], c=q)
        status = fast["solver"].solve()
        if status != fast["solved"]:
            return self._respond_by_fallback(price, previous, rho, status)
        z = np.asarray(fast["solver"].result.x)
        size = self.shape[0] * self.shape[1]
        scale = float(self.handles.parameters.battery_scale.value)  # battery variables are per unit (formulation)
        return {
            k: z[o : o + size].reshape(self.shape, order="F") * (scale if k in BATTERY else 1.0)
            for k, o in fast["offsets"].items()
        }

    def _respond_by_fallback(self, price: np.ndarray, previous: np.ndarray, rho: float, status) -> dict:
        """The same response solved by :data:`~desmarket.pieces.FALLBACK_SOLVER` (a cvxpy controller of this
        home, built once); a :class:`SolverError` only if that fails too, with its status."""
        self.fallbacks += 1
        if self._fallback is None:
            self._fallback = HomeController(self.home, FALLBACK_SOLVER, direct=False)
        try:
            return self._fallback.respond(price, previous, rho)
        except SolverError as exc:
            raise solver_error(exc, f"{exc} (PIQP before it: status '{status}')") from exc


#: When the process's prices count as pinned and its flows as binding (Operation.balanced / congested): the
#: process stops near the exact clearing, within about 1e-4 $/kWh and 1e-2 kW at the default tolerances.
PROCESS_PRICE_TOLERANCE = 1e-4
PROCESS_LIMIT_TOLERANCE = 1e-2


#: Controllers kept per worker process between iterations, keyed by (run id, home index); oldest dropped first.
_CONTROLLERS: OrderedDict = OrderedDict()
MAX_CONTROLLERS = 4096


def _controller(key, home: Block, solver: str, solver_options: dict | None) -> HomeController:
    ctrl = _CONTROLLERS.get(key)
    if ctrl is None:
        ctrl = _CONTROLLERS[key] = HomeController(home, solver, solver_options)
        while len(_CONTROLLERS) > MAX_CONTROLLERS:
            _CONTROLLERS.popitem(last=False)
    return ctrl


def home_response(
    home: Block,
    price: np.ndarray,
    previous: np.ndarray,
    rho: float,
    *,
    solver: str = "PIQP",
    solver_options: dict | None = None,
    key=None,
) -> dict:
    """The home side of one iteration: receives only the announced price, rho and its own data and schedule.

    ``key`` lets a worker re-use the home's built problem between iterations. Besides the dispatch arrays,
    ``fallbacks`` is 1 if :data:`~desmarket.pieces.FALLBACK_SOLVER` solved this response, else 0.
    """
    ctrl = (
        _controller(key, home, solver, solver_options)
        if key is not None
        else HomeController(home, solver, solver_options)
    )
    before = ctrl.fallbacks
    try:
        out = ctrl.respond(price, previous, rho)
    except SolverError as exc:
        raise solver_error(exc, f"{exc} (home controller, case rows {home.rows.min()}-{home.rows.max()})") from exc
    return {**out, "fallbacks": ctrl.fallbacks - before}


def _respond_batch(run_id: str, homes: list[tuple[int, Block]], price, previous, rho, solver, solver_options):
    """Several homes' responses in one task (each home solves its own problem; the batch only saves messages)."""
    return [
        home_response(home, price, previous[j], rho, solver=solver, solver_options=solver_options, key=(run_id, i))
        for j, (i, home) in enumerate(homes)
    ]


# ================================================================================ aggregator side
@dataclass(frozen=True)
class AggregatorState:
    """What the aggregator knows: its prices, its penalty and the schedules the homes reported."""

    price: np.ndarray  # lambda, (S, T) $/kWh
    rho: float
    trades: np.ndarray  # last reported schedules, (N, S, T) kW

    def announcement(self) -> np.ndarray:
        """The coordinated price p^k = lambda^k - rho xbar^k sent to every home, (S, T) $/kWh."""
        return self.price - self.rho * self.trades.mean(axis=0)


def aggregator_update(
    state: AggregatorState, trades: np.ndarray, settings: Coordination
) -> tuple[AggregatorState, dict]:
    """The aggregator side of one iteration: receives only the homes' trade schedules (N, S, T) kW.

    Returns the new state and the residuals: ``residual_kw`` max |sum_i x| (Eq. 18), ``price_change`` max
    |lambda^{k+1} - lambda^k| and ``dual_residual`` rho max |(x - xbar)^{k+1} - (x - xbar)^k|, both $/kWh.
    """
    trades = np.asarray(trades, dtype=float)
    mean = trades.mean(axis=0)
    price = state.price - state.rho * mean
    centred_change = (trades - mean) - (state.trades - state.trades.mean(axis=0))
    info = {
        "residual_kw": float(np.abs(trades.sum(axis=0)).max()),
        "price_change": float(np.abs(price - state.price).max()),
        "dual_residual": float(state.rho * np.abs(centred_change).max()),
        "rho": state.rho,
    }
    rho = state.rho
    if settings.adaptive:  # each residual relative to its tolerance, so that both reach it together
        primal, dual = info["residual_kw"] / settings.tol_residual, info["dual_residual"] / settings.tol_price
        if primal > settings.balance * dual:
            rho = rho * 2
        elif dual > settings.balance * primal:
            rho = rho / 2
    return AggregatorState(price=price, rho=rho, trades=trades), info


# ======================================================================================= the process
def _batches(n_homes: int, rows_per_home: int, n_jobs: int | None) -> list[np.ndarray]:
    """Homes grouped into tasks of about 2,048 rows, and at least two tasks per worker when that is possible."""
    workers = worker_count(n_jobs)
    by_size = int(np.ceil(n_homes * rows_per_home / 2048))
    count = 1 if n_homes * rows_per_home <= 2048 else min(n_homes, max(by_size, 2 * workers))
    return [b for b in np.array_split(np.arange(n_homes), count) if len(b)]


def coordinate(
    case: Case,
    settings: Coordination | None = None,
    *,
    solver: str = "PIQP",
    solver_options: dict | None = None,
    tie_break: bool = True,
    trade_limit: float | np.ndarray | None = None,
    n_jobs: int | None = -1,
    callback=None,
) -> Operation:
    """Clear the market by the coordinated process (module docstring); an :class:`Operation` with convergence.

    callback: called after every iteration with the new :class:`AggregatorState` (e.g. ``history.append`` to
    follow the prices). Raises :class:`NotConvergedError`, naming the tolerance that was missed, if the
    iteration limit is reached.
    """
    settings = settings or Coordination()
    if not isinstance(settings, Coordination):
        raise TypeError(f"coordination must be a desmarket.Coordination, got {type(settings).__name__}")
    n_jobs = check_n_jobs(n_jobs)
    t0 = time.perf_counter()
    n, s, t = case.load.shape
    x_bar = trade_limits(case, trade_limit)
    homes = [case_block(case, np.arange(i * s, (i + 1) * s), x_bar) for i in range(n)]  # each home's own data
    batches = _batches(n, s, n_jobs)
    run_id = uuid.uuid4().hex
    state = AggregatorState(
        price=np.broadcast_to((case.buy_price + case.sell_price) / 2, (s, t)).copy(),
        rho=float(settings.rho),
        trades=np.zeros((n, s, t)),
    )
    prices = Prices.of_case(case)
    a, b = case.column("utility_a"), case.column("utility_b")
    log, dispatch, fallbacks = [], None, 0
    try:
        for k in itertools.count(1):
            announced = state.announcement()
            tasks = [
                (
                    run_id,
                    [(i, homes[i]) for i in batch],
                    announced,
                    state.trades[batch],
                    state.rho,
                    solver,
                    solver_options,
                )
                for batch in batches
            ]
            responses = list(itertools.chain.from_iterable(run_tasks(_respond_batch, tasks, n_jobs)))
            fallbacks += sum(r.pop("fallbacks") for r in responses)
            dispatch = {key: np.stack([r[key] for r in responses]) for key in responses[0]}
            state, info = aggregator_update(state, dispatch["x"], settings)
            if callback is not None:
                callback(state)
            info["objective"] = operation_objective(
                case.probability, dispatch, prices, case.market.regularization, a, b, market=True
            )
            log.append(
                {
                    "iteration": k,
                    **info,
                    "bytes_to_each_home": (s * t + 1) * FLOAT_BYTES,
                    "bytes_from_each_home": s * t * FLOAT_BYTES,
                }
            )
            missed = [
                f"{name} {info[key]:.3g} > {tol:g}"
                for name, key, tol in (
                    ("trade imbalance (kW)", "residual_kw", settings.tol_residual),
                    ("price change ($/kWh)", "price_change", settings.tol_price),
                    ("dual residual ($/kWh)", "dual_residual", settings.tol_price),
                )
                if info[key] > tol
            ]
            if not missed:
                break
            if k >= settings.max_iterations:
                raise NotConvergedError(
                    f"the coordinated market process did not converge in {k} iterations: {'; '.join(missed)}. "
                    "Raise Coordination(max_iterations=...), loosen tol_residual / tol_price, or try another "
                    "rho; method='decomposed' gives the exact clearing.",
                    pd.DataFrame(log).set_index("iteration"),
                )
    finally:
        for i in range(n):  # this process's cached controllers of the run (workers' caches age out)
            _CONTROLLERS.pop((run_id, i), None)
    convergence = pd.DataFrame(log).set_index("iteration")
    solver = solver_label(solver, fallbacks, n * len(log), "home responses")
    return assemble_operation(
        case,
        dispatch,
        state.price,
        prices,
        regularization=case.market.regularization,
        solver=solver,
        tie_break=tie_break,
        method="coordinated",
        wall_seconds=time.perf_counter() - t0,
        convergence=convergence,
        trade_limit=x_bar,
        price_tolerance=PROCESS_PRICE_TOLERANCE,
        limit_tolerance=PROCESS_LIMIT_TOLERANCE,
    )
