"""Similar-day scenarios, resampled homes, and build_case (the paper case and its variants)."""

import numpy as np
import pandas as pd
import pytest

import desmarket
import desmarket.data as D


@pytest.fixture(scope="module")
def paper_case():
    return D.build_case()


# ============================================================================== scenarios
def test_similar_days_rule(measured, flags):
    homes = D.paper_homes(measured)
    days = D.similar_days("2017-06-13", 10, seed=0, homes=homes, measured=measured, flags=flags)
    assert len(days) == 10 and pd.Timestamp("2017-06-13") in days
    assert list(days) == sorted(days)
    assert (days.month == 6).all() and (D.weekday_class(days) == "weekday").all()
    sub = flags[flags.index.get_level_values("home").isin(homes) & flags.index.get_level_values("date").isin(days)]
    assert len(sub) == 100 and not sub["flagged"].any()
    again = D.similar_days("2017-06-13", 10, seed=0, homes=homes, measured=measured, flags=flags)
    other = D.similar_days("2017-06-13", 10, seed=1, homes=homes, measured=measured, flags=flags)
    assert list(days) == list(again) and list(days) != list(other)


def test_weekend_target_draws_weekends_and_holidays(measured, flags):
    days = D.similar_days("2017-07-08", 8, seed=0, homes=["B01", "B09"], measured=measured, flags=flags)
    assert (D.weekday_class(days) == "weekend").all()
    assert set(D.weekday_class(pd.to_datetime(["2017-07-04", "2017-07-05"]))) == {"weekend", "weekday"}
    pool = D.scenario_pool("2017-07-08", ["B01", "B09"], measured, flags)
    assert pd.Timestamp("2017-07-04") in pool  # Independence Day counts as a weekend day


def test_too_many_scenarios_raises(measured, flags):
    with pytest.raises(D.DataError, match="clean weekend days"):
        D.similar_days("2017-07-08", 30, homes=["B01"], measured=measured, flags=flags)


def test_flagged_or_absent_target_date_raises(measured, flags):
    with pytest.raises(D.DataError, match="flagged 'load_dropout'") as err:
        D.similar_days("2017-06-13", 5, homes=["B01", "B06"], measured=measured, flags=flags)
    assert err.value.home == "B06"
    with pytest.raises(D.DataError, match="dst_change"):
        D.similar_days("2016-11-06", 3, homes=["B01"], measured=measured, flags=flags)
    with pytest.raises(D.DataError, match="not in the data"):
        D.similar_days("2019-06-13", 3, homes=["B01"], measured=measured, flags=flags)


def test_build_scenarios_takes_the_measured_days(measured, flags):
    sc = D.build_scenarios("2017-06-13", 4, seed=2, homes=["B10", "B01"], measured=measured, flags=flags)
    assert sc.load.shape == sc.pv.shape == (2, 4, 24)
    assert sc.probability.tolist() == [0.25] * 4
    k = list(sc.days).index(pd.Timestamp("2017-06-13"))
    day = measured[(measured["home"] == "B10") & (measured["time"].dt.normalize() == pd.Timestamp("2017-06-13"))]
    np.testing.assert_array_equal(sc.load[0, k], day["load_kw"].to_numpy())
    np.testing.assert_array_equal(sc.pv[0, k], day["pv_kw"].to_numpy())


def test_resampled_homes(measured, flags):
    base = D.build_scenarios("2017-06-13", 5, seed=0, homes=["B01", "B09", "B10"], measured=measured, flags=flags)
    extra = D.resample_homes(base, 40, seed=1, measured=measured, flags=flags)
    assert extra.load.shape == (40, 5, 24) and extra.days.equals(base.days)
    assert extra.homes[0].startswith("R0001-B")
    # PV is the source's PV on the same day, scaled by one factor per home within PV_SCALE
    src = [base.homes.index(h.split("-")[1]) for h in extra.homes]
    ratio = extra.pv.sum(axis=(1, 2)) / base.pv[src].sum(axis=(1, 2))
    assert ((ratio >= D.scenarios.PV_SCALE[0]) & (ratio <= D.scenarios.PV_SCALE[1])).all()
    np.testing.assert_allclose(extra.pv / ratio[:, None, None], base.pv[src])
    again = D.resample_homes(base, 40, seed=1, measured=measured, flags=flags)
    np.testing.assert_array_equal(again.load, extra.load)


