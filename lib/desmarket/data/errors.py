"""The one error of the data layer: bad input data, naming the file, the home and the time."""

from __future__ import annotations

from ..case import CaseError


class DataError(CaseError):
    """Input data is unusable. The message names file, home, time (and column), and says how to fix it.

    A subclass of :class:`desmarket.CaseError`, so ``except CaseError`` catches every input problem.
    """

    def __init__(self, file: str, problem: str, fix: str, *, home=None, time=None, column: str | None = None):
        self.home, self.time = home, time
        parts = ([f"home '{home}'"] if home is not None else []) + ([f"time {time}"] if time is not None else [])
        super().__init__(str(file), problem, fix, column=column, row=", ".join(parts) or None)
