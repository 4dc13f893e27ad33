"""Fairness and stability of the settlement: the cooperative game of the market and its standard solutions.

The game (issue 11; Section 2.2 of the paper claims M3 is a "fair and efficient value distribution"):
players are the aggregator and the N homes. v(S) = 0 unless S holds the aggregator and at least one home;
otherwise v(S) is the cooperative surplus Delta C (Eq. 20) of the sub-community of S's homes, $ per day. The
aggregator is a veto player; homes outside S operate as in M1 and change nothing.

Two layers:

* generic cooperative-game functions on a value vector indexed by bitmask (bit k = player k):
  :func:`shapley_from_values`, :func:`least_core_from_values`, :func:`nucleolus_from_values`,
  :func:`max_excess` -- tested on textbook games, independent of the energy model;
* the market game: :func:`coalition_value`, :func:`coalition_values`, :func:`shapley_value` (exact or
  sampled), :func:`nucleolus`, :func:`least_core`, :func:`core_excess`, :func:`allocation_table`.

Player 0 is the aggregator, player k (k >= 1) is home k - 1 of the case.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from . import coalitions
from .case import Case
from .engine import clear_market, solve_independent
from .errors import CaseError, MismatchError
from .model import Operation, RoutingWarning
from .pieces import map_chunks
from .settlement import RuleValues, check_rule, market_contribution, rule_shares, settle

#: Largest community whose 2^N coalitions are enumerated (2^14 = 16,384 clearings).
MAX_EXACT_HOMES = 14
AGGREGATOR = "aggregator"
#: Tolerance of the LPs of the nucleolus and least core, $ per day.
LP_TOLERANCE = 1e-9


# =============================================================================== generic game layer
def _masks(n: int) -> np.ndarray:
    return np.arange(1 << n)


def _members(n: int) -> np.ndarray:
    """(2^n, n) bool: player k in coalition mask."""
    return ((_masks(n)[:, None] >> np.arange(n)) & 1).astype(bool)


def _check_values(values: np.ndarray) -> tuple[np.ndarray, int]:
    values = np.asarray(values, dtype=float)
    n = int(round(np.log2(len(values))))
    if len(values) != 1 << n or n < 1:
        raise ValueError(f"a game needs one value per coalition, 2^n of them; got {len(values)}")
    if values[0] != 0:
        raise ValueError(f"the empty coalition must be worth 0, got {values[0]}")
    return values, n


def shapley_from_values(values: np.ndarray) -> np.ndarray:
    """Shapley value of a game given by v over all 2^n coalitions (bitmask index): (n,), summing to v(N).

    phi_k = sum over S not containing k of |S|! (n - |S| - 1)! / n! [v(S + k) - v(S)].
    """
    values, n = _check_values(values)
    masks = _masks(n)
    size = _members(n).sum(axis=1)
    fact = np.array([float(np.prod(np.arange(1, m + 1))) for m in range(n + 1)])
    phi = np.zeros(n)
    for k in range(n):
        without = masks[(masks >> k) & 1 == 0]
        s = size[without]
        phi[k] = np.sum(fact[s] * fact[n - s - 1] / fact[n] * (values[without | (1 << k)] - values[without]))
    return phi


def max_excess(values: np.ndarray, allocation: np.ndarray) -> tuple[float, int]:
    """max over proper non-empty S of v(S) - x(S), and the mask attaining it (<= 0: x is in the core)."""
    values, n = _check_values(values)
    x = np.einsum("cn,n->c", _members(n), np.asarray(allocation, dtype=float))  # not BLAS: same digits on any CPU
    excess = values - x
    proper = _masks(n)[1:-1]
    k = proper[np.argmax(excess[proper])]
    return float(excess[k]), int(k)


def _lp(members: np.ndarray, values: np.ndarray, grand: float, fixed: dict, free: list, pinned: dict | None = None):
    """max t s.t. x(S) - t >= v(S) for rows S in free, x(S) = v(S) + level for fixed rows, x(N) = grand, and
    x_k = value for every player k of ``pinned`` ({player: value}; none by default).

    members: bool (m, n), one row per coalition; values: (m,). Returns (t, x, duals of the free rows)."""
    n = members.shape[1]
    rows = members.astype(float)
    pinned = pinned or {}
    c = np.r_[np.zeros(n), -1.0]  # maximise t
    A_ub = np.hstack([-rows[free], np.ones((len(free), 1))])  # -x(S) + t <= -v(S)
    eq = [np.r_[np.ones(n), 0.0]] + [np.r_[rows[k], 0.0] for k in fixed] + [np.r_[np.eye(n)[k], 0.0] for k in pinned]
    b_eq = [grand] + [values[k] + level for k, level in fixed.items()] + list(pinned.values())
    res = linprog(
        c,
        A_ub=A_ub,
        b_ub=-values[free],
        A_eq=np.array(eq),
        b_eq=np.array(b_eq),
        bounds=[(None, None)] * (n + 1),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"the nucleolus LP did not solve: {res.message}")
    return float(res.x[-1]), res.x[:-1], -res.ineqlin.marginals


def _proper(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(members, values, v(N)) of every proper non-empty coalition of a game given by bitmask."""
    values, n = _check_values(values)
    masks = _masks(n)[1:-1]
    return _members(n)[masks], values[masks], float(values[-1])


def least_core_from_values(values: np.ndarray) -> tuple[float, np.ndarray]:
    """The least core: the largest t such that some efficient x has x(S) >= v(S) + t for every proper S.

    Returns (-t, x): the least-core value e* = -t (<= 0 when the core is non-empty) and one allocation in it
    (the nucleolus, which is always in the least core).
    """
    members, vals, grand = _proper(values)
    e, _ = least_core_from_coalitions(members, vals, grand)
    return e, nucleolus_from_values(values)


