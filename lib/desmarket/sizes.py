"""Beyond the paper's community (issue 12, second part): the mechanism across community sizes.

One community is one row (:func:`size_row`): the paper case of a day with ``n_homes`` homes (the measured homes
clean that day, then resampled ones, :func:`desmarket.data.build_case`) and the prices of the run's price source
(``prices``, default :data:`desmarket.data.DEFAULT_PRICES`), seeded; M1, the clearing (Eqs. 16-19),
the same clearing without trading (x_bar = 0, Eq. 19), and the M3 settlement (Eqs. 21-30). The row holds the
surplus per home, how much of it needs trading between homes, the spread of alpha (Gini), the share of
(scenario, hour) cells whose clearing price is pinned, balanced or congested, and the solve times.
:func:`size_study` fans the communities out through joblib (largest first; a Dask backend works too) and
:func:`size_summary` gives the median and range over seeds per size and day.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .data import DEFAULT_PRICES, build_case, load_measured_homes, price_source
from .engine import clear_market, solve_independent
from .errors import CASE_FAILURES, failure_reason, quiet_warnings
from .paper import PAPER_PROFIT_RATE
from .pieces import run_tasks
from .report import gini
from .results import settled_study
from .settlement import cooperative_surplus

#: The two days of the size study: the paper's summer day and a winter weekday of the same kind (a Tuesday).
SIZE_DAYS = {"summer": "2017-06-13", "winter": "2017-01-17"}
#: Community sizes of the size study (the issue's list).
SIZES = (10, 30, 100, 300, 1000)


def size_row(
    n_homes: int,
    seed: int,
    date,
    measured: pd.DataFrame,
    n_scenarios: int = 10,
    profit_rate: float = PAPER_PROFIT_RATE,
    prices=DEFAULT_PRICES,
) -> dict:
    """The size-study quantities of one community (see the module docstring); times in seconds, one worker.

    surplus_per_home_usd:  Delta C / N, $ per home per day (Eq. 20).
    trading_share:         1 - Delta C(x_bar = 0) / Delta C: the part of the surplus that needs trades between
                           homes; the rest comes from each home facing the wholesale price on its own.
    matched_kwh_per_home:  energy traded between homes, sum |x| / 2 / N, kWh per home per day (expected).
    alpha_gini:            Gini coefficient of the homes' M3 contribution rates alpha_i (Eq. 22); 0: all equal.
    trading_homes_share:   share of homes with alpha_i > 0.
    pinned/balanced/congested_share: share of (scenario, hour) cells in each price state (Eq. 18).
    lmp_spread_usd_per_mwh: the day's highest minus lowest LMP (of the price day; with ``pjm-like`` the seed
                           draws it): what batteries can earn.
    prices:                the price source (:func:`desmarket.data.price_source`; a bad one raises its error);
                           ``price_day`` in the row is the day whose prices the community takes.
    A community that cannot be built or solved (a data gap, a daylight-saving day of the homes or of the mapped
    price day, infeasible) is a row with status "failed" and its reason, never dropped.
    """
    source = price_source(prices)
    day = pd.Timestamp(date).strftime("%Y-%m-%d")
    head = {
        "n_homes": n_homes,
        "seed": seed,
        "date": day,
        "price_day": source.price_day(day).strftime("%Y-%m-%d"),
        "scenarios": n_scenarios,
    }
    try:
        with quiet_warnings():
            case = build_case(
                n_homes=n_homes, n_scenarios=n_scenarios, date=day, seed=seed, measured=measured, prices=source
            )
            t0 = time.perf_counter()
            independent = solve_independent(case, n_jobs=1)
            t1 = time.perf_counter()
            market = clear_market(case, n_jobs=1)
            t2 = time.perf_counter()
            alone = clear_market(case, trade_limit=0.0, n_jobs=1)
            study = settled_study(case, independent, market, profit_rate)
    except CASE_FAILURES as exc:
        return {**head, "status": "failed", "reason": failure_reason(exc)}
    surplus = study.m3.surplus
    _, balanced_hours, congested_hours = market.cleared()
    balanced, congested = float(balanced_hours.mean()), float(congested_hours.mean())
    return {
        **head,
        "status": "ok",
        "reason": "",
        "surplus_usd": surplus,
        "surplus_per_home_usd": surplus / n_homes,
        "trading_share": 1 - cooperative_surplus(independent, alone) / surplus,
        "matched_kwh_per_home": float(np.einsum("s,nst->", case.probability, np.abs(market.trade)) / 2 / n_homes),
        "alpha_gini": gini(study.m3.alpha),
        "trading_homes_share": float(np.mean(study.m3.alpha > 0)),
        "pinned_share": 1 - balanced - congested,
        "balanced_share": balanced,
        "congested_share": congested,
        "lmp_spread_usd_per_mwh": float(1000 * np.ptp(case.lmp)),
        "m1_seconds": t1 - t0,
        "clearing_seconds": t2 - t1,
    }


def _size_task(job: tuple, measured: pd.DataFrame, kw: dict) -> dict:
    n_homes, seed, date = job
    return size_row(n_homes, seed, date, measured, **kw)


def size_study(
    sizes=SIZES,
    seeds=(0, 1, 2),
    days: dict | None = None,
    measured: pd.DataFrame | None = None,
    n_jobs: int | None = -1,
    prices=DEFAULT_PRICES,
    **kw,
) -> pd.DataFrame:
    """One row per (day, size, seed) (:func:`size_row`), with a ``season`` column naming the day.

    ``days``: {label: date} (default :data:`SIZE_DAYS`); ``prices``: the price source of every community
    (:func:`desmarket.data.price_source`), resolved once here (a bad one raises before any community is built);
    ``kw``: n_scenarios, profit_rate. Each community is
    seeded by its seed alone, so a rerun gives the same table (apart from the timing columns); the largest
    communities are dispatched first so that the workers finish together.
    """
    kw = {**kw, "prices": price_source(prices)}
    measured = load_measured_homes() if measured is None else measured
    days = dict(SIZE_DAYS if days is None else days)
    sizes, seeds = [int(n) for n in sizes], [int(k) for k in seeds]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive home counts, got {sizes!r}")
    if not seeds or not days:
        raise ValueError(f"the size study needs at least one seed and one day, got seeds {seeds!r}, days {days!r}")
    jobs = sorted(((n, s, d) for d in days.values() for n in sizes for s in seeds), key=lambda j: -j[0])
    rows = run_tasks(_size_task, [(job, measured, kw) for job in jobs], n_jobs, progress="communities")
    season = {pd.Timestamp(d).strftime("%Y-%m-%d"): label for label, d in days.items()}
    out = pd.DataFrame(rows)
    out.insert(0, "season", out["date"].map(season))
    return out.sort_values(["season", "n_homes", "seed"], ignore_index=True)


#: Columns of :func:`size_summary` (median, min and max over seeds).
SUMMARY_COLUMNS = (
    "surplus_per_home_usd",
    "trading_share",
    "matched_kwh_per_home",
    "alpha_gini",
    "trading_homes_share",
    "pinned_share",
    "balanced_share",
    "congested_share",
)
#: Columns of a size-study row that are measured times (they differ on every run; kept out of the summary).
TIME_COLUMNS = ("m1_seconds", "clearing_seconds")


def size_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per day and size: median, min and max over the seeds of every :data:`SUMMARY_COLUMNS` quantity (the
    times, :data:`TIME_COLUMNS`, are left out: a rerun gives the same summary), over the communities that
    solved (``seeds``; ``failed`` counts the others, whose reasons are in the rows)."""
    keys = ["season", "n_homes"]
    solved = rows["status"] == "ok"
    every = rows.groupby(keys).size().index
    out = rows[solved].groupby(keys)[list(SUMMARY_COLUMNS)].agg(["median", "min", "max"]).reindex(every)
    out.columns = [f"{col}_{stat}" for col, stat in out.columns]
    out.insert(0, "seeds", solved.groupby([rows[k] for k in keys]).sum().reindex(every).astype(int))
    out.insert(1, "failed", (~solved).groupby([rows[k] for k in keys]).sum().reindex(every).astype(int))
    return out
