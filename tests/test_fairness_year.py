"""The year study of the settlement rules (desmarket.fairness_year): its summary by hand, failed days kept, and
sampled committed rows recomputed from scratch."""

import numpy as np
import pandas as pd
import pytest

from desmarket import data, fairness, fairness_year, io, report

COMMITTED = io.project_root() / "results" / "tables" / "fairness_by_day.csv"


def test_summary_per_rule_and_season_by_hand():
    """Two winter days and one summer day: M4 in the core on one winter day and the summer day."""
    rows = []
    for date, ok, in_core, excess in (
        ("2017-01-10", "ok", 1, -0.1),
        ("2017-01-17", "ok", 0, 0.3),
        ("2017-07-04", "ok", 1, -0.2),
        ("2017-07-11", "failed", np.nan, np.nan),
    ):
        row = {"date": date, "status": ok}
        for rule in fairness.VERDICT_RULES:
            row |= {f"{rule}_{c}": np.nan for c in fairness_year.ROW_COLUMNS}
        row |= {"synergy_in_core": in_core, "synergy_core_excess_usd": excess, "synergy_individually_rational": 1}
        rows.append(row)
    summary = fairness_year.fairness_by_season(pd.DataFrame(rows).set_index("date"), rules=("synergy",))
    by = summary.set_index("season")
    assert by.loc["winter", "days"] == 2 and by.loc["summer", "days"] == 1 and by.loc["spring", "days"] == 0
    assert by.loc["winter", "share_in_core"] == pytest.approx(0.5)
    assert by.loc["year", "share_in_core"] == pytest.approx(2 / 3)
    assert by.loc["winter", "median_core_excess_usd"] == pytest.approx(0.1)
    assert by.loc["year", "max_core_excess_usd"] == pytest.approx(0.3)
    assert set(summary["rule"]) == {fairness.RULE_NAMES["synergy"]}


def test_a_day_without_a_case_is_a_failed_row_with_its_reason():
    row = fairness_year.day_fairness("2015-01-01", data.load_measured_homes())
    assert row["status"] == "failed" and row["reason"] and row["failure"]


def test_the_committed_year_table_of_the_rules_holds_what_the_code_computes_today(tmp_path):
    """Two sampled days of results/tables/fairness_by_day.csv recomputed from scratch: a forgotten
    FAIRNESS_VERSION bump (a change of the computation that the keys cannot see) fails here."""
    table = pd.read_csv(COMMITTED, dtype=str, keep_default_na=False).set_index("date")
    ok = table[table["status"] == "ok"].index
    days = sorted({ok[0], ok[len(ok) // 2]})
    fresh = fairness_year.fairness_by_day(days, n_jobs=1, fresh=True)  # notebook 08's parameters (the defaults)
    report.save_table(fresh, tmp_path / "fresh.csv")
    recomputed = pd.read_csv(tmp_path / "fresh.csv", dtype=str, keep_default_na=False).set_index("date")
    # the column order of a table depends on its first row (a failed day holds fewer columns): compare by name
    assert set(recomputed.columns) == set(table.columns)
    pd.testing.assert_frame_equal(recomputed.loc[days, table.columns], table.loc[days])
