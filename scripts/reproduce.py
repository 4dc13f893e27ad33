"""Run the notebook chain with papermill: `make reproduce` (optionally HOMES=.. SCENARIOS=.. PROFIT_RATE=.. SEED=..
DATE=.. PRICES=.. SHAPLEY_SAMPLES=.., or CASE=path/to/case for your own community).

PRICES is a price source (:func:`desmarket.data.price_source`): ercot-2022 (the default,
desmarket.data.DEFAULT_PRICES), ercot-2021, pjm-like, or the path of a PJM Data Miner 2 da_hrl_lmps export.

Without parameters the chain writes the committed reference results to results/ and the executed notebooks
back to notebooks/. With any parameter, the run gets its own folder results/runs/<tag>/ (case, tables,
figures and the executed notebooks), so the reference results stay as they are; with CASE=dir the tag is the
directory's name and a short hash of its full path (two cases named alike never share a folder), and a price
file (PRICES=path) is tagged the same way (prices-<file name>-<hash>).

Before anything is written: every parameter is validated (one line naming it), the size is checked against
the memory available (:mod:`desmarket.limits`) and, for a parameterised run, a pre-flight builds (or loads)
the run's case and solves M1, the clearing and the M3 settlement once, so that a case the chain cannot run
(nobody trades, infeasible, ...) is refused in one line before notebook 01.

The chain runs into a staging folder (results/runs/.staging-<pid>/, with DESMARKET_OUTPUT_ROOT pointing
the notebooks there); only when every notebook has succeeded are the results moved into place (os.replace,
with SIGINT and SIGTERM held off meanwhile). A failed notebook, Ctrl-C or SIGTERM leaves the earlier results
and notebooks exactly as they were and prints one line (a failed notebook is kept for inspection).

The make variables reach this script through the environment (REPRODUCE_HOMES, ..., set by the Makefile),
never through a shell command line: `make reproduce CASE="site (2023)"` is one path.
"""

import argparse
import ast
import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from desmarket.case import count_of
from desmarket.cli import day, positive_int, seed, unit_rate, whole_number
from desmarket.io import OUTPUT_ROOT_ENV, project_root

ROOT = project_root()
#: The chain, in order (tests replace it with small notebooks).
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: The make variables the Makefile hands over, as REPRODUCE_<NAME> environment variables, and their options.
MAKE_VARIABLES = {
    "HOMES": "--homes",
    "SCENARIOS": "--scenarios",
    "PROFIT_RATE": "--profit-rate",
    "SEED": "--seed",
    "DATE": "--date",
    "PRICES": "--prices",
    "CASE": "--case",
    "SHAPLEY_SAMPLES": "--shapley-samples",
    "FRESH": "--fresh",
}
ENV_PREFIX = "REPRODUCE_"
#: Exit status after SIGINT / SIGTERM (the shell's 128 + signal number).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def shown(path: Path) -> str:
    """A path as the notebooks' metadata and the messages show it: relative to the project root if inside."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def strip_timings(path: Path, final: Path | None = None) -> None:
    """Drop wall-clock stamps, random ids and absolute paths that papermill records, and merge the chunks of
    printed text (:func:`merged_streams`): reruns are byte-identical.

    final: where the notebook will be once the run is in place (it is executed into a staging folder);
    papermill's output_path is recorded as that path, relative to the project root.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for meta in [nb.metadata, *(cell.metadata for cell in nb.cells)]:
        meta.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            meta.get("papermill", {}).pop(key, None)
    pmeta = nb.metadata.get("papermill", {})
    if final is not None and "output_path" in pmeta:
        pmeta["output_path"] = str(final)
    for key in ("input_path", "output_path"):  # absolute paths differ between clones
        if key in pmeta:
            pmeta[key] = shown(Path(pmeta[key]))
    for cell in nb.cells:  # papermill gives its injected cell a random id
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
        if cell.cell_type == "code":
            cell.outputs = merged_streams(cell.outputs)
    nbformat.write(nb, path)


def merged_streams(outputs: list) -> list:
    """A cell's outputs with each run of consecutive stdout (or stderr) chunks merged into one: how the kernel
    splits a cell's printed text into chunks depends on when it flushes (the machine's load), not on the text."""
    merged: list = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (
            out.get("output_type") == "stream"
            and last is not None
            and last.get("output_type") == "stream"
            and last.get("name") == out.get("name")
        ):
            last["text"] = last["text"] + out["text"]
        else:
            merged.append(out)
    return merged


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``reproduce.py: error: argument --homes: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (make help lists the parameters)\n")


