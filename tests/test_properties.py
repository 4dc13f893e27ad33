"""Property tests (hypothesis): the invariants of MODEL.md on random communities, including binding connection
and trade limits, no batteries, k^b = k^s, linear utility (a = 0) and single homes.

Every quantity is checked against values recomputed here from the dispatch arrays and the case's prices, or
against the solver's own objective, never against the library's closed forms. A fixed profile (derandomized,
a fixed number of examples) keeps the test deterministic and fast enough for CI.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import desmarket as dm
from desmarket.synthetic import random_case

PROFILE = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
KW, USD, PRICE = 1e-5, 1e-6, 1e-6


@st.composite
def communities(draw):
    """A random case and trade limit: sizes 1-4 homes x 1-2 scenarios, and the edge cases of the issue."""
    n, s = draw(st.integers(1, 4)), draw(st.integers(1, 2))
    case = random_case(draw(st.integers(0, 10_000)), n_homes=n, n_scenarios=s)
    changes = {"grid_limit_kw": draw(st.sampled_from([10.0, 4.0, 2.5]))}
    if draw(st.booleans()):
        changes.update(battery_kwh=0.0, battery_kw=0.0)
    if draw(st.booleans()):
        changes["utility_a"] = 0.0  # linear utility
    market = {"buy_ratio": 1.0, "sell_ratio": 1.0} if draw(st.booleans()) else None
    return case.replace(market=market, **changes), draw(st.sampled_from([None, 2.0, 0.5]))


def _solve(case, trade_limit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        try:
            return dm.solve_independent(case, n_jobs=1), dm.clear_market(case, trade_limit=trade_limit, n_jobs=1)
        except dm.InfeasibleCaseError:
            reject()


def _expect(case, values):
    return np.einsum("s,nst->n", case.probability, values)


def _utility(case, op):
    a, b = case.column("utility_a")[:, None, None], case.column("utility_b")[:, None, None]
    return _expect(case, a * op.load**2 + b * op.load)


def _wholesale(case, op):
    """Cost of the community's grid flows at the wholesale prices, $ per day (Eqs. 1-5 with retail cancelled)."""
    pl, ps = op.net_load.sum(axis=0), op.net_surplus.sum(axis=0)
    return float(case.probability @ (case.buy_price * pl - case.sell_price * ps).sum(axis=1))


@PROFILE
@given(communities())
def test_operations_are_feasible_and_costed_at_their_optimum(community):
    case, trade_limit = community
    m1, mk = _solve(case, trade_limit)
    x_bar = case.column("grid_limit_kw") if trade_limit is None else np.full(case.n_homes, trade_limit)
    grid = case.column("grid_limit_kw")[:, None, None]
    e0 = (case.column("battery_kwh") * case.column("soc_initial"))[:, None]
    for op in (m1, mk):
        n = op.load + op.charge - op.discharge - op.pv_used
        assert np.abs(op.net_load - op.net_surplus - n - op.trade).max() < KW  # Eqs. 6 / 17
        assert np.all(op.pv_used <= case.pv + KW) and np.all(op.pv_used >= -KW)  # Eq. 8
        assert np.all(op.load.sum(axis=2) >= case.load.sum(axis=2) - KW)  # Eq. 10
        assert op.energy[:, :, -1] == pytest.approx(np.broadcast_to(e0, op.energy.shape[:2]), abs=KW)  # Eq. 15
    assert np.abs(mk.trade.sum(axis=0)).max() < KW  # Eq. 18
    if mk.over_limit_kw == 0:  # otherwise a RoutingWarning said which booked flow exceeds its limit
        assert np.all(np.abs(mk.trade) <= x_bar[:, None, None] + KW) and np.all(mk.net_load <= grid + KW)
    # the booked flows (after the tie-break) cost exactly what the solver optimised, RoutingWarning or not
    retail_bill = _expect(case, m1.net_load * case.retail) - case.market.net_metering_usd_per_kwh * _expect(
        case, m1.net_surplus
    )
    assert (retail_bill - _utility(case, m1)).sum() == pytest.approx(m1.objective - m1.regularization_cost, abs=USD)
    assert _wholesale(case, mk) - _utility(case, mk).sum() == pytest.approx(
        mk.objective - mk.regularization_cost, abs=USD
    )


@PROFILE
@given(communities())
def test_prices_lie_in_the_band_unless_congested(community):
    case, trade_limit = community
    _, mk = _solve(case, trade_limit)
    sell, buy = np.broadcast_to(case.sell_price, mk.price.shape), np.broadcast_to(case.buy_price, mk.price.shape)
    calm = ~mk.congested
    assert np.all(mk.price[calm] >= sell[calm] - PRICE) and np.all(mk.price[calm] <= buy[calm] + PRICE)
    pinned = ~mk.congested & ~mk.balanced
    at_a_bound = np.minimum(np.abs(mk.price - buy), np.abs(mk.price - sell))
    assert np.all(at_a_bound[pinned] <= PRICE)
    assert not np.any(mk.congested & mk.balanced)


@PROFILE
@given(communities(), st.sampled_from([0.0, 0.2, 0.7]))
def test_settlement_shares_the_surplus_as_promised(community, rho):
    case, trade_limit = community
    m1, mk = _solve(case, trade_limit)
    coalition_before = m1.home_cost.sum() - m1.aggregator_revenue
    coalition_after = _wholesale(case, mk) - _utility(case, mk).sum()
    surplus = coalition_before - coalition_after
    floor = min(mk.regularization_cost - m1.regularization_cost, 0.0) - USD
    assert surplus >= floor  # Eq. 20: M1's operation is feasible for the clearing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RegularizationWarning)
        rules = ["equal"] + (["contribution"] if mk.traded_energy.sum() > 1e-6 else [])
        for rule in rules:
            try:
                st_ = dm.settle(case, m1, mk, rho, rule)
            except dm.NoTradeError:  # trades whose value is below CONTRIBUTION_TOLERANCE
                continue
            assert st_.surplus == pytest.approx(surplus, abs=USD)
            assert st_.home_cost.sum() - st_.aggregator_revenue == pytest.approx(coalition_after, abs=USD)
            assert st_.home_cost == pytest.approx(m1.home_cost - st_.alpha * surplus, abs=USD)  # Eq. 27
            assert st_.aggregator_revenue == pytest.approx(m1.aggregator_revenue + rho * surplus, abs=USD)
            assert st_.alpha.sum() == pytest.approx(1 - rho, abs=1e-12) and np.all(st_.alpha >= 0)
            if rule == "contribution":
                value = np.einsum("s,st,nst->n", case.probability, mk.price, np.abs(mk.trade))
                assert st_.alpha == pytest.approx((1 - rho) * value / value.sum(), abs=1e-6)
