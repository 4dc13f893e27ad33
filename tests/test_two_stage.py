"""The two-stage clearing (issue 20): day-ahead position, real-time imbalances, VSS and EVPI, the held-out day.

Hand-solvable cases: the newsvendor (one home, one hour, two scenarios) whose day-ahead purchase is a known
quantile, and a two-home case whose Delta C is worked out on paper below; the degenerate case (k^up = k^b,
k^dn = k^s) equals the one-stage model; VSS >= 0 and EVPI >= 0 on random cases (hypothesis).
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import desmarket as dm
from desmarket import twostage
from desmarket.case import HOURS
from desmarket.formulation import FirstStage, newsvendor_position, two_stage_wholesale
from desmarket.synthetic import random_case

LMP = 0.04  # $/kWh, flat: lambda^b = 0.044, lambda^s = 0.036, k^up LMP = 0.06, k^dn LMP = 0.02 (defaults)
HOUR = 12


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        yield


def one_hour_case(load: np.ndarray, pv: np.ndarray, probability, **market) -> dm.Case:
    """Homes (N, S) with fixed load and PV in hour 12 only, no batteries, no flexibility, flat LMP."""
    n, s = load.shape
    cube = lambda v: np.zeros((n, s, HOURS)) + (np.arange(HOURS) == HOUR) * np.asarray(v, float)[:, :, None]
    case = dm.create_case(
        cube(load),
        cube(pv),
        utility_a=-0.002,
        utility_b=0.3,
        lmp=np.full(HOURS, LMP),
        probability=np.asarray(probability, float),
        battery_kwh=0.0,
        battery_kw=0.0,
        load_min_factor=1.0,
        load_max_factor=1.0,
    )
    return case.replace(market=market) if market else case


def cost(op) -> float:
    return twostage.community_cost(op)


# ------------------------------------------------------------------------------------------ newsvendor
@pytest.mark.parametrize("p_low", [0.3, 0.39, 0.41, 0.7])
@pytest.mark.parametrize("method", ["central", "decomposed"])
def test_newsvendor_buys_the_known_quantile(p_low, method):
    """One home, one hour, loads 2 and 5 kW: buy b = the smallest load whose cumulative probability reaches
    (k^up - k^b)/(k^up - k^dn) = (1.5 - 1.1)/(1.5 - 0.5) = 0.4."""
    case = one_hour_case(np.array([[2.0, 5.0]]), np.zeros((1, 2)), [p_low, 1 - p_low])
    expected = 2.0 if p_low >= 0.4 else 5.0
    for op in (dm.clear_market(case, stages=2, method=method), dm.solve_independent(case, stages=2, method=method)):
        assert op.day_ahead["buy_kw"][HOUR] == pytest.approx(expected, abs=1e-4)
        assert op.day_ahead.drop(index=HOUR).to_numpy().max() < 1e-4 and op.day_ahead["sell_kw"].max() < 1e-4
    # the imbalance of each scenario is its load minus the purchase, bought at k^up LMP or sold at k^dn LMP
    market = dm.clear_market(case, stages=2, method=method)
    np.testing.assert_allclose(market.imbalance_buy[:, HOUR], np.maximum([2 - expected, 5 - expected], 0), atol=1e-4)
    np.testing.assert_allclose(market.imbalance_sell[:, HOUR], np.maximum([expected - 2, expected - 5], 0), atol=1e-4)


@pytest.mark.parametrize("p_low", [0.3, 0.5])
def test_newsvendor_sells_the_known_quantile(p_low):
    """PV of 1 and 4 kW: sell a = the smallest export with P(export <= a) >= (k^s - k^dn)/(k^up - k^dn) = 0.4."""
    case = one_hour_case(np.zeros((1, 2)), np.array([[1.0, 4.0]]), [p_low, 1 - p_low])
    expected = 1.0 if p_low >= 0.4 else 4.0
    op = dm.clear_market(case, stages=2, method="central")
    assert op.day_ahead["sell_kw"][HOUR] == pytest.approx(expected, abs=1e-4)
    assert dm.solve_independent(case, stages=2).day_ahead["sell_kw"][HOUR] == pytest.approx(expected, abs=1e-9)


def test_the_closed_form_m1_position_is_the_lp_optimum():
    """The M1 aggregator's newsvendor position reaches the optimum of the wholesale LP solved independently."""
    case = random_case(3, 4, 5)
    m1 = dm.solve_independent(case, stages=2)
    imports, exports = m1.net_load.sum(axis=0), m1.net_surplus.sum(axis=0)
    stage = FirstStage.of_case(case)
    b, a = cp.Variable(HOURS, nonneg=True), cp.Variable(HOURS, nonneg=True)
    u1, v1, u2, v2 = (cp.Variable((case.n_scenarios, HOURS), nonneg=True) for _ in range(4))
    pi = case.probability[:, None]
    lp = cp.Problem(
        cp.Minimize(
            case.buy_price @ b
            - case.sell_price @ a
            + cp.sum(cp.multiply(pi * stage.up, u1 + u2))
            - cp.sum(cp.multiply(pi * stage.down, v1 + v2))
        ),
        [
            imports == np.ones((case.n_scenarios, 1)) @ cp.reshape(b, (1, HOURS), order="C") + u1 - v1,
            exports == np.ones((case.n_scenarios, 1)) @ cp.reshape(a, (1, HOURS), order="C") + v2 - u2,
        ],
    )
    lp.solve(solver="CLARABEL")
    mine = two_stage_wholesale(
        case.probability,
        imports,
        exports,
        m1.day_ahead["buy_kw"],
        m1.day_ahead["sell_kw"],
        dm.formulation.Prices.of_case(case),
        stage,
    )
    assert mine == pytest.approx(lp.value, abs=1e-7)


