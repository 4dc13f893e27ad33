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
    with pytest.raises(dm.CaseError, match="soc_min"):
        case.replace(soc_min=0.7)  # above soc_initial 0.5


BAD_INPUTS = [
    # (description, file, mutation, expected words in the message)
    ("missing file", "homes.csv", lambda p: (p / "homes.csv").unlink(), ["homes.csv", "missing"]),
    ("missing column", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.drop(columns="battery_kw")),
     ["homes.csv", "battery_kw"]),
    ("unknown column", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(colour="red")),
     ["homes.csv", "colour"]),
    ("NaN", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(utility_b=[0.3, np.nan, 0.3])),
     ["homes.csv", "utility_b", "line 3"]),
    ("text in a number", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: f.astype({"load_kw": object}).assign(
         load_kw=lambda g: g.load_kw.where(g.index != 5, "lots"))), ["profiles.csv", "load_kw", "line 7"]),
    ("positive utility_a", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(utility_a=0.01)),
     ["utility_a", "<= 0"]),
    ("soc_min above soc_initial", "homes.csv",
     lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(soc_min=[0.1, 0.6, 0.1])),
     ["soc_initial", "below soc_min", "line 3"]),
    ("efficiency above 1", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(eta_charge=1.05)),
     ["eta_charge", "(0, 1]"]),
    ("efficiency zero", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(eta_discharge=0.0)),
     ["eta_discharge", "(0, 1]"]),
    ("duplicate home", "homes.csv", lambda p: edit_csv(p, "homes.csv", lambda f: f.assign(home=["1", "1", "3"])),
     ["homes.csv", "duplicate", "'1'"]),
    ("negative load", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(load_kw=f.load_kw.where(f.index != 9, -1.0))),
     ["profiles.csv", "load_kw", "negative", "line 11"]),
    ("negative PV", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(pv_kw=f.pv_kw.where(f.index != 12, -0.5))),
     ["pv_kw", "negative", "line 14"]),
    ("duplicate profile row", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: pd.concat([f, f.iloc[[4]]])),
     ["profiles.csv", "duplicate row", "hour 4"]),
    ("missing profile row", "profiles.csv", lambda p: edit_csv(p, "profiles.csv", lambda f: f.drop(index=30)),
     ["profiles.csv", "missing", "hour 6"]),
    ("unknown home in profiles", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(home=f.home.where(f.index != 0, "ghost"))),
     ["profiles.csv", "unknown home 'ghost'"]),
    ("unknown scenario", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(scenario=f.scenario.where(f.index != 0, "99"))),
     ["profiles.csv", "unknown scenario '99'"]),
    ("hour out of range", "profiles.csv",
     lambda p: edit_csv(p, "profiles.csv", lambda f: f.assign(hour=f.hour.where(f.index != 0, 24))),
     ["profiles.csv", "hour"]),
    ("probabilities not summing to 1", "scenarios.csv",
     lambda p: edit_csv(p, "scenarios.csv", lambda f: f.assign(probability=[0.5, 0.6])),
     ["scenarios.csv", "sum to 1.1"]),
    ("zero probability", "scenarios.csv",
     lambda p: edit_csv(p, "scenarios.csv", lambda f: f.assign(probability=[1.0, 0.0])),
     ["scenarios.csv", "probability", "> 0"]),
    ("duplicate scenario", "scenarios.csv",
     lambda p: edit_csv(p, "scenarios.csv", lambda f: f.assign(scenario=["1", "1"])),
     ["scenarios.csv", "duplicate"]),
    ("missing price hour", "prices.csv", lambda p: edit_csv(p, "prices.csv", lambda f: f.drop(index=5)),
     ["prices.csv", "[5]"]),
    ("retail below net metering", "prices.csv",
     lambda p: edit_csv(p, "prices.csv", lambda f: f.assign(retail_usd_per_kwh=0.01)),
     ["retail_usd_per_kwh", "net-metering"]),
    ("negative LMP", "prices.csv",
     lambda p: edit_csv(p, "prices.csv", lambda f: f.assign(lmp_usd_per_kwh=f.lmp_usd_per_kwh.where(f.hour != 3, -0.01))),
     ["lmp_usd_per_kwh", "line 5", "negative LMP"]),
    ("market key missing", "market.json",
     lambda p: (p / "market.json").write_text('{"buy_ratio": 1.1, "sell_ratio": 0.9, "regularization": 1e-5}'),
     ["market.json", "net_metering_usd_per_kwh"]),
    ("market value not a number", "market.json", lambda p: edit_json(p, buy_ratio="high"),
     ["market.json", "buy_ratio", "not a finite number"]),
    ("sell above buy", "market.json", lambda p: edit_json(p, sell_ratio=1.2), ["sell_ratio", "buy_ratio"]),
    ("negative regularization", "market.json", lambda p: edit_json(p, regularization=-1.0),
     ["regularization", ">= 0"]),
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


def test_not_a_directory(tmp_path):
    with pytest.raises(dm.CaseError, match="not a directory"):
        dm.load_case(tmp_path / "nowhere")


def test_create_case_shape_mismatch():
    with pytest.raises(dm.CaseError, match="same"):
        dm.create_case(np.ones((2, 1, 24)), np.ones((3, 1, 24)), utility_a=0, utility_b=0.3, lmp=np.ones(24) * 0.04)