def nucleolus_from_coalitions(
    members: np.ndarray, values: np.ndarray, grand: float, pinned: dict | None = None
) -> np.ndarray:
    """The nucleolus over the given coalitions, by the sequence of LPs of Maschler, Peleg and Shapley (1979)
    (HiGHS through scipy). With every proper coalition it is the nucleolus of the game.

    Each round maximises the smallest surplus x(S) - v(S) over the coalitions not yet fixed; coalitions whose
    constraint has a positive dual are fixed at that level; it ends when the fixed coalitions determine x.
    ``pinned`` ({player: value}) fixes some players' payoffs first: the nucleolus of the allocations that pay
    them that (issue 22: the aggregator's share held at rho Delta C).
    """
    n = members.shape[1]
    values = np.asarray(values, dtype=float)
    free = list(range(len(members)))
    fixed: dict[int, float] = {}
    pinned = pinned or {}
    x = None
    for _ in range(len(free) + 1):
        t, x, duals = _lp(members, values, grand, fixed, free, pinned)
        for k, d in zip(list(free), duals):
            if d > LP_TOLERANCE:
                fixed[k] = t
        free = [k for k in free if k not in fixed]
        known = [np.ones(n)] + [members[k].astype(float) for k in fixed] + [np.eye(n)[k] for k in pinned]
        rank = np.linalg.matrix_rank(np.vstack(known))
        if rank == n or not free:
            break
    if x is None:  # the loop runs at least once (range(len(free) + 1)), so the LP was solved
        raise AssertionError("nucleolus_from_coalitions: no LP was solved")
    return x


def nucleolus_from_values(values: np.ndarray) -> np.ndarray:
    """The nucleolus of a game given by v over all 2^n coalitions (:func:`nucleolus_from_coalitions`)."""
    return nucleolus_from_coalitions(*_proper(values))


# =================================================================================== the market game
def _grand_m1(case: Case, independent: Operation | None) -> Operation:
    """The M1 of the grand community: ``independent`` checked against ``case`` (once), or solved when None.

    Coalition values solve sub-cases (``case.select``) but take each home's part of the grand M1, so the M1
    given must be the M1 of ``case`` itself (:meth:`~desmarket.model.Operation.check_solved_on`).
    """
    if independent is None:
        return solve_independent(case)
    if not isinstance(independent, Operation) or independent.mode != "independent":
        got = independent.mode if isinstance(independent, Operation) else type(independent).__name__
        raise TypeError(f"independent must be the M1 result of the case (solve_independent(case)), got {got}")
    if independent.home_ids != case.home_ids or independent.load.shape != case.load.shape:
        raise MismatchError(
            f"the independent result is for other homes or scenarios ({len(independent.home_ids)} "
            f"homes, shape {independent.load.shape}) than the case ({case}); pass "
            "solve_independent(case), or the case it was solved on"
        )
    independent.check_solved_on(case, "independent")
    return independent


def _home_parts(case: Case, independent: Operation) -> np.ndarray:
    """(N,) each home's share of sum C^0 - R_A^0 in M1: its cost C_i^0 minus the aggregator's margin on it (Eq. 1).

    M1 separates by home, so a sub-community's C^0 - R_A^0 is the sum of its homes' parts
    (:func:`desmarket.coalitions.home_parts`).
    """
    return coalitions.home_parts(case, independent)


