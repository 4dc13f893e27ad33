"""The one error of the data layer and the kinds of a day without a case (defined in :mod:`desmarket.errors`,
re-exported here)."""

from ..errors import (
    DAY_OUTSIDE_DATA,
    DAYLIGHT_SAVING_DAY,
    DAYLIGHT_SAVING_PRICE_DAY,
    FEW_SIMILAR_DAYS,
    NO_CLEAN_HOME,
    PRICE_DAY_OUTSIDE_DATA,
    DataError,
)

__all__ = [
    "DAY_OUTSIDE_DATA",
    "DAYLIGHT_SAVING_DAY",
    "DAYLIGHT_SAVING_PRICE_DAY",
    "FEW_SIMILAR_DAYS",
    "NO_CLEAN_HOME",
    "PRICE_DAY_OUTSIDE_DATA",
    "DataError",
]
