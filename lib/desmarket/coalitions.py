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
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from .case import Case
from .formulation import case_block, formulate
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
