"""Where the market's night import peak comes from: the day's end state of storage (issue 19, "the horizon").

The paper's storage ends the day where it started (Eq. 15, E_23 = E0). A 24-hour horizon with that rule can
manufacture a result: batteries that sell into the evening peak must refill before midnight, whatever the
night prices. :func:`storage_end_comparison` solves M1 and the clearing of one case both ways, with Eq. 15 and
with a daily cycle (the day starts and ends at the same state, chosen by the optimum within [E_min, E_max];
:func:`desmarket.formulation.formulate`, ``cyclic_storage``), and reports the community's peak import, its hour,
what is imported in the last hour, ΔC and the storage throughput, so the cause is measured, not assumed.
Solved as one problem (the central method, Clarabel): meant for the paper's 10 homes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .case import Case
from .model import DEFAULT_SOLVER, Operation, build_clearing, build_independent, read_operation, solve
from .settlement import cooperative_surplus

#: The two end-of-day rules compared: the paper's Eq. 15 and a daily cycle.
STORAGE_END_RULES = {"fixed end state (Eq. 15)": False, "daily cycle": True}


def _solved(case: Case, build, cyclic: bool, solver: str) -> Operation:
    problem, handles = build(case, cyclic_storage=cyclic)
    solve(problem, solver)
    return read_operation(case, problem, handles, solver=solver)


def expected_import(case: Case, op: Operation) -> np.ndarray:
    """(T,) the community's expected import from the main grid per hour, kW (sum of the homes' net load)."""
    return np.einsum("s,nst->t", case.probability, op.net_load)


def throughput(case: Case, op: Operation) -> float:
    """Expected storage throughput, sum of charge and discharge over homes and hours, kWh per day."""
    return float(np.einsum("s,nst->", case.probability, op.charge + op.discharge))


def storage_end_comparison(case: Case, solver: str = DEFAULT_SOLVER) -> pd.DataFrame:
    """One row per end-of-day rule (:data:`STORAGE_END_RULES`): ΔC ($/day, Eq. 20), the market's and M1's peak
    expected import (kW) and its hour (hour beginning), the rank of the LMP in the market's peak hour among the
    day's hours (0: the cheapest hour, 23: the dearest), the market's import in the last hour (kW), and the
    storage throughput with the market and its change against M1 (%)."""
    rows = []
    for rule, cyclic in STORAGE_END_RULES.items():
        m1 = _solved(case, build_independent, cyclic, solver)
        market = _solved(case, build_clearing, cyclic, solver)
        before, after = expected_import(case, m1), expected_import(case, market)
        rows.append(
            {
                "rule": rule,
                "surplus_usd": cooperative_surplus(m1, market, case=case),
                "market_peak_import_kw": float(after.max()),
                "market_peak_hour": int(after.argmax()),
                "market_peak_lmp_rank": int(
                    np.argsort(np.argsort(case.lmp, kind="stable"), kind="stable")[after.argmax()]
                ),
                "m1_peak_import_kw": float(before.max()),
                "m1_peak_hour": int(before.argmax()),
                "peak_import_change_pct": 100.0 * (after.max() / before.max() - 1.0),
                "market_import_last_hour_kw": float(after[-1]),
                "storage_throughput_kwh": throughput(case, market),
                "storage_change_pct": 100.0 * (throughput(case, market) / throughput(case, m1) - 1.0),
            }
        )
    return pd.DataFrame(rows).set_index("rule")
