"""Beyond the paper's day (issue 12, first part): every scorecard quantity on every day of the measured year.

One day is one row (:func:`day_claims`): the paper case of that day (the best-ranked measured homes clean on
it, S similar-day scenarios, the prices of the run's price source for that day -- ``prices``, default
:data:`desmarket.data.DEFAULT_PRICES`, the day mapped onto the price year as :mod:`desmarket.data.sources`
says; :func:`desmarket.data.build_case`), M1 and the clearing, M2 and M3, and the headline numbers of
:func:`desmarket.report.headline` plus the shares of balanced and congested hours. A day that cannot be built
or solved (a data gap, a daylight-saving day of the homes or of the mapped price day, ...) is a row with
status "failed" and its reason, never dropped; a day of spiking or negative prices is a studied row like any
other. :func:`claims_by_day` fans the days out through joblib (so a Dask backend works too);
:func:`claims_summary` turns the rows into one distribution per claim beside the paper's value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from .case import Case
from .data import DEFAULT_PRICES, build_case, day_flags, load_measured_homes, price_source
from .data.sources import PriceSource
from .daycache import cached_rows, data_digest, row_key
from .errors import CASE_FAILURES, DataError, failure_kind, failure_reason, quiet_warnings
from .horizon import STORAGE_END_RULES, storage_end_comparison
from .paper import PAPER_PROFIT_RATE
from .pieces import map_chunks
from .report import NOT_REPORTED, agreement, headline
from .study import run_study

#: Chunks of days per joblib task (each task receives the measured frame once).
DAY_CHUNKS = 16
#: Version of :func:`day_claims`: bump it when what a row holds or how it is computed changes, so that the
#: rows kept in a committed ``claims_by_day.csv`` are recomputed (:mod:`desmarket.daycache`).
CLAIMS_VERSION = 1
#: Version of :func:`day_horizon` (as :data:`CLAIMS_VERSION`; 2: rows kept at 4 decimals, as every per-day table).
HORIZON_VERSION = 2


def measured_dates(measured: pd.DataFrame | None = None) -> pd.DatetimeIndex:
    """Every local calendar day of the measured data (for CityLearn, 2016-07-31 to 2017-07-31)."""
    measured = load_measured_homes() if measured is None else measured
    return pd.DatetimeIndex(sorted(set(day_flags(measured).index.get_level_values("date"))))


def day_row(
    date,
    measured: pd.DataFrame,
    columns: Callable[[Case], dict],
    *,
    n_homes: int = 10,
    n_scenarios: int = 10,
    seed: int = 0,
    prices=DEFAULT_PRICES,
) -> dict:
    """One day's row of a per-day study: the head (date, price_day, status, failure, reason), then ``columns``.

    The day's case is built here (:func:`desmarket.data.build_case` with the run's price source) and
    ``columns(case)`` computes the study's columns, both with the library's warnings quieted; a day whose case
    cannot be built or solved (a data gap, a daylight-saving price day, an infeasible or unsolved case:
    :data:`~desmarket.errors.CASE_FAILURES`) is a row with status "failed", its kind and reason, never dropped.

    Parameters
    ----------
    date : str or datetime-like
        The measured day.
    measured : pandas.DataFrame
        The measured homes (:func:`desmarket.data.load_measured_homes`).
    columns : callable
        ``columns(case) -> dict`` of the study's columns for that day.
    n_homes, n_scenarios, seed, prices
        Of the day's case (:func:`desmarket.data.build_case`); ``prices`` a price source or its name (a bad one
        raises its error: it is not a property of the day).

    Returns
    -------
    dict
        date, price_day (the day whose prices the case takes), status ("ok" or "failed"), failure (its kind,
        :func:`~desmarket.errors.failure_kind`), reason, then the study's columns on an "ok" day.
    """
    source = price_source(prices)
    day = pd.Timestamp(date).strftime("%Y-%m-%d")
    head = {"date": day, "price_day": source.price_day(day).strftime("%Y-%m-%d")}
    try:
        with quiet_warnings():
            case = build_case(
                n_homes=n_homes, n_scenarios=n_scenarios, date=day, seed=seed, measured=measured, prices=source
            )
            values = columns(case)
    except CASE_FAILURES as exc:
        return {**head, "status": "failed", "failure": failure_kind(exc), "reason": failure_reason(exc)}
    return {**head, "status": "ok", "failure": "", "reason": "", **values}


def day_claims(
    date,
    measured: pd.DataFrame,
    n_homes: int = 10,
    n_scenarios: int = 10,
    seed: int = 0,
    profit_rate: float = PAPER_PROFIT_RATE,
    prices=DEFAULT_PRICES,
) -> dict:
    """The scorecard quantities of one day, or status "failed" with the reason (data gap, infeasible, a
    daylight-saving price day, ...). ``prices``: a price source (:func:`desmarket.data.price_source`); a bad one
    raises its error (it is not a property of the day). ``price_day``: the day whose prices the case takes
    (:func:`day_row`)."""

    def columns(case: Case) -> dict:
        study = run_study(case, profit_rate, n_jobs=1)
        _, balanced, congested = study.market.cleared()
        return {**headline(study), "balanced_share": float(balanced.mean()), "congested_share": float(congested.mean())}

    return day_row(date, measured, columns, n_homes=n_homes, n_scenarios=n_scenarios, seed=seed, prices=prices)


def day_key(
    date,
    measured_digest: str,
    source: PriceSource,
    study: str = "claims_by_day",
    version: int = CLAIMS_VERSION,
    **parameters,
) -> str:
    """The :func:`~desmarket.daycache.row_key` of one day of a per-day study: the study and its version, the
    day, the digest of the measured homes (:func:`~desmarket.daycache.data_digest`), the day's 24 LMPs of
    ``source`` (or, for a day without prices, the reason) and ``parameters`` (n_homes, seed, ...)."""
    day = pd.Timestamp(date).strftime("%Y-%m-%d")
    seed = parameters.get("seed", 0)
    try:
        lmp = data_digest(source.lmp(day, seed=seed))
    except DataError as exc:  # the day has no prices: its kind and problem (never the file's path) key it
        lmp = f"{exc.kind or type(exc).__name__}: {exc.problem}"
    return row_key(study, version, date=day, homes=measured_digest, prices=source.tag, lmp=lmp, **parameters)


def claims_by_day(
    dates=None,
    measured: pd.DataFrame | None = None,
    n_jobs: int | None = -1,
    prices=DEFAULT_PRICES,
    *,
    tables=(),
    fresh: bool = False,
    **kw,
) -> pd.DataFrame:
    """One row per day (:func:`day_claims`), in calendar order; ``kw``: n_homes, n_scenarios, seed, profit_rate.

    ``prices``: the price source of every day (:func:`desmarket.data.price_source`), resolved once here: an
    unknown name or a malformed file raises its one :class:`~desmarket.errors.DataError` before any day is
    studied. Every day is seeded the same way, so a rerun gives the same table; failed days keep their reason.

    ``tables``: earlier ``claims_by_day.csv`` files whose rows are reused where their ``key`` (:func:`day_key`:
    the day, its data, its prices and every parameter) matches (:func:`desmarket.daycache.cached_rows`);
    ``fresh=True`` recomputes every day. The frame's ``attrs["reused"]`` counts the reused rows.
    """
    kw = {"n_homes": 10, "n_scenarios": 10, "seed": 0, "profit_rate": PAPER_PROFIT_RATE, **kw}
    return rows_by_day(
        day_claims, "claims_by_day", CLAIMS_VERSION, dates, measured, n_jobs, prices, tables=tables, fresh=fresh, **kw
    )


def _rows_task(dates: list, day_row, measured: pd.DataFrame, kw: dict) -> list[dict]:
    return [day_row(d, measured, **kw) for d in dates]


def rows_by_day(
    day_row,
    study: str,
    version: int,
    dates=None,
    measured: pd.DataFrame | None = None,
    n_jobs: int | None = -1,
    prices=DEFAULT_PRICES,
    *,
    tables=(),
    fresh: bool = False,
    **kw,
) -> pd.DataFrame:
    """The driver of every per-day study: ``day_row(date, measured, prices=source, **kw)`` (one dict per day,
    status "failed" with its reason where the day has no case) on each of ``dates`` (default every day of the
    measured data), in calendar order, fanned out through joblib in :data:`DAY_CHUNKS` chunks.

    ``prices`` is resolved once (a bad source raises its one error before any day); each row's key
    (:func:`day_key`: ``study``, ``version``, the day, its data, its prices and ``kw``) decides whether it is
    reused from ``tables`` (:func:`desmarket.daycache.cached_rows`; ``fresh=True`` recomputes every day,
    ``attrs["reused"]`` counts the reused rows). Seeded through ``kw``, so a rerun gives the same table
    whatever ``n_jobs``.
    """
    source = price_source(prices)
    measured = load_measured_homes() if measured is None else measured
    dates = measured_dates(measured) if dates is None else pd.DatetimeIndex(dates)
    digest = data_digest(measured)
    keys = [day_key(d, digest, source, study=study, version=version, **kw) for d in dates]
    task_kw = {**kw, "prices": source}
    compute = lambda missing: map_chunks(
        _rows_task, pd.DatetimeIndex(missing), (day_row, measured, task_kw), n_jobs, DAY_CHUNKS, progress="days"
    )
    return cached_rows(compute, list(dates), keys, tables, fresh=fresh).sort_index()


def claims_summary(by_day: pd.DataFrame, claims: pd.DataFrame) -> pd.DataFrame:
    """Per claim of the paper (source "headline"): the days it was computed on, median, 5th and 95th
    percentile over the days, the share of days in the paper's direction, within its order of magnitude, and
    agreeing (in direction, and in order of magnitude where the claim is a number) -- NaN where the paper gives
    no value -- and the paper's value."""
    ok = by_day[by_day["status"] == "ok"]
    rows = []
    for key, c in claims[claims["source"] == "headline"].iterrows():
        x = pd.to_numeric(ok[key], errors="coerce").dropna()
        verdicts = [agreement(c.kind, c.paper, c.sign, v) for v in x]
        share = lambda k: np.mean([v[k] == "yes" for v in verdicts]) if verdicts and verdicts[0][k] != "n/a" else np.nan
        agree = [v[0] == "yes" and v[1] != "no" for v in verdicts]  # direction, and magnitude where it applies
        rows.append(
            {
                "key": key,
                "claim": c.claim,
                "unit": c.unit,
                "days": len(x),
                "median": x.median(),
                "p05": x.quantile(0.05),
                "p95": x.quantile(0.95),
                "share_same_direction": share(0),
                "share_same_order_of_magnitude": share(1),
                "share_agree": float(np.mean(agree)) if verdicts and verdicts[0][0] != "n/a" else np.nan,
                "paper": {"sign": c.paper_text, "unreported": NOT_REPORTED}.get(c.kind, c.paper),
            }
        )
    return pd.DataFrame(rows).set_index("key")


