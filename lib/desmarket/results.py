"""The record of one run: a case, its M1, its clearing and the two settlements (M2, M3).

A plain result type below the study layer, so that the tables (:mod:`desmarket.report`) and the studies
(:mod:`desmarket.study`, :mod:`desmarket.year`, :mod:`desmarket.sizes`) can all use it and the imports stay
one-way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .case import Case
from .model import Operation
from .settlement import Settlement, settle


@dataclass(frozen=True)
class Study:
    """Everything one run computes: the case, M1, the clearing and the two settlements (M2, M3)."""

    case: Case
    independent: Operation
    market: Operation
    m2: Settlement
    m3: Settlement

    @property
    def profit_rate(self) -> float:
        return self.m3.profit_rate


def settled_study(case: Case, independent: Operation, market: Operation, profit_rate: float) -> Study:
    """A :class:`Study` of two solved operations, settled under M2 (equal, Eq. 29) and M3 (contribution, Eq. 30)."""
    return Study(
        case,
        independent,
        market,
        settle(case, independent, market, profit_rate, "equal"),
        settle(case, independent, market, profit_rate, "contribution"),
    )