def _clearing_cost(case: Case, homes: Sequence[str], solve_kw: dict) -> float:
    """sum C* - R_A* of the sub-community of ``homes`` cleared alone with the aggregator (Eqs. 16-20)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        market = clear_market(case.select(list(homes)), n_jobs=1, **solve_kw)
    return float(market.home_cost.sum() - market.aggregator_revenue)


def _costs_task(coalitions: list, case: Case, solve_kw: dict) -> list[float]:
    return [_clearing_cost(case, homes, solve_kw) for homes in coalitions]


def _subset_value(case: Case, parts: np.ndarray, idx, solve_kw: dict) -> float:
    """v({aggregator} + the homes at positions ``idx``): their M1 parts (:func:`_home_parts`) minus the clearing
    cost of their sub-community (Eq. 20)."""
    idx = sorted(idx)
    return float(parts[idx].sum() - _clearing_cost(case, [case.home_ids[i] for i in idx], solve_kw))


def coalition_value(case: Case, homes: Sequence[str], independent: Operation | None = None, **solve_kw) -> float:
    """v({aggregator} + homes): the cooperative surplus (Eq. 20) of the sub-community of ``homes``.

    Parameters
    ----------
    case : Case
        The community.
    homes : sequence of str
        The coalition's home ids (empty: 0).
    independent : Operation, optional
        M1 of ``case`` (solved here when None; M1 separates by home, so its parts are reused).
    **solve_kw
        Passed on to the clearing (:func:`desmarket.clear_market`).

    Returns
    -------
    float
        $ per day.
    """
    homes = list(homes)
    if not homes:
        return 0.0
    parts = pd.Series(_home_parts(case, _grand_m1(case, independent)), index=case.home_ids)
    return float(parts[homes].sum() - _clearing_cost(case, homes, solve_kw))


def _check_size(case: Case) -> None:
    if case.n_homes > MAX_EXACT_HOMES:
        raise ValueError(
            f"{case.n_homes} homes have 2^{case.n_homes} coalitions; the exact game is limited to "
            f"{MAX_EXACT_HOMES} homes. Use shapley_value(case, samples=...) (permutation sampling)."
        )


#: How :func:`coalition_values` clears a coalition: "select" builds and clears ``case.select(S)`` (the engine's
#: default method; one problem per coalition), "masked" re-solves the grand clearing built once with the other
#: homes' trades masked out (:mod:`desmarket.coalitions`; the same values to ~1e-7 $/day), "direct" compiles
#: each scenario's clearing once and calls PIQP on the members' rows only, scenario by scenario, skipping the
#: sub-coalitions that a solved coalition's prices certify (:func:`desmarket.coalitions.certified_values`;
#: the same values to ~1e-8 $/day, the fastest).
COALITION_METHODS = ("select", "masked", "direct")


def coalition_values(
    case: Case,
    independent: Operation | None = None,
    n_jobs: int | None = -1,
    progress: bool | None = None,
    method: str = "select",
    **solve_kw,
) -> pd.Series:
    """v(S) of every coalition of homes with the aggregator, over all 2^N home sets.

    Each home's M1 is solved once (M1 separates by home); the 2^N - 1 clearings run in parallel through joblib, in
    :data:`COALITION_CHUNKS` chunks.

    Parameters
    ----------
    case : Case
        The community (N <= 14 homes in practice: 2^N clearings).
    independent : Operation, optional
        M1 of ``case`` (solved here when None).
    n_jobs : int or None, default -1
        Workers (joblib).
    progress : bool or None, optional
        A progress bar (None: only on a terminal).
    method : str, default "select"
        One of :data:`COALITION_METHODS`: a clearing built per coalition ("select"), or one grand clearing re-solved
        with homes masked out ("masked", "direct"; these take no ``solve_kw``).
    **solve_kw
        Passed on to each clearing (method "select").

    Returns
    -------
    pandas.Series
        $ per day, indexed by the tuple of home ids (the empty tuple is worth 0, the last entry is v(N) = Delta C).
    """
    _check_size(case)
    if method not in COALITION_METHODS:
        raise CaseError(
            "coalition_values",
            f"unknown method {method!r}; the methods are {', '.join(COALITION_METHODS)}",
            "pass method='select' (a clearing per coalition), 'masked' (one grand problem, re-solved) or "
            "'direct' (PIQP called on each coalition's rows, scenario by scenario)",
            column="method",
        )
    independent = _grand_m1(case, independent)
    parts = _home_parts(case, independent)
    ids = case.home_ids
    subsets = [c for k in range(1, len(ids) + 1) for c in itertools.combinations(range(len(ids)), k)]
    found: list[float]
    if method == "masked":
        masks = np.zeros((len(subsets), len(ids)), dtype=bool)
        for r, c in enumerate(subsets):
            masks[r, list(c)] = True
        found = [float(v) for v in coalitions.masked_values(case, independent, masks, n_jobs)]
    elif method == "direct":
        masks = np.zeros((len(subsets), len(ids)), dtype=bool)
        for r, c in enumerate(subsets):
            masks[r, list(c)] = True
        certified, clearings = coalitions.certified_values(case, independent, masks, n_jobs)
        found = [float(v) for v in certified]
    else:
        costs = map_chunks(
            _costs_task,
            [[ids[i] for i in c] for c in subsets],
            (case, solve_kw),
            n_jobs,
            COALITION_CHUNKS,
            progress="coalitions",
        )
        found = [float(parts[list(c)].sum() - cost) for c, cost in zip(subsets, costs)]
    values: dict[tuple[str, ...], float] = {(): 0.0}
    for c, v in zip(subsets, found):
        values[tuple(ids[i] for i in c)] = float(v)
    out = pd.Series(
        list(values.values()), index=pd.Index(list(values), tupleize_cols=False, name="homes"), name="value_usd_per_day"
    )
    if method == "direct":
        out.attrs["clearings"] = clearings  # (coalition, scenario) problems solved; the others were certified
    return out


#: Chunks of the coalitions of :func:`coalition_values` (one joblib task each).
COALITION_CHUNKS = 64


def _lookup(values: pd.Series) -> dict:
    """{tuple of home ids: v} of a :func:`coalition_values` Series (its index holds tuples, not levels)."""
    return dict(zip(values.index, values.to_numpy(dtype=float)))


def game_vector(case: Case, values: pd.Series) -> np.ndarray:
    """The market game as a value per bitmask over the aggregator (bit 0) and the homes (bits 1..N)."""
    n = case.n_homes + 1
    out = np.zeros(1 << n)
    index = {h: k + 1 for k, h in enumerate(case.home_ids)}
    for homes, v in _lookup(values).items():
        if homes:
            out[1 | sum(1 << index[h] for h in homes)] = v
    return out


def _players(case: Case) -> list[str]:
    return [AGGREGATOR, *case.home_ids]


def shapley_value(
    case: Case,
    samples: int | None = None,
    seed: int = 0,
    values: pd.Series | None = None,
    independent: Operation | None = None,
    n_jobs: int | None = -1,
    control: str | None = "standalone",
    **solve_kw,
) -> pd.DataFrame:
    """Shapley value of the market game, summing to Delta C.

    Exact (``samples=None``, N <= 14) from :func:`coalition_values`. With ``samples``, permutation sampling
    (``seed``): each sampled order of the homes is cleared prefix by prefix (v of the first k homes with the
    aggregator, k = 1..N), and the aggregator's position among the N + 1 players, uniform in the Shapley value,
    is averaged exactly rather than drawn: a home at place p (0-based) adds its marginal contribution with
    probability (p + 1) / (N + 1), and the aggregator gets the mean of the N + 1 prefix values. The orders are
    drawn here (the result depends only on ``seed``) and cleared in parallel chunks through joblib.

    ``control="standalone"`` (default) also uses the stand-alone game w(S) = sum_{i in S} v({aggregator, i})
    (for S with the aggregator) as a control variate: its Shapley value is known exactly (each stand-alone value
    is split in half between the home and the aggregator), so the estimate is phi(w) plus the sampled Shapley
    value of the synergy v - w (linearity), still unbiased, with much smaller errors when most of Delta C is
    stand-alone value; it costs N one-home clearings more. ``control=None`` samples v itself.

    Parameters
    ----------
    case : Case
        The community.
    samples : int, optional
        Orders of the homes to sample; None: exact.
    seed : int, default 0
        Seed of the sampled orders.
    values : pandas.Series, optional
        The coalition values (:func:`coalition_values`) for the exact value; computed when None.
    independent : Operation, optional
        M1 of ``case`` (solved here when None).
    n_jobs : int or None, default -1
        Workers (joblib) of the clearings.
    control : str or None, default "standalone"
        The control variate ("standalone") or none.
    **solve_kw
        Passed on to each clearing.

    Returns
    -------
    pandas.DataFrame
        Indexed ``["aggregator", *home_ids]``, $ per day: shapley_usd and std_error_usd (0 when exact); when
        sampled also plain_shapley_usd and plain_std_error_usd, textbook permutation sampling (the aggregator's
        position drawn too, no control variate) from the same prefix values, to show what the two refinements
        save: plain sampling needs (plain_std_error_usd / std_error_usd)^2 times as many orders for the same error.
    """
    players = _players(case)
    if samples is None:
        values = values if values is not None else coalition_values(case, independent, **solve_kw)
        phi = shapley_from_values(game_vector(case, values))
        return pd.DataFrame({"shapley_usd": phi, "std_error_usd": 0.0}, index=pd.Index(players, name="party"))
    if not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS}, got {control!r}")
    independent = _grand_m1(case, independent)
    parts = _home_parts(case, independent)
    n = case.n_homes
    rng = np.random.default_rng(seed)
    orders = np.array([rng.permutation(n) for _ in range(samples)]).reshape(samples, n)  # drawn here: seeded
    slots = rng.integers(n + 1, size=samples)  # the aggregator's position, for the plain estimate only
    prefix = _prefix_values(case, parts, orders, n_jobs, solve_kw)
    draws, exact = _averaged_draws(prefix, orders), np.zeros(n + 1)
    if control == "standalone":
        standalone = standalone_values(case, independent, n_jobs, **solve_kw).to_numpy()
        stand_prefix = np.hstack([np.zeros((samples, 1)), np.cumsum(standalone[orders], axis=1)])
        draws = draws - _averaged_draws(stand_prefix, orders)
        exact = np.r_[standalone.sum(), standalone] / 2
    plain = _drawn_position_draws(prefix, orders, slots)
    error = lambda x: x.std(axis=0, ddof=1) / np.sqrt(samples)
    return pd.DataFrame(
        {
            "shapley_usd": exact + draws.mean(axis=0),
            "std_error_usd": error(draws),
            "plain_shapley_usd": plain.mean(axis=0),
            "plain_std_error_usd": error(plain),
        },
        index=pd.Index(players, name="party"),
    )


#: Control variates of a sampled Shapley value (:func:`shapley_value`); None samples the game itself.
CONTROLS = ("standalone", None)


def standalone_values(
    case: Case, independent: Operation | None = None, n_jobs: int | None = -1, **solve_kw
) -> pd.Series:
    """v({aggregator, i}) of every home i: Eq. 20 of each home cleared alone with the aggregator.

    Parameters
    ----------
    case : Case
        The community.
    independent : Operation, optional
        M1 of ``case`` (solved here when None).
    n_jobs : int or None, default -1
        Workers (joblib).
    **solve_kw
        Passed on to each one-home clearing.

    Returns
    -------
    pandas.Series
        $ per day, indexed by home id.
    """
    independent = _grand_m1(case, independent)
    parts = _home_parts(case, independent)
    ids = case.home_ids
    costs = np.array(map_chunks(_costs_task, [[h] for h in ids], (case, solve_kw), n_jobs, CHUNKS))
    return pd.Series(parts - costs, index=pd.Index(ids, name="home"), name="standalone_value_usd_per_day")


#: Order chunks of a sampled Shapley value (one joblib task each, with its own cache of coalition values).
CHUNKS = 16


def _prefix_values(case: Case, parts: np.ndarray, orders: np.ndarray, n_jobs: int | None, solve_kw: dict) -> np.ndarray:
    """(samples, N + 1): v of the first k homes of each order with the aggregator, k = 0..N (v = 0 at k = 0);
    cleared in parallel chunks of orders (the same values for any n_jobs)."""
    return np.array(
        map_chunks(_prefixes_task, orders, (case, parts, solve_kw), n_jobs, CHUNKS, progress="permutations")
    ).reshape(len(orders), case.n_homes + 1)


def _prefixes_task(orders: list, case: Case, parts: np.ndarray, solve_kw: dict) -> np.ndarray:
    """Prefix values of some orders (:func:`_prefix_values`); coalitions met twice are cleared once."""
    cache: dict[frozenset, float] = {}
    out = np.zeros((len(orders), case.n_homes + 1))
    for r, order in enumerate(orders):
        for k in range(1, len(order) + 1):
            members = frozenset(order[:k].tolist())
            if members not in cache:
                cache[members] = _subset_value(case, parts, members, solve_kw)
            out[r, k] = cache[members]
    return out


def _averaged_draws(prefix: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """(samples, N + 1) per order: the aggregator's mean prefix value, and each home's marginal contribution
    times the probability (p + 1) / (N + 1) that the aggregator stands before it (place p); efficient per order."""
    samples, n = orders.shape
    out = np.empty((samples, n + 1))
    out[:, 0] = prefix.mean(axis=1)
    weight = np.arange(1, n + 1) / (n + 1)
    np.put_along_axis(out[:, 1:], orders, weight * np.diff(prefix, axis=1), axis=1)
    return out


def _drawn_position_draws(prefix: np.ndarray, orders: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Textbook permutation sampling from the same prefix values: with the aggregator at place ``slot``, a home
    before it adds 0, one after it its marginal contribution, and the aggregator the value of the homes before."""
    samples, n = orders.shape
    out = np.empty((samples, n + 1))
    out[:, 0] = prefix[np.arange(samples), slots]
    after = np.arange(n)[None, :] >= slots[:, None]
    np.put_along_axis(out[:, 1:], orders, np.where(after, np.diff(prefix, axis=1), 0.0), axis=1)
    return out


