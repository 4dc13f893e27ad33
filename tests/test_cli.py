"""The command line, run as a user runs it (a subprocess): exit codes 0 / 1 (one clear line) / 2 (usage)."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import desmarket as dm
from desmarket import cli, plots
from desmarket.errors import DesmarketError, NoTradeError, OutputError
from desmarket.io import project_root

EXAMPLE = project_root() / "examples" / "three_homes"


def desmarket(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "desmarket", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "desmarket").is_file()


@pytest.mark.parametrize("command", [[], ["validate"], ["build-case"], ["run"]])
def test_help(command):
    done = desmarket(*command, "--help")
    assert done.returncode == 0 and "usage: desmarket" in done.stdout


def test_usage_error_is_exit_2():
    done = desmarket("run", EXAMPLE)  # --out missing
    assert done.returncode == 2 and "--out" in done.stderr


def test_validate_the_example():
    done = desmarket("validate", EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "valid: Case(3 homes, 1 scenario," in done.stdout


def _broken_copy(tmp_path) -> Path:
    bad = tmp_path / "bad_case"
    shutil.copytree(EXAMPLE, bad)
    (bad / "market.json").write_text("[1, 2]")
    return bad


def test_bad_case_is_one_line_and_exit_1(tmp_path):
    done = desmarket("validate", _broken_copy(tmp_path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "market.json" in done.stderr and "Fix:" in done.stderr


def test_run_writes_the_study_and_a_bad_case_writes_nothing(tmp_path):
    out = tmp_path / "out"
    done = desmarket("run", EXAMPLE, "--out", out, "--profit-rate", "0.3")
    assert done.returncode == 0, done.stderr
    assert "ΔC" in done.stdout
    for name in (
        "tables/table4_costs.csv",
        "tables/settlement.csv",
        "figures/figure3_net_load.png",
        "operation/market_prices.csv",
        "case/homes.csv",
    ):
        assert (out / name).is_file(), name
    assert dm.load_case(out / "case").home_ids == ("sunny", "shade", "store")
    nothing = tmp_path / "nothing"
    done = desmarket("run", _broken_copy(tmp_path), "--out", nothing)
    assert done.returncode == 1 and not nothing.exists()
    done = desmarket("run", EXAMPLE, "--out", nothing, "--profit-rate", "1.5")  # a usage error (argparse type)
    assert done.returncode == 2 and "profit-rate" in done.stderr and not nothing.exists()


def test_run_with_rules_writes_each_rules_settlement(capsys, tmp_path):
    """``--rule`` (repeatable) adds tables/settlement_rules.csv: per party and rule alpha, payment and gain, the
    same as dm.settle on the same clearing; the gains add up to Delta C and an unknown rule is a usage error."""
    import pandas as pd

    out = tmp_path / "out"
    code, err = _main(capsys, "run", EXAMPLE, "--out", out, "--rule", "standalone", "--rule", "synergy")
    assert code == 0, err
    table = pd.read_csv(out / "tables" / "settlement_rules.csv", index_col="party")
    case = dm.load_case(EXAMPLE)
    m1, market = dm.solve_independent(case), dm.clear_market(case)
    surplus = dm.cooperative_surplus(m1, market)
    assert list(table.index) == [*case.home_ids, "aggregator"]
    for rule in ("standalone", "synergy"):
        s = dm.settle(case, m1, market, 0.2, rule)
        assert table[f"gain_{rule}_usd"].to_numpy() == pytest.approx([*s.home_gain, s.aggregator_gain], abs=1e-4)
        assert table[f"alpha_{rule}"].sum() == pytest.approx(1.0, abs=1e-3)
        assert table[f"gain_{rule}_usd"].sum() == pytest.approx(surplus, abs=1e-3)
    assert not any(c.endswith("_equal") for c in table.columns)  # only the rules asked for
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", str(EXAMPLE), "--out", str(tmp_path / "x"), "--rule", "shapley"])
    assert exc.value.code == 2 and "--rule" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_build_case_and_its_bad_day(tmp_path):
    done = desmarket("build-case", tmp_path / "c", "--homes", "3", "--scenarios", "2", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert dm.load_case(tmp_path / "c").n_homes == 3
    done = desmarket("build-case", tmp_path / "d", "--date", "2017-03-12")
    assert done.returncode == 1 and "daylight-saving" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------------- output folders
def _main(capsys, *args):
    """``desmarket *args`` in this process: (exit code, stderr); stderr must be one line when the code is 1."""
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    if code == 1:
        lines = [line for line in err.splitlines() if line.startswith("desmarket ")]
        assert len(lines) == 1 and "Traceback" not in err, err
    return code, err


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    """Temporary siblings (``.<name>.partial-*``, ``.<name>.old-*``) left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def no_solving(monkeypatch):
    """Solving or building a case fails the test: the output folder must be checked before."""

    def fail(*args, **kwargs):
        raise AssertionError("solved although --out is unusable")

    monkeypatch.setattr(dm, "solve_independent", fail)
    monkeypatch.setattr(dm.data, "build_case", fail)