# ============================================================================= build_case
def test_paper_case(paper_case):
    case = paper_case
    assert isinstance(case, desmarket.Case)
    assert case.home_ids == tuple(D.paper_homes())
    assert case.n_scenarios == 10 and "2017-06-13" in case.scenarios
    assert np.allclose(case.probability, 0.1)
    np.testing.assert_allclose(case.retail, desmarket.paper_retail_tariff())
    assert case.market == desmarket.Market()
    for col, value in desmarket.DEFAULT_HOME.items():
        assert (case.column(col) == value).all(), col
    # utility coefficients: cents drawn as in Section 3.1, stored in $
    a, b = case.column("utility_a"), case.column("utility_b")
    assert ((a >= -0.005) & (a <= -0.001)).all() and ((b >= 0.20) & (b <= 0.50)).all()
    # LMP in $/kWh, the ERCOT day 2022-06-14 (the default source): afternoon peak
    assert 0.005 < case.lmp.mean() < 0.2 and case.lmp.argmax() in range(14, 21)
    # feasibility: loads well under the 10 kW connection
    assert case.load.max() < 8.0
    assert (0.8 * case.load - case.pv - case.column("battery_kw")[:, None, None] <= 10).all()


def test_build_case_is_deterministic(paper_case):
    again = D.build_case()
    pd.testing.assert_frame_equal(again.homes, paper_case.homes)
    np.testing.assert_array_equal(again.load, paper_case.load)
    np.testing.assert_array_equal(again.lmp, paper_case.lmp)
    other = D.build_case(seed=1)
    assert not np.array_equal(other.homes["utility_a"], paper_case.homes["utility_a"])
    np.testing.assert_array_equal(other.lmp, paper_case.lmp)  # ERCOT prices: the seed draws no LMP
    a, b = (D.build_case(n_homes=2, n_scenarios=2, seed=k, prices="pjm-like").lmp for k in (0, 1))
    assert not np.array_equal(a, b)  # the synthetic one it does


def test_build_case_roundtrip(tmp_path, paper_case):
    loaded = desmarket.load_case(paper_case.save(tmp_path / "paper"))
    np.testing.assert_allclose(loaded.load, paper_case.load)
    np.testing.assert_allclose(loaded.lmp, paper_case.lmp)
    assert loaded.scenarios == paper_case.scenarios


def test_large_community_keeps_the_first_homes(paper_case):
    big = D.build_case(n_homes=200, n_scenarios=10)
    assert big.n_homes == 200
    usable = D.usable_homes()
    assert big.home_ids[: len(usable)] == tuple(usable)
    assert all(h.startswith("R") for h in big.home_ids[len(usable) :])
    np.testing.assert_array_equal(big.homes["utility_a"].to_numpy()[:10], paper_case.homes["utility_a"].to_numpy())
    assert big.load.max() < 0.8 * 10 + 5  # feasible: 0.8 D - PV - 5 kW <= 10 kW


def test_prices_from_array_and_series(paper_case):
    lmp = np.linspace(20, 80, 24)
    case = D.build_case(prices=lmp)
    np.testing.assert_allclose(case.lmp, lmp / 1000)
    with pytest.raises(D.DataError, match="look like"):
        D.build_case(prices=lmp / 1000)
    with pytest.raises(D.DataError, match="24 hourly"):
        D.build_case(prices=np.ones(23) * 30)
    series = D.synthetic_lmp(2025, seed=5)
    case = D.build_case(prices=series, price_date="2025-06-10")
    np.testing.assert_allclose(case.lmp, D.lmp_for_date(series, "2025-06-10") / 1000)
    with pytest.raises(D.DataError, match="0 hours"):
        D.build_case(prices=series)  # the series does not cover 2017-06-13
    np.testing.assert_array_equal(case.load, paper_case.load)


def test_explicit_homes_and_overrides():
    case = D.build_case(homes=["B03", "B05"], n_scenarios=3, battery_kwh=0.0, market=desmarket.Market(buy_ratio=1.2))
    assert case.home_ids == ("B03", "B05") and (case.column("battery_kwh") == 0).all()
    assert case.market.buy_ratio == 1.2
    with pytest.raises(D.DataError, match="pv_faulty") as err:
        D.build_case(homes=["B01", "B14"])
    assert err.value.home == "B14"
    with pytest.raises(D.DataError, match="unknown homes"):
        D.build_case(homes=["B99"])


def test_infeasible_profile_is_reported():
    with pytest.raises(D.DataError, match="connection") as err:
        D.build_case(n_scenarios=2, grid_limit_kw=1.0, battery_kw=0.0)
    assert err.value.home in D.paper_homes()


def test_utility_coefficients_do_not_depend_on_size():
    a10, b10 = D.utility_coefficients(10, seed=0)
    a1k, b1k = D.utility_coefficients(1000, seed=0)
    np.testing.assert_array_equal(a10, a1k[:10])
    np.testing.assert_array_equal(b10, b1k[:10])
    assert a1k.min() >= -0.005 and a1k.max() <= -0.001 and b1k.min() >= 0.2 and b1k.max() <= 0.5


@pytest.mark.parametrize("date", ["2017-03-12", "2016-11-06"])
def test_daylight_saving_day_is_refused_with_its_reason(date):
    """The measured data are local hourly: these days have 23 / 25 hours; the model's day has 24."""
    with pytest.raises(D.DataError, match="daylight-saving day"):
        D.build_case(n_homes=5, n_scenarios=3, date=date)