def test_newsvendor_position_rejects_nothing_and_returns_zero_without_spread():
    flow = np.array([[1.0], [3.0]])
    zero = np.zeros(1)
    assert newsvendor_position(flow, np.array([0.5, 0.5]), zero, zero, zero, "buy")[0] == 0.0


# ------------------------------------------------------------------------------------ hand-checked
def test_delta_c_of_a_small_case_by_hand():
    """Home A exports PV, home B imports, hour 12 only, scenarios (pi 0.3, 0.7): A's PV (3, 1) kW, B's load (2, 4).

    M1: imports {2 w.p. 0.3, 4 w.p. 0.7}: F(2) = 0.3 < 0.4, so b = 4; exports {3, 1}: F(1) = 0.7 >= 0.4, a = 1.
      wholesale = 0.044*4 - 0.036*1 + 0.3*(-0.02*2 - 0.02*2) + 0.7*0 = 0.116
    market: community net -1 (s1) and +3 (s2); imports {0, 3}: b = 3; exports {1, 0}: a = 0.
      wholesale = 0.044*3 + 0.3*(-0.02*3 - 0.02*1) + 0.7*0 = 0.108   (b = 0 would cost 0.12)
    Delta C = 0.116 - 0.108 = 0.008 (the same loads in both modes: utility and retail cancel).
    """
    case = one_hour_case(np.array([[0.0, 0.0], [2.0, 4.0]]), np.array([[3.0, 1.0], [0.0, 0.0]]), [0.3, 0.7])
    m1 = dm.solve_independent(case, stages=2)
    market = dm.clear_market(case, stages=2, method="central")
    assert (m1.day_ahead["buy_kw"][HOUR], m1.day_ahead["sell_kw"][HOUR]) == pytest.approx((4.0, 1.0), abs=1e-9)
    assert (market.day_ahead["buy_kw"][HOUR], market.day_ahead["sell_kw"][HOUR]) == pytest.approx((3, 0), abs=1e-4)
    utility = (case.column("utility_a")[:, None, None] * case.load**2 + 0.3 * case.load).sum(axis=(0, 2))
    for op, wholesale in ((m1, 0.116), (market, 0.108)):
        assert cost(op) == pytest.approx(wholesale - case.probability @ utility, abs=1e-6)
    assert dm.cooperative_surplus(m1, market, case) == pytest.approx(0.008, abs=1e-6)
    m2 = dm.settle(case, m1, market, 0.2, "equal")
    assert m2.home_gain == pytest.approx([0.0032, 0.0032], abs=1e-6) and m2.aggregator_gain == pytest.approx(0.0016)