def nucleolus(
    case: Case,
    values: pd.Series | None = None,
    samples: int | None = None,
    seed: int = 0,
    independent: Operation | None = None,
    **solve_kw,
) -> pd.Series:
    """The nucleolus of the market game: exact, or of a sampled game.

    Parameters
    ----------
    case : Case
        The community.
    values : pandas.Series, optional
        The coalition values (:func:`coalition_values`); computed when None.
    samples : int, optional
        With ``samples``, the nucleolus of a sampled game (:func:`sampled_game`), an approximation; required above
        14 homes.
    seed : int, default 0
        Seed of the sampled coalitions.
    independent : Operation, optional
        M1 of ``case`` (solved here when None).
    **solve_kw
        Passed on to each clearing.

    Returns
    -------
    pandas.Series
        $ per day per party ``["aggregator", *home_ids]``, named ``nucleolus_usd`` (exact) or
        ``nucleolus_sampled_usd``.
    """
    players = pd.Index(_players(case), name="party")
    if samples is None:
        _check_size(case)
        values = values if values is not None else coalition_values(case, independent, **solve_kw)
        return pd.Series(nucleolus_from_values(game_vector(case, values)), index=players, name="nucleolus_usd")
    return pd.Series(
        nucleolus_from_coalitions(*sampled_game(case, samples, seed, independent, **solve_kw)),
        index=players,
        name="nucleolus_sampled_usd",
    )


