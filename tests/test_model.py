"""Operation models: hand-solvable cases, vectorisation/DPP, solver independence of per-home answers."""

import warnings

import numpy as np
import pytest

import desmarket as dm
from desmarket import model
from desmarket.synthetic import infeasible_case, random_case

T = dm.HOURS


def flat_pair(pv_seller: float, lmp: float = 0.05, load_buyer: float = 1.0):
    """Two homes, one scenario, no battery, rigid loads, no utility: home 1 only consumes, home 2 only produces."""
    load = np.zeros((2, 1, T))
    pv = np.zeros((2, 1, T))
    load[0] = load_buyer
    pv[1] = pv_seller
    return dm.create_case(
        load,
        pv,
        utility_a=0.0,
        utility_b=0.0,
        lmp=np.full(T, lmp),
        battery_kwh=0.0,
        battery_kw=0.0,
        load_min_factor=1.0,
        load_max_factor=1.0,
    )


def test_two_homes_exporting_community_by_hand(method, tol):
    case = flat_pair(pv_seller=3.0)
    p, q = case.retail, case.market.net_metering_usd_per_kwh
    lb, ls = 1.1 * 0.05, 0.9 * 0.05
    m1, mk = dm.solve_independent(case, method=method), dm.clear_market(case, method=method)
    # M1: home 1 buys 1 kW at retail, home 2 sells 3 kW at net metering
    assert m1.home_cost == pytest.approx([p.sum(), -3 * q * T], abs=tol["cost"])
    assert m1.aggregator_revenue == pytest.approx(((p - lb) * 1).sum() + (ls - q) * 3 * T, abs=tol["cost"])
    # market: home 2 supplies home 1 (1 kW), exports the remaining 2 kW; the community exports
    assert mk.trade[:, 0, :] == pytest.approx(np.array([[-1.0] * T, [1.0] * T]), abs=tol["kw"])
    assert mk.price == pytest.approx(np.full((1, T), ls), abs=tol["price"])
    assert mk.home_cost == pytest.approx([0.0, -2 * q * T], abs=tol["cost"])
    assert mk.aggregator_revenue == pytest.approx((ls - q) * 2 * T, abs=tol["cost"])
    assert not mk.balanced.any()
    assert dm.cooperative_surplus(m1, mk) == pytest.approx(1.0 * T * (lb - ls), abs=tol["cost"])


def test_two_homes_importing_community_by_hand(method, tol):
    case = flat_pair(pv_seller=0.5)
    lb = 1.1 * 0.05
    mk = dm.clear_market(case, method=method)
    assert mk.trade[:, 0, :] == pytest.approx(np.array([[-0.5] * T, [0.5] * T]), abs=tol["kw"])
    assert mk.price == pytest.approx(np.full((1, T), lb), abs=tol["price"])
    assert mk.net_load[0, 0] == pytest.approx(np.full(T, 0.5), abs=tol["kw"])
    assert mk.net_surplus.sum() == pytest.approx(0.0, abs=tol["kw"])


def test_balanced_hour_is_reported_and_price_lies_between(method, tol):
    case = flat_pair(pv_seller=1.0)
    mk = dm.clear_market(case, method=method)
    assert mk.balanced.all()
    assert np.all(mk.price >= 0.9 * 0.05 - tol["price"]) and np.all(mk.price <= 1.1 * 0.05 + tol["price"])


def test_elastic_load_follows_marginal_utility(method, tol):
    """One home, no PV, no battery, rigid-free load: d* = (p - b) / (2a), clipped to [0.8 D, 1.2 D]."""
    a, b = -0.045, 0.3
    case = dm.create_case(
        np.ones((1, 1, T)),
        np.zeros((1, 1, T)),
        utility_a=a,
        utility_b=b,
        retail=np.full(T, 0.2),
        lmp=np.full(T, 0.1),
        battery_kwh=0.0,
        battery_kw=0.0,
    )
    m1 = dm.solve_independent(case, method=method)
    assert m1.load[0, 0] == pytest.approx(np.full(T, (b - 0.2) / (-2 * a)), abs=tol["kw"])
    assert m1.home_cost[0] == pytest.approx(
        T * (0.2 * (b - 0.2) / (-2 * a) - a * ((b - 0.2) / (-2 * a)) ** 2 - b * (b - 0.2) / (-2 * a)), abs=tol["cost"]
    )
    # at the wholesale price 0.11 the unconstrained optimum 2.11 is clipped at 1.2 D
    mk = dm.clear_market(case, method=method)
    assert mk.load[0, 0] == pytest.approx(np.full(T, 1.2), abs=tol["kw"])


