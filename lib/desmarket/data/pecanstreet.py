"""Loader for Pecan Street Dataport CSV exports (the paper's source; access needs a Dataport account).

Dataport files may not be redistributed, so none ship with the project. A user with access exports the
homes' circuit data (1-minute, 15-minute or hourly) as CSV, then::

    measured = desmarket.data.load_pecanstreet("15minute_data_austin.csv")
    case = desmarket.data.build_case(measured=measured, date="2018-07-17")

Columns used: ``dataid`` (home), one time column ``localminute`` / ``local_15min`` / ``localhour`` (local
time with a UTC offset, e.g. ``2018-07-01 00:15:00-05``), and either ``grid`` (net import, kW; negative
when exporting) with ``solar`` and ``solar2`` (PV, kW), or the older ``use`` (total consumption, kW) with
``gen`` (PV, kW). All other columns are ignored.

Rules (data/README.md, "Bad data"):
* pv = solar + solar2 (or gen). An empty ``solar2`` is 0 (most homes have one array); a home whose PV
  columns are empty in every row has no PV (pv = 0).
* load = grid + pv (or use), so that load - pv = grid. Negative PV readings are inverter standby draw at
  night: they are moved into the load (pv = max(pv, 0), load = grid + max(pv, 0)); the balance still holds.
* A timestamp that parses to the same instant twice for a home: identical rows are one record exported
  twice and are kept once (a warning says how many); differing rows raise :class:`DataError`.
* Empty (NaN) readings are missing samples. An hour with fewer samples than the resolution gives
  (60, 4 or 1), or a missing hour between the home's first and last, is *incomplete*: by default
  :class:`DataError` naming home and hour; with ``incomplete="drop-day"`` the whole local day of that home
  is left out, listed in ``frame.attrs['dropped_days']`` and announced by a warning.
* Negative load after these rules raises :class:`DataError` naming home and time.
* Times are converted to ``tz`` (Austin: America/Chicago). Daylight-saving days have 23 or 25 hours; they
  stay in the frame and are flagged ``dst_change`` by :func:`~desmarket.data.day_flags`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .measured import MEASURED_COLUMNS

TIME_COLUMNS = {"localminute": 60, "local_15min": 4, "localhour": 1}  # samples per hour
PECANSTREET_TZ = "America/Chicago"  # Austin, Texas


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return (
        pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        if column in frame.columns
        else np.full(len(frame), np.nan)
    )


def _pv_columns(raw: pd.DataFrame, home: np.ndarray, columns) -> np.ndarray:
    """PV per sample: the sum of the PV columns; a column empty for a whole home is 0 for it.

    A PV column empty only in some rows of a home that has it elsewhere is a missing sample (NaN).
    """
    total = np.zeros(len(raw))
    for column in columns:
        values = _numeric(raw, column)
        present = pd.Series(~np.isnan(values)).groupby(home).transform("any").to_numpy()
        total = total + np.where(present, values, 0.0)  # NaN stays NaN where the home has the column
    return total


def load_pecanstreet(path_or_frame, tz: str = PECANSTREET_TZ, incomplete: str = "raise") -> pd.DataFrame:
    """Dataport CSV export(s) -> hourly measured frame (module docstring), mean kW per home and hour.

    path_or_frame: a CSV path, a list of paths, or a DataFrame with the export's columns
    tz:            local time zone of the homes
    incomplete:    ``"raise"`` (default) or ``"drop-day"`` (see the rules)
    Returns columns ``home, time, load_kw, pv_kw, pv_kwp`` with ``time`` tz-aware local hour-beginning and
    ``pv_kwp`` NaN (Dataport exports do not give array sizes).
    """
    if incomplete not in ("raise", "drop-day"):
        raise ValueError("incomplete must be 'raise' or 'drop-day'")
    if isinstance(path_or_frame, pd.DataFrame):
        raw, file = path_or_frame.reset_index(drop=True), "Pecan Street frame"
    else:
        paths = [path_or_frame] if isinstance(path_or_frame, (str, Path)) else list(path_or_frame)
        file = ", ".join(str(p) for p in paths)
        try:
            raw = pd.concat([pd.read_csv(p, dtype={"dataid": str}) for p in paths], ignore_index=True)
        except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(file, f"cannot be read as CSV ({exc})", "pass Dataport CSV exports") from exc
    time_cols = [c for c in TIME_COLUMNS if c in raw.columns]
    if "dataid" not in raw.columns or len(time_cols) != 1:
        raise DataError(
            file,
            f"needs 'dataid' and one of {list(TIME_COLUMNS)} (found {time_cols})",
            "export from Dataport with the id and exactly one time column",
        )
    tcol = time_cols[0]
    per_hour = TIME_COLUMNS[tcol]
    if "grid" in raw.columns:
        source = ("grid", ["solar", "solar2"])
    elif "use" in raw.columns:
        source = ("use", ["gen"])
    else:
        raise DataError(file, "has neither 'grid' nor 'use'", "export the grid (or use) and solar columns")
    missing = np.flatnonzero(raw["dataid"].isna().to_numpy())
    if missing.size:
        raise DataError(
            file,
            f"row {missing[0] + 2} has no dataid ({missing.size} rows; an empty cell or a "
            "missing-value marker such as 'NA')",
            "export every row with its Dataport dataid",
        )
    home = raw["dataid"].astype(str).str.strip().to_numpy()
    utc = pd.to_datetime(raw[tcol], utc=True, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(utc.isna().to_numpy())
    if bad.size:
        raise DataError(
            file,
            f"cannot read the time {raw[tcol].iloc[bad[0]]!r} ({bad.size} rows)",
            "keep Dataport's local time with UTC offset, e.g. '2018-07-01 00:15:00-05'",
            home=home[bad[0]],
            column=tcol,
        )
    # duplicated timestamps: identical rows are kept once, conflicting ones raise
    keyed = raw.assign(_home=home, _utc=utc.to_numpy())
    dup_key = keyed.duplicated(["_home", "_utc"], keep=False).to_numpy()
    if dup_key.any():
        cols = ["_home", "_utc", source[0], *[c for c in source[1] if c in raw.columns]]
        same = keyed.duplicated(cols, keep="first").to_numpy()
        conflict = keyed[dup_key].drop_duplicates(cols).duplicated(["_home", "_utc"], keep=False)
        if conflict.any():
            row = keyed[dup_key].drop_duplicates(cols)[conflict.to_numpy()].iloc[0]
            raise DataError(
                file,
                "the same timestamp appears with different readings",
                "remove the wrong rows from the export",
                home=row["_home"],
                time=row["_utc"].tz_convert(tz),
                column=tcol,
            )
        warnings.warn(f"{file}: {same.sum()} exactly duplicated rows kept once", stacklevel=2)
        keyed = keyed[~same]
        home, utc = keyed["_home"].to_numpy(), pd.DatetimeIndex(keyed["_utc"])
    else:
        utc = pd.DatetimeIndex(utc)
    main = _numeric(keyed, source[0])
    pv = _pv_columns(keyed, home, source[1])
    standby = np.maximum(-pv, 0.0)  # inverter standby draw, kW
    pv_pos = np.maximum(pv, 0.0)
    # grid: load = grid + max(pv, 0).  use = grid + pv: load = use + max(-pv, 0) (the same thing)
    load = main + pv_pos if source[0] == "grid" else main + standby
    samples = pd.DataFrame(
        {
            "home": home,
            "hour": utc.floor("h"),
            "load_kw": load,
            "pv_kw": pv_pos,
            "ok": np.isfinite(load) & np.isfinite(pv_pos),
        }
    )
    # hourly means over complete hours; every hour from each home's first to last must be complete
    g = samples[samples["ok"]].groupby(["home", "hour"])
    hourly = g[["load_kw", "pv_kw"]].mean()
    count = g.size()
    span = samples.groupby("home")["hour"].agg(["min", "max"])
    full = pd.MultiIndex.from_frame(
        pd.concat([pd.DataFrame({"home": h, "hour": pd.date_range(a, b, freq="h")}) for h, (a, b) in span.iterrows()])
    )
    count = count.reindex(full, fill_value=0)
    hourly = hourly.reindex(full)
    short = (count < per_hour).to_numpy()
    out = hourly.reset_index()
    out["time"] = out["hour"].dt.tz_convert(tz)
    dropped = pd.DataFrame(columns=["home", "date", "reason"])
    if short.any():
        first = out[short].iloc[0]
        if incomplete == "raise":
            raise DataError(
                file,
                f"{short.sum()} hours have fewer than {per_hour} valid samples or none (first: "
                f"{int(count.to_numpy()[short][0])})",
                "export a complete period, or pass incomplete='drop-day' to leave out those days",
                home=first["home"],
                time=first["time"],
            )
        day = out["time"].dt.tz_localize(None).dt.normalize()
        bad_days = pd.DataFrame({"home": out["home"][short], "date": day[short]}).drop_duplicates()
        bad_days["reason"] = "incomplete hour"
        drop = pd.MultiIndex.from_frame(out[["home"]].assign(date=day)).isin(
            pd.MultiIndex.from_frame(bad_days[["home", "date"]])
        )
        out = out[~drop]
        dropped = bad_days.reset_index(drop=True)
        warnings.warn(
            f"{file}: {len(dropped)} home-days with incomplete hours left out (listed in frame.attrs['dropped_days'])",
            stacklevel=2,
        )
    neg = np.flatnonzero(out["load_kw"].to_numpy() < 0)
    if neg.size:
        row = out.iloc[neg[0]]
        raise DataError(
            file,
            f"load = {row['load_kw']:.4f} kW is negative ({neg.size} hours): {source[0]} + PV < 0",
            "check the meter columns of this home (grid, solar, solar2)",
            home=row["home"],
            time=row["time"],
            column=source[0],
        )
    frame = out.assign(pv_kwp=np.nan)[list(MEASURED_COLUMNS)]
    frame = frame.sort_values(["home", "time"], kind="stable").reset_index(drop=True)
    frame.attrs.update(tz=tz, source=f"Pecan Street Dataport export: {file}", dropped_days=dropped)
    return frame
