"""Which homes a case cannot serve, and why: checked before solving, so an infeasible case names its culprits.

Every check is a necessary condition of the model (Eqs. 6-19), vectorised over (home, scenario, hour); a case
that fails one is infeasible for certain, and the error names the homes, the first scenario and hour, the
numbers and the fix. A case that passes may still be infeasible through a combination of limits; then
:func:`infeasible_homes` solves each home's M1 alone (M1 separates by home) to name the homes.
"""

from __future__ import annotations

import numpy as np

from .case import Case
from .errors import InfeasibleCaseError, SolverError

#: Slack (kW or kWh) below which a shortfall is rounding, not infeasibility.
FEASIBILITY_TOLERANCE = 1e-6


def _hour_supply(case: Case, extra: np.ndarray) -> np.ndarray:
    """(N, S, T) most power a home can bring to its load in one hour, kW: grid + PV + battery (+ trades).

    Battery: at most battery_kw, and at most its usable energy (soc_max - soc_min) x kWh x eta_discharge.
    """
    col = case.column
    battery = np.minimum(
        col("battery_kw"), col("battery_kwh") * (col("soc_max") - col("soc_min")) * col("eta_discharge")
    )
    per_home = col("grid_limit_kw") + battery + extra
    return case.pv + per_home[:, None, None]


def check_feasible(case: Case, market: bool, trade_limit: np.ndarray | None = None) -> None:
    """Raise :class:`InfeasibleCaseError` where a home's minimum load cannot be met (M1, or the clearing).

    Hourly (Eqs. 7-9, 11-12, 17, 19): load_min_factor x D must fit under grid + PV + battery power, plus the
    trade limit x_bar in the market (another home may supply it). Daily (Eq. 10): the day's baseline energy
    must fit under the sum over hours of min(load_max_factor x D, that hourly supply).
    """
    extra = (
        np.zeros(case.n_homes)
        if not market
        else (case.column("grid_limit_kw") if trade_limit is None else np.asarray(trade_limit, dtype=float))
    )
    supply = _hour_supply(case, extra)
    need = case.column("load_min_factor")[:, None, None] * case.load
    short = need - supply
    mode = "in the market" if market else "without a market (M1)"
    where = "grid_limit_kw + PV + battery power" + (" + trade limit" if market else "")
    if np.any(short > FEASIBILITY_TOLERANCE):
        bad = short > FEASIBILITY_TOLERANCE
        i, s, t = np.argwhere(bad)[0]
        homes = [case.home_ids[k] for k in np.flatnonzero(bad.any(axis=(1, 2)))]
        raise InfeasibleCaseError(
            f"the case is infeasible: home '{case.home_ids[i]}' cannot be served {mode} in scenario "
            f"'{case.scenarios[s]}', hour {t}: its "
            f"minimum load (load_min_factor x load = {need[i, s, t]:.4g} kW) exceeds {where} "
            f"({supply[i, s, t]:.4g} kW) by {short[i, s, t]:.4g} kW; {int(bad.sum())} such hours, homes "
            f"{homes}. Fix: raise grid_limit_kw or the battery, lower load_min_factor, or check the load's units"
            + (
                "."
                if market
                else "; the clearing may still be feasible (neighbours can supply), but M1, the "
                "disagreement point of the settlement, is not, so there is nothing to settle."
            )
        )
    daily_max = np.minimum(case.column("load_max_factor")[:, None, None] * case.load, supply).sum(axis=2)
    gap = case.load.sum(axis=2) - daily_max
    if np.any(gap > FEASIBILITY_TOLERANCE):
        bad = gap > FEASIBILITY_TOLERANCE
        i, s = np.argwhere(bad)[0]
        homes = [case.home_ids[k] for k in np.flatnonzero(bad.any(axis=1))]
        raise InfeasibleCaseError(
            f"the case is infeasible: home '{case.home_ids[i]}' cannot be served {mode} in scenario "
            f"'{case.scenarios[s]}': its daily "
            f"baseline energy ({case.load[i, s].sum():.4g} kWh, Eq. 10) exceeds what load_max_factor and "
            f"{where} allow over the day ({daily_max[i, s]:.4g} kWh); homes {homes}. Fix: raise "
            "grid_limit_kw or load_max_factor, or check the load's units."
        )


def says_infeasible(exc: BaseException) -> bool:
    """Whether a solver error reports the problem infeasible: its cvxpy ``status`` (set by
    :func:`desmarket.model.solve`) is one of :data:`desmarket.model.INFEASIBLE_STATUSES`."""
    from .model import INFEASIBLE_STATUSES

    return isinstance(exc, SolverError) and getattr(exc, "status", None) in INFEASIBLE_STATUSES


def infeasible_homes(case: Case) -> list[str]:
    """Homes whose M1 alone is infeasible (solved one by one with the central model; M1 separates by home)."""
    from .model import central_independent

    culprits = []
    for home in case.home_ids:
        try:
            central_independent(case.select([home]))
        except SolverError as exc:
            if says_infeasible(exc):
                culprits.append(home)
    return culprits