def test_daily_minimum_binds_when_load_is_expensive(method, tol):
    """Marginal utility below the price: the home consumes exactly its daily minimum (Eq. 10)."""
    D = np.linspace(0.5, 1.5, T)
    case = dm.create_case(
        D[None, None],
        np.zeros((1, 1, T)),
        utility_a=-0.01,
        utility_b=0.0,
        lmp=np.full(T, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
    )
    m1 = dm.solve_independent(case, method=method)
    assert m1.load.sum() == pytest.approx(D.sum(), abs=tol["kw"])
    assert np.all(m1.load >= 0.8 * D - 1e-6) and np.all(m1.load <= 1.2 * D + 1e-6)


def test_battery_arbitrage_by_hand(method, tol):
    """Flat load, no PV, two retail levels: a lossless battery shifts as much as it can to the cheap hours."""
    retail = np.where(np.arange(T) < 12, 0.1, 0.3)
    case = dm.create_case(
        np.full((1, 1, T), 2.0),
        np.zeros((1, 1, T)),
        utility_a=0.0,
        utility_b=0.0,
        retail=retail,
        lmp=np.full(T, 0.05),
        load_min_factor=1.0,
        load_max_factor=1.0,
        battery_kwh=10.0,
        battery_kw=5.0,
        soc_min=0.0,
        soc_max=1.0,
        soc_initial=0.0,
        eta_charge=1.0,
        eta_discharge=1.0,
        market={"net_metering_usd_per_kwh": 0.03, "buy_ratio": 1.1, "sell_ratio": 0.9, "regularization": 0.0},
    )
    m1 = dm.solve_independent(case, method=method)
    # 10 kWh bought at 0.1 instead of 0.3: saves 2 $
    assert m1.home_cost[0] == pytest.approx(2 * (12 * 0.1 + 12 * 0.3) - 10 * 0.2, abs=tol["cost"])
    assert m1.energy[0, 0, -1] == pytest.approx(0.0, abs=tol["kw"])


def test_problems_are_dpp_and_vectorised():
    case = random_case(0, n_homes=3, n_scenarios=2)
    for build in (dm.build_independent, dm.build_clearing):
        problem, handles = build(case)
        assert problem.is_dpp()
        # one variable per quantity, rows = (home, scenario); the clearing adds the trade and the trade
        # balance's partial sums (Eq. 18, formulation.TRADE_GROUP)
        assert handles.d.shape == (6, T)
        assert len(problem.variables()) == (9 if handles.x is not None else 7)


def test_parameters_resolve_without_rebuild():
    case = random_case(1)
    problem, h = dm.build_clearing(case)
    dm.solve(problem)
    h.buy.value = h.buy.value * 2
    dm.solve(problem)
    price = dm.clearing_price(h, case)
    rebuilt = dm.clear_market(case.replace(market={"buy_ratio": 2.2}))
    assert price == pytest.approx(rebuilt.price, abs=1e-6)


def test_infeasible_case_raises_solver_error(method, tol):
    case = infeasible_case(1)
    with pytest.raises(
        dm.InfeasibleCaseError,
        match=r"home '1' cannot be served without a market \(M1\) in "
        r"scenario '1', hour 0: its minimum load .* = 4 kW\) exceeds .* \(1 kW\) by 3 kW; 24 such",
    ):
        dm.solve_independent(case, method=method)
    with pytest.raises(dm.SolverError):  # still a solver failure for code that catches those
        dm.clear_market(case, method=method)


def test_home_infeasible_alone_but_served_by_the_market(method, tol):
    """Home 'a' needs 6.4 kW at noon through a 5 kW connection; home 'b' has PV to spare then. M1 is
    infeasible (and the error says so, naming 'a'); the clearing is feasible and 'a' receives trades."""
    load, pv = np.zeros((2, 1, T)), np.zeros((2, 1, T))
    load[0, 0, 10:14] = 8.0
    pv[1, 0, 10:14] = 10.0
    case = dm.create_case(
        load,
        pv,
        utility_a=-0.001,
        utility_b=0.3,
        lmp=np.full(T, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
        grid_limit_kw=5.0,
        home_ids=["a", "b"],
    )
    with pytest.raises(
        dm.InfeasibleCaseError,
        match=r"home 'a' cannot be served without a market.*hour 10.*"
        r"homes \['a'\].*nothing to settle",
    ):
        dm.solve_independent(case, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)  # pro-rata books 'a' its whole 9.6 kW as a trade
        mk = dm.clear_market(case, method=method)
    assert np.all(mk.trade[0, 0, 10:14] < -1.0)


def test_jointly_infeasible_limits_are_traced_to_the_home():
    """Each hour alone is feasible (battery power covers it) but the day is not: 10 hours need 0.5 kWh each
    from a battery that must end where it started. The pre-checks pass; the error names the home."""
    load = np.full((2, 1, T), 1.0)
    load[1, 0, 8:18] = 1.5
    case = dm.create_case(
        load,
        np.zeros((2, 1, T)),
        utility_a=0.0,
        utility_b=0.3,
        lmp=np.full(T, 0.04),
        battery_kwh=2.0,
        battery_kw=5.0,
        grid_limit_kw=1.0,
        load_min_factor=1.0,
        home_ids=["ok", "short"],
    )
    with pytest.raises(dm.InfeasibleCaseError, match=r"cannot be served even alone \(M1\): \['short'\]"):
        dm.solve_independent(case)


def test_pass_through_routing_is_booked_pro_rata_with_a_warning(method, tol):
    """Home 1 needs 15 kW through a 10 kW connection: only routing via home 2 is feasible (pro-rata cannot)."""
    load = np.zeros((2, 1, T))
    load[0] = 15.0
    case = dm.create_case(
        load,
        np.zeros((2, 1, T)),
        utility_a=0.0,
        utility_b=0.0,
        lmp=np.full(T, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
        load_min_factor=1.0,
        load_max_factor=1.0,
    )
    with pytest.warns(dm.RoutingWarning, match="home '1' a net load of 15.0000 kW"):
        booked = dm.clear_market(case, method=method)
    assert booked.over_limit_kw == pytest.approx(5.0, abs=tol["kw"])
    assert booked.net_load[0, 0] == pytest.approx(np.full(T, 15.0), abs=tol["kw"])  # MODEL.md's accounting
    assert booked.trade.sum() == 0
    raw = dm.clear_market(case, method=method, tie_break=False)
    # the solver's routing is one of many: home 2 passes 5..10 kW on to home 1
    assert np.all(raw.trade[0, 0] <= -5.0 + 1e-5) and np.all(raw.trade[0, 0] >= -10.0 - 1e-5)
    assert raw.trade.sum(axis=0) == pytest.approx(np.zeros((1, T)), abs=tol["kw"])


def test_unknown_solver_raises():
    with pytest.raises(dm.SolverError):
        dm.solve_independent(random_case(0), solver="NOT_A_SOLVER")


SECOND_SOLVERS = [
    ("SCS", {"eps": 1e-10, "max_iters": 500_000}),
    ("OSQP", {"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iter": 500_000, "polishing": True}),
]


@pytest.mark.parametrize("method", ["central", "decomposed"])  # coordinated: see test_engine.py
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_home_answers_do_not_depend_on_the_solver(seed, method):
    """MODEL.md "Uniqueness": with the tie-break, the method's default solver and a second one agree per home."""
    case = random_case(100 + seed, n_homes=5, n_scenarios=3, equal_batteries=True)
    ref_m1, ref_mk = dm.solve_independent(case, method=method), dm.clear_market(case, method=method)
    ref = dm.settle(case, ref_m1, ref_mk, 0.2)
    agreed = 0
    for solver, options in SECOND_SOLVERS:
        try:
            m1 = dm.solve_independent(case, method=method, solver=solver, solver_options=options)
            mk = dm.clear_market(case, method=method, solver=solver, solver_options=options)
        except dm.SolverError:
            continue  # a first-order solver may stop short of the tight tolerance; the other one must agree
        st = dm.settle(case, m1, mk, 0.2)
        assert m1.home_cost == pytest.approx(ref_m1.home_cost, abs=1e-3)
        assert mk.home_cost == pytest.approx(ref_mk.home_cost, abs=1e-3)
        assert st.alpha == pytest.approx(ref.alpha, abs=1e-3)
        assert st.surplus == pytest.approx(ref.surplus, abs=1e-3)
        agreed += 1
    assert agreed >= 1


def test_without_tie_break_per_home_answers_are_not_unique_but_totals_are(method, tol):
    """The gap the tie-break closes: the raw solver routing is only one of many optimal routings."""
    case = random_case(7, n_homes=5, n_scenarios=3, equal_batteries=True)
    mk = dm.clear_market(case, method=method)
    raw = dm.clear_market(case, method=method, tie_break=False)
    total = lambda r: r.home_cost.sum() - r.aggregator_revenue
    assert total(raw) == pytest.approx(total(mk), abs=tol["cost"])


def test_read_operation_prices_the_problem_as_solved():
    """After a Parameter change and a re-solve, costs come from the Parameters, recomputed here by hand."""
    case = random_case(2, n_homes=3, n_scenarios=2)
    problem, h = dm.build_clearing(case)
    h.buy.value = h.buy.value * 1.5
    h.sell.value = h.sell.value * 0.5
    dm.solve(problem)
    op = dm.read_operation(case, problem, h, solver="CLARABEL")
    pi = case.probability
    revenue = np.einsum(
        "s,st->",
        pi,
        (
            (case.retail - h.buy.value) * op.net_load.sum(axis=0)
            + (h.sell.value - case.market.net_metering_usd_per_kwh) * op.net_surplus.sum(axis=0)
        ),
    )
    assert op.aggregator_revenue == pytest.approx(revenue, abs=1e-9)
    wholesale = np.einsum(
        "s,st->", pi, h.buy.value * op.net_load.sum(axis=0) - h.sell.value * op.net_surplus.sum(axis=0)
    )
    assert op.objective == pytest.approx(wholesale - op.utility.sum() + op.regularization_cost, abs=1e-6)


def test_binding_connections_price_scarcity_outside_the_band(method, tol):
    """Two homes that want more than their 10 kW connections (9 kW baseline, flexible up to 13.5 kW, no PV or
    battery): the marginal kWh is worth its utility, above k^b LMP. congested says so; balanced does not."""
    T = dm.HOURS
    case = dm.create_case(
        np.full((2, 1, T), 9.0),
        np.zeros((2, 1, T)),
        utility_a=-0.001,
        utility_b=0.3,
        lmp=np.full(T, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
        grid_limit_kw=10.0,
    )
    mk = dm.clear_market(case, method=method)
    assert mk.congested.all() and not mk.balanced.any()
    marginal_utility = 0.3 - 2 * 0.001 * 10.0  # b + 2 a d at d = 10 kW
    assert mk.price == pytest.approx(np.full((1, T), marginal_utility), abs=max(tol["price"], 1e-6))
    assert np.all(mk.price > case.buy_price + 0.1)


def test_price_states_of_near_balanced_and_pinned_hours():
    """model.price_states on hand-made flows: a net of 1e-4 kW with the price strictly inside the band is
    balanced; the same net at k^b LMP is pinned; a binding flow with a price above the band is congested."""
    case = dm.create_case(
        np.ones((2, 1, T)),
        np.zeros((2, 1, T)),
        utility_a=-0.001,
        utility_b=0.3,
        lmp=np.full(T, 0.04),
        grid_limit_kw=5.0,
    )
    z = np.zeros((2, 1, T))
    d, g = np.ones((2, 1, T)), np.ones((2, 1, T))
    d[0, 0, :2] = 1.0001  # a net import of 1e-4 kW in hours 0 and 1
    d[:, 0, 2], g[:, 0, 2] = 5.0, 0.0  # both homes at their 5 kW connection in hour 2
    arrays = {"d": d, "g": g, "c": z, "e": z, "Pl": np.maximum(d - g, 0), "Ps": z, "x": z}
    price = np.full((1, T), case.buy_price[0])
    price[0, 0], price[0, 2] = 0.04, 0.09  # inside the band; above it
    balanced, congested = model.price_states(case, arrays, price, model.Prices.of_case(case))
    assert balanced[0, :3].tolist() == [True, False, False]
    assert congested[0, :3].tolist() == [False, False, True]


def test_binding_trade_limit_keeps_the_optimum_totals(method, tol):
    """Home 0 has 5 kW PV, home 1 a 5 kW load, but trades are limited to 1 kW: the optimum trades 1 kW and
    meets the rest through the grid. The tie-break must book that (not a full 5 kW netting, which would report
    zero costs for a community that pays the grid): costs recomputed by hand from the case's prices."""
    load, pv = np.zeros((2, 1, T)), np.zeros((2, 1, T))
    load[1], pv[0] = 5.0, 5.0
    case = dm.create_case(
        load,
        pv,
        utility_a=0.0,
        utility_b=0.0,
        lmp=np.full(T, 0.04),
        battery_kwh=0.0,
        battery_kw=0.0,
        load_min_factor=1.0,
        load_max_factor=1.0,
    )
    mk = dm.clear_market(case, method=method, trade_limit=1.0)
    assert mk.trade[:, 0, :] == pytest.approx(np.tile([[1.0], [-1.0]], (1, T)), abs=tol["kw"])
    assert mk.net_load.sum(0) == pytest.approx(np.full((1, T), 4.0), abs=tol["kw"])
    assert mk.net_surplus.sum(0) == pytest.approx(np.full((1, T), 4.0), abs=tol["kw"])
    p, q = case.retail, case.market.net_metering_usd_per_kwh
    assert mk.home_cost == pytest.approx([-q * 4 * T, (p * 4).sum()], abs=tol["cost"])
    revenue = ((p - case.buy_price) * 4 + (case.sell_price - q) * 4).sum()
    assert mk.aggregator_revenue == pytest.approx(revenue, abs=tol["cost"])
    assert mk.congested.all() and not mk.balanced.any()


# ------------------------------------------------------------------------------------- case fingerprint
def _golden_case():
    """Numbers that every machine computes to the same bits (no libm functions)."""
    h = np.arange(T)
    return dm.create_case(
        np.tile(0.5 + 0.25 * (h % 4), (2, 1, 1)),
        np.tile(np.where((h >= 8) & (h < 16), 2.0, 0.0), (2, 1, 1)),
        utility_a=[-0.002, -0.004],
        utility_b=[0.3, 0.4],
        lmp=0.03 + 0.001 * h,
        home_ids=["h1", "h2"],
    )


def test_case_fingerprint_is_stable_and_covers_what_determines_a_solve(tmp_path):
    """16 hex digits, the same in every process and on every machine (pinned), kept by a save and load, and
    changed by anything a solve depends on while ids, scenarios and probabilities stay the same."""
    case = _golden_case()
    fp = model.case_fingerprint(case)
    assert fp == "dfda9edd07ebda64"
    assert model.case_fingerprint(dm.load_case(case.save(tmp_path / "c"))) == fp
    assert model.case_fingerprint(case.select(list(case.home_ids))) == fp
    frames = case.to_frames()
    changed = [
        case.replace(market={"buy_ratio": 1.2}),
        case.replace(market={"regularization": 1e-4}),
        case.replace(battery_kwh=[13.5, 6.0]),
        case.select(["h2", "h1"]),
        dm.Case.from_frames(**{**frames, "profiles": frames["profiles"].assign(pv_kw=frames["profiles"].pv_kw * 0.5)}),
        dm.Case.from_frames(**{**frames, "prices": frames["prices"].assign(retail_usd_per_kwh=0.25)}),
    ]
    assert len({fp, *map(model.case_fingerprint, changed)}) == len(changed) + 1
    prices = model.Prices.of_case(case)._replace(buy=case.buy_price * 2)  # a re-solve at other prices
    assert model.case_fingerprint(case, prices) != fp


def test_every_solve_records_the_case_it_was_solved_on(method):
    case = random_case(3, n_homes=2, n_scenarios=2)
    fp = model.case_fingerprint(case)
    assert dm.solve_independent(case, method=method).fingerprint == fp
    assert dm.clear_market(case, method=method).fingerprint == fp
