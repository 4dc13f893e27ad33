"""Per-day rows reused between runs (desmarket.daycache): the same bytes, recomputed when an input changes, and
the committed tables hold what the code computes today (sampled days recomputed)."""

from __future__ import annotations

import filecmp

import pandas as pd
import pytest

from desmarket import daycache, io, report, year

DAYS = ["2017-06-13", "2017-01-17", "2016-11-06"]  # a summer day, a winter day, a daylight-saving day (failed)
SMALL = {"n_homes": 3, "n_scenarios": 2}


def test_a_rerun_reuses_every_row_and_writes_the_same_bytes(tmp_path):
    first = year.claims_by_day(DAYS, n_jobs=1, **SMALL)
    assert first.attrs["reused"] == 0 and list(first.index) == sorted(DAYS)
    report.save_table(first, tmp_path / "a.csv")
    again = year.claims_by_day(DAYS, n_jobs=1, tables=[tmp_path / "a.csv"], **SMALL)
    assert again.attrs["reused"] == len(DAYS)
    report.save_table(again, tmp_path / "b.csv")
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "b.csv", shallow=False)
    assert (first.dtypes == again.dtypes).all()
    pd.testing.assert_frame_equal(first, again)  # what a study derives from the rows cannot tell them apart


def test_a_changed_input_or_fresh_recomputes(tmp_path):
    report.save_table(year.claims_by_day(DAYS[:1], n_jobs=1, **SMALL), tmp_path / "a.csv")
    tables = [tmp_path / "a.csv"]
    assert year.claims_by_day(DAYS[:1], n_jobs=1, tables=tables, seed=1, **SMALL).attrs["reused"] == 0
    assert year.claims_by_day(DAYS[:1], n_jobs=1, tables=tables, prices="pjm-like", **SMALL).attrs["reused"] == 0
    assert year.claims_by_day(DAYS[:1], n_jobs=1, tables=tables, fresh=True, **SMALL).attrs["reused"] == 0
    both = year.claims_by_day(DAYS[:2], n_jobs=1, tables=tables, **SMALL)
    assert both.attrs["reused"] == 1  # only the new day is computed


def test_row_keys_see_every_input():
    base = daycache.row_key("s", 1, date="2017-06-13", seed=0)
    assert base == daycache.row_key("s", 1, seed=0, date="2017-06-13")  # order does not matter
    assert (
        len(
            {
                base,
                daycache.row_key("s", 2, date="2017-06-13", seed=0),
                daycache.row_key("t", 1, date="2017-06-13", seed=0),
                daycache.row_key("s", 1, date="2017-06-14", seed=0),
                daycache.row_key("s", 1, date="2017-06-13", seed=1),
            }
        )
        == 5
    )
    a = pd.DataFrame({"x": [1.0, 2.0]})
    assert daycache.data_digest(a) != daycache.data_digest(a.rename(columns={"x": "y"}))
    assert daycache.data_digest(a) != daycache.data_digest(a * 1.000001)


def test_keys_and_items_must_pair():
    with pytest.raises(ValueError, match="2 items but 1 keys"):
        daycache.cached_rows(lambda m: [], ["a", "b"], ["k"])


def test_the_committed_year_table_holds_what_the_code_computes_today(tmp_path):
    """Sampled days of results/tables/claims_by_day.csv recomputed from scratch: a forgotten CLAIMS_VERSION bump
    (a change of the computation that the keys cannot see) fails here."""
    committed = io.project_root() / "results" / "tables" / "claims_by_day.csv"
    table = pd.read_csv(committed, dtype=str, keep_default_na=False).set_index("date")
    fresh = year.claims_by_day(DAYS, n_jobs=1, fresh=True)  # the reference run's parameters (its defaults)
    report.save_table(fresh, tmp_path / "fresh.csv")
    recomputed = pd.read_csv(tmp_path / "fresh.csv", dtype=str, keep_default_na=False).set_index("date")
    pd.testing.assert_frame_equal(recomputed.loc[sorted(DAYS)], table.loc[sorted(DAYS)])


def _committed(name: str) -> pd.DataFrame:
    return pd.read_csv(io.project_root() / "results" / "tables" / name, dtype=str, keep_default_na=False)


def _as_written(frame: pd.DataFrame, tmp_path, name: str) -> pd.DataFrame:
    report.save_table(frame, tmp_path / name)
    return pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)


def test_the_committed_horizon_table_holds_what_the_code_computes_today(tmp_path):
    days = ["2017-06-13", "2017-01-17"]
    fresh = _as_written(year.horizon_by_day(days, n_jobs=1, fresh=True), tmp_path, "h.csv").set_index("date")
    table = _committed("horizon_by_day.csv").set_index("date")
    pd.testing.assert_frame_equal(fresh.loc[days], table.loc[days])


def test_the_committed_robustness_rows_hold_what_the_code_computes_today(tmp_path):
    from desmarket import robustness

    # the worst day of Winter Storm Uri under ERCOT 2021, and the paper's day under the synthetic prices
    for source, day in (("ercot-2021", "2017-02-14"), ("pjm-like", "2017-06-13")):
        fresh = robustness.claims_by_source((source,), [day], n_jobs=1, fresh=True)
        fresh = _as_written(fresh, tmp_path, "r.csv")
        table = _committed("robustness_by_day.csv")
        row = table[(table["prices"] == source) & (table["date"] == day)]
        pd.testing.assert_frame_equal(fresh.reset_index(drop=True), row.reset_index(drop=True))
    fair = robustness.fairness_by_source(("pjm-like",), fresh=True, n_jobs=1)
    fair = _as_written(fair, tmp_path, "f.csv")
    table = _committed("robustness_fairness.csv")
    pd.testing.assert_frame_equal(fair, table[table["prices"] == "pjm-like"].reset_index(drop=True))


def test_the_key_of_a_day_without_prices_does_not_depend_on_where_the_project_lies(monkeypatch):
    """A clone elsewhere (CI) must find the committed rows: the key of a daylight-saving price day holds the
    error's kind and problem, not the message, which names the extract's absolute path."""
    from desmarket import data

    source, digest = data.price_source("ercot-2022"), daycache.data_digest(pd.DataFrame({"x": [1.0]}))
    here = year.day_key("2016-11-06", digest, source)  # takes 2022-11-06, when Central time falls back
    monkeypatch.setattr(type(source), "file", property(lambda self: "/elsewhere/data/raw/ercot/lz_aen.csv"))
    with pytest.raises(data.DataError, match="elsewhere"):  # the message does name the path
        source.lmp("2016-11-06")
    assert year.day_key("2016-11-06", digest, source) == here
