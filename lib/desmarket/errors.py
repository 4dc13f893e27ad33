"""The one family of errors and warnings of desmarket.

Every error the library raises on purpose is a :class:`DesmarketError`, so a caller (the CLI, the year and size
studies, the engine, a user's script) catches by class, never by words in a message::

    DesmarketError
    ├── CaseError (also a ValueError)          bad input: names the file, column, row and the fix
    │   └── DataError                           bad measured data: names the file, home and time
    ├── SolverError (also a RuntimeError)       a solve did not return an optimal solution
    │   ├── InfeasibleCaseError                 the case has no feasible operation (names the homes)
    │   └── NotConvergedError                   the market process did not meet its tolerances
    │       └── UnansweredError                 homes stopped answering the market process (names them)
    ├── NoTradeError (also a ValueError)        nobody trades, so the contribution rates (Eq. 22) are undefined
    ├── MismatchError (also a ValueError)       a result is given with a case it was not solved on
    └── OutputError (also an OSError)           a result folder cannot be written (names the path)

Warnings are :class:`DesmarketWarning` with a machine-readable ``kind``.

This module imports nothing from the package: every layer may import it.
"""

from __future__ import annotations

import contextlib
import warnings


class DesmarketError(Exception):
    """Base of every error desmarket raises on purpose; its message says what is wrong and how to fix it."""


