"""Case format: round trip, and one clear CaseError for every class of bad input."""

import json

import numpy as np
import pandas as pd
import pytest

import desmarket as dm
from desmarket.synthetic import random_case


@pytest.fixture
def case_dir(tmp_path):
    return random_case(3, n_homes=3, n_scenarios=2).save(tmp_path / "case")


def edit_csv(path, name, fn):
    frame = pd.read_csv(path / name, dtype={"home": str, "scenario": str})
    frame = fn(frame)
    frame.to_csv(path / name, index=False)


def edit_json(path, **changes):
    data = json.loads((path / "market.json").read_text())
    data.update(changes)
    (path / "market.json").write_text(json.dumps(data))


def test_round_trip(case_dir, tmp_path):
    case = dm.load_case(case_dir)
    again = dm.load_case(case.save(tmp_path / "copy"))
    for name in ("load", "pv", "retail", "lmp", "probability"):
        assert np.array_equal(getattr(case, name), getattr(again, name))
    pd.testing.assert_frame_equal(case.homes, again.homes)
    assert case.market == again.market and case.scenarios == again.scenarios


def test_rows_in_any_order_are_accepted(case_dir):
    ref = dm.load_case(case_dir)
    edit_csv(case_dir, "profiles.csv", lambda f: f.sample(frac=1.0, random_state=1))
    edit_csv(case_dir, "prices.csv", lambda f: f.iloc[::-1])
    case = dm.load_case(case_dir)
    assert np.array_equal(case.load, ref.load) and np.array_equal(case.lmp, ref.lmp)


def test_select_and_replace(case_dir):
    case = dm.load_case(case_dir)
    sub = case.select(["3", "1"])
    assert sub.home_ids == ("3", "1") and np.array_equal(sub.load[1], case.load[0])
    assert np.all(case.replace(battery_kwh=0.0).column("battery_kwh") == 0)
    assert case.replace(market={"buy_ratio": 1.3}).market.buy_ratio == 1.3
    with pytest.raises(dm.CaseError, match="unknown homes"):
        case.select(["nope"])
    assert case.select().home_ids == case.home_ids and case.select(iter(["2"])).home_ids == ("2",)


@pytest.mark.parametrize(
    "homes, words",
    [
        ([], ["the selection is empty", "at least one home"]),
        (["1", "3", "1"], ["home '1' is selected twice"]),
        (["1", "ghost"], ["unknown homes ['ghost']", "homes are 1, 2, 3"]),
        ([1], ["unknown homes [1]", "as text"]),
        ("1", ["expected a list of home ids, got str", "select(['1'])"]),
        (3, ["expected a list of home ids, got int"]),
    ],
    ids=["empty", "duplicate", "unknown", "not text", "bare string", "number"],
)
def test_select_refuses_an_empty_unknown_or_repeated_selection(case_dir, homes, words):
    case = dm.load_case(case_dir)
    with pytest.raises(dm.CaseError) as info:
        case.select(homes)
    assert isinstance(info.value, ValueError) and info.value.file == "Case.select(homes=...)"
    for word in words:
        assert word in str(info.value), f"'{word}' not in {str(info.value)!r}"


def test_a_case_needs_at_least_one_home(case_dir):
    case = dm.load_case(case_dir)
    with pytest.raises(dm.CaseError, match="no homes") as info:
        dm.create_case(case.load[:0], case.pv[:0], utility_a=-0.002, utility_b=0.3, lmp=case.lmp)
    assert info.value.file == "homes.csv"
    frames = case.to_frames()
    frames["homes"] = frames["homes"].iloc[:0]
    frames["profiles"] = frames["profiles"].iloc[:0]
    with pytest.raises(dm.CaseError, match="has no rows") as info:
        dm.Case.from_frames(**frames)
    assert info.value.file == "homes.csv"
    with pytest.raises(dm.CaseError, match="soc_min"):
        case.replace(soc_min=0.7)  # above soc_initial 0.5


