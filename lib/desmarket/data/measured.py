"""Measured homes as a tidy hourly frame, and the bad-data rules applied to it (all in one place).

A *measured frame* has one row per home and hour, columns :data:`MEASURED_COLUMNS`:
``home`` (str), ``time`` (hour-beginning local clock time; naive with ``attrs['tz']``, or tz-aware),
``load_kw`` and ``pv_kw`` (mean kW over the hour, >= 0), ``pv_kwp`` (PV nominal power, kWp; NaN if unknown).
:func:`~desmarket.data.load_measured_homes` (CityLearn) and :func:`~desmarket.data.load_pecanstreet` make one.

The rules (data/README.md, "Bad data"), each either a flag with a documented consequence or an error:

* NaN, infinite or negative load / PV, duplicated (home, time): :class:`DataError` naming home and time
  (:func:`check_measured`). Nothing is filled, clipped or dropped.
* A day without its 24 clock hours (first and last day of a series, missing hours): flag ``incomplete``.
* A day on which the local clock changes (daylight saving: 23 or 25 hours): flag ``dst_change``. In the
  CityLearn files these days still have 24 rows, so one row is not a real clock hour.
* ``load_dropout``: at least :attr:`QualityRules.load_dropout_hours` hours of load below
  :attr:`QualityRules.load_dropout_kw` in one day. A lived-in home's always-on appliances draw more; such
  runs are meter dropouts or load reconstructed as ``net + PV`` and cut at zero.
* ``pv_outage``: a home that has PV produced nothing on a complete day (the sun rises every day).
* A home whose PV is zero in every hour is a home **without PV** (allowed; no PV flags).
* Home level: ``pv_faulty`` when its PV yield (kWh per kWp per day) is below
  :attr:`QualityRules.pv_faulty_yield_ratio` times the median of the homes with PV (needs ``pv_kwp``);
  ``too_many_bad_days`` when more than :attr:`QualityRules.max_bad_day_share` of its complete days have
  ``load_dropout`` or ``pv_outage``. A home with either is not *valid* and is never used by default.
* Consequence of a day flag: the day is never a scenario for any case that includes that home
  (:func:`~desmarket.data.scenario_pool`); asking for it as the target date raises :class:`DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar

from ..case import HOURS
from .errors import DataError

MEASURED_COLUMNS = ("home", "time", "load_kw", "pv_kw", "pv_kwp")
DAY_FLAGS = ("incomplete", "dst_change", "load_dropout", "pv_outage")


@dataclass(frozen=True)
class QualityRules:
    """Thresholds of the bad-data rules (module docstring)."""

    load_dropout_kw: float = 0.05  # kW: an hour below this is "no load"
    load_dropout_hours: int = 6  # hours per day below load_dropout_kw that flag the day
    pv_faulty_yield_ratio: float = 0.5  # PV yield below this x the community median -> faulty PV
    max_bad_day_share: float = 0.25  # share of complete days with load_dropout/pv_outage a valid home may have


QUALITY = QualityRules()


# ===================================================================================== checks
def frame_tz(measured: pd.DataFrame, tz: str | None = None) -> str:
    """The local time zone of a measured frame: ``tz`` if given, the tz of ``time``, or ``attrs['tz']``."""
    dtype_tz = getattr(measured["time"].dtype, "tz", None)
    tz = tz or (str(dtype_tz) if dtype_tz is not None else measured.attrs.get("tz"))
    if tz is None:
        raise DataError(
            "measured frame",
            "has naive times and no time zone",
            "pass tz= (e.g. 'America/Chicago') or set frame.attrs['tz']",
            column="time",
        )
    return tz


def local_clock(measured: pd.DataFrame, tz: str | None = None) -> pd.Series:
    """``time`` as naive local clock time (tz-aware times are converted to the frame's zone first)."""
    time = pd.to_datetime(measured["time"])
    if getattr(time.dtype, "tz", None) is not None:
        time = time.dt.tz_convert(frame_tz(measured, tz)).dt.tz_localize(None)
    return time


def check_measured(measured: pd.DataFrame, file: str = "measured frame") -> None:
    """Raise :class:`DataError` on missing columns, NaN / infinite / negative load or PV, duplicated (home, time)."""
    missing = [c for c in MEASURED_COLUMNS if c not in measured.columns]
    if missing:
        raise DataError(file, f"missing columns {missing}", f"a measured frame has columns {MEASURED_COLUMNS}")
    for column in ("load_kw", "pv_kw"):
        values = measured[column].to_numpy(dtype=float)
        for bad, what in ((~np.isfinite(values), "is NaN or infinite"), (values < 0, "is negative")):
            idx = np.flatnonzero(bad)
            if idx.size:
                i = idx[0]
                raise DataError(
                    file,
                    f"{column} = {values[i]!r} {what} ({idx.size} rows)",
                    "repair or remove the home's bad rows at the source; nothing is filled or clipped",
                    home=measured["home"].iloc[i],
                    time=measured["time"].iloc[i],
                    column=column,
                )
    dup = measured.duplicated(["home", "time"]).to_numpy()
    if dup.any():
        i = np.argmax(dup)
        raise DataError(
            file,
            f"duplicated timestamp ({dup.sum()} rows)",
            "give each home one row per hour",
            home=measured["home"].iloc[i],
            time=measured["time"].iloc[i],
            column="time",
        )


# ================================================================================ day flags
def dst_change_dates(dates, tz: str) -> np.ndarray:
    """Boolean per date: does the local clock of ``tz`` change during that day (23- or 25-hour day)?"""
    days = pd.DatetimeIndex(dates).normalize()

    def offset(idx):
        aware = idx.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        return (aware.tz_localize(None) - aware.tz_convert("UTC").tz_localize(None)).to_numpy()

    return offset(days) != offset(days + pd.Timedelta(days=1))


def day_flags(measured: pd.DataFrame, tz: str | None = None, rules: QualityRules = QUALITY) -> pd.DataFrame:
    """One row per (home, local date): hours present, daily energies and the flags of the bad-data rules.

    Columns: ``hours``, ``load_kwh``, ``pv_kwh``, ``low_load_hours``, one bool per :data:`DAY_FLAGS`,
    ``bad`` (load_dropout or pv_outage: the home's own fault), ``flagged`` (any flag), ``reason``.
    """
    clock = local_clock(measured, tz)
    df = pd.DataFrame(
        {
            "home": measured["home"].astype(str).to_numpy(),
            "date": clock.dt.normalize().to_numpy(),
            "hour": clock.dt.hour.to_numpy(),
            "load_kw": measured["load_kw"].to_numpy(dtype=float),
            "pv_kw": measured["pv_kw"].to_numpy(dtype=float),
            "low": measured["load_kw"].to_numpy(dtype=float) < rules.load_dropout_kw,
        }
    )
    g = df.groupby(["home", "date"], sort=True)
    out = pd.DataFrame(
        {
            "hours": g["hour"].nunique(),
            "rows": g.size(),
            "load_kwh": g["load_kw"].sum(),
            "pv_kwh": g["pv_kw"].sum(),
            "low_load_hours": g["low"].sum(),
        }
    )
    has_pv = df.groupby("home")["pv_kw"].sum() > 0
    home_has_pv = has_pv.reindex(out.index.get_level_values("home")).to_numpy()
    out["incomplete"] = (out["hours"] != HOURS) | (out["rows"] != HOURS)
    out["dst_change"] = dst_change_dates(out.index.get_level_values("date"), frame_tz(measured, tz))
    out["load_dropout"] = out["low_load_hours"] >= rules.load_dropout_hours
    out["pv_outage"] = home_has_pv & (out["pv_kwh"] == 0) & ~out["incomplete"]
    out["bad"] = out["load_dropout"] | out["pv_outage"]
    out["flagged"] = out[list(DAY_FLAGS)].any(axis=1)
    reason = np.full(len(out), "", dtype=object)
    for flag in DAY_FLAGS:
        reason = np.where(out[flag], reason + flag + " ", reason)
    out["reason"] = pd.Series(reason, index=out.index).str.strip().str.replace(" ", "+")
    return out.drop(columns="rows")


def home_quality(
    measured: pd.DataFrame, flags: pd.DataFrame | None = None, tz: str | None = None, rules: QualityRules = QUALITY
) -> pd.DataFrame:
    """One row per home: energy, PV yield, bad days, validity and the default ranking.

    Columns: ``pv_kwp``; ``load_kwh_per_day``, ``pv_kwh_per_day`` and ``pv_yield`` (kWh/kWp/day) over
    complete days; ``complete_days``; ``load_dropout_days``, ``pv_outage_days``, ``bad_days``,
    ``bad_day_share``; ``has_pv``; ``pv_faulty``; ``valid``; ``reason``; ``rank`` (1 = best valid home:
    fewest bad days, ties by home id; 0 for invalid homes). The paper case uses ranks 1..10.
    """
    flags = day_flags(measured, tz, rules) if flags is None else flags
    complete = flags[~flags["incomplete"]]
    g = complete.groupby(level="home")
    q = pd.DataFrame(
        {
            "pv_kwp": measured.groupby("home")["pv_kwp"].first().astype(float),
            "complete_days": g.size(),
            "load_kwh_per_day": g["load_kwh"].mean(),
            "pv_kwh_per_day": g["pv_kwh"].mean(),
            "load_dropout_days": g["load_dropout"].sum(),
            "pv_outage_days": g["pv_outage"].sum(),
            "bad_days": g["bad"].sum(),
        }
    )
    q.index.name = "home"
    q["bad_day_share"] = q["bad_days"] / q["complete_days"]
    q["has_pv"] = q["pv_kwh_per_day"] > 0
    q["pv_yield"] = q["pv_kwh_per_day"] / q["pv_kwp"]  # NaN when kWp unknown
    with_pv = q.loc[q["has_pv"], "pv_yield"].dropna()
    q["pv_faulty"] = q["has_pv"] & (q["pv_yield"] < rules.pv_faulty_yield_ratio * with_pv.median())
    too_many = q["bad_day_share"] > rules.max_bad_day_share
    q["valid"] = ~q["pv_faulty"] & ~too_many
    q["reason"] = np.where(q["pv_faulty"], "pv_faulty ", "") + np.where(too_many, "too_many_bad_days", "")
    q["reason"] = q["reason"].str.strip().str.replace(" ", "+")
    order = q[q["valid"]].sort_values(["bad_days"], kind="stable").index  # index is sorted by id already
    q["rank"] = 0
    q.loc[order, "rank"] = np.arange(1, len(order) + 1)
    return q


def ranked_homes(measured: pd.DataFrame, quality: pd.DataFrame | None = None) -> list[str]:
    """Valid homes in ranking order (fewest bad days first, ties by id)."""
    q = home_quality(measured) if quality is None else quality
    return list(q[q["valid"]].sort_values("rank").index)


# ============================================================================ calendar, days
def weekday_class(dates) -> np.ndarray:
    """``'weekday'`` (Monday-Friday, not a US federal holiday) or ``'weekend'`` (Sat, Sun, holidays)."""
    days = pd.DatetimeIndex(dates).normalize()
    if len(days) == 0:
        return np.array([], dtype=object)
    holidays = USFederalHolidayCalendar().holidays(days.min(), days.max())
    weekend = (days.day_of_week >= 5) | days.isin(holidays)
    return np.where(weekend, "weekend", "weekday").astype(object)


def daily_profiles(measured: pd.DataFrame, homes, days, tz: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load and PV of ``homes`` on local ``days`` as two arrays (N, D, 24), kW, hour-beginning 0..23.

    Raises :class:`DataError` naming home and day if one of them does not have exactly the 24 clock hours.
    """
    homes = [str(h) for h in homes]
    days = pd.DatetimeIndex(days).normalize()
    clock = local_clock(measured, tz)
    sel = measured["home"].astype(str).isin(homes).to_numpy() & clock.dt.normalize().isin(days).to_numpy()
    sub = pd.DataFrame(
        {
            "home": measured["home"].astype(str).to_numpy()[sel],
            "date": clock.dt.normalize().to_numpy()[sel],
            "hour": clock.dt.hour.to_numpy()[sel],
            "load_kw": measured["load_kw"].to_numpy(dtype=float)[sel],
            "pv_kw": measured["pv_kw"].to_numpy(dtype=float)[sel],
        }
    )
    hours = sub.groupby(["home", "date"])["hour"].agg(["size", "nunique"])
    hours = hours.reindex(pd.MultiIndex.from_product([homes, days]), fill_value=0)
    bad = ((hours["size"] != HOURS) | (hours["nunique"] != HOURS)).to_numpy()
    if bad.any():
        home, day = hours.index[np.argmax(bad)]
        raise DataError(
            "measured frame",
            f"day {pd.Timestamp(day).date()} does not have the 24 clock hours 0-23",
            "use a complete day (see day_flags: incomplete / dst_change)",
            home=home,
            time=day,
        )
    full = sub.set_index(["home", "date", "hour"]).reindex(pd.MultiIndex.from_product([homes, days, range(HOURS)]))
    shape = (len(homes), len(days), HOURS)
    return full["load_kw"].to_numpy().reshape(shape), full["pv_kw"].to_numpy().reshape(shape)
