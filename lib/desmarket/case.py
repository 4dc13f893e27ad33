"""The case: a community of homes, its scenarios and its prices, and the directory format that stores it.

A case directory holds five files (docs/usage/case-format.md):

``homes.csv``      one row per home: utility coefficients, battery, load flexibility, grid limit
``profiles.csv``   ``home, scenario, hour, load_kw, pv_kw`` for every (home, scenario, hour 0-23)
``scenarios.csv``  ``scenario, probability``
``prices.csv``     ``hour, retail_usd_per_kwh, lmp_usd_per_kwh`` (24 rows)
``market.json``    ``net_metering_usd_per_kwh, buy_ratio, sell_ratio, regularization`` and, optionally, the
                   imbalance ratios of the two-stage clearing ``imbalance_buy_ratio, imbalance_sell_ratio``

:func:`load_case` reads and validates a directory; :meth:`Case.save` writes one. Every bad input raises a
single :class:`CaseError` naming the file, the column and the row, and saying how to fix it.
Nothing is dropped, clipped or filled in. Files are UTF-8; ids are kept exactly as written ('NA' and 'null'
are ids; an id with surrounding whitespace is an error, and so is a home id of :data:`RESERVED_HOME_IDS`);
numbers must lie within :data:`PLAUSIBLE_RANGES`. LMPs may be negative (see :func:`wholesale_prices`).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CaseError

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
#: Optional keys of ``market.json`` and their defaults: the real-time imbalance ratios k^up, k^dn of the two-stage
#: clearing (:mod:`desmarket.twostage`) [choice: 1.5 / 0.5, see :class:`Market`]. A case that leaves them out
#: saves without them, so every one-stage case and its files stay as they were.
OPTIONAL_MARKET_KEYS = {"imbalance_buy_ratio": 1.5, "imbalance_sell_ratio": 0.5}

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

#: Home ids that would collide with the row labels the report tables add next to the homes (compared after
#: stripping, in any letter case): ``aggregator`` (Table 4 ``table4_costs.csv``, the Figure 5 sweep
#: ``figure5_profit_rate.csv``, the Shapley and core tables of fairness) and ``total`` (the sum row of
#: ``table3_energy.csv`` and ``table4_costs.csv``). A home with such an id would be overwritten by, or
#: mistaken for, that row.
RESERVED_HOME_IDS = ("aggregator", "total")

_POWER = "kW or kWh per home: a home is not a power plant (1e4 kW is 10 MW); the paper's are below 20"
_PRICE = "$/kWh: 100 $/kWh is $100,000/MWh, far beyond any market's price cap"
_RATIO = "a multiple of the LMP; the study uses 1.1 and 0.9"
#: Accepted range of every open-ended number of the case format: name -> (low, high, reason), inclusive.
#:
#: The sign and fraction rules (``battery_kwh >= 0``, ``grid_limit_kw > 0``, ``soc_min`` in [0, 1], ...) are
#: checked first, with their own messages; these bounds then catch magnitudes that no home has. They exist
#: for numerical conditioning: the solvers (Clarabel, PIQP, OSQP, HiGHS) work in double precision with
#: tolerances of 1e-8 to 1e-12, so a 1e9 kW load or a 1e12 load factor next to 0.2 $/kWh prices makes them
#: report "infeasible" or "unbounded" for a case that is neither. The bounds are generous (2 to 4 orders of
#: magnitude above the paper's values); a value beyond them is almost always a unit slip (W for kW, $/MWh
#: for $/kWh, cents for $). They catch absurd magnitudes; they do not promise that every mix of extreme
#: values within them solves (a 3e4 kW grid limit next to 1 kW loads already stalls PIQP at its 1e-12
#: tolerance, hence 1e4 kW). Columns of ``homes.csv``, ``profiles.csv`` and ``prices.csv`` and keys of
#: ``market.json`` share this one table.
PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {
    "utility_a": (-100.0, 0.0, "$/kWh^2; the paper draws -0.005 to -0.001"),
    "utility_b": (0.0, 100.0, "$/kWh, a marginal utility on the scale of prices; the paper draws 0.2 to 0.5"),
    "battery_kwh": (0.0, 1e4, _POWER),
    "battery_kw": (0.0, 1e4, _POWER),
    "load_max_factor": (1.0, 1e3, "a multiple of the baseline load; the paper uses 1.2"),
    "grid_limit_kw": (0.0, 1e4, _POWER),
    "load_kw": (0.0, 1e4, _POWER),
    "pv_kw": (0.0, 1e4, _POWER),
    "retail_usd_per_kwh": (0.0, 100.0, _PRICE),
    "lmp_usd_per_kwh": (
        -100.0,
        100.0,
        "$/kWh: real day-ahead LMPs lie between offer floors of about -0.25 $/kWh "
        "(ERCOT -250 $/MWh) and caps of a few $/kWh (ERCOT's former 9,000 $/MWh); +-100 $/kWh is "
        "far beyond both",
    ),
    "net_metering_usd_per_kwh": (0.0, 100.0, _PRICE),
    "buy_ratio": (0.0, 1e3, _RATIO),
    "sell_ratio": (0.0, 1e3, _RATIO),
    "imbalance_buy_ratio": (0.0, 1e3, _RATIO),
    "imbalance_sell_ratio": (0.0, 1e3, _RATIO),
    "regularization": (
        0.0,
        100.0,
        "$/kW^2, a tie-break weight that must stay far below the utility terms; default 1e-5",
    ),
}
_RANGE_FIX = (
    "check the units (kW not W, $/kWh not $/MWh or cents); the bounds keep the solvers' numerical "
    "conditioning sound (desmarket.case.PLAUSIBLE_RANGES)"
)
CASE_FILES = ("homes.csv", "profiles.csv", "scenarios.csv", "prices.csv", "market.json")
_DIRECTORY_FIX = f"pass the path (str or pathlib.Path) of a folder that holds {', '.join(CASE_FILES)}"


def count_of(n: int, noun: str) -> str:
    """'1 home', '3 homes': the one plural rule of messages (the CLI and scripts/reproduce.py use it too)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Market:
    """Market-wide parameters (``market.json``).

    net_metering_usd_per_kwh: q, price the aggregator pays for a home's surplus (Section 3.1), $/kWh.
    buy_ratio, sell_ratio:    k^b >= k^s of Eq. 4: the aggregator buys at k^b LMP, sells at k^s LMP
                              [choice: 1.1 / 0.9; the paper's values were lost]; for a negative LMP see
                              :func:`wholesale_prices`.
    regularization:           epsilon of the tie-break, $/kW^2 (MODEL.md "Uniqueness") [choice: 1e-5].
    imbalance_buy_ratio, imbalance_sell_ratio: k^up >= k^b and k^dn <= k^s of the two-stage clearing
                              (:mod:`desmarket.twostage`): a shortfall against the day-ahead position is bought in
                              real time at k^up LMP, an excess sold at k^dn LMP. Optional; None (left out of
                              market.json) means the defaults of :data:`OPTIONAL_MARKET_KEYS` [choice: 1.5 / 0.5,
                              a balancing spread of +-0.4 LMP around the day-ahead ratios 1.1 / 0.9, so that a
                              day-ahead purchase is worth making (k^up > k^b) and a surplus is worth selling
                              ahead (k^dn < k^s); :attr:`imbalance_ratios`].
    """

    net_metering_usd_per_kwh: float = 0.03
    buy_ratio: float = 1.1
    sell_ratio: float = 0.9
    regularization: float = 1e-5
    imbalance_buy_ratio: float | None = None
    imbalance_sell_ratio: float | None = None

    @property
    def imbalance_ratios(self) -> tuple[float, float]:
        """(k^up, k^dn): the imbalance ratios given, or the defaults of :data:`OPTIONAL_MARKET_KEYS`."""
        up, down = self.imbalance_buy_ratio, self.imbalance_sell_ratio
        return (
            OPTIONAL_MARKET_KEYS["imbalance_buy_ratio"] if up is None else float(up),
            OPTIONAL_MARKET_KEYS["imbalance_sell_ratio"] if down is None else float(down),
        )

    def __repr__(self) -> str:  # the optional keys only when given, so one-stage output stays as it was
        shown = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return f"Market({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def market_dict(market: Market) -> dict:
    """The ``market.json`` object of a :class:`Market`: the optional keys only when given."""
    return {k: v for k, v in dataclasses.asdict(market).items() if not (k in OPTIONAL_MARKET_KEYS and v is None)}


