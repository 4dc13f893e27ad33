"""`make reproduce` parameters: validated before anything is written; the run folder stays in results/runs/."""

import importlib.util

import pytest

from desmarket.io import project_root

spec = importlib.util.spec_from_file_location("reproduce", project_root() / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


@pytest.mark.parametrize("argv", [
    ["--date", "../../../../elsewhere"], ["--date", "2017-6-13"], ["--date", "2017-02-30"], ["--homes", "0"],
    ["--homes", "-3"], ["--homes", "ten"], ["--scenarios", "1.5"], ["--profit-rate", "1.2"],
    ["--profit-rate", "nan"], ["--seed", "-1"], ["--shapley-samples", "1"], ["--shapley-samples", "x"],
])
def test_bad_parameters_stop_before_anything_is_written(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.parse(argv)
    assert exc.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_good_parameters_give_a_tag_inside_results_runs():
    args = reproduce.parse(["--homes", "5", "--date", " 2017-06-13", "--profit-rate", "0.3", "--seed", "0"])
    assert args == {"n_homes": 5, "date": "2017-06-13", "profit_rate": 0.3, "seed": 0}
    run_dir = reproduce.run_folder(args)
    assert run_dir == "results/runs/date-2017-06-13_n_homes-5_profit_rate-0.3_seed-0"
    with pytest.raises(SystemExit, match="leave results/runs"):
        reproduce.run_folder({"date": "../x"})
    assert reproduce.parse(["--homes", "100", "--shapley-samples", "16"]) == {"n_homes": 100, "shapley_samples": 16}


@pytest.mark.parametrize("date", ["2017-03-12", "2016-11-06", "2030-01-01"])
def test_days_the_data_cannot_serve_are_refused_up_front(date):
    """Daylight-saving days (23 or 25 local hours) and days outside the data stop before anything is written."""
    with pytest.raises(SystemExit, match="argument --date: .*(daylight-saving|not in the data)"):
        reproduce.check_data({"date": date})
    reproduce.check_data({"date": "2017-03-13"})  # the next day is fine


def test_a_case_runs_in_its_own_folder_and_a_bad_one_stops_first(tmp_path, capsys):
    example = project_root() / "examples" / "three_homes"
    args = reproduce.parse(["--case", str(example), "--profit-rate", "0.3"])
    reproduce.check_case(args)
    assert args["case_dir"] == str(example.resolve())
    assert reproduce.run_folder(args) == "results/runs/three_homes_profit_rate-0.3"
    with pytest.raises(SystemExit) as exc:
        reproduce.parse(["--case", str(example), "--homes", "5"])
    assert exc.value.code == 2 and "n_homes do not apply" in capsys.readouterr().err
    bad = tmp_path / "my case!"
    bad.mkdir()
    for f in example.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    assert reproduce.run_folder({"case_dir": str(bad)}) == "results/runs/my_case_"
    (bad / "homes.csv").write_text("home,utility_a\nx,1\n")
    with pytest.raises(SystemExit) as exc:
        reproduce.check_case({"case_dir": str(bad)})
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "homes.csv" in err