# ------------------------------------------------------------------------------------------ degenerate
@pytest.mark.parametrize("seed", [0, 4])
def test_degenerate_imbalance_prices_give_the_one_stage_model(seed):
    """With k^up = k^b and k^dn = k^s nothing is gained by committing: the two-stage clearing is the one-stage
    one (costs, every home's cost, prices, R_A), its position zero; and M1's R_A^0 is today's."""
    case = random_case(seed, 5, 3).replace(market={"imbalance_buy_ratio": 1.1, "imbalance_sell_ratio": 0.9})
    for one, two in (
        (dm.clear_market(case, method="central"), dm.clear_market(case, method="central", stages=2)),
        (dm.clear_market(case), dm.clear_market(case, stages=2)),
        (dm.solve_independent(case), dm.solve_independent(case, stages=2)),
    ):
        assert cost(two) == pytest.approx(cost(one), abs=1e-6)
        np.testing.assert_allclose(two.home_cost, one.home_cost, atol=1e-5)
        assert two.aggregator_revenue == pytest.approx(one.aggregator_revenue, abs=1e-5)
        assert two.stages == 2 and one.stages == 1 and one.day_ahead is None
        assert two.day_ahead.to_numpy().max() < 5e-2  # any position is optimal here: only its tie-break fixes it
        if one.price is not None:
            np.testing.assert_allclose(two.price, one.price, atol=1e-6)


def test_central_and_decomposed_agree():
    case = random_case(7, 6, 4)
    central = dm.clear_market(case, stages=2, method="central")
    default = dm.clear_market(case, stages=2)
    assert default.method == "decomposed"
    assert cost(default) == pytest.approx(cost(central), abs=1e-6)
    np.testing.assert_allclose(default.day_ahead.to_numpy(), central.day_ahead.to_numpy(), atol=1e-4)
    fixed = [dm.clear_market(case, stages=2, method=m, day_ahead=central.day_ahead) for m in ("central", "decomposed")]
    assert cost(fixed[0]) == pytest.approx(cost(central), abs=1e-6)
    assert cost(fixed[1]) == pytest.approx(cost(central), abs=1e-6)


def _route_used(monkeypatch) -> list:
    """Record whether each two-stage clearing went the pooled route (True) or fell back to the full problem."""
    from desmarket import engine

    used: list = []
    pooled = engine._pooled_equivalent

    def spy(*args, **kwargs):
        result = pooled(*args, **kwargs)
        used.append(result is not None)
        return result

    monkeypatch.setattr(engine, "_pooled_equivalent", spy)
    return used


def _full_only(monkeypatch) -> None:
    from desmarket import engine

    monkeypatch.setattr(engine, "_pooled_equivalent", lambda *args, **kwargs: None)


@pytest.mark.parametrize("seed, n, s", [(7, 6, 4), (12, 25, 3), (30, 3, 5)])
def test_the_pooled_problem_gives_the_full_problems_clearing(seed, n, s, monkeypatch):
    # the pooled relaxation (no Pl, Ps, x, no limits) is exact when its solution can be routed: the same optimum,
    # position, prices, imbalances and accounts as the full deterministic equivalent and as central (Clarabel)
    case = random_case(seed, n, s)
    used = _route_used(monkeypatch)
    pooled = dm.clear_market(case, stages=2)
    assert used == [True]
    central = dm.clear_market(case, stages=2, method="central")
    _full_only(monkeypatch)
    full = dm.clear_market(case, stages=2)
    for ref in (full, central):
        assert pooled.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-7)
        assert cost(pooled) == pytest.approx(cost(ref), abs=1e-6)
        np.testing.assert_allclose(pooled.day_ahead.to_numpy(), ref.day_ahead.to_numpy(), atol=1e-4)
        np.testing.assert_allclose(pooled.price, ref.price, atol=1e-6)
        # a home's cost moves with its battery's tie-broken schedule, weakly determined: central itself at 1e-12
        # and at 1e-10 differs by 1.1e-4 $ on seed 12
        np.testing.assert_allclose(pooled.home_cost, ref.home_cost, atol=5e-4)
        assert pooled.aggregator_revenue == pytest.approx(ref.aggregator_revenue, abs=1e-5)
        np.testing.assert_allclose(pooled.imbalance_buy, ref.imbalance_buy, atol=1e-4)
    assert pooled.over_limit_kw == full.over_limit_kw == 0.0