def check_imbalance_ratios(market: Market) -> None:
    """k^up >= k^b >= k^s >= k^dn (the two-stage clearing's prices), else one :class:`CaseError` on market.json.

    A real-time price below the day-ahead one would make the day-ahead market pointless (buy it all in real time,
    or sell it all ahead and buy it back), and the two-stage problem would not be the paper's.
    """
    up, down = market.imbalance_ratios
    for key, ok, problem in (
        ("imbalance_buy_ratio", up >= market.buy_ratio, f"{up} is below 'buy_ratio' = {market.buy_ratio}"),
        ("imbalance_sell_ratio", down <= market.sell_ratio, f"{down} is above 'sell_ratio' = {market.sell_ratio}"),
    ):
        if not ok:
            raise CaseError(
                "market.json",
                f"'{key}' = {problem} (the two-stage clearing needs k^up >= k^b >= k^s >= k^dn: real-time "
                "imbalances cost at least the day-ahead price)",
                "give imbalance_buy_ratio >= buy_ratio and imbalance_sell_ratio <= sell_ratio (defaults 1.5 / 0.5)",
                key,
            )


def paper_retail_tariff() -> np.ndarray:
    """Retail time-of-use price p_t of Section 3.1, hour-beginning 0..23.

    0.212 for hours 0-7 and 22-23, 0.238 for 8-11 and 18-21, 0.263 for 12-17
    [choice: the text's "1:00 a.m. to 8:00 a.m." read as the hours 0:00-8:00].

    Returns
    -------
    numpy.ndarray
        (24,) $/kWh.
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
        """lambda^b_t, $/kWh: k^b LMP_t (Eq. 4); LMP_t + (k^b - 1)|LMP_t| if negative (:func:`wholesale_prices`)."""
        return wholesale_price(self.lmp, self.market.buy_ratio)

    @property
    def sell_price(self) -> np.ndarray:
        """lambda^s_t, $/kWh: k^s LMP_t (Eq. 4); LMP_t - (1 - k^s)|LMP_t| if negative (:func:`wholesale_prices`)."""
        return wholesale_price(self.lmp, self.market.sell_ratio)

    def column(self, name: str) -> np.ndarray:
        """One column of ``homes`` as a float array (N,)."""
        return self.homes[name].to_numpy(dtype=float)

    def __repr__(self) -> str:
        return (
            f"Case({count_of(self.n_homes, 'home')}, {count_of(self.n_scenarios, 'scenario')}, "
            f"{self.load.shape[-1]} hours, "
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
            "market": market_dict(self.market),
        }

    @classmethod
    def from_frames(cls, homes, profiles, scenarios, prices, market) -> Case:
        """Validate the five tables of the case format and build a :class:`Case`.

        ``market`` is a :class:`Market` or a mapping with the keys of ``market.json``.
        Raises :class:`CaseError` on the first problem found.
        """
        market = _validate_market(market_dict(market) if isinstance(market, Market) else market)
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
            if not isinstance(market, (Market, Mapping)):
                raise CaseError(
                    "market.json",
                    f"expected a Market or a mapping, got {type(market).__name__}",
                    f"pass a dict with some of the keys {MARKET_KEYS}",
                )
            new = market_dict(market) if isinstance(market, Market) else dict(market)
            unknown = set(new) - set(MARKET_KEYS) - set(OPTIONAL_MARKET_KEYS)
            if unknown:
                raise CaseError(
                    "market.json",
                    f"unknown keys {sorted(unknown)}",
                    f"use only {MARKET_KEYS} and the optional {tuple(OPTIONAL_MARKET_KEYS)}",
                )
            frames["market"] = {**frames["market"], **new}
        for name, value in home_columns.items():
            if name not in HOME_COLUMNS[1:]:
                raise CaseError("homes.csv", f"unknown column '{name}'", f"use one of {HOME_COLUMNS[1:]}")
            frames["homes"][name] = np.broadcast_to(np.asarray(value, dtype=float), (self.n_homes,))
        return Case.from_frames(**frames)

    def select(self, homes: Sequence[str] | None = None) -> Case:
        """The same case restricted to some homes (ids, in the order given; None keeps them all).

        Raises :class:`CaseError` (a ValueError) naming the argument for a bare string, an empty selection, an
        unknown id or an id given twice.
        """
        ids = list(self.home_ids if homes is None else _selection(homes))
        where = "Case.select(homes=...)"
        known = f"the case's {self.n_homes} homes are {', '.join(self.home_ids[:10])}{', ...' * (self.n_homes > 10)}"
        if not ids:
            raise CaseError(
                where, "the selection is empty (a case needs at least one home)", f"pass at least one home id; {known}"
            )
        unknown = [h for h in ids if h not in self.homes.index]
        if unknown:
            raise CaseError(
                where,
                f"unknown homes {unknown[:10]}",
                f"select ids of the 'home' column, as text (['1'], not [1]); {known}",
            )
        repeated = pd.Index(ids)[pd.Index(ids).duplicated()]
        if len(repeated):
            raise CaseError(where, f"home '{repeated[0]}' is selected twice", "name each home once")
        idx = self.homes.index.get_indexer(ids)
        return dataclasses.replace(self, homes=self.homes.iloc[idx], load=self.load[idx], pv=self.pv[idx])


def _selection(homes) -> list:
    """The ids of a :meth:`Case.select` argument as a list; a bare string or a non-iterable raises."""
    if isinstance(homes, (str, bytes)) or not isinstance(homes, Iterable):
        raise CaseError(
            "Case.select(homes=...)",
            f"expected a list of home ids, got {type(homes).__name__} {_shown(repr(homes))}",
            f"pass a list, e.g. select([{str(homes)[:20]!r}])",
        )
    return list(homes)


def wholesale_price(lmp: np.ndarray, ratio: float) -> np.ndarray:
    """One wholesale price of :func:`wholesale_prices`: ``ratio`` x LMP where LMP >= 0, (2 - ratio) x LMP below."""
    lmp = np.asarray(lmp, dtype=float)
    return np.where(lmp >= 0, ratio, 2.0 - ratio) * lmp


def wholesale_prices(lmp, buy_ratio: float, sell_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(lambda^b, lambda^s), the aggregator's buy and sell prices at the main grid, $/kWh (Eq. 4).

    lambda^b = LMP + (k^b - 1)|LMP|,  lambda^s = LMP - (1 - k^s)|LMP|  [choice]

    For LMP >= 0 this is exactly Eq. 4 (k^b LMP and k^s LMP, bit for bit). For a negative LMP, as real
    day-ahead markets publish, Eq. 4's ratios would make buying cheaper than selling (1.1 x -0.1 < 0.9 x -0.1);
    here the aggregator's margins stay proportional to the size of the LMP, so the buy price stays above the
    sell price: (2 - k^b) LMP and (2 - k^s) LMP, e.g. -0.09 and -0.11 $/kWh at LMP = -0.1 with 1.1 / 0.9.
    lambda^b >= lambda^s for every LMP if and only if k^b >= k^s, which ``market.json`` requires.
    """
    return wholesale_price(lmp, buy_ratio), wholesale_price(lmp, sell_ratio)


