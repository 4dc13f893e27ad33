"""The measured homes: CityLearn Challenge 2022, 17 single-family homes in Fontana, California (not Austin).

Source: PyPI ``citylearn==2.1.2`` (MIT), folder ``citylearn/data/citylearn_challenge_2022_phase_all``; the
project commits only the extract written by ``scripts/build_raw_data.py`` (see data/README.md).

Calendar (worked out from the files, which carry no year): the 8,760 rows are consecutive local clock hours
from 2016-07-31 23:00 to 2017-07-31 22:00 (hour-beginning). Evidence: ``Hour`` runs 1..24 hour-ending
without a gap; the second row is Month 8, Hour 1, Day Type 1 (Monday), and 2016-08-01 was a Monday, as is
every later Day Type; and the PV peak of every home moves one hour earlier on 2016-11-06 and one hour
later on 2017-03-12, the US daylight-saving changes of that year, so the clock is local prevailing time
(Pacific) although ``Daylight Savings Status`` is 0 in every row. ``Day Type`` 8 (holiday) never occurs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import project_root
from .errors import DataError
from .measured import MEASURED_COLUMNS, check_measured

#: Environment variable that points to another ``data/raw`` folder (default: ``<repo>/data/raw``).
RAW_DATA_ENV = "DESMARKET_RAW_DATA"
CITYLEARN_FOLDER = "citylearn2022"
CITYLEARN_TZ = "America/Los_Angeles"  # Fontana, California: local prevailing (Pacific) clock time
CITYLEARN_FIRST_HOUR = pd.Timestamp("2016-07-31 23:00")  # first row, hour-beginning, local clock time
REBUILD = "run `make data` (rebuilds data/raw/citylearn2022 from the pinned CityLearn wheel on PyPI)"


def raw_data_dir() -> Path:
    """The ``data/raw`` folder: ``$DESMARKET_RAW_DATA`` if set, else ``data/raw`` of this repository."""
    env = os.environ.get(RAW_DATA_ENV)
    return Path(env) if env else project_root() / "data" / "raw"


def citylearn_home_id(building: str) -> str:
    """``Building_7`` -> ``B07`` (the home ids used in cases)."""
    return f"B{int(building.rsplit('_', 1)[1]):02d}"


def _read(folder: Path, name: str, **kwargs) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise DataError(str(path), "is missing", REBUILD)
    return pd.read_csv(path, **kwargs)


def citylearn_times(calendar: pd.DataFrame, file: str = "calendar.csv") -> pd.DatetimeIndex:
    """Hour-beginning local clock times of the CityLearn rows, checked against the file's calendar columns.

    calendar: columns ``month``, ``hour`` (1..24, hour-ending), ``day_type`` (1 = Monday .. 7 = Sunday).
    Raises :class:`DataError` at the first row whose month, hour or weekday disagrees with the documented
    start (2016-07-31 23:00, consecutive hours).
    """
    t = CITYLEARN_FIRST_HOUR + pd.to_timedelta(np.arange(len(calendar)), unit="h")
    expect = {"month": t.month, "hour": t.hour + 1, "day_type": t.day_of_week + 1}
    for column, values in expect.items():
        bad = np.flatnonzero(calendar[column].to_numpy() != np.asarray(values))
        if bad.size:
            i = bad[0]
            raise DataError(
                file,
                f"row {i + 1} has {column} = {calendar[column].iloc[i]}, expected {values[i]} for "
                f"{t[i]} (the extract's calendar is not consecutive hours from {CITYLEARN_FIRST_HOUR})",
                REBUILD,
                time=t[i],
                column=column,
            )
    return t


def load_measured_homes(raw_dir=None) -> pd.DataFrame:
    """The 17 CityLearn homes as a tidy hourly frame (one row per home and hour).

    Columns (see :data:`desmarket.data.measured.MEASURED_COLUMNS`):
      home     ``B01`` .. ``B17`` (CityLearn ``Building_1`` .. ``Building_17``)
      time     hour-beginning local clock time, naive (Pacific prevailing time; ``attrs['tz']``)
      load_kw  ``Equipment Electric Power [kWh]`` over the hour = mean kW
      pv_kw    ``Solar Generation [W/kW]`` x PV nominal power (kWp, schema.json) / 1000, mean kW
      pv_kwp   the home's PV nominal power, kWp
    No row is changed or dropped here; the bad-data rules live in :func:`desmarket.data.day_flags` and
    :func:`desmarket.data.home_quality`. Raises :class:`DataError` if the extract is missing or malformed.
    """
    folder = Path(raw_dir) / CITYLEARN_FOLDER if raw_dir is not None else raw_data_dir() / CITYLEARN_FOLDER
    calendar = _read(folder, "calendar.csv")
    times = citylearn_times(calendar, str(folder / "calendar.csv"))
    load = _read(folder, "load_kwh.csv.gz")
    solar = _read(folder, "solar_w_per_kw.csv.gz")
    buildings = _read(folder, "buildings.csv")
    names = list(buildings["building"])
    for name, frame in (("load_kwh.csv.gz", load), ("solar_w_per_kw.csv.gz", solar)):
        if list(frame.columns) != names or len(frame) != len(times):
            raise DataError(
                str(folder / name),
                f"has columns {list(frame.columns)[:3]}... and {len(frame)} rows, "
                f"expected the {len(names)} buildings of buildings.csv and {len(times)} rows",
                REBUILD,
            )
    kwp = buildings["pv_nominal_power_kw"].to_numpy(dtype=float)
    n, t = len(names), len(times)
    frame = pd.DataFrame(
        {
            "home": np.repeat([citylearn_home_id(b) for b in names], t),
            "time": np.tile(times.to_numpy(), n),
            "load_kw": load.to_numpy(dtype=float).T.reshape(-1),
            "pv_kw": (solar.to_numpy(dtype=float) * kwp / 1000.0).T.reshape(-1),
            "pv_kwp": np.repeat(kwp, t),
        }
    )[list(MEASURED_COLUMNS)]
    frame.attrs.update(tz=CITYLEARN_TZ, source=f"CityLearn 2022 extract in {folder}")
    check_measured(frame, str(folder / "load_kwh.csv.gz / solar_w_per_kw.csv.gz"))
    return frame
