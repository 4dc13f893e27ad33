"""The committed CityLearn extract: integrity, calendar, units, the bad-data verdicts and the paper homes."""

import hashlib
import importlib.util
import json

import pandas as pd
import pytest

import desmarket.data as D
from desmarket.data.citylearn import CITYLEARN_FOLDER, citylearn_times
from desmarket.io import project_root

ROOT = project_root()
EXTRACT = ROOT / "data" / "raw" / CITYLEARN_FOLDER
WHEEL = ROOT / "data" / ".cache" / "CityLearn-2.1.2-py3-none-any.whl"


def test_extract_matches_its_manifest():
    manifest = json.loads((EXTRACT / "manifest.json").read_text())
    assert manifest["wheel_sha256"] == "95730b1deed73b1f5a4d17eb8334be3c99efa4aef8677822378d62d8359511dd"
    for name, digest in manifest["files_sha256"].items():
        assert hashlib.sha256((EXTRACT / name).read_bytes()).hexdigest() == digest, name
    size = sum(p.stat().st_size for p in EXTRACT.iterdir())
    assert size < 3e6  # a few MB at most


@pytest.mark.skipif(not WHEEL.is_file(), reason="CityLearn wheel not in data/.cache (run `make data`)")
def test_rebuild_from_wheel_is_byte_identical(tmp_path):
    spec = importlib.util.spec_from_file_location("build_raw_data", ROOT / "scripts" / "build_raw_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(WHEEL, tmp_path)
    for p in EXTRACT.iterdir():
        assert (tmp_path / p.name).read_bytes() == p.read_bytes(), p.name


def test_tidy_frame_shape_and_units(measured):
    assert list(measured.columns) == list(D.MEASURED_COLUMNS)
    assert len(measured) == 17 * 8760
    assert sorted(measured["home"].unique()) == [f"B{k:02d}" for k in range(1, 18)]
    first = measured[measured["home"] == "B01"].iloc[:2]
    assert first["time"].tolist() == [pd.Timestamp("2016-07-31 23:00"), pd.Timestamp("2016-08-01 00:00")]
    assert first["load_kw"].tolist() == pytest.approx([2.2758, 0.8511666666666671])  # Building_1.csv rows 1-2
    # PV in kW = W/kW x kWp / 1000: never above the array's nominal power
    assert (measured["pv_kw"] <= measured["pv_kwp"]).all()
    b1 = measured[measured["home"] == "B01"]
    assert b1["pv_kwp"].iloc[0] == 4.0
    assert b1.loc[b1["time"] == pd.Timestamp("2016-08-01 11:00"), "pv_kw"].item() == pytest.approx(759.825 * 4 / 1000)
    assert measured.attrs["tz"] == "America/Los_Angeles"


def test_calendar_is_aug_2016_to_jul_2017():
    calendar = pd.read_csv(EXTRACT / "calendar.csv")
    times = citylearn_times(calendar)
    assert times[0] == pd.Timestamp("2016-07-31 23:00") and times[-1] == pd.Timestamp("2017-07-31 22:00")
    assert pd.Timestamp("2016-08-01").day_name() == "Monday"  # row 2: Month 8, Hour 1, Day Type 1
    assert (calendar["daylight_savings_status"] == 0).all() and not (calendar["day_type"] == 8).any()
    shifted = calendar.copy()
    shifted.loc[100, "day_type"] = shifted.loc[100, "day_type"] % 7 + 1
    with pytest.raises(D.DataError, match="day_type"):
        citylearn_times(shifted)


def test_pv_peak_follows_the_2016_2017_daylight_saving_changes(measured):
    """The clock is local prevailing time: the PV centroid jumps by about 1 h on 2016-11-06 and 2017-03-12."""
    good = measured[measured["home"].isin(["B02", "B03", "B09", "B13"])]
    hour = good["time"].dt.hour + 0.5
    day = good["time"].dt.normalize()
    weights = good["pv_kw"].groupby(day).sum()
    centroid = (good["pv_kw"] * hour).groupby(day).sum() / weights
    for change, direction in (("2016-11-06", -1), ("2017-03-12", +1)):
        c = pd.Timestamp(change)
        before = centroid[c - pd.Timedelta(days=7) : c - pd.Timedelta(days=1)].median()
        after = centroid[c + pd.Timedelta(days=1) : c + pd.Timedelta(days=7)].median()
        assert direction * (after - before) == pytest.approx(1.0, abs=0.25), change


def test_bad_homes_and_their_reasons(quality):
    invalid = quality[~quality["valid"]]
    assert list(invalid.index) == ["B07", "B12", "B14", "B15"]
    assert invalid.loc["B14", "pv_faulty"] and invalid.loc["B15", "pv_faulty"]  # weak / mostly absent PV
    assert quality.loc["B15", "pv_outage_days"] > 200
    assert quality.loc["B12", "load_dropout_days"] == 364  # load is zero every night (PV-shaped)
    assert quality.loc["B07", "pv_outage_days"] == 8  # 2016-08-01..08
    assert quality.loc["B07", "bad_day_share"] > 0.25
    assert not quality.loc[quality["valid"], "pv_faulty"].any()


def test_day_flags_of_the_extract(measured):
    flags = D.day_flags(measured)
    dates = flags.index.get_level_values("date")
    assert sorted(dates[flags["dst_change"]].unique()) == [pd.Timestamp("2016-11-06"), pd.Timestamp("2017-03-12")]
    incomplete = sorted(dates[flags["incomplete"]].unique())
    assert incomplete == [pd.Timestamp("2016-07-31"), pd.Timestamp("2017-07-31")]
    b07 = flags.xs("B07", level="home")
    assert list(b07.index[b07["pv_outage"]]) == list(pd.date_range("2016-08-01", "2016-08-08"))


def test_paper_homes_rule(measured, quality):
    homes = D.paper_homes(measured)
    assert homes == ["B01", "B09", "B10", "B11", "B13", "B16", "B17", "B02", "B04", "B08"]
    assert quality.loc[homes, "bad_days"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 2]
    others = quality[quality["valid"] & ~quality.index.isin(homes)]
    assert (others["bad_days"] >= 2).all()
    # on the paper date all ten are clean; B06 is the one valid home that is not
    assert D.usable_homes(D.PAPER_DATE, measured)[:10] == homes
    assert "B06" not in D.usable_homes(D.PAPER_DATE, measured)


def test_paper_date_is_a_sunny_summer_weekday(measured):
    date = pd.Timestamp(D.PAPER_DATE)
    assert date.month in (6, 7, 8) and D.weekday_class([date])[0] == "weekday"
    homes = D.paper_homes(measured)
    flags = D.day_flags(measured)
    sub = flags[flags.index.get_level_values("home").isin(homes)]
    pv = sub["pv_kwh"].groupby(level="date").sum()
    june = pv[pv.index.month == date.month]
    assert pv[date] >= 0.95 * june.max()
    # loads well under the 10 kW connection on the day
    day = measured[(measured["time"].dt.normalize() == date) & measured["home"].isin(homes)]
    assert day["load_kw"].max() < 8.0


def test_missing_extract_raises(tmp_path):
    with pytest.raises(D.DataError, match="make data"):
        D.load_measured_homes(tmp_path)


def test_raw_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DESMARKET_RAW_DATA", str(tmp_path))
    assert D.raw_data_dir() == tmp_path
    with pytest.raises(D.DataError, match="is missing"):
        D.load_measured_homes()


def test_negative_value_in_extract_names_home_and_time(tmp_path):
    folder = tmp_path / CITYLEARN_FOLDER
    folder.mkdir()
    for p in EXTRACT.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    load = pd.read_csv(folder / "load_kwh.csv.gz")
    load.loc[5, "Building_3"] = -0.2
    load.to_csv(folder / "load_kwh.csv.gz", index=False, compression={"method": "gzip", "compresslevel": 1})
    with pytest.raises(D.DataError) as err:
        D.load_measured_homes(tmp_path)
    assert err.value.home == "B03" and err.value.time == pd.Timestamp("2016-08-01 04:00")
    assert err.value.column == "load_kw"
