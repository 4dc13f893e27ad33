"""The model, written once: Eqs. 5-19 over a block of (home, scenario) rows with their objective weights.

Every method solves this formulation (:func:`formulate`), on other blocks:

* ``"central"`` -- one block of all rows, each weighted by its scenario's probability pi_s (the expectation
  of Eqs. 5 and 16), solved by Clarabel (:func:`desmarket.model.build_independent`,
  :func:`desmarket.model.build_clearing`): the reference;
* ``"decomposed"`` -- pieces of some rows (M1) or of whole scenarios (the clearing), weight 1 per row: the
  pieces are independent, and a scenario's probability scales its whole part of the objective, so each
  piece's argmin is its rows' part of the central argmin (:mod:`desmarket.pieces`, PIQP);
* ``"coordinated"`` -- one home's rows, weight 1, without the trade balance (the aggregator's prices stand for
  it); :mod:`desmarket.coordinated` adds its augmented-Lagrangian terms to the objective.

Three representation choices, the same for every block (none moves the optimum or the dual of Eq. 18,
``tests/test_engine.py`` checks pieces against central): bounds are *variable bounds* (PIQP treats them
natively, 2-5x faster); the trade balance (Eq. 18) is summed through partial sums of at most
:data:`TRADE_GROUP` homes, so that no constraint row is dense (a dense row of 10,000 homes stalls PIQP's KKT
factorisation); the daily minimum (Eq. 10) is left out of the rows where the load bounds imply it
(:func:`daily_minimum`; PIQP calls such rows infeasible otherwise).

What may change without rebuilding a problem is a :class:`Parameters`: the prices of Eqs. 1-5
(:class:`Prices`: p_t, q, lambda^b_t, lambda^s_t), the tie-break weight epsilon (``regularization``, MODEL.md
"Uniqueness") and a battery scale f. The battery's variables are per unit of the block's battery, so scaling
every battery by f keeps the problem DPP: the home's flows are f c', f e', f E' (:data:`BATTERY`,
:meth:`Handles.values`).

The two-stage clearing (issue 20, :mod:`desmarket.twostage`) is the same formulation with a
:class:`FirstStage`: a day-ahead purchase and sale per hour that every scenario of the block shares, and the
real-time imbalances of each scenario against them (:func:`formulate`).

The model is extended here and nowhere else: a new decision is a variable, its constraints and its objective
term in :func:`formulate` (the homes' part per row, the market's part per scenario of the block through
``block.scenario`` and ``block.scenario_weight``), a new price is a :class:`Parameters` entry and new data a
:class:`Block` field; every method then solves the extended model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from .case import Case, wholesale_price

#: Homes per partial sum in the trade balance (Eq. 18), so that no constraint row is dense.
TRADE_GROUP = 64
#: Homes per partial sum of the community's import and export in the two-stage clearing (:func:`_two_stage`).
#: Not :data:`TRADE_GROUP`: with the same groups as the trade balance, the ordering of PIQP's sparse LDL
#: factorisation fills in across scenarios once the day-ahead position links them. Measured (2026-12-02, PIQP's
#: factorisation time per iteration of the deterministic equivalent, ``data.build_case`` seed 0): at 300 homes x
#: 10 scenarios 2.8 s with groups of 64, 0.13 s with 8 (16: 0.23 s, 32: 0.26 s, 128: 0.37 s, a dense row: 0.13
#: s); at 1,000 x 10 8.1 s with 64, 0.53 s with 8 (4: 0.58 s, 16: 0.43 s, 200: 3.1 s). The problem and its
#: optimum are the same for any group size; only the time to reach it changes.
POSITION_GROUP = 8
#: The battery's variables: per unit of battery, scaled by ``Parameters.battery_scale`` (see :class:`Parameters`).
BATTERY = ("c", "e", "E")


class Prices(NamedTuple):
    """The prices an operation is costed with (Eqs. 1-5), as solved: a plain record, $/kWh."""

    retail: np.ndarray  # p_t, (T,)
    net_metering: float  # q
    buy: np.ndarray  # lambda^b_t = k^b LMP_t, (T,)
    sell: np.ndarray  # lambda^s_t = k^s LMP_t, (T,)

    @classmethod
    def of_case(cls, case: Case) -> Prices:
        return cls(case.retail, case.market.net_metering_usd_per_kwh, case.buy_price, case.sell_price)


class FirstStage(NamedTuple):
    """The day-ahead stage of the two-stage clearing [choice, issue 20]: what the block's scenarios share.

    The aggregator buys ``buy_kw`` b_t >= 0 day-ahead at lambda^b_t and sells ``sell_kw`` a_t >= 0 at
    lambda^s_t (Eq. 4); in each scenario the community's import and export are settled against them in real time,
    a shortfall bought at ``up`` = k^up LMP_t and an excess sold at ``down`` = k^dn LMP_t ($/kWh, (T,)).
    buy_kw, sell_kw: (T,) kW, a fixed position (the EEV problem, the realised day); None: the problem decides it.
    position_weight: the position's tie-break weight, $/kW^2 (epsilon / N homes, :meth:`of_case`; see
    :func:`formulate`), out of every reported value like epsilon itself.
    """

    up: np.ndarray  # k^up LMP_t, (T,) $/kWh
    down: np.ndarray  # k^dn LMP_t, (T,) $/kWh
    buy_kw: np.ndarray | None = None  # fixed b_t, (T,) kW; None: decided
    sell_kw: np.ndarray | None = None  # fixed a_t, (T,) kW; None: decided
    position_weight: float = 0.0  # $/kW^2

    @classmethod
    def of_case(cls, case: Case, buy_kw=None, sell_kw=None) -> FirstStage:
        """The case's imbalance prices (market.json ``imbalance_buy_ratio`` / ``imbalance_sell_ratio``, Eq. 4's
        rule for a negative LMP) and a position (default: decided), tie-break weight epsilon / N."""
        up, down = imbalance_prices(case)
        fixed = lambda v: None if v is None else np.asarray(v, dtype=float)
        weight = float(case.market.regularization) / max(case.n_homes, 1)
        return cls(up, down, fixed(buy_kw), fixed(sell_kw), weight)

    @property
    def fixed(self) -> bool:
        """True when the day-ahead position is given (not decided)."""
        return self.buy_kw is not None


def imbalance_prices(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(k^up LMP_t, k^dn LMP_t), (T,) $/kWh each: the real-time prices of a shortfall and an excess against the
    day-ahead position, by Eq. 4's rule (:func:`desmarket.case.wholesale_price`, so k^up LMP >= k^b LMP >= k^s
    LMP >= k^dn LMP for negative LMPs too)."""
    up, down = case.market.imbalance_ratios
    return wholesale_price(case.lmp, up), wholesale_price(case.lmp, down)