@pytest.fixture
def old_results(tmp_path) -> Path:
    old = tmp_path / "out"
    (old / "tables").mkdir(parents=True)
    (old / "tables" / "mine.csv").write_text("a,b\n1,2\n")
    return old


@pytest.mark.parametrize("command", ["run", "build-case"])
def test_a_non_empty_target_is_refused_before_solving(capsys, old_results, no_solving, command):
    before = _snapshot(old_results)
    args = ["run", EXAMPLE, "--out", old_results] if command == "run" else ["build-case", old_results]
    code, err = _main(capsys, *args)
    assert code == 1
    assert (
        f"desmarket {command}: error: {old_results} exists and is not empty; choose a new folder or pass "
        "--force to replace it"
    ) in err
    assert _snapshot(old_results) == before and _leftovers(old_results.parent) == []


def test_force_replaces_and_an_empty_folder_is_fine(capsys, tmp_path, old_results):
    code, err = _main(capsys, "run", EXAMPLE, "--out", old_results, "--force")
    assert code == 0, err
    assert not (old_results / "tables" / "mine.csv").exists()
    assert (old_results / "tables" / "table4_costs.csv").is_file() and _leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _main(capsys, "build-case", empty, "--homes", "2", "--scenarios", "1", "--force")
    assert code == 0, err
    assert dm.load_case(empty).n_homes == 2 and _leftovers(tmp_path) == []


def test_relative_out_is_under_the_working_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"rel_{os.getpid()}"
    code, err = _main(capsys, "run", EXAMPLE, "--out", Path(name) / "sub")
    assert code == 0, err
    assert (tmp_path / name / "sub" / "tables" / "table4_costs.csv").is_file()
    assert not (project_root() / name).exists()


def _full_disk_at_third(monkeypatch, exc):
    """The third figure written fails with ``exc``, after the tables and two figures were written."""
    save = plots.save_figure

    def save_figure(fig, path, close=False):
        if Path(path).name == "figure3_net_load.png":
            Path(path).write_bytes(b"half a png")
            raise exc(path)
        return save(fig, path, close)

    monkeypatch.setattr(plots, "save_figure", save_figure)


@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_write_leaves_nothing_and_the_old_folder_unchanged(capsys, tmp_path, monkeypatch, old_results, code_):
    _full_disk_at_third(monkeypatch, lambda path: OSError(code_, os.strerror(code_), str(path)))
    before = _snapshot(old_results)
    code, err = _main(capsys, "run", EXAMPLE, "--out", old_results, "--force")
    assert code == 1 and "Fix:" in err and f"cannot write {old_results / 'figures'}" in err  # the user's path
    assert {errno.ENOSPC: "disk is full", errno.EROFS: "read-only", errno.EACCES: "not writable"}[code_] in err
    assert _snapshot(old_results) == before and _leftovers(tmp_path) == []
    new = tmp_path / "new" / "deeper"
    code, err = _main(capsys, "run", EXAMPLE, "--out", new)
    assert code == 1 and not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


