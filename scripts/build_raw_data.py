"""Rebuild the committed extract ``data/raw/citylearn2022/`` from the pinned CityLearn wheel.

    python scripts/build_raw_data.py            # what `make data` runs
    python scripts/build_raw_data.py --wheel /path/to/CityLearn-2.1.2-py3-none-any.whl

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
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import subprocess
import sys
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


def fetch_wheel(cache: Path) -> Path:
    """The pinned wheel in ``cache``, downloaded from PyPI with pip if absent."""
    wheel = cache / WHEEL_NAME
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", f"citylearn=={CITYLEARN_VERSION}", "--no-deps",
               "--only-binary=:all:", "--dest", str(cache)]
        print("running:", " ".join(cmd))
        subprocess.run(cmd, check=True)
    if not wheel.is_file():
        sys.exit(f"pip did not produce {wheel}; download {WHEEL_NAME} from PyPI and pass --wheel")
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
        "buildings.csv": csv_bytes(["building", "pv_nominal_power_kw", "source_sha256"],
                                   [list(col) for col in zip(*buildings)]),
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, help="use this local wheel instead of data/.cache/ (+ pip download)")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / ".cache")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "raw" / "citylearn2022")
    args = parser.parse_args(argv)
    wheel = args.wheel if args.wheel else fetch_wheel(args.cache)
    manifest = build(wheel, args.out)
    for fname, digest in manifest["files_sha256"].items():
        size = (args.out / fname).stat().st_size
        print(f"wrote {args.out / fname} ({size / 1e6:.2f} MB, sha256 {digest[:12]})")


if __name__ == "__main__":
    main()