# ========================================================================================= data
class Block(NamedTuple):
    """The data of a set of (home, scenario) rows: everything its problem needs, numpy only (cheap to ship).

    Rows are home-major; arrays (R, T) or (R,). ``weight`` is each row's weight in the objective: 1 for a
    piece or a home, pi_s for the central block (:func:`case_block`). Rows of one scenario have one weight.
    """

    rows: np.ndarray  # (R,) flat row index home * S + scenario in the case
    scenario: np.ndarray  # (R,) index of the row's trade balance within the block (0..K-1)
    weight: np.ndarray  # (R,) objective weight of the row
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
    prices: Prices  # the initial values of the problem's Parameters
    regularization: float  # epsilon, $/kW^2, the initial value

    @property
    def scenario_weight(self) -> np.ndarray:
        """(K,) the weight of each of the block's scenarios (that of its rows)."""
        weight = np.zeros(self.scenario.max() + 1)
        weight[self.scenario] = self.weight
        return weight


def case_block(case: Case, rows: np.ndarray, trade_limit: np.ndarray | None = None, *, weighted: bool = False) -> Block:
    """The :class:`Block` of some flat rows (home * S + scenario) of a case.

    trade_limit: x_bar per home (N,), default grid_limit_kw. weighted: each row weighs its scenario's
    probability pi_s (the central block of all rows); default 1 per row (a piece, a home).
    """
    rows = np.asarray(rows)
    s_count, t = case.n_scenarios, case.load.shape[-1]
    home, scen = np.divmod(rows, s_count)
    col = lambda name: case.column(name)[home]
    load = case.load.reshape(-1, t)[rows]
    cap = col("battery_kwh")
    x_bar = case.column("grid_limit_kw") if trade_limit is None else trade_limit
    return Block(
        rows=rows,
        scenario=np.unique(scen, return_inverse=True)[1],
        weight=case.probability[scen] if weighted else np.ones(len(rows)),
        load=load,
        pv=case.pv.reshape(-1, t)[rows],
        load_min=col("load_min_factor")[:, None] * load,
        load_max=col("load_max_factor")[:, None] * load,
        battery_kw=col("battery_kw"),
        e_min=cap * col("soc_min"),
        e_max=cap * col("soc_max"),
        e0=cap * col("soc_initial"),
        eta_c=col("eta_charge"),
        eta_d=col("eta_discharge"),
        grid=col("grid_limit_kw"),
        trade_limit=np.asarray(x_bar, dtype=float)[home],
        a=col("utility_a"),
        b=col("utility_b"),
        prices=Prices.of_case(case),
        regularization=float(case.market.regularization),
    )


