"""Build a case (the foundation's directory format) from measured homes, scenarios and prices.

``build_case()`` with no argument is the paper case: the 10 best-ranked valid CityLearn homes (Fontana,
California), 10 similar-day scenarios of :data:`PAPER_DATE`, the prices of :data:`DEFAULT_PRICES` (ERCOT
day-ahead LZ_AEN 2022, the day mapped onto :data:`PAPER_DATE`: Tue 2022-06-14; :mod:`desmarket.data.sources`),
the paper's TOU tariff, utility coefficients drawn as in Section 3.1, and the default battery and market
parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..case import DEFAULT_HOME, Case, Market, create_case, paper_retail_tariff
from .citylearn import load_measured_homes
from .errors import DAY_OUTSIDE_DATA, DAYLIGHT_SAVING_DAY, NO_CLEAN_HOME, DataError
from .measured import day_flags, home_quality, ranked_homes
from .prices import PJM_TZ, lmp_for_date
from .scenarios import Scenarios, build_scenarios, resample_homes
from .sources import CHOICES, DEFAULT_PRICES, PriceSource, price_source

#: The paper case's date: Tuesday 13 June 2017, a clear-sky summer weekday of the measured year. The paper
#: does not give its date. Summer, because then the homes have PV surplus to trade and PJM prices have
#: their afternoon peak (the paper discusses peak relief 8:00-20:00); a weekday, because the TOU tariff and
#: the LMP shape are weekday ones; clear sky, so the target day is a typical sunny day (the paper homes'
#: PV that day is 98 % of the best June day); mid-week and far from a holiday; and June 2017 has 22 clean
#: weekdays for the similar-day scenarios.
PAPER_DATE = "2017-06-13"
PAPER_HOMES = 10  # Section 3.1: 10 DESs

#: Section 3.1: U(d) = a d^2 + b d with a ~ U[-0.5, -0.1], b ~ U[20, 50], read as US cents
#: (MODEL.md [choice]); written to the case in $ (divided by 100).
UTILITY_A_CENTS = (-0.5, -0.1)  # cents/kWh^2
UTILITY_B_CENTS = (20.0, 50.0)  # cents/kWh


def utility_coefficients(n_homes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of n homes in $ (a in $/kWh^2, b in $/kWh), drawn in cents as in Section 3.1 and divided by 100.

    Home k's pair depends only on (seed, k): the first 10 homes are the same in a 10- and a 1,000-home case.
    """
    u = np.random.default_rng(np.random.SeedSequence([seed, 1])).random((n_homes, 2))
    a = UTILITY_A_CENTS[0] + (UTILITY_A_CENTS[1] - UTILITY_A_CENTS[0]) * u[:, 0]
    b = UTILITY_B_CENTS[0] + (UTILITY_B_CENTS[1] - UTILITY_B_CENTS[0]) * u[:, 1]
    return a / 100.0, b / 100.0


def paper_homes(measured: pd.DataFrame | None = None, n_homes: int = PAPER_HOMES) -> list[str]:
    """The homes of the paper case: the first ``n_homes`` valid homes by :func:`home_quality` rank
    (fewest days with load dropouts or PV outages, ties by id). For CityLearn: B01 B09 B10 B11 B13 B16 B17
    (no bad day), B02 B04 (one), B08 (two); invalid are B07, B12, B14, B15 (data/README.md).
    """
    measured = load_measured_homes() if measured is None else measured
    return ranked_homes(measured)[:n_homes]


def usable_homes(
    date=PAPER_DATE,
    measured: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
    quality: pd.DataFrame | None = None,
) -> list[str]:
    """Valid homes in rank order (:func:`paper_homes`) whose data are clean (no day flag) on ``date``.

    These are the measured homes :func:`build_case` takes, best first; a valid home with a bad target day
    is skipped, not repaired (for CityLearn on :data:`PAPER_DATE`: B06, whose load drops out that day).
    """
    measured = load_measured_homes() if measured is None else measured
    flags = day_flags(measured) if flags is None else flags
    quality = home_quality(measured, flags) if quality is None else quality
    date = pd.Timestamp(date).normalize()
    on_date = flags.xs(date, level="date") if date in flags.index.get_level_values("date") else None
    if on_date is None:
        dates = flags.index.get_level_values("date")
        raise DataError(
            "measured frame",
            f"the date {date.date()} is not in the data ({dates.min().date()} to {dates.max().date()})",
            "choose a date inside the measured period",
            time=date.date(),
            kind=DAY_OUTSIDE_DATA,
        )
    clean = set(on_date.index[~on_date["flagged"]])
    if not clean:
        if on_date["dst_change"].any():
            problem = (
                f"{date.date()} is a daylight-saving day: it has 23 or 25 local hours in the data, and the "
                "model's day has 24 (Eqs. 5-19 run over hours 0-23)"
            )
        else:
            problem = f"no measured home is complete and clean on {date.date()} ({on_date['reason'].iloc[0]})"
        raise DataError(
            "date",
            problem,
            "choose another target day (any other day of the same month works as "
            "well; the scenario days are drawn from it)",
            time=date.date(),
            kind=DAYLIGHT_SAVING_DAY if on_date["dst_change"].any() else NO_CLEAN_HOME,
        )
    return [h for h in ranked_homes(measured, quality) if h in clean]