# ======================================================================================== I/O
def load_case(path) -> Case:
    """Read and validate a case directory (the format of the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        A directory holding ``homes.csv``, ``profiles.csv``, ``scenarios.csv``, ``prices.csv`` and ``market.json``.

    Returns
    -------
    Case
        The validated case.

    Raises
    ------
    CaseError
        Naming the file, the line or field, the problem and the fix, for the first invalid input.
    """
    path = _case_directory(path)
    frames = {
        name: _read_csv(path, name, ids)
        for name, ids in (
            ("homes", ["home"]),
            ("profiles", ["home", "scenario"]),
            ("scenarios", ["scenario"]),
            ("prices", []),
        )
    }
    frames["market"] = _read_market(path)
    return Case.from_frames(**frames)


def _case_directory(path) -> Path:
    """``path`` as an existing directory, or one :class:`CaseError` saying what is expected."""
    file = "<case directory>"
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise CaseError(file, f"expected a directory path, got {type(path).__name__} {path!r:.60}", _DIRECTORY_FIX)
    if os.fspath(path) == "":
        raise CaseError(file, "the path is empty, not a directory", _DIRECTORY_FIX)
    path = Path(path)
    if path.is_dir():
        return path
    problem = "is a file, not a directory" if path.exists() else "does not exist (no such directory)"
    raise CaseError(file, f"'{path}' {problem}", _DIRECTORY_FIX)


