"""Real prices: negative LMPs and price spikes solve and settle (issue 17, "Real prices refused").

Wholesale prices [choice, desmarket.case.wholesale_prices]: lambda^b = LMP + (k^b - 1)|LMP| and
lambda^s = LMP - (1 - k^s)|LMP| -- Eq. 4 for LMP >= 0, with the buy price kept above the sell price below 0.
Contributions [choice, settlement.market_contribution]: c = |lambda| |x| (Eq. 21 wherever lambda >= 0).

Every case here is hand-solvable: two homes, one scenario, no utility (a = b = 0), so a home minimises its
bill and the community its wholesale cost; all numbers below are worked out in the comments.
"""

import dataclasses

import numpy as np
import pytest

import desmarket as dm
from desmarket.case import PLAUSIBLE_RANGES, wholesale_prices

T = 24
NO_BATTERY = dict(battery_kwh=0.0, battery_kw=0.0)


def two_homes(lmp, load, pv, **home_params):
    """Home A (index 0) and home B (1), one scenario, no utility; ``load``/``pv`` map (home, hour) -> kW."""
    demand, sun = np.zeros((2, T)), np.zeros((2, T))
    for (i, t), kw in load.items():
        demand[i, t] = kw
    for (i, t), kw in pv.items():
        sun[i, t] = kw
    return dm.create_case(demand, sun, utility_a=0.0, utility_b=0.0, lmp=lmp, home_ids=["A", "B"], **home_params)


def lmp_with(base, **hours):
    lmp = np.full(T, base)
    for name, value in hours.items():
        lmp[int(name[1:])] = value
    return lmp


def solve(case, method="central"):
    return dm.solve_independent(case, method=method), dm.clear_market(case, method=method)


def check_settles(case, m1, market, rho=0.2):
    """M3 is defined: alpha are shares summing to 1 - rho, every gain >= 0, gains sum to Delta C."""
    m3 = dm.settle(case, m1, market, rho)
    assert np.all(m3.alpha >= 0) and m3.alpha.sum() == pytest.approx(1 - rho)
    assert m3.surplus > 0 and np.all(m3.home_gain >= -1e-9) and m3.aggregator_gain >= -1e-9
    assert m3.home_gain.sum() + m3.aggregator_gain == pytest.approx(m3.surplus)
    return m3


# ------------------------------------------------------------------------------ the price rule
def test_wholesale_prices_are_eq4_for_positive_lmp_and_keep_buy_above_sell_for_negative():
    lmp = np.array([0.05, 0.0, -0.1, 9.0, -0.25, 1e-9, -1e-9])
    buy, sell = wholesale_prices(lmp, 1.1, 0.9)
    positive = lmp >= 0
    assert np.array_equal(buy[positive], 1.1 * lmp[positive])  # bit for bit: the reference run is unchanged
    assert np.array_equal(sell[positive], 0.9 * lmp[positive])
    # LMP = -0.1: buy = -0.1 + 0.1 * 0.1 = -0.09, sell = -0.1 - 0.1 * 0.1 = -0.11
    assert buy[2] == pytest.approx(-0.09) and sell[2] == pytest.approx(-0.11)
    assert buy[4] == pytest.approx(-0.225) and sell[4] == pytest.approx(-0.275)
    assert np.all(buy >= sell) and np.all(buy >= lmp) and np.all(sell <= lmp)
    b, s = wholesale_prices(lmp, 1.3, 0.6)  # the general formula, other ratios
    assert np.allclose(b, lmp + 0.3 * np.abs(lmp)) and np.allclose(s, lmp - 0.4 * np.abs(lmp))


def test_the_case_prices_with_the_rule():
    case = two_homes(lmp_with(0.05, h3=-0.1), {(1, 12): 1.0}, {})
    assert case.buy_price[3] == pytest.approx(-0.09) and case.sell_price[3] == pytest.approx(-0.11)
    assert np.array_equal(np.delete(case.buy_price, 3), np.full(T - 1, 1.1 * 0.05))
    assert np.all(case.buy_price >= case.sell_price)


