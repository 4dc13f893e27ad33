"""The command line: ``desmarket validate | build-case | run`` (installed with the package; also
``python -m desmarket``).

Exit codes: 0 done; 1 bad input, a case the model cannot serve or an output folder that cannot be written (one clear
line on stderr, no traceback); 2 usage (argparse, also a value out of range); 130 interrupted.

Output folders (``run --out``, ``build-case OUT``) are resolved against the current working directory and written
as a whole (:class:`OutputFolder`): every file goes to a hidden temporary sibling ``.<name>.partial-*`` that takes
the folder's place only when complete. A bad input, a failed write (full disk, read-only folder, ...) or Ctrl-C
leaves nothing behind and an existing folder unchanged. A non-empty folder is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from desmarket.case import check_imbalance_ratios
from desmarket.case import count_of as _count
from desmarket.errors import OutputError
from desmarket.paper import PAPER_PROFIT_RATE
from desmarket.settlement import SETTLE_RULES

#: The fix that an OSError's errno calls for, in the one line of an :class:`OutputError`.
OUTPUT_FIXES = {
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "a part of the path is a file, not a folder; choose another path",
    errno.EACCES: "the folder is not writable for you; choose a writable folder",
    errno.EPERM: "the folder is not writable for you; choose a writable folder",
    errno.EROFS: "the file system is read-only; choose a folder on a writable disk",
    errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or choose a folder on another disk",
    errno.ENAMETOOLONG: "a name in the path is too long; choose a shorter one",
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- output folders
def absolute(path) -> Path:
    """``path`` made absolute against the current working directory (``~`` expanded, no symlinks resolved).

    The CLI's one notion of a user's path: :func:`desmarket.io.resolve` (relative to the project root) is for the
    project's own files, so the CLI hands only absolute paths to :mod:`desmarket.io`.
    """
    return Path(os.path.abspath(Path(path).expanduser()))


def output_error(target: Path, exc: OSError, staging: Path | None = None) -> OutputError:
    """One :class:`OutputError` line for an OSError met while writing ``target``: the path, the reason, the fix.

    A file named by ``exc`` inside the temporary ``staging`` folder is named as the file of ``target`` it would
    have become. The error keeps ``exc.errno``.
    """
    where = target
    if staging is not None and exc.filename:
        try:
            where = target / Path(os.fsdecode(exc.filename)).relative_to(staging)
        except ValueError:
            pass
    reason = exc.strerror or str(exc)
    fix = OUTPUT_FIXES.get(exc.errno or 0, "check the path, or choose another folder")
    error = OutputError(f"cannot write {where}: {reason}. Fix: {fix}")
    error.errno = exc.errno
    return error


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies inside it (symlinks resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


class OutputFolder:
    """A folder written as a whole: files go to a temporary sibling that replaces ``target`` only in :meth:`commit`.

    Creating it checks, before any solving, that ``target`` is a new or empty folder (a non-empty one only with
    ``force``), that it does not hold any of ``keep`` (``{"the case": path}``; the current folder is always kept) and
    that its parent is writable (by creating the temporary sibling ``.<name>.partial-*``). Write inside
    ``with folder.writing() as out:``, which turns every OSError into one :class:`OutputError` naming the path and
    the fix. Leaving the ``with OutputFolder(...)`` block without :meth:`commit` (an error, Ctrl-C) removes the
    sibling and the parent folders made for it: ``target`` is unchanged and nothing half-written is left.
    """

    def __init__(self, target, force: bool = False, keep: dict | None = None):
        self.target = absolute(target)
        self.staging: Path | None = None
        self._made: list[Path] = []  # parent folders created here, outermost first
        try:
            with self._converting():
                if self.target.is_symlink():
                    self.target = self.target.resolve()
                self._check_target(force, {"the current folder": Path.cwd(), **(keep or {})})
                self._make_parents()
                self.staging = self._sibling("partial")
                self.staging.chmod(0o777 & ~_umask())  # mkdtemp's 0o700 would make the result private
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.discard()  # nothing to do after commit; an exception propagates

    def _check_target(self, force: bool, keep: dict) -> None:
        target = self.target
        if not target.exists():
            return
        if not target.is_dir():
            raise OutputError(f"cannot write {target}: it is a file, not a folder. Fix: choose a new folder")
        for what, path in keep.items():
            if _is_within(absolute(path), target):
                raise OutputError(
                    f"cannot write {target}: it is or holds {what} ({absolute(path)}), which "
                    "replacing it would delete. Fix: choose another folder"
                )
        if not force and any(target.iterdir()):
            raise OutputError(f"{target} exists and is not empty; choose a new folder or pass --force to replace it")

    def _make_parents(self) -> None:
        missing, parent = [], self.target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        if not parent.is_dir():
            raise OutputError(
                f"cannot write {self.target}: {parent} is a file, not a folder. "
                "Fix: choose a path that is not under a file"
            )
        for folder in reversed(missing):
            folder.mkdir()
            self._made.append(folder)

    def _sibling(self, kind: str) -> Path:
        return Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.{kind}-"))

    @contextmanager
    def _converting(self):
        try:
            yield
        except OutputError:
            raise
        except OSError as exc:
            raise output_error(self.target, exc, self.staging) from exc

    @contextmanager
    def writing(self):
        """The temporary folder to write into; every OSError inside becomes one :class:`OutputError`."""
        with self._converting():
            yield self.staging

    def commit(self) -> Path:
        """Move the written folder into place: an existing ``target`` is moved aside first, restored if the swap
        fails, and removed after it (a note on stderr if it cannot be). Returns ``target``."""
        if self.staging is None:
            raise RuntimeError("OutputFolder.commit() outside its with-block: nothing was written")
        old = None
        with self._converting():
            if self.target.exists():
                old = self._sibling("old")
                old.rmdir()  # reserves a free name; renaming onto an existing folder is not portable
                os.rename(self.target, old)
            try:
                os.rename(self.staging, self.target)
            except BaseException:
                if old is not None:
                    os.rename(old, self.target)
                raise
        self.staging, self._made = None, []
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            if old.exists():
                _say(f"note: the replaced folder could not be removed completely; remove {old} by hand")
        return self.target

    def discard(self) -> None:
        """Remove the temporary folder and the parent folders made for it (if still empty)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        for folder in reversed(self._made):
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []


