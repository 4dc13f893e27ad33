"""Tables of the study (Section 3): the paper's Tables 1-4, the headline numbers, the scorecard.

Pure functions from a case and its results (:class:`~desmarket.results.Study`, operations, settlements) to
DataFrames: nothing here solves, reads or writes a file. Solving and what-if questions live in
:mod:`desmarket.study`, figures in :mod:`desmarket.plots`; the tables are written by
:func:`desmarket.io.save_table` (re-exported here as ``report.save_table``, as the notebooks call it) with a
fixed float format so that reruns give identical files. The paper's claims, their kinds, units and our reasons where we
differ are data: ``resources/paper_claims.toml``, read by :func:`desmarket.claims.paper_claims`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .case import Case, scenario_table
from .claims import CLAIM_KINDS as CLAIM_KINDS  # re-exported names: the scorecard's vocabulary
from .claims import CLAIM_SOURCES as CLAIM_SOURCES
from .claims import DATA_SOURCES, NOT_REPORTED, agreement, claim_note
from .claims import NOTE_FIELDS as NOTE_FIELDS
from .claims import parse_claims as parse_claims
from .daycache import FLOAT_FORMAT as FLOAT_FORMAT
from .io import OPTIONAL_TABLE_FORMATS as OPTIONAL_TABLE_FORMATS  # re-exported: the writers live in io
from .io import STUDY_TABLE_FORMATS as STUDY_TABLE_FORMATS
from .io import save_study_table as save_study_table
from .io import save_table as save_table
from .model import Operation
from .settlement import Settlement, contribution_rates, market_contribution, profit_rate_sweep

if TYPE_CHECKING:
    from .results import Study

PEAK_HOURS = slice(8, 20)  # 8:00-20:00, the paper's peak period of Figure 3


def note_fields(study: Study) -> dict:
    """The values a claim's reason may name (:data:`NOTE_FIELDS`), from the run: the profit rate rho it was
    settled at and the case's k^b, k^s (Eq. 4), each written with ``:g`` (0.2, not 0.20000)."""
    market = study.case.market
    return {
        "rho": f"{study.profit_rate:g}",
        "buy_ratio": f"{market.buy_ratio:g}",
        "sell_ratio": f"{market.sell_ratio:g}",
    }


def _expected(case: Case, values: np.ndarray) -> np.ndarray:
    """(N, S, T) -> (N, T) probability-weighted over scenarios."""
    return np.einsum("s,nst->nt", case.probability, values)


def daily_energy(case: Case, op: Operation) -> pd.DataFrame:
    """Expected daily load, charge, discharge, PV used and PV available per home, kWh (Table 3 columns)."""
    e = lambda v: _expected(case, v).sum(axis=1)
    return pd.DataFrame(
        {
            "load_kwh": e(op.load),
            "charge_kwh": e(op.charge),
            "discharge_kwh": e(op.discharge),
            "pv_used_kwh": e(op.pv_used),
            "pv_available_kwh": e(case.pv),
        },
        index=pd.Index(case.home_ids, name="home"),
    )


def table1_storage(case: Case) -> pd.DataFrame:
    """Table 1: storage parameters of each home (the paper's values were lost; ours are MODEL.md's choices)."""
    cols = ["battery_kwh", "battery_kw", "soc_min", "soc_max", "soc_initial", "eta_charge", "eta_discharge"]
    return case.homes[cols].copy()


def table2_modes() -> pd.DataFrame:
    """Table 2: the three operation modes."""
    return pd.DataFrame(
        {
            "mode": ["M1", "M2", "M3"],
            "local_market": ["no", "yes", "yes"],
            "settlement": [
                "retail / net metering only",
                "symmetric Nash bargaining, alpha = (1 - rho)/N (Eq. 29)",
                "market value contribution rate + Nash bargaining (Eq. 30)",
            ],
        }
    ).set_index("mode")


