"""The day-ahead market the paper describes (issue 20): commit before the uncertainty, settle the imbalance after.

The paper's aggregator acts for the homes "in the day-ahead market" and uses scenario-based stochastic
programming "to account for the uncertainties in real-time load and DER output" (Section 2.1.2). The one-stage
model (``stages=1``, every other module) gives every scenario its own decisions: an average of perfect-foresight
days, the *wait-and-see* value. The two-stage clearing (``stages=2`` of :func:`~desmarket.engine.clear_market`
and :func:`~desmarket.engine.solve_independent`; written in :func:`desmarket.formulation.formulate`) commits a
day-ahead purchase b_t and sale a_t per hour before the scenario is known; the homes then operate and trade per
scenario and the aggregator settles the shortfall at k^up LMP and the excess at k^dn LMP [choice: market.json
``imbalance_buy_ratio`` 1.5, ``imbalance_sell_ratio`` 0.5].

This module asks what that is worth:

* :func:`stochastic_value` -- RP, WS, EV, EEV, VSS = EEV - RP and EVPI = RP - WS, $ per day, for the market
  and for M1 (Birge & Louveaux 2011, Ch. 4);
* :func:`hold_out` and :func:`realised_day` -- the day itself held out of its similar-day scenarios: the
  day-ahead position fixed, the second stage re-solved on the measured day, and the settlement under ex-ante
  payments (Eq. 26 in expectation) and ex-post payments (recomputed on the day);
* :func:`two_stage_by_day` and :func:`two_stage_summary` -- the same on every day of the measured year, rows
  reused between runs through :mod:`desmarket.daycache`;
* :func:`plot_position` and :func:`plot_year` -- the figures of notebook 10.

Every value is the clearing objective without its tie-break terms (:func:`community_cost`); lower is better.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pandas as pd

from .case import Case, check_imbalance_ratios
from .engine import clear_market, solve_independent
from .errors import CaseError, NoTradeError
from .formulation import FirstStage
from .model import Operation, m1_day_ahead, with_day_ahead
from .paper import PAPER_PROFIT_RATE
from .settlement import Settlement, settle

#: The price source of the year study (:data:`desmarket.data.DEFAULT_PRICES`; the data layer is imported only
#: when a day is built, so that ``import desmarket`` stays light).
DEFAULT_PRICES = "ercot-2022"

#: Version of :func:`two_stage_day`: bump it when what a row holds or how it is computed changes (3: PIQP at the
#: tolerances of :data:`desmarket.engine.TWO_STAGE_OPTIONS` for every two-stage solve; 4: a failed day classified
#: by its error, :func:`desmarket.errors.failure_kind`; 5: the deterministic equivalent's community totals in
#: groups of :data:`desmarket.formulation.POSITION_GROUP`, PIQP's infeasibility and refinement settings; 6: the
#: pooled problem first, :func:`desmarket.engine._pooled_equivalent`).
TWO_STAGE_VERSION = 6
#: The study name of the per-day rows (:func:`desmarket.year.day_key`).
TWO_STAGE_STUDY = "two_stage_by_day"
VALUE_COLUMNS = ("rp_usd", "ws_usd", "ev_usd", "eev_usd", "vss_usd", "evpi_usd")
MODES = ("market", "independent")


# ============================================================================== values
def community_cost(op: Operation) -> float:
    """sum_i C_i - R_A, $ per day: the community's expected cost (wholesale - utility), the clearing objective
    (Eq. 16) without the tie-break terms. For M1, sum_i C_i^0 - R_A^0; Delta C (Eq. 20) is M1's minus the market's."""
    return float(op.home_cost.sum() - op.aggregator_revenue)


def mean_scenario_case(case: Case) -> Case:
    """The EV problem's case: one scenario ("mean") with the probability-weighted mean load and PV of each home."""
    mean = lambda cube: np.einsum("s,nst->nt", case.probability, cube)[:, None, :]
    return dataclasses.replace(
        case, scenarios=("mean",), probability=np.ones(1), load=mean(case.load), pv=mean(case.pv)
    )


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} ('market': the clearing, 'independent': M1), got {mode!r}")
    return mode