# -------------------------------------------------------------------------------------------------- commands
def validate(args) -> int:
    """Load and validate a case directory; print what it holds."""
    import desmarket as dm

    case = dm.load_case(args.case)
    print(f"valid: {case}")
    print(f"homes: {', '.join(case.home_ids)}")
    print(f"scenarios: {', '.join(case.scenarios)} (probabilities {', '.join(f'{p:g}' for p in case.probability)})")
    return 0


def build_case(args) -> int:
    """Build a case from the measured data (the data layer) and write it in the case format."""
    from desmarket import data, limits

    limits.check_size(args.homes, args.scenarios, field="--homes")  # a case this machine can study
    date = args.date or data.PAPER_DATE
    with OutputFolder(args.out, args.force) as folder:  # checks OUT before the data are read
        source = data.price_source(args.prices)  # an unknown name or a malformed file: its one line
        case = data.build_case(n_homes=args.homes, n_scenarios=args.scenarios, date=date, seed=args.seed, prices=source)
        with folder.writing() as out:
            case.save(out)
        target = folder.commit()
    copies = data.resampled_homes(case.home_ids)
    print(
        f"wrote {target}: {case}"
        + (
            f"; {_count(len(copies), 'home')} {'is a resampled copy' if len(copies) == 1 else 'are resampled copies'}"
            " of measured ones"
            if copies
            else ""
        )
    )
    print(source.describe(date, seed=args.seed))
    return 0


def _solve(case, method: str, stages: int = 1) -> tuple:
    """M1 and the market clearing (``stages`` 2: the two-stage day-ahead market), each timed on stderr."""
    import desmarket as dm

    steps = [
        ("M1 (each home alone)", lambda: dm.solve_independent(case, method=method, stages=stages)),
        ("market clearing", lambda: dm.clear_market(case, method=method, stages=stages)),
    ]
    ops = []
    for name, step in steps:
        t0 = time.perf_counter()
        _say(f"solving {name}, method {method} ...")
        ops.append(step())
        _say(f"  done in {time.perf_counter() - t0:.1f} s")
    return tuple(ops)


def _settle(case, independent, market, profit_rate: float, where: Path):
    """The study settled under M2 and M3; nobody trading is one line that names the case and what to do."""
    from desmarket.errors import NoTradeError
    from desmarket.study import settled_study

    try:
        return settled_study(case, independent, market, profit_rate)
    except NoTradeError as exc:
        raise NoTradeError(
            f"{where}: no home's trades have a market value, so the contribution rates (Eq. 22) "
            "and M3 are undefined and `desmarket run` writes nothing. Fix: check the case's prices "
            "and market.json, or settle under a rule that needs no trade in Python: "
            "desmarket.settle(case, m1, market, rho, rule='equal') (M2) or rule='standalone'"
        ) from exc