def test_equal_ratios_give_one_price():
    case = two_homes(
        lmp_with(0.05, h3=-0.1),
        {(1, 12): 1.0},
        {},
        market={"net_metering_usd_per_kwh": 0.03, "buy_ratio": 1.0, "sell_ratio": 1.0, "regularization": 1e-5},
    )
    assert np.array_equal(case.buy_price, case.lmp) and np.array_equal(case.sell_price, case.lmp)


# ------------------------------------------------------------------------------ the bound
def test_negative_lmps_down_to_the_plausible_floor_load(tmp_path):
    low, high, reason = PLAUSIBLE_RANGES["lmp_usd_per_kwh"]
    assert low <= -0.25 and high >= 9.0 and "floor" in reason  # ERCOT's offer floor -250 $/MWh is accepted
    case = two_homes(lmp_with(0.05, h2=-0.25, h3=-0.01, h4=low), {(1, 12): 1.0}, {})
    again = dm.load_case(case.save(tmp_path / "case"))
    assert again.lmp[2] == -0.25 and again.lmp[4] == low
    assert np.isfinite(dm.clear_market(again, method="central").objective)  # the floor solves, too
    frames = case.to_frames()
    frames["prices"].loc[5, "lmp_usd_per_kwh"] = 2 * low  # a $/MWh price written in the $/kWh column
    with pytest.raises(dm.CaseError, match="outside the accepted range") as info:
        dm.Case.from_frames(**frames)
    assert (info.value.file, info.value.column) == ("prices.csv", "lmp_usd_per_kwh")


# ------------------------------------------------------------------------------ the clearing
def pv_day():
    """A has 3 kW of PV at hours 10 and 12; B's load (fixed: load factors 1) is 1 kW at hours 10 and 12 and 2 kW
    at hour 20. LMP 0.05 $/kWh, but -0.1 at hours 12 and 20."""
    return two_homes(
        lmp_with(0.05, h12=-0.1, h20=-0.1),
        {(1, 10): 1.0, (1, 12): 1.0, (1, 20): 2.0},
        {(0, 10): 3.0, (0, 12): 3.0},
        load_min_factor=1.0,
        load_max_factor=1.0,
        **NO_BATTERY,
    )


def test_clearing_price_sign_in_positive_and_negative_hours():
    """Hour 10 (LMP 0.05): A's PV covers B's 1 kW and the other 2 kW are exported -> price lambda^s = 0.045.
    Hour 12 (LMP -0.1): the same PV and load, but exporting would cost 0.11 $/kWh: A curtails its PV and B
    imports, which earns 0.09 -> price lambda^b = -0.09 < 0 (an extra kWh in the market displaces B's import).
    Hour 20: B imports -> -0.09. So in a negative-price hour the community never exports (curtailing is free).
    M1 at retail: A sells all its PV at q, B buys its load. Wholesale cost of the M1 flows: hour 10
    1 x 0.055 - 3 x 0.045 = -0.08; hour 12 1 x -0.09 + 3 x 0.11 = 0.24; hour 20 2 x -0.09 = -0.18; total -0.02.
    Market: -2 x 0.045 - 0.09 - 0.18 = -0.36. Delta C = 0.34; both homes trade 1 kWh at 0.045: alpha 0.4 each."""
    case = pv_day()
    m1, market = solve(case)
    price = market.price[0]
    assert price[10] == pytest.approx(0.045, abs=1e-7)
    assert price[12] == pytest.approx(-0.09, abs=1e-7) and price[20] == pytest.approx(-0.09, abs=1e-7)
    assert market.pv_used[0, 0, 12] == pytest.approx(0.0, abs=1e-5)  # curtailed rather than exported at a loss
    assert np.allclose(market.trade[:, 0, 10], [1.0, -1.0], atol=1e-5) and np.allclose(market.trade[:, 0, 12], 0)
    assert np.allclose(market.community_net_load[0, [10, 12, 20]], [-2.0, 1.0, 2.0], atol=1e-5)
    assert not market.balanced[0, [10, 12, 20]].any() and not market.congested[0, [10, 12, 20]].any()
    m3 = check_settles(case, m1, market)
    assert m3.surplus == pytest.approx(0.34, abs=1e-6)
    assert np.allclose(m3.alpha, [0.4, 0.4])


