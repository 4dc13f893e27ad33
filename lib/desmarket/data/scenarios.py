"""Scenarios from real day-to-day variation, and larger communities by resampling measured homes.

Method (data/README.md, "Scenarios"): the scenarios of a target date are S *similar days*: days of the
same calendar month and the same weekday class (weekday / weekend-or-US-federal-holiday) as the target,
on which no home of the case has a bad-data flag. The target date is always one of them; the other S - 1
are drawn without replacement from the remaining candidates with ``numpy.random.default_rng(seed)``.
Scenario s is one calendar day for every home (the homes share that day's weather), so the scenarios
carry the measured joint variability of load and PV. They are equiprobable, pi_s = 1/S, and named by
their date (``2017-07-18``), in calendar order.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..case import HOURS
from .citylearn import load_measured_homes
from .errors import DAY_OUTSIDE_DATA, FEW_SIMILAR_DAYS, DataError
from .measured import daily_profiles, day_flags, weekday_class

#: Scale factors of resampled homes (:func:`resample_homes`): uniform ranges, dimensionless.
LOAD_SCALE = (0.8, 1.25)  # home size / occupancy
PV_SCALE = (0.8, 1.25)  # array size


class Scenarios(NamedTuple):
    """Scenario profiles of a set of homes: load and PV arrays (N, S, 24) in kW, hour-beginning local time."""

    homes: tuple[str, ...]
    days: pd.DatetimeIndex  # the scenario days (scenario ids are their ISO dates)
    probability: np.ndarray  # (S,), equiprobable
    load: np.ndarray  # (N, S, 24) kW
    pv: np.ndarray  # (N, S, 24) kW

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(d.strftime("%Y-%m-%d") for d in self.days)


def _flags(measured, flags):
    return day_flags(measured) if flags is None else flags


def scenario_pool(date, homes, measured: pd.DataFrame, flags: pd.DataFrame | None = None) -> pd.DatetimeIndex:
    """Candidate scenario days for ``date``: same month, same weekday class, no flag for any of ``homes``.

    The target date itself is included. Raises :class:`DataError` if the target date is flagged for one of
    the homes (naming the home and the flag) or is not in the data.
    """
    date = pd.Timestamp(date).normalize()
    homes = [str(h) for h in homes]
    flags = _flags(measured, flags)
    present = set(flags.index.get_level_values("home"))
    unknown = [h for h in homes if h not in present]
    if unknown:
        raise DataError(
            "measured frame", f"unknown homes {unknown}", f"use homes of the data, e.g. {sorted(present)[:5]}"
        )
    sub = flags.loc[flags.index.get_level_values("home").isin(homes)]
    dates = sub.index.get_level_values("date")
    if date not in set(dates):
        raise DataError(
            "measured frame",
            f"the date {date.date()} is not in the data ({dates.min().date()} to {dates.max().date()})",
            "choose a date inside the measured period",
            time=date.date(),
            kind=DAY_OUTSIDE_DATA,
        )
    target = sub[dates == date]
    if target["flagged"].any():
        row = target[target["flagged"]].iloc[0]
        home = target[target["flagged"]].index[0][0]
        raise DataError(
            "measured frame",
            f"the target date is flagged '{row['reason']}'",
            "choose another date or other homes (see day_flags / home_quality)",
            home=home,
            time=date.date(),
        )
    per_day = sub.groupby(level="date")["flagged"].agg(["any", "size"])
    ok = per_day[~per_day["any"] & (per_day["size"] == len(homes))].index
    ok = pd.DatetimeIndex(ok)
    same = (ok.month == date.month) & (ok.year == date.year) & (weekday_class(ok) == weekday_class([date])[0])
    return ok[same]


def similar_days(
    date,
    n_scenarios: int = 10,
    seed: int = 0,
    homes=None,
    measured: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> pd.DatetimeIndex:
    """The S scenario days of ``date`` (module docstring): the target plus S - 1 seeded draws from the pool.

    ``homes`` defaults to every home of ``measured``; ``measured`` to the CityLearn homes. Returned in
    calendar order. Raises :class:`DataError` if the pool has fewer than ``n_scenarios`` days.
    """
    measured = load_measured_homes() if measured is None else measured
    homes = list(pd.unique(measured["home"].astype(str))) if homes is None else [str(h) for h in homes]
    if n_scenarios < 1:
        raise DataError("scenarios", f"n_scenarios = {n_scenarios}", "ask for at least one scenario")
    date = pd.Timestamp(date).normalize()
    pool = scenario_pool(date, homes, measured, flags)
    if len(pool) < n_scenarios:
        raise DataError(
            "measured frame",
            f"only {len(pool)} clean {weekday_class([date])[0]} days in "
            f"{date.strftime('%B %Y')} for these {len(homes)} homes, {n_scenarios} scenarios asked",
            "ask for fewer scenarios, fewer homes, or another date",
            time=date.date(),
            kind=FEW_SIMILAR_DAYS,
        )
    others = pool[pool != date]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(others), size=n_scenarios - 1, replace=False)
    return pd.DatetimeIndex(sorted([date, *others[pick]]))


def build_scenarios(
    date,
    n_scenarios: int = 10,
    seed: int = 0,
    homes=None,
    measured: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> Scenarios:
    """Load and PV of ``homes`` on the S similar days of ``date``: a :class:`Scenarios` (N, S, 24) in kW."""
    measured = load_measured_homes() if measured is None else measured
    flags = _flags(measured, flags)
    homes = list(pd.unique(measured["home"].astype(str))) if homes is None else [str(h) for h in homes]
    days = similar_days(date, n_scenarios, seed, homes, measured, flags)
    load, pv = daily_profiles(measured, homes, days)
    return Scenarios(tuple(homes), days, np.full(len(days), 1.0 / len(days)), load, pv)


#: Ids of resampled homes: ``R0001-B07`` is resampled home 1, a copy of measured home B07 (:func:`resample_homes`).
RESAMPLED_ID = re.compile(r"R\d{4,}-.+")


def resampled_homes(home_ids) -> list[str]:
    """The ids among ``home_ids`` that are resampled copies of measured homes, not measured homes."""
    return [h for h in home_ids if RESAMPLED_ID.fullmatch(str(h))]


def resample_homes(
    scenarios: Scenarios,
    n_new: int,
    seed: int = 0,
    measured: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
    start: int = 1,
) -> Scenarios:
    """``n_new`` resampled homes for larger communities, on the same scenario days as ``scenarios``.

    Home k copies a source home drawn uniformly from ``scenarios.homes``, with its own scale factors
    ``load_scale`` ~ U[LOAD_SCALE] and ``pv_scale`` ~ U[PV_SCALE]:
      PV:   the source's PV on the scenario day itself x pv_scale (all homes share the day's weather);
      load: the source's load on a day drawn from the scenario pool of the target date (same month and
            weekday class, clean for every source home) x load_scale, a fresh draw per scenario.
    Ids are ``R0001-B07`` (resampled home 1, source B07), numbered from ``start``. Seeded by ``seed``.
    """
    measured = load_measured_homes() if measured is None else measured
    flags = _flags(measured, flags)
    sources = list(scenarios.homes)
    target = scenarios.days[0]
    pool = scenario_pool(target, sources, measured, flags)
    # the pool of the first scenario day is the pool of every scenario day (same month and class)
    pool_load, _ = daily_profiles(measured, sources, pool)  # (M, P, 24)
    rng = np.random.default_rng(seed)
    src = rng.integers(len(sources), size=n_new)
    load_scale = rng.uniform(*LOAD_SCALE, size=n_new)
    pv_scale = rng.uniform(*PV_SCALE, size=n_new)
    s = len(scenarios.days)
    load_day = rng.integers(len(pool), size=(n_new, s))
    load = pool_load[src[:, None], load_day] * load_scale[:, None, None]
    pv = scenarios.pv[src] * pv_scale[:, None, None]
    ids = tuple(f"R{start + k:04d}-{sources[j]}" for k, j in enumerate(src))
    assert load.shape == pv.shape == (n_new, s, HOURS)
    return Scenarios(ids, scenarios.days, scenarios.probability, load, pv)
