"""Coalition values of the market game from one grand clearing built once, homes masked out by a Parameter.

v(S) for a set S of homes with the aggregator is the cooperative surplus (Eq. 20) of S's sub-community: the
M1 parts of its homes (:func:`home_parts`) minus the cost sum C* - R_A* of S cleared alone (Eqs. 16-19).
:mod:`desmarket.fairness` computes it by building and clearing ``case.select(S)``, one problem per coalition.
Here the grand clearing (:func:`desmarket.formulation.formulate` over every row, weighted by pi_s) is built once
and a coalition is one re-solve: a Parameter m_i in {0, 1} per home bounds its trade, -m_i x_bar <= x_i <= m_i
x_bar. A home with m_i = 0 cannot trade, so it is decoupled from the others and meets its net consumption at
the wholesale prices alone; the homes of S clear among themselves exactly as in the sub-community's own
clearing. The cost of S is read from the solved flows of its homes only (wholesale cost minus utility, the
tie-break left out, as every reported cost). The problem stays DPP, so cvxpy does not compile it again, and
PIQP re-uses its set-up (``warm_start``).

Two special masks: all zeros gives every home's stand-alone value v({aggregator, i}) at once (a home alone
with the aggregator cannot trade either); all ones gives v(N) = Delta C.

Faster, to the same values (:func:`certified_values`, ``fairness.coalition_values(..., method="direct")``): the
clearing separates by scenario (Eq. 18 holds per scenario and hour), so each scenario's clearing of all homes
is compiled once by cvxpy into PIQP's data (:class:`ScenarioProgram`) and a coalition is that problem cut down
to its members' columns and rows, handed to PIQP directly (no cvxpy call, no Parameter tensor, so it also
works at 1,000 homes). A coalition of at most :data:`REDUCED_MAX_HOMES` homes is first solved as the reduced
problem, the clearing with the routing taken out (the members' Eq. 17 rows summed, so only their hourly net
is priced: Eqs. 16-19 without Pl, Ps, x and the limits), which is exact whenever its nets can be routed within
every limit (:func:`routable`; otherwise the full problem is solved), and coalitions of one size are solved
together as one block-diagonal problem (:meth:`ScenarioProgram.solve_many`). A solved coalition whose price is
pinned (no limit binding, a non-zero net every hour) certifies the sub-coalitions that keep its sign, without a
solve (:func:`certified_costs`).
"""

from __future__ import annotations

from typing import NamedTuple

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from .case import Case
from .formulation import TRADE_GROUP, case_block, formulate
from .model import DEFAULT_SOLVER_OPTIONS, Operation
from .pieces import map_chunks, solve_with_fallback

#: Solver of the masked clearing: PIQP (as the decomposed engine), Clarabel if it does not return optimal.
MASKED_SOLVER = "PIQP"
#: Chunks of coalitions (one joblib task each, one problem built per chunk); fixed, so values do not depend on
#: the number of workers.
MASKED_CHUNKS = 8
#: Largest number of (home, scenario) rows of a masked grand problem. cvxpy stores the effect of the mask
#: Parameter as a dense tensor of (rows x hours) x rows entries (108 GiB at 1,000 homes x 10 scenarios), so
#: above this each coalition's clearing is built over its own rows instead (:func:`coalition_cost`).
MAX_MASKED_ROWS = 2000
#: Homes per problem of :func:`standalone_values` (each home alone: its trades fixed at zero).
STANDALONE_CHUNK = 64


def home_parts(case: Case, independent: Operation) -> np.ndarray:
    """(N,) each home's share of sum C^0 - R_A^0 in M1, $ per day: its cost C_i^0 minus the aggregator's margin
    on it (Eq. 1). M1 separates by home, so a sub-community's C^0 - R_A^0 is the sum of its homes' parts."""
    pi, q = case.probability, case.market.net_metering_usd_per_kwh
    margin = (case.retail - case.buy_price) * independent.net_load + (case.sell_price - q) * independent.net_surplus
    return independent.home_cost - np.einsum("s,nst->n", pi, margin)


