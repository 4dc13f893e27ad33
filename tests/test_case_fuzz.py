"""Fuzz test of the case format: ``load_case`` on mutated case directories returns a Case or raises CaseError.

Hypothesis starts from a small valid case written by ``Case.save`` and applies one to four mutations: cells
replaced by random text, numbers, blanks, NaN or infinities; headers renamed, dropped or repeated; rows
dropped or repeated; ragged rows; files truncated, re-encoded (UTF-16, UTF-32, Latin-1 with non-ASCII text),
overwritten with random bytes or deleted; ``market.json`` replaced by random JSON or given odd values. No
other exception may escape. The settings are fixed (``derandomize=True``), so every run tries the same
examples.
"""

import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import desmarket as dm
from desmarket.synthetic import random_case

CSV_FILES = ("homes.csv", "profiles.csv", "scenarios.csv", "prices.csv")
FILES = (*CSV_FILES, "market.json")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _valid_files() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as d:
        path = random_case(5, n_homes=2, n_scenarios=2).save(Path(d) / "case")
        return {name: (path / name).read_bytes() for name in FILES}


VALID = _valid_files()

# ------------------------------------------------------------------------------ values
ODD_TEXT = [
    "",
    " ",
    "NaN",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "NA",
    "N/A",
    "null",
    "None",
    "True",
    "1e400",
    "-1e400",
    "1" + "0" * 400,
    "9" * 5000,
    "1e-400",
    "1e9",
    "1e12",
    "-1e9",
    "0x10",
    "1_000",
    "1,5",
    " 1",
    "1 ",
    '"',
    "\n",
    "\r",
    "\x00",
    "é",
    "\ufeff",
    "٣",
    "0",
    "-0",
    "24",
    "23.5",
    "-1",
    "-0.25",
    "-250",
    "aggregator",
    "Total",
    "AGGREGATOR",
]
CELLS = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.text(max_size=12),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1e3, 1e3).map(lambda x: f"{x:.6g}"),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
JSON_LITERALS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "1" + "0" * 400,
        "9" * 5000,
        "-0",
        "1e-400",
        "1e12",
        "true",
        "null",
        '"1.1"',
        "[]",
        "{}",
    ]
)


# --------------------------------------------------------------------------- mutations
def _rows(content: bytes) -> list[list[str]] | None:
    """The CSV as rows of text, or None if it is no longer UTF-8 (then only byte-level mutations apply)."""
    try:
        return list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error):
        return None


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _mutate_csv(rows: list[list[str]], data) -> list[list[str]]:
    """One table-level mutation (rows[0] is the header)."""
    op = data.draw(
        st.sampled_from(
            ["cell", "cell", "cell", "rename", "drop_column", "repeat_column", "drop_row", "repeat_row", "ragged"]
        ),
        label="csv mutation",
    )
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    width = max(len(rows[i]), 1)
    j = data.draw(st.integers(0, width - 1), label="column")
    if op == "cell" and rows[i]:
        rows[i][j] = data.draw(CELLS, label="cell")
    elif op == "rename" and rows[0]:
        rows[0][min(j, len(rows[0]) - 1)] = data.draw(
            st.one_of(
                st.text(max_size=10),
                st.sampled_from(["home", "scenario", "hour", "probability", "load_kw", " home", "Home", ""]),
            ),
            label="header",
        )
    elif op == "drop_column":
        rows = [r[:j] + r[j + 1 :] for r in rows]
    elif op == "repeat_column":
        rows = [r + r[j : j + 1] for r in rows]
    elif op == "drop_row" and len(rows) > 1:
        rows = rows[:i] + rows[i + 1 :]
    elif op == "repeat_row":
        rows = rows + [list(rows[i])]
    elif op == "ragged":
        rows[i] = rows[i][:-1] if data.draw(st.booleans(), label="shorter") else rows[i] + ["1"]
    return rows


def _mutate_json(content: bytes, data) -> bytes:
    """One mutation of market.json, on its text."""
    op = data.draw(
        st.sampled_from(["value", "literal", "whole", "drop_key", "add_key", "repeat_key"]), label="json mutation"
    )
    try:
        market = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        market = None
    if not isinstance(market, dict) or not market or op == "whole":
        return json.dumps(data.draw(JSON_VALUES, label="json")).encode()
    key = data.draw(st.sampled_from(sorted(market)), label="key")
    if op == "value":
        market[key] = data.draw(JSON_VALUES, label="value")
    elif op == "drop_key":
        del market[key]
    elif op == "add_key":
        market[data.draw(st.text(max_size=10), label="new key")] = data.draw(JSON_VALUES, label="value")
    text = json.dumps(market)
    if op == "literal":
        text = text.replace(
            json.dumps(key) + ": " + json.dumps(market[key]),
            json.dumps(key) + ": " + data.draw(JSON_LITERALS, label="literal"),
            1,
        )
    elif op == "repeat_key":
        text = text[:-1] + f", {json.dumps(key)}: {data.draw(JSON_LITERALS, label='literal')}}}"
    return text.encode()