def sampled_game(
    case: Case, samples: int, seed: int = 0, independent: Operation | None = None, **solve_kw
) -> tuple[np.ndarray, np.ndarray, float]:
    """(members, values, v(N)) of a sample of the market game's coalitions, for communities too large to enumerate.

    ``samples`` random coalitions of homes with the aggregator (sizes uniform in 1..N-1, seeded), plus every
    single home with it, each home set also without the aggregator (worth 0), the aggregator alone and all
    homes without it (both worth 0). Each sampled coalition costs one clearing of its homes.
    """
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    independent = _grand_m1(case, independent)
    parts = _home_parts(case, independent)
    n = case.n_homes
    rng = np.random.default_rng(seed)
    chosen = {frozenset([i]) for i in range(n)}
    while len(chosen) < n + samples and len(chosen) < 2**n - 2:
        size = int(rng.integers(1, n)) if n > 1 else 1
        chosen.add(frozenset(rng.choice(n, size=size, replace=False).tolist()))
    coalitions = sorted(chosen, key=lambda c: (len(c), sorted(c)))
    grand = _subset_value(case, parts, range(n), solve_kw)
    members = np.zeros((2 * len(coalitions), n + 1), dtype=bool)
    value = np.zeros(2 * len(coalitions))
    for k, c in enumerate(coalitions):  # with the aggregator: v(S); without: 0 (a coalition of homes alone)
        idx = sorted(c)
        members[k, 0] = True
        members[k, [i + 1 for i in idx]] = True
        value[k] = _subset_value(case, parts, idx, solve_kw)
        members[len(coalitions) + k, [i + 1 for i in idx]] = True
    alone = np.zeros((2, n + 1), dtype=bool)  # the aggregator alone, and all homes without it: both worth 0
    alone[0, 0], alone[1, 1:] = True, True
    members, value = np.vstack([members, alone]), np.r_[value, 0.0, 0.0]
    return members, value, grand


class LeastCore(NamedTuple):
    """The least core of the market game: its value e* ($ per day; <= 0 when the core is non-empty) and an
    allocation in it (per party). ``exact`` False: computed on sampled coalitions, so ``value`` is a lower
    bound on the true e* (fewer constraints can only lower the largest excess) and the allocation may leave
    the true least core."""

    value: float
    allocation: pd.Series
    exact: bool
    coalitions: int  # how many coalitions entered the LP


def least_core_from_coalitions(members: np.ndarray, values: np.ndarray, grand: float) -> tuple[float, np.ndarray]:
    """min e s.t. x(S) >= v(S) - e for the given coalitions (rows of ``members``, bool (m, n)), x(N) = grand.

    Returns (e*, x) by one HiGHS LP; with every proper coalition this is the least core.
    """
    m, n = members.shape
    c = np.r_[np.zeros(n), 1.0]  # minimise e
    A_ub = np.hstack([-members.astype(float), -np.ones((m, 1))])  # -x(S) - e <= -v(S)
    res = linprog(
        c,
        A_ub=A_ub,
        b_ub=-np.asarray(values, dtype=float),
        A_eq=np.r_[np.ones(n), 0.0][None, :],
        b_eq=[grand],
        bounds=[(None, None)] * (n + 1),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"the least-core LP did not solve: {res.message}")
    return float(res.x[-1]), res.x[:-1]


def least_core(
    case: Case,
    values: pd.Series | None = None,
    samples: int | None = None,
    seed: int = 0,
    independent: Operation | None = None,
    **solve_kw,
) -> LeastCore:
    """The least core of the market game.

    Exact for N <= 14 (every coalition; the allocation is the nucleolus, which lies in the least core). With
    ``samples`` (or above 14 homes, where it is required), ``samples`` random coalitions of homes with the
    aggregator (sizes uniform in 1..N-1, seeded), plus every single home with it: the value is then a lower
    bound, labelled ``exact=False``.

    Parameters
    ----------
    case : Case
        The community.
    values : pandas.Series, optional
        The coalition values (:func:`coalition_values`); computed when None.
    samples : int, optional
        Random coalitions to use instead of all of them.
    seed : int, default 0
        Seed of the sampled coalitions.
    independent : Operation, optional
        M1 of ``case`` (solved here when None).
    **solve_kw
        Passed on to each clearing.

    Returns
    -------
    LeastCore
        The least-core value epsilon ($ per day) and an allocation in it.
    """
    players = pd.Index(_players(case), name="party")
    if samples is None:
        _check_size(case)
        values = values if values is not None else coalition_values(case, independent, **solve_kw)
        e, x = least_core_from_values(game_vector(case, values))
        return LeastCore(e, pd.Series(x, index=players, name="least_core_usd"), True, len(values) * 2 - 2)
    members, value, grand = sampled_game(case, samples, seed, independent, **solve_kw)
    e, x = least_core_from_coalitions(members, value, grand)
    return LeastCore(e, pd.Series(x, index=players, name="least_core_usd"), False, len(members))


def core_excess(case: Case, gains, values: pd.Series | None = None) -> tuple[float, tuple[str, ...]]:
    """The largest v(S) - sum_{j in S} gain_j over proper coalitions S, and that S.

    Parameters
    ----------
    case : Case
        The community.
    gains : pandas.Series or array_like
        Per party ``["aggregator", *home_ids]``, $ per day (a Series or array in that order).
    values : pandas.Series, optional
        The coalition values (:func:`coalition_values`); computed when None.

    Returns
    -------
    excess : float
        $ per day; <= 0 means no coalition could do better on its own: the allocation is in the core.
    coalition : tuple of str
        The players of the coalition with the largest excess.
    """
    g = _party_gains(case, gains)  # before any clearing: a wrong shape fails at once
    values = values if values is not None else coalition_values(case)
    e, mask = max_excess(game_vector(case, values), g)
    players = _players(case)
    return e, tuple(players[k] for k in range(len(players)) if (mask >> k) & 1)


