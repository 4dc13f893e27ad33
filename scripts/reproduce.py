"""Run the notebook chain with papermill: `make reproduce` (optionally HOMES=.. SCENARIOS=.. PROFIT_RATE=.. SEED=..
DATE=.., or CASE=path/to/case for your own community).

Without parameters the notebooks are executed in place and write the committed reference results to
results/. With any parameter, the run gets its own folder results/runs/<tag>/ (case, tables, figures and the
executed notebooks), so the reference results stay as they are; with CASE=dir it is results/runs/<dir name>/.
Every parameter, and the case, is checked before anything is written.
"""

import argparse
import datetime
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from desmarket.io import project_root

ROOT = project_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def strip_timings(path: Path) -> None:
    """Drop wall-clock stamps, random ids and absolute paths that papermill records: reruns are byte-identical."""
    nb = nbformat.read(path, as_version=4)
    for meta in [nb.metadata, *(cell.metadata for cell in nb.cells)]:
        meta.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            meta.get("papermill", {}).pop(key, None)
    pmeta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # absolute paths differ between clones
        if key in pmeta:
            pmeta[key] = str(Path(pmeta[key]).resolve().relative_to(ROOT))
    for cell in nb.cells:  # papermill gives its injected cell a random id
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
    nbformat.write(nb, path)


def _positive_int(text: str) -> int:
    value = int(text) if text.strip().lstrip("+").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def _samples(text: str) -> int:
    value = int(text) if text.strip().lstrip("+").isdigit() else 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be a whole number of orders >= 2, got {text!r}")
    return value


def _seed(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _date(text: str) -> str:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            raise ValueError(text)
        return datetime.date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a day written YYYY-MM-DD, got {text!r}") from None


def parse(argv=None) -> dict:
    """The run's parameters, each validated before anything is written (argparse exits with a clear message)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=_positive_int, dest="n_homes")
    parser.add_argument("--scenarios", type=_positive_int, dest="n_scenarios")
    parser.add_argument("--profit-rate", type=_rate, dest="profit_rate")
    parser.add_argument("--seed", type=_seed)
    parser.add_argument("--date", type=_date)
    parser.add_argument("--shapley-samples", type=_samples, dest="shapley_samples",
                        help="above 14 homes, notebook 08 samples the Shapley value from this many orders")
    parser.add_argument("--case", dest="case_dir", help="a case directory (README, 'Case format'): run the study "
                        "on it instead of building one from the measured data")
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    if "case_dir" in args:
        clash = sorted(set(args) & {"n_homes", "n_scenarios", "seed", "date"})
        if clash:
            parser.error(f"--case fixes the homes and scenarios; {', '.join(clash)} do not apply to it")
    return args


def check_case(args: dict) -> None:
    """A given case loads and validates (else its CaseError in one line, exit 1); its path becomes absolute."""
    if "case_dir" not in args:
        return
    import desmarket as dm  # noqa: PLC0415

    try:
        dm.load_case(args["case_dir"])
    except dm.CaseError as exc:
        print(f"reproduce.py: the case {args['case_dir']} is not valid: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    args["case_dir"] = str(Path(args["case_dir"]).resolve())


def run_folder(args: dict) -> str:
    """results/runs/<tag> for a parameterised run; the tag is built from validated values only (a case gives
    its directory name, with anything but letters, digits, '.', '_' and '-' replaced by '_')."""
    rest = {k: v for k, v in args.items() if k != "case_dir"}
    parts = [re.sub(r"[^A-Za-z0-9_.-]", "_", Path(args["case_dir"]).name).lstrip(".") or "case"] \
        if "case_dir" in args else []
    tag = "_".join(parts + [f"{k}-{v}" for k, v in sorted(rest.items())])
    runs = (ROOT / "results" / "runs").resolve()
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", tag) or (runs / tag).resolve().parent != runs:
        raise SystemExit(f"run tag {tag!r} would leave results/runs/")
    return f"results/runs/{tag}"


#: The kernels log at ERROR only: no "[IPKernelApp] WARNING | Kernel is running over TCP" line per notebook
#: (the kernel listens on localhost only; papermill starts and stops it). Each kernel is stopped at once when
#: its notebook is done (every result is written by then): a graceful stop waits for joblib's worker pool,
#: times out and interrupts the kernel, which printed "KeyboardInterrupt caught in kernel".
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def execute(params: dict, out_dir: Path | None) -> None:
    """Run every notebook with its own parameters; a bar per notebook (its cells) when the terminal shows one."""
    progress = sys.stderr.isatty()
    for i, nb in enumerate(NOTEBOOKS, 1):
        t0 = time.perf_counter()
        target = nb if out_dir is None else out_dir / nb.name
        print(f"  [{i}/{len(NOTEBOOKS)}] {nb.name} ...", end="\n" if progress else " ", flush=True)
        own = {k: v for k, v in params.items() if k in pm.inspect_notebook(str(nb))}  # only what it declares
        pm.execute_notebook(str(nb), str(target), parameters=own, cwd=str(nb.parent), progress_bar=progress,
                            kernel_name="python3", extra_arguments=QUIET_KERNEL, shutdown_kernel="immediate")
        strip_timings(target)
        print(f"{time.perf_counter() - t0:.1f} s", flush=True)


def check_data(args: dict) -> None:
    """The target day exists in the measured data and has 24 clean hours (else a one-line error, exit 2)."""
    from desmarket import data  # noqa: PLC0415  (only when a date is given)
    from desmarket.data.errors import DataError  # noqa: PLC0415

    if "date" in args:
        try:
            data.usable_homes(args["date"])
        except DataError as exc:
            raise SystemExit(f"reproduce.py: error: argument --date: {exc}") from None


def main(argv=None) -> int:
    args = parse(argv)
    check_data(args)
    check_case(args)
    run_dir = run_folder(args) if args else "results"
    params = {**args, "run_dir": run_dir}
    print(f"parameters: {params}")
    start = time.perf_counter()
    if not args:
        execute(params, None)
    else:  # never leave a half-written run folder: a failed run removes its own and restores an earlier one
        folder = ROOT / run_dir
        backup = folder.with_name(folder.name + ".previous")
        if folder.exists():
            shutil.rmtree(backup, ignore_errors=True)
            folder.rename(backup)
        try:
            (folder / "notebooks").mkdir(parents=True)
            execute(params, folder / "notebooks")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            if backup.exists():
                backup.rename(folder)
            print(f"\nfailed: {run_dir}/ removed (nothing half-written is left)", file=sys.stderr)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    print(f"done: {len(NOTEBOOKS)} notebooks in {time.perf_counter() - start:.1f} s; results in {run_dir}/")
    if not args:  # the reference run: refresh the README's generated result tables
        subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