class MaskedClearing:
    """The grand clearing of a case built once; :meth:`home_costs` re-solves it for one coalition of homes.

    Parameters
    ----------
    case : Case
        The community; player k >= 1 of the game is home k - 1.
    solver : str
        cvxpy solver name (default :data:`MASKED_SOLVER`); a status other than optimal falls back to Clarabel
        and then raises :class:`~desmarket.errors.SolverError`.
    """

    def __init__(self, case: Case, solver: str = MASKED_SOLVER):
        n, s, t = case.load.shape
        self.case, self.solver, self.n_scenarios = case, solver, s
        self.block = case_block(case, np.arange(n * s), weighted=True)
        problem, self.handles = formulate(self.block, market=True)
        self.mask = cp.Parameter(n * s, nonneg=True, name="in_coalition")  # per (home, scenario) row
        limit = cp.reshape(cp.multiply(self.mask, self.block.trade_limit), (n * s, 1), order="C") @ np.ones((1, t))
        self.problem = cp.Problem(
            problem.objective, [*problem.constraints, self.handles.x <= limit, -limit <= self.handles.x]
        )
        self.options = {**DEFAULT_SOLVER_OPTIONS.get(solver.upper(), {}), "warm_start": True}

    def home_costs(self, members: np.ndarray) -> np.ndarray:
        """(N,) each home's wholesale cost minus utility, $ per day, with the homes ``members`` trading together.

        Parameters
        ----------
        members : (N,) bool
            The coalition's homes; the others cannot trade (each alone with the aggregator).

        Returns
        -------
        (N,) float: sum_s pi_s sum_t [lambda^b Pl - lambda^s Ps - U(d)] per home (Eq. 16 by home, no tie-break).
        """
        self.mask.value = np.repeat(np.asarray(members, dtype=float), self.n_scenarios)
        solve_with_fallback(self.problem, self.solver, self.options)
        v = self.handles.values(("d", "Pl", "Ps"))
        b = self.block
        per_row = (
            v["Pl"] @ b.prices.buy
            - v["Ps"] @ b.prices.sell
            - (b.a[:, None] * v["d"] ** 2 + b.b[:, None] * v["d"]).sum(1)
        )
        return np.bincount(b.rows // self.n_scenarios, weights=b.weight * per_row, minlength=self.case.n_homes)


def _block_costs(case: Case, homes: np.ndarray, trade_limit: np.ndarray | None, solver: str) -> np.ndarray:
    """(len(homes),) wholesale cost minus utility of each of ``homes`` (indices), $ per day, from one clearing
    of their rows (weighted by pi_s); ``trade_limit`` (N,) zeros makes every home trade nothing (alone)."""
    s = case.n_scenarios
    rows = (np.asarray(homes)[:, None] * s + np.arange(s)).reshape(-1)
    block = case_block(case, rows, trade_limit, weighted=True)
    problem, handles = formulate(block, market=True)
    solve_with_fallback(problem, solver, DEFAULT_SOLVER_OPTIONS.get(solver.upper(), {}))
    v = handles.values(("d", "Pl", "Ps"))
    per_row = v["Pl"] @ block.prices.buy - v["Ps"] @ block.prices.sell
    per_row = per_row - (block.a[:, None] * v["d"] ** 2 + block.b[:, None] * v["d"]).sum(1)
    return (block.weight * per_row).reshape(len(homes), s).sum(axis=1)


def coalition_cost(case: Case, members: np.ndarray, solver: str = MASKED_SOLVER) -> float:
    """sum C* - R_A* of the homes ``members`` ((N,) bool) cleared alone with the aggregator, $ per day, from a
    problem built over their rows only (for communities too large to mask, :data:`MAX_MASKED_ROWS`)."""
    return float(_block_costs(case, np.flatnonzero(members), None, solver).sum())


def _values_task(masks: list, case: Case, parts: np.ndarray, solver: str) -> list[float]:
    if case.n_homes * case.n_scenarios > MAX_MASKED_ROWS:
        return [float(parts[m].sum() - coalition_cost(case, np.asarray(m, dtype=bool), solver)) for m in masks]
    clearing = MaskedClearing(case, solver)
    out = []
    for m in masks:
        m = np.asarray(m, dtype=bool)
        out.append(float(parts[m].sum() - clearing.home_costs(m)[m].sum()))
    return out


def masked_values(
    case: Case,
    independent: Operation,
    masks,
    n_jobs: int | None = -1,
    solver: str = MASKED_SOLVER,
    chunks: int = MASKED_CHUNKS,
) -> np.ndarray:
    """v({aggregator} + S) for each home set S given as a bool row of ``masks`` (k, N), $ per day (Eq. 20).

    Parameters
    ----------
    case, independent : the community and its M1 (:func:`desmarket.solve_independent`).
    masks : (k, N) bool, one coalition of homes per row; an empty row is worth 0.
    n_jobs : joblib workers over ``chunks`` fixed chunks (each builds the grand problem once); the values do
        not depend on it.

    Returns
    -------
    (k,) float, $ per day.
    """
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    parts = home_parts(case, independent)
    out = np.zeros(len(masks))
    todo = np.flatnonzero(masks.any(axis=1))
    if len(todo):
        out[todo] = map_chunks(_values_task, list(masks[todo]), (case, parts, solver), n_jobs, chunks)
    return out


def standalone_values(case: Case, independent: Operation, solver: str = MASKED_SOLVER) -> np.ndarray:
    """(N,) s_i = v({aggregator, i}), $ per day: each home's own problem at the wholesale prices (a home alone with
    the aggregator cannot trade), solved for :data:`STANDALONE_CHUNK` homes at a time with every trade fixed at
    zero (the homes are then independent)."""
    parts = home_parts(case, independent)
    zero = np.zeros(case.n_homes)
    costs = [
        _block_costs(case, np.arange(k, min(k + STANDALONE_CHUNK, case.n_homes)), zero, solver)
        for k in range(0, case.n_homes, STANDALONE_CHUNK)
    ]
    return parts - np.concatenate(costs)


def leave_one_out_values(
    case: Case, independent: Operation, n_jobs: int | None = -1, solver: str = MASKED_SOLVER
) -> tuple[np.ndarray, float]:
    """(v(N - {i}) for every home i (N,), v(N)), $ per day: N + 1 masked solves, in parallel chunks."""
    n = case.n_homes
    masks = np.vstack([~np.eye(n, dtype=bool), np.ones((1, n), dtype=bool)])
    values = masked_values(case, independent, masks, n_jobs, solver)
    return values[:-1], float(values[-1])


def all_masks(n: int) -> np.ndarray:
    """(2^n, n) bool: home k in home set number ``mask`` (bit k), in bitmask order."""
    return ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(bool)


# ===================================================== exact values from a few solves, by price certificates
#: Solver options of the direct PIQP calls (:class:`ScenarioProgram`): the engine's tolerances.
DIRECT_OPTIONS = DEFAULT_SOLVER_OPTIONS["PIQP"]
#: A coalition's hourly net consumption must be at least this far from zero (kW) for its solution to certify
#: the values of its sub-coalitions (:func:`certified_values`); solver noise is ~1e-9 kW.
CERTIFY_MARGIN = 1e-6
#: Variables of the clearing whose columns belong to a home (rows x hours); the others (the trade's partial
#: sums, Eq. 18) are shared by every coalition.
HOME_VARIABLES = ("d", "g", "c", "e", "E", "Pl", "Ps", "x")


class Solved(NamedTuple):
    """One coalition's clearing in one scenario, per member (k, T): net consumption n = d + c - e - g (kW),
    wholesale cost lambda^b Pl - lambda^s Ps and utility U(d) ($ per hour, weight 1)."""

    net: np.ndarray
    wholesale: np.ndarray
    utility: np.ndarray


#: Largest coalition solved as the reduced problem (:class:`ScenarioProgram`): its hourly balance rows hold every
#: member's columns, so above this (the size of a partial sum of Eq. 18) the full problem is solved instead.
REDUCED_MAX_HOMES = TRADE_GROUP
#: Homes per PIQP call of :func:`certified_costs`: that many homes' worth of coalitions of one size are solved
#: as one block-diagonal problem (:meth:`ScenarioProgram.solve_many`), which spreads PIQP's and Python's cost per
#: call over them.
BATCH_HOMES = 100


class _Program(NamedTuple):
    """A QP in PIQP's form over the columns of every home: min 1/2 x'Px + q'x, Ax = b, Fx <= g, lower <= x <=
    upper; ``home``, ``rows_A``, ``rows_F``: the home that owns each column and row (-1: shared by the coalition).
    A coalition keeps its members' columns and rows and the shared ones (:meth:`setup`). ``shift_A`` and
    ``shift_F`` (shared rows x N): what each home's eliminated (fixed) columns take from the shared rows'
    right-hand side, so that a coalition's shared rows count its members' only; None: nothing."""

    P: sp.csc_array
    q: np.ndarray
    A: sp.csc_array
    b: np.ndarray
    F: sp.csc_array
    g: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    home: np.ndarray
    rows_A: np.ndarray
    rows_F: np.ndarray
    shift_A: np.ndarray | None = None
    shift_F: np.ndarray | None = None

    def setup(self, coalitions: list, n_homes: int) -> tuple[list, dict]:
        """(each coalition's kept columns, the keyword arguments of ``piqp.SparseSolver.setup``) of one problem
        that holds the coalitions (lists of members) side by side, block-diagonal: they share no variable, so
        its optimum is each one's own optimum. A coalition's block keeps its members' columns and rows and the
        shared ones, its shared rows' right-hand sides counting its members' eliminated columns only."""
        inside = np.zeros((len(coalitions), n_homes + 1), dtype=bool)
        for j, members in enumerate(coalitions):
            inside[j, members] = True
        inside[:, -1] = True  # home -1: the shared rows and columns, in every block
        keep, keep_a, keep_f = inside[:, self.home], inside[:, self.rows_A], inside[:, self.rows_F]
        b = np.broadcast_to(self.b, keep_a.shape)
        g = np.broadcast_to(self.g, keep_f.shape)
        members_of = inside[:, :-1].astype(float)
        if self.shift_A is not None:
            b = b.copy()
            b[:, self.rows_A < 0] -= members_of @ self.shift_A.T
        if self.shift_F is not None:
            g = g.copy()
            g[:, self.rows_F < 0] -= members_of @ self.shift_F.T
        cols = [np.flatnonzero(k) for k in keep]
        every = np.concatenate(cols)
        return cols, dict(
            P=_restrict(self.P, keep, keep),
            c=self.q[every],
            A=_restrict(self.A, keep_a, keep),
            b=b[keep_a],
            G=_restrict(self.F, keep_f, keep),
            h_u=g[keep_f],
            x_l=self.lower[every],
            x_u=self.upper[every],
        )


class ScenarioProgram:
    """The clearing (Eqs. 16-19) of every home in one scenario, compiled once by cvxpy into PIQP's data
    (:func:`desmarket.formulation.formulate`, weight 1); a coalition is solved by calling PIQP directly on the
    rows and columns of its members (:meth:`solve`).

    A home outside the coalition has x = 0 (as in :class:`MaskedClearing`), so its variables and its own
    constraint rows drop out; the shared rows (the trade balance through its partial sums, Eq. 18) keep only
    the members' trade columns. No cvxpy call per coalition: the problem is the one cvxpy built, restricted.
    The construction checks that every constraint row belongs to one home or to the shared trade balance.

    ``reach``: (N,) min(grid limit, trade limit) of each home, kW (Eqs. 7, 19): a member whose |net consumption|
    stays below it at every hour can be routed (pro rata, as the tie-break does) with no grid or trade limit
    binding, which :func:`certified_costs` needs.

    The reduced problem (:meth:`solve_reduced`, tried first): the same compiled clearing with the routing
    taken out. Each member's Eq. 17 row Pl - Ps = n + x is summed over the members; the trades cancel by Eq. 18,
    so the hour's row reads I_t - X_t = N_t = sum_i n_i, with I_t = sum_i Pl_i and X_t = sum_i Ps_i merged into
    one import and one export column per hour (cost lambda^b_t I_t - lambda^s_t X_t, Eq. 16), and the x, Pl, Ps
    columns, the partial sums and the balance rows (Eqs. 17-19) drop out, as do the grid and trade limits. Per
    home only d, g, c, e, E and their own rows (Eqs. 8-15) stay, with the same objective terms (utility and
    tie-break), so it is a relaxation of the clearing with the same objective. It is exact when its solution
    can be routed (:func:`routable`, checked a posteriori): then some Pl, Ps, x meet Eqs. 7, 17-19 at the same
    objective value, so the relaxation's optimum is an optimum of the clearing and the optimal values are equal.
    The tie-break eps sum (c^2 + e^2) is the same at every optimum (the objective is strictly convex in c and e,
    so they are unique), hence so is the reported cost (wholesale minus utility: the optimal value less the
    tie-break), the one :meth:`solve_full` reads. Where the check fails, or PIQP does not return solved, the full
    problem is solved (:meth:`solve_full`).

    Three eliminations make it smaller, all exact: where lambda^s_t > 0 the PV used is fixed at the available PV
    (Eq. 8 at its upper bound): raising g_i,t by delta and X_t by as much stays feasible and lowers the objective
    by lambda^s_t delta, so every optimum uses all the PV; a home's row of one entry (the end state, Eq. 15) fixes
    its column; and every column whose bounds then fix it (PV at night, a home without a battery) is replaced by
    its value (the shared rows' right-hand sides count the members' values only, :class:`_Program`).
    """

    def __init__(self, case: Case, scenario: int, reduced: bool = True):
        n, s, t = case.load.shape
        self.n_homes, self.hours = n, t
        block = case_block(case, np.arange(n) * s + scenario, weighted=False)
        problem, handles = formulate(block, market=True)
        data, _, _ = problem.get_problem_data(cp.PIQP)
        program = data["param_prob"]
        size = program.x.size
        home = np.full(size, -1)
        column = {}
        for key in HOME_VARIABLES:
            var = getattr(handles, key)
            start = program.var_id_to_col[var.id]
            column[key] = start + np.arange(n)[:, None] + n * np.arange(t)[None, :]  # cvxpy flattens column-major
            home[column[key]] = np.arange(n)[:, None]
        trade = np.zeros(size, dtype=bool)
        trade[column["x"]] = True
        P, q = sp.csc_array(data["P"]), np.asarray(data["q"], dtype=float)
        lower, upper = np.asarray(data["lower_bounds"]), np.asarray(data["upper_bounds"])
        A, b = sp.csr_array(data["A"]), np.asarray(data["b"], dtype=float)
        F, g = sp.csr_array(data["F"]), np.asarray(data["G"], dtype=float)
        self.column, self.home = column, home
        rows_A, rows_F = (self._row_owners(m, home, trade) for m in (A, F))
        self.full = _Program(P, q, sp.csc_array(A), b, sp.csc_array(F), g, lower, upper, home, rows_A, rows_F)
        self.columns = [np.flatnonzero(home == i) for i in range(n)]
        self.shared = np.flatnonzero(home < 0)
        self.buy, self.sell = block.prices.buy, block.prices.sell
        self.a, self.b_utility = block.a, block.b
        self.reach = np.minimum(block.grid, block.trade_limit)  # (N,) kW
        self.grid, self.trade_limit = block.grid, block.trade_limit
        self.reduced, self.reduced_column, self.reduced_fixed = self._reduce() if reduced else (None, {}, np.array([]))

    @staticmethod
    def _row_owners(matrix: sp.csr_array, home: np.ndarray, trade: np.ndarray) -> np.ndarray:
        """(rows,) the home that owns each constraint row, -1 for a shared row (only trade and shared columns)."""
        owner = np.full(matrix.shape[0], -1)
        for r in range(matrix.shape[0]):
            cols = matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]]
            own = np.unique(home[cols[~trade[cols]]])
            own = own[own >= 0]
            if len(own) > 1 or (len(own) == 1 and (home[cols[trade[cols]]] != own[0]).any()):
                raise ValueError(f"constraint row {r} of the clearing couples homes {own.tolist()} outside Eq. 18")
            if len(own) == 1:
                owner[r] = own[0]
        return owner

    def _reduce(self) -> tuple[_Program | None, dict, np.ndarray]:
        """The reduced problem (see the class), its columns of d, g, c, e (N, T) and the values of the columns
        it eliminated (NaN where kept); (None, {}, []) when the compiled clearing is not of the form the
        reduction needs (every coalition is then solved in full)."""
        full, column, n, t = self.full, self.column, self.n_homes, self.hours
        size = len(full.q)
        A = sp.csr_array(full.A)
        routing = np.zeros(size, dtype=bool)  # Pl, Ps, x and the shared columns (partial sums): dropped
        for key in ("Pl", "Ps", "x"):
            routing[column[key]] = True
        routing[self.shared] = True
        pl, ps = column["Pl"].reshape(-1), column["Ps"].reshape(-1)
        hour = np.tile(np.arange(t), (n, 1)).reshape(-1)  # hour of each entry of column[key].reshape(-1)
        # Eq. 17 rows: the one row of each Pl column, which must also hold that home-hour's Ps (-1 x Pl's factor)
        A_csc = sp.csc_array(full.A)
        if (np.diff(A_csc.indptr)[pl] != 1).any():
            return None, {}, np.array([])
        row17 = A_csc.indices[A_csc.indptr[pl]]
        factor = A_csc.data[A_csc.indptr[pl]]
        if (
            len(np.unique(row17)) != len(pl)
            or (np.diff(A_csc.indptr)[ps] != 1).any()
            or (A_csc.indices[A_csc.indptr[ps]] != row17).any()
            or not np.allclose(A_csc.data[A_csc.indptr[ps]], -factor, rtol=0, atol=1e-12)
            or full.b[row17].any()
        ):
            return None, {}, np.array([])
        is17 = np.zeros(A.shape[0], dtype=bool)
        is17[row17] = True
        own = (full.rows_A >= 0) & ~is17  # the homes' own rows (Eqs. 9-15)
        # routing columns may appear only in Eq. 17 rows and the shared rows; nowhere in P, q (but Pl, Ps), F
        entries_rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        if routing[A.indices[own[entries_rows]]].any() or sp.csc_array(full.F)[:, routing].nnz:
            return None, {}, np.array([])
        if sp.csc_array(full.P)[:, routing].nnz or full.q[routing & ~np.isin(np.arange(size), np.r_[pl, ps])].any():
            return None, {}, np.array([])
        buy, sell = full.q[column["Pl"]], -full.q[column["Ps"]]  # (N, T): lambda^b_t, lambda^s_t for each home
        if not (np.allclose(buy, buy[:1]) and np.allclose(sell, sell[:1])):
            return None, {}, np.array([])
        if (full.lower[pl] != 0).any() or (full.lower[ps] != 0).any():
            return None, {}, np.array([])
        kept = np.flatnonzero(~routing)  # the homes' d, g, c, e, E
        k = len(kept)
        # rows: own rows as they are, then one per hour: sum_i (Eq. 17 of home i) / factor, Pl -> I_t, Ps -> X_t
        own_rows = np.flatnonzero(own)
        scale = sp.csr_array(
            (
                np.r_[np.ones(len(own_rows)), 1.0 / factor],
                (np.r_[np.arange(len(own_rows)), len(own_rows) + hour], np.r_[own_rows, row17]),
            ),
            shape=(len(own_rows) + t, A.shape[0]),
        )
        balance = sp.vstack([sp.csr_array((len(own_rows), 2 * t)), sp.hstack([sp.eye(t), -sp.eye(t)])])
        A_red = sp.csr_array(sp.hstack([scale @ A[:, kept], balance]))
        b_red = scale @ full.b
        P_red = sp.csc_array(sp.block_diag([sp.csc_array(full.P)[kept][:, kept], sp.csc_array((2 * t, 2 * t))]))
        q_red = np.r_[full.q[kept], buy[0], -sell[0]]
        lower = np.r_[full.lower[kept], np.zeros(2 * t)]
        upper = np.r_[full.upper[kept], np.full(2 * t, np.inf)]
        F_red = sp.csr_array(sp.csc_array(full.F)[:, kept].tocsr())
        F_red.resize((F_red.shape[0], k + 2 * t))
        home = np.r_[self.home[kept], np.full(2 * t, -1)]
        rows_A = np.r_[full.rows_A[own_rows], np.full(t, -1)]
        where = np.full(size, -1)
        where[kept] = np.arange(k)
        red_column = {key: where[column[key]] for key in ("d", "g", "c", "e")}
        # all the PV where lambda^s_t > 0: g only enters its hour's balance row, with the factor of -n (> 0 here)
        gcol = red_column["g"]
        A_g = sp.csc_array(A_red)[:, gcol.reshape(-1)]
        only_balance = (
            (np.diff(A_g.indptr) == 1).all()
            and (A_g.indices == len(own_rows) + hour).all()
            and (A_g.data > 0).all()
            and not q_red[gcol].any()
            and not P_red[:, gcol.reshape(-1)].nnz
        )
        if only_balance:
            use_all = np.broadcast_to(sell[0] > 0, gcol.shape)
            lower[gcol[use_all]] = upper[gcol[use_all]]
        # a home's row of one entry a x_j = b (the end state, Eq. 15) fixes x_j = b / a
        A_rows = sp.csr_array(A_red)
        single = np.flatnonzero((np.diff(A_rows.indptr) == 1) & (rows_A >= 0))
        if len(single):
            j = A_rows.indices[A_rows.indptr[single]]
            at = b_red[single] / A_rows.data[A_rows.indptr[single]]
            if len(np.unique(j)) < len(j) or (at < lower[j] - 1e-12).any() or (at > upper[j] + 1e-12).any():
                return None, {}, np.array([])
            lower[j] = upper[j] = np.clip(at, lower[j], upper[j])
        # eliminate the fixed columns: their value moves to the right-hand sides (the shared rows' per home)
        fixed = lower == upper
        value = np.where(fixed, lower, 0.0)
        free = np.flatnonzero(~fixed)
        A_csc_red = sp.csc_array(A_red)
        F_csc_red = sp.csc_array(F_red)
        shared_a = rows_A < 0
        if (home[fixed] < 0).any():
            return None, {}, np.array([])
        per_home = sp.csc_array(
            (value[fixed], (np.flatnonzero(fixed), home[fixed])), shape=(len(value), n)
        )  # (columns, N) each home's fixed values
        shift_A = (sp.csr_array(A_csc_red)[np.flatnonzero(shared_a)] @ per_home).toarray()
        b_red = b_red - A_csc_red @ value
        b_red[shared_a] += shift_A.sum(axis=1)  # the shared rows take their members' shift only (setup)
        g_red = full.g - F_csc_red @ value
        shared_f = full.rows_F < 0
        shift_F = (sp.csr_array(F_csc_red)[np.flatnonzero(shared_f)] @ per_home).toarray()
        g_red[shared_f] += shift_F.sum(axis=1)
        q_red = q_red + P_red @ value
        A_free = sp.csc_array(A_csc_red[:, free])
        F_free = sp.csc_array(F_csc_red[:, free])
        # rows left without a column: 0 = b (dropped if b = 0) and 0 <= g (dropped if g >= 0)
        empty_a = np.diff(sp.csr_array(A_free).indptr) == 0
        empty_f = np.diff(sp.csr_array(F_free).indptr) == 0
        if (np.abs(b_red[empty_a & ~shared_a]) > 1e-12).any() or (g_red[empty_f & ~shared_f] < -1e-12).any():
            return None, {}, np.array([])
        keep_a = ~empty_a | shared_a
        keep_f = ~empty_f | shared_f
        reduced = _Program(
            sp.csc_array(sp.csc_array(P_red)[free][:, free]),
            q_red[free],
            sp.csc_array(sp.csr_array(A_free)[keep_a]),
            b_red[keep_a],
            sp.csc_array(sp.csr_array(F_free)[keep_f]),
            g_red[keep_f],
            lower[free],
            upper[free],
            home[free],
            rows_A[keep_a],
            full.rows_F[keep_f],
            shift_A,
            shift_F,
        )
        fixed_value = np.where(fixed, value, np.nan)
        position = np.full(k + 2 * t, -1)
        position[free] = np.arange(len(free))
        return reduced, {key: (col, position[col]) for key, col in red_column.items()}, fixed_value

    def solve(self, members):
        """The clearing of the homes ``members`` (sorted indices) in this scenario, or None when PIQP does not
        return solved (the caller then solves it through cvxpy): the reduced problem when it is exact
        (:meth:`solve_reduced`), else the full one (:meth:`solve_full`). ``members`` may also be a list of
        coalitions, solved together (:meth:`solve_many`): a list of Solved or None comes back."""
        if isinstance(members, list):
            return self.solve_many(members)
        return self.solve_many([members])[0]

    def solve_many(self, coalitions: list) -> list:
        """:meth:`solve` of each coalition (sorted indices of members) of ``coalitions``: the reduced problems of
        those of at most :data:`REDUCED_MAX_HOMES` homes in one PIQP call (block-diagonal, :meth:`_Program.setup`),
        then the full problem of each the reduced one does not clear exactly; a Solved or None (PIQP did not
        return solved) per coalition."""
        out: list = [None] * len(coalitions)
        small = [j for j, m in enumerate(coalitions) if len(m) <= REDUCED_MAX_HOMES]
        if small and self.reduced is not None:
            found = self.solve_reduced([coalitions[j] for j in small])
            if found is None and len(small) > 1:  # PIQP did not solve them together: each on its own
                found = [(self.solve_reduced([coalitions[j]]) or [None])[0] for j in small]
            for j, solved in zip(small, found or []):
                out[j] = solved
        for j, members in enumerate(coalitions):
            if out[j] is None:
                out[j] = self.solve_full(members)
        return out

    def solve_reduced(self, coalitions: list) -> list | None:
        """The clearings of ``coalitions`` (lists of members) from their reduced problems (see the class) in one
        PIQP call, or None when PIQP does not return solved; a coalition's entry is None where its solution
        might not be exact (not :func:`routable`).

        Each member's wholesale cost is its net at the hour's price, mu_t n_i with mu_t = lambda^b_t where the
        coalition imports (N_t >= 0) and lambda^s_t otherwise, which sums to lambda^b N^+ - lambda^s N^- (Eq. 16)."""
        if self.reduced is None:
            return None
        cols, problem = self.reduced.setup(coalitions, self.n_homes)
        x = _piqp(problem)
        if x is None:
            return None
        out: list = []
        start = 0
        for members, kept in zip(coalitions, cols):
            value = np.zeros(len(self.reduced.q))
            value[kept] = x[start : start + len(kept)]
            start += len(kept)

            def get(key: str) -> np.ndarray:
                col, position = self.reduced_column[key]
                col, position = col[members], position[members]
                return np.where(position >= 0, value[np.maximum(position, 0)], self.reduced_fixed[col])

            d = get("d")
            net = d + get("c") - get("e") - get("g")
            if not routable(net, self.grid[members], self.trade_limit[members]):
                out.append(None)  # a grid or trade limit binds: the full problem prices it
                continue
            price = np.where(net.sum(axis=0) >= 0, self.buy, self.sell)
            utility = self.a[members, None] * d**2 + self.b_utility[members, None] * d
            out.append(Solved(net, price * net, utility))
        return out

    def solve_full(self, members: np.ndarray) -> Solved | None:
        """The clearing of ``members`` from the full compiled problem (Eqs. 16-19 on their rows), or None when
        PIQP does not return solved."""
        cols, problem = self.full.setup([members], self.n_homes)
        solution = _piqp(problem)
        if solution is None:
            return None
        x = np.zeros(len(self.full.q))
        x[cols[0]] = solution
        get = lambda key: x[self.column[key][members]]
        d = get("d")
        utility = self.a[members, None] * d**2 + self.b_utility[members, None] * d
        return Solved(d + get("c") - get("e") - get("g"), get("Pl") * self.buy - get("Ps") * self.sell, utility)