def test_a_clearing_the_pooled_problem_cannot_route_is_solved_in_full(monkeypatch):
    # a trade limit of 0.05 kW: the pooled solution's nets cannot be routed, so the full problem (with its
    # limits) is solved, and it is central's
    case = random_case(3, 4, 3)
    used = _route_used(monkeypatch)
    tight = dm.clear_market(case, stages=2, trade_limit=0.05)
    assert used == [False]
    central = dm.clear_market(case, stages=2, method="central", trade_limit=0.05)
    assert tight.objective == pytest.approx(central.objective, rel=1e-9, abs=1e-7)
    np.testing.assert_allclose(tight.day_ahead.to_numpy(), central.day_ahead.to_numpy(), atol=1e-4)


def test_the_objective_of_a_two_stage_result_is_its_problems_whatever_the_route():
    # the fixed-position pieces and the pooled route compute Operation.objective from the arrays: it is the
    # optimal value of the two-stage problem (day-ahead, imbalances, position tie-break), as central reports it
    case = random_case(9, 5, 3)
    central = dm.clear_market(case, stages=2, method="central")
    assert dm.clear_market(case, stages=2).objective == pytest.approx(central.objective, rel=1e-9, abs=1e-7)
    fixed = [dm.clear_market(case, stages=2, method=m, day_ahead=central.day_ahead) for m in ("central", "decomposed")]
    assert fixed[1].objective == pytest.approx(fixed[0].objective, rel=1e-9, abs=1e-7)


# --------------------------------------------------------------------------------------- VSS and EVPI
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4), s=st.integers(2, 4), up=st.floats(1.1, 3.0))
def test_vss_and_evpi_are_never_negative(seed, n, s, up):
    case = random_case(seed, n, s).replace(market={"imbalance_buy_ratio": up})
    for mode in ("market", "independent"):
        values = twostage.stochastic_value(case, mode)
        # exact up to the tie-breaks (epsilon, and the position's epsilon / N), whose cost bounds the gap
        slack = 2e-3 * case.n_homes + 1e-6
        assert values["vss_usd"] >= -slack and values["evpi_usd"] >= -slack
        assert values["vss_usd"] == pytest.approx(values["eev_usd"] - values["rp_usd"])
        assert values["evpi_usd"] == pytest.approx(values["rp_usd"] - values["ws_usd"])


def one_scenario_case(seed: int) -> dm.Case:
    """Four homes, one scenario, k^up = 1.3: the EEV problem fixes the position at the optimum itself, where the
    community's import equals the purchase in some hours (a degenerate problem; Clarabel stalls short of 1e-12)."""
    down = {2: 0.7, 20: 0.0}[seed]
    case = random_case(seed, n_homes=4, n_scenarios=1, mean_lmp=0.035)
    return case.replace(market={"imbalance_buy_ratio": 1.3, "imbalance_sell_ratio": down})


@pytest.mark.parametrize("seed", [2, 20])
def test_one_scenario_has_no_stochastic_value(seed):
    # with one scenario the mean scenario is the scenario: EV = RP = WS and VSS = EVPI = 0 up to the tie-breaks
    case = one_scenario_case(seed)
    slack = 2e-3 * case.n_homes
    for solver in ("PIQP", "CLARABEL"):
        values = twostage.stochastic_value(case, solver=solver)
        assert abs(values["vss_usd"]) <= slack and abs(values["evpi_usd"]) <= slack
        assert values["eev_usd"] == pytest.approx(values["rp_usd"], abs=1e-6)


