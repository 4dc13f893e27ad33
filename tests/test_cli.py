"""The command line, run as a user runs it (a subprocess): exit codes 0 / 1 (one clear line) / 2 (usage)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import desmarket as dm
from desmarket.io import project_root

EXAMPLE = project_root() / "examples" / "three_homes"


def desmarket(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "desmarket", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


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
    assert "valid: Case(3 homes, 1 scenarios" in done.stdout


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
    for name in ("tables/table4_costs.csv", "tables/settlement.csv", "figures/figure3_net_load.png",
                 "operation/market_prices.csv", "case/homes.csv"):
        assert (out / name).is_file(), name
    assert dm.load_case(out / "case").home_ids == ("sunny", "shade", "store")
    nothing = tmp_path / "nothing"
    done = desmarket("run", _broken_copy(tmp_path), "--out", nothing)
    assert done.returncode == 1 and not nothing.exists()
    done = desmarket("run", EXAMPLE, "--out", nothing, "--profit-rate", "1.5")
    assert done.returncode == 1 and "profit-rate" in done.stderr and not nothing.exists()


def test_build_case_and_its_bad_day(tmp_path):
    done = desmarket("build-case", tmp_path / "c", "--homes", "3", "--scenarios", "2", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert dm.load_case(tmp_path / "c").n_homes == 3
    done = desmarket("build-case", tmp_path / "d", "--date", "2017-03-12")
    assert done.returncode == 1 and "daylight-saving" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()