def _write_study(out: Path, case, study) -> tuple[int, int]:
    """The case, the operations, the tables and the figures of notebooks 02-06 under ``out`` (absolute);
    returns (tables, figures) written."""
    import matplotlib.pyplot as plt

    from desmarket import io, plots, report

    paths = io.RunPaths(out, out / "case", out / "operation", out / "tables", out / "figures")
    for p in paths[1:]:
        p.mkdir(parents=True, exist_ok=True)
    case.save(paths.case)
    io.save_operation(study.independent, case, paths.operation, "m1")
    io.save_operation(study.market, case, paths.operation, "market")
    tables = report.study_tables(study)
    for name, table in tables.items():
        report.save_study_table(table, paths.tables, name)
    community, sweep, rates = tables["figure3_net_load"], tables["figure5_profit_rate"], tables["contribution_rates"]
    home = report.showcase_home(study)
    reduction = report.headline(study)["peak_net_load_reduction_kwh"]
    figures = {
        "inputs": plots.figure_inputs(report.inputs_hourly(case)),
        "figure2_home": plots.figure2_home_curves(report.hourly_profile(study, home), home),
        "figure3_net_load": plots.figure3_net_load(community, reduction),
        "figure4_cost_reduction": plots.figure4_cost_reduction(tables["settlement"]),
        "figure5_profit_rate": plots.figure5_profit_rate(sweep),
        "alpha_vs_traded": plots.figure_alpha_vs_traded(rates, report.correlation(rates["alpha"], rates["traded_kwh"])),
    }
    try:
        for name, fig in figures.items():
            plots.save_figure(fig, paths.figures / f"{name}.png")
    finally:  # also when a write fails: no figure is left open
        for fig in figures.values():
            plt.close(fig)
    return len(tables), len(figures)


def _settle_rules(case, study, rules: list[str]) -> dict:
    """The study's clearing settled under each of ``rules`` (in the order given, each once), by rule."""
    import desmarket as dm

    settlements = {}
    for rule in dict.fromkeys(rules):
        _say(f"settling under rule {rule} ...")
        settlements[rule] = dm.settle(case, study.independent, study.market, study.profit_rate, rule)
    return settlements


def _stochastic_values(case, method: str):
    """RP, WS, EV, EEV, VSS and EVPI of the market and of M1, $/day (:func:`desmarket.stochastic_values`)."""
    import desmarket as dm

    _say("solving the stochastic values (wait and see, the mean scenario, its position on every scenario) ...")
    t0 = time.perf_counter()
    values = dm.stochastic_values(case, method=method)
    _say(f"  done in {time.perf_counter() - t0:.1f} s")
    return values.rename_axis("problem")


def _day_ahead_table(independent, market):
    """The day-ahead purchase and sale per hour of the market and of M1's aggregator, kW."""
    import pandas as pd

    return pd.concat({"market": market.day_ahead, "m1": independent.day_ahead}, axis=1).pipe(
        lambda t: t.set_axis([f"{who}_{column}" for who, column in t.columns], axis=1)
    )


def run(args) -> int:
    """M1, the clearing, M2 and M3 on a case: the tables and figures of notebooks 02-06, without the scorecard;
    with ``--rule``, also each rule's settlement (``tables/settlement_rules.csv``)."""
    import desmarket as dm
    from desmarket import report

    case = dm.load_case(args.case)  # before anything is written
    if args.stages == 2:
        if args.method == "coordinated":
            raise ValueError(
                "--stages 2 needs --method central or decomposed (the market process has no two-stage version)"
            )
        check_imbalance_ratios(case.market)  # a CaseError naming market.json before anything is solved
    with OutputFolder(args.out, args.force, keep={"the case": args.case}) as folder:  # checks --out before any solving
        independent, market = _solve(case, args.method, args.stages)
        study = _settle(case, independent, market, args.profit_rate, absolute(args.case))
        rules = _settle_rules(case, study, args.rule or [])
        values = _stochastic_values(case, args.method) if args.stages == 2 else None
        with folder.writing() as out:
            n_tables, n_figures = _write_study(out, case, study)
            if rules:
                report.save_study_table(report.rules_table(case, rules), out / "tables", "settlement_rules")
                n_tables += 1
            if values is not None:
                report.save_study_table(_day_ahead_table(independent, market), out / "tables", "day_ahead")
                report.save_study_table(values, out / "tables", "stochastic_value")
                n_tables += 2
        target = folder.commit()
    print(
        f"ΔC = {study.m3.surplus:.4f} $/day; ρ = {args.profit_rate}; aggregator gain {study.m3.aggregator_gain:.4f} "
        f"$/day; M3 home gains {study.m3.home_gain.min():.4f} to {study.m3.home_gain.max():.4f} $/day"
    )
    for rule, s in rules.items():
        print(f"rule {rule}: home gains {s.home_gain.min():.4f} to {s.home_gain.max():.4f} $/day")
    print(f"wrote {_count(n_tables, 'table')} and {_count(n_figures, 'figure')} under {target}/")
    return 0