#: Meteorological seasons of the (northern) measured data, by month.
SEASONS = {
    12: "winter",
    1: "winter",
    2: "winter",
    3: "spring",
    4: "spring",
    5: "spring",
    6: "summer",
    7: "summer",
    8: "summer",
    9: "autumn",
    10: "autumn",
    11: "autumn",
}


def claims_by_season(by_day: pd.DataFrame, claims: pd.DataFrame) -> pd.DataFrame:
    """Per claim of the paper (rows, as :func:`claims_summary`) and meteorological season (:data:`SEASONS`):
    the median over the season's studied days and the share of them that agree with the paper
    (``share_agree``), columns ``<season>_median`` and ``<season>_agree``; plus the paper's value."""
    season = pd.DatetimeIndex(pd.to_datetime(by_day.index)).month.map(SEASONS)
    parts = {}
    for name in ("winter", "spring", "summer", "autumn"):
        summary = claims_summary(by_day[np.asarray(season == name)], claims)
        parts[f"{name}_days"] = summary["days"]
        parts[f"{name}_median"] = summary["median"]
        parts[f"{name}_agree"] = summary["share_agree"]
    out = pd.DataFrame(parts)
    out.insert(0, "claim", summary["claim"])
    out["paper"] = summary["paper"]
    return out


