"""The case: a community of homes, its scenarios and its prices, and the directory format that stores it.

A case directory holds five files (see the README, "Case format"):

``homes.csv``      one row per home: utility coefficients, battery, load flexibility, grid limit
``profiles.csv``   ``home, scenario, hour, load_kw, pv_kw`` for every (home, scenario, hour 0-23)
``scenarios.csv``  ``scenario, probability``
``prices.csv``     ``hour, retail_usd_per_kwh, lmp_usd_per_kwh`` (24 rows)
``market.json``    ``net_metering_usd_per_kwh, buy_ratio, sell_ratio, regularization``

:func:`load_case` reads and validates a directory; :meth:`Case.save` writes one. Every bad input raises a
single :class:`CaseError` naming the file, the column and the row, and saying how to fix it.
Nothing is dropped, clipped or filled in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HOURS = 24  # hourly steps per day; a value in kW is also kWh per step

HOME_COLUMNS = (
    "home",
    "utility_a",  # $/kWh^2, <= 0   (U(d) = a d^2 + b d, $ per hour)
    "utility_b",  # $/kWh,   >= 0
    "battery_kwh",  # usable capacity, kWh
    "battery_kw",  # max charge = max discharge power, kW
    "soc_min",  # fraction of capacity
    "soc_max",  # fraction of capacity
    "soc_initial",  # fraction of capacity, also the required end-of-day state (Eq. 15)
    "eta_charge",  # (0, 1]
    "eta_discharge",  # (0, 1]
    "load_min_factor",  # d >= factor * D (paper 0.8, Eq. 9)
    "load_max_factor",  # d <= factor * D (paper 1.2, Eq. 9)
    "grid_limit_kw",  # connection limit (Eq. 7) and trade limit (Eq. 19), kW
)
PROFILE_COLUMNS = ("home", "scenario", "hour", "load_kw", "pv_kw")
SCENARIO_COLUMNS = ("scenario", "probability")
PRICE_COLUMNS = ("hour", "retail_usd_per_kwh", "lmp_usd_per_kwh")
MARKET_KEYS = ("net_metering_usd_per_kwh", "buy_ratio", "sell_ratio", "regularization")

#: Defaults of the home parameters that MODEL.md marks as choices (Table 1 of the paper was lost).
DEFAULT_HOME = {
    "battery_kwh": 13.5,
    "battery_kw": 5.0,
    "soc_min": 0.1,
    "soc_max": 0.9,
    "soc_initial": 0.5,
    "eta_charge": 0.95,
    "eta_discharge": 0.95,
    "load_min_factor": 0.8,
    "load_max_factor": 1.2,
    "grid_limit_kw": 10.0,
}

PROBABILITY_TOLERANCE = 1e-6  # |sum(probability) - 1| allowed in scenarios.csv


class CaseError(ValueError):
    """A case directory or case data is invalid. The message names file, column, row and the fix."""

    def __init__(self, file: str, problem: str, fix: str, column: str | None = None, row: str | None = None):
        self.file, self.column, self.row, self.problem, self.fix = file, column, row, problem, fix
        where = file + (f", column '{column}'" if column else "") + (f", {row}" if row else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class Market:
    """Market-wide parameters (``market.json``).

    net_metering_usd_per_kwh: q, price the aggregator pays for a home's surplus (Section 3.1), $/kWh.
    buy_ratio, sell_ratio:    k^b, k^s of Eq. 4: the aggregator buys at k^b LMP, sells at k^s LMP
                              [choice: 1.1 / 0.9; the paper's values were lost].
    regularization:           epsilon of the tie-break, $/kW^2 (MODEL.md "Uniqueness") [choice: 1e-5].
    """

    net_metering_usd_per_kwh: float = 0.03
    buy_ratio: float = 1.1
    sell_ratio: float = 0.9
    regularization: float = 1e-5


def paper_retail_tariff() -> np.ndarray:
    """Retail time-of-use price p_t of Section 3.1, $/kWh, hour-beginning 0..23.

    0.212 for hours 0-7 and 22-23, 0.238 for 8-11 and 18-21, 0.263 for 12-17
    [choice: the text's "1:00 a.m. to 8:00 a.m." read as the hours 0:00-8:00].
    """
    p = np.full(HOURS, 0.212)
    p[8:12] = p[18:22] = 0.238
    p[12:18] = 0.263
    return p


@dataclass(frozen=True, eq=False)
class Case:
    """A validated community: homes, scenarios, profiles, prices and market parameters.

    Build one with :func:`load_case`, :func:`create_case` or :meth:`Case.from_frames`; all validate.

    homes:       DataFrame indexed by home id (str), columns ``HOME_COLUMNS[1:]``
    scenarios:   scenario ids (str), in order
    probability: (S,) scenario probabilities pi_s, summing to 1
    load, pv:    (N, S, T) baseline load D and available PV output, kW
    retail, lmp: (T,) retail price p_t and locational marginal price, $/kWh
    market:      :class:`Market`
    """

    homes: pd.DataFrame
    scenarios: tuple[str, ...]
    probability: np.ndarray
    load: np.ndarray
    pv: np.ndarray
    retail: np.ndarray
    lmp: np.ndarray
    market: Market

    # ----------------------------------------------------------------------------------- sizes
    @property
    def home_ids(self) -> tuple[str, ...]:
        return tuple(self.homes.index)

    @property
    def n_homes(self) -> int:
        return len(self.homes)

    @property
    def n_scenarios(self) -> int:
        return len(self.scenarios)

    @property
    def buy_price(self) -> np.ndarray:
        """lambda^b_t = k^b LMP_t, $/kWh (Eq. 4)."""
        return self.market.buy_ratio * self.lmp

    @property
    def sell_price(self) -> np.ndarray:
        """lambda^s_t = k^s LMP_t, $/kWh (Eq. 4)."""
        return self.market.sell_ratio * self.lmp

    def column(self, name: str) -> np.ndarray:
        """One column of ``homes`` as a float array (N,)."""
        return self.homes[name].to_numpy(dtype=float)

    def __repr__(self) -> str:
        return (
            f"Case({self.n_homes} homes, {self.n_scenarios} scenarios, {self.load.shape[-1]} hours, "
            f"{self.market})"
        )

    # ------------------------------------------------------------------------------- frames
    def to_frames(self) -> dict:
        """The five tables of the case format, as DataFrames (and a dict for ``market.json``)."""
        t = self.load.shape[-1]
        return {
            "homes": self.homes.reset_index(),
            "profiles": long_table(self.home_ids, self.scenarios, load_kw=self.load, pv_kw=self.pv),
            "scenarios": pd.DataFrame({"scenario": list(self.scenarios), "probability": self.probability}),
            "prices": pd.DataFrame(
                {"hour": np.arange(t), "retail_usd_per_kwh": self.retail, "lmp_usd_per_kwh": self.lmp}
            ),
            "market": dataclasses.asdict(self.market),
        }

    @classmethod
    def from_frames(cls, homes, profiles, scenarios, prices, market) -> Case:
        """Validate the five tables of the case format and build a :class:`Case`.

        ``market`` is a :class:`Market` or a mapping with the keys of ``market.json``.
        Raises :class:`CaseError` on the first problem found.
        """
        market = _validate_market(market if isinstance(market, Mapping) else dataclasses.asdict(market))
        homes = _validate_homes(homes)
        scen_ids, probability = _validate_scenarios(scenarios)
        retail, lmp = _validate_prices(prices, market)
        load, pv = _validate_profiles(profiles, tuple(homes.index), scen_ids)
        return cls(homes, scen_ids, probability, load, pv, retail, lmp, market)

    def save(self, path) -> Path:
        """Write the case in the directory format (creating ``path``); returns the path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        frames = self.to_frames()
        for name in ("homes", "profiles", "scenarios", "prices"):
            frames[name].to_csv(path / f"{name}.csv", index=False)
        (path / "market.json").write_text(json.dumps(frames["market"], indent=2) + "\n")
        return path

    # ---------------------------------------------------------------------------- variants
    def replace(self, *, market: Market | Mapping | None = None, **home_columns) -> Case:
        """A validated copy with new market parameters and/or home columns.

        ``case.replace(market={"buy_ratio": 1.2})``, ``case.replace(battery_kwh=0.0)`` (scalar or (N,)).
        """
        frames = self.to_frames()
        if market is not None:
            new = dataclasses.asdict(market) if isinstance(market, Market) else dict(market)
            unknown = set(new) - set(MARKET_KEYS)
            if unknown:
                raise CaseError("market.json", f"unknown keys {sorted(unknown)}", f"use only {MARKET_KEYS}")
            frames["market"] = {**frames["market"], **new}
        for name, value in home_columns.items():
            if name not in HOME_COLUMNS[1:]:
                raise CaseError("homes.csv", f"unknown column '{name}'", f"use one of {HOME_COLUMNS[1:]}")
            frames["homes"][name] = np.broadcast_to(np.asarray(value, dtype=float), (self.n_homes,))
        return Case.from_frames(**frames)

    def select(self, homes: Sequence[str] | None = None) -> Case:
        """The same case restricted to some homes (ids, in the order given)."""
        ids = list(self.home_ids if homes is None else homes)
        unknown = [h for h in ids if h not in self.homes.index]
        if unknown:
            raise CaseError("homes.csv", f"unknown homes {unknown}", "select ids that appear in the 'home' column")
        idx = self.homes.index.get_indexer(ids)
        return dataclasses.replace(self, homes=self.homes.iloc[idx], load=self.load[idx], pv=self.pv[idx])


# ======================================================================================== I/O
def load_case(path) -> Case:
    """Read and validate a case directory (format in the module docstring). Raises :class:`CaseError`."""
    path = Path(path)
    if not path.is_dir():
        raise CaseError(str(path), "is not a directory", "pass the folder that holds homes.csv, profiles.csv, ...")
    frames = {}
    for name, ids in (("homes", ["home"]), ("profiles", ["home", "scenario"]), ("scenarios", ["scenario"]),
                      ("prices", [])):
        file = path / f"{name}.csv"
        if not file.is_file():
            raise CaseError(f"{name}.csv", f"missing from {path}", f"add {name}.csv (see the README, 'Case format')")
        try:
            frames[name] = pd.read_csv(file, dtype={c: str for c in ids}, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise CaseError(f"{name}.csv", f"cannot be parsed as CSV ({exc})", "write a comma-separated file "
                            "with one header line") from None
    file = path / "market.json"
    if not file.is_file():
        raise CaseError("market.json", f"missing from {path}", f"add market.json with the keys {MARKET_KEYS}")
    try:
        frames["market"] = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CaseError("market.json", f"is not valid JSON ({exc})", "write one JSON object") from None
    return Case.from_frames(**frames)


def create_case(
    load,
    pv,
    *,
    utility_a,
    utility_b,
    retail=None,
    lmp,
    probability=None,
    home_ids: Sequence[str] | None = None,
    scenario_ids: Sequence[str] | None = None,
    market: Market | Mapping | None = None,
    **home_params,
) -> Case:
    """Build a validated :class:`Case` from arrays (for tests, notebooks and users' own data).

    load, pv:      (N, S, T) kW (a 2-D (N, T) array means one scenario)
    utility_a/b:   scalar or (N,), in $ (U = a d^2 + b d)
    retail, lmp:   (T,) $/kWh; retail defaults to :func:`paper_retail_tariff`
    probability:   (S,), default equiprobable
    home_params:   any other column of ``homes.csv`` (scalar or (N,)); defaults in :data:`DEFAULT_HOME`
    """
    load, pv = np.asarray(load, dtype=float), np.asarray(pv, dtype=float)
    if load.ndim == 2:
        load = load[:, None, :]
    if pv.ndim == 2:
        pv = pv[:, None, :]
    if load.ndim != 3 or pv.shape != load.shape:
        raise CaseError("profiles.csv", f"load {load.shape} and pv {pv.shape} are not both (homes, scenarios, "
                        "hours)", "pass two arrays of the same (N, S, T) shape")
    n, s, t = load.shape
    home_ids = [str(h) for h in (home_ids if home_ids is not None else range(1, n + 1))]
    scenario_ids = [str(k) for k in (scenario_ids if scenario_ids is not None else range(1, s + 1))]
    unknown = set(home_params) - set(HOME_COLUMNS)
    if unknown:
        raise CaseError("homes.csv", f"unknown columns {sorted(unknown)}", f"use columns of {HOME_COLUMNS}")
    params = {**DEFAULT_HOME, "utility_a": utility_a, "utility_b": utility_b, **home_params}
    homes = pd.DataFrame({"home": home_ids})
    for col in HOME_COLUMNS[1:]:
        homes[col] = np.broadcast_to(np.asarray(params[col], dtype=float), (n,))
    probability = np.full(s, 1.0 / s) if probability is None else np.asarray(probability, dtype=float)
    retail = paper_retail_tariff() if retail is None else retail
    frames = {
        "homes": homes,
        "profiles": long_table(home_ids, scenario_ids, load_kw=load, pv_kw=pv),
        "scenarios": pd.DataFrame({"scenario": scenario_ids, "probability": probability}),
        "prices": pd.DataFrame({"hour": np.arange(len(np.atleast_1d(lmp))),
                                "retail_usd_per_kwh": retail, "lmp_usd_per_kwh": lmp}),
        "market": market if market is not None else Market(),
    }
    return Case.from_frames(**frames)


def long_table(home_ids, scenario_ids, **cubes: np.ndarray) -> pd.DataFrame:
    """(N, S, T) arrays -> one long table with columns home, scenario, hour, then one column per array.

    Rows are home-major, then scenario, then hour (the layout of ``profiles.csv``).
    """
    n, s, t = next(iter(cubes.values())).shape
    return pd.DataFrame(
        {
            "home": np.repeat(np.asarray(home_ids, dtype=object), s * t),
            "scenario": np.tile(np.repeat(np.asarray(scenario_ids, dtype=object), t), n),
            "hour": np.tile(np.arange(t), n * s),
            **{name: np.asarray(cube).reshape(-1) for name, cube in cubes.items()},
        }
    )


# ================================================================================ validation
def _row(frame: pd.DataFrame, i: int) -> str:
    """Human row reference: the line in the CSV file (header = line 1)."""
    return f"line {frame.index[i] + 2}" if isinstance(frame.index, pd.RangeIndex) else f"row {i + 1}"


def _require_columns(frame, file: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise CaseError(file, f"expected a table, got {type(frame).__name__}", "pass a pandas DataFrame")
    frame = frame.reset_index(drop=True)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CaseError(file, f"missing columns {missing}", f"the header must be: {','.join(columns)}")
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        raise CaseError(file, f"unknown columns {extra}", f"remove them; the header must be: {','.join(columns)}")
    return frame


def _numeric(frame: pd.DataFrame, file: str, column: str) -> np.ndarray:
    """Column as finite floats; a blank, NaN, text or infinite cell raises naming its row."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = bad[0]
        raise CaseError(file, f"value {frame[column].iloc[i]!r} is not a finite number ({bad.size} such rows)",
                        "write a number in every cell", column, _row(frame, i))
    return values


def _ids(frame: pd.DataFrame, file: str, column: str) -> np.ndarray:
    values = frame[column]
    blank = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if blank.size:
        raise CaseError(file, "empty id", "give every row an id", column, _row(frame, blank[0]))
    return values.astype(str).str.strip().to_numpy()


def _check(ok: np.ndarray, frame, file, column, problem, fix) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise CaseError(file, problem + (f" ({bad.size} rows)" if bad.size > 1 else ""), fix, column,
                        _row(frame, bad[0]))


def _unique(ids: np.ndarray, frame, file, column) -> None:
    dup = pd.Series(ids).duplicated().to_numpy()
    _check(~dup, frame, file, column, f"duplicate id '{ids[np.argmax(dup)]}'" if dup.any() else "",
           "give each row a unique id")


def _keyed_table(frame, file: str, columns: Sequence[str], empty_fix: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A table keyed by its first column: required columns, at least one row, unique non-empty ids."""
    frame = _require_columns(frame, file, columns)
    if len(frame) == 0:
        raise CaseError(file, "has no rows", empty_fix)
    ids = _ids(frame, file, columns[0])
    _unique(ids, frame, file, columns[0])
    return frame, ids


def _validate_homes(frame) -> pd.DataFrame:
    file = "homes.csv"
    frame, ids = _keyed_table(frame, file, HOME_COLUMNS, "add one row per home")
    v = {c: _numeric(frame, file, c) for c in HOME_COLUMNS[1:]}
    rules = [
        ("utility_a", v["utility_a"] <= 0, "must be <= 0 (U(d) = a d^2 + b d is concave)", "use a <= 0 in $/kWh^2"),
        ("utility_b", v["utility_b"] >= 0, "must be >= 0", "use b >= 0 in $/kWh"),
        ("battery_kwh", v["battery_kwh"] >= 0, "must be >= 0", "use 0 for a home without a battery"),
        ("battery_kw", v["battery_kw"] >= 0, "must be >= 0", "use 0 for a home without a battery"),
        ("soc_min", (v["soc_min"] >= 0) & (v["soc_min"] <= 1), "must lie in [0, 1]", "give a fraction of capacity"),
        ("soc_max", (v["soc_max"] >= 0) & (v["soc_max"] <= 1), "must lie in [0, 1]", "give a fraction of capacity"),
        ("soc_initial", (v["soc_initial"] >= v["soc_min"]), "is below soc_min",
         "raise soc_initial or lower soc_min (the battery must start within its limits)"),
        ("soc_initial", (v["soc_initial"] <= v["soc_max"]), "is above soc_max",
         "lower soc_initial or raise soc_max (the battery must start within its limits)"),
        ("eta_charge", (v["eta_charge"] > 0) & (v["eta_charge"] <= 1), "must lie in (0, 1]",
         "give the efficiency as a fraction, e.g. 0.95"),
        ("eta_discharge", (v["eta_discharge"] > 0) & (v["eta_discharge"] <= 1), "must lie in (0, 1]",
         "give the efficiency as a fraction, e.g. 0.95"),
        ("load_min_factor", (v["load_min_factor"] >= 0) & (v["load_min_factor"] <= 1), "must lie in [0, 1]",
         "the lower load bound is a fraction of the baseline load, e.g. 0.8"),
        ("load_max_factor", v["load_max_factor"] >= 1, "must be >= 1",
         "the upper load bound must allow the daily minimum (the baseline), e.g. 1.2"),
        ("grid_limit_kw", v["grid_limit_kw"] > 0, "must be > 0", "give the connection limit in kW, e.g. 10"),
    ]
    for column, ok, problem, fix in rules:
        _check(ok, frame, file, column, f"value {problem}", fix)
    return pd.DataFrame(v, index=pd.Index(ids, name="home"))


def _validate_scenarios(frame) -> tuple[tuple[str, ...], np.ndarray]:
    file = "scenarios.csv"
    frame, ids = _keyed_table(frame, file, SCENARIO_COLUMNS, "add at least one scenario with probability 1")
    p = _numeric(frame, file, "probability")
    _check(p > 0, frame, file, "probability", "probability must be > 0", "remove the scenario or give it weight")
    total = p.sum()
    if abs(total - 1) > PROBABILITY_TOLERANCE:
        raise CaseError(file, f"probabilities sum to {total:.9g}, not 1", "rescale them so that they sum to 1",
                        "probability")
    return tuple(ids), p


def _validate_prices(frame, market: Market) -> tuple[np.ndarray, np.ndarray]:
    file = "prices.csv"
    frame = _require_columns(frame, file, PRICE_COLUMNS)
    hour = _numeric(frame, file, "hour")
    _check(np.isin(hour, np.arange(HOURS)), frame, file, "hour", f"hour must be an integer 0..{HOURS - 1}",
           "use hour-beginning 0..23")
    _unique(hour.astype(int).astype(str), frame, file, "hour")
    if len(frame) != HOURS:
        missing = sorted(set(range(HOURS)) - set(hour.astype(int)))
        raise CaseError(file, f"has {len(frame)} rows; hours {missing} are missing", "give one row per hour 0..23",
                        "hour")
    order = np.argsort(hour)
    frame = frame.iloc[order].reset_index(drop=True)
    retail = _numeric(frame, file, "retail_usd_per_kwh")
    lmp = _numeric(frame, file, "lmp_usd_per_kwh")
    _check(retail >= market.net_metering_usd_per_kwh, frame, file, "retail_usd_per_kwh",
           f"retail price is below the net-metering price {market.net_metering_usd_per_kwh}",
           "the model needs retail >= net metering (Eq. 6), or a home would buy and sell at once")
    _check(market.buy_ratio * lmp >= market.sell_ratio * lmp, frame, file, "lmp_usd_per_kwh",
           "buy price k^b LMP is below sell price k^s LMP (negative LMP with k^b > k^s)",
           "the model needs lambda^b >= lambda^s (Eq. 4); replace negative LMPs or set buy_ratio = sell_ratio")
    return retail, lmp


def _validate_market(market: Mapping) -> Market:
    file = "market.json"
    if not isinstance(market, Mapping):
        raise CaseError(file, "is not a JSON object", f"write an object with the keys {MARKET_KEYS}")
    missing = [k for k in MARKET_KEYS if k not in market]
    extra = [k for k in market if k not in MARKET_KEYS]
    if missing or extra:
        raise CaseError(file, f"missing keys {missing}, unknown keys {extra}", f"use exactly the keys {MARKET_KEYS}")
    values = {}
    for key in MARKET_KEYS:
        value = market[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CaseError(file, f"'{key}' = {value!r} is not a finite number", "write a number", key)
        values[key] = float(value)
    m = Market(**values)
    for key, ok, problem in (
        ("net_metering_usd_per_kwh", m.net_metering_usd_per_kwh >= 0, "must be >= 0"),
        ("buy_ratio", m.buy_ratio > 0, "must be > 0"),
        ("sell_ratio", m.sell_ratio >= 0, "must be >= 0"),
        ("sell_ratio", m.sell_ratio <= m.buy_ratio, "must not exceed buy_ratio (Eq. 4: the aggregator cannot "
                                                     "sell above its buy price)"),
        ("regularization", m.regularization >= 0, "must be >= 0"),
    ):
        if not ok:
            raise CaseError(file, f"'{key}' = {values[key]} {problem}", "correct the value", key)
    return m


def _validate_profiles(frame, home_ids: tuple[str, ...], scen_ids: tuple[str, ...]):
    file = "profiles.csv"
    frame = _require_columns(frame, file, PROFILE_COLUMNS)
    homes = _ids(frame, file, "home")
    scens = _ids(frame, file, "scenario")
    hour = _numeric(frame, file, "hour")
    load = _numeric(frame, file, "load_kw")
    pv = _numeric(frame, file, "pv_kw")
    h_idx = pd.Index(home_ids).get_indexer(homes)
    _check(h_idx >= 0, frame, file, "home", f"unknown home '{homes[np.argmin(h_idx)]}'" if (h_idx < 0).any() else "",
           "every home must have a row in homes.csv")
    s_idx = pd.Index(scen_ids).get_indexer(scens)
    _check(s_idx >= 0, frame, file, "scenario",
           f"unknown scenario '{scens[np.argmin(s_idx)]}'" if (s_idx < 0).any() else "",
           "every scenario must have a row in scenarios.csv")
    _check(np.isin(hour, np.arange(HOURS)), frame, file, "hour", f"hour must be an integer 0..{HOURS - 1}",
           "use hour-beginning 0..23")
    _check(load >= 0, frame, file, "load_kw", "negative load", "loads are consumption in kW, >= 0")
    _check(pv >= 0, frame, file, "pv_kw", "negative PV output", "PV output is generation in kW, >= 0")
    n, s = len(home_ids), len(scen_ids)
    flat = (h_idx * s + s_idx) * HOURS + hour.astype(int)
    dup = pd.Series(flat).duplicated().to_numpy()
    if dup.any():
        i = np.argmax(dup)
        raise CaseError(file, f"duplicate row for home '{homes[i]}', scenario '{scens[i]}', hour {int(hour[i])}",
                        "give each (home, scenario, hour) exactly once", None, _row(frame, i))
    if len(flat) != n * s * HOURS:
        present = np.zeros(n * s * HOURS, dtype=bool)
        present[flat] = True
        k = int(np.argmin(present))
        i, rest = divmod(k, s * HOURS)
        j, t = divmod(rest, HOURS)
        raise CaseError(file, f"{n * s * HOURS - len(flat)} rows missing, e.g. home '{home_ids[i]}', scenario "
                        f"'{scen_ids[j]}', hour {t}", "give every (home, scenario, hour 0-23) exactly once")
    out_load, out_pv = np.empty(n * s * HOURS), np.empty(n * s * HOURS)
    out_load[flat], out_pv[flat] = load, pv
    return out_load.reshape(n, s, HOURS), out_pv.reshape(n, s, HOURS)
