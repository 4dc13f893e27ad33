"""The paper case built from the committed measured data: solver independence and the mechanism's promises."""

import warnings

import numpy as np
import pytest

import desmarket as dm
from desmarket import data, report
from desmarket import study as studies


@pytest.fixture(scope="module")
def case():
    return data.build_case()


@pytest.fixture(scope="module", params=dm.METHODS)
def study(request, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        return studies.run_study(case, 0.2, method=request.param)


def test_second_solver_gives_the_same_per_home_answers(study):
    """MODEL.md "Uniqueness": the study's solver and SCS agree on home costs, alpha and Delta C within 1e-3."""
    if study.market.method == "coordinated":  # its reference is the exact clearing, at the tolerances
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dm.RoutingWarning)
            exact = studies.run_study(study.case, 0.2, method="decomposed")
        assert study.m3.home_gain == pytest.approx(exact.m3.home_gain, abs=1e-3)
        assert study.m3.alpha == pytest.approx(exact.m3.alpha, abs=1e-3)
        assert study.m3.surplus == pytest.approx(exact.m3.surplus, rel=1e-3)
        pinned = ~exact.market.balanced
        assert study.market.price[pinned] == pytest.approx(exact.market.price[pinned], abs=1e-4)
        return
    agreement = studies.solver_agreement(studies.Workbench(study.case), study)
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
    assert mk.method == study.independent.method
    assert np.abs(mk.trade.sum(axis=0)).max() < 1e-9
    e0 = case.column("battery_kwh") * case.column("soc_initial")
    assert mk.energy[:, :, -1] == pytest.approx(np.broadcast_to(e0[:, None], mk.energy.shape[:2]), abs=1e-6)
