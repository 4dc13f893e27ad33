"""Tables of the study (Section 3): the paper's Tables 1-4, the headline numbers, the scorecard, sensitivity.

Pure functions from a case and its results to DataFrames; :mod:`desmarket.plots` draws the figures and
:func:`save_table` writes CSV with a fixed float format so that reruns give identical files.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .case import Case
from .engine import clear_market, solve_independent
from .model import Operation, RoutingWarning
from .settlement import Settlement, settle

PEAK_HOURS = slice(8, 20)  # 8:00-20:00, the paper's peak period of Figure 3
FLOAT_FORMAT = "%.10g"

#: The paper's reported values (Section 3), used only as the "paper" column of the scorecard.
PAPER_CLAIMS = {
    "surplus_usd": ("total benefit of the market (Delta C), $/day, constant in rho", 5.13),
    "m2_reduction_usd": ("M2 cost reduction per home, $/day", 0.41),
    "m2_alpha": ("M2 bargaining weight per home", 0.08),
    "m3_reduction_min_usd": ("M3 smallest cost reduction of a home, $/day", 0.36),
    "m3_reduction_max_usd": ("M3 largest cost reduction of a home, $/day", 0.44),
    "aggregator_change_m3_pct": ("aggregator benefit increase under M3 vs M1, %", 3.46),
    "load_change_pct": ("load increase with the market, %", 3.12),
    "storage_change_pct": ("storage throughput increase with the market, %", 73.45),
    "peak_net_load_reduction_kwh": ("aggregated net load reduction 8:00-20:00, kWh", 101.56),
    "pv_used_m1_pct": ("PV used without market, % of available", 100.0),
    "pv_used_market_pct": ("PV used with market, % of available", 100.0),
    "alpha_traded_correlation": ("M3: correlation of alpha with traded energy", None),
}


@dataclass(frozen=True)
class Study:
    """Everything one run computes: the case, M1, the clearing and the two settlements (M2, M3)."""

    case: Case
    independent: Operation
    market: Operation
    m2: Settlement
    m3: Settlement

    @property
    def profit_rate(self) -> float:
        return self.m3.profit_rate


def run_study(case: Case, profit_rate: float = 0.2, **solve_kw) -> Study:
    """Solve M1 and the clearing once, settle under M2 and M3 (Table 2)."""
    return settled_study(case, solve_independent(case, **solve_kw), clear_market(case, **solve_kw), profit_rate)


def settled_study(case: Case, independent: Operation, market: Operation, profit_rate: float) -> Study:
    """A :class:`Study` of two solved operations, settled under M2 (equal) and M3 (contribution)."""
    return Study(case, independent, market, settle(case, independent, market, profit_rate, "equal"),
                 settle(case, independent, market, profit_rate, "contribution"))


def _expected(case: Case, values: np.ndarray) -> np.ndarray:
    """(N, S, T) -> (N, T) probability-weighted over scenarios."""
    return np.einsum("s,nst->nt", case.probability, values)


def daily_energy(case: Case, op: Operation) -> pd.DataFrame:
    """Expected daily load, charge, discharge, PV used and PV available per home, kWh (Table 3 columns)."""
    e = lambda v: _expected(case, v).sum(axis=1)  # noqa: E731
    return pd.DataFrame({
        "load_kwh": e(op.load), "charge_kwh": e(op.charge), "discharge_kwh": e(op.discharge),
        "pv_used_kwh": e(op.pv_used), "pv_available_kwh": e(case.pv),
    }, index=pd.Index(case.home_ids, name="home"))


def table1_storage(case: Case) -> pd.DataFrame:
    """Table 1: storage parameters of each home (the paper's values were lost; ours are MODEL.md's choices)."""
    cols = ["battery_kwh", "battery_kw", "soc_min", "soc_max", "soc_initial", "eta_charge", "eta_discharge"]
    return case.homes[cols].copy()


def table2_modes() -> pd.DataFrame:
    """Table 2: the three operation modes."""
    return pd.DataFrame({
        "mode": ["M1", "M2", "M3"],
        "local_market": ["no", "yes", "yes"],
        "settlement": ["retail / net metering only", "symmetric Nash bargaining, alpha = (1 - rho)/N (Eq. 29)",
                       "market value contribution rate + Nash bargaining (Eq. 30)"],
    }).set_index("mode")


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
    homes = pd.DataFrame({
        "M1": s.independent.home_cost, "market_before_payment": s.market.home_cost,
        "M2": s.m2.home_cost, "M3": s.m3.home_cost,
    }, index=list(s.case.home_ids))
    agg = pd.DataFrame({
        "M1": [-s.independent.aggregator_revenue], "market_before_payment": [-s.market.aggregator_revenue],
        "M2": [-s.m2.aggregator_revenue], "M3": [-s.m3.aggregator_revenue],
    }, index=["aggregator"])
    table = pd.concat([agg, homes])
    table.loc["total"] = table.sum()
    table.index.name = "party"
    return table


def settlement_table(study: Study) -> pd.DataFrame:
    """Figure 4's data: per home alpha, payment and cost reduction under M2 and M3, and traded energy."""
    s = study
    return pd.DataFrame({
        "traded_kwh": s.market.traded_energy,
        "alpha_m2": s.m2.alpha, "alpha_m3": s.m3.alpha,
        "payment_m2_usd": s.m2.payment, "payment_m3_usd": s.m3.payment,
        "reduction_m2_usd": s.m2.home_gain, "reduction_m3_usd": s.m3.home_gain,
    }, index=pd.Index(s.case.home_ids, name="home"))


