"""Value allocation: closed form vs numerical Nash bargaining, and the mechanism's promises on 200 instances."""

import dataclasses
import warnings

import numpy as np
import pytest
from conftest import METHOD_TOLERANCE

import desmarket as dm
from desmarket.synthetic import random_case

N_INSTANCES = 200
#: The coordinated process is iterative (about 100x slower per instance); its promises are checked on fewer.
N_COORDINATED = 12
RHOS = (0.0, 0.2, 0.55)


def _instance(seed, method):
    rng = np.random.default_rng(seed)
    case = random_case(
        seed,
        n_homes=int(rng.integers(2, 6)),
        n_scenarios=int(rng.integers(1, 4)),
        idle_home=seed % 4 == 0,
        equal_batteries=seed % 5 == 0,
    )
    return case, dm.solve_independent(case, method=method), dm.clear_market(case, method=method)


@pytest.fixture(scope="module", params=dm.METHODS)
def solved(request):
    """(method, instances): every test below runs once per solving method."""
    method = request.param
    count = N_COORDINATED if method == "coordinated" else N_INSTANCES
    return method, [_instance(seed, method) for seed in range(count)]


@pytest.fixture(scope="module")
def instances(solved):
    return solved[1]


@pytest.fixture(scope="module")
def tol(solved):
    return METHOD_TOLERANCE[solved[0]]


def _surplus_floor(m1, mk, tol):
    """Delta C >= eps (R* - R0) (the regularised clearing is optimal and M1's dispatch is feasible for it)."""
    return min(mk.regularization_cost - m1.regularization_cost, 0.0) - tol["cost"]


def _by_hand(case, m1, mk):
    """Costs recomputed from the dispatch arrays and the case's prices alone (not from the library's costs).

    Returns (C0 per home, R_A0, cost of the whole coalition in the market, Delta C). In M1 each home meets its
    net consumption n = d + c - e - g at retail (Eq. 5) and the aggregator earns the retail-wholesale margin
    (Eq. 1); in the market the community nets its homes and pays the wholesale price on the net (Eq. 16).
    """
    pi, q = case.probability, case.market.net_metering_usd_per_kwh
    a, b = case.column("utility_a")[:, None, None], case.column("utility_b")[:, None, None]
    expect = lambda v: np.einsum("s,nst->n", pi, v)
    n0 = m1.load + m1.charge - m1.discharge - m1.pv_used
    buy0, sell0 = np.maximum(n0, 0), np.maximum(-n0, 0)
    c0 = expect(buy0 * case.retail) - q * expect(sell0) - expect(a * m1.load**2 + b * m1.load)
    r0 = pi @ ((case.retail - case.buy_price) * buy0.sum(0) + (case.sell_price - q) * sell0.sum(0)).sum(axis=1)
    net = (mk.load + mk.charge - mk.discharge - mk.pv_used).sum(axis=0)  # (S, T) community
    coalition = pi @ (case.buy_price * np.maximum(net, 0) - case.sell_price * np.maximum(-net, 0)).sum(axis=1)
    coalition -= expect(a * mk.load**2 + b * mk.load).sum()
    return c0, r0, coalition, (c0.sum() - r0) - coalition


def test_instances_trade(instances):
    traded = sum(mk.traded_energy.sum() > 0 for _, _, mk in instances)
    assert traded >= 0.9 * len(instances)  # the properties below are exercised, not skipped


def test_cooperative_surplus_is_non_negative(instances, tol):
    for _case, m1, mk in instances:
        assert dm.cooperative_surplus(m1, mk) >= _surplus_floor(m1, mk, tol)


@pytest.mark.parametrize("rule", dm.settlement.RULES)
@pytest.mark.parametrize("rho", RHOS)
def test_settlement_promises(instances, tol, rule, rho):
    for case, m1, mk in instances:
        if rule == "contribution" and mk.traded_energy.sum() == 0:
            continue
        st = dm.settle(case, m1, mk, rho, rule)
        c0, r0, coalition, surplus = _by_hand(case, m1, mk)
        assert st.surplus == pytest.approx(surplus, abs=tol["cost"])  # Eq. 20, from the dispatch
        # budget balance: after the payments the parties together bear exactly the market's coalition cost
        assert st.home_cost.sum() - st.aggregator_revenue == pytest.approx(coalition, abs=tol["cost"])
        assert st.home_cost == pytest.approx(c0 - st.alpha * surplus, abs=tol["cost"])  # Eqs. 26-27
        assert st.aggregator_revenue == pytest.approx(r0 + rho * surplus, abs=tol["cost"])  # Eq. 28
        assert st.alpha.sum() == pytest.approx(1 - rho, abs=1e-12)  # Eq. 22 / 29
        assert np.all(st.alpha >= 0)
        assert np.all(st.home_gain >= st.alpha * _surplus_floor(m1, mk, tol) - 1e-12)  # individual rationality
        # payments: each home's cost after settlement is its M1 cost minus its gain
        assert st.home_cost == pytest.approx(m1.home_cost - st.home_gain, abs=1e-9)
        assert st.aggregator_revenue == pytest.approx(m1.aggregator_revenue + st.aggregator_gain, abs=1e-9)
        if rule == "equal":
            assert st.alpha == pytest.approx(np.full(case.n_homes, (1 - rho) / case.n_homes), abs=1e-12)