def one_stage_case(case: Case) -> Case:
    """The case without its imbalance ratios: what a one-stage result depends on (its fingerprint)."""
    market = dataclasses.replace(case.market, imbalance_buy_ratio=None, imbalance_sell_ratio=None)
    return dataclasses.replace(case, market=market)


def _check_ws(ws: Operation, case: Case, mode: str) -> Operation:
    """A given wait-and-see result must be the one-stage ``mode`` result of this case (any imbalance ratios)."""
    if not isinstance(ws, Operation) or ws.stages != 1 or ws.mode != mode:
        raise ValueError(f"ws must be the one-stage {mode} Operation of this case (stages=1), got {ws!r:.80}")
    ws.check_solved_on(one_stage_case(case), "wait-and-see")
    return ws


def stochastic_value(case: Case, mode: str = "market", *, ws: Operation | None = None, **solve_kw) -> pd.Series:
    """RP, WS, EV, EEV, VSS and EVPI of the two-stage clearing (``mode="market"``) or of M1 (``"independent"``).

    Each value is the objective without tie-break terms (:func:`community_cost`), lower is better. In M1 the homes
    do not depend on the position, so RP and EEV are the aggregator's accounts of the WS operation at the two
    positions (:func:`desmarket.model.with_day_ahead`): no further solve. Both differences hold to within the
    tie-breaks' cost (``Operation.regularization_cost``).

    Parameters
    ----------
    case : Case
        The community; needs k^up >= k^b >= k^s >= k^dn (market.json).
    mode : str, default "market"
        "market" (the clearing) or "independent" (M1).
    ws : Operation, optional
        The one-stage result of ``mode`` if already solved (it does not depend on the imbalance ratios); solved
        here when None.
    **solve_kw
        Passed to every solve (method, solver, n_jobs, ...).

    Returns
    -------
    pandas.Series
        $ per day: ``rp_usd`` the recourse problem, the two-stage optimum (``stages=2``); ``ws_usd`` wait and
        see, the one-stage optimum (each scenario its own decisions); ``ev_usd`` the two-stage problem of the mean
        scenario (:func:`mean_scenario_case`); ``eev_usd`` the two-stage objective with the day-ahead position
        fixed at EV's (homes re-optimise per scenario); ``vss_usd`` = EEV - RP >= 0, the value of the stochastic
        solution; ``evpi_usd`` = RP - WS >= 0, the expected value of perfect information.

    Raises
    ------
    CaseError
        Unless k^up >= k^b >= k^s >= k^dn.
    """
    _check_mode(mode)
    check_imbalance_ratios(case.market)
    solve = clear_market if mode == "market" else solve_independent
    ws = solve(case, **solve_kw) if ws is None else _check_ws(ws, case, mode)
    ev = solve(mean_scenario_case(case), stages=2, **solve_kw)
    if mode == "market":
        rp = solve(case, stages=2, **solve_kw)
        eev = solve(case, stages=2, day_ahead=ev.day_ahead, **solve_kw)
    else:
        stage = FirstStage.of_case(case)
        rp = with_day_ahead(case, ws, *m1_day_ahead(case, ws, stage), stage)
        if ev.day_ahead is None:
            raise AssertionError("a two-stage solve returned no day-ahead position")
        eev = with_day_ahead(case, ws, ev.day_ahead["buy_kw"], ev.day_ahead["sell_kw"], stage)
    values = {k: community_cost(op) for k, op in (("rp_usd", rp), ("ws_usd", ws), ("ev_usd", ev), ("eev_usd", eev))}
    values["vss_usd"] = values["eev_usd"] - values["rp_usd"]
    values["evpi_usd"] = values["rp_usd"] - values["ws_usd"]
    return pd.Series(values, name=mode)[list(VALUE_COLUMNS)]


