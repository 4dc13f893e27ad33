"""The data layer: measured homes, price sources, similar-day scenarios, loaders, and the case builder.

Measured homes:  :func:`load_measured_homes` (CityLearn 2022: 17 homes in Fontana, California, Aug 2016 -
                 Jul 2017; committed extract in data/raw, rebuilt by ``make data``), :func:`load_pecanstreet`
Bad data:        :func:`day_flags`, :func:`home_quality` (rules in :mod:`desmarket.data.measured`)
Scenarios:       :func:`similar_days`, :func:`build_scenarios`, :func:`resample_homes`
Price sources:   :func:`price_source` (``ercot-2022`` = :data:`DEFAULT_PRICES`, ``ercot-2021``, ``pjm-like``, or a
                 PJM Data Miner 2 file), :class:`PriceSource`, :data:`PRICE_SOURCES`
Prices:          :func:`synthetic_lmp` (parameters :data:`LMP_MODEL`, cited levels :data:`PJM_ANNUAL_MEAN_LMP`),
                 :func:`load_pjm_lmps`, :func:`lmp_for_date`, :func:`compare_lmp`;
                 real ERCOT day-ahead 2021-2022 (Austin LZ_AEN, HB_HUBAVG): :func:`load_ercot`, :func:`ercot_day`,
                 :func:`ercot_day_for`, :func:`ercot_statistics`
Cases:           :func:`build_case`, :data:`PAPER_DATE`, :func:`paper_homes`, :func:`usable_homes`
See data/README.md for provenance, units and every rule.
"""

from .build import PAPER_DATE, PAPER_HOMES, build_case, paper_homes, usable_homes, utility_coefficients
from .citylearn import CITYLEARN_TZ, load_measured_homes, raw_data_dir
from .ercot import ERCOT_POINTS, ERCOT_TZ, ERCOT_YEARS, ercot_day, ercot_day_for, ercot_statistics, load_ercot
from .errors import DataError
from .measured import (
    DAY_FLAGS,
    MEASURED_COLUMNS,
    QUALITY,
    QualityRules,
    daily_profiles,
    day_flags,
    home_quality,
    ranked_homes,
    weekday_class,
)
from .pecanstreet import load_pecanstreet
from .prices import (
    LMP_MODEL,
    PJM_ANNUAL_MEAN_LMP,
    PJM_TZ,
    LmpModel,
    compare_lmp,
    lmp_for_date,
    lmp_statistics,
    load_pjm_lmps,
    synthetic_lmp,
)
from .scenarios import Scenarios, build_scenarios, resample_homes, resampled_homes, scenario_pool, similar_days
from .sources import DEFAULT_PRICES, PRICE_SOURCES, PriceSource, price_source

__all__ = [
    "DEFAULT_PRICES",
    "PRICE_SOURCES",
    "PriceSource",
    "price_source",
    "ERCOT_POINTS",
    "ERCOT_TZ",
    "ERCOT_YEARS",
    "ercot_day",
    "ercot_day_for",
    "ercot_statistics",
    "load_ercot",
    "CITYLEARN_TZ",
    "DAY_FLAGS",
    "LMP_MODEL",
    "MEASURED_COLUMNS",
    "PAPER_DATE",
    "PAPER_HOMES",
    "PJM_ANNUAL_MEAN_LMP",
    "PJM_TZ",
    "QUALITY",
    "DataError",
    "LmpModel",
    "QualityRules",
    "Scenarios",
    "build_case",
    "build_scenarios",
    "compare_lmp",
    "daily_profiles",
    "day_flags",
    "home_quality",
    "lmp_for_date",
    "lmp_statistics",
    "load_measured_homes",
    "load_pecanstreet",
    "load_pjm_lmps",
    "paper_homes",
    "ranked_homes",
    "raw_data_dir",
    "resample_homes",
    "resampled_homes",
    "scenario_pool",
    "similar_days",
    "synthetic_lmp",
    "usable_homes",
    "utility_coefficients",
    "weekday_class",
]