def _case_file(path: Path, name: str, fix: str) -> Path:
    file = path / name
    if not file.is_file():
        problem = "is not a file" if file.exists() else "missing"
        raise CaseError(name, f"{problem} in {path}", fix)
    return file


def _encoding_problem(head: bytes) -> str | None:
    """Why bytes that should be UTF-8 text are not, judged from the start of the file (None if they may be)."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if head.startswith(bom):
            return f"is {name} text, not UTF-8"
    if b"\0" in head:
        return "contains NUL bytes: it is binary, or UTF-16/UTF-32 text without a byte-order mark, not UTF-8"
    return None


def _not_utf8(name: str, problem: str) -> CaseError:
    return CaseError(
        name, problem, "save the file as UTF-8 text (in a spreadsheet: 'CSV UTF-8'; any editor: encoding UTF-8)"
    )


def _undecodable(exc: UnicodeDecodeError) -> str:
    return f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded)"


def _read_csv(path: Path, name: str, ids: Sequence[str]) -> pd.DataFrame:
    """One CSV file of the case; id columns are kept exactly as written (no NA parsing of 'NA', 'null', ...)."""
    name = f"{name}.csv"
    file = _case_file(path, name, f"add {name} (see docs/usage/case-format.md)")
    try:
        with open(file, "rb") as f:
            problem = _encoding_problem(f.read(1 << 16))
        if problem:
            raise _not_utf8(name, problem)
        options = dict(encoding="utf-8", keep_default_na=False, na_values=[""])
        header = pd.read_csv(file, header=None, nrows=1, dtype=str, **options)
        with warnings.catch_warnings():  # a row longer than the header: never shift it or cut it silently
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(file, dtype={c: str for c in ids}, index_col=False, **options)
    except pd.errors.ParserWarning:
        raise CaseError(
            name,
            "the first row has more fields than the header",
            "remove the extra fields or name them in the header",
            None,
            "line 2",
        ) from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(name, _undecodable(exc)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CaseError(
            name, f"cannot be parsed as CSV ({exc})", "write a comma-separated file with one header line"
        ) from None
    except OSError as exc:
        raise CaseError(name, f"cannot be read ({exc.strerror or exc})", "check the file and its permissions") from None
    names = header.iloc[0].dropna() if len(header) else pd.Series([], dtype=str)  # blank names become 'Unnamed'
    repeated = names[names.duplicated()]
    if len(repeated):
        raise CaseError(
            name, f"the header repeats the column '{repeated.iloc[0]}'", "name each column once", None, "line 1"
        )
    return frame


class _JsonLiteral(str):
    """A number of ``market.json`` that is not a finite float (1e400, a 400-digit integer, NaN, Infinity),
    kept as written so that the error can quote it."""


def _json_number(text: str) -> float | _JsonLiteral:
    value = float(text)
    return value if math.isfinite(value) else _JsonLiteral(text)


def _json_object(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = [k for i, k in enumerate(keys) if k in keys[:i]]
    if repeated:
        raise CaseError(
            "market.json", f"repeats the key '{repeated[0]}' (JSON keeps only the last one)", "write each key once"
        )
    return dict(pairs)


def _read_market(path: Path) -> dict:
    """``market.json`` as a dict: UTF-8, one JSON object, no repeated keys (values are checked later)."""
    name = "market.json"
    file = _case_file(path, name, f"add market.json with the keys {MARKET_KEYS}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CaseError(name, f"cannot be read ({exc.strerror or exc})", "check the file and its permissions") from None
    problem = _encoding_problem(data)
    if problem:
        raise _not_utf8(name, problem)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(name, _undecodable(exc)) from None
    try:
        market = json.loads(
            text,
            object_pairs_hook=_json_object,
            parse_float=_json_number,
            parse_int=_json_number,
            parse_constant=_JsonLiteral,
        )
    except json.JSONDecodeError as exc:
        raise CaseError(name, f"is not valid JSON ({exc})", "write one JSON object") from None
    except RecursionError:
        raise CaseError(name, "is not valid JSON (nested too deeply)", "write one flat JSON object") from None
    if not isinstance(market, dict):
        raise CaseError(
            name,
            f"is not a JSON object (it holds {_json_kind(market)})",
            f"write one object with the keys {MARKET_KEYS}",
        )
    return market


def _json_kind(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    kinds = ((_JsonLiteral, "a number"), (str, "a string"), ((int, float), "a number"), (list, "an array"))
    return next((kind for types, kind in kinds if isinstance(value, types)), type(value).__name__)


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

    Parameters
    ----------
    load, pv : array_like
        (N, S, T) load and PV output, kW (= kWh per hour); a 2-D (N, T) array means one scenario.
    utility_a, utility_b : float or array_like
        Scalar or (N,): the load utility U(d) = a d^2 + b d (Eq. 5), a in $/kW^2, b in $/kW.
    retail : array_like, optional
        (T,) retail time-of-use price p_t, $/kWh; default :func:`paper_retail_tariff`.
    lmp : array_like
        (T,) wholesale locational marginal price, $/kWh.
    probability : array_like, optional
        (S,) scenario probabilities pi_s summing to 1; default equiprobable.
    home_ids, scenario_ids : sequence of str, optional
        Names of the homes and scenarios; default "1", "2", ...
    market : Market or mapping, optional
        The ``market.json`` parameters (:class:`Market`); default ``Market()``.
    **home_params : float or array_like
        Any other column of ``homes.csv`` (scalar or (N,)), in its unit there; defaults in :data:`DEFAULT_HOME`.

    Returns
    -------
    Case
        The validated case, exactly as :func:`load_case` would read it back after :func:`save_case`.

    Raises
    ------
    CaseError
        Naming the file (``homes.csv``, ``profiles.csv``, ...) and the field of the first invalid input.
    """
    load, pv = np.asarray(load, dtype=float), np.asarray(pv, dtype=float)
    if load.ndim == 2:
        load = load[:, None, :]
    if pv.ndim == 2:
        pv = pv[:, None, :]
    if load.ndim != 3 or pv.shape != load.shape:
        raise CaseError(
            "profiles.csv",
            f"load {load.shape} and pv {pv.shape} are not both (homes, scenarios, hours)",
            "pass two arrays of the same (N, S, T) shape",
        )
    n, s, t = load.shape
    if n == 0:
        raise CaseError(
            "homes.csv",
            f"load and pv have no homes (shape {load.shape})",
            "pass arrays with at least one home: (N, S, T) or (N, T) with N >= 1",
        )
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
        "prices": pd.DataFrame(
            {"hour": np.arange(len(np.atleast_1d(lmp))), "retail_usd_per_kwh": retail, "lmp_usd_per_kwh": lmp}
        ),
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