def stochastic_values(case: Case, *, ws: dict | None = None, **solve_kw) -> pd.DataFrame:
    """:func:`stochastic_value` of the market and of M1, and Delta C of each problem.

    Parameters
    ----------
    case : Case
        The community.
    ws : dict, optional
        {"market": ..., "independent": ...} one-stage results already solved (either may be left out).
    **solve_kw
        Passed to every solve.

    Returns
    -------
    pandas.DataFrame
        One row each ("market", "M1") with the columns of :func:`stochastic_value`, $ per day, and a row
        ``delta_c`` (M1's value minus the market's: of RP the two-stage surplus, of WS today's).
    """
    ws = ws or {}
    rows = [stochastic_value(case, m, ws=ws.get(m), **solve_kw) for m in MODES]
    table = pd.DataFrame(rows, index=["market", "M1"])
    table.loc["delta_c"] = table.loc["M1"] - table.loc["market"]
    table.index.name = "problem"
    return table


# =========================================================================== out of sample
def hold_out(case: Case, scenario: str) -> tuple[Case, Case]:
    """(ex ante, realised): the case without ``scenario`` (its other scenarios, probabilities renormalised) and
    ``scenario`` alone with probability 1. For a case built by :func:`desmarket.data.build_case` the scenarios are
    similar days and the target day is one of them: held out, it is the day that actually happens.

    Raises :class:`CaseError` naming the scenario if it is not in the case, or if it is the only one.
    """
    ids = list(case.scenarios)
    if scenario not in ids:
        raise CaseError("scenarios.csv", f"no scenario '{scenario}' to hold out", f"use one of {ids[:10]}", "scenario")
    if len(ids) < 2:
        raise CaseError(
            "scenarios.csv", "a case of one scenario has none left once the day is held out", "give two or more"
        )
    k = ids.index(scenario)
    keep = np.array([j for j in range(len(ids)) if j != k])
    pick = lambda where, probability: dataclasses.replace(
        case,
        scenarios=tuple(ids[j] for j in where),
        probability=probability,
        load=case.load[:, where],
        pv=case.pv[:, where],
    )
    rest = case.probability[keep]
    return pick(keep, rest / rest.sum()), pick(np.array([k]), np.ones(1))


class RealisedDay(NamedTuple):
    """The two-stage clearing of a day's similar days, and what happens on the day itself (:func:`realised_day`).

    ex_ante_m1, ex_ante_market: the two-stage M1 and clearing over the similar days (expected values)
    realised_m1, realised_market: the day itself, at the ex-ante day-ahead positions (homes re-optimise)
    ex_ante: {"equal": M2, "contribution": M3} :class:`Settlement` in expectation (Eq. 26); M3 is None where it
             is undefined (nobody trades over the similar days: :class:`~desmarket.errors.NoTradeError`)
    ex_post: the same settled on the realised day (rule -> Settlement, or None when it is undefined: no trade)
    homes:   per home, the expected gain and the realised gains under ex-ante and ex-post payments, $
    """

    ex_ante_m1: Operation
    ex_ante_market: Operation
    realised_m1: Operation
    realised_market: Operation
    ex_ante: dict
    ex_post: dict
    homes: pd.DataFrame

    @property
    def expected_surplus(self) -> float:
        """Delta C in expectation over the similar days (Eq. 20), $."""
        return self.ex_ante["equal"].surplus

    @property
    def realised_surplus(self) -> float:
        """Delta C on the day itself, $: M1's community cost minus the market's, both at their day-ahead positions."""
        return community_cost(self.realised_m1) - community_cost(self.realised_market)


def realised_gains(ex_ante: Settlement, realised_m1: Operation, realised_market: Operation) -> np.ndarray:
    """(N,) $: each home's gain on the realised day under the ex-ante payments Gamma_i (Eq. 26 in expectation):
    C_i^0(day) - (C_i*(day) - Gamma_i)."""
    return realised_m1.home_cost - (realised_market.home_cost - ex_ante.payment)


def _settled(case: Case, m1: Operation, market: Operation, profit_rate: float, rule: str) -> Settlement | None:
    """:func:`~desmarket.settlement.settle`, or None where M3 is undefined (nobody trades: :class:`NoTradeError`)."""
    try:
        return settle(case, m1, market, profit_rate, rule)
    except NoTradeError:
        return None