def _lmp_usd_per_kwh(prices, date, seed: int, price_date=None) -> np.ndarray:
    """24 LMP values in $/kWh for home day ``date`` from ``prices``: a price source (a name, a PJM file's path or
    a :class:`PriceSource`, mapped by :meth:`PriceSource.lmp`; or exactly the day ``price_date`` of it), a (24,)
    array in $/MWh, or an hourly $/MWh Series with tz-aware index, whose day ``price_date`` (default ``date``) is
    taken by local clock hour in the series' time zone (``attrs["tz"]``, else the index's; a UTC index, as
    :func:`~desmarket.data.load_pjm_lmps` gives, is read in Eastern time)."""
    if isinstance(prices, PriceSource):
        source = prices
        if price_date is None:
            return source.lmp(date, seed)
        day = pd.Timestamp(price_date).normalize()
        if source.year is not None and day.year != source.year:
            raise DataError(
                "price_date",
                f"{day.date()} is not in the price year {source.year} of {source.name}",
                f"choose a day of {source.year}, or another price source: {CHOICES}",
                time=day.date(),
            )
        return source.day_lmp(day, seed)
    date = pd.Timestamp(date if price_date is None else price_date)
    if isinstance(prices, pd.DataFrame):
        if prices.shape[1] != 1:
            raise DataError("prices", f"a DataFrame with {prices.shape[1]} columns", "pass one LMP column ($/MWh)")
        prices = prices.iloc[:, 0]
    if isinstance(prices, pd.Series) and isinstance(prices.index, pd.DatetimeIndex):
        if prices.name == "price_usd_per_kwh":
            raise DataError(
                "prices",
                "a Series in $/kWh (load_ercot's)",
                "pass prices='ercot-2021' or 'ercot-2022' (the price source), or the Series times 1000 ($/MWh)",
            )
        tz = prices.attrs.get("tz") or (str(prices.index.tz) if prices.index.tz is not None else None)
        values = lmp_for_date(prices, date, PJM_TZ if tz in (None, "UTC") else tz)
    else:
        values = np.asarray(prices, dtype=float).reshape(-1)
        if values.shape != (24,):
            raise DataError("prices", f"{values.size} values", "pass 24 hourly LMPs in $/MWh, or an hourly Series")
    if np.all(np.abs(values) < 1.0):
        raise DataError(
            "prices",
            f"all LMPs are below 1 in size (max {np.abs(values).max():.4f}); they look like $/kWh",
            "pass LMPs in $/MWh (the data layer's unit); the case stores $/kWh",
        )
    return values / 1000.0


def _resolve(prices):
    """A price source given by name or path, resolved (and its data checked) before the homes are read."""
    if prices is None:
        raise DataError("prices", "None is not a price source", f"choose {CHOICES}")
    return price_source(prices) if isinstance(prices, (str, Path)) else prices


def _check_feasible(scen: Scenarios, grid_limit_kw, battery_kw, load_min_factor) -> None:
    """The lowest allowed load minus PV minus full discharge must fit through the connection (Eqs. 7, 9).

    Arguments broadcast against (N, S, 24).
    """
    need = load_min_factor * scen.load - scen.pv - battery_kw
    bad = np.argwhere(need > grid_limit_kw)
    if bad.size:
        i, s, t = bad[0]
        limit = float(np.broadcast_to(grid_limit_kw, need.shape)[i, s, t])
        raise DataError(
            "profiles",
            f"load {scen.load[i, s, t]:.2f} kW at hour {t} cannot be met within the {limit} kW connection",
            "raise grid_limit_kw or use smaller scale factors",
            home=scen.homes[i],
            time=f"{scen.ids[s]} hour {t}",
        )