def check_battery_scale(battery_scale: float) -> float:
    """A battery scale f (multiplies every battery's kWh and kW) must be a finite number >= 0."""
    if not np.isfinite(battery_scale) or battery_scale < 0:
        raise ValueError(f"battery_scale must be a finite number >= 0, got {battery_scale!r}")
    return float(battery_scale)


# =================================================================================== parameters
class Parameters:
    """The cvxpy Parameters of a formulated block: what a question may change without rebuilding it.

    ``retail`` p_t, ``net_metering`` q, ``buy`` lambda^b_t, ``sell`` lambda^s_t ($/kWh), the tie-break weight
    epsilon (``regularization``, $/kW^2) and ``battery_scale`` f >= 0, which multiplies every battery's capacity
    and power (Eqs. 11-15; 0 removes the batteries, 2 doubles them). Scaling a battery scales its feasible
    schedules by f (same efficiencies and state-of-charge fractions), so the problem solves for the schedule
    c', e', E' of the block's own battery and the flows are f c', f e', f E': the variable bounds stay constants
    and the problem stays DPP (cvxpy re-solves it without compiling again). The tie-break term
    epsilon sum w (c^2 + e^2) is then epsilon f^2 sum w (c'^2 + e'^2): one Parameter,
    ``regularization_per_unit`` = epsilon f^2.
    """

    def __init__(self, prices: Prices, regularization: float, battery_scale: float = 1.0):
        t = len(prices.retail)
        self.retail = cp.Parameter(t, name="retail")  # p_t, $/kWh
        self.net_metering = cp.Parameter(name="net_metering", nonneg=True)  # q, $/kWh
        self.buy = cp.Parameter(t, name="buy")  # lambda^b_t, $/kWh
        self.sell = cp.Parameter(t, name="sell")  # lambda^s_t, $/kWh
        self.regularization_per_unit = cp.Parameter(name="regularization_per_unit", nonneg=True)  # eps f^2
        self.battery_scale = cp.Parameter(name="battery_scale", nonneg=True)  # f
        self.set(prices, regularization, battery_scale)

    def set(self, prices: Prices, regularization: float, battery_scale: float = 1.0) -> None:
        """Give the Parameters new values (the next solve of the problem uses them)."""
        check_battery_scale(battery_scale)
        self.retail.value, self.net_metering.value = prices.retail, prices.net_metering
        self.buy.value, self.sell.value = prices.buy, prices.sell
        self.regularization_per_unit.value = regularization * battery_scale**2
        self.battery_scale.value = battery_scale
        self._regularization = float(regularization)

    @property
    def regularization(self) -> float:
        """epsilon, $/kW^2: the tie-break weight the problem is solved with."""
        return self._regularization

    def prices(self) -> Prices:
        """The current price values, as the :class:`Prices` an operation is costed with."""
        value = lambda p: np.asarray(p.value, dtype=float)
        return Prices(value(self.retail), float(value(self.net_metering)), value(self.buy), value(self.sell))


