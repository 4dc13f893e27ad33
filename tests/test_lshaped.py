"""The L-shaped decomposition of the two-stage clearing (issue 20, :mod:`desmarket.lshaped`): the route method
"decomposed" takes when asked for. It must find the optimum of the deterministic equivalent and of the central
(Clarabel) reference: objective, Delta C and the day-ahead position; the newsvendor case its known quantile; an
iteration cap too small to close the gap is an error, never a result. ``lshaped=LShaped()`` asks for the route
(the default is the deterministic equivalent, measured faster)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import desmarket as dm
from desmarket import engine, lshaped, twostage
from desmarket.case import HOURS
from desmarket.formulation import FirstStage, case_block
from desmarket.model import trade_limits
from desmarket.synthetic import random_case

LMP = 0.04
HOUR = 12


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        yield


def newsvendor_case(p_low: float) -> dm.Case:
    """One home, loads of 2 and 5 kW in hour 12 only (fixed, no battery), flat LMP: buy the smallest load whose
    cumulative probability reaches (k^up - k^b)/(k^up - k^dn) = (1.5 - 1.1)/(1.5 - 0.5) = 0.4."""
    cube = np.zeros((1, 2, HOURS))
    cube[0, :, HOUR] = [2.0, 5.0]
    return dm.create_case(
        cube,
        np.zeros((1, 2, HOURS)),
        utility_a=-0.002,
        utility_b=0.3,
        lmp=np.full(HOURS, LMP),
        probability=np.array([p_low, 1 - p_low]),
        battery_kwh=0.0,
        battery_kw=0.0,
        load_min_factor=1.0,
        load_max_factor=1.0,
    )


def test_the_route_is_the_deterministic_equivalent_unless_the_lshaped_method_is_asked_for():
    case = random_case(0, n_homes=4, n_scenarios=3)
    assert engine.two_stage_route() == "deterministic_equivalent"
    assert engine.two_stage_route(lshaped.LShaped()) == "lshaped"
    assert dm.clear_market(case, stages=2, chunk_rows=1).convergence is None  # the size does not choose it
    with pytest.raises(TypeError, match="LShaped"):
        engine.two_stage_route({"gap": 1e-6})


@pytest.mark.parametrize("p_low", [0.3, 0.5])
def test_newsvendor_by_lshaped_buys_the_known_quantile(p_low):
    case = newsvendor_case(p_low)
    market = dm.clear_market(case, stages=2, n_jobs=1, lshaped=lshaped.LShaped())
    assert market.convergence is not None and market.convergence["gap"].iloc[-1] <= 1e-8
    expected = 2.0 if p_low >= 0.4 else 5.0
    assert market.day_ahead["buy_kw"][HOUR] == pytest.approx(expected, abs=1e-5)
    assert market.day_ahead.drop(index=HOUR).to_numpy().max() < 1e-5 and market.day_ahead["sell_kw"].max() < 1e-5


def test_lshaped_finds_the_optimum_of_central_and_the_deterministic_equivalent():
    """A random community with batteries and flexible loads (2 homes x 2 scenarios, about 130 iterations)."""
    case = random_case(0, n_homes=2, n_scenarios=2)
    m1 = dm.solve_independent(case, stages=2)
    split = dm.clear_market(case, stages=2, n_jobs=1, lshaped=lshaped.LShaped())
    whole = dm.clear_market(case, stages=2)  # the deterministic equivalent (PIQP)
    central = dm.clear_market(case, stages=2, method="central")  # Clarabel
    assert split.convergence is not None and whole.convergence is None
    table = split.convergence
    assert table["gap"].iloc[-1] <= 1e-8 and (table["lower_usd"] <= table["upper_usd"] + 1e-9).all()
    assert table["upper_usd"].is_monotonic_decreasing
    # the upper bound is the clearing objective of the returned operation, tie-breaks included
    objective = twostage.community_cost(split) + split.regularization_cost
    assert table["upper_usd"].iloc[-1] == pytest.approx(objective, abs=1e-6)
    # Tolerances: the objective (tie-breaks included) is within the gap, 1e-8 x |F|; the costs without the
    # tie-breaks and Delta C within 1e-5 $. The position is unique only through its tie-break w |x|^2, w = eps / N =
    # 5e-6 $/kW^2, so an objective within d $ of the optimum bounds it only to about sqrt(d / w): 1e-2 kW (measured
    # 4.8e-3 kW, where the deterministic equivalent and central agree to 1e-7 kW).
    for reference in (whole, central):
        objective = twostage.community_cost(reference) + reference.regularization_cost
        assert table["upper_usd"].iloc[-1] == pytest.approx(objective, abs=1e-8 * abs(objective))
        assert twostage.community_cost(split) == pytest.approx(twostage.community_cost(reference), abs=1e-5)
        assert dm.cooperative_surplus(m1, split) == pytest.approx(dm.cooperative_surplus(m1, reference), abs=1e-5)
        np.testing.assert_allclose(split.day_ahead.to_numpy(), reference.day_ahead.to_numpy(), atol=1e-2)
        assert split.aggregator_revenue == pytest.approx(reference.aggregator_revenue, abs=1e-5)
        np.testing.assert_allclose(split.home_cost, reference.home_cost, atol=1e-5)


def test_a_tiny_iteration_cap_raises_not_converged():
    case = random_case(0, n_homes=2, n_scenarios=2)
    with pytest.raises(dm.NotConvergedError, match="L-shaped") as info:
        dm.clear_market(case, stages=2, n_jobs=1, lshaped=lshaped.LShaped(max_iterations=2))
    assert len(info.value.convergence) == 2 and info.value.convergence["gap"].iloc[-1] > 1e-8


def test_worker_processes_give_the_same_result():
    case = newsvendor_case(0.3)
    one = dm.clear_market(case, stages=2, n_jobs=1, lshaped=lshaped.LShaped())
    two = dm.clear_market(
        case, stages=2, n_jobs=2, lshaped=lshaped.LShaped()
    )  # one scenario piece in each of two processes
    np.testing.assert_array_equal(one.day_ahead.to_numpy(), two.day_ahead.to_numpy())
    np.testing.assert_array_equal(one.net_load, two.net_load)
    assert twostage.community_cost(one) == twostage.community_cost(two) and one.convergence.equals(
        two.convergence.assign(seconds=one.convergence.seconds)
    )


def test_the_cuts_are_the_scenario_cost_slopes():
    """The subgradient of a piece (minus the duals of its balance rows) is the finite difference of its cost
    where the position lies off every kink, b = 0.9 and a = 0.9 times the community's flows."""
    case = random_case(0, n_homes=6, n_scenarios=2)
    piece = lshaped._Piece(
        case_block(case, np.arange(6) * 2, trade_limits(case, None)), FirstStage.of_case(case), "PIQP", None, True
    )
    imports = np.maximum(case.load[:, 0] - case.pv[:, 0], 0).sum(axis=0)
    exports = np.maximum(case.pv[:, 0] - case.load[:, 0], 0).sum(axis=0)
    x = np.concatenate([0.9 * imports, 0.9 * exports])
    base = piece.evaluate(x, False)
    for k in (3, 18, 24 + 12):
        if x[k] <= 0:
            continue
        step = np.zeros_like(x)
        step[k] = 1e-3
        slope = (piece.evaluate(x + step, False)["value"] - piece.evaluate(x - step, False)["value"]) / 2e-3
        assert slope == pytest.approx(base["gradient"][k], abs=1e-5)


def test_lshaped_options_are_checked():
    for bad in ({"gap": 0.0}, {"max_iterations": 1}, {"level": 1.0}, {"reuse_rows": -1}):
        with pytest.raises(ValueError, match="LShaped"):
            lshaped.LShaped(**bad)