def scenario_table(scenario_ids, **grids: np.ndarray) -> pd.DataFrame:
    """(S, T) arrays -> one long table with columns scenario, hour, then one column per array.

    Rows are scenario-major, then hour; the per-(scenario, hour) companion of :func:`long_table`.
    """
    s, t = np.shape(next(iter(grids.values())))
    return pd.DataFrame(
        {
            "scenario": np.repeat(np.asarray(scenario_ids, dtype=object), t),
            "hour": np.tile(np.arange(t), s),
            **{name: np.asarray(grid).reshape(-1) for name, grid in grids.items()},
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
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise CaseError(file, f"the column '{repeated[0]}' appears twice", "name each column once")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CaseError(file, f"missing columns {missing}", f"the header must be: {','.join(columns)}")
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        raise CaseError(file, f"unknown columns {extra}", f"remove them; the header must be: {','.join(columns)}")
    return frame


def _numeric(frame: pd.DataFrame, file: str, column: str) -> np.ndarray:
    """Column as finite floats; a blank, NaN, text, boolean or infinite cell raises naming its row."""
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):  # a column of True/False is not 1/0
        values = np.full(len(raw), np.nan)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i, value = bad[0], raw.iloc[bad[0]]
        value = value.item() if isinstance(value, np.generic) else value
        raise CaseError(
            file,
            f"value {_shown(repr(value))} is not a finite number ({bad.size} such rows)",
            "write a number in every cell",
            column,
            _row(frame, i),
        )
    return values


def _shown(text: str, limit: int = 40) -> str:
    """``text`` for a message, shortened if long (a 5000-digit number would drown the message)."""
    return text if len(text) <= limit else f"{text[: limit // 2]}... ({len(text)} characters)"


def _ids(frame: pd.DataFrame, file: str, column: str) -> np.ndarray:
    """Ids as written (text such as 'NA' or 'null' is an id); blank ids and surrounding whitespace raise."""
    codes, uniques = pd.factorize(frame[column])  # each distinct id is checked once; code -1 is a missing cell
    text = pd.Index(uniques, dtype=object).astype(str)
    stripped = text.str.strip()
    blank = np.flatnonzero(np.append(np.asarray(stripped == ""), True)[codes])
    if blank.size:
        raise CaseError(file, "empty id", "give every row an id", column, _row(frame, blank[0]))
    _check(
        np.append(np.asarray(stripped == text), True)[codes],
        frame,
        file,
        column,
        "id with leading or trailing whitespace",
        "remove the spaces: ids are kept exactly as written, so ' 1' and '1' would be different homes",
    )
    return text.to_numpy(dtype=object)[codes]


def _check_range(values: np.ndarray, frame, file: str, column: str) -> None:
    """Values within :data:`PLAUSIBLE_RANGES`; the first one outside raises naming its row, the range and why."""
    low, high, reason = PLAUSIBLE_RANGES[column]
    bad = np.flatnonzero((values < low) | (values > high))
    if bad.size:
        count = f"; {bad.size} such rows" if bad.size > 1 else ""
        raise CaseError(
            file,
            f"value {values[bad[0]]:g} is outside the accepted range [{low:g}, {high:g}] ({reason}{count})",
            _RANGE_FIX,
            column,
            _row(frame, bad[0]) if frame is not None else None,
        )


def _check(ok: np.ndarray, frame, file, column, problem, fix) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise CaseError(
            file, problem + (f" ({bad.size} rows)" if bad.size > 1 else ""), fix, column, _row(frame, bad[0])
        )


def _unique(ids: np.ndarray, frame, file, column) -> None:
    dup = pd.Series(ids).duplicated().to_numpy()
    _check(
        ~dup,
        frame,
        file,
        column,
        f"duplicate id '{ids[np.argmax(dup)]}'" if dup.any() else "",
        "give each row a unique id",
    )


def _keyed_table(frame, file: str, columns: Sequence[str], empty_fix: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A table keyed by its first column: required columns, at least one row, unique non-empty ids."""
    frame = _require_columns(frame, file, columns)
    if len(frame) == 0:
        raise CaseError(file, "has no rows", empty_fix)
    ids = _ids(frame, file, columns[0])
    _unique(ids, frame, file, columns[0])
    return frame, ids


def _check_reserved(ids: np.ndarray, frame, file: str) -> None:
    """No home id is one of :data:`RESERVED_HOME_IDS` (in any letter case): the report tables use them as rows."""
    folded = pd.Index(ids, dtype=object).astype(str).str.strip().str.lower()
    reserved = np.asarray(folded.isin(RESERVED_HOME_IDS))
    if reserved.any():
        i = int(np.argmax(reserved))
        _check(
            ~reserved,
            frame,
            file,
            "home",
            f"home id '{ids[i]}' is reserved: the report tables (table3_energy.csv, "
            f"table4_costs.csv, figure5_profit_rate.csv) add a row '{folded[i]}' beside the homes",
            f"rename the home (e.g. 'home_{ids[i]}'); ids {', '.join(RESERVED_HOME_IDS)} are reserved in any "
            "letter case",
        )


def _validate_homes(frame) -> pd.DataFrame:
    file = "homes.csv"
    frame, ids = _keyed_table(frame, file, HOME_COLUMNS, "add one row per home")
    _check_reserved(ids, frame, file)
    v = {c: _numeric(frame, file, c) for c in HOME_COLUMNS[1:]}
    rules = [
        ("utility_a", v["utility_a"] <= 0, "must be <= 0 (U(d) = a d^2 + b d is concave)", "use a <= 0 in $/kWh^2"),
        ("utility_b", v["utility_b"] >= 0, "must be >= 0", "use b >= 0 in $/kWh"),
        ("battery_kwh", v["battery_kwh"] >= 0, "must be >= 0", "use 0 for a home without a battery"),
        ("battery_kw", v["battery_kw"] >= 0, "must be >= 0", "use 0 for a home without a battery"),
        ("soc_min", (v["soc_min"] >= 0) & (v["soc_min"] <= 1), "must lie in [0, 1]", "give a fraction of capacity"),
        ("soc_max", (v["soc_max"] >= 0) & (v["soc_max"] <= 1), "must lie in [0, 1]", "give a fraction of capacity"),
        (
            "soc_initial",
            (v["soc_initial"] >= v["soc_min"]),
            "is below soc_min",
            "raise soc_initial or lower soc_min (the battery must start within its limits)",
        ),
        (
            "soc_initial",
            (v["soc_initial"] <= v["soc_max"]),
            "is above soc_max",
            "lower soc_initial or raise soc_max (the battery must start within its limits)",
        ),
        (
            "eta_charge",
            (v["eta_charge"] > 0) & (v["eta_charge"] <= 1),
            "must lie in (0, 1]",
            "give the efficiency as a fraction, e.g. 0.95",
        ),
        (
            "eta_discharge",
            (v["eta_discharge"] > 0) & (v["eta_discharge"] <= 1),
            "must lie in (0, 1]",
            "give the efficiency as a fraction, e.g. 0.95",
        ),
        (
            "load_min_factor",
            (v["load_min_factor"] >= 0) & (v["load_min_factor"] <= 1),
            "must lie in [0, 1]",
            "the lower load bound is a fraction of the baseline load, e.g. 0.8",
        ),
        (
            "load_max_factor",
            v["load_max_factor"] >= 1,
            "must be >= 1",
            "the upper load bound must allow the daily minimum (the baseline), e.g. 1.2",
        ),
        ("grid_limit_kw", v["grid_limit_kw"] > 0, "must be > 0", "give the connection limit in kW, e.g. 10"),
    ]
    for column, ok, problem, fix in rules:
        _check(ok, frame, file, column, f"value {problem}", fix)
    for column in PLAUSIBLE_RANGES.keys() & v.keys():
        _check_range(v[column], frame, file, column)
    return pd.DataFrame(v, index=pd.Index(ids, name="home"))


def _validate_scenarios(frame) -> tuple[tuple[str, ...], np.ndarray]:
    file = "scenarios.csv"
    frame, ids = _keyed_table(frame, file, SCENARIO_COLUMNS, "add at least one scenario with probability 1")
    p = _numeric(frame, file, "probability")
    _check(p > 0, frame, file, "probability", "probability must be > 0", "remove the scenario or give it weight")
    total = p.sum()
    if abs(total - 1) > PROBABILITY_TOLERANCE:
        raise CaseError(
            file, f"probabilities sum to {total:.9g}, not 1", "rescale them so that they sum to 1", "probability"
        )
    return tuple(ids), p


def _check_hours(hour: np.ndarray, frame, file: str) -> None:
    """Every value of the ``hour`` column is an hour-beginning 0..23 (prices.csv and profiles.csv)."""
    _check(
        np.isin(hour, np.arange(HOURS)),
        frame,
        file,
        "hour",
        f"hour must be an integer 0..{HOURS - 1}",
        "use hour-beginning 0..23",
    )


def _validate_prices(frame, market: Market) -> tuple[np.ndarray, np.ndarray]:
    file = "prices.csv"
    frame = _require_columns(frame, file, PRICE_COLUMNS)
    hour = _numeric(frame, file, "hour")
    _check_hours(hour, frame, file)
    _unique(hour.astype(int).astype(str), frame, file, "hour")
    if len(frame) != HOURS:
        missing = sorted(set(range(HOURS)) - set(hour.astype(int)))
        raise CaseError(
            file, f"has {len(frame)} rows; hours {missing} are missing", "give one row per hour 0..23", "hour"
        )
    retail = _numeric(frame, file, "retail_usd_per_kwh")
    lmp = _numeric(frame, file, "lmp_usd_per_kwh")
    _check_range(retail, frame, file, "retail_usd_per_kwh")
    _check_range(lmp, frame, file, "lmp_usd_per_kwh")
    _check(
        retail >= market.net_metering_usd_per_kwh,
        frame,
        file,
        "retail_usd_per_kwh",
        f"retail price is below the net-metering price {market.net_metering_usd_per_kwh}",
        "the model needs retail >= net metering (Eq. 6), or a home would buy and sell at once",
    )
    order = np.argsort(hour)  # rows may come in any order; errors above name the file's own lines
    return retail[order], lmp[order]


def _validate_market(market: Mapping) -> Market:
    file = "market.json"
    if not isinstance(market, Mapping):
        raise CaseError(
            file, f"is not a JSON object (got {type(market).__name__})", f"write an object with the keys {MARKET_KEYS}"
        )
    missing = [k for k in MARKET_KEYS if k not in market]
    extra = [k for k in market if k not in MARKET_KEYS and k not in OPTIONAL_MARKET_KEYS]
    if missing or extra:
        raise CaseError(
            file,
            f"missing keys {missing}, unknown keys {extra}",
            f"use exactly the keys {MARKET_KEYS}"
            + (f" (and optionally {tuple(OPTIONAL_MARKET_KEYS)})" if extra else ""),
        )
    given = [k for k in OPTIONAL_MARKET_KEYS if k in market]
    values = {key: _market_number(file, key, market[key]) for key in (*MARKET_KEYS, *given)}
    m = Market(**values)
    for key, ok, problem in (
        ("net_metering_usd_per_kwh", m.net_metering_usd_per_kwh >= 0, "must be >= 0"),
        ("buy_ratio", m.buy_ratio > 0, "must be > 0"),
        ("sell_ratio", m.sell_ratio >= 0, "must be >= 0"),
        ("regularization", m.regularization >= 0, "must be >= 0"),
    ):
        if not ok:
            raise CaseError(file, f"'{key}' = {values[key]} {problem}", "correct the value", key)
    for key in values:
        _check_range(np.array([values[key]]), None, file, key)
    if m.sell_ratio > m.buy_ratio:
        raise CaseError(
            file,
            f"'sell_ratio' = {m.sell_ratio} exceeds 'buy_ratio' = {m.buy_ratio} (Eq. 4: the "
            "aggregator would sell to the grid above its buy price, for positive and negative LMPs)",
            "give sell_ratio <= buy_ratio (the study uses 1.1 / 0.9)",
            "sell_ratio",
        )
    if given:  # the two-stage prices are checked when given, and before any two-stage solve (twostage.py)
        check_imbalance_ratios(m)
    return m


def _market_number(file: str, key: str, value) -> float:
    """One value of ``market.json`` as a finite float; text, null, booleans, NaN, infinities and overflow raise."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond 1.8e308 given from Python
            pass
    if number is None or not math.isfinite(number):
        shown = _shown(str(value) if isinstance(value, (_JsonLiteral, int)) else repr(value))
        raise CaseError(
            file,
            f"'{key}' = {shown} is not a finite number",
            "write a number (NaN, Infinity and numbers beyond 1.8e308 are not accepted)",
            key,
        )
    return number


def _validate_profiles(frame, home_ids: tuple[str, ...], scen_ids: tuple[str, ...]):
    file = "profiles.csv"
    frame = _require_columns(frame, file, PROFILE_COLUMNS)
    homes = _ids(frame, file, "home")
    scens = _ids(frame, file, "scenario")
    hour = _numeric(frame, file, "hour")
    load = _numeric(frame, file, "load_kw")
    pv = _numeric(frame, file, "pv_kw")
    h_idx = pd.Index(home_ids).get_indexer(homes)
    _check(
        h_idx >= 0,
        frame,
        file,
        "home",
        f"unknown home '{homes[np.argmin(h_idx)]}'" if (h_idx < 0).any() else "",
        "every home must have a row in homes.csv",
    )
    s_idx = pd.Index(scen_ids).get_indexer(scens)
    _check(
        s_idx >= 0,
        frame,
        file,
        "scenario",
        f"unknown scenario '{scens[np.argmin(s_idx)]}'" if (s_idx < 0).any() else "",
        "every scenario must have a row in scenarios.csv",
    )
    _check_hours(hour, frame, file)
    _check(load >= 0, frame, file, "load_kw", "negative load", "loads are consumption in kW, >= 0")
    _check(pv >= 0, frame, file, "pv_kw", "negative PV output", "PV output is generation in kW, >= 0")
    _check_range(load, frame, file, "load_kw")
    _check_range(pv, frame, file, "pv_kw")
    n, s = len(home_ids), len(scen_ids)
    flat = (h_idx * s + s_idx) * HOURS + hour.astype(int)
    dup = pd.Series(flat).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise CaseError(
            file,
            f"duplicate row for home '{homes[i]}', scenario '{scens[i]}', hour {int(hour[i])}",
            "give each (home, scenario, hour) exactly once",
            None,
            _row(frame, i),
        )
    if len(flat) != n * s * HOURS:
        present = np.zeros(n * s * HOURS, dtype=bool)
        present[flat] = True
        k = int(np.argmin(present))
        i, rest = divmod(k, s * HOURS)
        j, t = divmod(rest, HOURS)
        raise CaseError(
            file,
            f"{n * s * HOURS - len(flat)} rows missing, e.g. home '{home_ids[i]}', scenario '{scen_ids[j]}', hour {t}",
            "give every (home, scenario, hour 0-23) exactly once",
        )
    out_load, out_pv = np.empty(n * s * HOURS), np.empty(n * s * HOURS)
    out_load[flat], out_pv[flat] = load, pv
    return out_load.reshape(n, s, HOURS), out_pv.reshape(n, s, HOURS)