def hourly_profile(study: Study, home: str | None = None) -> pd.DataFrame:
    """Expected hourly curves (kW) without and with the market: one home (Figure 2) or the community (Figure 3).

    Columns: hour, mode, load, pv_used, charge, discharge, net_load (= d + c - e - g, what the home draws from
    outside; summed over homes it is the community's grid import minus export), and lmp ($/kWh).
    """
    case = study.case
    pick = (lambda v: v[case.home_ids.index(home)]) if home is not None else (lambda v: v.sum(axis=0))
    frames = []
    for mode, op in (("without market", study.independent), ("with market", study.market)):
        curves = {k: pick(_expected(case, getattr(op, k))) for k in ("load", "pv_used", "charge", "discharge")}
        curves["net_load"] = pick(_expected(case, op.net_consumption))  # d + c - e - g; summed = grid import
        frames.append(pd.DataFrame({"hour": np.arange(case.load.shape[-1]), "mode": mode, **curves,
                                    "lmp": case.lmp}))
    return pd.concat(frames, ignore_index=True)


def headline(study: Study) -> dict:
    """The numbers the paper reports (Section 3), computed from our results. Keys as in :data:`PAPER_CLAIMS`."""
    s = study
    before, after = daily_energy(s.case, s.independent).sum(), daily_energy(s.case, s.market).sum()
    throughput = lambda d: d.charge_kwh + d.discharge_kwh  # noqa: E731
    net = lambda op: _expected(s.case, op.net_load - op.net_surplus).sum(axis=0)  # noqa: E731
    traded = s.market.traded_energy
    corr = float(np.corrcoef(s.m3.alpha, traded)[0, 1]) if np.ptp(traded) > 0 and np.ptp(s.m3.alpha) > 0 else np.nan
    return {
        "surplus_usd": s.m3.surplus,
        "m2_reduction_usd": float(np.mean(s.m2.home_gain)),
        "m2_alpha": float(np.mean(s.m2.alpha)),
        "m3_reduction_min_usd": float(s.m3.home_gain.min()),
        "m3_reduction_max_usd": float(s.m3.home_gain.max()),
        "aggregator_change_m3_pct": 100 * s.m3.aggregator_gain / abs(s.independent.aggregator_revenue),
        "load_change_pct": 100 * (after.load_kwh / before.load_kwh - 1),
        "storage_change_pct": (100 * (throughput(after) / throughput(before) - 1)) if throughput(before) > 0
        else np.nan,
        "peak_net_load_reduction_kwh": float((net(s.independent) - net(s.market))[PEAK_HOURS].sum()),
        "pv_used_m1_pct": 100 * before.pv_used_kwh / before.pv_available_kwh,
        "pv_used_market_pct": 100 * after.pv_used_kwh / after.pv_available_kwh,
        "alpha_traded_correlation": corr,
    }


