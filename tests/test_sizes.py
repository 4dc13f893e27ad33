"""The community-size study: one community -> one row, checked against quantities recomputed another way."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desmarket import data as D
from desmarket import fairness, report, sizes

DAYS = {"summer": "2017-06-13"}


@pytest.fixture(scope="module")
def rows(measured):
    return sizes.size_study([3, 14], seeds=[0, 1], days=DAYS, measured=measured, n_jobs=1, n_scenarios=2)


def test_gini_by_hand_and_against_the_pairwise_definition():
    assert report.gini([1, 1, 1]) == pytest.approx(0.0, abs=1e-12)
    assert report.gini([0, 0, 1]) == pytest.approx(2 / 3)
    assert report.gini([1, 3]) == pytest.approx(0.25)  # |1-3| * 2 / (2 * 4 * 2)
    assert np.isnan(report.gini([0.0, 0.0]))
    for bad in ([], [1, -1], [1, np.nan]):
        with pytest.raises(ValueError, match="Gini"):
            report.gini(bad)


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=30).filter(lambda v: sum(v) > 1e-6))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_gini_matches_the_pairwise_formula(x):
    a = np.asarray(x)
    pairwise = np.abs(a[:, None] - a[None, :]).sum() / (2 * a.size**2 * a.mean())
    assert report.gini(a) == pytest.approx(pairwise, abs=1e-9)


def test_one_row_per_community_largest_dispatched_first_and_sorted(rows):
    assert list(rows[["n_homes", "seed"]].itertuples(index=False, name=None)) == [(3, 0), (3, 1), (14, 0), (14, 1)]
    assert (rows["status"] == "ok").all() and (rows["reason"] == "").all()
    assert (rows["season"] == "summer").all() and (rows["date"] == "2017-06-13").all()
    shares = rows[["pinned_share", "balanced_share", "congested_share"]]
    assert np.allclose(shares.sum(axis=1), 1.0) and (shares >= 0).all().all()
    assert np.allclose(rows["surplus_per_home_usd"] * rows["n_homes"], rows["surplus_usd"])
    assert rows["alpha_gini"].between(0, 1).all() and rows["trading_homes_share"].between(0, 1).all()


def test_trading_share_is_the_synergy_over_stand_alone_values(rows, measured):
    """Delta C without trading (x_bar = 0) is the sum of the stand-alone values v({aggregator, i}) (issue 11)."""
    row = rows.iloc[0]
    case = D.build_case(n_homes=3, n_scenarios=2, date="2017-06-13", seed=0, measured=measured)
    alone = fairness.standalone_values(case, n_jobs=1).sum()
    assert row["trading_share"] == pytest.approx(1 - alone / row["surplus_usd"], abs=1e-6)
    grand = fairness.coalition_value(case, case.home_ids)
    assert row["surplus_usd"] == pytest.approx(grand, rel=1e-6)


def test_rerun_and_workers_give_the_same_table_apart_from_times(rows, measured):
    again = sizes.size_study([3, 14], seeds=[0, 1], days=DAYS, measured=measured, n_jobs=2, n_scenarios=2)
    timing = list(sizes.TIME_COLUMNS)
    assert again.drop(columns=timing).equals(rows.drop(columns=timing))


def test_summary_per_size_and_day(rows):
    summary = sizes.size_summary(rows)
    assert list(summary.index) == [("summer", 3), ("summer", 14)]
    assert (summary["seeds"] == 2).all()
    one = rows[rows["n_homes"] == 14]["alpha_gini"]
    assert summary.loc[("summer", 14), "alpha_gini_median"] == pytest.approx(one.median())
    assert summary.loc[("summer", 14), "alpha_gini_max"] == pytest.approx(one.max())


def test_bad_sizes_are_refused(measured):
    with pytest.raises(ValueError, match="sizes"):
        sizes.size_study([0], seeds=[0], days=DAYS, measured=measured)


def test_a_community_that_cannot_be_built_is_a_row_with_its_reason(measured):
    days = {"summer": "2017-06-13", "spring": "2017-03-12"}  # the second is a daylight-saving day
    rows = sizes.size_study([3], seeds=[0], days=days, measured=measured, n_jobs=1, n_scenarios=2)
    failed = rows[rows["season"] == "spring"].iloc[0]
    assert failed["status"] == "failed" and "daylight-saving" in failed["reason"]
    assert np.isnan(failed["surplus_usd"])
    summary = sizes.size_summary(rows)
    assert summary.loc[("spring", 3), "seeds"] == 0 and summary.loc[("spring", 3), "failed"] == 1
    assert summary.loc[("summer", 3), "seeds"] == 1 and summary.loc[("summer", 3), "failed"] == 0
    import matplotlib.pyplot as plt

    from desmarket import plots

    plt.close(plots.figure_sizes(rows))  # draws the solved communities only


def test_no_seed_or_no_day_is_refused(measured):
    with pytest.raises(ValueError, match="seed"):
        sizes.size_study([3], seeds=[], days=DAYS, measured=measured)
    with pytest.raises(ValueError, match="day"):
        sizes.size_study([3], seeds=[0], days={}, measured=measured)


def test_the_size_study_and_the_year_run_on_a_dask_cluster(measured, rows):
    """The loops fan out through joblib, so a Dask client runs them on its workers with the same tables."""
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_config

    from desmarket import year

    days = ["2017-03-11", "2017-06-13"]
    local_year = year.claims_by_day(days, measured, n_jobs=1, n_homes=3, n_scenarios=2)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as tasks, parallel_config(backend="dask"):
            on_dask = sizes.size_study([3, 14], seeds=[0, 1], days=DAYS, measured=measured, n_scenarios=2)
            on_dask_year = year.claims_by_day(days, measured, n_homes=3, n_scenarios=2)
        assert {t["worker"] for t in tasks.data}  # the cluster's workers ran the tasks
    timing = list(sizes.TIME_COLUMNS)
    assert on_dask.drop(columns=timing).equals(rows.drop(columns=timing))
    assert on_dask_year.equals(local_year)