# ---------------------------------------------------------------------------------------------- the parser
def whole_number(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (one message for every option that takes a count)."""
    wanted = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = f"whole_number_from_{minimum}"
    return parse


#: argparse types: counts (homes, scenarios) and seeds (numpy's, >= 0).
positive_int, seed = whole_number(1), whole_number(0)


def unit_rate(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def day(text: str) -> str:
    """argparse type: a calendar day YYYY-MM-DD (surrounding spaces ignored), returned as YYYY-MM-DD."""
    import datetime

    text = text.strip()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a day written YYYY-MM-DD, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    from desmarket import __version__
    from desmarket.data import DEFAULT_PRICES, PAPER_DATE

    top = argparse.ArgumentParser(
        prog="desmarket",
        description="Distributed energy trading with a market value "
        "allocation mechanism (a reproduction of Hu et al. 2024).",
    )
    top.add_argument("--version", action="version", version=f"desmarket {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="{validate,build-case,run}")
    p = sub.add_parser(
        "validate",
        help="check a case directory (docs/usage/case-format.md)",
        description="Load and validate a case directory; exit 1 with the first problem found.",
    )
    p.add_argument("case", help="a case directory: homes.csv, profiles.csv, scenarios.csv, prices.csv, market.json")
    p.set_defaults(func=validate)
    p = sub.add_parser(
        "build-case",
        help="build a case from the measured data",
        description="Build a case from the measured CityLearn homes (homes beyond the 12 measured "
        "ones are resampled copies) and the day-ahead prices of a price source (--prices), and "
        "write it to OUT.",
    )
    p.add_argument("out", help="a new (or empty) folder, relative to the current folder")
    p.add_argument("--homes", type=positive_int, default=10, help="number of homes (default: %(default)s)")
    p.add_argument(
        "--scenarios",
        type=positive_int,
        default=10,
        help="number of equiprobable similar-day scenarios (default: %(default)s)",
    )
    p.add_argument(
        "--date", type=day, default=None, help=f"target day YYYY-MM-DD (default: the paper's day, {PAPER_DATE})"
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seeds everything random: scenario draw, resampled homes, utility coefficients, and the "
        "LMP of pjm-like (default: %(default)s)",
    )
    p.add_argument(
        "--prices",
        default=DEFAULT_PRICES,
        metavar="SOURCE",
        help="the price source: ercot-2022 (ERCOT day-ahead, Austin LZ_AEN, 2022), ercot-2021 (the "
        "same for 2021, with Winter Storm Uri), pjm-like (the seeded synthetic PJM-like LMP), or the "
        "path of a PJM Data Miner 2 da_hrl_lmps CSV export; the day is the price year's same weekday "
        "nearest to --date, hour by local clock hour (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    p.set_defaults(func=build_case)
    p = sub.add_parser(
        "run",
        help="M1, market clearing, M2 and M3 on a case: tables and figures",
        description="Solve M1 and the market clearing of a case, settle under M2 and M3, and write "
        "the case, the operations, the tables and the figures of notebooks 02-06 to --out.",
    )
    p.add_argument("case", help="a case directory")
    p.add_argument(
        "--out",
        required=True,
        help="a new (or empty) output folder, relative to the current folder "
        "(gets case/, operation/, tables/, figures/)",
    )
    p.add_argument(
        "--profit-rate",
        type=unit_rate,
        default=PAPER_PROFIT_RATE,
        help="ρ in [0, 1], the aggregator's profit rate (default: %(default)s)",
    )
    p.add_argument(
        "--method",
        default="decomposed",
        choices=("central", "decomposed", "coordinated"),
        help="how M1 and the clearing are solved (default: %(default)s)",
    )
    p.add_argument(
        "--rule",
        action="append",
        choices=SETTLE_RULES,
        metavar="RULE",
        help="also settle under RULE and write tables/settlement_rules.csv (repeatable; one of "
        f"{', '.join(SETTLE_RULES)}: M2 = equal, M3 = contribution, M4 = synergy)",
    )
    p.add_argument(
        "--stages",
        type=int,
        default=1,
        choices=(1, 2),
        help="1: the paper's program; 2: the day-ahead market (a day-ahead purchase and sale per hour, real-time "
        "imbalances), which also writes tables/day_ahead.csv and tables/stochastic_value.csv (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    p.set_defaults(func=run)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except KeyboardInterrupt:
        _say(f"desmarket {args.command}: interrupted; nothing was written")
        return 130
    except BrokenPipeError:  # `desmarket validate case | head`: the reader left; not an error of the case
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as exc:  # user errors: one line, exit 1; anything else is a bug: traceback
        from desmarket.errors import DesmarketError

        if isinstance(exc, (DesmarketError, ValueError, OSError)):
            _say(f"desmarket {args.command}: error: {exc}")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