#: The columns of a :func:`day_horizon` row per end-of-day rule (prefixed ``fixed_`` or ``cycle_``).
HORIZON_COLUMNS = (
    "surplus_usd",
    "market_peak_import_kw",
    "market_peak_hour",
    "market_peak_lmp_rank",
    "m1_peak_import_kw",
    "peak_import_change_pct",
    "market_import_last_hour_kw",
    "storage_change_pct",
)
#: The prefix of each end-of-day rule's columns (:data:`desmarket.horizon.STORAGE_END_RULES`).
HORIZON_PREFIX = dict(zip(STORAGE_END_RULES, ("fixed_", "cycle_"), strict=True))


def day_horizon(
    date, measured: pd.DataFrame, n_homes: int = 10, n_scenarios: int = 10, seed: int = 0, prices=DEFAULT_PRICES
) -> dict:
    """One day's :func:`desmarket.horizon.storage_end_comparison` as one row: per end-of-day rule (the paper's
    fixed end state, Eq. 15, columns ``fixed_*``; a daily storage cycle, ``cycle_*``) ΔC, the market's and M1's
    peak expected import and its hour, what the market imports in the last hour, the storage change; or status
    "failed" with the reason (:func:`day_row`)."""

    def columns(case: Case) -> dict:
        table = storage_end_comparison(case)
        return {prefix + c: table.loc[rule, c] for rule, prefix in HORIZON_PREFIX.items() for c in HORIZON_COLUMNS}

    return day_row(date, measured, columns, n_homes=n_homes, n_scenarios=n_scenarios, seed=seed, prices=prices)


