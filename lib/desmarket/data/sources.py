"""A price source is one parameter everywhere (issue 19): the wholesale LMP of a case, named or a file.

:func:`price_source` resolves one value into a :class:`PriceSource`; :func:`desmarket.data.build_case`, the year
study (:func:`desmarket.year.claims_by_day`), the size study (:func:`desmarket.sizes.size_study`),
``desmarket build-case --prices`` and ``make reproduce PRICES=`` all take the same value:

``ercot-2022`` (:data:`DEFAULT_PRICES`)  ERCOT day-ahead settlement point prices of ``LZ_AEN`` (Austin), 2022
``ercot-2021``                          the same for 2021, with Winter Storm Uri (days near 9 $/kWh in February)
                                        and 5 negative hours (2021-03-10 and 03-11)
``pjm-like``                            the seeded synthetic PJM-like LMP (:func:`~desmarket.data.synthetic_lmp`)
                                        of the home day itself, at PJM's 2024 level (the project's former default)
a path                                  a PJM Data Miner 2 ``da_hrl_lmps`` CSV export of one pnode
                                        (:func:`~desmarket.data.load_pjm_lmps`)

Day mapping [choice, data/README.md 5.5]: a home day (2016-08 to 2017-07) takes the prices of the day of the
price year with the same weekday nearest to its month and day (:func:`~desmarket.data.ercot_day_for`, within
3 days); ``pjm-like`` is generated for the home day itself. Hours by local clock hour: the home's hour beginning
h takes the price of the price day's local hour beginning h (ERCOT: Central time, hour ending h + 1; PJM:
``datetime_beginning_ept`` hour h, Eastern time). A mapped price day of 23 or 25 hours (daylight saving) or
outside the data raises :class:`DataError` naming both days and the reason, so the studies record that day
as a failed row with its reason, as they do for the homes' own clock-change days.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .ercot import ERCOT_TZ, ERCOT_YEARS, ercot_day, ercot_day_for, load_ercot
from .errors import DAYLIGHT_SAVING_PRICE_DAY, PRICE_DAY_OUTSIDE_DATA, DataError
from .prices import PJM_TZ, lmp_for_date, load_pjm_lmps, synthetic_lmp

#: The price source of a case when none is given (the CLI, ``make reproduce``, the notebooks, the studies).
DEFAULT_PRICES = "ercot-2022"
#: The named price sources and what each is (a PJM Data Miner 2 file is given by its path instead).
PRICE_SOURCES = {
    "ercot-2022": "ERCOT day-ahead LZ_AEN (Austin) 2022",
    "ercot-2021": "ERCOT day-ahead LZ_AEN (Austin) 2021, with Winter Storm Uri",
    "pjm-like": "synthetic PJM-like LMP of the home day (seeded, PJM 2024 level)",
}
#: The choices, as every error and help text lists them.
CHOICES = "ercot-2022 (the default), ercot-2021, pjm-like, or the path of a PJM Data Miner 2 da_hrl_lmps CSV export"
#: The ERCOT settlement point of the named sources: Austin Energy's load zone (the city of the paper's homes).
ERCOT_POINT = "LZ_AEN"

#: Phrases of the errors of a mapped price day (their ``DataError.kind`` is what the studies' tables record).
DST_PRICE_DAY = "a daylight-saving price day"
MISSING_PRICE_DAY = "not in the price data"


@dataclass(frozen=True, eq=False)
class PriceSource:
    """A resolved price source (made by :func:`price_source`): 24 LMPs in $/kWh for any home day.

    name:  the name (``ercot-2022``, ``ercot-2021``, ``pjm-like``) or the file's absolute path
    label: what it is, for notes and printed output (e.g. ``ERCOT day-ahead LZ_AEN (Austin) 2022``)
    tag:   its part of a run tag (letters, digits, '.', '_', '-'): the name, or for a file its sanitised name
           and 8 hex digits of the hash of its absolute path
    kind:  ``ercot``, ``pjm-like`` or ``pjm-file``
    tz:    the clock of its hours (``America/Chicago`` for ERCOT, ``America/New_York`` for PJM)
    year:  the price year onto which home days are mapped (None for ``pjm-like``: the home day itself)
    """

    name: str
    label: str
    tag: str
    kind: str
    tz: str
    year: int | None
    series: pd.Series | None = field(default=None, repr=False)  # a PJM file's prices, $/MWh, UTC index

    @property
    def file(self) -> str:
        """What an error names as the file: the price data read, or the generator."""
        if self.kind == "ercot":
            from .ercot import _extract_path

            return str(_extract_path())
        return self.name if self.kind == "pjm-file" else "synthetic_lmp (pjm-like)"

    def price_day(self, home_date) -> pd.Timestamp:
        """The day whose prices the home day ``home_date`` takes (see the module docstring)."""
        home = pd.Timestamp(home_date).normalize()
        return home if self.year is None else ercot_day_for(home, self.year)

    def day_lmp(self, price_day, seed: int = 0, home_date=None) -> np.ndarray:
        """The 24 LMPs ($/kWh) of local calendar day ``price_day`` of the source, hour beginning 0..23.

        seed: draws the ``pjm-like`` series (the other sources ignore it). Raises :class:`DataError` naming the
        day (and ``home_date``, when given) for a day of 23 or 25 hours or one outside the data.
        """
        day = pd.Timestamp(price_day).normalize()
        whose = f"home day {pd.Timestamp(home_date).date()} takes the prices of " if home_date is not None else ""
        where = f"{whose}{day.date()} ({self.label})"
        if self.kind == "pjm-like":
            return lmp_for_date(synthetic_lmp(day.year, seed=seed), day) / 1000.0
        if self.kind == "ercot":
            if day.year not in ERCOT_YEARS:
                raise self._missing(
                    where, f"the ERCOT extract holds {ERCOT_YEARS[0]}-01-01 to {ERCOT_YEARS[-1]}-12-31", day
                )
            series = load_ercot(day.year, ERCOT_POINT)
        else:
            series = self.series
        local = series.index.tz_convert(self.tz).tz_localize(None)
        hours = int((local.normalize() == day).sum())
        if hours != 24:
            midnight = lambda d: d.tz_localize(self.tz).utcoffset()
            if hours in (23, 25) and midnight(day) != midnight(day + pd.Timedelta(days=1)):
                raise self._dst(where, hours, day)
            held = f"only {hours} of its 24 hours are there; " if hours else ""
            raise self._missing(where, f"{held}the data cover {local.min()} to {local.max()} {self.tz}", day)
        if self.kind == "ercot":
            return ercot_day(day, ERCOT_POINT)
        return lmp_for_date(series, day, self.tz) / 1000.0

    def lmp(self, home_date, seed: int = 0) -> np.ndarray:
        """The 24 LMPs ($/kWh) of home day ``home_date``: those of :meth:`price_day`, by local clock hour."""
        return self.day_lmp(self.price_day(home_date), seed, home_date=home_date)

    def describe(self, home_date, seed: int | None = None) -> str:
        """One line for notes and printed output: the source and the day whose prices ``home_date`` takes
        (``seed``: the one that drew a ``pjm-like`` series)."""
        home = pd.Timestamp(home_date).normalize()
        if self.kind == "pjm-like":
            drawn = f", seed {seed}" if seed is not None else ""
            return f"prices {self.name}: {self.label}, {home:%a %Y-%m-%d}{drawn} (Eastern clock hours)"
        day = self.price_day(home)
        clock = "Central" if self.tz == ERCOT_TZ else "Eastern"
        return (
            f"prices {self.tag}: {self.label}, the day {day:%a %Y-%m-%d} for the home day {home:%a %Y-%m-%d} "
            f"(same weekday nearest to its month and day; hour by {clock} clock hour)"
        )

    def _dst(self, where: str, hours: int, day) -> DataError:
        change = "springs forward" if hours == 23 else "falls back"
        return DataError(
            self.file,
            f"{where}: {DST_PRICE_DAY}, {hours} hours ({self.tz} {change}), and a case needs 24",
            "exclude this home day (a study records it as failed with this reason) or "
            "choose another date or price source",
            time=day.date(),
            kind=DAYLIGHT_SAVING_PRICE_DAY,
        )

    def _missing(self, where: str, span: str, day) -> DataError:
        return DataError(
            self.file,
            f"{where}: the day is {MISSING_PRICE_DAY} ({span})",
            f"choose another date, or a price source that covers it: {CHOICES}",
            time=day.date(),
            kind=PRICE_DAY_OUTSIDE_DATA,
        )

    def __reduce__(self):  # joblib / Dask workers get the source as made (a file is not read again)
        return (PriceSource, (self.name, self.label, self.tag, self.kind, self.tz, self.year, self.series))


def file_tag(path) -> str:
    """A file's part of a run tag: its name without suffix (anything but letters, digits, '.', '_' and '-'
    replaced by '_') and 8 hex digits of the hash of its absolute path, as the case tag of a CASE run."""
    path = Path(path).resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).lstrip(".") or "prices"
    return f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _unknown(value) -> DataError:
    return DataError("prices", f"{value!r} is not a price source (no such name, and no such file)", f"choose {CHOICES}")


def _pjm_file(path: Path) -> PriceSource:
    try:
        series = load_pjm_lmps(path)
    except DataError as exc:
        raise DataError(
            exc.file,
            " ".join(exc.problem.split()),
            f"{exc.fix}; or choose another price source: {CHOICES}",
            home=exc.home,
            time=exc.time,
            column=exc.column,
        ) from None
    if series.attrs["market"] != "da":
        raise DataError(
            str(path),
            "is a real-time export (rt_hrl_lmps); the aggregator buys at the day-ahead LMP",
            f"export 'Day-Ahead Hourly LMPs' (da_hrl_lmps) from Data Miner 2; the price sources: {CHOICES}",
            column="total_lmp_rt",
        )
    years = pd.Series(series.index.tz_convert(PJM_TZ).year).value_counts()
    year = int(years[years == years.max()].index.min())  # [choice] the year holding most of its hours
    label = f"PJM day-ahead {series.attrs['pnode_name']} (pnode {series.attrs['pnode_id']}) {year}, file {path.name}"
    return PriceSource(str(path), label, file_tag(path), "pjm-file", PJM_TZ, year, series)


def price_source(prices=DEFAULT_PRICES) -> PriceSource:
    """The :class:`PriceSource` of ``prices``: a name (``ercot-2022``, ``ercot-2021``, ``pjm-like``), the path of
    a PJM Data Miner 2 ``da_hrl_lmps`` CSV export (str or Path; relative to the current folder), or a
    :class:`PriceSource` (returned as it is).

    Raises one :class:`DataError` naming the value and listing the choices for an unknown name or a missing
    file, and naming the file (column, time) for a malformed one; the data are read and checked here, once.
    """
    if isinstance(prices, PriceSource):
        return prices
    if not isinstance(prices, (str, Path)) or str(prices).strip() == "":
        raise _unknown(prices)
    text = str(prices).strip()
    if text in ("ercot-2021", "ercot-2022"):
        year = int(text[-4:])
        ercot_day(f"{year}-01-03", ERCOT_POINT)  # reads and checks the extract now (a missing one: its error)
        return PriceSource(text, PRICE_SOURCES[text], text, "ercot", ERCOT_TZ, year)
    if text == "pjm-like":
        return PriceSource(text, PRICE_SOURCES[text], text, "pjm-like", PJM_TZ, None)
    path = Path(text).expanduser()
    if not path.is_file():
        raise _unknown(prices)
    return _pjm_file(path.resolve())