def test_home_that_never_trades_gets_zero_weight(instances):
    checked = 0
    for case, _m1, mk in instances:
        idle = mk.traded_energy == 0
        if idle.any() and not idle.all():
            alpha = dm.contribution_rates(case, mk, 0.2)
            assert np.all(alpha[idle] == 0.0)
            assert np.all(alpha[~idle] > 0.0)
            checked += 1
    assert checked >= len(instances) // 5


def test_contribution_rates_from_the_trades(instances):
    """Eqs. 21-22 recomputed from the trades and clearing prices: alpha_i = (1 - rho) c_i / sum c."""
    checked = 0
    for case, m1, mk in instances:
        value = np.einsum("s,st,nst->n", case.probability, mk.price, np.abs(mk.trade))
        if value.sum() <= 1e-6:
            continue
        for rho in RHOS:
            assert dm.settle(case, m1, mk, rho).alpha == pytest.approx((1 - rho) * value / value.sum(), abs=1e-6)
        checked += 1
    assert checked >= len(instances) // 2


def test_clearing_price_between_wholesale_prices(instances, tol):
    for case, _m1, mk in instances:
        assert np.all(mk.price >= case.sell_price - max(1e-6, tol["price"]))
        assert np.all(mk.price <= case.buy_price + max(1e-6, tol["price"]))
        net = mk.community_net_load
        importing, exporting = net > 1e-3, net < -1e-3  # clearly away from balance
        # duals are accurate to ~1e-6 $/kWh at Clarabel's default tolerances
        pinned = max(1e-5, tol["price"])
        assert mk.price[importing] == pytest.approx(np.broadcast_to(case.buy_price, net.shape)[importing], abs=pinned)
        assert mk.price[exporting] == pytest.approx(np.broadcast_to(case.sell_price, net.shape)[exporting], abs=pinned)


def test_operation_invariants(instances):
    for case, m1, mk in instances:
        e0 = (case.column("battery_kwh") * case.column("soc_initial"))[:, None]
        grid = case.column("grid_limit_kw")[:, None, None]
        for op in (m1, mk):
            assert op.energy[:, :, -1] == pytest.approx(np.broadcast_to(e0, op.energy.shape[:2]), abs=1e-6)
            balance = op.net_load - op.net_surplus - op.net_consumption - op.trade  # Eqs. 6 / 17
            assert np.abs(balance).max() < 1e-5
            assert np.all(op.pv_used <= case.pv + 1e-6)
            assert np.all(op.net_load <= grid + 1e-5) and np.all(op.net_surplus <= grid + 1e-5)
            assert np.all(op.load.sum(axis=2) >= case.load.sum(axis=2) - 1e-5)  # Eq. 10
        assert np.abs(mk.trade.sum(axis=0)).max() < 1e-9  # Eq. 18
        assert np.all(np.abs(mk.trade) <= grid + 1e-5)  # Eq. 19
        assert np.all(m1.trade == 0)


def test_independent_stacked_equals_per_home(instances, solved):
    for case, m1, _ in instances[:20]:
        for i, home in enumerate(case.home_ids):
            alone = dm.solve_independent(case.select([home]), method=solved[0])
            assert alone.home_cost[0] == pytest.approx(m1.home_cost[i], abs=1e-6)
            # loads are unique but weakly curved (|a| ~ 0.001-0.005 $/kWh^2): the solver pins them to ~1e-3 kW
            assert alone.load[0] == pytest.approx(m1.load[i], abs=1e-3)


@pytest.mark.parametrize("seed", range(40))
def test_closed_form_equals_numerical_nash_bargaining(instances, seed):
    case, m1, mk = instances[seed % len(instances)]
    rho = (0.0, 0.2, 0.5, 0.9)[seed % 4]
    rule = "contribution" if mk.traded_energy.sum() > 0 and seed % 3 else "equal"
    st = dm.settle(case, m1, mk, rho, rule)
    assert st.surplus > 0
    gamma = dm.nash_bargaining(m1, mk, st.alpha, rho)
    scale = np.maximum(np.abs(st.payment), st.surplus)
    assert np.max(np.abs(gamma - st.payment) / scale) < 1e-6


def test_nash_bargaining_needs_a_real_surplus(instances):
    """A market result with M1's costs has no surplus to bargain over."""
    case, m1, mk = instances[1]
    no_gain = dataclasses.replace(mk, home_cost=m1.home_cost, aggregator_revenue=m1.aggregator_revenue)
    with pytest.raises(ValueError, match="surplus"):
        dm.nash_bargaining(m1, no_gain, np.full(case.n_homes, 0.1), 0.2)


