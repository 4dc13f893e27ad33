"""Rows of the per-day studies kept between runs, keyed by everything they were computed from.

A study over every day of the measured year (the claims of :mod:`desmarket.year`, the fairness verdicts, the
two-stage values, the robustness of the claims to the price source) costs minutes to hours, and
``make reproduce`` must stay within its budget. So every row such a study writes carries a ``key``
(:func:`row_key`): a digest of the study's name and version, the day, every parameter of the row and a digest of
the input data (:func:`data_digest`). :func:`cached_rows` computes only the rows whose key it finds in none of
the tables it is given (the run's own last table, then the committed reference table) and reuses the others as
they were written -- so a rerun writes the same bytes, and a row is recomputed as soon as anything it was
computed from changes.

What the key cannot see is the code: a study whose computation changes must bump its ``version`` (its module's
``*_VERSION`` constant; CONTRIBUTING.md, "Cached per-day tables"). Two guards: ``fresh=True``
(``make reproduce FRESH=1``) recomputes every row, and the test suite recomputes sampled rows of each committed
table and compares them with what is written (tests/test_daycache.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

#: How the tables write floats (:func:`desmarket.report.save_table` uses this one).
FLOAT_FORMAT = "%.10g"
#: Hex digits of a row key (sha256 prefix): 64 bits, far from a collision over a few thousand rows.
KEY_DIGITS = 16


def data_digest(*frames) -> str:
    """A stable digest (16 hex digits) of input data: pandas frames or series (values, index and column names,
    hashed by :func:`pandas.util.hash_pandas_object`), numpy arrays (their float64 bytes), or strings."""
    h = hashlib.sha256()
    for frame in frames:
        if isinstance(frame, pd.DataFrame | pd.Series):
            h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
            names = frame.columns if isinstance(frame, pd.DataFrame) else [frame.name]
            h.update(repr([str(c) for c in names]).encode())
        elif isinstance(frame, np.ndarray):
            h.update(np.ascontiguousarray(frame, dtype="<f8").tobytes())
        else:
            h.update(str(frame).encode())
        h.update(b"\0")
    return h.hexdigest()[:KEY_DIGITS]


def row_key(study: str, version: int, **inputs) -> str:
    """The key of one row: a digest (16 hex digits) of the study's name, its version and its ``inputs`` (the
    day, every parameter, the data digests), each a JSON value; the order of ``inputs`` does not matter."""
    text = json.dumps({"study": study, "version": int(version), **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_DIGITS]


def _known_rows(tables: Iterable[Path | str], index: str) -> dict[str, pd.Series]:
    """Rows of the tables that exist, by key; the first table that holds a key wins."""
    known: dict[str, pd.Series] = {}
    for path in tables:
        path = Path(path)
        if not path.is_file():
            continue
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        if "key" not in frame.columns or index not in frame.columns:
            continue  # a table of an older layout: nothing in it can be reused
        for _, row in frame.iterrows():
            known.setdefault(row["key"], row)
    return known


def cached_rows(
    compute: Callable[[list], list[dict]],
    items: Sequence,
    keys: Sequence[str],
    tables: Iterable[Path | str] = (),
    *,
    index: str = "date",
    fresh: bool = False,
    decimals: int = 4,
) -> pd.DataFrame:
    """The rows of ``items`` (one per item, in order), each reused from ``tables`` where one holds its key.

    ``compute(missing)`` is called once with the items whose key no table holds (all of them with ``fresh``)
    and returns one dict per item, in order. ``keys``: :func:`row_key` of each item. A reused row is taken as
    written; a computed row is rounded to ``decimals`` as :func:`desmarket.report.save_table` writes it, so what
    a study derives from the frame (medians, shares) is the same whether its rows were reused or computed. The
    frame comes back with ``index`` as its index and a ``key`` column last, every column parsed as a CSV of it
    would be; ``attrs["reused"]`` counts the reused rows.
    """
    if len(items) != len(keys):
        raise ValueError(f"cached_rows: {len(items)} items but {len(keys)} keys")
    known = {} if fresh else _known_rows(tables, index)
    missing = [item for item, key in zip(items, keys, strict=True) if key not in known]
    computed = iter(_as_text(pd.DataFrame(compute(missing)), decimals) if missing else [])
    rows = [known[key].to_dict() if key in known else next(computed) for key in keys]
    frame = pd.DataFrame(rows, dtype=object).assign(key=list(keys))
    frame = frame[[c for c in frame.columns if c != "key"] + ["key"]]  # the key last, whatever row comes first
    buffer = StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    buffer.seek(0)
    out = pd.read_csv(buffer, keep_default_na=False, na_values=[""], dtype={"key": str})
    out.attrs["reused"] = len(keys) - len(missing)
    return out.set_index(index)


def _as_text(frame: pd.DataFrame, decimals: int) -> list[dict]:
    """Computed rows as the text a table of them holds (rounded to ``decimals``, as save_table writes)."""
    numeric = frame.select_dtypes("number").columns
    frame = frame.copy()
    frame[numeric] = frame[numeric].round(decimals) + 0.0
    buffer = StringIO()
    frame.to_csv(buffer, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    buffer.seek(0)
    text = pd.read_csv(buffer, dtype=str, keep_default_na=False)
    return [row.to_dict() for _, row in text.iterrows()]