def build_case(
    n_homes: int = PAPER_HOMES,
    n_scenarios: int = 10,
    date=PAPER_DATE,
    seed: int = 0,
    homes: Sequence[str] | None = None,
    prices=DEFAULT_PRICES,
    market: Market | None = None,
    measured: pd.DataFrame | None = None,
    price_date=None,
    **home_params,
) -> Case:
    """A validated :class:`desmarket.Case` from measured homes, similar-day scenarios and prices.

    n_homes:     community size. Up to the number of usable measured homes (:func:`usable_homes`: valid
                 and clean on ``date``; 12 for CityLearn on PAPER_DATE), the best-ranked ones
                 (:func:`paper_homes`); beyond, all of them plus resampled homes
                 (:func:`~desmarket.data.resample_homes`: a measured home's days with its own scale factors).
    n_scenarios: S similar days of ``date`` (:func:`~desmarket.data.similar_days`), equiprobable.
    date:        target day in the measured data (local calendar day); default :data:`PAPER_DATE`.
    seed:        one integer seeds everything random: scenario draw, resampled homes, utility coefficients,
                 and the LMP of ``pjm-like``. Same arguments, same case.
    homes:       explicit measured home ids (then n_homes is ignored).
    prices:      a price source (:func:`~desmarket.data.price_source`): ``"ercot-2022"`` (:data:`DEFAULT_PRICES`),
                 ``"ercot-2021"``, ``"pjm-like"`` (the seeded synthetic LMP of the home day, at the 2024 PJM
                 level), the path of a PJM Data Miner 2 ``da_hrl_lmps`` export, or a :class:`PriceSource`: the
                 home day ``date`` takes the prices of the same weekday nearest to its month and day in the
                 price year, hour by local clock hour (Central for ERCOT, Eastern for PJM); a mapped price day
                 of 23 or 25 hours, or outside the data, raises :class:`DataError` naming both days. Also a
                 (24,) array in $/MWh, or an hourly $/MWh Series with tz-aware index (e.g.
                 :func:`~desmarket.data.load_pjm_lmps`), whose local day ``price_date`` is taken.
    market:      :class:`desmarket.Market` (default ``Market()``).
    measured:    a measured frame (default the CityLearn homes; or :func:`~desmarket.data.load_pecanstreet`).
    price_date:  exactly the price day to take, instead of the mapped one (a price source; its year must be the
                 source's price year) or the day of a Series (default ``date``).
    home_params: overrides of :data:`desmarket.DEFAULT_HOME` (scalar or (N,)).
    Retail is :func:`desmarket.paper_retail_tariff`. Raises :class:`DataError` / :class:`CaseError`.
    """
    prices = _resolve(prices)
    measured = load_measured_homes() if measured is None else measured
    flags = day_flags(measured)
    quality = home_quality(measured, flags)
    if homes is not None:
        chosen = [str(h) for h in homes]
        unknown = [h for h in chosen if h not in quality.index]
        if unknown:
            raise DataError("homes", f"unknown homes {unknown}", f"use ids of the data: {list(quality.index)}")
        invalid = [h for h in chosen if not quality.loc[h, "valid"]]
        if invalid:
            h = invalid[0]
            raise DataError(
                "homes",
                f"fails the bad-data rules ({quality.loc[h, 'reason']})",
                "choose valid homes (home_quality(...)['valid'])",
                home=h,
            )
        n_extra = 0
    else:
        if n_homes < 1:
            raise DataError("n_homes", f"n_homes = {n_homes}", "ask for at least one home")
        ranked = usable_homes(date, measured, flags, quality)
        chosen = ranked[:n_homes]
        n_extra = max(n_homes - len(ranked), 0)
    seeds = np.random.SeedSequence(seed).generate_state(2)
    scen = build_scenarios(date, n_scenarios, int(seeds[0]), chosen, measured, flags)
    if n_extra:
        extra = resample_homes(scen, n_extra, int(seeds[1]), measured, flags)
        scen = Scenarios(
            scen.homes + extra.homes,
            scen.days,
            scen.probability,
            np.concatenate([scen.load, extra.load]),
            np.concatenate([scen.pv, extra.pv]),
        )
    params = {**DEFAULT_HOME, **home_params}
    _check_feasible(
        scen,
        *(
            np.broadcast_to(np.asarray(params[k], dtype=float), (len(scen.homes),))[:, None, None]
            for k in ("grid_limit_kw", "battery_kw", "load_min_factor")
        ),
    )
    utility_a, utility_b = utility_coefficients(len(scen.homes), seed)
    lmp = _lmp_usd_per_kwh(prices, date, seed, price_date)
    return create_case(
        scen.load,
        scen.pv,
        utility_a=utility_a,
        utility_b=utility_b,
        retail=paper_retail_tariff(),
        lmp=lmp,
        probability=scen.probability,
        home_ids=scen.homes,
        scenario_ids=scen.ids,
        market=market if market is not None else Market(),
        **params,
    )