def test_nobody_trades_contribution_rule_raises(method):
    """Homes without PV or battery never have a surplus, so nobody trades."""
    T = dm.HOURS
    case = dm.create_case(
        np.ones((3, 1, T)),
        np.zeros((3, 1, T)),
        utility_a=-0.002,
        utility_b=0.3,
        lmp=np.full(T, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
    )
    m1, mk = dm.solve_independent(case, method=method), dm.clear_market(case, method=method)
    with pytest.raises(dm.NoTradeError, match="rule='equal'"):
        dm.settle(case, m1, mk, 0.2, "contribution")
    st = dm.settle(case, m1, mk, 0.2, "equal")
    assert st.alpha == pytest.approx(np.full(3, 0.8 / 3))


@pytest.mark.parametrize("rho", [-0.1, 1.5, np.nan])
def test_bad_profit_rate(instances, rho):
    case, m1, mk = instances[1]
    with pytest.raises(ValueError, match="profit_rate"):
        dm.settle(case, m1, mk, rho)


def test_bad_rule_and_swapped_results(instances):
    case, m1, mk = instances[1]
    with pytest.raises(ValueError, match="rule"):
        dm.settle(case, m1, mk, 0.2, "shapley")
    with pytest.raises(ValueError, match="independent, market"):
        dm.settle(case, mk, m1, 0.2)


def test_profit_rate_sweep_reuses_one_clearing(instances):
    case, m1, mk = instances[1]
    sweep = dm.profit_rate_sweep(case, m1, mk, np.linspace(0, 1, 11))
    total = sweep.groupby("profit_rate")["net_benefit_usd"].sum()
    assert total.to_numpy() == pytest.approx(np.full(11, dm.cooperative_surplus(m1, mk)), abs=1e-9)
    agg = sweep[sweep.party == "aggregator"]
    assert np.all(np.diff(agg.net_benefit_usd.to_numpy()) >= 0)


@pytest.mark.parametrize("rho", ["0.2", None, True, [0.2]])
def test_profit_rate_that_is_not_a_number(instances, rho):
    case, m1, mk = instances[1]
    with pytest.raises(TypeError, match="profit_rate rho must be a number"):
        dm.settle(case, m1, mk, rho)


def test_results_of_another_case_are_rejected(instances):
    case, m1, mk = instances[1]
    other = next(c for c, *_ in instances if c.home_ids == case.home_ids and c.n_scenarios != case.n_scenarios)
    m1_other = dm.solve_independent(other)
    with pytest.raises(ValueError, match="different scenarios"):
        dm.settle(case, m1_other, mk, 0.2)
    with pytest.raises(ValueError, match="not for this case"):
        dm.settle(other, m1, mk, 0.2)
    reweighted = dataclasses.replace(mk, probability=mk.probability[::-1].copy())
    if not np.array_equal(reweighted.probability, mk.probability):
        with pytest.raises(ValueError, match="different scenarios"):
            dm.settle(case, m1, reweighted, 0.2)


def test_zero_prices_carry_no_market_value():
    """All LMPs zero: the clearing prices are solver noise (+-1e-11), so no contribution counts (Eq. 21)."""
    case = random_case(3, n_homes=3, n_scenarios=1)
    case = case.replace(market={"regularization": 1e-5})
    zero = dm.Workbench(case).operations(lmp=np.zeros(dm.HOURS))
    variant, m1, mk = zero
    assert mk.traded_energy.sum() > 0  # homes still trade ...
    assert np.abs(mk.price).max() < 1e-6  # ... at prices of solver noise
    with pytest.raises(dm.NoTradeError, match="every clearing price is zero"):
        dm.contribution_rates(variant, mk, 0.2)
    assert dm.settle(variant, m1, mk, 0.2, "equal").alpha == pytest.approx(np.full(3, 0.8 / 3))


def test_regularization_that_moves_the_answer_warns():
    case = random_case(2, n_homes=3, n_scenarios=1)
    m1, mk = dm.solve_independent(case), dm.clear_market(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dm.RegularizationWarning)
        dm.settle(case, m1, mk, 0.2)  # the default epsilon: silent
    big = case.replace(market={"regularization": 10.0})
    m1b, mkb = dm.solve_independent(big), dm.clear_market(big)
    with pytest.warns(dm.RegularizationWarning, match="regularization"):
        dm.settle(big, m1b, mkb, 0.2)


def test_profit_rate_sweep_refuses_an_empty_or_bad_list_of_rates():
    case = random_case(7, n_homes=2, n_scenarios=1)
    m1, mk = dm.solve_independent(case), dm.clear_market(case)
    with pytest.raises(ValueError, match="profit_rates is empty"):  # was pandas' "No objects to concatenate"
        dm.profit_rate_sweep(case, m1, mk, [])
    with pytest.raises(TypeError, match="profit_rate rho must be a number"):
        dm.profit_rate_sweep(case, m1, mk, [0.2, "high"])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        dm.profit_rate_sweep(case, m1, mk, np.array([0.2, 1.5]))
    sweep = dm.profit_rate_sweep(case, m1, mk, np.linspace(0, 1, 3))
    assert sweep["profit_rate"].unique().tolist() == [0.0, 0.5, 1.0]
    assert len(dm.profit_rate_sweep(case, m1, mk, 0.2)) == 3