def realised_day(case: Case, scenario: str, profit_rate: float = PAPER_PROFIT_RATE, **solve_kw) -> RealisedDay:
    """Commit on the similar days, live the held-out day, settle it (issue 20, "Out of sample, and ex post").

    The scenario ``scenario`` is held out (:func:`hold_out`); the two-stage M1 and clearing are solved on the
    others; their day-ahead positions are fixed and the second stage is solved on the held-out day (the homes
    re-optimise; in M1 each home alone, the aggregator's position M1's). Settled ex ante (Eq. 26 over the similar
    days, paid whatever happens) and ex post (Eq. 26 recomputed on the day).

    Parameters
    ----------
    case : Case
        The community, the realised day among its scenarios.
    scenario : str
        The id of the scenario that is the realised day.
    profit_rate : float, default 0.2
        rho in [0, 1].
    **solve_kw
        Passed to every solve.

    Returns
    -------
    RealisedDay
        The ex-ante and realised operations and both settlements ($ per day).
    """
    ante, real = hold_out(case, scenario)
    m1 = solve_independent(ante, stages=2, **solve_kw)
    market = clear_market(ante, stages=2, **solve_kw)
    real_m1 = solve_independent(real, stages=2, day_ahead=m1.day_ahead, **solve_kw)
    real_market = clear_market(real, stages=2, day_ahead=market.day_ahead, **solve_kw)
    rules = {"M2": "equal", "M3": "contribution"}
    ex_ante = {rule: _settled(ante, m1, market, profit_rate, rule) for rule in rules.values()}
    ex_post = {rule: _settled(real, real_m1, real_market, profit_rate, rule) for rule in rules.values()}
    homes = {}
    nan = np.full(case.n_homes, np.nan)
    for mode, rule in rules.items():
        before, post = ex_ante[rule], ex_post[rule]
        homes[f"{mode}_expected_usd"] = nan if before is None else before.home_gain
        homes[f"{mode}_ex_ante_usd"] = nan if before is None else realised_gains(before, real_m1, real_market)
        homes[f"{mode}_ex_post_usd"] = nan if post is None else post.home_gain
    table = pd.DataFrame(homes, index=pd.Index(case.home_ids, name="home"))
    return RealisedDay(m1, market, real_m1, real_market, ex_ante, ex_post, table)


def realised_table(day: RealisedDay) -> pd.DataFrame:
    """The realised day beside its expectation: Delta C, the aggregator's gain and the homes' total and smallest
    gain under M2 and M3, in expectation, on the day under ex-ante payments and under ex-post payments, $."""
    rows = {}
    real_surplus = day.realised_surplus
    for mode, rule in (("M2", "equal"), ("M3", "contribution")):
        ante = day.ex_ante[rule]
        if ante is None:  # M3 undefined over the similar days: its rows are NaN
            rows.update({(mode, basis): dict.fromkeys(REALISED_COLUMNS, np.nan) for basis in REALISED_BASES})
            continue
        real_aggregator = day.realised_market.aggregator_revenue - ante.payment.sum()
        post = day.ex_post[rule]
        for basis, (gains, aggregator, surplus) in zip(
            REALISED_BASES,
            (
                (ante.home_gain, ante.aggregator_gain, ante.surplus),
                (
                    day.homes[f"{mode}_ex_ante_usd"].to_numpy(),
                    real_aggregator - day.realised_m1.aggregator_revenue,
                    real_surplus,
                ),
                (
                    day.homes[f"{mode}_ex_post_usd"].to_numpy(),
                    np.nan if post is None else post.aggregator_gain,
                    real_surplus,
                ),
            ),
        ):
            values = (
                surplus,
                aggregator,
                float(np.sum(gains)),
                float(np.min(gains)),
                int(np.sum(gains < -LOSS_TOLERANCE)),
            )
            rows[(mode, basis)] = dict(zip(REALISED_COLUMNS, values))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.names = ["mode", "basis"]
    return frame


#: The rows of each mode in :func:`realised_table`, and its columns.
REALISED_BASES = ("expected", "realised, ex-ante payments", "realised, ex-post payments")
REALISED_COLUMNS = ("delta_c_usd", "aggregator_gain_usd", "homes_gain_usd", "smallest_home_gain_usd", "homes_losing")
#: A home's gain below minus this, $ per day, counts as a loss (solver noise is not).
LOSS_TOLERANCE = 1e-6