def table3_energy(study: Study) -> pd.DataFrame:
    """Table 3: per home and in total, load, charge, discharge and PV used, without (M1) and with the market."""
    before = daily_energy(study.case, study.independent).drop(columns="pv_available_kwh")
    after = daily_energy(study.case, study.market).drop(columns="pv_available_kwh")
    table = pd.concat({"without_market": before, "with_market": after}, axis=1)
    table.loc["total"] = table.sum()
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    return table


def table4_costs(study: Study) -> pd.DataFrame:
    """Table 4: cost of the aggregator and each home, $/day, under M1, the market before payment, M2 and M3.

    Costs are negative benefits: the aggregator's cost is minus its revenue R_A.
    """
    s = study
    homes = pd.DataFrame(
        {
            "M1": s.independent.home_cost,
            "market_before_payment": s.market.home_cost,
            "M2": s.m2.home_cost,
            "M3": s.m3.home_cost,
        },
        index=list(s.case.home_ids),
    )
    agg = pd.DataFrame(
        {
            "M1": [-s.independent.aggregator_revenue],
            "market_before_payment": [-s.market.aggregator_revenue],
            "M2": [-s.m2.aggregator_revenue],
            "M3": [-s.m3.aggregator_revenue],
        },
        index=["aggregator"],
    )
    table = pd.concat([agg, homes])
    table.loc["total"] = table.sum()
    table.index.name = "party"
    return table


def settlement_table(study: Study) -> pd.DataFrame:
    """Figure 4's data: per home alpha, payment and cost reduction under M2 and M3, and traded energy."""
    s = study
    return pd.DataFrame(
        {
            "traded_kwh": s.market.traded_energy,
            "alpha_m2": s.m2.alpha,
            "alpha_m3": s.m3.alpha,
            "payment_m2_usd": s.m2.payment,
            "payment_m3_usd": s.m3.payment,
            "reduction_m2_usd": s.m2.home_gain,
            "reduction_m3_usd": s.m3.home_gain,
        },
        index=pd.Index(s.case.home_ids, name="home"),
    )


def rules_table(case: Case, settlements: dict[str, Settlement]) -> pd.DataFrame:
    """Each party's bargaining weight, payment and gain under each settlement rule given.

    Parameters
    ----------
    case : Case
        The case the settlements were computed on.
    settlements : dict of str to Settlement
        Rule name -> its :class:`~desmarket.settlement.Settlement` (:func:`desmarket.settle`), all of one clearing.

    Returns
    -------
    pandas.DataFrame
        One row per home and a last row "aggregator"; per rule the columns ``alpha_<rule>`` (alpha_i, and rho for
        the aggregator), ``payment_<rule>_usd`` (Gamma_i paid by the aggregator; the aggregator's row: minus their
        sum) and ``gain_<rule>_usd`` (alpha_i Delta C; rho Delta C), $ per day.
    """
    index = pd.Index([*case.home_ids, "aggregator"], name="party")
    columns = {}
    for rule, s in settlements.items():
        columns[f"alpha_{rule}"] = [*s.alpha, s.profit_rate]
        columns[f"payment_{rule}_usd"] = [*s.payment, -float(np.sum(s.payment))]
        columns[f"gain_{rule}_usd"] = [*s.home_gain, s.aggregator_gain]
    return pd.DataFrame(columns, index=index)


def hourly_profile(study: Study, home: str | None = None) -> pd.DataFrame:
    """Expected hourly curves (kW) without and with the market: one home (Figure 2) or the community (Figure 3).

    Columns: hour, mode, load, pv_used, charge, discharge, net_load (= d + c - e - g, what the home draws from
    outside; summed over homes it is the community's grid import minus export), lmp ($/kWh) and price, the local
    clearing price (dual of Eq. 18) weighted by the scenario probabilities, $/kWh (NaN without the market).
    """
    case = study.case
    pick = (lambda v: v[case.home_ids.index(home)]) if home is not None else (lambda v: v.sum(axis=0))
    hours = np.arange(case.load.shape[-1])
    frames = []
    for mode, op in (("without market", study.independent), ("with market", study.market)):
        curves = {k: pick(_expected(case, getattr(op, k))) for k in ("load", "pv_used", "charge", "discharge")}
        curves["net_load"] = pick(_expected(case, op.net_consumption))  # d + c - e - g; summed = grid import
        price = (
            np.einsum("s,st->t", case.probability, op.price) if op.price is not None else np.full(len(hours), np.nan)
        )
        frames.append(pd.DataFrame({"hour": hours, "mode": mode, **curves, "lmp": case.lmp, "price": price}))
    return pd.concat(frames, ignore_index=True)


