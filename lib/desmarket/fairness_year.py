"""The fairness verdicts of every settlement rule on every day of the measured year (issue 22).

One day is one row (:func:`day_fairness`): the paper case of that day (:func:`desmarket.data.build_case`, the
run's price source), M1 and the clearing, all 2^N coalition values of the exact game (each scenario's clearing
compiled once and PIQP called on each coalition's rows, :func:`desmarket.coalitions.certified_values`; the
values of the masked grand clearing that FAIRNESS_VERSION 1 rows were computed with, to ~1e-8 $/day, so the
rows are the same), and per rule of :data:`desmarket.fairness.VERDICT_RULES` at the profit rate rho its
verdict (:func:`desmarket.fairness.rule_verdicts`): core excess, in the core or not, individual rationality,
L1 distance to the Shapley value, the smallest rho that puts it in the core. A day that cannot be built or
solved is a row with status "failed" and its reason, never dropped.

The rows are cached between runs (:mod:`desmarket.daycache`, key :func:`desmarket.year.day_key` with study
:data:`STUDY` and version :data:`FAIRNESS_VERSION`): 366 days x 1,024 coalitions take minutes, so a rerun
recomputes only the days whose inputs changed. :func:`fairness_by_season` summarises the rows per rule and
season.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import fairness
from .case import Case
from .data import DEFAULT_PRICES
from .engine import clear_market, solve_independent
from .paper import PAPER_PROFIT_RATE
from .year import SEASONS, day_row, rows_by_day

#: Name of the per-day study in the row keys (:func:`desmarket.year.day_key`).
STUDY = "fairness_by_day"
#: Version of :func:`day_fairness`: bump it when what a row holds or how it is computed changes.
FAIRNESS_VERSION = 1
#: Chunks of days per joblib task.
DAY_CHUNKS = 16
#: Similar-day scenarios of each day's case [choice]: one (the day's own draw), so that the exact game of
#: 1,024 coalitions costs a few seconds a day and the year fits a session; the paper's day in notebook 08 keeps 10.
YEAR_SCENARIOS = 1
#: Per rule, the verdict columns of a row (``<rule>_<column>``).
ROW_COLUMNS = (
    "core_excess_usd",
    "in_core",
    "individually_rational",
    "l1_distance_to_shapley_usd",
    "l1_distance_to_shapley_split_usd",
    "core_profit_rate",
)


def day_fairness(
    date,
    measured: pd.DataFrame,
    n_homes: int = 10,
    n_scenarios: int = YEAR_SCENARIOS,
    seed: int = 0,
    profit_rate: float = PAPER_PROFIT_RATE,
    prices=DEFAULT_PRICES,
) -> dict:
    """The verdict of every rule on one day's exact game at ``profit_rate``, or status "failed" with the reason.

    Parameters
    ----------
    date : the measured day.
    measured : the measured homes (:func:`desmarket.data.load_measured_homes`).
    n_homes, n_scenarios, seed, prices : of the day's case (:func:`desmarket.data.build_case`).
    profit_rate : rho.

    Returns
    -------
    dict: date, price_day, status, failure, reason, surplus_usd ($/day), standalone_share (sum of stand-alone
    values over Delta C) and per rule ``<rule>_<column>`` for the columns of :data:`ROW_COLUMNS`.
    """

    def columns(case: Case) -> dict:
        m1 = solve_independent(case, n_jobs=1)
        market = clear_market(case, n_jobs=1)
        values = fairness.coalition_values(case, m1, n_jobs=1, method="direct")
        verdicts, _ = fairness.rule_verdicts(case, m1, market, profit_rate, values)
        surplus = float(values.iloc[-1])
        standalone = float(sum(values[(h,)] for h in case.home_ids))
        row = {"surplus_usd": surplus, "standalone_share": standalone / surplus if surplus > 0 else np.nan}
        for rule, verdict in verdicts.iterrows():
            for column in ROW_COLUMNS:
                value = verdict[column]
                row[f"{rule}_{column}"] = float(value) if not isinstance(value, (bool, np.bool_)) else int(value)
        return row

    return day_row(date, measured, columns, n_homes=n_homes, n_scenarios=n_scenarios, seed=seed, prices=prices)


def fairness_by_day(
    dates=None,
    measured: pd.DataFrame | None = None,
    n_jobs: int | None = -1,
    prices=DEFAULT_PRICES,
    *,
    tables=(),
    fresh: bool = False,
    **kw,
) -> pd.DataFrame:
    """One row per day (:func:`day_fairness`), in calendar order; ``kw``: n_homes, n_scenarios, seed, profit_rate.

    ``tables``: earlier ``fairness_by_day.csv`` files whose rows are reused where their ``key`` matches
    (:func:`desmarket.daycache.cached_rows`); ``fresh=True`` recomputes every day. ``attrs["reused"]`` counts
    the reused rows.
    """
    kw = {"n_homes": 10, "n_scenarios": YEAR_SCENARIOS, "seed": 0, "profit_rate": PAPER_PROFIT_RATE, **kw}
    return rows_by_day(
        day_fairness, STUDY, FAIRNESS_VERSION, dates, measured, n_jobs, prices, tables=tables, fresh=fresh, **kw
    )


def fairness_by_season(by_day: pd.DataFrame, rules=fairness.VERDICT_RULES) -> pd.DataFrame:
    """Per rule and season (:data:`desmarket.year.SEASONS`, plus "year"): studied days, the share of them on
    which the rule is in the core and individually rational, and the median core excess ($/day), L1 distance
    to the Shapley value ($/day) and smallest profit rate in the core over those days."""
    ok = by_day[by_day["status"] == "ok"]
    season = pd.Series(pd.DatetimeIndex(pd.to_datetime(ok.index)).month.map(SEASONS), index=ok.index)
    rows = []
    for rule in rules:
        for name in ("winter", "spring", "summer", "autumn", "year"):
            part = ok if name == "year" else ok[season == name]
            col = lambda c, part=part: pd.to_numeric(part[f"{rule}_{c}"], errors="coerce")
            rows.append(
                {
                    "rule": fairness.RULE_NAMES[rule],
                    "season": name,
                    "days": len(part),
                    "share_in_core": col("in_core").mean(),
                    "share_individually_rational": col("individually_rational").mean(),
                    "median_core_excess_usd": col("core_excess_usd").median(),
                    "max_core_excess_usd": col("core_excess_usd").max(),
                    "median_l1_distance_to_shapley_usd": col("l1_distance_to_shapley_usd").median(),
                    "median_l1_distance_to_shapley_split_usd": col("l1_distance_to_shapley_split_usd").median(),
                    "median_core_profit_rate": col("core_profit_rate").median(),
                }
            )
    return pd.DataFrame(rows)