# ============================================================================== the year
def two_stage_day(
    date,
    measured: pd.DataFrame,
    n_homes: int = 10,
    n_scenarios: int = 10,
    seed: int = 0,
    profit_rate: float = PAPER_PROFIT_RATE,
    prices=DEFAULT_PRICES,
) -> dict:
    """One day's row of the two-stage year: the case of that day (:func:`desmarket.data.build_case`, ``n_scenarios``
    similar days including the day itself), the day held out (so ``n_scenarios - 1`` similar days ex ante), the
    stochastic values of the market and M1 over those, and the realised day (:func:`realised_day`). Status
    "failed" with the reason where the case cannot be built or solved (:func:`desmarket.year.day_row`)."""
    from .year import day_row

    day = pd.Timestamp(date).strftime("%Y-%m-%d")
    columns = lambda case: day_values(case, day, profit_rate)
    return day_row(day, measured, columns, n_homes=n_homes, n_scenarios=n_scenarios, seed=seed, prices=prices)


def day_values(case: Case, scenario: str, profit_rate: float = PAPER_PROFIT_RATE) -> dict:
    """The numbers of one day's row (:func:`two_stage_day`) for a case and its held-out scenario, $ per day."""
    ante, _ = hold_out(case, scenario)
    row = {}
    for mode, label in (("market", "market"), ("independent", "m1")):
        values = stochastic_value(ante, mode, n_jobs=1)
        row.update({f"{label}_{k}": float(v) for k, v in values.items()})
    row["delta_c_ws_usd"] = row["m1_ws_usd"] - row["market_ws_usd"]
    row["delta_c_rp_usd"] = row["m1_rp_usd"] - row["market_rp_usd"]
    day = realised_day(case, scenario, profit_rate, n_jobs=1)
    row["delta_c_realised_usd"] = day.realised_surplus
    for mode in ("M2", "M3"):
        for basis in ("ex_ante", "ex_post"):
            gains = day.homes[f"{mode}_{basis}_usd"].to_numpy()
            row[f"{mode.lower()}_{basis}_losing_share"] = (
                float(np.mean(gains < -LOSS_TOLERANCE)) if np.all(np.isfinite(gains)) else np.nan
            )
    return row


def two_stage_by_day(
    dates=None,
    measured: pd.DataFrame | None = None,
    n_jobs: int | None = -1,
    prices=DEFAULT_PRICES,
    *,
    tables=(),
    fresh: bool = False,
    **kw,
) -> pd.DataFrame:
    """One row per day (:func:`two_stage_day`), in calendar order; ``kw``: n_homes, n_scenarios, seed, profit_rate.

    Rows of earlier ``two_stage_by_day.csv`` ``tables`` are reused where their key (the day, its data, its
    prices, every parameter and :data:`TWO_STAGE_VERSION`) matches; ``fresh=True`` recomputes every day
    (as :func:`desmarket.year.claims_by_day`). Seeded, so a rerun gives the same table whatever ``n_jobs``.
    """
    from .year import rows_by_day

    kw = {"n_homes": 10, "n_scenarios": 10, "seed": 0, "profit_rate": PAPER_PROFIT_RATE, **kw}
    return rows_by_day(
        two_stage_day,
        TWO_STAGE_STUDY,
        TWO_STAGE_VERSION,
        dates,
        measured,
        n_jobs,
        prices,
        tables=tables,
        fresh=fresh,
        **kw,
    )


#: The columns of the year summary, with their words.
SUMMARY_COLUMNS = {
    "market_rp_usd": "market: two-stage optimum RP, $/day",
    "market_ws_usd": "market: wait-and-see WS, $/day",
    "market_vss_usd": "market: VSS, $/day",
    "market_evpi_usd": "market: EVPI, $/day",
    "m1_vss_usd": "M1: VSS, $/day",
    "m1_evpi_usd": "M1: EVPI, $/day",
    "delta_c_ws_usd": "Delta C, one stage (wait and see), $/day",
    "delta_c_rp_usd": "Delta C, two stages (expected), $/day",
    "delta_c_realised_usd": "Delta C, two stages, on the day itself, $/day",
    "m2_ex_ante_losing_share": "M2: share of homes losing on the day, ex-ante payments",
    "m3_ex_ante_losing_share": "M3: share of homes losing on the day, ex-ante payments",
    "m2_ex_post_losing_share": "M2: share of homes losing on the day, ex-post payments",
    "m3_ex_post_losing_share": "M3: share of homes losing on the day, ex-post payments",
}