def test_stochastic_value_recomputes_its_parts():
    case = random_case(11, 3, 3)
    values = twostage.stochastic_value(case)
    assert values["ws_usd"] == pytest.approx(cost(dm.clear_market(case)), abs=1e-9)
    assert values["rp_usd"] == pytest.approx(cost(dm.clear_market(case, stages=2)), abs=1e-9)
    mean = twostage.mean_scenario_case(case)
    np.testing.assert_allclose(mean.load[:, 0], np.einsum("s,nst->nt", case.probability, case.load))
    table = twostage.stochastic_values(case)
    assert list(table.index) == ["market", "M1", "delta_c"]
    with pytest.raises(ValueError, match="mode must be"):
        twostage.stochastic_value(case, "M3")


# ---------------------------------------------------------------------------------------- bad input
def test_imbalance_ratios_are_validated(tmp_path):
    case = random_case(0, 2, 2)
    with pytest.raises(dm.CaseError, match="imbalance_buy_ratio") as info:
        case.replace(market={"imbalance_buy_ratio": 1.0})
    assert info.value.file == "market.json"
    with pytest.raises(dm.CaseError, match="imbalance_sell_ratio"):
        case.replace(market={"imbalance_sell_ratio": 0.95})
    steep = case.replace(market={"buy_ratio": 1.6})  # fine for one stage; the default k^up = 1.5 is below it
    dm.clear_market(steep)
    with pytest.raises(dm.CaseError, match="imbalance_buy_ratio"):
        dm.clear_market(steep, stages=2)
    with pytest.raises(ValueError, match="stages must be"):
        dm.clear_market(case, stages=3)
    with pytest.raises(ValueError, match="pass stages=2"):
        dm.solve_independent(case, day_ahead=(np.zeros(HOURS), np.zeros(HOURS)))
    with pytest.raises(ValueError, match="buy_kw must be 24"):
        dm.clear_market(case, stages=2, day_ahead=(np.zeros(3), np.zeros(HOURS)))
    with pytest.raises(ValueError, match="buy_kw must be 24"):
        dm.clear_market(case, stages=2, day_ahead=(-np.ones(HOURS), np.zeros(HOURS)))
    with pytest.raises(ValueError, match="no two-stage version"):
        dm.clear_market(case, stages=2, method="coordinated")


def test_optional_keys_are_saved_only_when_given(tmp_path):
    case = random_case(0, 2, 2)
    assert "imbalance_buy_ratio" not in (case.save(tmp_path / "a") / "market.json").read_text()
    assert "imbalance_buy_ratio" not in repr(case)
    given = case.replace(market={"imbalance_buy_ratio": 2.0})
    loaded = dm.load_case(given.save(tmp_path / "b"))
    assert loaded.market.imbalance_ratios == (2.0, 0.5)
    assert dm.case_fingerprint(loaded) != dm.case_fingerprint(case)
    assert dm.case_fingerprint(case.replace(market={})) == dm.case_fingerprint(case)


# ----------------------------------------------------------------------------------- the held-out day
def test_hold_out_and_the_realised_settlement():
    case = random_case(5, 4, 4)
    held = case.scenarios[1]
    ante, real = twostage.hold_out(case, held)
    assert held not in ante.scenarios and real.scenarios == (held,)
    assert ante.probability.sum() == pytest.approx(1.0) and real.probability.tolist() == [1.0]
    day = twostage.realised_day(case, held)
    m1, market = day.realised_m1, day.realised_market
    # the realised day is solved at the ex-ante positions
    pd.testing.assert_frame_equal(market.day_ahead, day.ex_ante_market.day_ahead)
    pd.testing.assert_frame_equal(m1.day_ahead, day.ex_ante_m1.day_ahead)
    for rule, mode in (("equal", "M2"), ("contribution", "M3")):
        ante_payment = day.ex_ante[rule].payment
        expected = m1.home_cost - market.home_cost + ante_payment  # recomputed: C0(day) - (C*(day) - Gamma)
        np.testing.assert_allclose(day.homes[f"{mode}_ex_ante_usd"], expected)
        post = day.ex_post[rule]
        if post is not None:  # ex post every home gets its share of the day's surplus
            assert post.home_gain.sum() + post.aggregator_gain == pytest.approx(day.realised_surplus)
    assert day.realised_surplus == pytest.approx(dm.cooperative_surplus(m1, market, real))
    table = twostage.realised_table(day)
    assert table.loc[("M2", "expected"), "delta_c_usd"] == pytest.approx(day.expected_surplus)
    with pytest.raises(dm.CaseError, match="no scenario 'x'"):
        twostage.hold_out(case, "x")
    with pytest.raises(dm.CaseError, match="one scenario"):
        twostage.hold_out(real, held)


