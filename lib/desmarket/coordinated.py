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

One iteration (round) k, with clearing price lambda^k (S, T), home i's target schedule z_i^k (S, T) and the
over-relaxation factor a (``Coordination.relaxation``; a = 1 is plain ADMM):

* aggregator -> every home: lambda^k, the penalty rho and the community's mean imbalance a xbar^k;
* home i (:func:`home_response`, its own data only):
  x_i^{k+1} = argmin F_i(z_i) - lambda^k . x_i + rho/2 ||x_i - z_i^k||^2;
* home i -> aggregator: its trade schedule x_i^{k+1} (S, T) and nothing else;
* aggregator (:func:`aggregator_update`, schedules only): lambda^{k+1} = lambda^k - rho a xbar^{k+1};
  home i (:func:`next_targets`): z_i^{k+1} = a (x_i^{k+1} - xbar^{k+1}) + (1 - a) z_i^k.

(With a = 1 this is Boyd's x_i-step (rho/2)||x_i - x_i^k + xbar^k + u^k||^2 with the scaled dual u = -lambda/rho:
the home's linear term lambda + rho z_i is the coordinated price lambda - rho xbar plus rho times its own last
schedule.) The clearing price lambda is the multiplier of Eq. 18 with the sign of
:func:`desmarket.model.clearing_price`. Acceleration (issue 21; ``make bench`` measures each technique): over-
relaxation (a = 1.6, Boyd et al. Section 3.4.3, as OSQP), a warm start from the price forecast of M1
(:func:`forecast_price`), and Anderson acceleration of (lambda, z) (:class:`Anderson`), from the penalty rho =
0.001 $/kWh per kW balanced per (scenario, hour) (:class:`HourlyBalance`); residual balancing of rho (Boyd et
al. Section 3.4.1, ``adaptive=True``) is the default before issue 21. Options measured in ``make bench`` and not
the default: the spectral penalty of Xu, Figueiredo & Goldstein (AISTATS 2017) per (scenario, hour) or per home
and hour (:class:`SpectralPenalty`, ``spectral="hour"`` / ``"home"``; a penalty per home is ADMM in the metric
of the penalties, the imbalance shared by :func:`imbalance_shares`). Why the last rounds are slow: a battery's
schedule between hours of nearly equal prices is decided by the tie-break term epsilon (c^2 + e^2) alone, so a
home's schedule moves about 1 / (2 epsilon) = 5e4 kW per $/kWh of price error, and the alphas and gains of the
settlement need prices to about 1e-8 $/kWh in those hours (issue 21's diagnosis: the prices are within 1e-6
$/kWh after about 40 rounds at 10 homes, the gains within 1e-3 $ only later). A smaller penalty lets the homes'
schedules follow sooner (``make bench``, 10 scenarios: 59 rounds at 10 homes, 86 at 100 and 74 at 1,000; at rho
= 0.004, 98 and 199 rounds at 10 and 100 homes). That holds on seed 0; over seeds 0-9 at 10 homes the rounds
range from 56 to 392, and on the slow seeds most rounds are a price drift instead: in an hour where every home
trades its whole net locally (a kink of its cost) no answer moves with the price, so the imbalance and the step
rho a xbar stay the same round after round and the price crosses the band between k^s LMP and k^b LMP at about
1e-5 $/kWh per round (docs/usage/speed.md; ``scripts/bench.py --spread``). Residual balancing of the penalty per
(scenario, hour) (:class:`HourlyBalance`, ``adaptive_hours``, the default since issue 21's third round)
lengthens those steps: over the same ten seeds at most 112 rounds instead of 392 (median 97.5 instead of 90), at
100 homes (seeds 0-3) at most 88 instead of 106 (median 68.5 instead of 92), 62 instead of 74 at 1,000 homes and
56 instead of 80 on the paper's case; ``adaptive_hours=False`` is the fixed penalty. The process stops when for
``patience`` rounds the largest trade imbalance |sum_i x_i| is at most max(``tol_residual``, N
``tol_imbalance``) kW (Boyd et al. Section 3.3.1: the absolute tolerance grows with the number of homes), the
largest price change and the dual residual rho max |(x_i - xbar)^{k+1} - (x_i - xbar)^k| at most ``tol_price``
$/kWh, and the settlement's quantities at the round's schedules (:func:`round_economics`: Delta C, every
alpha_i, every home's gain and cost) have stopped moving by more than their tolerances. Lost answers
(``Coordination.dropout``) are replaced by the home's last schedule; a home silent for ``max_unanswered`` rounds
raises :class:`~desmarket.errors.UnansweredError`. In a simulation every home's response to one price can be
solved together (``batched=True``, :class:`Fleet`, :class:`BatchController`), each home still seeing only its
own data and the price.

The homes' final dispatch goes through :func:`desmarket.model.assemble_operation`, with the same tie-break as
the other methods, so the reported trades balance exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .case import Case
from .errors import DesmarketWarning, NotConvergedError, UnansweredError
from .formulation import BATTERY, Block, Handles, Prices, case_block, formulate, operation_objective
from .model import (
    DEFAULT_SOLVER_OPTIONS,
    NET_TOLERANCE,
    SOLVED,
    Operation,
    SolverError,
    assemble_operation,
    trade_limits,
)
from .paper import PAPER_PROFIT_RATE
from .pieces import (
    FALLBACK_SOLVER,
    OwnedPool,
    check_n_jobs,
    gather,
    independent_pieces,
    run_tasks,
    solve_block,
    solve_with_fallback,
    solver_error,
    solver_label,
    worker_count,
)
from .settlement import trade_values

FLOAT_BYTES = 8
#: A penalty rho, $/kWh per kW: one number, one per (scenario, hour) (S, T), or one per home (N, S, T).
Penalty = float | np.ndarray


@dataclass(frozen=True)
class Coordination:
    """Settings of the coordinated market process (ADMM for the exchange problem, accelerated).

    rho:            initial ADMM penalty, $/kWh per kW of trade change
    tol_residual:   kW, largest |sum_i x_{i,s,t}| accepted at convergence (trade balance, Eq. 18), at least
    tol_imbalance:  kW per home: the accepted |sum_i x_{i,s,t}| is max(tol_residual, N tol_imbalance), the
                    absolute tolerance growing with the community as in Boyd et al. 2011, Section 3.3.1 (their
                    sqrt(p) eps_abs: a mean imbalance per home); with the defaults N x 1e-4 kW
    tol_price:      $/kWh, largest price change and dual residual accepted at convergence
    max_iterations: iterations before :class:`NotConvergedError`
    adaptive:       residual balancing of rho (Boyd et al. 2011, Section 3.4.1): x2 or /2 when one residual
                    exceeds ``balance`` times the other
    anderson:       memory of Anderson acceleration (:class:`Anderson`), rounds; 0 switches it off
    relaxation:     over-relaxation factor in (0, 2) (Boyd et al. 2011, Section 3.4.3; OSQP uses 1.6); 1 is
                    plain ADMM
    warm_start:     start from the price forecast: k^b LMP where the community imported in M1, k^s LMP where it
                    exported (the midpoint where it was balanced); False starts from the midpoint everywhere
    tol_surplus:    relative change of Delta C (Eq. 20) between rounds accepted at convergence
    tol_alpha:      largest change of a contribution rate alpha_i (Eq. 22) between rounds
    tol_gain:       $, largest change of a home's M3 gain alpha_i Delta C, and of its cost C_i*, between rounds
    patience:       rounds in a row that the residuals and the economics must stay within their tolerances
                    (with ``economic`` False the residual stop is immediate, as before issue 21)
    economic:       also stop on economic accuracy (False: residuals only, as the process did before)
    profit_rate:    the aggregator's profit rate of the alpha_i the stop watches (Eq. 22; the paper's 0.2)
    batched:        every home's response to one announced price solved together, as one block-diagonal
                    problem per group of homes (:class:`HomeController` over their rows); False: one problem
                    per home, one after another
    dropout:        probability in [0, 1] that a home's answer is lost in a round (each independently)
    seed:           seed of the lost answers (reruns give the same losses)
    max_unanswered: rounds in a row without an answer after which a home stops the process
                    (:class:`~desmarket.errors.UnansweredError`)
    spectral:       "off" (a fixed penalty), "hour" (the spectral penalty of Xu et al. 2017 per (scenario,
                    hour)) or "home" (per home and (scenario, hour)): :class:`SpectralPenalty`
    spectral_rounds: rounds during which the spectral penalty is re-estimated (every 2); then it is fixed
    adaptive_hours: residual balancing of rho per (scenario, hour) (:class:`HourlyBalance`); None (the default):
                    on unless ``spectral`` or ``adaptive`` sets the penalty instead; False: a fixed penalty

    rho, the tolerances and ``balance`` accept any finite real number > 0 (numpy scalars included, not bool),
    ``max_iterations`` any integer >= 1 (numpy integers included, not bool); they are stored as float and int.
    """

    rho: float = 0.001
    tol_residual: float = 1e-4
    tol_imbalance: float = 1e-4
    tol_price: float = 1e-6
    max_iterations: int = 2000
    adaptive: bool = False
    balance: float = 10.0
    relaxation: float = 1.6
    anderson: int = 5
    warm_start: bool = True
    tol_surplus: float = 1e-6
    tol_alpha: float = 1e-5
    tol_gain: float = 1e-4
    patience: int = 3
    economic: bool = True
    profit_rate: float = PAPER_PROFIT_RATE
    batched: bool = False
    dropout: float = 0.0
    seed: int = 0
    max_unanswered: int = 20
    spectral: str = "off"
    spectral_rounds: int = 20
    adaptive_hours: bool | None = None

    def __post_init__(self):
        names = ("rho", "tol_residual", "tol_imbalance", "tol_price", "balance", "tol_surplus", "tol_alpha", "tol_gain")
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value > 0):
                raise ValueError(f"Coordination.{name} must be a finite number > 0, got {value!r}")
            object.__setattr__(self, name, float(value))  # numpy scalars stored as Python numbers
        for name, low in (
            ("max_iterations", 1),
            ("patience", 1),
            ("max_unanswered", 1),
            ("seed", 0),
            ("anderson", 0),
            ("spectral_rounds", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"Coordination.{name} must be an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name, low, high, closed in (
            ("relaxation", 0.0, 2.0, False),
            ("dropout", 0.0, 1.0, True),
            ("profit_rate", 0.0, 1.0, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
            ok = ok and ((low <= value <= high) if closed else (low < value < high))
            if not ok:
                bounds = f"in [{low:g}, {high:g}]" if closed else f"in ({low:g}, {high:g})"
                raise ValueError(f"Coordination.{name} must be a number {bounds}, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.spectral not in ("off", "hour", "home"):
            raise ValueError(f"Coordination.spectral must be 'off', 'hour' or 'home', got {self.spectral!r}")
        if self.adaptive_hours is None:  # the default: on, unless another rule sets the penalty
            object.__setattr__(self, "adaptive_hours", self.spectral == "off" and not self.adaptive)
        for name in ("adaptive", "warm_start", "economic", "batched", "adaptive_hours"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"Coordination.{name} must be True or False, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.adaptive_hours and (self.spectral != "off" or self.adaptive):
            raise ValueError(
                "Coordination.adaptive_hours adapts the penalty per hour itself: use it with spectral='off' and "
                "adaptive=False"
            )

    def accepted_imbalance(self, n_homes: int) -> float:
        """kW, the largest |sum_i x_{i,s,t}| accepted at convergence: max(``tol_residual``, N ``tol_imbalance``)."""
        return max(self.tol_residual, n_homes * self.tol_imbalance)

    @classmethod
    def relaxed(cls) -> Coordination:
        """Looser tolerances for a quick look: 1e-3 kW of trade imbalance and 1e-5 $/kWh, Delta C to 1e-5
        relative and gains and costs to 1e-3 $ between rounds, one round within them. Delta C stays within 1e-3
        relative of the exact clearing; a home's cost or gain may miss it by about a cent."""
        return cls(
            tol_residual=1e-3,
            tol_imbalance=1e-4,
            tol_price=1e-5,
            tol_surplus=1e-5,
            tol_alpha=1e-4,
            tol_gain=1e-3,
            patience=1,
        )

    @classmethod
    def plain(cls, **changes) -> Coordination:
        """Plain ADMM (Boyd et al. 2011, Section 7.3.2) at a fixed penalty, from the midpoint price, stopping on
        the residuals only, the trade imbalance to max(1e-4 kW, N x 1e-5 kW) (tighter than the default's, which
        also stops on the economics): the reference of the technique table of ``make bench``. ``changes``:
        other fields."""
        settings = dict(
            adaptive=False,
            adaptive_hours=False,
            relaxation=1.0,
            warm_start=False,
            economic=False,
            patience=1,
            anderson=0,
            tol_imbalance=1e-5,
        )
        return cls(**{**settings, **changes})


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

    ``lean`` (PIQP only): keep the compiled data (about 0.20 MB per home of 10 scenarios, measured) instead of a
    set-up PIQP solver (about 1.3 MB, its factorisation workspace), and set a solver up for each response, which
    takes about as long as PIQP's ``update`` (2.6 against 2.4 ms per home, measured): for communities whose
    controllers would not fit in memory otherwise (:data:`CONTROLLER_BYTES`). The answers agree within the
    solver's tolerance, not to the last digit.
    """

    KEYS = (*SOLVED, "x")

    def __init__(
        self,
        home: Block,
        solver: str,
        solver_options: dict | None = None,
        direct: bool = True,
        lean: bool = False,
        compiled: dict | None = None,
    ):
        self.lean = bool(lean)
        s, t = home.load.shape
        self.shape = (s, t)
        self.home, self.fallbacks = home, 0
        self._fallback: HomeController | None = None
        self.solver = solver
        self.solver_options = solver_options or DEFAULT_SOLVER_OPTIONS.get(str(solver).upper(), {})
        self.handles: Handles | None = None
        self.linear: cp.Parameter | None = None  # p^k + rho x_i^k, $/kWh
        self.half_rho: cp.Parameter | None = None  # rho/2 per (s, t)
        self.problem: cp.Problem | None = None
        if compiled is not None and direct and str(solver).upper() == "PIQP":  # its rows of a group's compilation
            self._scale = float(compiled["scale"])
            self._piqp = self._fast(compiled["data"], compiled["offsets"])
            if self._piqp is None:
                raise ValueError("a compiled home problem without the proximal term rho/2 ||x||^2 at rho = 2")
            return
        local, handles = formulate(home, market=True, trade_balance=False)  # F_i over Eqs. 6-15, 17, 19
        self.handles = handles
        self.linear = linear = cp.Parameter((s, t), name="price_plus_prox")
        self.half_rho = half_rho = cp.Parameter((s, t), nonneg=True, name="half_rho")
        proximal = cp.sum(cp.multiply(half_rho, cp.square(handles.x)))
        objective = local.objective.expr - cp.sum(cp.multiply(linear, handles.x)) + proximal
        self.problem = cp.Problem(cp.Minimize(objective), local.constraints)
        self._scale = float(np.asarray(handles.parameters.battery_scale.value))  # battery variables per unit
        self._piqp = self._compile_piqp() if direct and str(solver).upper() == "PIQP" else None
        if self._piqp is not None:
            self.problem = None  # the compiled data is all that is needed; frees the cvxpy tensors

    def _compile_piqp(self):
        """PIQP's standard form min 1/2 z'Pz + q'z at linear = 0, half_rho = 1, and where price and rho enter."""
        if self.linear is not None:  # a BatchController's problem has these terms as constants already
            self.linear.value, self.half_rho.value = np.zeros(self.shape), np.ones(self.shape)
        data = self.problem.get_problem_data("PIQP")[0]
        cols = data["param_prob"].var_id_to_col
        return self._fast(data, {k: cols[getattr(self.handles, k).id] for k in self.KEYS})

    def _fast(self, data: dict, offsets: dict):
        """The solver-side state from PIQP's data (cvxpy's ``get_problem_data`` keys) and the first column of each
        of :attr:`KEYS` (column-major (rows, T) blocks); None unless the x columns carry rho/2 ||x||^2 at 2."""
        import piqp

        x_cols = offsets["x"] + np.arange(int(np.prod(self.shape)))  # column-major (S, T)
        P = data["P"].tocsc().copy()
        diag = np.array(
            [P.indptr[j] + np.flatnonzero(P.indices[P.indptr[j] : P.indptr[j + 1]] == j)[0] for j in x_cols]
        )
        if not np.allclose(P.data[diag], 2.0):  # rho/2 ||x||^2 = 1/2 x' (rho I) x: 2 at half_rho = 1
            return None
        setup = dict(
            A=data["A"], b=data["b"], G=data["F"], h_u=data["G"], x_l=data["lower_bounds"], x_u=data["upper_bounds"]
        )
        solver = None
        if not self.lean:
            solver = self._new_piqp()
            solver.setup(P=P, c=data["q"], **setup)
        return {
            "solver": solver,
            "setup": setup if self.lean else None,
            "P": P,
            "diag": diag,
            "q": data["q"].copy(),
            "x_cols": x_cols,
            "offsets": offsets,
            "solved": piqp.PIQP_SOLVED,
        }

    def _new_piqp(self):
        """A PIQP solver at this controller's settings, not set up."""
        import piqp

        solver = piqp.SparseSolver()
        for key, value in self.solver_options.items():
            setattr(solver.settings, key, value)
        return solver

    def respond(self, price: np.ndarray, previous: np.ndarray, rho: float | np.ndarray) -> dict:
        """Best response to the coordinated price: argmin F_i - p.x + 1/2 sum rho (x - previous)^2.

        price: (S, T) $/kWh; previous: this home's last trade schedule (S, T) kW; rho: the penalty, $/kWh per
        kW, one number or one per (scenario, hour), (S, T). Returns the home's dispatch (its own record); only
        ``x`` is reported to the aggregator.
        """
        rho = np.broadcast_to(np.asarray(rho, dtype=float), self.shape)
        linear = price + rho * previous
        if self._piqp is None:
            if self.linear is None or self.half_rho is None or self.problem is None or self.handles is None:
                raise AssertionError("a controller without its compiled solver keeps its cvxpy problem")
            self.linear.value, self.half_rho.value = linear, rho / 2
            self.fallbacks += solve_with_fallback(self.problem, self.solver, self.solver_options)
            return self.handles.values(self.KEYS)
        fast = self._piqp
        q = fast["q"].copy()
        q[fast["x_cols"]] -= linear.reshape(-1, order="F")
        fast["P"].data[fast["diag"]] = rho.reshape(-1, order="F")
        solver = fast["solver"]
        if solver is None:  # lean: a solver set up for this response only
            solver = self._new_piqp()
            solver.setup(P=fast["P"], c=q, **fast["setup"])
        else:
            solver.update(P=fast["P"], c=q)
        status = solver.solve()
        if status != fast["solved"]:
            return self._respond_by_fallback(price, previous, rho, status)
        z = np.asarray(solver.result.x)
        size = self.shape[0] * self.shape[1]
        return {
            k: z[o : o + size].reshape(self.shape, order="F") * (self._scale if k in BATTERY else 1.0)
            for k, o in fast["offsets"].items()
        }

    def _respond_by_fallback(self, price: np.ndarray, previous: np.ndarray, rho: Penalty, status) -> dict:
        """The same response solved by :data:`~desmarket.pieces.FALLBACK_SOLVER` (a cvxpy controller of this
        home, built once); a :class:`SolverError` only if that fails too, with its status."""
        self.fallbacks += 1
        if self._fallback is None:
            self._fallback = HomeController(self.home, FALLBACK_SOLVER, direct=False)
        try:
            return self._fallback.respond(price, previous, rho)
        except SolverError as exc:
            raise solver_error(exc, f"{exc} (PIQP before it: status '{status}')") from exc


class BatchController(HomeController):
    """Several homes' problems as one block-diagonal problem: the simulation's batched controller fleet.

    The block's rows are several homes' (home-major); their problems share no variable and no constraint, so
    the argmin of the block is every home's own argmin. Built once without cvxpy Parameters for the
    round-dependent terms (cvxpy's parametric compilation of an (R, T) price Parameter is dense in R); PIQP's
    data then change between rounds only in the linear term and in the proximal diagonal (rho), through
    PIQP's ``update``. A batch that PIQP does not solve is answered home by home
    (:class:`HomeController`, PIQP then :data:`~desmarket.pieces.FALLBACK_SOLVER`), and ``fallbacks`` counts
    the homes answered so.
    """

    def __init__(self, block: Block, solver: str, solver_options: dict | None = None):
        self.lean = False
        self.shape = block.load.shape
        self.home, self.fallbacks = block, 0
        self._fallback = None
        local, self.handles = formulate(block, market=True, trade_balance=False)
        self.linear = self.half_rho = None  # the terms enter PIQP's data directly (respond_all)
        objective = local.objective.expr + cp.sum_squares(self.handles.x)  # rho / 2 ||x||^2 at rho = 2
        self.problem = cp.Problem(cp.Minimize(objective), local.constraints)
        self.solver = solver
        self.solver_options = solver_options or DEFAULT_SOLVER_OPTIONS.get(str(solver).upper(), {})
        self._scale = float(np.asarray(self.handles.parameters.battery_scale.value))  # battery variables per unit
        self._piqp = self._compile_piqp() if str(solver).upper() == "PIQP" else None
        self.problem = None
        self._homes: dict = {}

    def respond_all(self, homes: list[Block], linear: np.ndarray, rho: float | np.ndarray) -> dict:
        """The homes' responses, (R, T) arrays by name: argmin sum_i F_i - linear.x + 1/2 sum rho x^2.

        homes: the block's homes in its row order; linear: (R, T) their linear terms, $/kWh; rho: $/kWh per
        kW, one number or (S, T), one per (scenario, hour), the same for every home.
        """
        rho = np.asarray(rho, dtype=float)
        if rho.ndim < 2 or rho.shape[0] == self.shape[0]:  # one number, or one per row (a penalty per home)
            rows_rho = np.broadcast_to(rho, self.shape)
        else:  # one per (scenario, hour), the same for every home
            rows_rho = np.tile(rho, (len(homes), 1))
        fast = self._piqp
        if fast is not None:
            q = fast["q"].copy()
            q[fast["x_cols"]] -= linear.reshape(-1, order="F")
            fast["P"].data[fast["diag"]] = rows_rho.reshape(-1, order="F")
            fast["solver"].update(P=fast["P"], c=q)
            if fast["solver"].solve() == fast["solved"]:
                z = np.asarray(fast["solver"].result.x)
                size = self.shape[0] * self.shape[1]
                return {
                    k: z[o : o + size].reshape(self.shape, order="F") * (self._scale if k in BATTERY else 1.0)
                    for k, o in fast["offsets"].items()
                }
            self.fallbacks += len(homes)  # answered home by home below
        answers, start = [], 0
        for home in homes:
            rows = slice(start, start + len(home.rows))
            start = rows.stop
            ctrl = self._homes.get(int(home.rows[0]))
            if ctrl is None:
                ctrl = self._homes[int(home.rows[0])] = HomeController(home, self.solver, self.solver_options)
            before = ctrl.fallbacks
            answers.append(ctrl.respond(linear[rows], np.zeros_like(linear[rows]), rows_rho[rows]))
            if fast is None:
                self.fallbacks += ctrl.fallbacks - before
        return {k: np.concatenate([a[k] for a in answers]) for k in answers[0]}


#: When the process's prices count as pinned and its flows as binding (Operation.balanced / congested): the
#: process stops near the exact clearing, within about 1e-4 $/kWh and 1e-2 kW at the default tolerances.
PROCESS_PRICE_TOLERANCE = 1e-4
PROCESS_LIMIT_TOLERANCE = 1e-2


#: Memory, bytes, that all the home controllers of one market process may take together, in any worker [choice: on
#: this 24 GiB machine, within the 8 GB of issue 21 at 10,000 homes]; a controller is counted at its measured size.
CONTROLLER_BYTES = 4e9
#: Measured bytes per (home, scenario) row of a controller keeping its set-up PIQP solver, after its first answer
#: (300 homes x 10 scenarios, 2026-12-01: 1.29 MB per home; a lean one 0.20 MB, :class:`HomeController`).
FULL_ROW_BYTES = 130e3


def lean_controllers(n_homes: int, rows_per_home: int) -> bool:
    """Whether a community's controllers are lean (:class:`HomeController`): when the full ones would not fit
    in :data:`CONTROLLER_BYTES` (above about 3,000 homes of 10 scenarios). Before, every controller kept its
    set-up solver and each process kept at most 4,096 of them, fewer than the homes it answered at 10,000, so
    every controller was built again every round (25 ms per home against 2.4 ms for its answer)."""
    return n_homes * rows_per_home * FULL_ROW_BYTES > CONTROLLER_BYTES


def compile_homes(block: Block, rows_per_home: int) -> list[dict] | None:
    """Each home's PIQP data (``HomeController(..., compiled=...)``), cut from one compilation of the block of
    several homes' rows (home-major, ``rows_per_home`` each), or None if that compilation is not what the cut
    assumes (every variable a (rows, T) block, every constraint row in one home's columns).

    The homes' problems share no variable and no constraint (no trade balance), so the block's problem is
    block-diagonal; cvxpy orders a problem's columns by variable and then element (column-major) and its rows by
    constraint and then element, so each home's columns and rows, in their order, are exactly the problem cvxpy
    compiles for the home alone (``tests/test_coordination.py`` checks that, and that the answers are the same to
    the last digit). Compiling about 200 homes at once takes about 4 ms per home against 25-38 ms one by one.
    """
    local, handles = formulate(block, market=True, trade_balance=False)
    problem = cp.Problem(cp.Minimize(local.objective.expr + cp.sum_squares(handles.x)), local.constraints)
    data = problem.get_problem_data("PIQP")[0]
    program = data["param_prob"]
    rows, hours = block.load.shape
    owner = np.full(len(data["q"]), -1)
    for variable in program.variables:
        if variable.shape != (rows, hours):
            return None
        index = np.arange(variable.size)  # column-major: row index % rows
        owner[program.var_id_to_col[variable.id] + index] = (index % rows) // rows_per_home
    if (owner < 0).any():
        return None
    owners = []
    for name in ("A", "F"):
        matrix = sp.csr_array(data[name])
        counts = np.diff(matrix.indptr)
        if (counts == 0).any():
            return None
        row_owner = owner[matrix.indices[matrix.indptr[:-1]]]
        if not np.array_equal(owner[matrix.indices], np.repeat(row_owner, counts)):
            return None
        owners.append((matrix, row_owner))
    P = sp.csr_array(data["P"])
    if not np.array_equal(owner[P.indices], np.repeat(owner, np.diff(P.indptr))):
        return None
    (A, a_owner), (F, f_owner) = owners
    first = {k: program.var_id_to_col[getattr(handles, k).id] for k in HomeController.KEYS}
    scale = float(np.asarray(handles.parameters.battery_scale.value))
    count = rows // rows_per_home
    out = []
    for home, cols, a_rows, f_rows in zip(
        range(count), _by_owner(owner, count), _by_owner(a_owner, count), _by_owner(f_owner, count)
    ):
        part = {
            "P": sp.csc_matrix(P[cols][:, cols]),
            "q": data["q"][cols],
            "A": sp.csc_matrix(A[a_rows][:, cols]),
            "b": data["b"][a_rows],
            "F": sp.csc_matrix(F[f_rows][:, cols]),
            "G": data["G"][f_rows],
            "lower_bounds": data["lower_bounds"][cols],
            "upper_bounds": data["upper_bounds"][cols],
        }
        offsets = {k: int(np.searchsorted(cols, o + home * rows_per_home)) for k, o in first.items()}
        out.append({"data": part, "offsets": offsets, "scale": scale})
    return out


def _by_owner(owner: np.ndarray, count: int) -> list[np.ndarray]:
    """For each owner 0..count-1, the indices it owns, ascending (one stable sort, not a scan per owner)."""
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(np.bincount(owner, minlength=count))[:-1])


class HomeGroup:
    """A group of homes' controllers, kept for a whole process by the worker that owns the group
    (:class:`~desmarket.pieces.OwnedPool`); :meth:`respond` answers one round.

    The homes' controllers are built on the group's first answer, from one compilation of ``block`` (the group's
    rows, :func:`compile_homes`), and keep their compiled problems (or, lean, their compiled data) between rounds;
    batched, the group's homes are solved together (:class:`Fleet`) over ``block``. Holds only the group's homes'
    own data.
    """

    def __init__(self, homes: list, block: Block, solver: str, solver_options: dict | None, batched: bool, lean: bool):
        self.homes, self.block = homes, block  # homes: [(home index, Block of its rows)]
        self.solver, self.solver_options, self.batched, self.lean = solver, solver_options, batched, lean
        self.controllers: dict[int, HomeController] = {}
        self.batch: BatchController | None = None

    def respond(self, price: np.ndarray, targets: np.ndarray, rho: Penalty) -> dict:
        """The group's responses to the announced price, (n, S, T) arrays by name, and ``fallbacks``.

        targets: (n, S, T) the homes' own targets; rho: one number, (S, T), or (n, S, T) one per home of the
        group (each home receives only its own).
        """
        per_home = np.ndim(rho) == 3
        own = (lambda j: np.asarray(rho)[j]) if per_home else (lambda j: rho)
        solver, options = self.solver, self.solver_options
        if self.batched:
            if self.batch is None:
                self.batch = BatchController(self.block, self.solver, self.solver_options)
            fleet = Fleet(self.batch, self.block.rows)
            for j, (_, home) in enumerate(self.homes):
                home_response(home, price, targets[j], own(j), solver=solver, solver_options=options, fleet=fleet)
            return fleet.solve(np.concatenate(list(np.asarray(rho))) if per_home else rho)
        if not self.controllers:
            rows_per_home = len(self.homes[0][1].rows)
            compiled = compile_homes(self.block, rows_per_home) if str(self.solver).upper() == "PIQP" else None
            for j, (i, home) in enumerate(self.homes):
                own_data = None if compiled is None else compiled[j]
                self.controllers[i] = HomeController(
                    home, self.solver, self.solver_options, lean=self.lean, compiled=own_data
                )
        answers: list[dict] = []
        for j, (i, home) in enumerate(self.homes):
            ctrl = self.controllers[i]
            answer = home_response(
                home, price, targets[j], own(j), solver=solver, solver_options=options, controller=ctrl
            )
            if answer is None:  # only a fleet's homes answer later, together
                raise AssertionError("a home's response without a fleet is its dispatch")
            answers.append(answer)
        out = {k: np.stack([a[k] for a in answers]) for k in answers[0] if k != "fallbacks"}
        return {**out, "fallbacks": sum(a["fallbacks"] for a in answers)}


def home_response(
    home: Block,
    price: np.ndarray,
    previous: np.ndarray,
    rho: Penalty,
    *,
    solver: str = "PIQP",
    solver_options: dict | None = None,
    controller: HomeController | None = None,
    fleet: Fleet | None = None,
) -> dict | None:
    """The home side of one iteration: receives only the announced price, rho and its own data and target.

    Home i's answer is argmin F_i - price.x + rho/2 ||x - previous||^2 over its own constraints; price (S, T)
    $/kWh, previous (S, T) kW (its target schedule). ``controller``: the home's own :class:`HomeController`,
    kept between rounds (default: one built for this answer). Besides the dispatch arrays, ``fallbacks`` is 1 if
    :data:`~desmarket.pieces.FALLBACK_SOLVER` solved this response, else 0.

    fleet: a :class:`Fleet` of the simulation; the home then hands it the only round-dependent part of its
    problem, the linear term price + rho previous (S, T), built from its price and its own target alone, and
    the fleet solves the posted homes' separate problems together (:meth:`Fleet.solve`); returns None.
    """
    if fleet is not None:
        fleet.post(home, price + rho * previous)
        return None
    ctrl = controller if controller is not None else HomeController(home, solver, solver_options)
    before = ctrl.fallbacks
    try:
        out = ctrl.respond(price, previous, rho)
    except SolverError as exc:
        raise solver_error(exc, f"{exc} (home controller, case rows {home.rows.min()}-{home.rows.max()})") from exc
    return {**out, "fallbacks": ctrl.fallbacks - before}


class Fleet:
    """Several homes' responses to one announced price, solved together (the simulation's batch).

    The homes' problems share no variable and no constraint, so the problem over all their rows
    (:func:`~desmarket.formulation.formulate` over the block of their rows, without the trade balance) is
    block-diagonal and its argmin is each home's own argmin: one :class:`HomeController` over the block, set
    up once, whose PIQP data change between rounds only in the linear term (the posted prices) and in the
    proximal diagonal (rho). Each home still contributes only its own data (its rows of the block) and its own
    linear term (:func:`home_response` with ``fleet``).
    """

    def __init__(self, controller: BatchController, rows: np.ndarray):
        self.controller, self.rows = controller, np.asarray(rows)
        self._posted: list[tuple[Block, np.ndarray]] = []

    def post(self, home: Block, linear: np.ndarray) -> None:
        """A home's linear term price + rho * target, (S, T) $/kWh, for the next :meth:`solve`."""
        self._posted.append((home, np.asarray(linear, dtype=float)))

    def solve(self, rho: Penalty) -> dict:
        """All posted homes' responses, (n, S, T) arrays by name, in the order posted; ``fallbacks``: homes
        whose response :data:`~desmarket.pieces.FALLBACK_SOLVER` solved (all of the batch, if it fell back)."""
        rows = np.concatenate([home.rows for home, _ in self._posted])
        if not np.array_equal(rows, self.rows):
            raise ValueError("the homes posted to a Fleet are not the homes of its block, in its order")
        linear = np.concatenate([lin for _, lin in self._posted])  # (R, T), home-major rows
        n = len(self._posted)
        self._posted_homes, self._posted = self._posted, []
        ctrl = self.controller
        before = ctrl.fallbacks
        try:
            out = ctrl.respond_all([home for home, _ in self._posted_homes], linear, rho)
        except SolverError as exc:
            raise solver_error(exc, f"{exc} (homes' batch, case rows {rows.min()}-{rows.max()})") from exc
        stacked = {k: v.reshape(n, -1, v.shape[-1]) for k, v in out.items()}
        return {**stacked, "fallbacks": ctrl.fallbacks - before}


# ================================================================================ aggregator side
@dataclass(frozen=True)
class AggregatorState:
    """What the aggregator knows: its prices, its penalty and the schedules the homes reported."""

    price: np.ndarray  # lambda, (S, T) $/kWh
    rho: Penalty  # one number, (S, T) per hour or (N, S, T) per home, $/kWh per kW
    trades: np.ndarray  # last reported schedules, (N, S, T) kW

    def announcement(self) -> np.ndarray:
        """The coordinated price p^k = lambda^k - rho xbar^k of plain ADMM, (S, T) $/kWh (a home's price term
        with its own last schedule as target)."""
        return self.price - self.rho * self.trades.mean(axis=0)


def aggregator_update(
    state: AggregatorState, trades: np.ndarray, settings: Coordination
) -> tuple[AggregatorState, dict]:
    """The aggregator side of one iteration: receives only the homes' trade schedules (N, S, T) kW.

    lambda^{k+1} = lambda^k - rho a xbar^{k+1}, a the over-relaxation (``settings.relaxation``; 1: plain ADMM).
    Returns the new state and the residuals: ``residual_kw`` max |sum_i x| (Eq. 18), ``price_change`` max
    |lambda^{k+1} - lambda^k| and ``dual_residual`` rho max |(x - xbar)^{k+1} - (x - xbar)^k|, both $/kWh.
    """
    trades = np.asarray(trades, dtype=float)
    if np.ndim(state.rho) == 3:  # a penalty per home: the imbalance shared in proportion to 1 / rho_i
        per_home = np.asarray(state.rho, dtype=float)
        share = imbalance_shares(per_home)
        price = state.price - settings.relaxation * trades.sum(axis=0) / (1.0 / per_home).sum(axis=0)
        centred_change = (trades - share * trades.sum(axis=0)) - (state.trades - share * state.trades.sum(axis=0))
    else:
        mean = trades.mean(axis=0)
        price = state.price - state.rho * settings.relaxation * mean
        centred_change = (trades - mean) - (state.trades - state.trades.mean(axis=0))
    info = {
        "residual_kw": float(np.abs(trades.sum(axis=0)).max()),
        "price_change": float(np.abs(price - state.price).max()),
        "dual_residual": float((state.rho * np.abs(centred_change)).max()),
        "rho": float(np.exp(np.log(state.rho).mean())),  # one per (scenario, hour) with spectral: their geometric mean
    }
    rho = state.rho
    if settings.adaptive:  # each residual relative to its tolerance, so that both reach it together
        primal, dual = info["residual_kw"] / settings.tol_residual, info["dual_residual"] / settings.tol_price
        if primal > settings.balance * dual:
            rho = rho * 2
        elif dual > settings.balance * primal:
            rho = rho / 2
    return AggregatorState(price=price, rho=rho, trades=trades), info


def imbalance_shares(rho: np.ndarray) -> np.ndarray:
    """(N, S, T) the share of the community's imbalance each home's target takes with a penalty per home,
    (1 / rho_i) / sum_j (1 / rho_j): ADMM's z-step in the metric of the penalties, a projection onto
    sum_i z_i = 0 weighted by rho_i (with one penalty for all, 1 / N each). The price step is then
    lambda^{k+1} = lambda^k - a sum_i x_i / sum_j (1 / rho_j)."""
    weight = 1.0 / rho
    return weight / weight.sum(axis=0)


def next_targets(targets: np.ndarray, trades: np.ndarray, relaxation: float, rho: Penalty | None = None) -> np.ndarray:
    """Each home's next target schedule z_i (N, S, T) kW of over-relaxed ADMM (Boyd et al. 2011, Section 3.4.3):
    z_i^{k+1} = a x_i^{k+1} + (1 - a) z_i^k - a xbar^{k+1}; with a = 1, z_i = x_i - xbar (plain exchange ADMM).

    Home i computes its own from its schedule, its last target and the community's mean imbalance a xbar, which
    the aggregator announces with the price.
    """
    if rho is not None and np.ndim(rho) == 3:  # a penalty per home: its share of the imbalance
        share = imbalance_shares(np.asarray(rho, dtype=float))
        return relaxation * (trades - share * trades.sum(axis=0)) + (1.0 - relaxation) * targets
    mean = trades.mean(axis=0)
    return relaxation * (trades - mean) + (1.0 - relaxation) * targets


#: kW, the least change of a home's trade between two estimates of the penalty per home that the estimate uses.
MOVED_KW = 1e-4


class HourlyBalance:
    """Residual balancing of the penalty per (scenario, hour) (``Coordination.adaptive_hours``; Boyd et al. 2011,
    Section 3.4.1, whose rule for one penalty is applied to each hour's own residuals; He, Yang & Wang, J. Optim.
    Theory Appl. 106, 2000, for penalties that vary between rounds).

    Every ``every`` rounds, in each (scenario, hour): the primal residual |sum_i x| relative to the accepted
    imbalance and the dual residual rho max_i |(x_i - xbar) - (x_i - xbar)_before| relative to ``tol_price``; the
    penalty is multiplied by ``factor`` where the first exceeds 10 times the second (and 1), divided where the
    second exceeds 10 times the first, within [rho0 / most, rho0 most]. Why per hour: where every home trades its
    whole net locally no answer moves with the price, so the primal residual stands still and the price, stepping
    by rho a xbar, drifts across [k^s LMP, k^b LMP] for many rounds (issue 21); a larger penalty there makes
    those steps longer without stiffening the other hours. The penalty is fixed after ``rounds`` rounds, so the
    process ends as ADMM with a fixed penalty, whose convergence is the textbook one.
    """

    def __init__(
        self,
        rho0: float,
        accepted: float,
        tol_price: float,
        every: int = 5,
        factor: float = 4.0,
        most: float = 64.0,
        rounds: int = 200,
    ):
        self.rho0, self.accepted, self.tol_price = float(rho0), float(accepted), float(tol_price)
        self.every, self.factor, self.most, self.rounds = int(every), float(factor), float(most), int(rounds)
        self._last: np.ndarray | None = None

    def update(self, k: int, rho: Penalty, lambda_hat: np.ndarray, trades: np.ndarray) -> np.ndarray | None:
        """The new penalty at round k, (S, T), or None if it is unchanged (the interface of :class:`SpectralPenalty`;
        ``lambda_hat`` is not needed). trades: the answers (N, S, T), kW."""
        last, self._last = self._last, np.asarray(trades, dtype=float)
        if last is None or k % self.every or k > self.rounds:
            return None
        primal = np.abs(self._last.sum(axis=0)) / self.accepted
        change = (self._last - self._last.mean(axis=0)) - (last - last.mean(axis=0))
        penalty = np.broadcast_to(np.asarray(rho, dtype=float), primal.shape)
        dual = (penalty * np.abs(change).max(axis=0)) / self.tol_price
        up = (primal > 10 * dual) & (primal > 1) & (penalty * self.factor <= self.most * self.rho0)
        down = (dual > 10 * primal) & (dual > 1) & (penalty / self.factor >= self.rho0 / self.most)
        if not (up.any() or down.any()):
            return None
        return np.where(up, penalty * self.factor, np.where(down, penalty / self.factor, penalty))


class SpectralPenalty:
    """The spectral (Barzilai-Borwein) adaptive penalty of Xu, Figueiredo & Goldstein, "Adaptive ADMM with
    spectral penalty parameter selection", AISTATS 2017 (their Algorithm 1), one penalty per (scenario, hour).

    For ADMM on min f(u) + g(v) s.t. Au + Bv = b they estimate the curvature of f from two rounds k0 < k:
    the change of the intermediate dual lambda_hat (the gradient of f at u_k) against the change of A u_k,
    as the steepest-descent and minimum-gradient Barzilai-Borwein step lengths alpha_SD = <dl, dl>/<du, dl>
    and alpha_MG = <du, dl>/<du, du>, combined as alpha = alpha_MG if 2 alpha_MG > alpha_SD, else
    alpha_SD - alpha_MG/2; the penalty becomes sqrt(alpha beta), or alpha alone when only the estimate of f is
    reliable (their correlation <du, dl>/(|du| |dl|) above ``correlation``). Here u = x (the homes' trades,
    A = I), v = z (the targets, B = -I, g the indicator of sum_i z_i = 0), and lambda_hat_i = lambda^k +
    rho (z_i^k - x_i^{k+1}), the gradient of F_i at home i's answer (its optimality condition). The estimate
    of g never counts: its changes sum to zero over the homes, so their correlation with the common price is
    zero. The inner products are summed over the homes within each (scenario, hour), so every hour gets the
    penalty of its own curvature (e.g. small where batteries, priced only by the tie-break epsilon, are
    marginal), computed from the reported schedules alone. ``per_home``: one penalty per home and (scenario,
    hour), the ratio of that home's own changes (the per-node penalties of Xu et al.'s adaptive consensus
    ADMM, ICML 2017, taken to each coordinate), where its trade moved by more than :data:`MOVED_KW`; each home
    receives only its own. The penalty is re-estimated every ``every`` rounds
    for the first ``rounds`` rounds and then frozen (ADMM with a fixed diagonal penalty, which converges; Xu
    et al. bound the changes for the same reason), and kept within a factor ``spread`` of the initial one.
    """

    def __init__(
        self,
        rho: float,
        every: int = 2,
        rounds: int = 20,
        correlation: float = 0.2,
        spread: float = 1000.0,
        per_home: bool = False,
    ):
        self.every, self.rounds, self.correlation, self.per_home = int(every), int(rounds), float(correlation), per_home
        self.low, self.high = rho / spread, rho * spread
        self._reference: tuple[np.ndarray, np.ndarray] | None = None  # (lambda_hat, x) of the last estimate

    def update(self, k: int, rho: Penalty, lambda_hat: np.ndarray, trades: np.ndarray) -> np.ndarray | None:
        """The new penalty at round k, (S, T) ((N, S, T) per home, $/kWh per kW), or None if it is unchanged.
        rho: the current one; lambda_hat ($/kWh), trades (kW): (N, S, T)."""
        if k > self.rounds:
            return None
        if self._reference is None or k % self.every:
            if self._reference is None:
                self._reference = (lambda_hat, trades)
            return None
        dl, dx = lambda_hat - self._reference[0], trades - self._reference[1]
        self._reference = (lambda_hat, trades)
        if self.per_home:  # each home's own curvature in each (scenario, hour): where it moved enough to tell
            moved = np.abs(dx) > MOVED_KW
            with np.errstate(divide="ignore", invalid="ignore"):
                alpha = dl / dx
            reliable = moved & np.isfinite(alpha) & (alpha > 0)
            if not reliable.any():
                return None
            return np.where(reliable, np.clip(alpha, self.low, self.high), rho)
        ll, xl, xx = (dl * dl).sum(axis=0), (dx * dl).sum(axis=0), (dx * dx).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            steepest, minimum = ll / xl, xl / xx
            correlation = xl / np.sqrt(ll * xx)
            alpha = np.where(2 * minimum > steepest, minimum, steepest - minimum / 2)
        reliable = np.isfinite(alpha) & (alpha > 0) & (correlation > self.correlation)
        if not reliable.any():
            return None
        return np.where(reliable, np.clip(alpha, self.low, self.high), rho)


class Anderson:
    """Anderson acceleration (type II, Walker & Ni 2011; for ADMM: Zhang, O'Donoghue & Boyd 2020) of the
    process's fixed-point iteration w -> G(w) over w = (lambda, z_1..z_N), with a restart safeguard.

    Each round, the extrapolated w is the combination of the last ``memory`` + 1 outputs of G that minimises
    the norm of the combined fixed-point residual G(w) - w, measured in ADMM's own metric (sqrt(N) lambda / rho
    beside the homes' targets z, both in kW). Safeguard: when the residual exceeds ``restart`` times its
    smallest value since the last restart (default 1: whenever it is not the smallest yet), the memory is
    cleared and the plain ADMM step taken (without it the extrapolation stalled on a 5-home case for 2,000
    rounds; with a factor of 2 one case needed 303 rounds instead of 88; going back to the best point instead
    took 155 rounds instead of 100 on the paper case). An extrapolation longer than ``max_jump`` (100) times
    the plain step is not taken either (memory cleared, plain step): on a price ramp, where G(w) - w hardly
    changes between rounds, the least-squares coefficients are noise and the process diverged.
    Only the coefficients (``memory`` + 1 numbers per round) need to be announced: every home combines its own
    past targets with them, and the aggregator its past prices.
    """

    def __init__(self, memory: int, restart: float = 1.0, max_jump: float = 100.0):
        self.memory, self.restart, self.max_jump = int(memory), float(restart), float(max_jump)
        self._g: list[np.ndarray] = []  # G(w) of the last rounds, flat
        self._f: list[np.ndarray] = []  # G(w) - w of the last rounds, flat
        self._best = np.inf

    def step(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The next iterate from the current w and its image G(w) (flat vectors in the metric above)."""
        f = g - w
        size = float(np.linalg.norm(f))
        if size > self.restart * self._best:  # a bad extrapolation: start again from the plain step
            self._g, self._f, self._best = [], [], size
            return g
        self._best = min(self._best, size)
        self._g.append(g)
        self._f.append(f)
        if len(self._g) > self.memory + 1:
            self._g.pop(0)
            self._f.pop(0)
        if len(self._g) < 2:
            return g
        dF = np.stack([b - a for a, b in zip(self._f[:-1], self._f[1:])], axis=1)
        dG = np.stack([b - a for a, b in zip(self._g[:-1], self._g[1:])], axis=1)
        gamma = np.linalg.lstsq(dF, f, rcond=1e-10)[0]
        shift = dG @ gamma
        jump = float(np.linalg.norm(shift))
        if not np.isfinite(jump) or jump > self.max_jump * size:  # a degenerate history (e.g. a price ramp,
            self._g, self._f = [], []  # where G(w) - w hardly changes): start again from the plain step
            return g
        return g - shift


def forecast_price(case: Case, independent: Operation) -> np.ndarray:
    """The warm start: k^b LMP where the community imported in M1, k^s LMP where it exported, the midpoint of
    the two where it was balanced, (S, T) $/kWh. The aggregator knows M1's flows: it was the homes' retailer."""
    s, t = case.n_scenarios, case.load.shape[-1]
    net = independent.community_net_load
    buy, sell = np.broadcast_to(case.buy_price, (s, t)), np.broadcast_to(case.sell_price, (s, t))
    return np.where(net > NET_TOLERANCE, buy, np.where(net < -NET_TOLERANCE, sell, (buy + sell) / 2))


def lost_answers(rng: np.random.Generator, n_homes: int, dropout: float) -> np.ndarray:
    """(N,) True for the homes whose answer is lost this round, each independently with probability ``dropout``."""
    if dropout == 0:
        return np.zeros(n_homes, dtype=bool)
    return rng.random(n_homes) < dropout


# ======================================================================================= economics
@dataclass(frozen=True)
class Economics:
    """What the settlement would pay at a round's schedules: Delta C ($, Eq. 20), alpha_i (Eq. 22), each
    home's M3 gain alpha_i Delta C ($, Eq. 27) and each home's cost C_i* at the schedules ($, Eq. 5)."""

    surplus: float
    alpha: np.ndarray
    gain: np.ndarray
    cost: np.ndarray

    def change(self, other: Economics | None) -> dict:
        """How far these moved from ``other`` (the round before): relative Delta C, alpha, gain in $."""
        if other is None:
            return {
                "surplus_change": np.inf,
                "alpha_change": np.inf,
                "gain_change_usd": np.inf,
                "cost_change_usd": np.inf,
            }
        scale = max(abs(self.surplus), MIN_SURPLUS_USD)
        return {
            "surplus_change": abs(self.surplus - other.surplus) / scale,
            "alpha_change": float(np.abs(self.alpha - other.alpha).max()),
            "gain_change_usd": float(np.abs(self.gain - other.gain).max()),
            "cost_change_usd": float(np.abs(self.cost - other.cost).max()),
        }


#: Delta C below this ($/day) is compared absolutely in the economic stop (nothing to gain).
MIN_SURPLUS_USD = 1e-3


def round_economics(before: float, market: Operation, probability: np.ndarray, profit_rate: float) -> Economics:
    """The settlement's quantities at a round's assembled operation, as the settlement computes them.

    before: sum_i C_i^0 - R_A^0 of M1, $; market: the round's :class:`Operation` (tie-broken, pro-rata trades).
    alpha_i = (1 - rho) c_i / sum_j c_j with c_i = sum pi |lambda| |x_i| (Eqs. 21-22); all zero if nobody trades.
    """
    surplus = float(before - (market.home_cost.sum() - market.aggregator_revenue))
    value = trade_values(probability, market.cleared()[0], market.trade)
    total = value.sum()
    alpha = (1.0 - profit_rate) * value / total if total > 0 else np.zeros_like(value)
    return Economics(surplus, alpha, alpha * surplus, market.home_cost)


# ======================================================================================= the process
#: (home, scenario) rows per group of homes answered together (one task, and one batch of :class:`Fleet`).
BATCH_ROWS = 2048


def _batches(n_homes: int, rows_per_home: int, workers: int, batched: bool = False) -> list[np.ndarray]:
    """Homes grouped into :class:`HomeGroup` s of about :data:`BATCH_ROWS` rows. Per-home responses: one group up
    to that size, else a multiple of the number of workers, so that each worker owns as many homes (to one) in
    :class:`~desmarket.pieces.OwnedPool` (5 groups of 200 homes in 2 workers made one answer 600 homes, the other
    400); the answers do not depend on the grouping. Batched: by size alone, so that the batches (and the
    answers, to the last digit) do not depend on the number of workers."""
    by_size = int(np.ceil(n_homes * rows_per_home / BATCH_ROWS))
    if batched:
        count = max(1, by_size)
    else:
        count = 1 if n_homes * rows_per_home <= BATCH_ROWS else min(n_homes, workers * -(-by_size // workers))
    return [b for b in np.array_split(np.arange(n_homes), count) if len(b)]


def _independent(case: Case, solver: str, solver_options: dict | None, n_jobs: int | None) -> Operation | None:
    """M1 by pieces (the decomposed solve): the disagreement point the economic stop and the warm start need.

    None if M1 has no solution (a home that only the market can serve, :mod:`desmarket.feasibility`): the
    process then starts from the midpoint price and stops on its residuals alone.
    """
    rows = independent_pieces(case)
    try:
        results = run_tasks(solve_block, [(case_block(case, r), False, solver, solver_options) for r in rows], n_jobs)
    except SolverError:
        return None
    arrays, _ = gather(case, rows, results, market=False)
    return assemble_operation(
        case, arrays, None, Prices.of_case(case), regularization=case.market.regularization, solver=solver
    )


def _missed(info: dict, settings: Coordination, economic: bool, n_homes: int) -> list[str]:
    """The tolerances a round misses, in words (``economic``: the settlement's quantities too)."""
    checks = [
        ("trade imbalance (kW)", "residual_kw", settings.accepted_imbalance(n_homes)),
        ("price change ($/kWh)", "price_change", settings.tol_price),
        ("dual residual ($/kWh)", "dual_residual", settings.tol_price),
    ]
    if economic:
        checks += [
            ("relative change of Delta C", "surplus_change", settings.tol_surplus),
            ("change of an alpha", "alpha_change", settings.tol_alpha),
            ("change of a home's gain ($)", "gain_change_usd", settings.tol_gain),
            ("change of a home's cost ($)", "cost_change_usd", settings.tol_gain),
        ]
    return [f"{name} {info[key]:.3g} > {tol:g}" for name, key, tol in checks if info[key] > tol]


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
    iteration limit is reached, and :class:`~desmarket.errors.UnansweredError`, naming the homes, if a home has
    not answered for ``settings.max_unanswered`` rounds in a row.
    """
    settings = settings or Coordination()
    if not isinstance(settings, Coordination):
        raise TypeError(f"coordination must be a desmarket.Coordination, got {type(settings).__name__}")
    n_jobs = check_n_jobs(n_jobs)
    t0 = time.perf_counter()
    n, s, t = case.load.shape
    x_bar = trade_limits(case, trade_limit)
    homes = [case_block(case, np.arange(i * s, (i + 1) * s), x_bar) for i in range(n)]  # each home's own data
    workers = 1 if n_jobs is None else worker_count(n_jobs)  # of the OwnedPool below (None: this process)
    batches = _batches(n, s, workers, settings.batched)
    lean = lean_controllers(n, s) and str(solver).upper() == "PIQP"
    groups = [
        HomeGroup(
            [(i, homes[i]) for i in batch],
            case_block(case, (batch[:, None] * s + np.arange(s)).reshape(-1), x_bar),
            solver,
            solver_options,
            settings.batched,
            lean,
        )
        for batch in batches
    ]
    prices = Prices.of_case(case)
    needs_m1 = settings.warm_start or settings.economic or settings.dropout > 0
    m1 = _independent(case, solver, solver_options, n_jobs) if needs_m1 else None
    economic = settings.economic and m1 is not None  # no disagreement point (M1 infeasible): residuals only
    midpoint = np.broadcast_to((case.buy_price + case.sell_price) / 2, (s, t)).copy()
    penalties: dict[str, Penalty] = {
        "off": float(settings.rho),
        "hour": np.full((s, t), settings.rho),
        "home": np.full((n, s, t), settings.rho),
    }
    state = AggregatorState(
        price=forecast_price(case, m1) if settings.warm_start and m1 is not None else midpoint,
        rho=penalties["hour" if settings.adaptive_hours else settings.spectral],
        trades=np.zeros((n, s, t)),
    )
    penalty: SpectralPenalty | HourlyBalance | None = (
        SpectralPenalty(settings.rho, rounds=settings.spectral_rounds, per_home=settings.spectral == "home")
        if settings.spectral != "off"
        else None
    )
    if settings.adaptive_hours:
        penalty = HourlyBalance(settings.rho, settings.accepted_imbalance(n), settings.tol_price)
    targets = np.zeros((n, s, t))  # each home's own z_i (home side)
    before = None if m1 is None else float(m1.home_cost.sum() - m1.aggregator_revenue)
    a, b = case.column("utility_a"), case.column("utility_b")
    rng = np.random.default_rng(settings.seed)
    silent = np.zeros(n, dtype=int)  # rounds in a row without an answer, per home
    dispatch = None
    if m1 is not None:  # a home that has not answered yet runs its M1 schedule and trades nothing
        dispatch = {k: getattr(m1, name) for k, name in _OPERATION_NAMES.items()}
        dispatch["x"] = np.zeros((n, s, t))
    log, fallbacks, last, calm = [], 0, None, 0
    accelerator = Anderson(settings.anderson) if settings.anderson else None
    # each group of homes lives in one worker for the whole process (this one with n_jobs 1 or None)
    with OwnedPool(groups, workers) as pool:
        for k in itertools.count(1):
            own = [(targets[b], np.asarray(state.rho)[b] if np.ndim(state.rho) == 3 else state.rho) for b in batches]
            answers = pool.call("respond", (state.price,), own)
            fallbacks += sum(r.pop("fallbacks") for r in answers)
            fresh = {key: np.concatenate([r[key] for r in answers]) for key in answers[0]}
            lost = lost_answers(rng, n, settings.dropout)
            if dispatch is None:
                dispatch = fresh
            else:  # the aggregator keeps a lost answer's last schedule
                dispatch = {key: np.where(lost[:, None, None], dispatch[key], fresh[key]) for key in fresh}
            silent = np.where(lost, silent + 1, 0)
            trades = dispatch["x"]
            lambda_hat = state.price + state.rho * (targets - trades)  # grad F_i at the answers (SpectralPenalty)
            state_price_before = state.price
            state, info = aggregator_update(state, trades, settings)
            w_before = (state_price_before, targets)
            targets = next_targets(targets, trades, settings.relaxation, state.rho)
            if accelerator is not None and not lost.any():  # a round with lost answers: the plain step
                scale: Penalty
                weight: Penalty
                if np.ndim(state.rho) == 3:  # ADMM's metric: sum_i 1/rho_i lambda^2 beside rho_i z_i^2
                    per_home = np.asarray(state.rho, dtype=float)
                    scale, weight = np.sqrt((1.0 / per_home).sum(axis=0)), np.sqrt(per_home)
                else:
                    scale, weight = np.sqrt(n) / state.rho, 1.0
                pack = lambda price, z: np.concatenate([(scale * price).ravel(), (weight * z).ravel()])
                w = accelerator.step(pack(*w_before), pack(state.price, targets))
                state = dataclasses.replace(state, price=w[: s * t].reshape(s, t) / scale)
                targets = w[s * t :].reshape(n, s, t) / weight
            if penalty is not None:
                new_rho = penalty.update(k, state.rho, lambda_hat, trades)
                if new_rho is not None:  # another fixed-point map: the extrapolation starts again
                    state = dataclasses.replace(state, rho=new_rho)
                    accelerator = Anderson(settings.anderson) if settings.anderson else None
            if callback is not None:
                callback(state)
            info["objective"] = operation_objective(
                case.probability, dispatch, prices, case.market.regularization, a, b, market=True
            )
            if economic and before is not None:  # economic: M1 solved, so before is known
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DesmarketWarning)
                    current = round_economics(
                        before,
                        _assemble(case, dispatch, state.price, prices, tie_break, x_bar, solver),
                        case.probability,
                        settings.profit_rate,
                    )
                info.update(current.change(last), surplus_usd=current.surplus)
                last = current
            info["unanswered"] = int(lost.sum())
            log.append(
                {
                    "iteration": k,
                    **info,
                    # the prices (S, T) and the penalty: one number, or one per (scenario, hour)
                    "bytes_to_each_home": (s * t + (1 if np.ndim(state.rho) == 0 else s * t)) * FLOAT_BYTES,
                    "bytes_from_each_home": s * t * FLOAT_BYTES,
                }
            )
            if (silent >= settings.max_unanswered).any():
                ids = [case.home_ids[i] for i in np.flatnonzero(silent >= settings.max_unanswered)]
                raise UnansweredError(ids, settings.max_unanswered, pd.DataFrame(log).set_index("iteration"))
            missed = _missed(info, settings, economic, n)
            calm = 0 if missed else calm + 1
            patience = settings.patience if economic else 1  # the residual stop alone: at once, as before
            if calm >= patience:
                break
            if k >= settings.max_iterations:
                missed = missed or [f"{patience} rounds in a row within the tolerances"]
                raise NotConvergedError(
                    f"the coordinated market process did not converge in {k} iterations: {'; '.join(missed)}. "
                    "Raise Coordination(max_iterations=...), loosen tol_residual / tol_price, or try another "
                    "rho; method='decomposed' gives the exact clearing.",
                    pd.DataFrame(log).set_index("iteration"),
                )
    convergence = pd.DataFrame(log).set_index("iteration")
    label = solver_label(solver, fallbacks, n * len(log), "home responses")
    return dataclasses.replace(
        _assemble(case, dispatch, state.price, prices, tie_break, x_bar, label),
        wall_seconds=time.perf_counter() - t0,
        convergence=convergence,
    )


#: Keys of a dispatch (the solver's arrays) and the :class:`Operation` fields that hold them.
_OPERATION_NAMES = {
    "d": "load",
    "g": "pv_used",
    "c": "charge",
    "e": "discharge",
    "E": "energy",
    "Pl": "net_load",
    "Ps": "net_surplus",
}


def _assemble(case, dispatch, price, prices, tie_break, x_bar, solver) -> Operation:
    """The process's :class:`Operation` at a round's schedules (:func:`~desmarket.model.assemble_operation`)."""
    return assemble_operation(
        case,
        dispatch,
        price,
        prices,
        regularization=case.market.regularization,
        solver=solver,
        tie_break=tie_break,
        method="coordinated",
        trade_limit=x_bar,
        price_tolerance=PROCESS_PRICE_TOLERANCE,
        limit_tolerance=PROCESS_LIMIT_TOLERANCE,
    )