def _agreement(paper, ours) -> tuple[str, str]:
    """Direction (same sign) and order of magnitude (within a factor 10) of ours against the paper's value."""
    if paper is None or ours is None or not np.isfinite(ours):
        return "n/a", "n/a"
    direction = "yes" if np.sign(paper) == np.sign(ours) else "no"
    magnitude = "yes" if paper != 0 and ours != 0 and abs(np.log10(abs(ours) / abs(paper))) <= 1 else "no"
    return direction, magnitude


def scorecard(study: Study, reasons: dict | None = None) -> pd.DataFrame:
    """Every claim of the paper beside ours, with agreement in direction and order of magnitude.

    ``reasons`` maps a claim key to the explanation shown where they disagree.
    """
    values = headline(study)
    rows = []
    for key, (claim, paper) in PAPER_CLAIMS.items():
        ours = values[key]
        direction, magnitude = _agreement(paper if paper is not None else (1.0 if key.endswith("correlation")
                                                                           else None), ours)
        rows.append({"claim": claim, "key": key, "paper": paper if paper is not None else "strong positive",
                     "ours": ours, "same_direction": direction, "same_order_of_magnitude": magnitude,
                     "note": (reasons or {}).get(key, "") if "no" in (direction, magnitude) else ""})
    return pd.DataFrame(rows).set_index("key")


