"""The PJM-like LMP generator, the PJM Data Miner 2 loader (hand-made rows and the real 2025 file), one day."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import desmarket.data as D
from desmarket.io import project_root

ROOT = project_root()
PJM_ENV = "DESMARKET_PJM_FILE"


def real_pjm_file() -> Path | None:
    """The real PJM-RTO 2025 day-ahead export: $DESMARKET_PJM_FILE, else ../shared/data/ beside the repo."""
    for candidate in (os.environ.get(PJM_ENV), ROOT.parent / "shared" / "data" / "pjm_rto_da_2025.csv"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


needs_real = pytest.mark.skipif(
    real_pjm_file() is None, reason=f"real PJM file absent (set {PJM_ENV} or place ../shared/data/)"
)

HEADER = (
    "datetime_beginning_utc,datetime_beginning_ept,pnode_id,pnode_name,voltage,equipment,type,zone,"
    "system_energy_price_da,total_lmp_da,congestion_price_da,marginal_loss_price_da,row_is_current,version_nbr"
)


def pjm_rows(start_utc="1/1/2025 5:00:00 AM", hours=48, pnode=(1, "PJM-RTO"), price=None, current=True):
    """Rows in the da_hrl_lmps export format, hour by hour from ``start_utc``."""
    t0 = pd.to_datetime(start_utc, format="%m/%d/%Y %I:%M:%S %p").tz_localize("UTC")
    utc = pd.date_range(t0, periods=hours, freq="h")
    ept = utc.tz_convert("America/New_York").tz_localize(None)
    fmt = lambda ts: f"{ts.month}/{ts.day}/{ts.year} {ts.strftime('%I:%M:%S %p').lstrip('0')}"
    price = np.arange(hours) + 20.0 if price is None else price
    return [
        f"{fmt(u)},{fmt(e)},{pnode[0]},{pnode[1]},,,ZONE,,{p:.2f},{p:.6f},0.0,0.0,{current},1"
        for u, e, p in zip(utc, ept, price)
    ]


def write(tmp_path, rows, name="da.csv", header=HEADER):
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


# ================================================================================ generator
def test_generator_is_seeded_and_hits_the_annual_mean():
    a, b = D.synthetic_lmp(2024, seed=3), D.synthetic_lmp(2024, seed=3)
    pd.testing.assert_series_equal(a, b)
    assert not np.allclose(a.to_numpy(), D.synthetic_lmp(2024, seed=4).to_numpy())
    assert len(a) == 8784 and str(a.index.tz) == "UTC"  # 2024 is a leap year
    assert a.mean() == pytest.approx(D.PJM_ANNUAL_MEAN_LMP[2024])
    assert D.synthetic_lmp(2022, 0, D.PJM_ANNUAL_MEAN_LMP[2022]).mean() == pytest.approx(80.14)
    assert (a > 0).all()
    assert a.index[0] == pd.Timestamp("2024-01-01 05:00", tz="UTC")  # midnight Eastern


def test_cited_annual_means_in_one_place():
    assert D.PJM_ANNUAL_MEAN_LMP == {2022: 80.14, 2023: 31.08, 2024: 33.74}
    assert D.LMP_MODEL.annual_mean_usd_per_mwh == 33.74


def test_generator_shape_weekend_and_autocorrelation():
    p = D.synthetic_lmp(2023, seed=0)
    stats = D.lmp_statistics(p)
    assert stats["peak hour, summer (EPT)"] in range(15, 20)  # afternoon peak
    assert stats["peak hour, winter (EPT)"] in (6, 7, 8, 17, 18, 19)  # morning or evening peak
    assert 0.7 < stats["weekend / weekday mean"] < 0.9
    assert stats["autocorrelation log LMP, lag 1 h"] > 0.85
    assert stats["autocorrelation log LMP, lag 24 h"] > stats["autocorrelation log LMP, lag 168 h"] > 0.2
    assert stats["max / mean"] > 3  # spikes exist


def test_bad_annual_mean_raises():
    with pytest.raises(D.DataError, match="annual mean"):
        D.synthetic_lmp(2024, 0, annual_mean_usd_per_mwh=-5)


# ============================================================================= PJM loader
def test_loader_reads_handmade_rows(tmp_path):
    s = D.load_pjm_lmps(write(tmp_path, pjm_rows()))
    assert len(s) == 48 and str(s.index.tz) == "UTC" and s.name == "lmp_usd_per_mwh"
    assert s.index[0] == pd.Timestamp("2025-01-01 05:00", tz="UTC")
    assert s.iloc[0] == 20.0 and s.iloc[-1] == 67.0
    assert s.attrs["pnode_id"] == 1 and s.attrs["market"] == "da"
    day = D.lmp_for_date(s, "2025-01-01")  # Eastern day = UTC 05:00 .. 04:00
    assert day.tolist() == list(np.arange(24) + 20.0)


def test_loader_keeps_current_rows_only(tmp_path):
    old = pjm_rows(price=np.full(48, 999.0), current=False)
    s = D.load_pjm_lmps(write(tmp_path, old + pjm_rows()))
    assert s.max() < 999


def test_loader_realtime_format(tmp_path):
    header = HEADER.replace("_da", "_rt")
    s = D.load_pjm_lmps(write(tmp_path, pjm_rows(), header=header))
    assert s.attrs["market"] == "rt" and len(s) == 48


def test_loader_chooses_the_pnode(tmp_path):
    path = write(tmp_path, pjm_rows() + pjm_rows(pnode=(51291, "AECO"), price=np.full(48, 5.0)))
    with pytest.raises(D.DataError, match="holds 2 pnodes"):
        D.load_pjm_lmps(path)
    assert (D.load_pjm_lmps(path, pnode=51291) == 5.0).all()
    assert (D.load_pjm_lmps(path, pnode="aeco") == 5.0).all()
    with pytest.raises(D.DataError, match="no current rows"):
        D.load_pjm_lmps(path, pnode="PSEG")


def test_loader_missing_hour_names_it(tmp_path):
    rows = pjm_rows()
    del rows[10]
    with pytest.raises(D.DataError, match="1 hours are missing") as err:
        D.load_pjm_lmps(write(tmp_path, rows))
    assert err.value.time == pd.Timestamp("2025-01-01 15:00", tz="UTC")


def test_loader_duplicate_hour_raises(tmp_path):
    rows = pjm_rows()
    with pytest.raises(D.DataError, match="appear twice") as err:
        D.load_pjm_lmps(write(tmp_path, rows + rows[3:4]))
    assert err.value.time == pd.Timestamp("2025-01-01 08:00", tz="UTC")


def test_loader_nan_price_raises(tmp_path):
    rows = pjm_rows()
    parts = rows[7].split(",")
    parts[9] = ""
    rows[7] = ",".join(parts)
    with pytest.raises(D.DataError, match="total_lmp_da is empty") as err:
        D.load_pjm_lmps(write(tmp_path, rows))
    assert err.value.time == pd.Timestamp("2025-01-01 12:00", tz="UTC")


def test_loader_inconsistent_ept_raises(tmp_path):
    rows = pjm_rows()
    parts = rows[0].split(",")
    parts[1] = "1/1/2025 5:00:00 AM"  # the UTC time written as Eastern
    rows[0] = ",".join(parts)
    with pytest.raises(D.DataError, match="datetime_beginning_ept"):
        D.load_pjm_lmps(write(tmp_path, rows))


def test_loader_rejects_other_files(tmp_path):
    with pytest.raises(D.DataError, match="not a da_hrl_lmps"):
        D.load_pjm_lmps(write(tmp_path, ["1,2"], header="a,b"))
    with pytest.raises(D.DataError, match="cannot read the time"):
        D.load_pjm_lmps(write(tmp_path, [r.replace("1/1/2025 5:00:00 AM", "yesterday", 1) for r in pjm_rows()]))


def test_loader_across_daylight_saving(tmp_path):
    """2025-03-09 has 23 Eastern hours: the loader is continuous in UTC, one day raises."""
    s = D.load_pjm_lmps(write(tmp_path, pjm_rows("3/8/2025 5:00:00 AM", hours=24 * 4)))
    assert len(s) == 96
    assert len(D.lmp_for_date(s, "2025-03-08")) == 24
    with pytest.raises(D.DataError, match="23 hours"):
        D.lmp_for_date(s, "2025-03-09")
    with pytest.raises(D.DataError, match="0 hours"):
        D.lmp_for_date(s, "2025-06-01")


# ============================================================================ real file
@needs_real
def test_real_pjm_2025_file():
    s = D.load_pjm_lmps(real_pjm_file())
    assert len(s) == 8737 and s.attrs["pnode_name"] == "PJM-RTO" and s.attrs["market"] == "da"
    assert s.index[0] == pd.Timestamp("2025-01-01 05:00", tz="UTC")
    assert s.index[-1].tz_convert("America/New_York") == pd.Timestamp("2025-12-31 00:00", tz="America/New_York")
    assert s.mean() == pytest.approx(47.9, abs=0.1) and s.max() == pytest.approx(548.5, abs=1)
    day = D.lmp_for_date(s, "2025-07-15")
    assert day.shape == (24,) and day.argmax() in range(15, 20)


@needs_real
def test_synthetic_vs_real_comparison():
    real = D.load_pjm_lmps(real_pjm_file())
    table = D.compare_lmp(D.synthetic_lmp(2025, 0, annual_mean_usd_per_mwh=real.mean()), real)
    assert list(table.columns) == ["synthetic", "real"]
    assert table.loc["mean ($/MWh)", "synthetic"] == pytest.approx(table.loc["mean ($/MWh)", "real"])
    assert table.loc["daily profile correlation, summer", "synthetic"] > 0.9
    assert table.loc["peak hour, summer (EPT)"].nunique() == 1
    for stat in ("autocorrelation log LMP, lag 1 h", "autocorrelation log LMP, lag 24 h", "weekend / weekday mean"):
        assert table.loc[stat, "synthetic"] == pytest.approx(table.loc[stat, "real"], abs=0.1), stat
    assert 0.5 < table.loc["std / mean", "synthetic"] / table.loc["std / mean", "real"] < 1.5