def test_ctrl_c_while_writing_leaves_nothing(capsys, tmp_path, monkeypatch):
    _full_disk_at_third(monkeypatch, lambda path: KeyboardInterrupt())
    code, err = _main(capsys, "run", EXAMPLE, "--out", tmp_path / "out")
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_parent_fails_before_solving(capsys, tmp_path, monkeypatch, no_solving):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(cli.tempfile, "mkdtemp", read_only)
    code, err = _main(capsys, "run", EXAMPLE, "--out", tmp_path / "out")
    assert code == 1 and f"cannot write {tmp_path / 'out'}" in err and "read-only" in err


@pytest.mark.parametrize("out", ["a_file", "a_file/sub", "x" * 300, "y/" + "x" * 300])
def test_unusable_paths_are_one_line(capsys, tmp_path, no_solving, out):
    (tmp_path / "a_file").write_text("keep me")
    code, err = _main(capsys, "run", EXAMPLE, "--out", tmp_path / out)
    assert code == 1 and "Fix:" in err and str(tmp_path) in err
    assert ("too long" if "x" * 300 in out else "is a file, not a folder") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and (tmp_path / "a_file").read_text() == "keep me"


def test_force_never_replaces_the_case_or_the_working_directory(capsys, tmp_path, monkeypatch, no_solving):
    case = tmp_path / "cases" / "mine"
    shutil.copytree(EXAMPLE, case)
    code, err = _main(capsys, "run", case, "--out", tmp_path / "cases", "--force")
    assert code == 1 and "the case" in err and (case / "homes.csv").is_file()
    monkeypatch.chdir(case)
    code, err = _main(capsys, "run", EXAMPLE, "--out", ".", "--force")
    assert code == 1 and "the current folder" in err and (case / "homes.csv").is_file()


def test_a_failed_swap_restores_the_old_folder(tmp_path, monkeypatch, old_results):
    before = _snapshot(old_results)
    rename, calls = os.rename, []

    def rename_fails_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        return rename(src, dst)

    with pytest.raises(OutputError) as caught, cli.OutputFolder(old_results, force=True) as folder:
        with folder.writing() as out:
            (out / "new.csv").write_text("new")
        monkeypatch.setattr(os, "rename", rename_fails_second)
        folder.commit()
    monkeypatch.undo()
    assert isinstance(caught.value, DesmarketError) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.EIO and str(old_results) in str(caught.value)
    assert _snapshot(old_results) == before and _leftovers(tmp_path) == []


def test_output_error_keeps_errno_and_names_the_users_file(tmp_path):
    staging, target = tmp_path / ".out.partial-x", tmp_path / "out"
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging / "tables" / "a.csv"))
    error = cli.output_error(target, exc, staging)
    assert error.errno == errno.ENOSPC and isinstance(error, OSError)
    assert str(error).startswith(f"cannot write {target / 'tables' / 'a.csv'}: ") and "disk is full" in str(error)


# ------------------------------------------------------------------------------------------------- usability
@pytest.mark.parametrize(
    "args, name",
    [
        (["build-case", "c", "--homes", "0"], "--homes"),
        (["build-case", "c", "--homes", "2.5"], "--homes"),
        (["build-case", "c", "--scenarios", "-1"], "--scenarios"),
        (["build-case", "c", "--seed", "-1"], "--seed"),
        (["build-case", "c", "--date", "2017-02-30"], "--date"),
        (["run", "c", "--out", "o", "--profit-rate", "1.5"], "--profit-rate"),
        (["run", "c", "--out", "o", "--profit-rate", "nan"], "--profit-rate"),
    ],
)
def test_bad_values_are_usage_errors(capsys, tmp_path, monkeypatch, args, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and f"error: argument {name}: must be" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command, defaults",
    [
        ("build-case", ["(default: 10)", "(default: 0)", "2017-06-13"]),
        ("run", ["(default: 0.2)", "(default: decomposed)"]),
    ],
)
def test_help_shows_the_defaults(capsys, command, defaults):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(d in text for d in defaults), text
    assert "--force" in text