def peak_import(profile: pd.DataFrame) -> pd.DataFrame:
    """The peak import of each mode of an :func:`hourly_profile`: the hour of its largest expected net load and
    that net load, kW (Figure 3 marks both; the scorecard reports their change). Index: mode, in the profile's
    order."""
    rows = profile.loc[profile.groupby("mode", sort=False)["net_load"].idxmax()]
    return rows.set_index("mode")[["hour", "net_load"]].rename(columns={"net_load": "net_load_kw"})


def headline(study: Study) -> dict:
    """The numbers the paper reports (Section 3), computed from our results. Keys as in :func:`paper_claims`."""
    s = study
    before, after = daily_energy(s.case, s.independent).sum(), daily_energy(s.case, s.market).sum()
    throughput = lambda d: d.charge_kwh + d.discharge_kwh
    net = lambda op: _expected(s.case, op.net_load - op.net_surplus).sum(axis=0)
    peak = peak_import(hourly_profile(s))["net_load_kw"]
    return {
        "surplus_usd": s.m3.surplus,
        "m2_reduction_usd": float(np.mean(s.m2.home_gain)),
        "m2_alpha": float(np.mean(s.m2.alpha)),
        "m3_reduction_min_usd": float(s.m3.home_gain.min()),
        "m3_reduction_max_usd": float(s.m3.home_gain.max()),
        "aggregator_change_m3_pct": 100 * s.m3.aggregator_gain / abs(s.independent.aggregator_revenue),
        "load_change_pct": 100 * (after.load_kwh / before.load_kwh - 1),
        "storage_change_pct": (100 * (throughput(after) / throughput(before) - 1))
        if throughput(before) > 0
        else np.nan,
        "peak_net_load_reduction_kwh": float((net(s.independent) - net(s.market))[PEAK_HOURS].sum()),
        "peak_import_change_pct": float(100 * (peak["with market"] / peak["without market"] - 1))
        if peak["without market"] > 0
        else np.nan,
        "pv_used_m1_pct": 100 * before.pv_used_kwh / before.pv_available_kwh,
        "pv_used_market_pct": 100 * after.pv_used_kwh / after.pv_available_kwh,
        "alpha_traded_correlation": correlation(s.m3.alpha, s.market.traded_energy),
    }


def scorecard(study: Study, claims: pd.DataFrame, values: dict | None = None, source: str = "measured") -> pd.DataFrame:
    """Every claim of the paper beside ours, with agreement in direction and order of magnitude.

    claims: :func:`parse_claims` of the claims file (:func:`desmarket.io.paper_claims` reads the package's).
    The note gives the claim's reason where either agreement is "no", and always for a claim the paper does not
    report (kind "unreported": paper column "not reported", both agreements "n/a"), where it says what ours shows.
    values: our value per claim key (default :func:`headline`; notebook 08 passes the fairness values).
    source: where the case comes from (:data:`DATA_SOURCES`): "measured" (the CityLearn homes, the default) or
    "case" (a user's case directory); the notes are generated from it and from the run (:func:`claim_note`: the
    profit rate actually used, the case's k^b / k^s).
    """
    if source not in DATA_SOURCES:
        raise ValueError(
            f"source must be one of {DATA_SOURCES} (where the case comes from: the measured homes "
            f"of desmarket.data.build_case, or a user's case directory), got {source!r}"
        )
    values = headline(study) if values is None else values
    fields = note_fields(study)
    missing = sorted(set(claims.index) - set(values))
    if missing:
        raise KeyError(
            f"no value for the claims {missing}; pass them in `values` (claims of source "
            f"'fairness' come from notebook 08)"
        )
    rows = []
    for key, c in claims.iterrows():
        ours = values[key]
        direction, magnitude = agreement(c.kind, c.paper, c.sign, ours)
        explain = c.kind == "unreported" or "no" in (direction, magnitude)
        rows.append(
            {
                "key": key,
                "claim": c.claim,
                "unit": c.unit,
                "paper": {"sign": c.paper_text, "unreported": NOT_REPORTED}.get(c.kind, c.paper),
                "ours": ours,
                "same_direction": direction,
                "same_order_of_magnitude": magnitude,
                "note": claim_note(c, fields, source) if explain else "",
            }
        )
    return pd.DataFrame(rows).set_index("key")


