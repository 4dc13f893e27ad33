"""The two-stage year (desmarket.twostage.two_stage_by_day): rows reused between runs with the same bytes,
the same table whatever n_jobs, and the committed table holds what the code computes today (sampled days)."""

from __future__ import annotations

import filecmp

import pandas as pd
import pytest

from desmarket import io, report, twostage

DAYS = ["2017-06-13", "2017-01-17", "2016-11-06"]  # a summer day, a winter day, a daylight-saving day (failed)
SMALL = {"n_homes": 3, "n_scenarios": 3}


def test_a_rerun_reuses_every_row_and_n_jobs_does_not_matter(tmp_path):
    first = twostage.two_stage_by_day(DAYS, n_jobs=1, **SMALL)
    assert first.attrs["reused"] == 0 and list(first.index) == sorted(DAYS)
    assert (first["status"] == "ok").sum() == 2 and first.loc["2016-11-06", "status"] == "failed"
    report.save_table(first, tmp_path / "a.csv")
    again = twostage.two_stage_by_day(DAYS, n_jobs=2, tables=[tmp_path / "a.csv"], **SMALL)
    assert again.attrs["reused"] == len(DAYS)
    report.save_table(again, tmp_path / "b.csv")
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "b.csv", shallow=False)
    parallel = twostage.two_stage_by_day(DAYS, n_jobs=2, **SMALL)
    report.save_table(parallel, tmp_path / "c.csv")
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "c.csv", shallow=False)
    ok = first[first["status"] == "ok"]
    # the row's differences are its parts' differences
    assert (ok["market_vss_usd"] - (ok["market_eev_usd"] - ok["market_rp_usd"])).abs().max() < 1e-9
    assert (ok["delta_c_rp_usd"] - (ok["m1_rp_usd"] - ok["market_rp_usd"])).abs().max() < 1e-9
    assert ok[[c for c in ok.columns if c.endswith("losing_share")]].stack().between(0, 1).all()
    summary = twostage.two_stage_summary(first)
    assert summary.loc[twostage.SUMMARY_COLUMNS["market_vss_usd"], "days"] == 2


def test_the_committed_year_table_holds_what_the_code_computes_today(tmp_path):
    """Sampled days of results/tables/two_stage_by_day.csv recomputed from scratch: a forgotten
    TWO_STAGE_VERSION bump (a change of the computation that the keys cannot see) fails here."""
    committed = io.project_root() / "results" / "tables" / "two_stage_by_day.csv"
    if not committed.exists():
        pytest.fail("results/tables/two_stage_by_day.csv is missing: run make reproduce (notebook 10)")
    table = pd.read_csv(committed, dtype=str, keep_default_na=False).set_index("date")
    sample = DAYS[:2]
    fresh = twostage.two_stage_by_day(sample, n_jobs=1, fresh=True)  # the reference run's parameters
    report.save_table(fresh, tmp_path / "fresh.csv", decimals=4)
    recomputed = pd.read_csv(tmp_path / "fresh.csv", dtype=str, keep_default_na=False).set_index("date")
    assert set(recomputed.columns) == set(table.columns)
    # column order is the cache's business (desmarket.daycache); every value must be the same text
    pd.testing.assert_frame_equal(recomputed.loc[sorted(sample), table.columns], table.loc[sorted(sample)])
