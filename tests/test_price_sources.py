"""A price source is one parameter everywhere (issue 19): the named sources and a PJM file give the prices of the
mapped day hour by local clock hour, read here straight from the raw files; bad sources give one error listing the
choices; spike, negative-price and daylight-saving price days go through the studies as rows."""

import csv
import datetime as dt
import gzip
import io as _io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import desmarket as dm
import desmarket.data as D
from desmarket import sizes, year
from desmarket.data.sources import CHOICES, file_tag
from desmarket.io import project_root

ROOT = project_root()
ERCOT_EXTRACT = ROOT / "data" / "raw" / "ercot" / "dam_spp_2021_2022.csv.gz"
PJM_FILE = Path(os.environ.get("DESMARKET_PJM_FILE") or ROOT.parent / "shared" / "data" / "pjm_rto_da_2025.csv")
needs_pjm = pytest.mark.skipif(not PJM_FILE.is_file(), reason=f"the real PJM 2025 file is absent ({PJM_FILE})")


def desmarket(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "desmarket", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def ercot_raw_day(date: str, point: str = "LZ_AEN") -> np.ndarray:
    """24 prices in $/kWh of ``date`` read from the extract's text: hour ending h -> hour beginning h - 1."""
    out = np.full(24, np.nan)
    with gzip.open(ERCOT_EXTRACT, "rt") as f:
        for row in csv.DictReader(f):
            if row["delivery_date"] == date and row["settlement_point"] == point:
                out[int(row["hour_ending"][:2]) - 1] = float(row["price_usd_per_mwh"]) / 1000
    assert np.isfinite(out).all()
    return out


def pjm_raw_day(path: Path, date: dt.date) -> np.ndarray:
    """24 prices in $/kWh of Eastern day ``date`` read from the export's text by datetime_beginning_ept hour."""
    out = np.full(24, np.nan)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ept = dt.datetime.strptime(row["datetime_beginning_ept"], "%m/%d/%Y %I:%M:%S %p")
            if ept.date() == date and row["row_is_current"].strip().lower() == "true":
                out[ept.hour] = float(row["total_lmp_da"]) / 1000
    assert np.isfinite(out).all()
    return out


# ------------------------------------------------------------------ the three cases of the issue, built by the CLI
def test_build_case_default_is_ercot_2022_mapped_onto_the_home_day(tmp_path):
    """Tue 2017-01-17 takes ERCOT LZ_AEN of Tue 2022-01-18, hour by Central clock hour, in $/kWh."""
    done = desmarket("build-case", tmp_path / "c", "--date", "2017-01-17", "--homes", "2", "--scenarios", "2")
    assert done.returncode == 0, done.stderr
    assert "prices ercot-2022:" in done.stdout and "Tue 2022-01-18 for the home day Tue 2017-01-17" in done.stdout
    lmp = dm.load_case(tmp_path / "c").lmp
    np.testing.assert_allclose(lmp, ercot_raw_day("2022-01-18"), rtol=0, atol=1e-12)
    assert lmp[7] == pytest.approx(0.04440) and lmp[6] == pytest.approx(0.04172)  # read by hand: hour ending 08:00
    # is hour beginning 7 (2022-01-18,08:00,N,LZ_AEN,44.40; 07:00 -> 41.72)


def test_build_case_ercot_2021_in_winter_storm_uri(tmp_path):
    """Tue 2017-02-14 takes Tue 2021-02-16, the storm's day near 8 $/kWh."""
    done = desmarket(
        "build-case",
        tmp_path / "c",
        "--prices",
        "ercot-2021",
        "--date",
        "2017-02-14",
        "--homes",
        "2",
        "--scenarios",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "Tue 2021-02-16 for the home day Tue 2017-02-14" in done.stdout
    lmp = dm.load_case(tmp_path / "c").lmp
    np.testing.assert_allclose(lmp, ercot_raw_day("2021-02-16"), rtol=0, atol=1e-12)
    assert lmp.max() == pytest.approx(8.01479)  # the day's peak, 8,014.79 $/MWh (data/README.md 5.5)


@needs_pjm
def test_build_case_from_the_real_pjm_file(tmp_path):
    """Tue 2017-06-13 takes Tue 2025-06-10 of the file, hour h of datetime_beginning_ept -> home hour h."""
    done = desmarket(
        "build-case", tmp_path / "c", "--prices", PJM_FILE, "--date", "2017-06-13", "--homes", "2", "--scenarios", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "Tue 2025-06-10 for the home day Tue 2017-06-13" in done.stdout and "PJM-RTO" in done.stdout
    lmp = dm.load_case(tmp_path / "c").lmp
    np.testing.assert_allclose(lmp, pjm_raw_day(PJM_FILE, dt.date(2025, 6, 10)), rtol=0, atol=1e-12)


def test_pjm_like_is_the_former_synthetic_default():
    """The synthetic generator stays: the Eastern day of the home day itself, seeded, $/MWh / 1000."""
    case = D.build_case(n_homes=2, n_scenarios=2, seed=3, prices="pjm-like")
    np.testing.assert_array_equal(case.lmp, D.lmp_for_date(D.synthetic_lmp(2017, seed=3), "2017-06-13") / 1000)
    assert D.price_source("pjm-like").price_day("2017-06-13") == pd.Timestamp("2017-06-13")


# -------------------------------------------------------------------------------------------- bad sources
@pytest.mark.parametrize("bad", ["ercot-2023", "PJM", "no/such/file.csv", ""])
def test_an_unknown_name_is_one_error_listing_the_choices(bad):
    with pytest.raises(D.DataError) as err:
        D.price_source(bad)
    message = str(err.value)
    assert f"{bad!r} is not a price source" in message and CHOICES in message and "\n" not in message
    with pytest.raises(D.DataError, match="is not a price source"):
        D.build_case(n_homes=2, n_scenarios=2, prices=bad)


def test_a_malformed_file_is_one_error_naming_it_and_listing_the_choices(tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_text("datetime_beginning_utc,pnode_id\n1/1/2025 5:00:00 AM,1\n")
    with pytest.raises(D.DataError) as err:
        D.price_source(bad)
    message = str(err.value)
    assert message.startswith(str(bad)) and "da_hrl_lmps" in message and CHOICES in message
    assert "\n" not in message
    done = desmarket("build-case", tmp_path / "out", "--prices", bad)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(bad) in done.stderr and "ercot-2021" in done.stderr and not (tmp_path / "out").exists()
    unknown = desmarket("build-case", tmp_path / "out", "--prices", "ercot-2023")
    assert unknown.returncode == 1 and "'ercot-2023' is not a price source" in unknown.stderr
    assert CHOICES in unknown.stderr and not (tmp_path / "out").exists()


def test_the_cli_help_lists_the_choices_and_the_default():
    done = desmarket("build-case", "--help")
    text = " ".join(done.stdout.split())
    for word in ("--prices", "ercot-2022", "ercot-2021", "pjm-like", "da_hrl_lmps", "(default: ercot-2022)"):
        assert word in text, word
    assert D.DEFAULT_PRICES == "ercot-2022"


def test_a_relative_path_is_read_from_the_current_folder(tmp_path):
    """`--prices prices.csv` in the user's folder: the file there (a file of another folder is another tag)."""
    path = _pjm_file(tmp_path / "prices.csv", "2025-06-08", days=4)
    done = desmarket(
        "build-case",
        "out",
        "--prices",
        "prices.csv",
        "--date",
        "2017-06-13",
        "--homes",
        "2",
        "--scenarios",
        "2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(dm.load_case(tmp_path / "out").lmp, pjm_raw_day(path, dt.date(2025, 6, 10)))
    assert file_tag(path).startswith("prices-") and file_tag(path) != file_tag(tmp_path / "x" / "prices.csv")


# ------------------------------------------------------------------------ real prices through the studies
def _pjm_file(path: Path, first_day: str, days: int) -> Path:
    """A small da_hrl_lmps export of pnode 1 (every Eastern hour of ``days`` days from ``first_day``);
    the price of each hour is 20 + its Eastern hour in $/MWh (so hour alignment shows)."""
    start = pd.Timestamp(first_day, tz="America/New_York")
    utc = pd.date_range(
        start.tz_convert("UTC"), (start + pd.Timedelta(days=days)).tz_convert("UTC"), freq="h", inclusive="left"
    )
    fmt = lambda t: f"{t.month}/{t.day}/{t.year} {(t.hour % 12) or 12}:00:00 {'AM' if t.hour < 12 else 'PM'}"
    out = _io.StringIO()
    out.write(
        "datetime_beginning_utc,datetime_beginning_ept,pnode_id,pnode_name,voltage,equipment,type,zone,"
        "system_energy_price_da,total_lmp_da,congestion_price_da,marginal_loss_price_da,row_is_current,"
        "version_nbr\n"
    )
    for t in utc:
        ept = t.tz_convert("America/New_York")
        out.write(f"{fmt(t)},{fmt(ept)},1,PJM-RTO,,,ZONE,,{20 + ept.hour},{20 + ept.hour},0,0,TRUE,1\n")
    path.write_text(out.getvalue())
    return path


def test_the_year_study_on_ercot_2021_studies_the_storm_and_the_negative_prices(measured):
    """2017-02-14..16 map into Winter Storm Uri (2021-02-16..18): studied rows, not failures. 2017-03-08 and
    03-09 map onto 2021-03-10 and 03-11, the year's only negative LMPs."""
    s21 = D.load_ercot(2021)
    negative_days = sorted({t.date().isoformat() for t in s21.index[s21.to_numpy() < 0]})
    assert negative_days == ["2021-03-10", "2021-03-11"]
    source = D.price_source("ercot-2021")
    assert [source.price_day(d).date().isoformat() for d in ("2017-03-08", "2017-03-09")] == negative_days
    days = ["2017-02-14", "2017-02-15", "2017-02-16", "2017-03-08", "2017-03-09"]
    rows = year.claims_by_day(days, measured, n_jobs=1, n_homes=3, n_scenarios=2, prices="ercot-2021")
    assert (rows["status"] == "ok").all(), rows["reason"].tolist()
    assert list(rows["price_day"]) == ["2021-02-16", "2021-02-17", "2021-02-18", *negative_days]
    assert np.isfinite(rows["surplus_usd"]).all()
    default = year.claims_by_day(["2017-02-14"], measured, n_jobs=1, n_homes=3, n_scenarios=2)
    assert default.loc["2017-02-14", "price_day"] == "2022-02-15"  # ercot-2022 is the default
    assert default.loc["2017-02-14", "surplus_usd"] != rows.loc["2017-02-14", "surplus_usd"]


def test_a_negative_price_day_runs_end_to_end(measured, quiet_routing):
    """Home day 2017-03-09 takes 2021-03-11, whose hours 0-2 (Central) are negative: the case keeps them and
    M1, the clearing, M2 and M3 settle with lambda^b = LMP + (k^b - 1)|LMP| > lambda^s."""
    from desmarket.study import run_study

    case = D.build_case(n_homes=3, n_scenarios=2, date="2017-03-09", measured=measured, prices="ercot-2021")
    np.testing.assert_allclose(case.lmp, ercot_raw_day("2021-03-11"), rtol=0, atol=1e-12)
    assert (case.lmp[:3] < 0).all() and (case.lmp[3:] > 0).all()
    assert (case.buy_price > case.sell_price).all()
    study = run_study(case, 0.2, n_jobs=1)
    assert np.isfinite(study.m3.surplus) and study.m3.alpha.sum() == pytest.approx(0.8)
    assert study.m3.aggregator_gain == pytest.approx(0.2 * study.m3.surplus)


def test_the_storms_worst_day_runs_end_to_end(measured, quiet_routing):
    """The highest day of 2021 (2021-02-16 .. 02-17 peak near 9 $/kWh) is a case like any other."""
    from desmarket.study import run_study

    s21 = D.load_ercot(2021)
    daily = s21.groupby(s21.index.date).mean()
    worst = pd.Timestamp(daily.idxmax())
    home = next(d for d in pd.date_range("2017-02-01", "2017-02-28") if D.ercot_day_for(d, 2021) == worst)
    case = D.build_case(n_homes=3, n_scenarios=2, date=home, measured=measured, prices="ercot-2021")
    assert case.lmp.mean() > 5  # $/kWh
    study = run_study(case, 0.2, n_jobs=1)
    assert np.isfinite(study.m3.surplus) and np.isfinite(study.m3.home_gain).all()


def test_a_daylight_saving_price_day_is_a_failed_row_with_its_reason(measured, tmp_path):
    """PJM 2025: Sun 2016-10-30 maps onto Sun 2025-11-02 (25 Eastern hours); Sat 2016-11-05 onto 2025-11-08,
    after the file ends. Both are failed rows with their reason; Tue 2016-11-01 (-> 2025-11-04) is studied."""
    path = _pjm_file(tmp_path / "fall.csv", "2025-10-30", days=7)
    source = D.price_source(path)
    assert source.year == 2025 and source.tag == file_tag(path)
    np.testing.assert_array_equal(source.lmp("2016-11-01"), (20 + np.arange(24)) / 1000)  # by Eastern clock hour
    rows = year.claims_by_day(
        ["2016-10-30", "2016-11-01", "2016-11-05"], measured, n_jobs=1, n_homes=3, n_scenarios=2, prices=path
    )
    assert list(rows["status"]) == ["failed", "ok", "failed"]
    assert list(rows["price_day"]) == ["2025-11-02", "2025-11-04", "2025-11-08"]
    dst = rows.loc["2016-10-30"]
    assert dst["failure"] == "daylight-saving price day"
    assert "home day 2016-10-30 takes the prices of 2025-11-02" in dst["reason"] and "25 hours" in dst["reason"]
    assert rows.loc["2016-11-05", "failure"] == "price day outside the data"
    assert "not in the price data" in rows.loc["2016-11-05", "reason"]
    with pytest.raises(D.DataError, match="a daylight-saving price day, 25 hours"):
        D.build_case(n_homes=2, n_scenarios=2, date="2016-10-30", measured=measured, prices=path)


def test_a_bad_source_stops_a_study_before_any_day(measured):
    """Not a property of a day: one error, not 366 failed rows."""
    with pytest.raises(D.DataError, match="is not a price source"):
        year.claims_by_day(["2017-06-13"], measured, n_jobs=1, prices="ercot-2020")
    with pytest.raises(D.DataError, match="is not a price source"):
        year.day_claims("2017-06-13", measured, prices="ercot-2020")
    with pytest.raises(D.DataError, match="is not a price source"):
        sizes.size_study([3], seeds=[0], days={"summer": "2017-06-13"}, measured=measured, prices="ercot-2020")


def test_the_size_study_takes_the_price_source(measured):
    days = {"winter": "2017-01-17"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        rows = {
            p: sizes.size_study([3], seeds=[0], days=days, measured=measured, n_jobs=1, n_scenarios=2, prices=p)
            for p in ("ercot-2022", "ercot-2021", "pjm-like")
        }
    assert [rows[p]["price_day"].iloc[0] for p in rows] == ["2022-01-18", "2021-01-19", "2017-01-17"]
    spread = {p: rows[p]["lmp_spread_usd_per_mwh"].iloc[0] for p in rows}
    assert spread["ercot-2022"] == pytest.approx(1000 * np.ptp(ercot_raw_day("2022-01-18")))
    assert len(set(spread.values())) == 3 and (pd.concat(rows.values())["status"] == "ok").all()


def test_a_series_is_taken_in_its_own_clock_and_unit():
    """build_case(prices=Series): load_pjm_lmps' UTC index is read in Eastern time; a Central series in $/MWh in
    Central time; load_ercot's $/kWh series is refused (it would be taken for $/MWh)."""
    central = (D.load_ercot(2022) * 1000).rename("lmp_usd_per_mwh")
    central.attrs.update(tz="America/Chicago")
    case = D.build_case(n_homes=2, n_scenarios=2, prices=central, price_date="2022-06-14")
    np.testing.assert_allclose(case.lmp, ercot_raw_day("2022-06-14"), rtol=0, atol=1e-12)
    with pytest.raises(D.DataError, match=r"\$/kWh \(load_ercot's\)"):
        D.build_case(n_homes=2, n_scenarios=2, prices=D.load_ercot(2022), price_date="2022-06-14")
    with pytest.raises(D.DataError, match="not in the price year 2022 of ercot-2022"):
        D.build_case(n_homes=2, n_scenarios=2, price_date="2021-02-16")
    case = D.build_case(n_homes=2, n_scenarios=2, prices="ercot-2021", price_date="2021-02-15")
    np.testing.assert_allclose(case.lmp, ercot_raw_day("2021-02-15"), rtol=0, atol=1e-12)
