"""The paper case built from the committed measured data: solver independence and the mechanism's promises."""

import warnings

import numpy as np
import pytest

import desmarket as dm
from desmarket import data, report


@pytest.fixture(scope="module")
def study():
    case = data.build_case()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        return report.run_study(case, 0.2)


def test_second_solver_gives_the_same_per_home_answers(study):
    """MODEL.md "Uniqueness": Clarabel and SCS agree on home costs, alpha and Delta C within 1e-3."""
    agreement = report.solver_agreement(study.case, study)
    assert agreement["agree"].all(), agreement


def test_paper_case_settlement_promises(study):
    s = study
    assert s.m3.surplus > 0
    assert s.m2.alpha == pytest.approx(np.full(10, 0.08))
    assert s.m3.alpha.sum() == pytest.approx(0.8)
    assert np.all(s.m3.home_gain > 0) and np.all(s.m2.home_gain > 0)
    assert s.m3.aggregator_gain == pytest.approx(0.2 * s.m3.surplus)
    table4 = report.table4_costs(s)
    # the market lowers the total cost; payments only move it between parties
    assert table4.loc["total", "M2"] == pytest.approx(table4.loc["total", "market_before_payment"])
    assert table4.loc["total", "M3"] < table4.loc["total", "M1"]


def test_paper_case_operation_invariants(study):
    case, mk = study.case, study.market
    assert np.all(mk.price >= case.sell_price - 1e-6) and np.all(mk.price <= case.buy_price + 1e-6)
    assert np.abs(mk.trade.sum(axis=0)).max() < 1e-9
    e0 = case.column("battery_kwh") * case.column("soc_initial")
    assert mk.energy[:, :, -1] == pytest.approx(np.broadcast_to(e0[:, None], mk.energy.shape[:2]), abs=1e-6)