BAD_INPUTS = [
    # (description, file, mutation, expected words in the message)
    ("missing file", "homes.csv", lambda p: (p / "homes.csv").unlink(), ["homes.csv", "missing"]),
    (
        "missing column",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.drop(columns="battery_kw")),
        ["homes.csv", "battery_kw"],
    ),
    (
        "unknown column",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(colour="red")),
        ["homes.csv", "colour"],
    ),
    (
        "NaN",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(utility_b=[0.3, np.nan, 0.3])),
        ["homes.csv", "utility_b", "line 3"],
    ),
    (
        "text in a number",
        "profiles.csv",
        lambda p: edit_csv(
            p,
            "profiles.csv",
            lambda f: f.astype({"load_kw": object}).assign(load_kw=lambda g: g.load_kw.where(g.index != 5, "lots")),
        ),
        ["profiles.csv", "load_kw", "line 7"],
    ),
    (
        "positive utility_a",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(utility_a=0.01)),
        ["utility_a", "<= 0"],
    ),
    (
        "soc_min above soc_initial",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(soc_min=[0.1, 0.6, 0.1])),
        ["soc_initial", "below soc_min", "line 3"],
    ),
    (
        "efficiency above 1",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(eta_charge=1.05)),
        ["eta_charge", "(0, 1]"],
    ),
    (
        "efficiency zero",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(eta_discharge=0.0)),
        ["eta_discharge", "(0, 1]"],
    ),
    (
        "duplicate home",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(home=["1", "1", "3"])),
        ["homes.csv", "duplicate", "'1'"],
    ),
    (
        "negative load",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(load_kw=f.load_kw.where(f.index != 9, -1.0))),
        ["profiles.csv", "load_kw", "negative", "line 11"],
    ),
    (
        "negative PV",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(pv_kw=f.pv_kw.where(f.index != 12, -0.5))),
        ["pv_kw", "negative", "line 14"],
    ),
    (
        "duplicate profile row",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: pd.concat([f, f.iloc[[4]]])),
        ["profiles.csv", "duplicate row", "hour 4"],
    ),
    (
        "missing profile row",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: f.drop(index=30)),
        ["profiles.csv", "missing", "hour 6"],
    ),
    (
        "unknown home in profiles",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(home=f.home.where(f.index != 0, "ghost"))),
        ["profiles.csv", "unknown home 'ghost'"],
    ),
    (
        "unknown scenario",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(scenario=f.scenario.where(f.index != 0, "99"))),
        ["profiles.csv", "unknown scenario '99'"],
    ),
    (
        "hour out of range",
        "profiles.csv",
        lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(hour=f.hour.where(f.index != 0, 24))),
        ["profiles.csv", "hour"],
    ),
    (
        "probabilities not summing to 1",
        "scenarios.csv",
        lambda p: edit_csv(p, "scenarios.csv", lambda f: f.assign(probability=[0.5, 0.6])),
        ["scenarios.csv", "sum to 1.1"],
    ),
    (
        "zero probability",
        "scenarios.csv",
        lambda p: edit_csv(p, "scenarios.csv", lambda f: f.assign(probability=[1.0, 0.0])),
        ["scenarios.csv", "probability", "> 0"],
    ),
    (
        "duplicate scenario",
        "scenarios.csv",
        lambda p: edit_csv(p, "scenarios.csv", lambda f: f.assign(scenario=["1", "1"])),
        ["scenarios.csv", "duplicate"],
    ),
    (
        "missing price hour",
        "prices.csv",
        lambda p: edit_csv(p, "prices.csv", lambda f: f.drop(index=5)),
        ["prices.csv", "[5]"],
    ),
    (
        "retail below net metering",
        "prices.csv",
        lambda p: edit_csv(p, "prices.csv", lambda f: f.assign(retail_usd_per_kwh=0.01)),
        ["retail_usd_per_kwh", "net-metering"],
    ),
    (
        "LMP below the floor",
        "prices.csv",  # negative LMPs are accepted (tests/test_negative_prices.py), to -100
        lambda p: edit_csv(
            p, "prices.csv", lambda f: f.assign(lmp_usd_per_kwh=f.lmp_usd_per_kwh.where(f.hour != 3, -250.0))
        ),
        ["lmp_usd_per_kwh", "line 5", "outside the accepted range [-100, 100]", "floor"],
    ),
    (
        "reserved home id",
        "homes.csv",
        lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(home=["1", "total", "3"])),
        ["homes.csv", "home", "line 3", "'total' is reserved", "table4_costs.csv", "rename"],
    ),
    (
        "market key missing",
        "market.json",
        lambda p: (p / "market.json").write_text('{"buy_ratio": 1.1, "sell_ratio": 0.9, "regularization": 1e-5}'),
        ["market.json", "net_metering_usd_per_kwh"],
    ),
    (
        "market value not a number",
        "market.json",
        lambda p: edit_json(p, buy_ratio="high"),
        ["market.json", "buy_ratio", "not a finite number"],
    ),
    (
        "sell above buy",
        "market.json",
        lambda p: edit_json(p, sell_ratio=1.2),
        ["sell_ratio", "buy_ratio", "sell_ratio <= buy_ratio"],
    ),
    ("negative regularization", "market.json", lambda p: edit_json(p, regularization=-1.0), ["regularization", ">= 0"]),
    ("invalid json", "market.json", lambda p: (p / "market.json").write_text("{oops"), ["market.json", "JSON"]),
]