def env_argv(environ=None) -> list[str]:
    """The options the Makefile hands over as REPRODUCE_<VARIABLE> environment variables (empty = not given)."""
    environ = os.environ if environ is None else environ
    argv = []
    for name, option in MAKE_VARIABLES.items():
        value = environ.get(ENV_PREFIX + name, "")
        if value != "":
            argv += [option, value]
    return argv


def parse(argv=None) -> dict:
    """The run's parameters, each validated before anything is written (one-line error, exit 2).

    argv: the options (default: those of the environment, :func:`env_argv`, then the command line).
    """
    parser = Parser(prog="reproduce.py", description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=positive_int, dest="n_homes")
    parser.add_argument("--scenarios", type=positive_int, dest="n_scenarios")
    parser.add_argument("--profit-rate", type=unit_rate, dest="profit_rate")
    parser.add_argument("--seed", type=seed)
    parser.add_argument("--date", type=day)
    parser.add_argument(
        "--prices",
        type=price_name,
        help="the price source: ercot-2022 (the default), ercot-2021, "
        "pjm-like, or the path of a PJM Data Miner 2 da_hrl_lmps CSV export",
    )
    parser.add_argument(
        "--shapley-samples",
        type=whole_number(2),
        dest="shapley_samples",
        help="above 14 homes, notebook 08 samples the Shapley value from this many orders",
    )
    parser.add_argument(
        "--fresh",
        type=switch,
        help="1: recompute every row of the per-day tables instead of reusing the rows whose inputs are unchanged "
        "(desmarket.daycache); it changes no result, so not the run folder",
    )
    parser.add_argument(
        "--case",
        dest="case_dir",
        help="a case directory (docs/usage/case-format.md): run the study "
        "on it instead of building one from the measured data",
    )
    argv = env_argv() + sys.argv[1:] if argv is None else argv
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    if "case_dir" in args:
        clash = sorted(set(args) & {"n_homes", "n_scenarios", "seed", "date", "prices"})
        if clash:
            parser.error(f"--case fixes the homes, scenarios and prices; {', '.join(clash)} do not apply to it")
    return args


def switch(text: str) -> bool:
    """argparse type of an on/off make variable: 1 or 0."""
    if text.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"must be 1 or 0, got {text!r}")
    return text.strip() == "1"


def price_name(text: str) -> str:
    """argparse type of --prices: a named source as it is, anything else a path made absolute (the notebooks run
    in notebooks/); whether it is a source is checked by :func:`check_data` (its DataError in one line)."""
    from desmarket.data.sources import PRICE_SOURCES

    text = text.strip()
    if text == "":
        raise argparse.ArgumentTypeError("must be a price source (ercot-2022, ercot-2021, pjm-like or a file), got ''")
    path = Path(text).expanduser()
    return str(path.resolve()) if text not in PRICE_SOURCES and path.is_file() else text


def _one_line(text) -> str:
    return " ".join(str(text).split())


def check_case(args: dict):
    """A given case loads and validates (else its CaseError in one line, exit 1); its path becomes absolute.
    Returns the loaded case (None without --case)."""
    if "case_dir" not in args:
        return None
    import desmarket as dm

    try:
        case = dm.load_case(args["case_dir"])
    except dm.CaseError as exc:
        print(f"reproduce.py: the case {args['case_dir']} is not valid: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    args["case_dir"] = str(Path(args["case_dir"]).resolve())
    return case


def output_base() -> Path:
    """Where run folders go: $DESMARKET_OUTPUT_ROOT if set (as :func:`desmarket.io.run_paths`), else the root."""
    return Path(os.environ.get(OUTPUT_ROOT_ENV) or ROOT)


def case_tag(case_dir: str) -> str:
    """A case's part of the run tag: its directory name (anything but letters, digits, '.', '_' and '-'
    replaced by '_') and 8 hex digits of the hash of its resolved path, so that site1/case and site2/case,
    or 'my case' and 'my_case', get different folders."""
    path = Path(case_dir).resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name).lstrip(".") or "case"
    return f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def prices_tag(prices: str) -> str:
    """The price source's part of the run tag: its name (ercot-2021, ...), or for a file its name and a short hash
    of its path (:func:`desmarket.data.sources.file_tag`, as :func:`case_tag`)."""
    from desmarket.data.sources import PRICE_SOURCES, file_tag

    return prices if prices in PRICE_SOURCES else file_tag(prices)


