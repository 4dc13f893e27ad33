"""The one error of the data layer (defined in :mod:`desmarket.errors`, re-exported here)."""

from ..errors import DataError

__all__ = ["DataError"]