@pytest.mark.parametrize("description,file,mutate,words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_one_clear_error(case_dir, description, file, mutate, words):
    mutate(case_dir)
    with pytest.raises(dm.CaseError) as info:
        dm.load_case(case_dir)
    message = str(info.value)
    assert info.value.file == file
    assert "Fix:" in message
    for word in words:
        assert word in message, f"{description}: '{word}' not in {message!r}"


def test_create_case_shape_mismatch():
    with pytest.raises(dm.CaseError, match="same"):
        dm.create_case(np.ones((2, 1, 24)), np.ones((3, 1, 24)), utility_a=0, utility_b=0.3, lmp=np.ones(24) * 0.04)


# ================================================================== issue 9, "Reliability"
MARKET_OK = '{"net_metering_usd_per_kwh": 0.03, "buy_ratio": %s, "sell_ratio": 0.9, "regularization": 1e-5}'


def write_bytes(name, data: bytes):
    return lambda p: (p / name).write_bytes(data)


def recode(name, encoding, replace=("", "")):
    """Rewrite a file in another encoding (optionally with a non-ASCII character put in)."""
    return lambda p: (p / name).write_bytes((p / name).read_text().replace(*replace, 1).encode(encoding))


MARKET_INPUTS = [
    ("json array", write_bytes("market.json", b"[1, 2]"), ["JSON object", "an array"]),
    ("json number", write_bytes("market.json", b"3"), ["JSON object", "a number"]),
    ("json string", write_bytes("market.json", b'"x"'), ["JSON object", "a string"]),
    ("json null", write_bytes("market.json", b"null"), ["JSON object", "null"]),
    ("json empty file", write_bytes("market.json", b""), ["JSON"]),
    (
        "json utf-16 with BOM",
        lambda p: (p / "market.json").write_text((MARKET_OK % "1.1"), encoding="utf-16"),
        ["UTF-16", "UTF-8"],
    ),
    ("json random bytes", write_bytes("market.json", bytes(range(255, -1, -1))), ["UTF-8"]),
    ("json latin-1", write_bytes("market.json", (MARKET_OK % '"\u00e9"').encode("latin-1")), ["UTF-8", "0xe9"]),
    ("json NUL bytes", write_bytes("market.json", b"{\x00}"), ["NUL"]),
    (
        "json integer overflowing a float",
        write_bytes("market.json", (MARKET_OK % ("1" + "0" * 400)).encode()),
        ["buy_ratio", "finite", "1000000"],
    ),
    (
        "json integer beyond Python's digit limit",
        write_bytes("market.json", (MARKET_OK % ("9" * 5000)).encode()),
        ["buy_ratio", "finite"],
    ),
    ("json 1e400", write_bytes("market.json", (MARKET_OK % "1e400").encode()), ["buy_ratio", "1e400", "finite"]),
    ("json -1e400", write_bytes("market.json", (MARKET_OK % "-1e400").encode()), ["buy_ratio", "-1e400"]),
    ("json Infinity", write_bytes("market.json", (MARKET_OK % "Infinity").encode()), ["buy_ratio", "Infinity"]),
    ("json NaN", write_bytes("market.json", (MARKET_OK % "NaN").encode()), ["buy_ratio", "NaN", "finite"]),
    (
        "json duplicate key",
        write_bytes("market.json", (MARKET_OK % "1.1")[:-1].encode() + b', "buy_ratio": 1.2}'),
        ["repeats the key 'buy_ratio'"],
    ),
    (
        "json nested duplicate key",
        write_bytes("market.json", (MARKET_OK % '{"a": 1, "a": 2}').encode()),
        ["repeats the key 'a'"],
    ),
    (
        "json nested object",
        write_bytes("market.json", (MARKET_OK % '{"a": 1}').encode()),
        ["buy_ratio", "not a finite number"],
    ),
]


@pytest.mark.parametrize("description,mutate,words", MARKET_INPUTS, ids=[b[0] for b in MARKET_INPUTS])
def test_bad_market_json_raises_one_clear_error(case_dir, description, mutate, words):
    mutate(case_dir)
    with pytest.raises(dm.CaseError) as info:
        dm.load_case(case_dir)
    assert info.value.file == "market.json" and "Fix:" in str(info.value)
    for word in words:
        assert word in str(info.value), f"{description}: '{word}' not in {str(info.value)!r}"


def test_market_json_with_utf8_bom_loads(case_dir):
    ref = dm.load_case(case_dir)
    (case_dir / "market.json").write_bytes(b"\xef\xbb\xbf" + (case_dir / "market.json").read_bytes())
    assert dm.load_case(case_dir).market == ref.market


def test_market_values_too_large_for_a_float_raise_case_error(case_dir):
    case = dm.load_case(case_dir)
    with pytest.raises(dm.CaseError, match="buy_ratio.*finite"):
        case.replace(market={"buy_ratio": 10**400})


CSV_FILES = ("homes.csv", "profiles.csv", "scenarios.csv", "prices.csv")


@pytest.mark.parametrize("name", CSV_FILES)
@pytest.mark.parametrize(
    "encoding,words", [("utf-16", ["UTF-16"]), ("utf-32", ["UTF-32"]), ("latin-1", ["not UTF-8", "0xe9"])]
)
def test_csv_not_utf8_raises_one_clear_error(case_dir, name, encoding, words):
    recode(name, encoding, (",", ",\u00e9"))(case_dir)
    with pytest.raises(dm.CaseError) as info:
        dm.load_case(case_dir)
    assert info.value.file == name and "Fix:" in str(info.value) and "UTF-8" in str(info.value)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("name", CSV_FILES)
def test_csv_with_nul_bytes_raises_one_clear_error(case_dir, name):
    (case_dir / name).write_bytes((case_dir / name).read_text().encode("utf-16-le"))  # UTF-16 without a BOM
    with pytest.raises(dm.CaseError, match="NUL") as info:
        dm.load_case(case_dir)
    assert info.value.file == name


def test_csv_with_utf8_bom_loads(case_dir):
    ref = dm.load_case(case_dir)
    for name in CSV_FILES:
        (case_dir / name).write_bytes(b"\xef\xbb\xbf" + (case_dir / name).read_bytes())
    assert dm.load_case(case_dir).home_ids == ref.home_ids


# ------------------------------------------------------------------------------ the path
@pytest.mark.parametrize(
    "path,words", [(None, ["NoneType"]), (3, ["int"]), (b"case", ["bytes"]), ("", ["empty"]), (["case"], ["list"])]
)
def test_load_case_needs_a_directory_path(path, words):
    with pytest.raises(dm.CaseError) as info:
        dm.load_case(path)
    assert info.value.file == "<case directory>"
    for word in [*words, "directory", "homes.csv", "market.json", "Fix:"]:
        assert word in str(info.value)


def test_load_case_of_a_file(case_dir):
    with pytest.raises(dm.CaseError, match="is a file, not a directory.*homes.csv.*market.json") as info:
        dm.load_case(case_dir / "homes.csv")
    assert info.value.file == "<case directory>"


def test_load_case_of_a_missing_directory(tmp_path):
    with pytest.raises(dm.CaseError, match="does not exist.*homes.csv.*market.json") as info:
        dm.load_case(tmp_path / "nowhere")
    assert info.value.file == "<case directory>" and "nowhere" in str(info.value)


def test_a_csv_file_that_is_a_directory(case_dir):
    (case_dir / "prices.csv").unlink()
    (case_dir / "prices.csv").mkdir()
    with pytest.raises(dm.CaseError, match="not a file") as info:
        dm.load_case(case_dir)
    assert info.value.file == "prices.csv"


# ------------------------------------------------------------------------- magnitudes
def set_cell(name, column, row, value):
    """Put ``value`` in one cell (row = 0-based data row, so CSV line row + 2)."""

    def mutate(p):
        frame = pd.read_csv(p / name, dtype=str, keep_default_na=False)
        frame.loc[row, column] = value
        frame.to_csv(p / name, index=False)

    return mutate


EXTREMES = [
    # (file, column, row, value, range shown in the message)
    ("profiles.csv", "load_kw", 7, "1e9", "[0, 10000]"),
    ("profiles.csv", "pv_kw", 12, "2e5", "[0, 10000]"),
    ("homes.csv", "load_max_factor", 1, "1e12", "[1, 1000]"),
    ("homes.csv", "battery_kwh", 2, "1e12", "[0, 10000]"),
    ("homes.csv", "battery_kw", 0, "1e6", "[0, 10000]"),
    ("homes.csv", "grid_limit_kw", 1, "1e7", "[0, 10000]"),
    ("homes.csv", "utility_a", 0, "-1e6", "[-100, 0]"),
    ("homes.csv", "utility_b", 2, "1e9", "[0, 100]"),
    ("prices.csv", "retail_usd_per_kwh", 3, "1e9", "[0, 100]"),
    ("prices.csv", "lmp_usd_per_kwh", 4, "1e9", "[-100, 100]"),
    ("prices.csv", "lmp_usd_per_kwh", 4, "-1e9", "[-100, 100]"),
]


@pytest.mark.parametrize("name,column,row,value,bounds", EXTREMES, ids=[f"{e[1]}={e[3]}" for e in EXTREMES])
def test_extreme_magnitudes_raise_one_clear_error(case_dir, name, column, row, value, bounds):
    set_cell(name, column, row, value)(case_dir)
    with pytest.raises(dm.CaseError) as info:
        dm.load_case(case_dir)
    e = info.value
    assert (e.file, e.column, e.row) == (name, column, f"line {row + 2}"), str(e)
    for word in ("outside the accepted range", bounds, "conditioning", "Fix:"):
        assert word in str(e), f"'{word}' not in {str(e)!r}"


@pytest.mark.parametrize(
    "key,value,bounds",
    [
        ("net_metering_usd_per_kwh", 1e9, "[0, 100]"),
        ("buy_ratio", 1e12, "[0, 1000]"),
        ("sell_ratio", 1e12, "[0, 1000]"),
        ("regularization", 1e9, "[0, 100]"),
    ],
)
def test_extreme_market_values_raise_one_clear_error(case_dir, key, value, bounds):
    edit_json(case_dir, **{key: value})
    with pytest.raises(dm.CaseError) as info:
        dm.load_case(case_dir)
    assert (info.value.file, info.value.column) == ("market.json", key)
    assert bounds in str(info.value)


def test_extreme_magnitudes_rejected_when_built_from_arrays(case_dir):
    case = dm.load_case(case_dir)
    with pytest.raises(dm.CaseError, match="battery_kwh.*outside the accepted range"):
        case.replace(battery_kwh=1e12)
    load = case.load.copy()
    load[1, 0, 3] = 1e9
    with pytest.raises(dm.CaseError, match="load_kw.*outside the accepted range"):
        dm.create_case(load, case.pv, utility_a=-0.002, utility_b=0.3, lmp=case.lmp)


AT_THE_BOUNDS = {
    "battery": {"battery_kwh": "high", "battery_kw": "high"},
    "grid_limit_kw": {"grid_limit_kw": "high"},
    "load_max_factor": {"load_max_factor": "high"},
    "utility_a": {"utility_a": "low"},
    "utility_b": {"utility_b": "high"},
}


@pytest.mark.filterwarnings("ignore::desmarket.RoutingWarning")
@pytest.mark.parametrize("columns", AT_THE_BOUNDS.values(), ids=AT_THE_BOUNDS.keys())
def test_values_at_the_bounds_load_and_solve(case_dir, columns):
    ranges = dm.case.PLAUSIBLE_RANGES
    case = dm.load_case(case_dir)
    values = {c: ranges[c][0 if end == "low" else 1] for c, end in columns.items()}
    case = dm.load_case(case.replace(**values).save(case_dir.parent / "at_bounds"))
    assert all(np.all(case.column(c) == v) for c, v in values.items())
    assert np.isfinite(dm.solve_independent(case, method="central").objective)
    assert np.isfinite(dm.clear_market(case, method="central").objective)


@pytest.mark.parametrize("key", dm.case.MARKET_KEYS)
def test_market_values_at_the_bounds_load(case_dir, key):
    top = dm.case.PLAUSIBLE_RANGES[key][1]
    edit_json(case_dir, **{key: top}, **({"buy_ratio": top} if key == "sell_ratio" else {}))
    if key == "net_metering_usd_per_kwh":  # retail >= net metering (Eq. 6)
        edit_csv(case_dir, "prices.csv", lambda f: f.assign(retail_usd_per_kwh=top))
    assert getattr(dm.load_case(case_dir).market, key) == top


# -------------------------------------------------------------------------------- ids
@pytest.mark.parametrize(
    "name,column",
    [("homes.csv", "home"), ("profiles.csv", "home"), ("scenarios.csv", "scenario"), ("profiles.csv", "scenario")],
)
def test_ids_with_surrounding_whitespace_are_rejected(case_dir, name, column):
    set_cell(name, column, 1, " " + pd.read_csv(case_dir / name, dtype=str)[column][1])(case_dir)
    with pytest.raises(dm.CaseError, match="whitespace") as info:
        dm.load_case(case_dir)
    assert (info.value.file, info.value.column, info.value.row) == (name, column, "line 3")


@pytest.mark.parametrize("home", ["aggregator", "total", "Total", "AGGREGATOR", "toTal"])
def test_reserved_home_ids_are_refused(case_dir, home):
    """Ids that would collide with the report tables' rows (table4_costs.csv loses a home 'total')."""
    set_cell("homes.csv", "home", 1, home)(case_dir)
    with pytest.raises(dm.CaseError, match="is reserved") as info:
        dm.load_case(case_dir)
    assert (info.value.file, info.value.column, info.value.row) == ("homes.csv", "home", "line 3")
    assert f"'{home}'" in str(info.value) and "aggregator, total" in str(info.value)
    ref = random_case(1, n_homes=2, n_scenarios=1)
    with pytest.raises(dm.CaseError, match="is reserved") as info:
        dm.create_case(ref.load, ref.pv, utility_a=-0.002, utility_b=0.3, lmp=ref.lmp, home_ids=["a", home])
    assert info.value.file == "homes.csv"


def test_ids_that_only_contain_a_reserved_word_are_fine():
    ref = random_case(1, n_homes=3, n_scenarios=1)
    case = dm.create_case(
        ref.load, ref.pv, utility_a=-0.002, utility_b=0.3, lmp=ref.lmp, home_ids=["total_1", "aggregator2", "subtotal"]
    )
    assert case.home_ids == ("total_1", "aggregator2", "subtotal")


def test_the_reserved_ids_are_the_report_tables_row_labels():
    """Every row label the tables add beside the homes is reserved (report.py, settlement.py, fairness.py)."""
    import inspect
    import re

    from desmarket import fairness, report, settlement

    source = "".join(inspect.getsource(m) for m in (report, settlement, fairness))
    labels = set(re.findall(r'loc\["(\w+)"\] =', source)) | set(re.findall(r'index=\["(\w+)"\]', source))
    labels |= {fairness.AGGREGATOR} | set(re.findall(r'"party": \["(\w+)"', source))
    assert labels == set(dm.case.RESERVED_HOME_IDS)


NA_LIKE = [
    "NA",
    "None",
    "null",
    "N/A",
    "n/a",
    "#N/A",
    "NULL",
    "NaN",
    "-nan",
    "<NA>",
    "1.0",
    "01",
    "Zoë",
    "a,b",
    'say "hi"',
    "two words",
]


def test_na_like_ids_are_kept_exactly_as_written(tmp_path):
    ref = random_case(1, n_homes=len(NA_LIKE), n_scenarios=2)
    case = dm.create_case(
        ref.load,
        ref.pv,
        utility_a=ref.column("utility_a"),
        utility_b=ref.column("utility_b"),
        lmp=ref.lmp,
        home_ids=NA_LIKE,
        scenario_ids=["nan", "NA"],
    )
    again = dm.load_case(case.save(tmp_path / "case"))
    assert again.home_ids == tuple(NA_LIKE) and again.scenarios == ("nan", "NA")
    assert np.array_equal(again.load, case.load)


def test_operation_round_trip_keeps_na_like_ids(tmp_path):
    from desmarket import io

    ref = random_case(2, n_homes=3, n_scenarios=1)
    case = dm.create_case(
        ref.load,
        ref.pv,
        utility_a=ref.column("utility_a"),
        utility_b=ref.column("utility_b"),
        lmp=ref.lmp,
        home_ids=["NA", "None", "null"],
        scenario_ids=["nan"],
    )
    case = dm.load_case(case.save(tmp_path / "case"))
    assert case.home_ids == ("NA", "None", "null") and case.scenarios == ("nan",)
    for name, op in (
        ("m1", dm.solve_independent(case, method="central")),
        ("market", dm.clear_market(case, method="central")),
    ):
        io.save_operation(op, case, tmp_path / "op", name)
        back = io.load_operation(case, tmp_path / "op", name)
        assert back.home_ids == ("NA", "None", "null")
        assert np.allclose(back.home_cost, op.home_cost) and np.allclose(back.trade, op.trade)
        if op.price is not None:
            assert np.allclose(back.price, op.price) and np.array_equal(back.balanced, op.balanced)
        homes = pd.read_csv(tmp_path / "op" / f"{name}_homes.csv", dtype=str, keep_default_na=False)
        dispatch = pd.read_csv(tmp_path / "op" / f"{name}_dispatch.csv", dtype=str, keep_default_na=False)
        assert list(homes["home"]) == ["NA", "None", "null"] and set(dispatch["scenario"]) == {"nan"}


def test_errors_in_unsorted_prices_name_the_files_own_line(case_dir):
    edit_csv(case_dir, "prices.csv", lambda f: f.iloc[::-1])  # hour 23 on line 2, hour 3 on line 22
    edit_csv(case_dir, "prices.csv", lambda f: f.assign(lmp_usd_per_kwh=f.lmp_usd_per_kwh.where(f.hour != 3, -250.0)))
    with pytest.raises(dm.CaseError, match="outside the accepted range") as info:
        dm.load_case(case_dir)
    assert info.value.row == "line 22"


def test_negative_lmps_load_in_any_row_order(case_dir):
    """Negative LMPs are real prices (issue 17): they load, and the buy price stays above the sell price."""
    edit_csv(case_dir, "prices.csv", lambda f: f.iloc[::-1])
    edit_csv(case_dir, "prices.csv", lambda f: f.assign(lmp_usd_per_kwh=f.lmp_usd_per_kwh.where(f.hour != 3, -0.01)))
    case = dm.load_case(case_dir)
    assert case.lmp[3] == -0.01 and case.buy_price[3] == pytest.approx(-0.009)
    assert case.sell_price[3] == pytest.approx(-0.011) and np.all(case.buy_price >= case.sell_price)


def test_a_column_of_booleans_is_not_read_as_numbers(case_dir):
    edit_csv(case_dir, "homes.csv", lambda f: f.assign(battery_kwh=[True, False, True]))
    with pytest.raises(dm.CaseError, match="True is not a finite number") as info:
        dm.load_case(case_dir)
    assert (info.value.column, info.value.row) == ("battery_kwh", "line 2")


def test_a_huge_cell_is_shortened_in_the_message(case_dir):
    set_cell("profiles.csv", "pv_kw", 3, "9" * 5000 + "x")(case_dir)
    with pytest.raises(dm.CaseError, match="not a finite number") as info:
        dm.load_case(case_dir)
    assert "(5003 characters)" in str(info.value) and len(str(info.value)) < 300


def test_a_repeated_header_is_named(case_dir):
    text = (case_dir / "scenarios.csv").read_text().splitlines()
    (case_dir / "scenarios.csv").write_text("\n".join([text[0] + ",scenario"] + [t + ",x" for t in text[1:]]) + "\n")
    with pytest.raises(dm.CaseError, match="repeats the column 'scenario'") as info:
        dm.load_case(case_dir)
    assert info.value.file == "scenarios.csv"


@pytest.mark.parametrize("name", CSV_FILES)
def test_a_first_row_longer_than_the_header_is_not_shifted(case_dir, name):
    lines = (case_dir / name).read_text().splitlines()
    (case_dir / name).write_text("\n".join([lines[0], lines[1] + ",1", *lines[2:]]) + "\n")
    with pytest.raises(dm.CaseError, match="more fields than the header") as info:
        dm.load_case(case_dir)
    assert (info.value.file, info.value.row) == (name, "line 2")


@pytest.mark.parametrize("name", CSV_FILES)
def test_a_later_row_longer_than_the_header_is_an_error(case_dir, name):
    lines = (case_dir / name).read_text().splitlines()
    (case_dir / name).write_text("\n".join([*lines[:2], lines[2] + ",1", *lines[3:]]) + "\n")
    with pytest.raises(dm.CaseError, match="Expected .* fields in line 3") as info:
        dm.load_case(case_dir)
    assert info.value.file == name


def test_an_empty_trailing_field_on_every_row_is_harmless(case_dir):
    ref = dm.load_case(case_dir)
    for name in CSV_FILES:
        lines = (case_dir / name).read_text().splitlines()
        (case_dir / name).write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    case = dm.load_case(case_dir)
    assert np.array_equal(case.load, ref.load) and case.home_ids == ref.home_ids
    pd.testing.assert_frame_equal(case.homes, ref.homes)
