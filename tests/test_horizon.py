"""The horizon study (issue 19): Eq. 15's fixed end state against a daily storage cycle (desmarket.horizon)."""

import numpy as np
import pytest

import desmarket as dm
from desmarket import horizon, model
from desmarket.synthetic import random_case

pytestmark = pytest.mark.usefixtures("quiet_routing")


def _solve(case, build, cyclic):
    problem, handles = build(case, cyclic_storage=cyclic)
    value = model.solve(problem, "CLARABEL")
    return value, handles


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("build", [model.build_independent, model.build_clearing], ids=["M1", "clearing"])
def test_a_daily_cycle_relaxes_eq_15_and_closes_the_day(seed, build):
    case = random_case(seed, n_homes=3, n_scenarios=2)
    fixed, h_fixed = _solve(case, build, False)
    cycle, h_cycle = _solve(case, build, True)
    assert cycle <= fixed + 1e-7  # Eq. 15's end state is one daily cycle among many
    e0 = (case.column("battery_kwh") * case.column("soc_initial")).repeat(case.n_scenarios)
    assert np.allclose(h_fixed.E.value[:, -1], e0, atol=1e-6)  # Eq. 15
    E = h_cycle.E.value
    cap = case.column("battery_kwh").repeat(case.n_scenarios)
    lo, hi = (
        cap * case.column("soc_min").repeat(case.n_scenarios),
        cap * case.column("soc_max").repeat(case.n_scenarios),
    )
    assert np.all(E[:, -1] >= lo - 1e-6) and np.all(E[:, -1] <= hi + 1e-6)


def test_the_cycle_returns_to_its_start():
    """With a cycle the first hour starts from the state the last hour ends in (E_{-1} = E_23)."""
    case = random_case(1, n_homes=2, n_scenarios=1)
    problem, h = model.build_clearing(case, cyclic_storage=True)
    model.solve(problem, "CLARABEL")
    start = next(v for v in problem.variables() if v.name() == "energy_start").value[:, 0]
    eta_c, eta_d = case.column("eta_charge"), case.column("eta_discharge")
    first = start + eta_c * h.c.value[:, 0] - h.e.value[:, 0] / eta_d  # Eq. 13 in hour 0
    assert np.allclose(h.E.value[:, 0], first, atol=1e-6) and np.allclose(h.E.value[:, -1], start, atol=1e-6)


def test_the_comparison_with_eq_15_is_the_central_method():
    case = random_case(2, n_homes=3, n_scenarios=2)
    table = horizon.storage_end_comparison(case)
    assert list(table.index) == list(horizon.STORAGE_END_RULES)
    m1 = dm.solve_independent(case, method="central")
    market = dm.clear_market(case, method="central")
    fixed = table.iloc[0]
    assert fixed.surplus_usd == pytest.approx(dm.cooperative_surplus(m1, market), abs=1e-9)
    imports = np.einsum("s,nst->t", case.probability, market.net_load)
    assert fixed.market_peak_import_kw == pytest.approx(imports.max()) and fixed.market_peak_hour == imports.argmax()
    assert fixed.market_import_last_hour_kw == pytest.approx(imports[-1])


def test_a_day_of_the_year_is_the_comparison_of_its_case():
    from desmarket import data, year

    measured = data.load_measured_homes()
    row = year.day_horizon("2017-06-14", measured, n_homes=3, n_scenarios=2)
    case = data.build_case(n_homes=3, n_scenarios=2, date="2017-06-14", measured=measured)
    table = horizon.storage_end_comparison(case)
    for rule, prefix in year.HORIZON_PREFIX.items():
        for column in year.HORIZON_COLUMNS:
            assert row[prefix + column] == pytest.approx(table.loc[rule, column])
    assert 0 <= row["cycle_market_peak_lmp_rank"] <= 23


def test_the_year_summary_counts_days_by_hand():
    import pandas as pd

    from desmarket import year

    cols = {p + c: [0.0, 0.0, 0.0] for p in year.HORIZON_PREFIX.values() for c in year.HORIZON_COLUMNS}
    frame = pd.DataFrame({"status": ["ok", "ok", "failed"], **cols})
    frame["fixed_market_peak_hour"] = [23, 5, 23]  # the failed day does not count
    frame["fixed_peak_import_change_pct"] = [10.0, -5.0, 99.0]
    frame["cycle_market_peak_lmp_rank"] = [0, 12, 0]
    summary = year.horizon_summary(frame)
    fixed, cycle = summary.iloc[0], summary.iloc[1]
    assert fixed["days"] == 2 and fixed["share_of_days_peak_in_last_hour"] == 0.5
    assert fixed["share_of_days_peak_raised"] == 0.5
    assert cycle["share_of_days_peak_in_6_cheapest_hours"] == 0.5