def scorecard_with_days(card: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The scorecard (:func:`scorecard`, indexed by claim key) with the share of days that agree with the paper.

    summary: :func:`desmarket.year.claims_summary` of the measured year. Adds ``days_studied`` and
    ``days_agreeing`` (its ``share_agree``: in direction, and in order of magnitude where the claim is a
    number); NaN for a claim not computed per day (the fairness claims) or one the paper does not report.
    """
    out = card.copy()
    out["days_studied"] = summary["days"].reindex(out.index)
    out["days_agreeing"] = summary["share_agree"].reindex(out.index)
    return out


# ================================================================================ notebook tables
def inputs_table(case: Case) -> pd.DataFrame:
    """Per home: expected daily baseline load and available PV (kWh), utility coefficients, battery."""
    return pd.DataFrame(
        {
            "load_kwh": _expected(case, case.load).sum(axis=1),
            "pv_kwh": _expected(case, case.pv).sum(axis=1),
            "utility_a_usd_per_kwh2": case.column("utility_a"),
            "utility_b_usd_per_kwh": case.column("utility_b"),
            "battery_kwh": case.column("battery_kwh"),
        },
        index=pd.Index(case.home_ids, name="home"),
    )


def inputs_hourly(case: Case) -> pd.DataFrame:
    """Community load and PV per scenario and hour (kW), with retail price and LMP ($/kWh), long format."""
    s = case.n_scenarios
    return scenario_table(
        case.scenarios,
        load_kw=case.load.sum(axis=0),
        pv_kw=case.pv.sum(axis=0),
        retail=np.tile(case.retail, (s, 1)),
        lmp=np.tile(case.lmp, (s, 1)),
    )


def cost_breakdown(op: Operation, case: Case) -> pd.DataFrame:
    """Per home, $ per day: retail bill, net-metering credit, utility and cost C_i (Eq. 5), plus traded kWh."""
    return pd.DataFrame(
        {
            "retail_bill_usd": op.retail_bill,
            "net_metering_credit_usd": op.net_metering_credit,
            "utility_usd": op.utility,
            "cost_usd": op.home_cost,
            "traded_kwh": op.traded_energy,
        },
        index=pd.Index(case.home_ids, name="home"),
    )


def price_table(case: Case, market: Operation) -> pd.DataFrame:
    """Clearing price per scenario and hour with its state: importing or exporting (pinned to k^b LMP or k^s LMP),
    balanced (any price in the band clears) or congested (a limit binds; the price may leave the band)."""
    s = case.n_scenarios
    net = market.community_net_load
    price, balanced, congested = market.cleared()
    state = np.where(
        congested, "congested", np.where(balanced, "balanced", np.where(net > 0, "importing", "exporting"))
    )
    return scenario_table(
        case.scenarios,
        price_usd_per_kwh=price,
        buy_usd_per_kwh=np.tile(case.buy_price, (s, 1)),
        sell_usd_per_kwh=np.tile(case.sell_price, (s, 1)),
        community_net_load_kw=net,
        state=state,
    )


def contribution_table(case: Case, market: Operation, profit_rate: float) -> pd.DataFrame:
    """Per home: traded energy (kWh/day), its market value (Eq. 21, $/day) and the contribution rate alpha."""
    return pd.DataFrame(
        {
            "traded_kwh": market.traded_energy,
            "contribution_usd": market_contribution(case, market),
            "alpha": contribution_rates(case, market, profit_rate),
        },
        index=pd.Index(case.home_ids, name="home"),
    )


def correlation(x, y) -> float:
    """Pearson correlation of two per-home series (NaN when either is constant: no linear relation to measure)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.corrcoef(x, y)[0, 1]) if np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")