def save_table(frame: pd.DataFrame, path, decimals: int = 4, index: bool = True) -> Path:
    """Write a CSV rounded to ``decimals`` (well above solver tolerance, so reruns give identical bytes).

    Rounding is part of honesty here: digits below the solver's accuracy are not results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    numeric = frame.select_dtypes("number").columns
    out = frame.copy()
    out[numeric] = out[numeric].round(decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    out.to_csv(path, index=index, float_format=FLOAT_FORMAT, lineterminator="\n")
    return path


# ================================================================================ notebook helpers
def load_study(case: Case, operation_dir, profit_rate: float) -> Study:
    """A :class:`Study` from the operation CSVs of notebooks 02-03 (no re-solve) and the two settlements."""
    from .io import load_operation

    return settled_study(case, load_operation(case, operation_dir, "m1"), load_operation(case, operation_dir, "market"),
                         profit_rate)


def inputs_table(case: Case) -> pd.DataFrame:
    """Per home: expected daily baseline load and available PV (kWh), utility coefficients, battery."""
    return pd.DataFrame({
        "load_kwh": _expected(case, case.load).sum(axis=1),
        "pv_kwh": _expected(case, case.pv).sum(axis=1),
        "utility_a_usd_per_kwh2": case.column("utility_a"),
        "utility_b_usd_per_kwh": case.column("utility_b"),
        "battery_kwh": case.column("battery_kwh"),
    }, index=pd.Index(case.home_ids, name="home"))


def inputs_hourly(case: Case) -> pd.DataFrame:
    """Community load and PV per scenario and hour (kW), with retail price and LMP ($/kWh), long format."""
    s, t = case.n_scenarios, case.load.shape[-1]
    return pd.DataFrame({
        "scenario": np.repeat(case.scenarios, t), "hour": np.tile(np.arange(t), s),
        "load_kw": case.load.sum(axis=0).reshape(-1), "pv_kw": case.pv.sum(axis=0).reshape(-1),
        "retail": np.tile(case.retail, s), "lmp": np.tile(case.lmp, s),
    })


def cost_breakdown(op: Operation, case: Case) -> pd.DataFrame:
    """Per home, $ per day: retail bill, net-metering credit, utility and cost C_i (Eq. 5), plus traded kWh."""
    return pd.DataFrame({
        "retail_bill_usd": op.retail_bill, "net_metering_credit_usd": op.net_metering_credit,
        "utility_usd": op.utility, "cost_usd": op.home_cost, "traded_kwh": op.traded_energy,
    }, index=pd.Index(case.home_ids, name="home"))


def price_table(case: Case, market: Operation) -> pd.DataFrame:
    """Clearing price per scenario and hour with the community state (importing / exporting / balanced)."""
    s, t = market.price.shape
    net = market.community_net_load
    state = np.where(market.balanced, "balanced", np.where(net > 0, "importing", "exporting"))
    return pd.DataFrame({
        "scenario": np.repeat(case.scenarios, t), "hour": np.tile(np.arange(t), s),
        "price_usd_per_kwh": market.price.reshape(-1), "buy_usd_per_kwh": np.tile(case.buy_price, s),
        "sell_usd_per_kwh": np.tile(case.sell_price, s), "community_net_load_kw": net.reshape(-1),
        "state": state.reshape(-1),
    })


def contribution_table(case: Case, market: Operation, profit_rate: float) -> pd.DataFrame:
    """Per home: traded energy (kWh/day), its market value (Eq. 21, $/day) and the contribution rate alpha."""
    from .settlement import contribution_rates, market_contribution

    return pd.DataFrame({
        "traded_kwh": market.traded_energy,
        "contribution_usd": market_contribution(case, market),
        "alpha": contribution_rates(case, market, profit_rate),
    }, index=pd.Index(case.home_ids, name="home"))


def alpha_traded_correlation(table: pd.DataFrame) -> float:
    """Pearson correlation of alpha with traded energy (NaN when either is constant)."""
    a = table["alpha" if "alpha" in table else "alpha_m3"].to_numpy()
    x = table["traded_kwh"].to_numpy()
    return float(np.corrcoef(a, x)[0, 1]) if np.ptp(a) > 0 and np.ptp(x) > 0 else float("nan")


def message_table(case: Case, convergence: pd.DataFrame) -> pd.DataFrame:
    """What each party of the coordinated market process sends and receives (Section 2.1.2), in bytes.

    Per home and iteration, per iteration for the whole community, and over the run; beside it, what a
    central clearing needs from each home once: its whole profile, battery and utility (8-byte floats).
    """
    n, s, t = case.load.shape
    to_home, from_home = int(convergence.bytes_to_each_home.iloc[0]), int(convergence.bytes_from_each_home.iloc[0])
    k = len(convergence)
    private = (2 * s * t + len(case.homes.columns)) * 8  # load, PV per scenario and hour + homes.csv row
    return pd.DataFrame({
        "sender": ["aggregator", "each home", "each home (central clearing, once)"],
        "content": ["coordinated price per (scenario, hour) and rho", "its trade schedule per (scenario, hour)",
                    "load and PV per (scenario, hour), battery, utility, limits"],
        "bytes_per_home_per_iteration": [to_home, from_home, np.nan],
        "bytes_per_iteration_all_homes": [n * to_home, n * from_home, np.nan],
        "bytes_over_the_run_all_homes": [k * n * to_home, k * n * from_home, n * private],
    }).set_index("sender")


def showcase_home(study: Study) -> str:
    """The home shown in Figure 2: the one whose storage throughput grows most with the market."""
    before, after = daily_energy(study.case, study.independent), daily_energy(study.case, study.market)
    growth = (after.charge_kwh + after.discharge_kwh) - (before.charge_kwh + before.discharge_kwh)
    return str(growth.idxmax())


#: Why our numbers may differ from the paper's, shown in the scorecard where they disagree.
SCORECARD_REASONS = {
    "surplus_usd": "our homes (California), LMP (synthetic, 2024 PJM level) and k^b/k^s differ from the paper's",
    "m2_reduction_usd": "follows Delta C: (1 - rho) Delta C / N",
    "m3_reduction_min_usd": "follows Delta C and how unequal the homes' trades are",
    "m3_reduction_max_usd": "follows Delta C and how unequal the homes' trades are",
    "aggregator_change_m3_pct": "rho Delta C relative to our R_A0, which depends on the retail margin",
    "load_change_pct": "depends on the utility draw and the retail-wholesale price gap",
    "storage_change_pct": "our homes already cycle their batteries in M1 to store midday PV for the evening "
                          "(sunny California, large PV), so the market adds relatively less",
    "peak_net_load_reduction_kwh": "scales with PV, battery size and the LMP's daily shape",
    "pv_used_m1_pct": "", "pv_used_market_pct": "",
    "alpha_traded_correlation": "",
}


@contextlib.contextmanager
def _routing_quiet():
    """Re-solves of a case already reported: its RoutingWarning (MODEL.md tie-break) is not repeated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        yield