def routable(net: np.ndarray, grid: np.ndarray, trade_limit: np.ndarray, margin: float = CERTIFY_MARGIN) -> bool:
    """Whether the members' nets n (k, T) kW can be routed at the wholesale cost of their sum alone, within every
    grid and trade limit (Eqs. 7, 17-19): the condition under which the reduced problem is exact.

    In an hour with N_t = sum_i n_i >= 0 the cost lambda^b_t N_t needs sum_i Pl_i = N_t with every Ps_i = 0
    (lambda^b >= lambda^s: any sale adds a purchase). Home i's Pl_i must meet 0 <= Pl_i <= grid_i (Eq. 7) and
    |x_i| = |Pl_i - n_i| <= x_bar_i (Eqs. 17, 19), an interval [max(0, n_i - x_bar_i), min(grid_i, n_i +
    x_bar_i)]; the trades then sum to zero (Eq. 18) exactly when the Pl_i sum to N_t, which some choice in the
    intervals does iff each interval is non-empty and N_t lies between their sums. An hour with N_t < 0 is the
    same for Ps_i = -(n_i + x_i) and -N_t. Each interval is shrunk by ``margin`` (kW) at the limits, so that
    solver noise (~1e-9 kW) cannot pass a net that is only routable beyond the limits. ``grid``, ``trade_limit``:
    (k,) kW.
    """
    return routing(net, grid, trade_limit, margin) is not None


