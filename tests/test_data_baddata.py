"""Bad data: each case is handled by a documented rule or raises a DataError naming file, home and time.

Frames and Pecan Street Dataport rows are written by hand here, in the formats of the real exports.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import desmarket
import desmarket.data as D

SUN = np.clip(np.sin((np.arange(24) - 6) / 13 * np.pi), 0, None)  # PV shape, kW per kWp


def frame(homes=("h1", "h2"), days=3, start="2018-06-04", tz="America/Chicago", pv_kwp=4.0):
    """A clean measured frame: naive local clock hours, constant load 1 kW, sunny PV."""
    t = pd.date_range(start, periods=24 * days, freq="h")
    out = pd.DataFrame(
        {
            "home": np.repeat(homes, len(t)),
            "time": np.tile(t, len(homes)),
            "load_kw": 1.0,
            "pv_kw": np.tile(pv_kwp * SUN[t.hour], len(homes)),
            "pv_kwp": pv_kwp,
        }
    )
    out.attrs["tz"] = tz
    return out


# ============================================================================ measured frame
@pytest.mark.parametrize(
    "column, value, what",
    [
        ("load_kw", np.nan, "NaN"),
        ("pv_kw", -0.3, "negative"),
        ("load_kw", -1.0, "negative"),
        ("pv_kw", np.inf, "infinite"),
    ],
)
def test_bad_values_raise_naming_home_and_time(column, value, what):
    f = frame()
    f.loc[30, column] = value
    with pytest.raises(D.DataError, match=what) as err:
        D.measured.check_measured(f, "homes.csv")
    assert err.value.home == "h1"  # row 30 of 72 per home
    assert err.value.time == pd.Timestamp("2018-06-05 06:00") and err.value.column == column
    assert isinstance(err.value, desmarket.CaseError) and "homes.csv" in str(err.value)


def test_duplicated_timestamp_raises():
    f = frame()
    f = pd.concat([f, f.iloc[[5]]], ignore_index=True)
    with pytest.raises(D.DataError, match="duplicated timestamp") as err:
        D.measured.check_measured(f)
    assert err.value.home == "h1" and err.value.time == pd.Timestamp("2018-06-04 05:00")


def test_missing_hour_flags_the_day_incomplete():
    f = frame().drop(index=[24 + 13]).reset_index(drop=True)  # h1, 2018-06-05 13:00 missing
    flags = D.day_flags(f)
    assert flags.loc[("h1", pd.Timestamp("2018-06-05")), "incomplete"]
    assert flags.loc[("h1", pd.Timestamp("2018-06-05")), "hours"] == 23
    assert flags["incomplete"].sum() == 1
    with pytest.raises(D.DataError, match="24 clock hours") as err:
        D.daily_profiles(f, ["h1"], ["2018-06-05"])
    assert err.value.home == "h1"
    # the day is never a scenario, and asking for it as target says why
    assert pd.Timestamp("2018-06-05") not in D.scenario_pool("2018-06-04", ["h1", "h2"], f)
    with pytest.raises(D.DataError, match="incomplete"):
        D.similar_days("2018-06-05", 1, homes=["h1"], measured=f)


def test_dst_change_day_is_flagged():
    f = frame(days=3, start="2018-11-03")  # 2018-11-04: clocks go back in Austin
    flags = D.day_flags(f)
    dst = flags[flags["dst_change"]].index.get_level_values("date").unique()
    assert list(dst) == [pd.Timestamp("2018-11-04")]
    assert D.day_flags(f, tz="UTC")["dst_change"].sum() == 0


def test_load_dropout_and_pv_outage():
    f = frame(days=4)
    h1_day2 = (f["home"] == "h1") & (f["time"].dt.normalize() == pd.Timestamp("2018-06-05"))
    f.loc[h1_day2 & (f["time"].dt.hour < 6), "load_kw"] = 0.01  # 6 hours near zero
    h2_day3 = (f["home"] == "h2") & (f["time"].dt.normalize() == pd.Timestamp("2018-06-06"))
    f.loc[h2_day3, "pv_kw"] = 0.0
    flags = D.day_flags(f)
    assert flags.loc[("h1", pd.Timestamp("2018-06-05")), "reason"] == "load_dropout"
    assert flags.loc[("h2", pd.Timestamp("2018-06-06")), "reason"] == "pv_outage"
    assert flags["flagged"].sum() == 2
    # five low hours are not a dropout
    f.loc[h1_day2 & (f["time"].dt.hour == 5), "load_kw"] = 0.5
    assert not D.day_flags(f).loc[("h1", pd.Timestamp("2018-06-05")), "load_dropout"]


def test_home_without_pv_is_valid_and_faulty_pv_is_not():
    f = pd.concat(
        [
            frame(("h1", "h2", "h3"), days=4),
            frame(("nopv",), days=4, pv_kwp=0.0),
            frame(("weak",), days=4).assign(pv_kw=lambda d: d["pv_kw"] * 0.3),
        ],
        ignore_index=True,
    )
    f.attrs["tz"] = "America/Chicago"
    q = D.home_quality(f)
    assert not q.loc["nopv", "has_pv"] and q.loc["nopv", "valid"]
    assert D.day_flags(f).xs("nopv", level="home")["pv_outage"].sum() == 0
    assert q.loc["weak", "pv_faulty"] and not q.loc["weak", "valid"] and q.loc["weak", "rank"] == 0
    assert list(q.loc[["h1", "h2", "h3", "nopv"], "rank"]) == [1, 2, 3, 4]


def test_too_many_bad_days_makes_a_home_invalid():
    f = frame(days=4)
    f.loc[(f["home"] == "h2") & (f["time"].dt.normalize() <= pd.Timestamp("2018-06-05")), "pv_kw"] = 0.0
    q = D.home_quality(f)  # h2: 2 of 4 days without PV
    assert q.loc["h2", "bad_day_share"] == 0.5 and q.loc["h2", "reason"] == "too_many_bad_days"
    assert q["valid"].tolist() == [True, False]


def test_naive_frame_without_tz_raises():
    f = frame()
    f.attrs.clear()
    with pytest.raises(D.DataError, match="time zone"):
        D.day_flags(f)


# ============================================================================ Pecan Street
def dataport(tmp_path, rows, name="15minute_data_austin.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def fifteen_minute_rows(homes=("26", "59"), start="2018-07-02 00:00", hours=48, solar2=""):
    """Dataport 15-minute rows: local time with UTC offset, grid (net import), solar, solar2."""
    t = pd.date_range(start, periods=4 * hours, freq="15min", tz="America/Chicago")
    rows = []
    for h in homes:
        for x in t:
            pv = 3.0 * SUN[x.hour]
            rows.append(
                {
                    "dataid": h,
                    "local_15min": x.isoformat(sep=" ")[:-3],
                    "grid": 1.2 - pv,
                    "solar": pv if pv > 0 else -0.008,
                    "solar2": solar2,
                }
            )
    return rows


def test_pecanstreet_15min_export(tmp_path):
    rows = fifteen_minute_rows()
    assert rows[0]["local_15min"] == "2018-07-02 00:00:00-05"  # Dataport's format
    f = D.load_pecanstreet(dataport(tmp_path, rows))
    assert list(f.columns) == list(D.MEASURED_COLUMNS) and len(f) == 2 * 48
    assert str(f["time"].dt.tz) == "America/Chicago" and f["time"].iloc[0] == pd.Timestamp(
        "2018-07-02 00:00", tz="America/Chicago"
    )
    # load - pv = grid; night: solar = -0.008 is inverter draw, counted in load, pv = 0
    night = f.iloc[0]
    assert night["pv_kw"] == 0 and night["load_kw"] == pytest.approx(1.2)
    noon = f[f["time"].dt.hour == 12].iloc[0]
    assert noon["pv_kw"] == pytest.approx(3 * SUN[12]) and noon["load_kw"] == pytest.approx(1.2)
    assert f["pv_kwp"].isna().all()
    flags = D.day_flags(f)
    assert not flags["flagged"].any()
    load, pv = D.daily_profiles(f, ["26", "59"], ["2018-07-02", "2018-07-03"])
    assert load.shape == (2, 2, 24) and np.allclose(load, 1.2)


def test_pecanstreet_second_array_and_no_pv_home(tmp_path):
    rows = fifteen_minute_rows(homes=("26",), hours=24, solar2=0.5)
    nopv = [dict(r, dataid="77", solar="", solar2="", grid=0.9) for r in fifteen_minute_rows(homes=("77",), hours=24)]
    f = D.load_pecanstreet(dataport(tmp_path, rows + nopv))
    h26 = f[f["home"] == "26"]
    assert h26["pv_kw"].iloc[12] == pytest.approx(3 * SUN[12] + 0.5)
    h77 = f[f["home"] == "77"]
    assert (h77["pv_kw"] == 0).all() and np.allclose(h77["load_kw"], 0.9)


def test_pecanstreet_old_use_gen_hourly(tmp_path):
    t = pd.date_range("2015-08-03", periods=24, freq="h", tz="America/Chicago")
    rows = [{"dataid": 1642, "localhour": x.isoformat(sep=" ")[:-3], "use": 2.0, "gen": 1.5 * SUN[x.hour]} for x in t]
    f = D.load_pecanstreet(pd.DataFrame(rows))
    assert len(f) == 24 and f["home"].iloc[0] == "1642"
    assert np.allclose(f["load_kw"], 2.0) and f["pv_kw"].max() == pytest.approx(1.5 * SUN.max())


def test_pecanstreet_missing_samples(tmp_path):
    rows = fifteen_minute_rows()
    rows[4 * 30 + 1]["grid"] = ""  # home 26, 2018-07-03 06:15: NaN reading
    del rows[4 * 40]  # home 26, 2018-07-03 16:00: sample missing
    path = dataport(tmp_path, rows)
    with pytest.raises(D.DataError, match="2 hours have fewer than 4") as err:
        D.load_pecanstreet(path)
    assert err.value.home == "26" and err.value.time == pd.Timestamp("2018-07-03 06:00", tz="America/Chicago")
    with pytest.warns(UserWarning, match="1 home-days"):
        f = D.load_pecanstreet(path, incomplete="drop-day")
    dropped = f.attrs["dropped_days"]
    assert dropped[["home", "date"]].values.tolist() == [["26", pd.Timestamp("2018-07-03")]]
    assert len(f) == 48 + 24


def test_pecanstreet_missing_hour(tmp_path):
    rows = [r for r in fifteen_minute_rows(homes=("26",)) if not r["local_15min"].startswith("2018-07-02 09")]
    with pytest.raises(D.DataError, match="1 hours") as err:
        D.load_pecanstreet(dataport(tmp_path, rows))
    assert err.value.time == pd.Timestamp("2018-07-02 09:00", tz="America/Chicago")


def test_pecanstreet_duplicates(tmp_path):
    rows = fifteen_minute_rows(homes=("26",), hours=24)
    with pytest.warns(UserWarning, match="1 exactly duplicated rows"):
        f = D.load_pecanstreet(dataport(tmp_path, rows + [dict(rows[7])]))
    assert len(f) == 24
    bad = dict(rows[7], grid=9.9)
    with pytest.raises(D.DataError, match="different readings") as err:
        D.load_pecanstreet(dataport(tmp_path, rows + [bad]))
    assert err.value.home == "26" and err.value.time == pd.Timestamp("2018-07-02 01:45", tz="America/Chicago")


def test_pecanstreet_negative_load_raises(tmp_path):
    rows = fifteen_minute_rows(homes=("26",), hours=24)
    for r in rows[48:52]:  # 12:00-13:00: exports more than the PV makes
        r["grid"] = -10.0
    with pytest.raises(D.DataError, match="negative") as err:
        D.load_pecanstreet(dataport(tmp_path, rows))
    assert err.value.home == "26" and err.value.time == pd.Timestamp("2018-07-02 12:00", tz="America/Chicago")


def test_pecanstreet_daylight_saving_day(tmp_path):
    """Fall back on 2018-11-04: 25 local hours that day, continuous in UTC, flagged dst_change."""
    rows = fifteen_minute_rows(homes=("26",), start="2018-11-03 00:00", hours=24 * 3 + 1)
    f = D.load_pecanstreet(dataport(tmp_path, rows))
    assert len(f) == 73
    flags = D.day_flags(f)
    assert flags.loc[("26", pd.Timestamp("2018-11-04")), "dst_change"]
    assert flags.loc[("26", pd.Timestamp("2018-11-04")), "hours"] == 24  # 25 rows, hour 1 twice
    assert not flags.loc[("26", pd.Timestamp("2018-11-03")), "flagged"]


def test_pecanstreet_wrong_format(tmp_path):
    with pytest.raises(D.DataError, match="one of"):
        D.load_pecanstreet(pd.DataFrame({"dataid": [1], "time": ["2018-01-01"], "grid": [1.0]}))
    with pytest.raises(D.DataError, match="cannot read the time"):
        D.load_pecanstreet(pd.DataFrame({"dataid": [1], "localminute": ["soon"], "grid": [1.0]}))


def test_pecanstreet_case_end_to_end(tmp_path):
    """A user's Dataport export becomes a case (all days same month and class; 2 homes, 3 scenarios)."""
    rows = fifteen_minute_rows(homes=("26", "59"), start="2018-07-09 00:00", hours=24 * 5)
    measured = D.load_pecanstreet(dataport(tmp_path, rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = D.build_case(n_homes=2, n_scenarios=3, date="2018-07-11", measured=measured)
    assert case.home_ids == ("26", "59") and case.n_scenarios == 3
    assert np.allclose(case.load, 1.2)


@pytest.mark.parametrize("marker", ["", "NA"])
def test_pecanstreet_row_without_dataid_is_an_error(tmp_path, marker):
    """A missing dataid used to become the home 'nan' silently (pandas reads '' and 'NA' as missing)."""
    rows = fifteen_minute_rows(homes=("26",), hours=24)
    rows[5]["dataid"] = marker
    with pytest.raises(D.DataError, match="row 7 has no dataid"):
        D.load_pecanstreet(dataport(tmp_path, rows))