def _party_gains(case: Case, gains) -> np.ndarray:
    """(N + 1,) gains of ``["aggregator", *home_ids]`` from a Series with those labels or an array in that order;
    anything else is one ValueError that says what is expected (checked before any coalition is cleared)."""
    players = _players(case)
    shown = players if len(players) <= 4 else [*players[:3], "..."]
    expected = (
        f"one gain per party: N + 1 = {len(players)} values, the aggregator's first, then the "
        f"{case.n_homes} homes' in the case's order ({', '.join(map(repr, shown))})"
    )
    if isinstance(gains, pd.Series):
        missing = [p for p in players if p not in gains.index]
        extra = [p for p in gains.index if p not in players]
        if missing or extra or gains.index.has_duplicates:
            raise ValueError(
                f"core_excess: gains must hold {expected}; missing {missing[:5]}, unknown {extra[:5]}"
                + (", duplicate labels" if gains.index.has_duplicates else "")
                + ". Add the aggregator's gain (Settlement.aggregator_gain) as 'aggregator'"
            )
        gains = gains.reindex(players).to_numpy()
    g = np.asarray(gains, dtype=float)
    if g.shape != (len(players),):
        raise ValueError(
            f"core_excess: gains must hold {expected}; got shape {g.shape}. Put the aggregator's gain "
            "first, e.g. numpy.r_[settlement.aggregator_gain, settlement.home_gain]"
        )
    if not np.all(np.isfinite(g)):
        raise ValueError(f"core_excess: every gain must be a finite number of $ per day, got {g.tolist()}")
    return g


def allocation_table(
    case: Case, independent: Operation, market: Operation, profit_rate: float, values: pd.Series | None = None
) -> pd.DataFrame:
    """Each party's gain against M1 under M2, M3, Shapley, the nucleolus and a split proportional to stand-alone
    value, and per rule its core excess, individual rationality and L1 distance to Shapley.

    Proportional: the homes share (1 - rho) Delta C in proportion to v({aggregator, i}), the aggregator keeps
    rho Delta C (as in M2 and M3).

    Parameters
    ----------
    case : Case
        The community.
    independent, market : Operation
        M1 and the clearing.
    profit_rate : float
        rho in [0, 1].
    values : pandas.Series, optional
        The coalition values (:func:`coalition_values`); computed when None.

    Returns
    -------
    pandas.DataFrame
        One column per rule; rows: the parties' gains ($ per day), then ``core_excess_usd`` (<= 0: in the core),
        ``individually_rational`` (1 if every gain >= 0, the value of a player alone) and
        ``l1_distance_to_shapley_usd``.
    """
    values = values if values is not None else coalition_values(case, independent)
    players = _players(case)
    m2 = settle(case, independent, market, profit_rate, "equal")
    m3 = settle(case, independent, market, profit_rate, "contribution")
    lookup = _lookup(values)
    standalone = np.array([lookup[(h,)] for h in case.home_ids])
    surplus = m3.surplus
    rules = {
        "M2": np.r_[m2.aggregator_gain, m2.home_gain],
        "M3": np.r_[m3.aggregator_gain, m3.home_gain],
        "shapley": shapley_from_values(game_vector(case, values)),
        "nucleolus": nucleolus_from_values(game_vector(case, values)),
        "proportional_standalone": np.r_[
            profit_rate * surplus, (1 - profit_rate) * surplus * standalone / standalone.sum()
        ],
    }
    table = pd.DataFrame(rules, index=pd.Index(players, name="party"))
    vector = game_vector(case, values)
    summary = pd.DataFrame(
        {
            name: [
                max_excess(vector, x)[0],
                float(np.all(x >= -LP_TOLERANCE)),
                float(np.abs(x - rules["shapley"]).sum()),
            ]
            for name, x in rules.items()
        },
        index=["core_excess_usd", "individually_rational", "l1_distance_to_shapley_usd"],
    )
    out = pd.concat([table, summary])
    out.index.name = "party"
    return out


def core_profit_rate(case: Case, market: Operation, values: pd.Series, rule: str = "contribution") -> float:
    """The smallest profit rate rho at which the settlement ``rule`` (any of :data:`SETTLE_RULES`) is in the core.

    Under every rule the homes get (1 - rho) Delta C in shares sigma_i fixed in rho (Eq. 22, 1/N, ...) and the
    aggregator rho Delta C (for the value rules sigma_i of
    :func:`~desmarket.settlement.rule_shares`, from ``values``), so a coalition S with the aggregator is content when
    rho Delta C + (1 - rho) Delta C sigma_S >= v(S), that is rho >= (v(S) - Delta C sigma_S) / (Delta C (1 - sigma_S));
    coalitions without the aggregator are worth 0. Returns the largest such bound (0 if none binds), or NaN
    when Delta C <= 0.
    """
    if isinstance(market, Operation):
        market.check_solved_on(case, "market")
    shares = game_shares(case, market, values, rule)
    lookup = _lookup(values)
    grand = lookup[case.home_ids]
    if grand <= 0:
        return float("nan")
    index = {h: k for k, h in enumerate(case.home_ids)}
    bound = 0.0
    for homes, v in lookup.items():
        sigma = shares[[index[h] for h in homes]].sum() if homes else 0.0
        if homes and len(homes) < case.n_homes and sigma < 1 - 1e-12:
            bound = max(bound, (v - grand * sigma) / (grand * (1 - sigma)))
    return float(bound)


# ============================================================================ the rules of issue 22
#: The rule of :func:`rule_gains` beyond those of :func:`~desmarket.settlement.settle`: the nucleolus of the
#: allocations that leave the aggregator rho Delta C (a literature rule; needs all 2^N coalition values).
NUCLEOLUS_AT_RHO = "nucleolus"
#: Every rule of the verdict table, in order: M2, M3, the three value rules, the nucleolus at rho.
VERDICT_RULES = ("equal", "contribution", "standalone", "marginal", "synergy", NUCLEOLUS_AT_RHO)
#: Names of the rules in tables and figures.
RULE_NAMES = {
    "equal": "M2 equal split",
    "contribution": "M3 contribution rate",
    "standalone": "stand-alone value",
    "marginal": "marginal contribution",
    "synergy": "M4 stand-alone + synergy",
    NUCLEOLUS_AT_RHO: "nucleolus at ρ",
}


def rule_values_of_game(case: Case, values: pd.Series) -> RuleValues:
    """The :class:`~desmarket.settlement.RuleValues` (stand-alone, leave-one-out, grand) read off a
    :func:`coalition_values` Series: no clearing."""
    lookup, ids = _lookup(values), case.home_ids
    standalone = np.array([lookup[(h,)] for h in ids])
    out = np.array([lookup[tuple(x for x in ids if x != h)] for h in ids])
    return RuleValues(standalone, out, float(lookup[ids]))