def gini(x) -> float:
    """Gini coefficient of non-negative shares: sum_ij |x_i - x_j| / (2 n^2 mean), 0 when all are equal, (n - 1) / n
    when one holds everything; NaN when they sum to 0."""
    x = np.sort(np.asarray(x, dtype=float))
    if x.size == 0 or np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError(f"the Gini coefficient needs finite shares >= 0, got {x!r}")
    n, total = x.size, x.sum()
    if total <= 0:
        return float("nan")
    return float(2 * np.sum(np.arange(1, n + 1) * x) / (n * total) - (n + 1) / n)


def message_table(case: Case, convergence: pd.DataFrame) -> pd.DataFrame:
    """What each party of the coordinated market process sends and receives (Section 2.1.2), in bytes.

    Per home and iteration, per iteration for the whole community, and over the run; beside it, what a
    central clearing needs from each home once: its whole profile, battery and utility (8-byte floats).
    """
    n, s, t = case.load.shape
    to_home, from_home = int(convergence.bytes_to_each_home.iloc[0]), int(convergence.bytes_from_each_home.iloc[0])
    k = len(convergence)
    private = (2 * s * t + len(case.homes.columns)) * 8  # load, PV per scenario and hour + homes.csv row
    return pd.DataFrame(
        {
            "sender": ["aggregator", "each home", "each home (central clearing, once)"],
            "content": [
                "coordinated price per (scenario, hour) and rho (one, or one per (scenario, hour))",
                "its trade schedule per (scenario, hour)",
                "load and PV per (scenario, hour), battery, utility, limits",
            ],
            "bytes_per_home_per_iteration": [to_home, from_home, np.nan],
            "bytes_per_iteration_all_homes": [n * to_home, n * from_home, np.nan],
            "bytes_over_the_run_all_homes": [k * n * to_home, k * n * from_home, n * private],
        }
    ).set_index("sender")


def showcase_home(study: Study) -> str:
    """The home shown in Figure 2: the one whose storage throughput grows most with the market."""
    before, after = daily_energy(study.case, study.independent), daily_energy(study.case, study.market)
    growth = (after.charge_kwh + after.discharge_kwh) - (before.charge_kwh + before.discharge_kwh)
    return str(growth.idxmax())


# ================================================================================ the tables of one study
#: The profit rates of Figure 5's sweep (Eq. 30 at rho = 0, 0.05, ..., 1).
SWEEP_RATES = np.linspace(0.0, 1.0, 21)


def study_tables(study: Study) -> dict[str, pd.DataFrame]:
    """Every table of :data:`STUDY_TABLE_FORMATS` of one settled study, by name (what notebooks 02-06 write)."""
    case = study.case
    return {
        "m1_costs": cost_breakdown(study.independent, case),
        "market_costs": cost_breakdown(study.market, case),
        "clearing_prices": price_table(case, study.market),
        "contribution_rates": contribution_table(case, study.market, study.profit_rate),
        "table3_energy": table3_energy(study),
        "table4_costs": table4_costs(study),
        "settlement": settlement_table(study),
        "figure3_net_load": hourly_profile(study),
        "figure5_profit_rate": profit_rate_sweep(case, study.independent, study.market, SWEEP_RATES),
    }