def _first_scenarios(case: Case, k: int) -> Case:
    """The case with only its first k scenarios, probabilities renormalised."""
    frames = case.to_frames()
    keep = list(case.scenarios[:k])
    frames["profiles"] = frames["profiles"][frames["profiles"]["scenario"].isin(keep)]
    sc = frames["scenarios"].iloc[:k].copy()
    sc["probability"] = sc["probability"] / sc["probability"].sum()
    frames["scenarios"] = sc
    return Case.from_frames(**frames)


def sensitivity(case: Case, profit_rate: float = 0.2, n_scenarios_options=(1, 5)) -> pd.DataFrame:
    """Headline numbers when each [choice] of MODEL.md changes, one at a time (each row re-solves the case)."""
    m = case.market
    variants = [("baseline", "", case)]
    for kb, ks in ((1.05, 0.95), (1.2, 0.8), (1.0, 1.0)):
        variants.append(("k^b / k^s", f"{kb} / {ks}", case.replace(market={"buy_ratio": kb, "sell_ratio": ks})))
    cap = case.column("battery_kwh")
    for factor in (0.0, 0.5, 2.0):
        variants.append(("battery size", f"x{factor}", case.replace(battery_kwh=cap * factor,
                                                                  battery_kw=case.column("battery_kw") * (factor > 0)
                                                                  + 0.0)))
    for k in n_scenarios_options:
        if k < case.n_scenarios:
            variants.append(("scenarios", f"first {k}", _first_scenarios(case, k)))
    for eps in (m.regularization / 10, m.regularization * 10):
        variants.append(("epsilon", f"{eps:g}", case.replace(market={"regularization": eps})))
    rows = []
    for choice, value, variant in variants:
        with _routing_quiet():
            study = run_study(variant, profit_rate)
        h = headline(study)
        rows.append({"choice": choice, "value": value or "MODEL.md default",
                     **{k: h[k] for k in ("surplus_usd", "m3_reduction_min_usd", "m3_reduction_max_usd",
                                          "aggregator_change_m3_pct", "load_change_pct", "storage_change_pct",
                                          "peak_net_load_reduction_kwh")},
                     "regularization_cost_usd": study.market.regularization_cost})
    return pd.DataFrame(rows).set_index(["choice", "value"])


#: A second solver and tight tolerances for the solver-independence check (MODEL.md "Uniqueness").
SECOND_SOLVER = ("SCS", {"eps": 1e-9, "max_iters": 200_000})


#: Largest case (homes x scenarios) that :func:`solver_agreement` re-solves; SCS at tight tolerance is slow.
AGREEMENT_MAX_ROWS = 200


def solver_agreement(case: Case, study: Study, solver: tuple[str, dict] = SECOND_SOLVER,
                     tolerance: float = 1e-3, max_rows: int = AGREEMENT_MAX_ROWS) -> pd.DataFrame | None:
    """Solve the case again with a second solver and compare the per-home answers with the study's.

    With the tie-break of MODEL.md the home costs, alpha and Delta C must agree within ``tolerance``
    ($ or, for alpha, absolute). Returns one row per quantity with the largest difference and the verdict,
    or None (nothing solved) when the case has more than ``max_rows`` home x scenario rows.
    """
    if case.n_homes * case.n_scenarios > max_rows:
        return None
    name, options = solver
    with _routing_quiet():
        m1 = solve_independent(case, solver=name, solver_options=options)
        mk = clear_market(case, solver=name, solver_options=options)
    m3 = settle(case, m1, mk, study.profit_rate)
    diffs = {
        "M1 home costs ($)": np.abs(m1.home_cost - study.independent.home_cost).max(),
        "market home costs ($)": np.abs(mk.home_cost - study.market.home_cost).max(),
        "alpha (M3)": np.abs(m3.alpha - study.m3.alpha).max(),
        "Delta C ($)": abs(m3.surplus - study.m3.surplus),
    }
    return pd.DataFrame({"quantity": list(diffs), "second_solver": name, "tolerance": tolerance,
                         "max_abs_difference": list(diffs.values()),
                         "agree": [d <= tolerance for d in diffs.values()]}).set_index("quantity")