class CaseError(DesmarketError, ValueError):
    """A case directory or case data is invalid. The message names file, column, row and the fix."""

    def __init__(self, file: str, problem: str, fix: str, column: str | None = None, row: str | None = None):
        self.file, self.column, self.row, self.problem, self.fix = file, column, row, problem, fix
        where = file + (f", column '{column}'" if column else "") + (f", {row}" if row else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")

    def __reduce__(self):  # picklable across joblib/Dask workers with its fields
        return (type(self), (self.file, self.problem, self.fix, self.column, self.row))


class DataError(CaseError):
    """Input data is unusable. The message names file, home, time (and column), and says how to fix it.

    A subclass of :class:`CaseError`, so ``except CaseError`` catches every input problem.
    """

    def __init__(
        self,
        file: str,
        problem: str,
        fix: str,
        *,
        home=None,
        time=None,
        column: str | None = None,
        kind: str | None = None,
    ):
        self.home, self.time, self.kind = home, time, kind
        parts = ([f"home '{home}'"] if home is not None else []) + ([f"time {time}"] if time is not None else [])
        super().__init__(str(file), problem, fix, column=column, row=", ".join(parts) or None)

    def __reduce__(self):
        return (_data_error, (self.file, self.problem, self.fix, self.home, self.time, self.column, self.kind))


def _data_error(file, problem, fix, home, time, column, kind=None):
    return DataError(file, problem, fix, home=home, time=time, column=column, kind=kind)


#: Machine-readable kinds of a day without a case (``DataError.kind``; :func:`failure_kind`), as the per-day
#: tables' ``failure`` column names them.
DAY_OUTSIDE_DATA = "outside the data"
DAYLIGHT_SAVING_DAY = "daylight-saving day"
NO_CLEAN_HOME = "no home clean that day"
FEW_SIMILAR_DAYS = "too few clean similar days"
DAYLIGHT_SAVING_PRICE_DAY = "daylight-saving price day"
PRICE_DAY_OUTSIDE_DATA = "price day outside the data"


class SolverError(DesmarketError, RuntimeError):
    """The solver did not return an optimal solution; the message says what to check.

    ``status`` is the solver's cvxpy status (``"infeasible"``, ``"optimal_inaccurate"``, ...), or None where the
    solver itself failed: callers tell an infeasible problem by it (``desmarket.model.INFEASIBLE_STATUSES``),
    never by the message.
    """

    def __init__(self, message: str = "", status: str | None = None):
        super().__init__(message)
        self.status = status

    def __reduce__(self):
        return (type(self), (str(self), self.status))


class InfeasibleCaseError(SolverError):
    """The case has no feasible operation: the message names the homes, where and why, and the fix.

    A :class:`SolverError`, so code that catches solver failures catches it too.
    """


class NotConvergedError(SolverError):
    """The coordinated market process did not meet its tolerances within the iteration limit.

    ``convergence`` holds the iterations run (the same table as ``Operation.convergence``).
    """

    def __init__(self, message: str, convergence=None):
        super().__init__(message)
        self.convergence = convergence

    def __reduce__(self):
        return (type(self), (str(self), self.convergence))


class UnansweredError(NotConvergedError):
    """Homes did not answer the coordinated market process for ``rounds`` rounds in a row (their messages were
    lost): the process stops rather than settle on schedules those homes never confirmed.

    ``home_ids`` lists them; ``convergence`` holds the iterations run.
    """

    def __init__(self, home_ids, rounds: int, convergence=None):
        self.home_ids, self.rounds = tuple(str(h) for h in home_ids), int(rounds)
        shown = ", ".join(self.home_ids[:20]) + (
            f" and {len(self.home_ids) - 20} more" if len(self.home_ids) > 20 else ""
        )
        super().__init__(
            f"the coordinated market process stopped: {len(self.home_ids)} home(s) did not answer for {self.rounds} "
            f"rounds in a row: {shown}. Fix: check those homes' controllers and links, or raise "
            "Coordination(max_unanswered=...); method='decomposed' gives the exact clearing.",
            convergence,
        )

    def __reduce__(self):
        return (type(self), (self.home_ids, self.rounds, self.convergence))


class NoTradeError(DesmarketError, ValueError):
    """Contribution rates (Eq. 22) are undefined: no home trades in the local market."""


class MismatchError(DesmarketError, ValueError):
    """A result (an :class:`~desmarket.model.Operation`) is used with a case it was not solved on."""


class OutputError(DesmarketError, OSError):
    """A result folder or file cannot be written; the message names the path and the fix."""


class DesmarketWarning(UserWarning):
    """Base of desmarket's warnings; ``kind`` names the warning for code that filters or counts them."""

    kind = "desmarket"


class RoutingWarning(DesmarketWarning):
    """Pro-rata accounting (MODEL.md, "Uniqueness") books a flow above a home's grid or trade limit.

    The operation and the community totals are optimal and feasible; the solver met the limits by routing
    energy through other homes' connections, which pro-rata matching does not do. The per-home accounting
    then follows the rule of MODEL.md and the excess is reported in ``Operation.over_limit_kw``.
    """

    kind = "routing"


class RegularizationWarning(DesmarketWarning):
    """The tie-break term costs more than a share of Delta C (``settlement.REGULARIZATION_SHARE``): epsilon may
    move the answer."""

    kind = "regularization"


#: Errors that a study (year, sizes, sensitivity) records as a row with its reason instead of stopping.
CASE_FAILURES = (CaseError, SolverError, NoTradeError)


def failure_kind(exc: BaseException) -> str:
    """The short kind of a failed case, by the error's class and its ``kind`` field, never its message: a
    :class:`DataError`'s ``kind`` (the constants above) where it has one, ``infeasible``, ``not converged``,
    ``no trade``, ``solver failed`` (any other solver status), or ``other``."""
    kind = getattr(exc, "kind", None)
    if kind:
        return str(kind)
    for cls, kind in (
        (InfeasibleCaseError, "infeasible"),
        (NotConvergedError, "not converged"),
        (NoTradeError, "no trade"),
        (SolverError, "solver failed"),
    ):
        if isinstance(exc, cls):
            return kind
    return "other"


def failure_reason(exc: BaseException) -> str:
    """The full reason of a failed case, as every study keeps it in its tables: the error's type and message."""
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def quiet_warnings():
    """Many cases in a row: the tie-break's RoutingWarning and RegularizationWarning are not repeated per case."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesmarketWarning)
        yield