def test_a_trade_in_a_negative_price_hour_counts_at_the_price_magnitude():
    """Every hour has a negative LMP: -0.5 at hour 5, -0.1 elsewhere. A's battery (2 kWh, 1 kW, no losses,
    starts and ends at 1 kWh) charges 1 kWh at hour 5, earning 0.45, and returns it at hour 12, where B's
    load (2.4 kW, the upper bound: every kWh earns 0.09) would otherwise be imported: A supplies 1 kW to B
    at the clearing price lambda^b = -0.09. Contributions (Eq. 21, |lambda| |x|): 0.09 each, alpha 0.4 each.
    M1: A idles (retail arbitrage cannot pay with no load of its own), B buys its 2 kWh: wholesale cost
    -0.18. Market: -0.45 (hour 5) - 0.09 x 1.4 (hour 12) = -0.576. Delta C = 0.396."""
    case = two_homes(
        lmp_with(-0.1, h5=-0.5),
        {(1, 12): 2.0},
        {},
        battery_kwh=[2.0, 0.0],
        battery_kw=[1.0, 0.0],
        soc_min=0.0,
        soc_max=1.0,
        soc_initial=0.5,
        eta_charge=1.0,
        eta_discharge=1.0,
    )
    m1, market = solve(case)
    assert market.price[0, 5] == pytest.approx(-0.45, abs=1e-7)
    assert market.price[0, 12] == pytest.approx(-0.09, abs=1e-7)
    assert market.charge[0, 0, 5] == pytest.approx(1.0, abs=1e-4)
    assert market.discharge[0, 0, 12] == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(market.trade[:, 0, 12], [1.0, -1.0], atol=1e-4)
    assert np.allclose(dm.market_contribution(case, market), [0.09, 0.09], atol=1e-6)
    m3 = check_settles(case, m1, market)
    assert m3.surplus == pytest.approx(0.396, abs=1e-6)
    assert np.allclose(m3.alpha, [0.4, 0.4], atol=1e-6)
    assert np.allclose(m3.home_gain, [0.4 * 0.396] * 2, atol=1e-6)


def test_contribution_is_eq21_wherever_the_price_is_non_negative():
    """|lambda| |x| equals Eq. 21's lambda |x| bit for bit when no price is negative (the reference run)."""
    case = two_homes(lmp_with(0.05), {(1, 10): 1.0}, {(0, 10): 3.0}, **NO_BATTERY)
    _, market = solve(case)
    market = dataclasses.replace(market, price=np.maximum(market.price, 0.0))  # drop +-1e-11 noise of idle hours
    eq21 = np.einsum("s,st,nst->n", case.probability, market.price, np.abs(market.trade))
    assert np.array_equal(dm.market_contribution(case, market), eq21)
    assert dm.market_contribution(case, market) == pytest.approx([0.045, 0.045])


# ------------------------------------------------------------------------------ spikes
def test_a_9_dollar_spike_solves_and_settles():
    """Hour 18 at 9 $/kWh (ERCOT's former cap, 9,000 $/MWh): A's 3 kW PV covers B's 1 kW load (its daily
    minimum: each kWh forgoes an 8.1 $ export) and the rest is exported -> price lambda^s = 8.1.
    Delta C = the spread on the kWh matched locally: (9.9 - 8.1) x 1 = 1.8 $."""
    case = two_homes(lmp_with(0.05, h18=9.0), {(1, 18): 1.0}, {(0, 18): 3.0}, **NO_BATTERY)
    m1, market = solve(case)
    assert market.price[0, 18] == pytest.approx(8.1, abs=1e-6)
    assert np.allclose(market.trade[:, 0, 18], [1.0, -1.0], atol=1e-5)
    m3 = check_settles(case, m1, market)
    assert m3.surplus == pytest.approx(1.8, abs=1e-5)
    assert np.allclose(m3.alpha, [0.4, 0.4])


@pytest.mark.parametrize("method", ["decomposed", "coordinated"])
def test_every_method_clears_a_negative_price_day(method):
    """The exact pieces and the market process agree with the central clearing on a negative-price day."""
    case = pv_day()
    _, ref = solve(case)
    m1, market = solve(case, method)
    tol = 1e-4 if method == "coordinated" else 1e-7
    assert np.allclose(market.price[0, [10, 12, 20]], ref.price[0, [10, 12, 20]], atol=tol)
    check_settles(case, m1, market)
