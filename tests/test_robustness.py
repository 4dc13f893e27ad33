"""The robustness of the claims to the price source (desmarket.robustness): the verdicts against hand-made rows,
the fairness numbers against quantities recomputed on their own, and the stacked year study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from desmarket import data, fairness, io, robustness, year

DAYS = ["2017-06-13", "2017-06-14", "2017-06-20"]
SMALL = {"n_homes": 3, "n_scenarios": 2}


@pytest.fixture(scope="module")
def rows():
    return year.claims_by_day(DAYS, n_jobs=1, **SMALL)


def _source(rows, tag, surplus=None):
    out = rows.copy()
    out.insert(0, "prices", tag)
    if surplus is not None:
        out["surplus_usd"] = surplus
    return out


def test_a_claim_holds_where_enough_days_agree_and_the_day_is_read_on_its_own(rows):
    # source "b": ΔC negative on every day (the paper: +5.13), source "c": negative on the paper's day only
    c = rows["surplus_usd"].copy()
    c.loc["2017-06-13"] = -1.0
    stacked = pd.concat([_source(rows, "a"), _source(rows, "b", -rows["surplus_usd"]), _source(rows, "c", c)])
    table = robustness.robustness_table(stacked, io.paper_claims(), "2017-06-13")
    surplus = table.loc["surplus_usd"]
    assert surplus["holds over the year"] == "a, c"  # c: 2 of 3 days agree
    assert surplus["paper day agrees"] == "a"
    assert surplus["b agreeing"] == 0 and surplus["c agreeing"] == pytest.approx(2 / 3)
    assert surplus["a day"] == pytest.approx(rows.loc["2017-06-13", "surplus_usd"])
    assert table.loc["m2_alpha", "holds over the year"] == "every source"
    assert table.loc["peak_import_change_pct", "holds over the year"] == "n/a"  # the paper reports no value


def test_the_stacked_study_names_each_source_and_reuses_the_default_rows(rows, tmp_path):
    from desmarket import report

    report.save_table(rows, tmp_path / "claims_by_day.csv")  # notebook 09's table: the default source's rows
    stacked = robustness.claims_by_source(
        ("ercot-2022", "pjm-like"), DAYS, n_jobs=1, tables=[tmp_path / "claims_by_day.csv"], **SMALL
    )
    assert list(dict.fromkeys(stacked["prices"])) == ["ercot-2022", "pjm-like"]
    assert stacked.attrs["reused"] == len(DAYS)  # only the pjm-like days are computed
    ercot = stacked[stacked["prices"] == "ercot-2022"].drop(columns="prices")
    pd.testing.assert_frame_equal(ercot, rows)
    report.save_table(stacked, tmp_path / "robustness_by_day.csv")  # the stacked table is a cache as well
    again = robustness.claims_by_source(
        ("ercot-2022", "pjm-like"), DAYS, n_jobs=1, tables=[tmp_path / "robustness_by_day.csv"], **SMALL
    )
    assert again.attrs["reused"] == 2 * len(DAYS)
    pd.testing.assert_frame_equal(again, stacked)


def test_fairness_numbers_match_their_definitions():
    case = data.build_case(date="2017-06-13", seed=0, **SMALL)
    row = robustness.fairness_row(case, n_jobs=1)
    singles = fairness.standalone_values(case, n_jobs=1)
    assert row["standalone_share_of_delta_c"] == pytest.approx(singles.sum() / row["surplus_usd"], rel=1e-6)
    values = fairness.coalition_values(case, n_jobs=1)
    shapley = fairness.shapley_value(case, values=values)
    assert np.isclose(float(shapley.iloc[:, 0].sum()), row["surplus_usd"], rtol=1e-6)  # efficiency
    assert row["aggregator_shapley_share"] == pytest.approx(float(shapley.iloc[0, 0]) / row["surplus_usd"])