def test_the_year_default_prices_are_the_data_layers():
    from desmarket.data import DEFAULT_PRICES

    assert twostage.DEFAULT_PRICES == DEFAULT_PRICES


def test_a_given_wait_and_see_result_is_checked_and_reused():
    case = random_case(12, 3, 3)
    ws = {"market": dm.clear_market(case), "independent": dm.solve_independent(case)}
    variant = case.replace(market={"imbalance_buy_ratio": 2.0})  # WS does not depend on the imbalance ratios
    pd.testing.assert_frame_equal(twostage.stochastic_values(variant, ws=ws), twostage.stochastic_values(variant))
    m1_solved = dm.solve_independent(
        variant, stages=2, day_ahead=dm.solve_independent(twostage.mean_scenario_case(variant), stages=2).day_ahead
    )
    assert twostage.stochastic_value(variant, "independent")["eev_usd"] == pytest.approx(cost(m1_solved), abs=1e-9)
    with pytest.raises(ValueError, match="ws must be the one-stage market"):
        twostage.stochastic_value(case, "market", ws=ws["independent"])
    with pytest.raises(dm.MismatchError):
        twostage.stochastic_value(random_case(13, 3, 3), "market", ws=ws["market"])


def test_a_day_without_trade_settles_m2_and_leaves_m3_undefined():
    # one home: nobody to trade with, so M3 (Eq. 22) is undefined ex ante; M2 still settles the day
    case = random_case(2, 1, 3)
    day = twostage.realised_day(case, case.scenarios[0])
    assert day.ex_ante["contribution"] is None and day.ex_post["contribution"] is None
    assert day.homes["M3_ex_ante_usd"].isna().all() and day.homes["M2_ex_ante_usd"].notna().all()
    table = twostage.realised_table(day)
    assert table.loc["M3"].isna().all().all()
    assert table.loc[("M2", "expected"), "delta_c_usd"] == pytest.approx(day.expected_surplus)


def test_a_solver_given_is_the_solver_of_the_deterministic_equivalent():
    case = random_case(3, 2, 2)
    assert dm.clear_market(case, stages=2, solver="CLARABEL").solver == "CLARABEL"
    assert dm.clear_market(case, stages=2).solver == "PIQP"


def test_piqp_solves_a_deterministic_equivalent_it_used_to_call_infeasible():
    # measured homes, 200 x 10: before the position's own partial sums and TWO_STAGE_OPTIONS' infeasibility and
    # refinement settings (2026-12-02) PIQP called it infeasible and Clarabel's fallback solved it (80 s)
    from desmarket import data

    case = data.build_case(n_homes=200, n_scenarios=10, seed=0)
    assert dm.clear_market(case, stages=2).solver == "PIQP"  # no fallback


def test_the_position_partial_sums_do_not_move_the_optimum(monkeypatch):
    from desmarket import formulation

    case = random_case(4, 9, 3)
    reference = dm.clear_market(case, stages=2, method="central")
    for group in (2, formulation.TRADE_GROUP):
        monkeypatch.setattr(formulation, "POSITION_GROUP", group)
        market = dm.clear_market(case, stages=2)
        assert market.objective == pytest.approx(reference.objective, rel=1e-8, abs=1e-7)
        np.testing.assert_allclose(market.day_ahead.to_numpy(), reference.day_ahead.to_numpy(), atol=1e-4)
