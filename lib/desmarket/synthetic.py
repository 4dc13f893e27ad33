"""Seeded random communities for tests, property checks and benchmarks (not measured data).

The measured homes of the study are built by :mod:`desmarket.data`; this module only makes plausible,
reproducible shapes: an evening-peaked load, a bell-shaped PV curve, a day-peaked LMP.
"""

from __future__ import annotations

import numpy as np

from .case import HOURS, Case, create_case

_HOURS = np.arange(HOURS)
SOLAR_SHAPE = np.clip(np.sin((_HOURS - 6) / 13 * np.pi), 0, None)  # sunrise 6:00, sunset 19:00
LOAD_SHAPE = 1 + 0.45 * np.cos((_HOURS - 19) / HOURS * 2 * np.pi)  # evening peak, mean 1
LMP_SHAPE = 1 + 0.5 * np.clip(np.sin((_HOURS - 6) / 16 * np.pi), 0, None)  # day peak


def random_case(
    seed: int,
    n_homes: int = 4,
    n_scenarios: int = 2,
    *,
    idle_home: bool = False,
    equal_batteries: bool = False,
    mean_lmp: float = 0.035,
) -> Case:
    """A random community of ``n_homes`` x ``n_scenarios``, reproducible from ``seed``.

    Loads 0.3-1.5 kW on average, PV 0-5 kWp, batteries of 0, 6.4 or 13.5 kWh (all 13.5 kWh if
    ``equal_batteries``), utility coefficients drawn as in Section 3.1 (cents, written in $), LMP around
    ``mean_lmp`` $/kWh, random scenario probabilities. ``idle_home`` makes the last home consume and produce
    nothing, so it can never trade.
    """
    rng = np.random.default_rng(seed)
    n, s = n_homes, n_scenarios
    load = rng.uniform(0.3, 1.5, (n, 1, 1)) * LOAD_SHAPE * rng.uniform(0.75, 1.25, (n, s, HOURS))
    pv = rng.uniform(0.0, 5.0, (n, 1, 1)) * SOLAR_SHAPE * rng.uniform(0.6, 1.0, (n, s, HOURS))
    battery = np.full(n, 13.5) if equal_batteries else rng.choice([0.0, 6.4, 13.5], n)
    if idle_home:
        load[-1], pv[-1], battery[-1] = 0.0, 0.0, 0.0
    lmp = mean_lmp * LMP_SHAPE * rng.uniform(0.8, 1.2, HOURS)
    return create_case(
        load,
        pv,
        utility_a=-rng.uniform(0.1, 0.5, n) / 100,  # cents/kWh^2 -> $/kWh^2 (MODEL.md [choice])
        utility_b=rng.uniform(20.0, 50.0, n) / 100,  # cents/kWh -> $/kWh
        lmp=lmp,
        probability=rng.dirichlet(np.full(s, 2.0)),
        battery_kwh=battery,
    )


def infeasible_case(n_homes: int = 1) -> Case:
    """The smallest infeasible community: ``n_homes`` homes of 5 kW fixed-shape load, no PV, no battery, behind a
    1 kW connection (Eq. 7 cannot meet Eq. 9). For the tests of every method's and the runner's infeasible path."""
    return create_case(
        np.full((n_homes, 1, HOURS), 5.0),
        np.zeros((n_homes, 1, HOURS)),
        utility_a=0.0,
        utility_b=0.3,
        lmp=np.full(HOURS, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
        grid_limit_kw=1.0,
    )