def game_shares(case: Case, market: Operation, values: pd.Series, rule: str) -> np.ndarray:
    """(N,) each home's share sigma_i of (1 - rho) Delta C under a rule of :data:`SETTLE_RULES`, with the
    coalition values of the game (:func:`~desmarket.settlement.rule_shares`; Delta C = v(N) of ``values``).
    ``market`` is needed by the rules that use contributions ("contribution", "synergy"); else it may be None."""
    check_rule(rule)
    rv = rule_values_of_game(case, values)
    contribution = market_contribution(case, market) if rule in ("contribution", "synergy") else None
    return rule_shares(rule, case.n_homes, contribution, rv, rv.grand)


def nucleolus_at_rate(vector: np.ndarray, profit_rate: float) -> np.ndarray:
    """The nucleolus of the allocations of a game (bitmask vector, player 0 the aggregator) that pay player 0
    exactly rho v(N): (n,) gains. One sequence of HiGHS LPs over all 2^n - 2 proper coalitions."""
    members, vals, grand = _proper(vector)
    return nucleolus_from_coalitions(members, vals, grand, pinned={0: profit_rate * grand})


def smallest_core_rate(vector: np.ndarray) -> float:
    """min x_0 / v(N) over the core (x(S) >= v(S) for every S, x(N) = v(N)): the smallest profit rate at which
    some allocation paying the aggregator rho Delta C is in the core, NaN when v(N) <= 0. The core is never
    empty here (the aggregator is a veto player: giving it everything is in the core)."""
    members, vals, grand = _proper(vector)
    if grand <= 0:
        return float("nan")
    n = members.shape[1]
    res = linprog(
        np.eye(n)[0],
        A_ub=-members.astype(float),
        b_ub=-vals,
        A_eq=np.ones((1, n)),
        b_eq=[grand],
        bounds=[(None, None)] * n,
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"the smallest-core-rate LP did not solve: {res.message}")
    return float(res.x[0] / grand)


def rule_gains(
    case: Case, independent: Operation, market: Operation, profit_rate: float, values: pd.Series, rule: str
) -> np.ndarray:
    """(N + 1,) gains against M1 of ``["aggregator", *home_ids]`` under a rule of :data:`VERDICT_RULES`, $ per day.

    The settle rules use ``values`` for their coalition values (no clearing); the nucleolus at rho is computed
    on the exact game (N <= 14)."""
    if rule == NUCLEOLUS_AT_RHO:
        return nucleolus_at_rate(game_vector(case, values), profit_rate)
    st = settle(case, independent, market, profit_rate, rule, values=rule_values_of_game(case, values))
    return np.r_[st.aggregator_gain, st.home_gain]


#: Columns of :func:`rule_verdicts`.
VERDICT_COLUMNS = (
    "budget_gap_usd",
    "individually_rational",
    "core_excess_usd",
    "in_core",
    "l1_distance_to_shapley_usd",
    "l1_distance_to_shapley_split_usd",
    "core_profit_rate",
)


