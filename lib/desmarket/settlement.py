"""Value allocation (Eqs. 20-30): cooperative surplus, contribution rates, Nash-bargaining settlement.

M2 and M3 are closed-form numpy on the arrays of two :class:`~desmarket.model.Operation` results; nothing is
re-solved. The rules of issue 22 (:data:`VALUE_RULES`: "standalone", "marginal", "synergy" = M4) keep the same
Nash-bargaining form, Gamma_i = (C_i* - C_i^0) + alpha_i Delta C with sum alpha = 1 - rho, but take their shares
from coalition values of the market game (:mod:`desmarket.coalitions`): N stand-alone values
v({aggregator, i}) or N leave-one-out values v(N - {i}). :func:`rule_shares` is the pure-numpy definition of
every rule's shares. :func:`nash_bargaining` solves Eqs. 23-25 numerically, only to check Eq. 26.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import cvxpy as cp
import numpy as np
import pandas as pd

from . import coalitions
from .case import Case
from .errors import CaseError, MismatchError, NoTradeError, RegularizationWarning
from .model import DEFAULT_SOLVER, Operation, SolverError, solve

RULES = ("contribution", "equal")  # M3, M2 (Table 2): closed form from the two results
#: Rules whose shares come from coalition values (issue 22): stand-alone value, marginal contribution, and M4
#: (stand-alone value credited, the trading synergy split by market value contribution, Eqs. 21-22).
VALUE_RULES = ("standalone", "marginal", "synergy")
#: Every rule of :func:`settle`.
SETTLE_RULES = RULES + VALUE_RULES
#: Coalition values (stand-alone, marginal) below this, $ per day, count as zero: solver noise (a home's
#: stand-alone value is >= 0 in exact arithmetic: its M1 operation is feasible alone with the aggregator).
VALUE_TOLERANCE = 1e-7
#: A home's contribution (Eq. 21) below this, $ per day, is zero: prices and trades at solver-noise level (for
#: example all LMPs zero, where the clearing prices come back as +-1e-11 $/kWh) carry no market value.
CONTRIBUTION_TOLERANCE = 1e-9
#: Share of Delta C above which the tie-break's cost (epsilon sum pi (c^2 + e^2)) draws a RegularizationWarning:
#: the tie-break may then have moved the operation, not only picked one of several optima (MODEL.md).
REGULARIZATION_SHARE = 0.05
MIN_SURPLUS = 1e-6  # $ per day; below this Delta C is solver noise


@dataclass(frozen=True)
class Settlement:
    """Payments and net benefits of one settlement rule, $ per day (expected over scenarios).

    surplus:          Delta C, the cooperative surplus (Eq. 20)
    alpha:            (N,) bargaining weights: contribution rates (Eq. 22, rule "contribution" = M3) or
                      (1 - rho)/N (Eq. 29, rule "equal" = M2)
    payment:          (N,) Gamma_i, paid by the aggregator to home i (Eq. 26)
    home_gain:        (N,) alpha_i Delta C, the home's cost reduction against M1 (Eq. 27)
    aggregator_gain:  rho Delta C, the aggregator's revenue increase against M1 (Eq. 28)
    home_cost:        (N,) C*_i - Gamma_i, the home's cost after settlement
    aggregator_revenue: R_A* - sum Gamma, the aggregator's revenue after settlement
    """

    rule: str
    profit_rate: float
    surplus: float
    alpha: np.ndarray
    payment: np.ndarray
    home_gain: np.ndarray
    aggregator_gain: float
    home_cost: np.ndarray
    aggregator_revenue: float


def _check_pair(independent: Operation, market: Operation, case: Case | None = None) -> None:
    """Both results exist, are M1 and the market, and belong to the same case (homes, scenarios, hours, and the
    case fingerprint of :func:`desmarket.model.case_fingerprint`); with ``case``, both were solved on it."""
    for name, op in (("independent", independent), ("market", market)):
        if not isinstance(op, Operation):
            raise TypeError(
                f"{name} must be an Operation (from solve_independent / clear_market), got {type(op).__name__}"
            )
    if independent.mode != "independent" or market.mode != "market":
        raise ValueError(
            f"expected (independent, market) results, got ({independent.mode}, {market.mode}); "
            "pass solve_independent(case) then clear_market(case)"
        )
    if independent.home_ids != market.home_ids:
        raise MismatchError("the two results are for different homes; solve both on the same case")
    if independent.load.shape != market.load.shape or not np.array_equal(independent.probability, market.probability):
        raise MismatchError(
            "the two results are for different scenarios (count, hours or probabilities); solve both on the same case"
        )
    if case is not None:
        _check_case(case, independent, "independent")
        _check_case(case, market)
    elif None not in (independent.fingerprint, market.fingerprint) and independent.fingerprint != market.fingerprint:
        raise MismatchError(
            f"the independent result (case fingerprint {independent.fingerprint}) and the market "
            f"result ({market.fingerprint}) were solved on different cases (same homes and "
            "scenarios, but other profiles, prices or market parameters); solve both on the same case"
        )


def _check_rate(profit_rate) -> float:
    if isinstance(profit_rate, bool) or not isinstance(profit_rate, numbers.Real):
        raise TypeError(
            f"profit_rate rho must be a number in [0, 1], got {profit_rate!r} ({type(profit_rate).__name__})"
        )
    rho = float(profit_rate)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"profit_rate rho = {profit_rate!r} must lie in [0, 1]")
    return rho


def cooperative_surplus(independent: Operation, market: Operation, case: Case | None = None) -> float:
    """Delta C = (sum_i C_i^0 - R_A^0) - (sum_i C_i* - R_A*) (Eq. 20). Independent of rho.

    Parameters
    ----------
    independent, market : Operation
        M1 and the clearing.
    case : Case, optional
        When given, both results must have been solved on it (:class:`MismatchError` otherwise).

    Returns
    -------
    float
        $ per day (expected over the scenarios).
    """
    _check_pair(independent, market, case)
    before = independent.home_cost.sum() - independent.aggregator_revenue
    after = market.home_cost.sum() - market.aggregator_revenue
    return float(before - after)


def market_contribution(case: Case, market: Operation) -> np.ndarray:
    """Expected market value of each home's trades, sum_s pi_s sum_t |lambda_{s,t}| |x_{i,s,t}| (Eq. 21).

    Supplying and receiving both count (absolute value of x). A trade is valued at the magnitude of the clearing
    price [choice]: equal to Eq. 21's lambda |x| wherever lambda >= 0 (every positive-LMP case), and >= 0 in a
    negative-price hour, where a kWh matched locally spares the community an import or export that the grid
    prices at |lambda| per kWh, so it is worth |lambda| too. The contributions are therefore never negative and
    the rates of Eq. 22 are always shares.

    Parameters
    ----------
    case : Case
        The case the clearing was solved on.
    market : Operation
        The clearing.

    Returns
    -------
    numpy.ndarray
        (N,) $ per day, >= 0.
    """
    if market.price is None:
        raise ValueError("contributions need a market result (clear_market), not mode M1")
    return trade_values(case.probability, market.price, market.trade)


def trade_values(probability: np.ndarray, price: np.ndarray, trade: np.ndarray) -> np.ndarray:
    """sum_s pi_s sum_t |lambda_{s,t}| |x_{i,s,t}| of (S,) pi, (S, T) lambda ($/kWh) and (N, S, T) x (kW), $ per
    day, (N,); below :data:`CONTRIBUTION_TOLERANCE` it is 0 (solver noise is no market value). Eq. 21 as
    :func:`market_contribution` applies it, for callers holding the arrays (the market process's rounds)."""
    value = np.einsum("s,st,nst->n", probability, np.abs(price), np.abs(trade))
    return np.where(value < CONTRIBUTION_TOLERANCE, 0.0, value)


def contribution_rates(case: Case, market: Operation, profit_rate: float) -> np.ndarray:
    """Market value contribution rates alpha_i = (1 - rho) c_i / sum_j c_j (Eqs. 21-22).

    A home that never trades, or whose contribution is below :data:`CONTRIBUTION_TOLERANCE`, gets 0.

    Parameters
    ----------
    case : Case
        The case the clearing was solved on.
    market : Operation
        The clearing.
    profit_rate : float
        rho in [0, 1].

    Returns
    -------
    numpy.ndarray
        (N,) alpha_i >= 0 summing to 1 - rho (dimensionless).

    Raises
    ------
    NoTradeError
        When every contribution is zero (nobody trades, or every clearing price is zero): the rule is undefined.
    """
    rho = _check_rate(profit_rate)
    _check_case(case, market)
    value = market_contribution(case, market)
    total = value.sum()
    if total <= 0:
        raise NoTradeError(
            f"no home's trades have a market value above {CONTRIBUTION_TOLERANCE:g} $/day (nobody "
            "trades in the local market, or every clearing price is zero), so the contribution "
            "rates (Eq. 22) are undefined; settle with rule='equal' (M2) instead"
        )
    return (1.0 - rho) * value / total


def _check_case(case: Case, op: Operation, name: str = "market") -> None:
    """``op`` (the ``name`` result) was solved on ``case``: same homes, scenarios, probabilities and fingerprint."""
    if not isinstance(case, Case):
        raise TypeError(f"case must be a desmarket.Case, got {type(case).__name__}")
    if not isinstance(op, Operation):
        source = "solve_independent" if name == "independent" else "clear_market"
        raise TypeError(f"{name} must be an Operation from {source}, got {type(op).__name__}")
    if (
        case.home_ids != op.home_ids
        or case.load.shape != op.load.shape
        or not np.array_equal(case.probability, op.probability)
    ):
        raise MismatchError(
            f"the {name} result is not for this case ({case}): homes, scenarios or probabilities "
            "differ; pass the case it was solved on"
        )
    op.check_solved_on(case, name)


def equal_rates(n_homes: int, profit_rate: float) -> np.ndarray:
    """Symmetric Nash bargaining weights alpha_i = (1 - rho) / N (Eq. 29, mode M2)."""
    return np.full(n_homes, (1.0 - _check_rate(profit_rate)) / n_homes)


class RuleValues(NamedTuple):
    """The coalition values the rules of :data:`VALUE_RULES` need, $ per day (:func:`rule_values`).

    standalone:    (N,) s_i = v({aggregator, i}), each home cleared alone with the aggregator
    leave_one_out: (N,) v(N - {i}), every home but i (NaN when not computed)
    grand:         v(N) by the same solver (Delta C; NaN when not computed)
    """

    standalone: np.ndarray
    leave_one_out: np.ndarray
    grand: float


def check_rule(rule) -> str:
    """``rule`` is one of :data:`SETTLE_RULES`, else one :class:`~desmarket.errors.CaseError` listing them."""
    if not isinstance(rule, str) or rule not in SETTLE_RULES:
        raise CaseError(
            "settle",
            f"unknown settlement rule {rule!r}; the rules are {', '.join(SETTLE_RULES)}",
            "pass rule='contribution' (M3), 'equal' (M2), 'standalone', 'marginal' or 'synergy' (M4)",
            column="rule",
        )
    return rule


def rule_values(
    case: Case, independent: Operation, rule: str, n_jobs: int | None = -1, solver: str = coalitions.MASKED_SOLVER
) -> RuleValues:
    """The coalition values ``rule`` needs, from the masked grand clearing (:mod:`desmarket.coalitions`).

    Parameters
    ----------
    case : Case
        The community.
    independent : Operation
        M1 on ``case`` (the homes' stand-alone costs).
    rule : str
        "standalone" and "synergy": the N stand-alone values (one solve with nobody trading, equivalent to N
        one-home clearings); "marginal": also the N leave-one-out values and v(N) (N + 1 solves); "contribution"
        and "equal" need none (NaN arrays).
    n_jobs : int or None, default -1
        Workers (joblib) of the marginal rule's solves.
    solver : str, default "PIQP"
        Solver of the masked clearing.

    Returns
    -------
    RuleValues
        Stand-alone, leave-one-out and grand values, $ per day.
    """
    check_rule(rule)
    n = case.n_homes
    nan = np.full(n, np.nan)
    if rule in RULES:
        return RuleValues(nan, nan, float("nan"))
    standalone = coalitions.standalone_values(case, independent, solver)
    if rule != "marginal":
        return RuleValues(standalone, nan, float("nan"))
    out, grand = coalitions.leave_one_out_values(case, independent, n_jobs, solver)
    return RuleValues(standalone, out, grand)


def _noise_free(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(values < VALUE_TOLERANCE, 0.0, values)


def rule_shares(
    rule: str,
    n_homes: int,
    contribution: np.ndarray | None = None,
    values: RuleValues | None = None,
    surplus: float | None = None,
) -> np.ndarray:
    """Each home's share of the homes' (1 - rho) Delta C under ``rule``, (N,) >= 0 summing to 1.

    Parameters
    ----------
    rule : one of :data:`SETTLE_RULES`.
    n_homes : N.
    contribution : (N,) c_i, the market value of each home's trades, $ per day (Eq. 21,
        :func:`market_contribution`); rules "contribution" and "synergy".
    values : :class:`RuleValues` (rules "standalone", "marginal", "synergy").
    surplus : Delta C, $ per day (Eq. 20; rule "synergy").

    Returns
    -------
    (N,) shares sigma_i; alpha_i = (1 - rho) sigma_i.

    Notes
    -----
    Values below :data:`VALUE_TOLERANCE` (solver noise, including tiny negative ones) count as zero. The rules
    of :data:`VALUE_RULES` are always defined: where their measure is zero for every home they fall back to the
    equal split, the symmetric Nash solution (Eq. 29) [choice]; only M3 keeps raising (its historic behaviour).

    * "equal" (M2, Eq. 29): 1/N.
    * "contribution" (M3, Eq. 22): c_i / sum c; :class:`NoTradeError` when sum c = 0.
    * "standalone": s_i / sum s; 1/N when every s_i = 0 (no home gains alone with the aggregator).
    * "marginal": m_i / sum m with m_i = v(N) - v(N - {i}); 1/N when every m_i = 0.
    * "synergy" (M4): each home is credited its stand-alone value and the synergy sigma = Delta C - sum s is
      split by market value contribution: sigma_i = (s_i + sigma c_i / sum c) / Delta C [choice]. Where that is
      undefined or would break individual rationality it falls back, continuously: when every s_i = 0 it is M3,
      c_i / sum c (sigma = Delta C); when the synergy is <= 0 (solver noise: Delta C >= sum s in exact
      arithmetic, since the homes could all stay apart) or nobody trades (sum c = 0) it is the stand-alone rule
      s_i / sum s (which at sigma = 0 is the same formula); when every s_i and every c_i is zero, 1/N.
    """
    check_rule(rule)
    equal = np.full(n_homes, 1.0 / n_homes)
    if rule == "equal":
        return equal
    if rule == "contribution":
        c = np.asarray(contribution, dtype=float)
        if c.sum() <= 0:
            raise NoTradeError(
                "no home's trades have a market value (nobody trades in the local market, or every clearing "
                "price is zero), so the contribution rates (Eq. 22) are undefined; settle with rule='equal' "
                "(M2) instead"
            )
        return c / c.sum()
    if values is None:
        raise ValueError(f"rule {rule!r} needs the coalition values (values=RuleValues, see rule_values)")
    if rule == "marginal":
        m = _noise_free(values.grand - np.asarray(values.leave_one_out, dtype=float))
        return m / m.sum() if m.sum() > 0 else equal
    s = _noise_free(values.standalone)
    if rule == "synergy":
        if surplus is None:
            raise ValueError("rule 'synergy' needs surplus (Delta C, $ per day)")
        c = np.asarray(contribution, dtype=float)
        synergy = float(surplus) - s.sum()
        if c.sum() > 0 and (s.sum() <= 0 or synergy > 0):
            return (s + synergy * c / c.sum()) / float(surplus) if s.sum() > 0 else c / c.sum()
    return s / s.sum() if s.sum() > 0 else equal


def settle(
    case: Case,
    independent: Operation,
    market: Operation,
    profit_rate: float,
    rule: str = "contribution",
    *,
    values: RuleValues | None = None,
    n_jobs: int | None = -1,
) -> Settlement:
    """Nash-bargaining settlement Gamma_i = (C_i* - C_i^0) + alpha_i Delta C (Eqs. 20, 26-30).

    Parameters
    ----------
    case : Case
        The case both results were solved on (checked by fingerprint).
    independent : Operation
        M1 (:func:`desmarket.solve_independent`).
    market : Operation
        The clearing (:func:`desmarket.clear_market`).
    profit_rate : float
        rho in [0, 1], the aggregator's share of Delta C.
    rule : str, default "contribution"
        "contribution" (M3, alpha from Eq. 22), "equal" (M2, Eq. 29), or one of :data:`VALUE_RULES`
        ("standalone", "marginal", "synergy" = M4; :func:`rule_shares`); alpha_i = (1 - rho) sigma_i in every case.
    values : RuleValues, optional
        The coalition values of a value rule; computed by :func:`rule_values` when None.
    n_jobs : int or None, default -1
        Workers (joblib) of the marginal rule's N + 1 solves.

    Returns
    -------
    Settlement
        Payments, gains and costs after settlement, $ per day (expected over the scenarios).

    Raises
    ------
    NoTradeError
        Rule "contribution" when nobody's trades have a market value (use another rule).
    MismatchError
        When a result was solved on another case.
    """
    _check_pair(independent, market, case)
    rho = _check_rate(profit_rate)
    check_rule(rule)
    if rule == "contribution":
        alpha = contribution_rates(case, market, rho)
    elif rule == "equal":
        alpha = equal_rates(len(market.home_ids), rho)
    else:
        values = rule_values(case, independent, rule, n_jobs) if values is None else values
        contribution = market_contribution(case, market)
        shares = rule_shares(rule, case.n_homes, contribution, values, cooperative_surplus(independent, market))
        alpha = (1.0 - rho) * shares
    surplus = cooperative_surplus(independent, market)
    _warn_regularization(independent, market, surplus)
    payment = market.home_cost - independent.home_cost + alpha * surplus  # Eq. 26
    return Settlement(
        rule=rule,
        profit_rate=rho,
        surplus=surplus,
        alpha=alpha,
        payment=payment,
        home_gain=independent.home_cost - (market.home_cost - payment),  # Eq. 27 (= alpha Delta C)
        aggregator_gain=float(market.aggregator_revenue - payment.sum() - independent.aggregator_revenue),  # Eq. 28
        home_cost=market.home_cost - payment,
        aggregator_revenue=float(market.aggregator_revenue - payment.sum()),
    )


def _warn_regularization(independent: Operation, market: Operation, surplus: float) -> None:
    cost = max(independent.regularization_cost, market.regularization_cost)
    if surplus > MIN_SURPLUS and cost > REGULARIZATION_SHARE * surplus:
        warnings.warn(
            f"the tie-break term costs {cost:.4g} $/day, more than {REGULARIZATION_SHARE:.0%} of Delta C "
            f"({surplus:.4g} $/day): epsilon may have moved the operation, not only broken ties. Lower "
            "market.json's regularization (MODEL.md default 1e-5 $/kW^2).",
            RegularizationWarning,
            stacklevel=3,
        )


def profit_rate_sweep(
    case: Case, independent: Operation, market: Operation, profit_rates, rule: str = "contribution"
) -> pd.DataFrame:
    """Net benefits of the aggregator and each home for several rho (Section 3.4, Figure 5), from one clearing.

    Parameters
    ----------
    case : Case
        The case both results were solved on.
    independent, market : Operation
        M1 and the clearing.
    profit_rates : float or sequence of float
        One rho or a non-empty sequence of them, each in [0, 1].
    rule : str, default "contribution"
        The settlement rule (:func:`settle`).

    Returns
    -------
    pandas.DataFrame
        Long table: profit_rate, party ("aggregator" or a home id), alpha, net_benefit_usd ($ per day).
    """
    rates = [
        _check_rate(rho.item() if isinstance(rho, np.generic) else rho)
        for rho in np.atleast_1d(np.asarray(profit_rates, dtype=object))
    ]
    if not rates:
        raise ValueError(
            "profit_rates is empty; pass one profit rate rho in [0, 1] or a non-empty list of them, "
            "e.g. numpy.linspace(0, 1, 21)"
        )
    rows = []
    for rho in rates:
        st = settle(case, independent, market, rho, rule)
        rows.append(
            pd.DataFrame(
                {
                    "profit_rate": float(rho),
                    "party": ["aggregator", *market.home_ids],
                    "alpha": [float(rho), *st.alpha],
                    "net_benefit_usd": [st.aggregator_gain, *st.home_gain],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


#: Clarabel tolerances tried in turn for the Nash check, tightest first. The log objective is flat at its
#: optimum, so payments are only as accurate as the gap tolerance allows; Clarabel reaches 1e-12 on most
#: instances and stalls on a few, where a looser gap is tried (on 600 random settlements the largest error
#: was 6e-7 of max(|Gamma|, Delta C)). An inaccurate status is never used.
NASH_TOLERANCES = (1e-12, 3e-12, 1e-11, 3e-11, 1e-10, 1e-9)


def nash_bargaining(
    independent: Operation,
    market: Operation,
    alpha: np.ndarray,
    profit_rate: float,
    *,
    solver: str = DEFAULT_SOLVER,
    solver_options: dict | None = None,
) -> np.ndarray:
    """Payments maximising the weighted Nash product of Eqs. 23-25, solved numerically.

    maximise rho log(R_A* - sum Gamma - R_A^0) + sum_{alpha_i > 0} alpha_i log(C_i^0 - C_i* + Gamma_i)
    subject to both gains >= 0 for the aggregator and every home (individual rationality, Eqs. 24-25).
    The operation is fixed at the clearing, which maximises the surplus both factors share. Used to check
    the closed form of :func:`settle`; needs Delta C > 0.

    Parameters
    ----------
    independent, market : Operation
        M1 and the clearing.
    alpha : array_like
        (N,) bargaining weights, >= 0.
    profit_rate : float
        rho, the aggregator's weight.
    solver : str, default "CLARABEL"
        cvxpy solver of the exponential-cone program.
    solver_options : dict, optional
        Its options.

    Returns
    -------
    numpy.ndarray
        (N,) Gamma_i, $ per day paid by the aggregator to home i.
    """
    _check_pair(independent, market)
    rho = _check_rate(profit_rate)
    alpha = np.asarray(alpha, dtype=float)
    surplus = cooperative_surplus(independent, market)
    if surplus <= MIN_SURPLUS:
        raise ValueError(
            f"the cooperative surplus is {surplus:.3g} $; Nash bargaining needs a surplus above "
            f"{MIN_SURPLUS:g} $ (smaller values are solver noise: nobody gains from the market)"
        )
    gamma = cp.Variable(len(alpha))
    # Both gains are measured in units of Delta C, which keeps the problem well scaled.
    home = (independent.home_cost - market.home_cost + gamma) / surplus
    aggregator = (market.aggregator_revenue - independent.aggregator_revenue - cp.sum(gamma)) / surplus
    active = np.flatnonzero(alpha > 0)
    objective = alpha[active] @ cp.log(home[active])
    if rho > 0:
        objective = objective + rho * cp.log(aggregator)
    problem = cp.Problem(cp.Maximize(objective), [home >= 0, aggregator >= 0])
    if solver_options is not None or solver != "CLARABEL":
        solve(problem, solver, **(solver_options or {}))
    else:
        for k, tol in enumerate(NASH_TOLERANCES):
            try:
                solve(problem, solver, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=500)
                break
            except SolverError:
                if k == len(NASH_TOLERANCES) - 1:
                    raise
    return np.asarray(gamma.value, dtype=float)