def horizon_by_day(
    dates=None,
    measured: pd.DataFrame | None = None,
    n_jobs: int | None = -1,
    prices=DEFAULT_PRICES,
    *,
    tables=(),
    fresh: bool = False,
    **kw,
) -> pd.DataFrame:
    """One row per day (:func:`day_horizon`), in calendar order, reused from ``tables`` as
    :func:`claims_by_day`; ``kw``: n_homes, n_scenarios, seed."""
    kw = {"n_homes": 10, "n_scenarios": 10, "seed": 0, **kw}
    return rows_by_day(
        day_horizon,
        "horizon_by_day",
        HORIZON_VERSION,
        dates,
        measured,
        n_jobs,
        prices,
        tables=tables,
        fresh=fresh,
        **kw,
    )


def horizon_summary(by_day: pd.DataFrame) -> pd.DataFrame:
    """Per end-of-day rule, over the studied days: the days, the median ΔC ($/day), the median of the market's
    peak import (kW) and of its change against M1 (%), the share of days on which the market raises the peak
    import, the share on which the market's peak falls in the last hour (23:00), and the median import in the
    last hour (kW), and the share of days on which the market's peak import falls in one of the day's six
    cheapest wholesale hours."""
    ok = by_day[by_day["status"] == "ok"]
    last = 23
    rows = {}
    for rule, p in HORIZON_PREFIX.items():
        rows[rule] = {
            "days": len(ok),
            "surplus_usd_median": ok[p + "surplus_usd"].median(),
            "market_peak_import_kw_median": ok[p + "market_peak_import_kw"].median(),
            "peak_import_change_pct_median": ok[p + "peak_import_change_pct"].median(),
            "share_of_days_peak_raised": float((ok[p + "peak_import_change_pct"] > 0).mean()),
            "share_of_days_peak_in_last_hour": float((ok[p + "market_peak_hour"] == last).mean()),
            "market_import_last_hour_kw_median": ok[p + "market_import_last_hour_kw"].median(),
            "share_of_days_peak_in_6_cheapest_hours": float((ok[p + "market_peak_lmp_rank"] < 6).mean()),
        }
    out = pd.DataFrame(rows).T
    out.index.name = "rule"
    return out