def rule_verdicts(
    case: Case,
    independent: Operation,
    market: Operation,
    profit_rate: float,
    values: pd.Series,
    rules: Sequence[str] = VERDICT_RULES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The verdict of each rule on the exact game (issue 22), and each party's gain under it.

    Parameters
    ----------
    case, independent, market : the community, its M1 and its clearing.
    profit_rate : rho, the aggregator's share (every rule but the Shapley value keeps it).
    values : :func:`coalition_values` of the case (every coalition).
    rules : names of :data:`VERDICT_RULES`.

    Returns
    -------
    verdicts : DataFrame indexed by rule: ``budget_gap_usd`` (sum of gains - Delta C; 0 = budget-balanced),
        ``individually_rational`` (every gain >= 0), ``core_excess_usd`` (max_S v(S) - x(S); <= 0 in the core),
        ``in_core``, ``l1_distance_to_shapley_usd``, ``l1_distance_to_shapley_split_usd`` (over the homes only, to
        the Shapley value's split of the homes' total: home i's Shapley share of the homes scaled to the rule's
        (1 - rho) Delta C; the plain L1 distance is 2 (phi_aggregator - rho Delta C) for every rule that pays each
        home at least its Shapley value, so it cannot rank those rules) and ``core_profit_rate`` (the smallest
        rho at which the rule is in the core: :func:`core_profit_rate`; for the nucleolus at rho the smallest rho
        at which any allocation is, :func:`smallest_core_rate`), $ per day where a unit is given.
    gains : DataFrame, one column per rule, indexed by party, $ per day.
    """
    vector = game_vector(case, values)
    shapley = shapley_from_values(vector)
    surplus = float(_lookup(values)[case.home_ids])
    gains, rows = {}, {}
    for rule in rules:
        x = rule_gains(case, independent, market, profit_rate, values, rule)
        excess = max_excess(vector, x)[0]
        gains[rule] = x
        rows[rule] = {
            "budget_gap_usd": float(x.sum() - surplus),
            "individually_rational": bool(np.all(x >= -LP_TOLERANCE)),
            "core_excess_usd": excess,
            "in_core": bool(excess <= CORE_TOLERANCE),
            "l1_distance_to_shapley_usd": float(np.abs(x - shapley).sum()),
            "l1_distance_to_shapley_split_usd": float(
                np.abs(x[1:] - x[1:].sum() * shapley[1:] / shapley[1:].sum()).sum()
            ),
            "core_profit_rate": smallest_core_rate(vector) + 0.0
            if rule == NUCLEOLUS_AT_RHO
            else core_profit_rate(case, market, values, rule),
        }
    verdicts = pd.DataFrame.from_dict(rows, orient="index")
    verdicts.index.name = "rule"
    table = pd.DataFrame(gains, index=pd.Index(_players(case), name="party"))
    table["shapley"] = shapley
    return verdicts, table


#: A core excess up to this, $ per day, counts as in the core (solver noise of the coalition values).
CORE_TOLERANCE = 1e-6


def rule_properties(n_homes: int) -> pd.DataFrame:
    """What each rule of :data:`VERDICT_RULES` costs and needs, for a community of ``n_homes`` homes.

    Returns
    -------
    DataFrame indexed by rule: ``clearings`` (community clearings beyond the market's own one; a one-home
    clearing is a home's own problem at the wholesale prices), ``one_home_clearings``, ``reveals`` (what a home
    must report beyond its metered flows) and ``market_process`` (whether the iterative market process of
    notebook 07 can compute it without a central solve)."""
    n = int(n_homes)
    rows = {
        "equal": (0, 0, "nothing", "yes"),
        "contribution": (0, 0, "its trades (metered in the process)", "yes"),
        "standalone": (0, n, "its stand-alone value v(aggregator, i): its own optimum at the wholesale prices", "yes"),
        "marginal": (n, 0, "its costs in N more runs of the market without one home each", "yes, N + 1 runs"),
        "synergy": (0, n, "its stand-alone value and its trades", "yes"),
        NUCLEOLUS_AT_RHO: (2**n - 2 - n, n, "its costs in every coalition", "no: 2^N clearings and LPs"),
    }
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["clearings", "one_home_clearings", "reveals", "market_process"]
    ).rename_axis("rule")


#: The rule the README recommends (issue 22) and the scorecard tests: the stand-alone rule, in the core on every
#: studied day of the year at rho = 0.2, from one local solve per home (notebook 08, fairness_by_day.csv).
RECOMMENDED_RULE = "standalone"


def sampled_rule_verdicts(
    case: Case,
    independent: Operation,
    market: Operation,
    profit_rate: float,
    samples: int,
    orders: int,
    seed: int = 0,
    rules: Sequence[str] = ("equal", "contribution", "standalone", "marginal", "synergy"),
    n_jobs: int | None = -1,
    *,
    leave_one_out: bool = True,
    method: str = "masked",
) -> pd.DataFrame:
    """The verdict of each settle rule on a community too large for the exact game (issue 22).

    Parameters
    ----------
    case, independent, market : the community, its M1 and its clearing.
    profit_rate : rho.
    samples : random coalitions of homes with the aggregator (sizes uniform in 1..N-1, ``seed``) checked beside
        every single home and every "everyone but one" coalition.
    orders : permutations of the sampled Shapley value (:func:`shapley_value`, stand-alone control variate); 0
        skips it (each order costs N clearings), and the distances to it are then NaN.
    n_jobs : joblib workers of the clearings.
    leave_one_out : False leaves the N "everyone but one" coalitions out (N clearings of N - 1 homes: too many
        at 1,000 homes); the marginal rule needs them, so it must then not be among ``rules``.
    method : how the coalition values are computed: "masked" (:func:`desmarket.coalitions.masked_values`) or
        "direct" (:func:`desmarket.coalitions.certified_values`, the same values to ~1e-8 $/day, faster).

    Returns
    -------
    DataFrame indexed by rule: ``budget_gap_usd``, ``individually_rational``, ``core_excess_lower_bound_usd``
    (the largest v(S) - x(S) over the coalitions checked: a lower bound on the core excess),
    ``l1_distance_to_shapley_usd`` and ``l1_distance_to_shapley_split_usd`` against the sampled Shapley value
    (each with a standard error from the orders, ``*_std_error_usd``: the per-party errors summed, an upper
    bound), and ``coalitions_checked``; $ per day.
    """
    if not leave_one_out and "marginal" in rules:
        raise CaseError(
            "sampled_rule_verdicts",
            "the marginal rule needs every 'everyone but one' coalition, and leave_one_out is False",
            "pass leave_one_out=True, or leave 'marginal' out of rules",
            column="rules",
        )
    if method not in ("masked", "direct"):
        raise CaseError(
            "sampled_rule_verdicts",
            f"unknown method {method!r}",
            "pass method='masked' or 'direct'",
            column="method",
        )
    n = case.n_homes
    rng = np.random.default_rng(seed)
    blocks = [np.eye(n, dtype=bool), ~np.eye(n, dtype=bool)] if leave_one_out else [np.eye(n, dtype=bool)]
    chosen = np.zeros((samples, n), dtype=bool)
    for k in range(samples):
        chosen[k, rng.choice(n, size=int(rng.integers(1, n)), replace=False)] = True
    masks = np.vstack([*blocks, chosen, np.ones((1, n), dtype=bool)])
    if method == "masked":
        values = coalitions.masked_values(case, independent, masks, n_jobs)
    else:
        values, _ = coalitions.certified_values(case, independent, masks, n_jobs)
    grand, standalone = values[-1], values[:n]
    out = values[n : 2 * n] if leave_one_out else np.full(n, np.nan)
    rv = RuleValues(standalone, out, float(grand))
    if orders > 0:
        phi = shapley_value(case, samples=orders, seed=seed, independent=independent, n_jobs=n_jobs)
        shapley, error = phi["shapley_usd"].to_numpy(), phi["std_error_usd"].to_numpy()
    else:
        shapley, error = np.full(n + 1, np.nan), np.full(n + 1, np.nan)
    rows = {}
    for rule in rules:
        st = settle(case, independent, market, profit_rate, rule, values=rv)
        x = np.r_[st.aggregator_gain, st.home_gain]
        homes = masks[:-1].astype(float) @ st.home_gain + st.aggregator_gain
        split = x[1:].sum() * shapley[1:] / shapley[1:].sum()
        rows[rule] = {
            "budget_gap_usd": float(x.sum() - st.surplus),
            "individually_rational": bool(np.all(x >= -LP_TOLERANCE)),
            # with the aggregator: v(S) - x(S); without it every coalition is worth 0: -x_i, -x_0, -x(all homes)
            "core_excess_lower_bound_usd": float(max(np.max(values[:-1] - homes), -x[0], -x[1:].min(), -x[1:].sum())),
            "l1_distance_to_shapley_usd": float(np.abs(x - shapley).sum()),
            "l1_distance_to_shapley_std_error_usd": float(error.sum()),
            "l1_distance_to_shapley_split_usd": float(np.abs(x[1:] - split).sum()),
            "coalitions_checked": len(masks) - 1 + n + 2,
        }
    out_frame = pd.DataFrame.from_dict(rows, orient="index")
    out_frame.index.name = "rule"
    return out_frame
