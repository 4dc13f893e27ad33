"""Wholesale prices: a seeded generator of PJM-like hourly LMP, the PJM Data Miner 2 loader, and both compared.

Every LMP series here is a ``pandas.Series`` in $/MWh indexed by hour-beginning UTC time (tz-aware), as
PJM's ``datetime_beginning_utc``. A case needs 24 values in $/kWh: :func:`lmp_for_date` takes the 24 hours
of one *Eastern* calendar day and the case divides by 1000.

Alignment with the homes [choice, data/README.md]: by clock hour. The LMP of Eastern prevailing hour h
(hour-beginning) is the price of the homes' local hour h, as if the community sat at the PJM bus and lived
by its clock: the daily cycles of the homes and of the PJM system then stay in phase. (Aligning the same
instant instead would put PJM's 17:00-19:00 Eastern peak at 14:00-16:00 in California, at the homes' PV
peak, an artefact of moving homes across three time zones.) The paper also moved homes (Austin, Central
time) to a PJM bus and gives no alignment; clock-hour alignment is the natural reading of "an annual price
of a bus in the US PJM market" applied to local-time load data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from ..case import HOURS
from .errors import DataError
from .measured import weekday_class

PJM_TZ = "America/New_York"  # PJM's Eastern prevailing time (EPT)

#: PJM real-time, load-weighted average LMP, $/MWh, by year. Source: Monitoring Analytics (PJM's market
#: monitor), State of the Market Report for PJM, Vol. 1 (2022, 2023 and 2024 editions).
PJM_ANNUAL_MEAN_LMP = {2022: 80.14, 2023: 31.08, 2024: 33.74}


@dataclass(frozen=True)
class LmpModel:
    """Parameters of :func:`synthetic_lmp` (all of them; data/README.md, "Prices").

    log LMP_t = log m(month) + log w(daytype) + log shape_season(hour) + D_day + e_t + spike_t, then the whole
    year is scaled so that its mean is ``annual_mean_usd_per_mwh``. Hours and days are Eastern prevailing time.

    annual_mean_usd_per_mwh  target annual (time-weighted) mean, $/MWh; default PJM 2024 (cited above)
    month_factor             relative price level by month, Jan..Dec (winter and summer peaks)
    weekend_factor           weekends and US federal holidays relative to weekdays
    shape_*                  relative price by hour-beginning 0..23, winter (Dec-Feb), summer (Jun-Aug),
                             shoulder (Mar-May, Sep-Nov); each is normalised to mean 1
    day_phi, day_sigma       AR(1) of the daily level in log space: lag-1 coefficient, stationary std
    hour_phi, hour_sigma     AR(1) of hourly deviations in log space: lag-1 coefficient, stationary std
    spike_prob               probability that a scarcity event (cold snap, heat wave) starts on a given day
    spike_mean_days          mean event length, days (geometric)
    spike_log_range          an event of size z ~ U[low, high] multiplies its days' prices by
                             exp(z (spike_base + (1 - spike_base) profile_h))
    spike_base               share of the event felt in every hour of the day
    spike_profile            extra weight over the 5 hours centred on the season's peak hour
    """

    annual_mean_usd_per_mwh: float = PJM_ANNUAL_MEAN_LMP[2024]
    month_factor: tuple = (1.30, 1.10, 0.90, 0.85, 0.85, 0.95, 1.20, 1.05, 0.90, 0.85, 0.90, 1.15)
    weekend_factor: float = 0.80
    shape_winter: tuple = (
        0.85,
        0.82,
        0.80,
        0.80,
        0.85,
        0.95,
        1.20,
        1.45,
        1.20,
        1.00,
        0.92,
        0.88,
        0.85,
        0.82,
        0.80,
        0.85,
        1.00,
        1.25,
        1.30,
        1.20,
        1.10,
        1.05,
        0.95,
        0.90,
    )
    shape_summer: tuple = (
        0.65,
        0.58,
        0.52,
        0.50,
        0.50,
        0.55,
        0.62,
        0.68,
        0.75,
        0.82,
        0.90,
        1.00,
        1.10,
        1.22,
        1.35,
        1.50,
        1.70,
        1.85,
        1.80,
        1.65,
        1.40,
        1.15,
        0.92,
        0.75,
    )
    shape_shoulder: tuple = (
        0.78,
        0.72,
        0.68,
        0.68,
        0.72,
        0.82,
        1.15,
        1.35,
        1.05,
        0.90,
        0.88,
        0.88,
        0.88,
        0.88,
        0.90,
        0.95,
        1.05,
        1.30,
        1.55,
        1.50,
        1.20,
        1.02,
        0.92,
        0.82,
    )
    day_phi: float = 0.8
    day_sigma: float = 0.3
    hour_phi: float = 0.8
    hour_sigma: float = 0.12
    spike_prob: float = 0.03
    spike_mean_days: float = 2.5
    spike_log_range: tuple = (0.3, 1.6)
    spike_base: float = 0.4
    spike_profile: tuple = (0.4, 0.8, 1.0, 0.8, 0.4)

    def shape(self, months: np.ndarray) -> np.ndarray:
        """(len(months), 24) daily shape (mean 1) for each month number 1..12."""
        table = np.array([self.shape_winter, self.shape_summer, self.shape_shoulder], dtype=float)
        table /= table.mean(axis=1, keepdims=True)
        season = np.select([np.isin(months, [12, 1, 2]), np.isin(months, [6, 7, 8])], [0, 1], 2)
        return table[season]


LMP_MODEL = LmpModel()


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """A stationary AR(1) path of length n with lag-1 coefficient phi and marginal std sigma."""
    eps = rng.standard_normal(n) * sigma * np.sqrt(1 - phi**2)
    eps[0] = rng.standard_normal() * sigma  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], eps)


def eastern_year_index(year: int) -> pd.DatetimeIndex:
    """Hour-beginning UTC times of every Eastern hour of calendar ``year`` (8,760 or 8,784)."""
    start = pd.Timestamp(f"{year}-01-01", tz=PJM_TZ).tz_convert("UTC")
    end = pd.Timestamp(f"{year + 1}-01-01", tz=PJM_TZ).tz_convert("UTC")
    return pd.date_range(start, end, freq="h", inclusive="left", name="datetime_beginning_utc")


def synthetic_lmp(
    year: int, seed: int = 0, annual_mean_usd_per_mwh: float | None = None, model: LmpModel = LMP_MODEL
) -> pd.Series:
    """A seeded year of PJM-like hourly LMP, $/MWh, indexed by hour-beginning UTC time (see :class:`LmpModel`).

    year:   the Eastern calendar year (sets weekdays, holidays and daylight saving)
    seed:   seed of ``numpy.random.default_rng``; the same (year, seed, mean, model) gives the same series
    annual_mean_usd_per_mwh: the level, e.g. ``PJM_ANNUAL_MEAN_LMP[2022]``; default ``model``'s (PJM 2024)
    """
    mean = model.annual_mean_usd_per_mwh if annual_mean_usd_per_mwh is None else float(annual_mean_usd_per_mwh)
    if not np.isfinite(mean) or mean <= 0:
        raise DataError("synthetic_lmp", f"annual mean {mean!r} $/MWh", "give a positive annual mean in $/MWh")
    utc = eastern_year_index(year)
    local = utc.tz_convert(PJM_TZ)
    day = pd.DatetimeIndex(local.tz_localize(None).normalize())
    days, day_idx = np.unique(day, return_inverse=True)
    months = local.month.to_numpy()
    hours = local.hour.to_numpy()
    rng = np.random.default_rng(seed)
    n_days = len(days)
    daily = _ar1(rng, n_days, model.day_phi, model.day_sigma)
    hourly = _ar1(rng, len(utc), model.hour_phi, model.hour_sigma)
    month_factor = np.asarray(model.month_factor) / np.mean(model.month_factor)
    weekend = weekday_class(days) == "weekend"
    log_p = (
        np.log(month_factor[months - 1])
        + np.log(model.shape(months)[np.arange(len(utc)), hours])
        + np.where(weekend, np.log(model.weekend_factor), 0.0)[day_idx]
        + daily[day_idx]
        + hourly
    )
    # scarcity events: start days, geometric lengths, one size per event; lifted most around the peak hour
    start = np.flatnonzero(rng.random(n_days) < model.spike_prob)
    length = rng.geometric(1.0 / model.spike_mean_days, size=start.size)
    low, high = model.spike_log_range
    z = rng.uniform(low, high, size=start.size)
    size = np.zeros(n_days)
    event_days = np.repeat(start, length) + (np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length))
    keep = event_days < n_days
    np.maximum.at(size, event_days[keep], np.repeat(z, length)[keep])
    day_months = pd.DatetimeIndex(days).month.to_numpy()
    peak_hour = np.argmax(model.shape(day_months), axis=1)  # (n_days,)
    width = len(model.spike_profile)
    offset = hours - peak_hour[day_idx] + width // 2
    inside = (offset >= 0) & (offset < width)
    profile = np.where(inside, np.asarray(model.spike_profile)[np.clip(offset, 0, width - 1)], 0.0)
    log_p = log_p + size[day_idx] * (model.spike_base + (1 - model.spike_base) * profile)
    price = np.exp(log_p)
    price *= mean / price.mean()
    return pd.Series(price, index=utc, name="lmp_usd_per_mwh")


# ========================================================================== PJM Data Miner 2
PJM_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"  # e.g. "1/1/2025 5:00:00 AM"
PJM_REQUIRED = ("datetime_beginning_utc", "pnode_id", "pnode_name", "row_is_current")


def _parse_pjm_times(values: pd.Series, file: str, column: str) -> pd.DatetimeIndex:
    """Data Miner 2 CSV times ("1/1/2025 5:00:00 AM"), or ISO 8601 as in its JSON API."""
    times = pd.to_datetime(values, format=PJM_TIME_FORMAT, errors="coerce")
    if times.isna().any():
        iso = pd.to_datetime(values, format="ISO8601", errors="coerce")
        times = times.fillna(iso) if not iso.isna().all() else times
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        raise DataError(
            file,
            f"cannot read the time {values.iloc[bad[0]]!r} (line {bad[0] + 2})",
            "use Data Miner 2's format, e.g. '1/1/2025 5:00:00 AM'",
            column=column,
        )
    return pd.DatetimeIndex(times)


def _as_bool(values: pd.Series) -> np.ndarray:
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "t", "yes"]).to_numpy()


def load_pjm_lmps(path, pnode=None, component: str = "total_lmp") -> pd.Series:
    """Hourly LMP from a PJM Data Miner 2 ``da_hrl_lmps`` or ``rt_hrl_lmps`` CSV export, $/MWh.

    path:      the CSV (columns ``datetime_beginning_utc, datetime_beginning_ept, pnode_id, pnode_name, ...,
               total_lmp_da`` (or ``_rt``), ``..., row_is_current, version_nbr``)
    pnode:     pnode id (int) or name (str); may be omitted when the file holds one pnode
    component: ``total_lmp`` (default), ``system_energy_price``, ``congestion_price`` or ``marginal_loss_price``

    Rules: only ``row_is_current`` rows are kept (PJM marks superseded versions False); time is
    ``datetime_beginning_utc`` (hour-beginning, UTC); ``datetime_beginning_ept``, when present, must agree
    with it. Raises :class:`DataError` (file, pnode, time) for: no or several pnodes without ``pnode``,
    a NaN price, duplicated hours, or missing hours. Returns a Series indexed by tz-aware UTC time, named
    ``lmp_usd_per_mwh``, with ``attrs`` pnode_id, pnode_name, market (``da``/``rt``), file.
    """
    file = str(path)
    try:
        raw = pd.read_csv(path, dtype={"pnode_name": str})
    except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(file, f"cannot be read as CSV ({exc})", "pass a Data Miner 2 CSV export") from exc
    missing = [c for c in PJM_REQUIRED if c not in raw.columns]
    markets = [m for m in ("da", "rt") if f"{component}_{m}" in raw.columns]
    if missing or len(markets) != 1:
        raise DataError(
            file,
            f"is not a da_hrl_lmps / rt_hrl_lmps export (missing {missing or []}, "
            f"price columns found {[f'{component}_{m}' for m in markets]})",
            "export 'Day-Ahead Hourly LMPs' or 'Real-Time Hourly LMPs' from Data Miner 2 as CSV",
        )
    market = markets[0]
    column = f"{component}_{market}"
    current = raw[_as_bool(raw["row_is_current"])]
    ids = current[["pnode_id", "pnode_name"]].drop_duplicates()
    if pnode is None:
        if len(ids) != 1:
            listing = ", ".join(f"{i} ({n})" for i, n in ids.head(10).itertuples(index=False))
            raise DataError(
                file, f"holds {len(ids)} pnodes: {listing}", "pass pnode= one of these ids or names", column="pnode_id"
            )
        chosen = current
    else:
        by_id = current["pnode_id"].astype(str) == str(pnode)
        by_name = current["pnode_name"].astype(str).str.strip().str.lower() == str(pnode).strip().lower()
        chosen = current[by_id | by_name]
        if chosen.empty:
            raise DataError(
                file,
                f"no current rows for pnode {pnode!r}",
                f"use one of {list(ids['pnode_id'])[:10]} / {list(ids['pnode_name'])[:10]}",
                column="pnode_id",
            )
        if chosen["pnode_id"].nunique() > 1:
            raise DataError(
                file,
                f"pnode {pnode!r} matches several pnode ids {sorted(chosen['pnode_id'].unique())}",
                "pass the numeric pnode_id",
                column="pnode_id",
            )
    utc = _parse_pjm_times(chosen["datetime_beginning_utc"], file, "datetime_beginning_utc").tz_localize("UTC")
    node = f"{chosen['pnode_id'].iloc[0]} ({chosen['pnode_name'].iloc[0]})"
    if "datetime_beginning_ept" in chosen.columns:
        ept = _parse_pjm_times(chosen["datetime_beginning_ept"], file, "datetime_beginning_ept")
        bad = np.flatnonzero(utc.tz_convert(PJM_TZ).tz_localize(None) != ept)
        if bad.size:
            raise DataError(
                file,
                f"datetime_beginning_ept {ept[bad[0]]} is not datetime_beginning_utc in Eastern time ({bad.size} rows)",
                "export both columns from Data Miner 2 unchanged",
                home=f"pnode {node}",
                time=utc[bad[0]],
                column="datetime_beginning_ept",
            )
    price = pd.to_numeric(chosen[column], errors="coerce").to_numpy(dtype=float)
    series = pd.Series(price, index=pd.DatetimeIndex(utc, name="datetime_beginning_utc"), name="lmp_usd_per_mwh")
    series = series.sort_index()
    nan = np.flatnonzero(~np.isfinite(series.to_numpy()))
    if nan.size:
        raise DataError(
            file,
            f"{column} is empty or not a number ({nan.size} hours)",
            "re-export the period, or pass a file without gaps",
            home=f"pnode {node}",
            time=series.index[nan[0]],
            column=column,
        )
    dup = series.index.duplicated()
    if dup.any():
        raise DataError(
            file,
            f"{dup.sum()} hours appear twice among the current rows",
            "keep one current row per hour (check row_is_current / version_nbr)",
            home=f"pnode {node}",
            time=series.index[np.argmax(dup)],
            column="datetime_beginning_utc",
        )
    full = pd.date_range(series.index[0], series.index[-1], freq="h")
    if len(full) != len(series):
        gap = full.difference(series.index)
        raise DataError(
            file,
            f"{len(gap)} hours are missing between {series.index[0]} and {series.index[-1]}",
            "export a continuous period (PJM publishes every hour)",
            home=f"pnode {node}",
            time=gap[0],
            column="datetime_beginning_utc",
        )
    series.attrs.update(
        pnode_id=int(chosen["pnode_id"].iloc[0]), pnode_name=str(chosen["pnode_name"].iloc[0]), market=market, file=file
    )
    return series


# ================================================================================ one day
def lmp_for_date(series: pd.Series, date, tz: str = PJM_TZ) -> np.ndarray:
    """The 24 hourly prices of local calendar day ``date`` in ``tz`` (default Eastern), hour-beginning 0..23.

    ``series`` is indexed by tz-aware time (UTC from this module). Raises :class:`DataError` when the day
    is not 24 hours in the series (outside the series, missing hours, or a daylight-saving change day).
    """
    date = pd.Timestamp(date).normalize()
    index = pd.DatetimeIndex(series.index)
    if index.tz is None:
        raise DataError("LMP series", "has naive times", "index it by tz-aware UTC time (as load_pjm_lmps does)")
    local = index.tz_convert(tz).tz_localize(None)
    sel = local.normalize() == date
    hours = local[sel].hour
    if sel.sum() != HOURS or len(set(hours)) != HOURS:
        span = f"{local.min()} to {local.max()}" if len(local) else "empty"
        raise DataError(
            series.attrs.get("file", "LMP series"),
            f"{date.date()} has {int(sel.sum())} hours in {tz} (series covers {span})",
            "choose a date inside the series and not a daylight-saving change day",
            time=date.date(),
        )
    values = series.to_numpy(dtype=float)[sel]
    return values[np.argsort(hours)]


# ============================================================================= comparison
def _profile(series: pd.Series, tz: str, months) -> np.ndarray:
    local = series.index.tz_convert(tz)
    sel = np.isin(local.month, months)
    prof = series[sel].groupby(local.hour[sel]).mean().reindex(range(HOURS)).to_numpy()
    return prof / np.nanmean(prof)


def lmp_statistics(series: pd.Series, tz: str = PJM_TZ) -> pd.Series:
    """Shape, spread and autocorrelation statistics of an hourly LMP series ($/MWh, UTC index)."""
    p = series.astype(float)
    local = p.index.tz_convert(tz)
    mean = p.mean()
    logp = np.log(p.clip(lower=1.0))  # log of prices floored at $1/MWh (negative LMPs are rare at zones)
    daily = p.groupby(local.tz_localize(None).normalize()).mean()
    weekend = weekday_class(local.tz_localize(None).normalize()) == "weekend"
    summer, winter = _profile(p, tz, [6, 7, 8]), _profile(p, tz, [12, 1, 2])
    overall = _profile(p, tz, range(1, 13))
    return pd.Series(
        {
            "hours": float(len(p)),
            "mean ($/MWh)": mean,
            "std / mean": p.std() / mean,
            "p05 / mean": p.quantile(0.05) / mean,
            "median / mean": p.median() / mean,
            "p95 / mean": p.quantile(0.95) / mean,
            "p99 / mean": p.quantile(0.99) / mean,
            "max / mean": p.max() / mean,
            "share of hours > 2 x mean": float((p > 2 * mean).mean()),
            "share of hours < 0": float((p < 0).mean()),
            "daily profile peak / trough": np.nanmax(overall) / np.nanmin(overall),
            "peak hour, summer (EPT)": float(np.nanargmax(summer)),
            "peak hour, winter (EPT)": float(np.nanargmax(winter)),
            "weekend / weekday mean": p[weekend].mean() / p[~weekend].mean(),
            "daily mean: std / mean": daily.std() / daily.mean(),
            "monthly mean: max / min": (lambda m: m.max() / m.min())(p.groupby(local.month).mean()),
            "autocorrelation log LMP, lag 1 h": logp.autocorr(1),
            "autocorrelation log LMP, lag 24 h": logp.autocorr(24),
            "autocorrelation log LMP, lag 168 h": logp.autocorr(168),
            "autocorrelation daily mean, lag 1 day": daily.autocorr(1),
        }
    )


def compare_lmp(synthetic: pd.Series, real: pd.Series, tz: str = PJM_TZ) -> pd.DataFrame:
    """Synthetic vs real LMP side by side: :func:`lmp_statistics` of each, plus the correlation of their mean
    daily profiles (summer, winter, all year). One row per statistic, columns ``synthetic``, ``real``.
    """
    table = pd.DataFrame({"synthetic": lmp_statistics(synthetic, tz), "real": lmp_statistics(real, tz)})
    for label, months in (("summer", [6, 7, 8]), ("winter", [12, 1, 2]), ("all year", range(1, 13))):
        r = np.corrcoef(_profile(synthetic, tz, months), _profile(real, tz, months))[0, 1]
        table.loc[f"daily profile correlation, {label}"] = [r, 1.0]
    table.index.name = "statistic"
    return table