def run_folder(args: dict) -> str:
    """results/runs/<tag> for a parameterised run; the tag is built from validated values only (see
    :func:`case_tag` for a case, :func:`prices_tag` for a price source)."""
    rest = {k: (prices_tag(v) if k == "prices" else v) for k, v in args.items() if k != "case_dir"}
    parts = [case_tag(args["case_dir"])] if "case_dir" in args else []
    tag = "_".join(parts + [f"{k}-{v}" for k, v in sorted(rest.items())])
    runs = (ROOT / "results" / "runs").resolve()
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", tag) or (runs / tag).resolve().parent != runs:
        raise SystemExit(f"run tag {tag!r} would leave results/runs/")
    return f"results/runs/{tag}"


def check_location(args: dict, run_dir: str) -> None:
    """A case may not lie inside the run folder that the run replaces, nor hold it (exit 1, one line)."""
    if "case_dir" not in args:
        return
    case, folder = Path(args["case_dir"]).resolve(), (output_base() / run_dir).resolve()
    if case == folder or case.is_relative_to(folder) or folder.is_relative_to(case):
        raise SystemExit(
            f"reproduce.py: the case {args['case_dir']} is inside the run folder {shown(folder)}/ "
            "that this run replaces; copy the case elsewhere and run on the copy"
        )


def check_data(args: dict) -> None:
    """The target day exists in the measured data and has 24 clean hours, the price source is one (a name, or a
    readable PJM Data Miner 2 export) and has 24 hours on the price day the target day maps to (else a one-line
    error naming the argument)."""
    if "date" not in args and "prices" not in args:
        return
    from desmarket import data
    from desmarket.data.errors import DataError

    if "date" in args:
        try:
            data.usable_homes(args["date"])
        except DataError as exc:
            raise SystemExit(f"reproduce.py: error: argument --date: {_one_line(exc)}") from None
    option = "--prices" if "prices" in args else "--date"
    try:
        data.price_source(args.get("prices", data.DEFAULT_PRICES)).lmp(args.get("date", data.PAPER_DATE))
    except DataError as exc:
        raise SystemExit(f"reproduce.py: error: argument {option}: {_one_line(exc)}") from None


def notebook_defaults() -> dict:
    """Each parameter's default as the chain's notebooks declare it (the first notebook declaring it wins)."""
    import papermill as pm

    defaults = {}
    for nb in NOTEBOOKS:
        for name, spec in pm.inspect_notebook(str(nb)).items():
            defaults.setdefault(name, ast.literal_eval(spec["default"]))
    return defaults


def preflight(args: dict, case=None) -> None:
    """Refuse, before anything is written, a run the chain cannot finish: too large for this machine's memory
    (:func:`desmarket.limits.check_size`), a case that cannot be built, or one on which M1, the clearing or the
    M3 settlement fails (any DesmarketError, e.g. NoTradeError when nobody trades: one home, identical homes;
    InfeasibleCaseError). One line naming the case and the reason, exit 1.

    case: the loaded case of --case (else the case is built as notebook 01 builds it).
    """
    import desmarket as dm
    from desmarket import data, limits

    p = {**notebook_defaults(), **args}
    if case is not None:
        what = f"the case {args['case_dir']}"
    else:
        priced = f", prices {prices_tag(args['prices'])}" if "prices" in args else ""
        what = (
            f"{count_of(p['n_homes'], 'home')} x {count_of(p['n_scenarios'], 'scenario')} of "
            f"{p['date'] or data.PAPER_DATE} (seed {p['seed']}{priced})"
        )
    try:
        if case is None:
            limits.check_size(p["n_homes"], p["n_scenarios"], field="--homes / --scenarios")
            case = data.build_case(
                n_homes=p["n_homes"],
                n_scenarios=p["n_scenarios"],
                date=p["date"] or data.PAPER_DATE,
                seed=p["seed"],
                prices=p.get("prices") or data.DEFAULT_PRICES,
            )
        else:
            limits.check_size(case.n_homes, case.n_scenarios, field=f"{args['case_dir']}/homes.csv")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dm.DesmarketWarning)
            m1 = dm.solve_independent(case)
            market = dm.clear_market(case)
            dm.settle(case, m1, market, p["profit_rate"], rule="contribution")
    except dm.DesmarketError as exc:
        raise SystemExit(
            f"reproduce.py: the notebook chain cannot run on {what}: {type(exc).__name__}: {_one_line(exc)}"
        ) from None