def test_build_case_refuses_a_size_this_machine_cannot_hold(capsys, tmp_path, monkeypatch, no_solving):
    monkeypatch.setattr("desmarket.limits.available_bytes", lambda: 2 * 2**30)  # a 2 GiB machine
    code, err = _main(capsys, "build-case", tmp_path / "big", "--homes", "100000")
    assert code == 1 and "--homes" in err and "100000 homes x 10 scenarios" in err and "Fix:" in err
    assert list(tmp_path.iterdir()) == []


def test_counts_are_singular_for_one():
    assert cli._count(1, "table") == "1 table" and cli._count(2, "figure") == "2 figures"
    assert cli._count(0, "home") == "0 homes"


def test_no_trade_names_no_option_that_does_not_exist(capsys, tmp_path, monkeypatch):
    def no_trade(*args, **kwargs):
        raise NoTradeError("nobody trades; settle with rule='equal' (M2) instead")

    monkeypatch.setattr("desmarket.study.settled_study", no_trade)
    code, err = _main(capsys, "run", EXAMPLE, "--out", tmp_path / "out")
    assert code == 1 and "--rule" not in err and "desmarket.settle(" in err and str(EXAMPLE) in err
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_leaves_early_is_not_an_error():
    """`desmarket validate case | head -1`: the closed pipe is no error line and no traceback (exit 0)."""
    code = (
        "import sys, desmarket.cli as cli\n"
        "def validate(args):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
        "cli.validate = validate\n"
        f"sys.exit(cli.main(['validate', {str(EXAMPLE)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_run_in_two_stages_writes_the_position_and_the_stochastic_values(capsys, tmp_path):
    """``--stages 2``: M1 and the clearing of the day-ahead market (the settlement of the same), the day-ahead
    positions per hour and RP/WS/EV/EEV/VSS/EVPI as dm.stochastic_values gives them; the market process has no
    two-stage version (one line, exit 1, nothing written)."""
    import pandas as pd

    out = tmp_path / "out"
    code, err = _main(capsys, "run", EXAMPLE, "--out", out, "--stages", "2")
    assert code == 0, err
    case = dm.load_case(EXAMPLE)
    market = dm.clear_market(case, stages=2)
    m1 = dm.solve_independent(case, stages=2)
    positions = pd.read_csv(out / "tables" / "day_ahead.csv", index_col="hour")
    assert positions["market_buy_kw"].to_numpy() == pytest.approx(market.day_ahead["buy_kw"].to_numpy(), abs=1e-3)
    assert positions["m1_sell_kw"].to_numpy() == pytest.approx(m1.day_ahead["sell_kw"].to_numpy(), abs=1e-3)
    values = pd.read_csv(out / "tables" / "stochastic_value.csv", index_col="problem")
    expected = dm.stochastic_values(case)
    assert values.loc["market", "rp_usd"] == pytest.approx(expected.loc["market", "rp_usd"], abs=1e-3)
    assert values.loc["delta_c", "rp_usd"] == pytest.approx(dm.cooperative_surplus(m1, market), abs=1e-3)
    settlement = pd.read_csv(out / "tables" / "settlement.csv")
    assert len(settlement)  # settled on the two-stage results
    code, err = _main(capsys, "run", EXAMPLE, "--out", tmp_path / "x", "--stages", "2", "--method", "coordinated")
    assert code == 1 and "--stages 2 needs" in err and not (tmp_path / "x").exists()


def test_run_writes_what_the_notebooks_write(capsys, tmp_path):
    """One way to run a case: `desmarket run` on the reference run's case writes every table of notebooks 02-06
    byte for byte as the committed results hold them (report.study_tables and report.STUDY_TABLE_FORMATS)."""
    import filecmp

    from desmarket import report

    results = project_root() / "results"
    code, err = _main(capsys, "run", results / "case", "--out", tmp_path / "run")
    assert code == 0, err
    differ = [
        name
        for name in report.STUDY_TABLE_FORMATS
        if not filecmp.cmp(
            tmp_path / "run" / "tables" / f"{name}.csv", results / "tables" / f"{name}.csv", shallow=False
        )
    ]
    assert differ == []
