"""The year study's library layer: one day -> one row, failed days kept with their reason, reruns identical."""

import warnings

import numpy as np
import pandas as pd
import pytest

from desmarket import RoutingWarning, data, io, year


@pytest.fixture(scope="module")
def rows(measured):
    days = ["2017-03-11", "2017-03-12", "2017-06-13"]  # the middle one is a daylight-saving day
    return year.claims_by_day(days, measured, n_jobs=1, n_homes=4, n_scenarios=3)


def test_one_row_per_day_and_failures_keep_their_reason(rows):
    assert list(rows.index) == ["2017-03-11", "2017-03-12", "2017-06-13"]
    assert rows.loc["2017-03-12", "status"] == "failed"
    assert "daylight-saving" in rows.loc["2017-03-12", "reason"]
    assert rows.loc["2017-03-12", "failure"] == "daylight-saving day"
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 2 and (ok["surplus_usd"] > 0).all()
    assert ok["balanced_share"].between(0, 1).all() and ok["congested_share"].between(0, 1).all()


def test_the_paper_day_row_is_the_paper_case_headline(rows, measured):
    from desmarket import report
    from desmarket.study import run_study

    case = data.build_case(n_homes=4, n_scenarios=3, date="2017-06-13", measured=measured)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        expected = report.headline(run_study(case, 0.2))
    # a row holds its table's precision (4 decimals, desmarket.daycache), whether it was reused or computed
    assert rows.loc["2017-06-13", "surplus_usd"] == round(expected["surplus_usd"], 4)


def test_rerun_and_workers_give_the_same_table(rows, measured):
    again = year.claims_by_day(["2017-03-11", "2017-03-12", "2017-06-13"], measured, n_jobs=2, n_homes=4, n_scenarios=3)
    pd.testing.assert_frame_equal(rows, again)


def test_summary_per_claim(rows):
    summary = year.claims_summary(rows, io.paper_claims())
    assert summary.loc["surplus_usd", "days"] == 2
    assert summary.loc["surplus_usd", "share_same_direction"] == 1.0
    assert np.isnan(summary.loc["peak_import_change_pct", "share_same_direction"])  # the paper reports no value
    assert summary.loc["peak_import_change_pct", "paper"] == "not reported"
    assert summary.loc["surplus_usd", "paper"] == pytest.approx(5.13)


def test_the_measured_year_has_every_day(measured):
    dates = year.measured_dates(measured)
    assert len(dates) == 366 and dates[0] == pd.Timestamp("2016-07-31")


def test_share_agree_by_hand_and_in_the_scorecard():
    """5 agrees with the paper's 5.13 $/day; 0.1 and 60 are off by more than 10x; -1 has the wrong sign."""
    from desmarket import report

    claims = io.paper_claims()
    keys = claims.index[claims["source"] == "headline"]
    by_day = pd.DataFrame(1.0, index=pd.Index(list("abcd"), name="date"), columns=keys)
    by_day["status"] = ["ok", "ok", "ok", "ok"]
    by_day["surplus_usd"] = [5.0, 0.1, -1.0, 60.0]
    summary = year.claims_summary(by_day, claims)
    assert summary.loc["surplus_usd", "share_same_direction"] == 0.75
    assert summary.loc["surplus_usd", "share_same_order_of_magnitude"] == 0.5  # 5 and -1 (|-1| vs 5.13)
    assert summary.loc["surplus_usd", "share_agree"] == 0.25
    assert np.isnan(summary.loc["peak_import_change_pct", "share_agree"])
    card = pd.DataFrame({"claim": ["x", "y"]}, index=pd.Index(["surplus_usd", "m3_in_core"], name="key"))
    both = report.scorecard_with_days(card, summary)
    assert both.loc["surplus_usd", "days_agreeing"] == 0.25 and both.loc["surplus_usd", "days_studied"] == 4
    assert np.isnan(both.loc["m3_in_core", "days_agreeing"])  # a fairness claim: not computed per day


def test_claims_by_season_splits_the_days_by_month():
    claims = io.paper_claims()
    keys = claims.index[claims["source"] == "headline"]
    days = pd.Index(["2017-01-10", "2017-02-10", "2017-07-01", "2017-10-01"], name="date")
    by_day = pd.DataFrame(1.0, index=days, columns=keys)
    by_day["status"] = "ok"
    by_day["surplus_usd"] = [5.0, -1.0, 60.0, 4.0]
    table = year.claims_by_season(by_day, claims)
    row = table.loc["surplus_usd"]
    assert (row["winter_days"], row["summer_days"], row["autumn_days"], row["spring_days"]) == (2, 1, 1, 0)
    assert row["winter_median"] == 2.0 and row["winter_agree"] == 0.5  # 5 agrees, -1 has the wrong sign
    assert row["summer_agree"] == 0.0 and row["autumn_agree"] == 1.0  # 60 is > 10x the paper's 5.13
    assert np.isnan(row["spring_median"]) and row["paper"] == pytest.approx(5.13)


def test_a_failed_day_is_classified_by_its_error_never_by_its_message():
    import pickle

    from desmarket import errors

    dst = errors.DataError("date", "x", "y", kind=errors.DAYLIGHT_SAVING_DAY)
    assert errors.failure_kind(pickle.loads(pickle.dumps(dst))) == "daylight-saving day"
    # the words of a message classify nothing: a kind-less DataError that mentions a daylight-saving day is "other"
    assert errors.failure_kind(errors.DataError("date", "a daylight-saving day, infeasible", "fix")) == "other"
    assert errors.failure_kind(errors.InfeasibleCaseError("no words that say so")) == "infeasible"
    assert errors.failure_kind(errors.NoTradeError("x")) == "no trade"
    row = year.day_claims("2016-11-06", data.load_measured_homes())  # the homes' clock falls back that day
    assert (row["status"], row["failure"]) == ("failed", "daylight-saving day")