def routing(
    net: np.ndarray, grid: np.ndarray, trade_limit: np.ndarray, margin: float = CERTIFY_MARGIN
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A routing of the nets n (k, T) kW at the wholesale cost of their sum (see :func:`routable`): (x, Pl, Ps),
    (k, T) kW each, with Pl - Ps = n + x (Eq. 17), sum_i x = 0 (Eq. 18) and every flow at least ``margin``
    inside its limit (Eqs. 7, 19); None when there is none. In each hour every home takes the same fraction of
    its interval [low_i, high_i] of :func:`routable`, so that the flows sum to |N_t|."""
    grid, trade_limit = grid[:, None], trade_limit[:, None]
    total = net.sum(axis=0)
    flow = np.where(total >= 0, net, -net)  # each home's own net in the direction of the hour's flow
    low = np.maximum(0.0, flow - trade_limit + margin)
    high = np.minimum(grid - margin, flow + trade_limit - margin)
    target = np.abs(total)
    lows, highs = low.sum(axis=0), high.sum(axis=0)
    if not ((low <= high).all() and (lows <= target).all() and (target <= highs).all()):
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(highs > lows, (target - lows) / (highs - lows), 0.0)
    through = low + share * (high - low)  # each home's grid flow in the hour's direction
    Pl, Ps = np.where(total >= 0, through, 0.0), np.where(total >= 0, 0.0, through)
    return Pl - Ps - net, Pl, Ps


def _piqp(problem: dict) -> np.ndarray | None:
    """PIQP's solution of a problem (``piqp.SparseSolver.setup``'s arguments) at :data:`DIRECT_OPTIONS`, or None
    unless it returns solved."""
    import piqp

    solver = piqp.SparseSolver()
    for key, value in DIRECT_OPTIONS.items():
        setattr(solver.settings, key, value)
    solver.setup(**problem)
    if solver.solve() != piqp.PIQP_SOLVED:
        return None
    return np.asarray(solver.result.x)


def _restrict(matrix: sp.csc_array, rows: np.ndarray, cols: np.ndarray) -> sp.csc_array:
    """The block-diagonal CSC matrix of the submatrices of the kept ``rows`` and ``cols`` of each block ((B, m)
    and (B, n) bool masks), entries in their order (no scipy fancy indexing: the coalitions' problem is cut
    from the compiled one in a few vectorised steps)."""
    col_of = np.repeat(np.arange(matrix.shape[1]), np.diff(matrix.indptr))
    block, entry = np.nonzero(rows[:, matrix.indices] & cols[:, col_of])  # block-major, each in CSC order
    n_rows, n_cols = rows.sum(axis=1), cols.sum(axis=1)
    new_row = np.cumsum(rows, axis=1) - 1 + (np.cumsum(n_rows) - n_rows)[:, None]
    new_col = np.cumsum(cols, axis=1) - 1 + (np.cumsum(n_cols) - n_cols)[:, None]
    total = int(n_cols.sum())
    indptr = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(np.bincount(new_col[block, col_of[entry]], minlength=total), out=indptr[1:])
    indices = new_row[block, matrix.indices[entry]]
    return sp.csc_array((matrix.data[entry], indices, indptr), shape=(int(n_rows.sum()), total))


def _certified_task(scenarios: list, case: Case, masks: np.ndarray, solver: str, reduced: bool) -> list:
    return [certified_costs(case, s, masks, solver, reduced) for s in scenarios]


def certified_costs(
    case: Case, scenario: int, masks: np.ndarray, solver: str = MASKED_SOLVER, reduced: bool = True
) -> tuple:
    """Cost (wholesale cost minus utility, $ per day at weight 1) of each coalition ``masks`` (k, N) bool in one
    scenario, and the number of clearings solved for them.

    The largest coalition S not yet known is solved (:meth:`ScenarioProgram.solve`). If no limit can bind
    (``uncongested``) and S's hourly net N_t is nonzero at every hour (by :data:`CERTIFY_MARGIN`), its clearing
    has the one price mu_t = lambda^b_t where N_t > 0 and lambda^s_t where N_t < 0, and each member's operation
    minimises its own cost at mu (the Lagrangian of Eq. 18 separates by home). For a sub-coalition T of S whose
    own net sum_{i in T} n_i has the same sign as N_t at every hour (by the margin), mu is then a clearing price
    of T too, so the members' operations restricted to T are T's optimum (KKT) and its cost is
    sum_{i in T} sum_t [mu_t n_i - U_i]: exact, no solve. Repeated until every coalition is known; a coalition
    that nothing certifies is solved itself, so the worst case is one solve per coalition.

    The largest coalitions not yet known are solved together, :data:`BATCH_HOMES` homes' worth per PIQP call
    (one block-diagonal problem, :meth:`ScenarioProgram.solve_many`): a coalition certifies only strictly smaller
    ones, so solving one size at a time loses no certificate. ``reduced=False``: every coalition's full clearing
    in its own PIQP call, as before the reduced problem (the benchmark's comparison).
    """
    program = ScenarioProgram(case, scenario, reduced)
    masks = np.asarray(masks, dtype=bool)
    cost = np.full(len(masks), np.nan)
    todo: np.ndarray = np.asarray(masks.any(axis=1))
    cost[~todo] = 0.0
    sizes = masks.sum(axis=1)
    solves = 0
    while todo.any():
        size = sizes[todo].max()  # the largest coalitions not yet known, up to BATCH_HOMES homes per PIQP call
        picks = np.flatnonzero(todo & (sizes == size))[: max(1, BATCH_HOMES // size) if reduced else 1]
        batch = [np.flatnonzero(masks[p]) for p in picks]
        found = program.solve(batch)
        solves += len(batch)
        todo[picks] = False  # a coalition certifies only strictly smaller ones: the batch's are all solved
        for pick, members, solved in zip(picks, batch, found or [None] * len(batch)):
            if solved is None:  # PIQP did not return solved: the members' own clearing through cvxpy, Clarabel
                cost[pick] = _scenario_cost(case, members, scenario, solver)
                continue
            cost[pick] = float((solved.wholesale - solved.utility).sum())
            _certify(program, masks, members, solved, todo, cost)
    return cost, solves


def _certify(
    program: ScenarioProgram, masks: np.ndarray, members: np.ndarray, solved: Solved, todo: np.ndarray, cost: np.ndarray
) -> None:
    """Fill ``cost`` (and clear ``todo``) for the sub-coalitions of the solved coalition ``members`` that its
    price certifies (:func:`certified_costs`)."""
    total = solved.net.sum(axis=0)
    if not (np.abs(solved.net) < program.reach[members, None] - CERTIFY_MARGIN).all():
        return  # a grid or trade limit might bind: S certifies nothing
    outside = np.ones(program.n_homes, dtype=bool)
    outside[members] = False
    cand = np.flatnonzero(todo & ~masks[:, outside].any(axis=1))  # sub-coalitions of S still unknown
    if not len(cand):
        return
    per_home = np.zeros((program.n_homes, program.hours))
    per_home[members] = solved.net
    utility = np.zeros(program.n_homes)
    utility[members] = solved.utility.sum(axis=1)
    nets = masks[cand].astype(float) @ per_home  # (k, T) each sub-coalition's hourly net, kW
    zero, forced = np.abs(nets) <= CERTIFY_MARGIN, np.abs(total) > CERTIFY_MARGIN
    ok = (zero | (forced & (np.sign(nets) == np.sign(total)))).all(axis=1)
    wholesale = (np.maximum(nets[ok], 0) * program.buy - np.maximum(-nets[ok], 0) * program.sell).sum(axis=1)
    cost[cand[ok]] = wholesale - masks[cand[ok]].astype(float) @ utility
    todo[cand[ok]] = False


def _scenario_cost(case: Case, members: np.ndarray, scenario: int, solver: str) -> float:
    """Cost of the homes ``members`` cleared alone in one scenario, weight 1, through cvxpy (the fallback)."""
    s = case.n_scenarios
    block = case_block(case, np.asarray(members) * s + scenario, weighted=False)
    problem, handles = formulate(block, market=True)
    solve_with_fallback(problem, solver, DEFAULT_SOLVER_OPTIONS.get(solver.upper(), {}))
    v = handles.values(("d", "Pl", "Ps"))
    utility = (block.a[:, None] * v["d"] ** 2 + block.b[:, None] * v["d"]).sum()
    return float((v["Pl"] @ block.prices.buy - v["Ps"] @ block.prices.sell).sum() - utility)


def certified_values(
    case: Case,
    independent: Operation,
    masks,
    n_jobs: int | None = -1,
    solver: str = MASKED_SOLVER,
    reduced: bool = True,
) -> tuple[np.ndarray, int]:
    """v({aggregator} + S) for each home set S given as a bool row of ``masks`` (k, N), $ per day (Eq. 20), and
    the number of clearings solved: the same values as :func:`masked_values`, from far fewer solves.

    v(S) = sum_{i in S} part_i - sum_s pi_s cost_s(S) (the clearing separates by scenario, Eq. 18 holding per
    scenario and hour); each scenario's costs come from :func:`certified_costs`, the scenarios in parallel
    (``n_jobs``; the values do not depend on it).
    """
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    parts = home_parts(case, independent)
    found = map_chunks(
        _certified_task, list(range(case.n_scenarios)), (case, masks, solver, reduced), n_jobs, case.n_scenarios
    )
    costs = np.array([c for c, _ in found])  # (S, k)
    values = masks.astype(float) @ parts - case.probability @ costs
    values[~masks.any(axis=1)] = 0.0
    return values, int(sum(k for _, k in found))