def two_stage_summary(by_day: pd.DataFrame) -> pd.DataFrame:
    """Per quantity of :data:`SUMMARY_COLUMNS`: the days it was computed on, mean, median, 5th and 95th
    percentiles over the studied days, and the share of days where it is negative."""
    ok = by_day[by_day["status"] == "ok"]
    rows = {}
    for column, words in SUMMARY_COLUMNS.items():
        values = pd.to_numeric(ok[column], errors="coerce").dropna().to_numpy(dtype=float)
        rows[words] = {
            "days": len(values),
            "mean": float(values.mean()) if len(values) else np.nan,
            "median": float(np.median(values)) if len(values) else np.nan,
            "p05": float(np.percentile(values, 5)) if len(values) else np.nan,
            "p95": float(np.percentile(values, 95)) if len(values) else np.nan,
            "share_negative": float(np.mean(values < -LOSS_TOLERANCE)) if len(values) else np.nan,
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "quantity"
    return frame


# ============================================================================== figures
def plot_position(case: Case, market: Operation, m1: Operation | None = None, ax=None):
    """The day-ahead position (purchase - sale, kW) beside each scenario's community net load, per hour."""
    import matplotlib.pyplot as plt

    if market.day_ahead is None:
        raise ValueError("plot_position needs a two-stage result (clear_market(case, stages=2))")
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    hours = np.arange(case.lmp.shape[-1])
    net = market.community_net_load
    for k in range(net.shape[0]):
        ax.plot(hours, net[k], color="0.65", lw=0.9, label="scenario net load (market)" if k == 0 else None)
    position = market.day_ahead["buy_kw"] - market.day_ahead["sell_kw"]
    ax.step(hours, position, where="mid", color="C0", lw=2.2, label="day-ahead position (market)")
    if m1 is not None and m1.day_ahead is not None:
        m1_position = m1.day_ahead["buy_kw"] - m1.day_ahead["sell_kw"]
        ax.step(hours, m1_position, where="mid", color="C3", lw=1.6, ls="--", label="day-ahead position (M1)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("hour")
    ax.set_ylabel("kW (import +, export -)")
    ax.set_title("Day-ahead position against the scenarios' community net load")
    ax.legend(fontsize=8)
    return ax.figure


def plot_year(by_day: pd.DataFrame, axes=None):
    """Over the year: Delta C one stage, two stages expected and realised (top, symmetric log scale); the share of
    homes losing on the day under ex-ante payments (bottom)."""
    import matplotlib.pyplot as plt

    ok = by_day[by_day["status"] == "ok"]
    dates = pd.to_datetime(ok.index)
    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top, bottom = axes
    top.plot(dates, ok["delta_c_ws_usd"], lw=1.0, color="0.5", label="one stage (wait and see)")
    top.plot(dates, ok["delta_c_rp_usd"], lw=1.2, color="C0", label="two stages, expected")
    top.plot(dates, ok["delta_c_realised_usd"], lw=0, marker=".", ms=3, color="C3", label="two stages, realised day")
    top.axhline(0, color="k", lw=0.6)
    top.set_yscale("symlog", linthresh=1.0)  # a few price-spike days reach hundreds of dollars
    top.set_ylabel("cooperative surplus, $/day")
    top.set_title("Cooperative surplus of the market over the year")
    top.legend(fontsize=8)
    bottom.plot(dates, ok["m2_ex_ante_losing_share"], lw=0, marker=".", ms=3, color="C1", label="equal split (M2)")
    bottom.plot(dates, ok["m3_ex_ante_losing_share"], lw=0, marker="x", ms=3, color="C2", label="by contribution (M3)")
    bottom.set_ylabel("share of homes")
    bottom.set_title("Homes worse off on the day itself, paid the expected settlement")
    bottom.legend(fontsize=8)
    return top.figure