#: The kernels log at ERROR only: no "[IPKernelApp] WARNING | Kernel is running over TCP" line per notebook
#: (the kernel listens on localhost only; papermill starts and stops it). Each kernel is stopped at once when
#: its notebook is done (every result is written by then): a graceful stop waits for joblib's worker pool,
#: times out and interrupts the kernel, which printed "KeyboardInterrupt caught in kernel".
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def run_notebook(nb: Path, target: Path, parameters: dict, progress: bool) -> None:
    """Execute one notebook into ``target`` (the executor; tests replace it)."""
    import papermill as pm

    pm.execute_notebook(
        str(nb),
        str(target),
        parameters=parameters,
        cwd=str(nb.parent),
        progress_bar=progress,
        kernel_name="python3",
        extra_arguments=QUIET_KERNEL,
        shutdown_kernel="immediate",
    )


class Staging:
    """A run's staging folder results/runs/.staging-<pid>/ (on the file system of the results):
    ``out/`` is the notebooks' DESMARKET_OUTPUT_ROOT, ``notebooks/`` their executed copies, ``old/`` what the
    run replaces (removed with the folder)."""

    def __init__(self, base: Path):
        runs = base / "results" / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(runs)
        self.root = runs / f".staging-{os.getpid()}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.out, self.notebooks, self.old = self.root / "out", self.root / "notebooks", self.root / "old"
        for folder in (self.out, self.notebooks, self.old):
            folder.mkdir(parents=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def remove_stale_staging(runs: Path) -> None:
    """Staging folders of runs killed without a chance to clean up (SIGKILL, power loss): their process is gone."""
    import psutil

    for folder in runs.glob(".staging-*"):
        pid = folder.name.removeprefix(".staging-")
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def output_root(path: Path):
    """Point $DESMARKET_OUTPUT_ROOT (inherited by papermill's kernels) at ``path`` meanwhile."""
    before = os.environ.get(OUTPUT_ROOT_ENV)
    os.environ[OUTPUT_ROOT_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(OUTPUT_ROOT_ENV, None)
        else:
            os.environ[OUTPUT_ROOT_ENV] = before


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM wait until the block is done (moving results into place is never cut in half)."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


class Chain:
    """What one run executes and where it ends up.

    run_dir: the notebooks' run_dir parameter ("results" for the reference run); a reference run puts the
    executed notebooks back in place, a parameterised one into <run folder>/notebooks/.
    """

    def __init__(self, params: dict, reference: bool):
        self.params, self.reference = params, reference
        self.base = output_base()
        self.folder = self.base / params["run_dir"]
        self.current = None  # the notebook running now (for the messages)

    def final_notebook(self, nb: Path) -> Path:
        return nb if self.reference else self.folder / "notebooks" / nb.name

    def execute(self, staging: Staging) -> None:
        """Run every notebook with its own parameters into the staging folder; a bar per notebook (its cells)
        when the terminal shows one."""
        import papermill as pm

        progress = sys.stderr.isatty()
        with output_root(staging.out):
            for i, nb in enumerate(NOTEBOOKS, 1):
                self.current = nb
                t0 = time.perf_counter()
                target = staging.notebooks / nb.name
                print(f"  [{i}/{len(NOTEBOOKS)}] {nb.name} ...", end="\n" if progress else " ", flush=True)
                own = {k: v for k, v in self.params.items() if k in pm.inspect_notebook(str(nb))}
                run_notebook(nb, target, own, progress)
                strip_timings(target, self.final_notebook(nb))
                print(f"{time.perf_counter() - t0:.1f} s", flush=True)
        self.current = None

    def publish(self, staging: Staging) -> None:
        """Move the staged results and notebooks into place (call with signals held).

        Reference run: each staged file replaces its counterpart in results/ (files the chain does not write
        stay) and each executed notebook its source. Parameterised run: the staged run folder replaces the
        earlier one as a whole.
        """
        staged = staging.out / self.params["run_dir"]
        if self.reference:
            for src in sorted(p for p in staged.rglob("*") if p.is_file()):
                _replace(src, self.folder / src.relative_to(staged))
            for nb in NOTEBOOKS:
                _replace(staging.notebooks / nb.name, nb)
        else:
            (staged / "notebooks").mkdir(parents=True, exist_ok=True)
            for nb in NOTEBOOKS:
                os.replace(staging.notebooks / nb.name, staged / "notebooks" / nb.name)
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            if self.folder.exists():
                os.replace(self.folder, staging.old / self.folder.name)
            os.replace(staged, self.folder)

    def keep_failed(self, staging: Staging, nb: Path) -> Path | None:
        """Keep the failed notebook (with its error cell) as results/runs/<tag>.failed.ipynb for inspection."""
        src = staging.notebooks / nb.name
        if not src.exists():
            return None
        tag = "reference" if self.reference else self.folder.name
        kept = staging.root.parent / f"{tag}.failed.ipynb"
        os.replace(src, kept)
        return kept


def _replace(src: Path, dst: Path) -> None:
    """os.replace, across file systems too (then a copy next to ``dst``, renamed over it)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def _on_signal(signum, frame):
    """SIGTERM (a timeout, a cancelled CI job) takes the same clean path as Ctrl-C."""
    _on_signal.received = signum
    raise KeyboardInterrupt


_on_signal.received = None


def refresh_readme() -> None:
    """After the reference run: the README's generated result tables."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py")], check=True)


def failure_line(chain: Chain, exc: BaseException, kept: Path | None) -> str:
    """One line: which notebook failed, the error class and message, and where the failed notebook is."""
    from papermill.exceptions import PapermillExecutionError

    name = chain.current.name if chain.current is not None else "the chain"
    if isinstance(exc, PapermillExecutionError):
        reason = f"{exc.ename}: {_one_line(exc.evalue)} (In [{exc.exec_count}])"
    else:
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
    where = f"; the failed notebook is kept in {shown(kept)}" if kept is not None else ""
    return f"failed: {name}: {reason}; nothing was changed{where}"


def run_chain(chain: Chain) -> int:
    """Execute into a staging folder, then move into place; on a failure or a signal nothing is changed."""
    previous = {s: signal.signal(s, _on_signal) for s in SIGNAL_EXIT}
    _on_signal.received = None
    published = False
    staging = None
    try:
        try:
            with signals_held():
                staging = Staging(chain.base)
            chain.execute(staging)
            with signals_held():
                chain.publish(staging)
                published = True
        except Exception as exc:
            with signals_held():
                kept = chain.keep_failed(staging, chain.current) if staging and chain.current else None
            print(f"\n{failure_line(chain, exc, kept)}", file=sys.stderr)
            return 1
        finally:
            if staging is not None:
                with signals_held():
                    staging.remove()
    except KeyboardInterrupt:
        received = _on_signal.received or signal.SIGINT
        during = f"during {chain.current.name}" if chain.current is not None else "while moving the results"
        state = (
            f"the run was complete and is in {shown(chain.folder)}/"
            if published
            else f"nothing was changed; {signal.Signals(received).name} {during}, "
            f"{shown(chain.folder)}/ and the notebooks are as before"
        )
        print(f"\ninterrupted: {state}", file=sys.stderr)
        return SIGNAL_EXIT[received]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    fresh = args.pop("fresh", False)  # how the tables are computed, not what they hold: not part of the run tag
    check_data(args)
    case = check_case(args)
    run_dir = run_folder(args) if args else "results"
    check_location(args, run_dir)
    if args:  # the reference run is known to run; a parameterised one is tried once first
        preflight(args, case)
    params = {**args, "run_dir": run_dir, **({"fresh": True} if fresh else {})}
    print(f"parameters: {params}")
    start = time.perf_counter()
    status = run_chain(Chain(params, reference=not args))
    if status:
        return status
    print(f"done: {len(NOTEBOOKS)} notebooks in {time.perf_counter() - start:.1f} s; results in {run_dir}/")
    if not args:
        refresh_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