def _mutate_bytes(content: bytes, data) -> bytes | None:
    """One byte-level mutation; None deletes the file."""
    op = data.draw(
        st.sampled_from(["truncate", "utf-16", "utf-32", "latin-1", "insert", "random", "empty", "delete"]),
        label="byte mutation",
    )
    if op == "truncate":
        return content[: data.draw(st.integers(0, len(content)), label="length")]
    if op in ("utf-16", "utf-32", "latin-1"):
        text = content.decode("utf-8", errors="replace")
        at = data.draw(st.integers(0, len(text)), label="at")
        return (text[:at] + "é" + text[at:]).encode(op, errors="replace")
    if op == "insert":
        at = data.draw(st.integers(0, len(content)), label="at")
        return content[:at] + data.draw(st.binary(min_size=1, max_size=8), label="bytes") + content[at:]
    if op == "random":
        return data.draw(st.binary(max_size=200), label="bytes")
    return b"" if op == "empty" else None


def _mutate(files: dict[str, bytes | None], data) -> None:
    name = data.draw(st.sampled_from(FILES), label="file")
    content = files[name]
    if content is None:
        return
    level = data.draw(st.sampled_from(["table", "table", "bytes"]), label="level")
    rows = _rows(content) if name in CSV_FILES else None
    if level == "bytes" or (name in CSV_FILES and not rows):
        files[name] = _mutate_bytes(content, data)
    elif name in CSV_FILES:
        files[name] = _csv(_mutate_csv(rows, data))
    else:
        files[name] = _mutate_json(content, data)


# ------------------------------------------------------------------------------- tests
def _load(files: dict[str, bytes | None]):
    """load_case on a fresh directory holding ``files``: a Case, or the CaseError it raised."""
    with tempfile.TemporaryDirectory() as d:
        for name, content in files.items():
            if content is not None:
                (Path(d) / name).write_bytes(content)
        try:
            return dm.load_case(d)
        except dm.CaseError as exc:
            assert exc.file in (*FILES, "<case directory>") and "Fix:" in str(exc)
            return exc


def _check_loaded(result) -> None:
    """A case that loads keeps the rules every later step relies on: buy price >= sell price for every LMP sign
    (Eq. 4 and its negative-price rule), no reserved home id, at least one home."""
    if isinstance(result, dm.Case):
        assert result.n_homes >= 1 and np.all(result.buy_price >= result.sell_price)
        assert not {h.strip().lower() for h in result.home_ids} & set(dm.case.RESERVED_HOME_IDS)


def test_the_unmutated_case_loads():
    assert isinstance(_load(dict(VALID)), dm.Case)


@FUZZ
@given(data=st.data())
def test_load_case_returns_a_case_or_raises_case_error(data):
    files = dict(VALID)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        _mutate(files, data)
    result = _load(files)
    assert isinstance(result, (dm.Case, dm.CaseError))
    _check_loaded(result)


@FUZZ
@given(market=JSON_VALUES, literal=JSON_LITERALS, key=st.sampled_from(dm.case.MARKET_KEYS))
def test_market_json_values(market, literal, key):
    """market.json as any JSON value, and each key given any value or odd literal."""
    assert isinstance(_load({**VALID, "market.json": json.dumps(market).encode()}), dm.CaseError)
    good = json.loads(VALID["market.json"])
    for value in (json.dumps(market), literal):
        text = json.dumps({**good, key: 0.5}).replace(f'"{key}": 0.5', f'"{key}": {value}')
        result = _load({**VALID, "market.json": text.encode()})
        assert isinstance(result, (dm.Case, dm.CaseError))


@pytest.mark.parametrize("name", FILES)
def test_each_file_missing_or_empty(name):
    for content in (None, b"", b"\n", b"\xff\xfe", b"\x00" * 10):
        result = _load({**VALID, name: content})
        assert isinstance(result, dm.CaseError) and result.file == name, (content, result)