class Handles(NamedTuple):
    """Variables (R rows x T hours) of a formulated block, its Parameters and its data.

    ``trade_balance`` is Eq. 18, (K, T) one row per scenario of the block and hour (None in M1 and for a
    home of the coordinated process); :func:`clearing_price` reads its dual. c, e, E are per unit of battery:
    read the flows with :meth:`values`.
    """

    d: cp.Variable  # load, kW
    g: cp.Variable  # PV used, kW
    c: cp.Variable  # battery charge, kW per unit of battery
    e: cp.Variable  # battery discharge, kW per unit of battery
    E: cp.Variable  # stored energy at the end of each hour, kWh per unit of battery
    Pl: cp.Variable | None  # net load bought from the aggregator, kW (None: the pooled two-stage problem)
    Ps: cp.Variable | None  # net surplus sold to the aggregator, kW (None: the pooled two-stage problem)
    x: cp.Variable | None  # trade, kW, + = supplies the local market (clearing only)
    trade_balance: cp.Constraint | None  # Eq. 18, (K, T)
    parameters: Parameters
    block: Block
    first_stage: FirstStage | None = None  # the two-stage clearing's prices and fixed position (None: one stage)
    buy_kw: cp.Variable | None = None  # day-ahead purchase b_t, (1, T) kW (two stages with a decided position)
    sell_kw: cp.Variable | None = None  # day-ahead sale a_t, (1, T) kW

    def day_ahead(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The day-ahead purchase and sale (b_t, a_t), (T,) kW each, of a solved two-stage block (None: one stage)."""
        if self.first_stage is None:
            return None
        if self.first_stage.buy_kw is not None and self.first_stage.sell_kw is not None:  # a fixed position
            return self.first_stage.buy_kw, self.first_stage.sell_kw
        read = lambda v: np.maximum(np.asarray(v.value, dtype=float).reshape(-1), 0.0)  # solver noise below 0
        return read(self.buy_kw), read(self.sell_kw)

    # the Parameters by name, as the central problem's handles have always offered them
    @property
    def retail(self) -> cp.Parameter:
        return self.parameters.retail

    @property
    def net_metering(self) -> cp.Parameter:
        return self.parameters.net_metering

    @property
    def buy(self) -> cp.Parameter:
        return self.parameters.buy

    @property
    def sell(self) -> cp.Parameter:
        return self.parameters.sell

    @property
    def weight(self) -> np.ndarray:
        return self.block.weight

    def values(self, keys) -> dict:
        """The solved (R, T) arrays by name, battery flows scaled by the battery scale (see :class:`Parameters`)."""
        scale = float(np.asarray(self.parameters.battery_scale.value))
        return {k: np.asarray(getattr(self, k).value, dtype=float) * (scale if k in BATTERY else 1.0) for k in keys}


# ================================================================================== the model
def formulate(
    block: Block,
    market: bool,
    parameters: Parameters | None = None,
    *,
    trade_balance: bool = True,
    cyclic_storage: bool = False,
    first_stage: FirstStage | None = None,
) -> tuple[cp.Problem, Handles]:
    """M1 (Eqs. 5-15) or the market clearing (Eqs. 16-19) over the block's rows: the one builder of the model.

    Objective, $ per day, each row r weighted by w_r (``block.weight``):
      M1      sum_r w_r sum_t [p_t Pl - q Ps - U(d)] + eps sum_r w_r sum_t (c^2 + e^2)              (Eq. 5)
      market  sum_r w_r sum_t [lambda^b_t Pl - lambda^s_t Ps - U(d)] + eps sum_r w_r sum_t (c^2 + e^2)  (Eq. 16)
    (in the clearing the retail and net-metering terms of sum_i C_i - R_A cancel: the coalition faces the
    wholesale prices; MODEL.md). parameters: the problem's :class:`Parameters` (default: new ones at the block's
    prices and epsilon, battery scale 1). trade_balance=False leaves Eq. 18 out (a home of the coordinated
    process). cyclic_storage=True replaces Eq. 15 (the day ends at the fixed start state E0) by a daily cycle
    [choice, for the horizon study: :mod:`desmarket.horizon`]: the day starts and ends at the same state, which
    the optimum chooses within [E_min, E_max], so midnight forces no refill.

    first_stage (market only): the two-stage clearing of issue 20 [choice], a :class:`FirstStage`. The
    aggregator's day-ahead purchase b_t >= 0 and sale a_t >= 0 are shared by the block's scenarios k; in each the
    community's import and export are settled against them,
      sum_i Pl_{i,k,t} = b_t + u^l_{k,t} - v^l_{k,t},   sum_i Ps_{i,k,t} = a_t + v^s_{k,t} - u^s_{k,t},
    a shortfall u = u^l + u^s >= 0 bought at k^up LMP, an excess v = v^l + v^s >= 0 sold at k^dn LMP, so that
    sum_i (Pl - Ps) = b - a + u - v (the issue's balance) with import and export each settled against its own
    schedule, as Eq. 16 prices them (netting happens in the local market, Eq. 18, not at the aggregator: with
    k^up = k^b and k^dn = k^s the problem is the one-stage clearing exactly, congested hours included). The
    wholesale term of Eq. 16 becomes
      lambda^b . b - lambda^s . a + sum_k w_k [k^up LMP . u_k - k^dn LMP . v_k]
    plus a tie-break of the position, ``position_weight`` (b.b + a.a) (epsilon / N: the day-ahead quantile may be
    any point of an interval, and this picks the one nearest zero; out of every reported value). A fixed
    position (``first_stage.buy_kw``) is data, and the scenarios separate. Returns the problem and its
    :class:`Handles`.
    """
    R, T = block.load.shape
    p = parameters if parameters is not None else Parameters(block.prices, block.regularization)
    w = np.asarray(block.weight, dtype=float)
    home = _home_rows(block, p, cyclic_storage)
    d, g, c, e, E = home.d, home.g, home.c, home.e, home.E
    net, disutility, spread = home.net, home.disutility, home.spread
    per_row, zero = home.per_row, np.zeros((R, T))
    Pl = cp.Variable((R, T), name="net_load", bounds=[zero, per_row(block.grid)])  # Eq. 7
    Ps = cp.Variable((R, T), name="net_surplus", bounds=[zero, per_row(block.grid)])  # Eq. 7
    constraints = home.constraints

    # ------------------------------------------------------------ M1 (Eqs. 5-6) or the clearing (Eqs. 16-19)
    x = balance = None
    if market:
        x_bar = per_row(block.trade_limit)
        x = cp.Variable((R, T), name="trade", bounds=[-x_bar, x_bar])  # Eq. 19
        constraints.append(Pl - Ps == net + x)  # Eq. 17
        cost = w @ (Pl @ p.buy) - w @ (Ps @ p.sell)  # wholesale (Eq. 16)
    else:
        constraints.append(Pl - Ps == net)  # Eq. 6
        cost = w @ (Pl @ p.retail) - p.net_metering * (w @ cp.sum(Ps, axis=1))  # Eq. 5
    if market and trade_balance:
        to_groups, to_scen = _group_sums(block.scenario, TRADE_GROUP)
        partial = cp.Variable((to_groups.shape[0], T), name="trade_partial_sums")
        balance = to_scen @ partial == 0  # Eq. 18, sum_i x = 0, one row per (scenario, hour)
        constraints += [partial == to_groups @ x, balance]
    objective = cost + disutility + p.regularization_per_unit * spread
    buy_kw = sell_kw = None
    if first_stage is not None:
        if not (market and trade_balance):
            raise ValueError("a first stage needs the market clearing with its trade balance (market=True)")
        objective, stage_constraints, buy_kw, sell_kw = _two_stage(block, _summed(block, Pl, Ps), p, first_stage)
        objective = objective + disutility + p.regularization_per_unit * spread
        constraints += stage_constraints
    problem = cp.Problem(cp.Minimize(objective), constraints)
    return problem, Handles(d, g, c, e, E, Pl, Ps, x, balance, p, block, first_stage, buy_kw, sell_kw)


class _HomeRows(NamedTuple):
    """Each row's variables, constraints (Eqs. 8-15) and objective terms, shared by every problem of the model."""

    d: cp.Variable
    g: cp.Variable
    c: cp.Variable
    e: cp.Variable
    E: cp.Variable
    constraints: list
    net: cp.Expression  # net consumption d + f (c - e) - g, kW
    disutility: cp.Expression  # - E[U], $ (Eq. 5)
    spread: cp.Expression  # sum_r w_r sum_t (c^2 + e^2), the tie-break before its weight
    per_row: Callable


def _home_rows(block: Block, p: Parameters, cyclic_storage: bool) -> _HomeRows:
    """Each row (a home in a scenario) of :func:`formulate` and :func:`formulate_pooled`: Eqs. 8-15 and U (Eq. 5)."""
    R, T = block.load.shape
    per_row = lambda v: np.broadcast_to(np.asarray(v, dtype=float)[:, None], (R, T))
    zero = np.zeros((R, T))
    w = np.asarray(block.weight, dtype=float)
    d = cp.Variable((R, T), name="load", bounds=[block.load_min, block.load_max])  # Eq. 9
    g = cp.Variable((R, T), name="pv_used", bounds=[zero, block.pv])  # Eq. 8
    c = cp.Variable((R, T), name="charge", bounds=[zero, per_row(block.battery_kw)])  # Eq. 11, per unit
    e = cp.Variable((R, T), name="discharge", bounds=[zero, per_row(block.battery_kw)])  # Eq. 12, per unit
    E = cp.Variable((R, T), name="energy", bounds=[per_row(block.e_min), per_row(block.e_max)])  # Eq. 14, per unit
    start: cp.Expression | np.ndarray
    if cyclic_storage:  # a daily cycle: E_{-1} = E_23, free within the limits (replaces Eq. 15)
        start = cp.Variable((R, 1), name="energy_start", bounds=[block.e_min[:, None], block.e_max[:, None]])
        end_state = E[:, -1:] == start
    else:
        start, end_state = block.e0[:, None], E[:, -1] == block.e0  # Eq. 15
    stored_before = cp.hstack([start, E[:, :-1]])  # E_{t-1}, with E_{-1} = E0 (or the cycle's start)
    constraints = daily_minimum(d, block) + [  # Eq. 10
        E == stored_before + cp.multiply(per_row(block.eta_c), c) - cp.multiply(per_row(1 / block.eta_d), e),  # 13
        end_state,
    ]
    net = d + p.battery_scale * (c - e) - g  # net consumption d + c - e - g
    # - E[U] = sum_r w_r sum_t (|a| d^2 - b d), U = a d^2 + b d (Eq. 5); tie-break sum_r w_r sum_t (c^2 + e^2)
    disutility = cp.sum(cp.multiply(per_row(-block.a * w), cp.square(d))) - cp.sum(cp.multiply(per_row(block.b * w), d))
    spread = cp.sum(cp.multiply(per_row(w), cp.square(c))) + cp.sum(cp.multiply(per_row(w), cp.square(e)))
    return _HomeRows(d, g, c, e, E, constraints, net, disutility, spread, per_row)


def formulate_pooled(
    block: Block, first_stage: FirstStage, parameters: Parameters | None = None
) -> tuple[cp.Problem, Handles]:
    """The two-stage clearing of :func:`formulate` with the routing left out [choice, issue 20]: a relaxation
    with the same objective, exact whenever its solution can be routed (:func:`desmarket.coalitions.routing`).

    Per row only d, g, c, e, E and their own constraints (Eqs. 8-15) stay. The community's net consumption
    sum_i (d + c - e - g) per scenario k and hour t is met by one import I_{k,t} >= 0 and one export X_{k,t} >= 0,
    I - X = sum_i n_i, which Eq. 17 summed over the homes gives once the trades cancel (Eq. 18); I and X are
    settled against the day-ahead position as sum_i Pl and sum_i Ps are in :func:`formulate`. So Pl, Ps, x, the
    trade balance's partial sums and the grid and trade limits (Eqs. 7, 17-19) drop out: about 40 % of the
    variables. The row I - X - sum_i n_i = 0 is sum_i x = 0 written without x, so its dual is the clearing price
    (:func:`clearing_price`, ``Handles.trade_balance``) wherever no limit binds. The optimum is the clearing's
    when some Pl, Ps, x meet Eqs. 7, 17-19 with sum_i Pl = I and sum_i Ps = X; the caller checks that (the
    engine's pooled route). Returns the problem and its :class:`Handles` (Pl, Ps, x None).
    """
    p = parameters if parameters is not None else Parameters(block.prices, block.regularization)
    home = _home_rows(block, p, cyclic_storage=False)
    *totals, balance = _pooled(block, home.net)
    objective, stage_constraints, buy_kw, sell_kw = _two_stage(block, tuple(totals), p, first_stage)
    objective = objective + home.disutility + p.regularization_per_unit * home.spread
    problem = cp.Problem(cp.Minimize(objective), home.constraints + stage_constraints)
    handles = Handles(home.d, home.g, home.c, home.e, home.E, None, None, None, balance, p, block, first_stage)
    return problem, handles._replace(buy_kw=buy_kw, sell_kw=sell_kw)


def _summed(block: Block, Pl: cp.Variable, Ps: cp.Variable) -> tuple:
    """(sum_i Pl, sum_i Ps, their constraints) per scenario and hour, (K, T), through partial sums of at most
    :data:`POSITION_GROUP` homes (no dense row)."""
    to_groups, to_scen = _group_sums(block.scenario, POSITION_GROUP)
    T = Pl.shape[1]
    imports = cp.Variable((to_groups.shape[0], T), name="import_partial_sums")
    exports = cp.Variable((to_groups.shape[0], T), name="export_partial_sums")
    return to_scen @ imports, to_scen @ exports, [imports == to_groups @ Pl, exports == to_groups @ Ps]


def _pooled(block: Block, net: cp.Expression) -> tuple:
    """(I, X, constraints, balance) of :func:`formulate_pooled`: the community's import and export (K, T) and the
    row I - X = sum_i n_i (partial sums of at most :data:`POSITION_GROUP` homes)."""
    to_groups, to_scen = _group_sums(block.scenario, POSITION_GROUP)
    K, T = to_scen.shape[0], net.shape[1]
    nets = cp.Variable((to_groups.shape[0], T), name="net_partial_sums")
    imports = cp.Variable((K, T), name="community_import", nonneg=True)
    exports = cp.Variable((K, T), name="community_export", nonneg=True)
    balance = imports - exports - to_scen @ nets == 0  # sum_i x = 0 without x (Eq. 18): its dual is the price
    return imports, exports, [nets == to_groups @ net, balance], balance


def _two_stage(block: Block, totals: tuple, p: Parameters, stage: FirstStage) -> tuple:
    """The wholesale part of the two-stage clearing (see :func:`formulate`): objective, constraints, b and a.

    ``totals``: (the community's import, its export, (K, T) each, their constraints) (:func:`_summed`,
    :func:`_pooled`).
    """
    imports, exports, constraints = totals
    K, T = imports.shape
    every = np.ones((K, 1))  # the day-ahead position, the same in each of the block's K scenarios
    b: cp.Expression | np.ndarray
    a: cp.Expression | np.ndarray
    if stage.fixed:
        buy_kw = sell_kw = None
        b = np.asarray(stage.buy_kw, dtype=float).reshape(1, T)
        a = np.asarray(stage.sell_kw, dtype=float).reshape(1, T)
        position_cost = 0.0
    else:
        buy_kw = cp.Variable((1, T), name="day_ahead_buy", nonneg=True)
        sell_kw = cp.Variable((1, T), name="day_ahead_sell", nonneg=True)
        b, a = buy_kw, sell_kw
        position_cost = stage.position_weight * (cp.sum_squares(buy_kw) + cp.sum_squares(sell_kw))
    short_import, excess_import, short_export, excess_export = (
        cp.Variable((K, T), name=name, nonneg=True)
        for name in ("short_import", "excess_import", "short_export", "excess_export")
    )
    constraints = constraints + [
        imports == every @ b + short_import - excess_import,  # sum_i Pl = b + u^l - v^l
        exports == every @ a + excess_export - short_export,  # sum_i Ps = a + v^s - u^s
    ]
    wk = block.scenario_weight[:, None]
    real_time = cp.sum(cp.multiply(wk * stage.up[None, :], short_import + short_export)) - cp.sum(
        cp.multiply(wk * stage.down[None, :], excess_import + excess_export)
    )
    day_ahead = cp.sum(b @ p.buy) - cp.sum(a @ p.sell)
    return day_ahead + real_time + position_cost, constraints, buy_kw, sell_kw


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
    groups_to_scen = sp.csr_matrix(
        (np.ones(len(groups)), (groups[:, 0], np.arange(len(groups)))), shape=(scenario.max() + 1, len(groups))
    )
    return rows_to_groups, groups_to_scen


def clearing_price(handles: Handles, case: Case | None = None) -> np.ndarray:
    """Local clearing price lambda_{s,t} per scenario of the block: the one place that fixes its sign and units.

    It is the dual of the trade balance sum_i x_{i,s,t} = 0 (Eq. 18) divided by the block's weight of that
    scenario (pi_s in the central block, 1 in a piece), signed as the marginal value of one more kWh supplied
    to the local market: it equals lambda^b_t = k^b LMP_t when the community imports and lambda^s_t = k^s LMP_t
    when it exports, unless a grid or trade limit binds (``Operation.congested``: then it prices the scarcity,
    possibly outside [k^s LMP, k^b LMP]; :func:`desmarket.model.price_states`). cvxpy's dual of the balance is
    the derivative of the optimal cost with respect to a right-hand side that *adds* supply to the market, with
    the opposite sign, hence the minus sign.

    Parameters
    ----------
    handles : Handles
        The handles of a solved market clearing (:func:`desmarket.model.build_clearing`, or a piece).
    case : Case, optional
        Not needed (the weights are the block's); accepted for ``dm.clearing_price(handles, case)``.

    Returns
    -------
    numpy.ndarray
        (K, T) $/kWh, one row per scenario of the block ((S, T) for the central problem).

    Raises
    ------
    ValueError
        For the handles of M1, which has no trade balance.
    """
    weight = handles.block.scenario_weight
    if handles.trade_balance is None:
        raise ValueError("clearing_price needs the handles of a market clearing (M1 has no trade balance, Eq. 18)")
    dual = np.asarray(handles.trade_balance.dual_value, dtype=np.float64).reshape(len(weight), -1)
    return -dual / weight[:, None]


def operation_objective(
    probability: np.ndarray,
    arrays: dict,
    prices: Prices,
    regularization: float,
    utility_a: np.ndarray,
    utility_b: np.ndarray,
    market: bool,
) -> float:
    """The objective of :func:`formulate` over all rows weighted by pi_s (M1, Eq. 5 summed over homes; the
    clearing, Eq. 16), evaluated at a dispatch of (N, S, T) arrays (the solver's own flows).

    M1: sum pi [p Pl - q Ps - U(d)] + eps sum pi (c^2 + e^2); clearing: sum pi [lb Pl - ls Ps - U(d)] + eps ....
    It is the optimal value of the central problem, whichever method found the dispatch.
    """
    a, b = utility_a[:, None, None], utility_b[:, None, None]
    if market:
        per_hour = prices.buy * arrays["Pl"] - prices.sell * arrays["Ps"]
    else:
        per_hour = prices.retail * arrays["Pl"] - prices.net_metering * arrays["Ps"]
    d, c, e = arrays["d"], arrays["c"], arrays["e"]
    per_hour = per_hour - (a * d**2 + b * d) + regularization * (c**2 + e**2)
    return float(np.einsum("s,nst->", probability, per_hour))


# ================================================================ the two-stage wholesale account
def imbalances(imports, exports, buy_kw, sell_kw) -> tuple[np.ndarray, np.ndarray]:
    """(shortfall u, excess v), (S, T) kW each: the real-time imbalances of the two-stage clearing (formulate).

    imports, exports: (S, T) the community's sum_i Pl and sum_i Ps, kW; buy_kw, sell_kw: (T,) the day-ahead
    purchase b and sale a. u = (sum Pl - b)+ + (a - sum Ps)+ is bought at k^up LMP, v = (b - sum Pl)+ + (sum Ps - a)+
    sold at k^dn LMP, so that sum (Pl - Ps) = b - a + u - v.
    """
    b, a = np.asarray(buy_kw, dtype=float), np.asarray(sell_kw, dtype=float)
    short = np.maximum(imports - b, 0.0) + np.maximum(a - exports, 0.0)
    excess = np.maximum(b - imports, 0.0) + np.maximum(exports - a, 0.0)
    return short, excess


def two_stage_wholesale(probability, imports, exports, buy_kw, sell_kw, prices: Prices, stage: FirstStage) -> float:
    """The aggregator's expected wholesale cost under two stages, $ per day (the wholesale part of formulate):
    lambda^b . b - lambda^s . a + sum_s pi_s sum_t [k^up LMP u - k^dn LMP v] (:func:`imbalances`)."""
    short, excess = imbalances(imports, exports, buy_kw, sell_kw)
    day_ahead = float(np.dot(prices.buy, buy_kw) - np.dot(prices.sell, sell_kw))
    return day_ahead + float(np.einsum("s,st->", probability, stage.up * short - stage.down * excess))


def newsvendor_position(flow: np.ndarray, probability: np.ndarray, price, up, down, side: str) -> np.ndarray:
    """The aggregator's best day-ahead purchase (side "buy") or sale ("sell") for known flows per scenario, (T,) kW.

    flow: (S, T) the community's import sum Pl (buy) or export sum Ps (sell) in each scenario, kW; price: (T,)
    lambda^b (buy) or lambda^s (sell); up, down: (T,) k^up LMP, k^dn LMP, $/kWh. The expected cost of a position
    y >= 0 (the wholesale part of :func:`formulate` without home variables) is convex and piecewise linear with
    kinks at the flows; its minimisers are the y whose cumulative probability F(y) = P(flow <= y) reaches the
    critical ratio (k^up - k^b)/(k^up - k^dn) for a purchase, (k^s - k^dn)/(k^up - k^dn) for a sale (the
    newsvendor quantile). Returned: the smallest such y, the point of the optimal interval nearest zero that the
    position's tie-break of :func:`formulate` picks; 0 where the ratio is 0 (no reason to commit ahead).
    """
    flow = np.asarray(flow, dtype=float)
    spread = np.asarray(up, dtype=float) - np.asarray(down, dtype=float)
    gain = (up - price) if side == "buy" else (price - down)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(spread > 0, gain / spread, 0.0)  # (T,)
    order = np.argsort(flow, axis=0, kind="stable")
    ranked = np.take_along_axis(flow, order, axis=0)  # (S, T) ascending
    cumulative = np.cumsum(np.asarray(probability, dtype=float)[order], axis=0)
    first = np.argmax(cumulative >= ratio[None, :] - QUANTILE_TOLERANCE, axis=0)  # first y with F(y) >= ratio
    position = np.maximum(ranked[first, np.arange(flow.shape[1])], 0.0)
    return np.where(ratio > QUANTILE_TOLERANCE, position, 0.0)


#: Cumulative probabilities within this of the critical ratio count as reaching it (float sums of pi_s).
QUANTILE_TOLERANCE = 1e-9
