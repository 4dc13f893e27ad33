"""`make reproduce` parameters: validated before anything is written; the run folder stays in results/runs/."""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import numpy as np
import pytest

import desmarket as dm
from desmarket import limits
from desmarket.io import project_root
from desmarket.synthetic import infeasible_case

spec = importlib.util.spec_from_file_location("reproduce", project_root() / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


@pytest.mark.parametrize(
    "argv",
    [
        ["--date", "../../../../elsewhere"],
        ["--date", "2017-6-13"],
        ["--date", "2017-02-30"],
        ["--homes", "0"],
        ["--homes", "-3"],
        ["--homes", "ten"],
        ["--scenarios", "1.5"],
        ["--profit-rate", "1.2"],
        ["--profit-rate", "nan"],
        ["--seed", "-1"],
        ["--shapley-samples", "1"],
        ["--shapley-samples", "x"],
    ],
)
def test_bad_parameters_stop_before_anything_is_written(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err and err.count("\n") == 1  # one line, no usage block


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
    assert reproduce.run_folder(args) == f"results/runs/{reproduce.case_tag(example)}_profit_rate-0.3"
    assert re.fullmatch(r"three_homes-[0-9a-f]{8}", reproduce.case_tag(example))
    with pytest.raises(SystemExit) as exc:
        reproduce.parse(["--case", str(example), "--homes", "5"])
    assert exc.value.code == 2 and "n_homes do not apply" in capsys.readouterr().err
    bad = tmp_path / "my case!"
    bad.mkdir()
    for f in example.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    assert re.fullmatch(r"results/runs/my_case_-[0-9a-f]{8}", reproduce.run_folder({"case_dir": str(bad)}))
    (bad / "homes.csv").write_text("home,utility_a\nx,1\n")
    with pytest.raises(SystemExit) as exc:
        reproduce.check_case({"case_dir": str(bad)})
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "homes.csv" in err


# --- issue 17, round 3: run folders, pre-flight, sizes, failures, signals, make quoting -----------------------

ROOT = project_root()
T = 24


def test_cases_named_alike_get_their_own_run_folders(tmp_path):
    """site1/case and site2/case, 'my case' and 'my_case': one folder each (the second deleted the first)."""
    dirs = [tmp_path / "site1" / "case", tmp_path / "site2" / "case", tmp_path / "my case", tmp_path / "my_case"]
    folders = {reproduce.run_folder({"case_dir": str(d)}) for d in dirs}
    assert len(folders) == len(dirs)
    assert reproduce.run_folder({"case_dir": str(dirs[0])}) == reproduce.run_folder({"case_dir": str(dirs[0])})


def test_a_case_inside_the_run_folder_it_replaces_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(tmp_path))
    run_dir = "results/runs/x"
    with pytest.raises(SystemExit, match=r"inside the run folder .*results/runs/x/ that this run replaces; copy"):
        reproduce.check_location({"case_dir": str(tmp_path / run_dir / "case")}, run_dir)
    reproduce.check_location({"case_dir": str(tmp_path / "elsewhere")}, run_dir)


def _no_notebook(*args, **kwargs):
    raise AssertionError("no notebook may run")


def _identical_homes(path):
    load, pv = np.full((3, 1, T), 1.0), np.zeros((3, 1, T))
    pv[:, :, 10:15] = 3.0
    dm.create_case(load, pv, utility_a=-0.002, utility_b=0.3, lmp=np.full(T, 0.04)).save(path)


def _infeasible(path):
    infeasible_case(1).save(path)


@pytest.mark.parametrize(
    "make_case, reason", [(_identical_homes, "NoTradeError"), (_infeasible, "InfeasibleCaseError")]
)
def test_a_case_the_chain_cannot_run_is_refused_before_notebook_01(make_case, reason, tmp_path, monkeypatch):
    """It passed `desmarket validate` and died in notebook 06 (or 03) as a 60-line papermill traceback."""
    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.setattr(reproduce, "run_notebook", _no_notebook)
    make_case(tmp_path / "case")
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--case", str(tmp_path / "case")])
    message = str(exc.value.code)
    assert f"cannot run on the case {tmp_path / 'case'}: {reason}: " in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_one_home_is_refused_before_notebook_01(tmp_path, monkeypatch):
    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setattr(reproduce, "run_notebook", _no_notebook)
    with pytest.raises(
        SystemExit,
        match=r"cannot run on 1 home x 2 scenarios of 2017-06-13 \(seed 0\): "
        r"NoTradeError: no home's trades",
    ):
        reproduce.main(["--homes", "1", "--scenarios", "2"])
    assert not any(tmp_path.iterdir())


def test_the_memory_estimate_refuses_what_this_machine_cannot_hold(tmp_path, monkeypatch):
    gb = 10**9
    assert (
        limits.estimate_memory_bytes(200, 10)
        > limits.estimate_memory_bytes(100, 10)
        > limits.estimate_memory_bytes(100, 1)
    )
    # measured 3.3 GiB for 1,000 homes x 10 scenarios (limits docstring): the estimate stays above it
    assert limits.estimate_memory_bytes(1000, 10) > 3337 * 2**20
    limits.check_size(10, 10, available=2 * gb)
    with pytest.raises(
        dm.CaseError,
        match=r"--homes: 100000 homes x 10 scenarios need about 525\.4 GB .* "
        r"16\.0 GB available\. Fix: use at most about \d+ homes .*dask",
    ):
        limits.check_size(100_000, 10, available=16 * gb)
    monkeypatch.setattr(limits, "available_bytes", lambda: 16 * gb)
    monkeypatch.setattr(reproduce, "run_notebook", _no_notebook)
    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=r"cannot run on 100000 homes x 10 scenarios .*CaseError: .*525\.4 GB"):
        reproduce.main(["--homes", "100000"])
    assert time.perf_counter() - t0 < 10  # refused before the case is built
    assert not any(tmp_path.iterdir())


def _notebook(path, *lines):
    """A small notebook of the chain's shape: a parameters cell (run_dir) and one code cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('run_dir = "results"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("\n".join(lines))]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _writes(name):
    return (
        "from desmarket import io",
        f"(io.run_paths(run_dir).tables / '{name}.csv').write_text('new\\n')",
        "print('wrote', run_dir)",
    )


def test_a_failing_notebook_is_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys):
    """Real papermill on two small notebooks: the chain runs in a staging folder; the first notebook's files
    never reach the run folder, the earlier run stays, the failed notebook is kept; one line, exit 1."""
    out = tmp_path / "out"
    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(out))
    nbs = [
        _notebook(tmp_path / "nb" / "01_ok.ipynb", *_writes("ok")),
        _notebook(
            tmp_path / "nb" / "02_boom.ipynb",
            "import desmarket as dm",
            "raise dm.NoTradeError('nobody trades\\nat all')",
        ),
    ]
    monkeypatch.setattr(reproduce, "NOTEBOOKS", nbs)
    monkeypatch.setattr(reproduce, "preflight", lambda args, case=None: None)
    earlier = out / "results" / "runs" / "n_homes-3"
    (earlier / "tables").mkdir(parents=True)
    (earlier / "tables" / "old.csv").write_text("old\n")
    assert reproduce.main(["--homes", "3"]) == 1
    err = capsys.readouterr().err.strip()
    kept = out / "results" / "runs" / "n_homes-3.failed.ipynb"
    assert (
        err == f"failed: 02_boom.ipynb: NoTradeError: nobody trades at all (In [3]); nothing was changed; "
        f"the failed notebook is kept in {kept}"
    )
    assert sorted(p.name for p in earlier.rglob("*")) == ["old.csv", "tables"]
    assert kept.exists() and not list((out / "results" / "runs").glob(".staging-*"))


def test_the_reference_run_moves_results_and_notebooks_into_place_when_all_succeeded(tmp_path, monkeypatch):
    """Executed into staging (DESMARKET_OUTPUT_ROOT reaches the kernel), then moved: the notebook is rewritten in
    place with papermill's paths as the final ones; files of results/ the chain does not write stay."""
    out = tmp_path / "out"
    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(out))
    nb = _notebook(tmp_path / "notebooks" / "01_ok.ipynb", *_writes("ok"))
    monkeypatch.setattr(reproduce, "NOTEBOOKS", [nb])
    monkeypatch.setattr(reproduce, "refresh_readme", lambda: None)
    (out / "results" / "tables").mkdir(parents=True)
    (out / "results" / "tables" / "other.csv").write_text("kept\n")
    assert reproduce.main([]) == 0
    assert (out / "results" / "tables" / "ok.csv").read_text() == "new\n"
    assert (out / "results" / "tables" / "other.csv").read_text() == "kept\n"
    executed = nbformat.read(nb, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "wrote results\n"  # run_dir as given: paths stay relative
    assert executed.metadata.papermill["output_path"] == executed.metadata.papermill["input_path"] == str(nb)
    assert not list((out / "results" / "runs").glob(".staging-*"))


DRIVER = """
import importlib.util, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("reproduce", sys.argv[1])
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)
ready, notebooks = Path(sys.argv[2]), [Path(p) for p in sys.argv[3].split(",")]

def half_executed(nb, target, parameters, progress):  # writes as papermill does, then hangs in the second
    from desmarket import io
    (io.run_paths(parameters["run_dir"]).tables / (nb.stem + ".csv")).write_text("new\\n")
    target.write_bytes(nb.read_bytes())
    if nb == notebooks[-1]:
        target.write_text("half")
        ready.touch()
        time.sleep(60)

reproduce.NOTEBOOKS, reproduce.run_notebook = notebooks, half_executed
reproduce.preflight = lambda args, case=None: None
sys.exit(reproduce.main(sys.argv[4:]))
"""


@pytest.mark.parametrize(
    "signum, argv",
    [(signal.SIGTERM, ["--homes", "3"]), (signal.SIGINT, [])],
    ids=["SIGTERM-parameterised", "SIGINT-reference"],
)
def test_a_signal_leaves_everything_as_it_was_and_says_so_in_one_line(signum, argv, tmp_path):
    """SIGTERM (timeout, cancelled CI) and Ctrl-C take one path: staging removed, earlier results, run folder
    and notebooks untouched, no <tag>.previous, one line, exit 128 + signal."""
    out = tmp_path / "out"
    nbs = [_notebook(tmp_path / "notebooks" / f"0{i}_nb.ipynb", "pass") for i in (1, 2)]
    before = {p: p.read_bytes() for p in nbs}
    folder = out / ("results" if not argv else "results/runs/n_homes-3")
    (folder / "tables").mkdir(parents=True)
    (folder / "tables" / "01_nb.csv").write_text("old\n")
    (tmp_path / "driver.py").write_text(DRIVER)
    ready = tmp_path / "ready"
    env = {**os.environ, "DESMARKET_OUTPUT_ROOT": str(out)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "driver.py"),
            str(ROOT / "scripts" / "reproduce.py"),
            str(ready),
            ",".join(map(str, nbs)),
            *argv,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert (
        err.strip() == f"interrupted: nothing was changed; {signum.name} during 02_nb.ipynb, "
        f"{folder}/ and the notebooks are as before"
    )
    assert {p: p.read_bytes() for p in nbs} == before
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["tables/01_nb.csv"]
    assert (folder / "tables" / "01_nb.csv").read_text() == "old\n"
    assert not list((out / "results" / "runs").glob(".*")) and not list(folder.parent.glob("*.previous"))


def _stamp_is_current() -> bool:
    return (
        shutil.which("make") is not None
        and subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True).returncode == 0
    )


@pytest.mark.skipif(not _stamp_is_current(), reason="make reproduce would set up .venv first")
@pytest.mark.parametrize(
    "variables, code, line",
    [
        (
            {"HOMES": "3;touch {x}", "DATE": "`touch {x}`"},
            2,
            "reproduce.py: error: argument --homes: must be a positive whole number, got '3;touch {x}'",
        ),
        (
            {"SEED": "$(shell touch {x})"},
            2,
            "reproduce.py: error: argument --seed: must be a whole number >= 0, got '$(shell touch {x})'",
        ),
        ({"CASE": "{tmp}/site (2023)"}, 1, "reproduce.py: the case {tmp}/site (2023) is not valid: "),
        (
            {"PRICES": "ercot-2023"},
            1,
            "reproduce.py: error: argument --prices: prices: 'ercot-2023' is not a price source",
        ),
    ],
    ids=["semicolon-backquotes", "make-function", "parentheses", "prices"],
)
def test_make_variables_reach_the_script_as_one_value(variables, code, line, tmp_path):
    """Through real make: no value runs a command or splits; each gives the script's own one-line error."""
    x = tmp_path / "x"
    settings = [f"{k}={v.format(x=x, tmp=tmp_path)}" for k, v in variables.items()]
    env = {**os.environ, "DESMARKET_OUTPUT_ROOT": str(tmp_path / "out")}
    result = subprocess.run(
        ["make", "--no-print-directory", "reproduce", *settings],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ours = [s for s in result.stderr.splitlines() if s.startswith("reproduce.py")]
    assert len(ours) == 1 and ours[0].startswith(line.format(x=x, tmp=tmp_path)), result.stderr
    assert "[Makefile:" in result.stderr and f"reproduce] Error {code}" in result.stderr  # the script's status
    assert "Traceback" not in result.stderr and not x.exists() and not (tmp_path / "out").exists()


# --- issue 19: the price source is one parameter (PRICES=, --prices; notebooks 01 and 09) --------------------------


def test_prices_is_a_parameter_with_its_own_tag(tmp_path):
    args = reproduce.parse(["--prices", "ercot-2021", "--date", "2017-02-14", "--homes", "3"])
    assert args == {"prices": "ercot-2021", "date": "2017-02-14", "n_homes": 3}
    assert reproduce.run_folder(args) == "results/runs/date-2017-02-14_n_homes-3_prices-ercot-2021"
    assert reproduce.env_argv({"REPRODUCE_PRICES": "pjm-like"}) == ["--prices", "pjm-like"]
    export = tmp_path / "my prices (2025).csv"
    export.write_text("x\n")
    args = reproduce.parse(["--prices", str(export)])
    assert args["prices"] == str(export.resolve())  # absolute: the notebooks run in notebooks/
    tag = reproduce.run_folder(args)
    assert re.fullmatch(r"results/runs/prices-my_prices__2025_-[0-9a-f]{8}", tag), tag
    other = tmp_path / "b" / export.name
    other.parent.mkdir()
    other.write_text("x\n")
    assert reproduce.run_folder(reproduce.parse(["--prices", str(other)])) != tag


def test_a_bad_price_source_or_price_day_stops_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.check_data(reproduce.parse(["--prices", "ercot-2023"]))
    line = str(exc.value.code)
    assert line.startswith("reproduce.py: error: argument --prices: prices: 'ercot-2023' is not a price source")
    assert "ercot-2022 (the default), ercot-2021, pjm-like" in line and "\n" not in line
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match=r"argument --prices: .*bad\.csv: is not a da_hrl_lmps"):
        reproduce.check_data(reproduce.parse(["--prices", str(bad)]))
    reproduce.check_data(reproduce.parse(["--prices", "ercot-2021", "--date", "2017-02-14"]))  # the storm: fine
    example = project_root() / "examples" / "three_homes"
    with pytest.raises(SystemExit) as exc:
        reproduce.parse(["--case", str(example), "--prices", "pjm-like"])
    assert exc.value.code == 2 and "prices do not apply" in capsys.readouterr().err


def test_notebooks_01_and_09_take_the_runs_parameters():
    """reproduce.py passes a notebook only the parameters it declares: 09 must declare the run's homes, seed,
    price source, day and case; the default source is the library's one constant (empty = DEFAULT_PRICES)."""
    import papermill as pm

    from desmarket.data import DEFAULT_PRICES

    first = pm.inspect_notebook(str(ROOT / "notebooks" / "01_data_prep.ipynb"))
    ninth = pm.inspect_notebook(str(ROOT / "notebooks" / "09_beyond_one_day.ipynb"))
    assert {"prices", "n_homes", "seed", "date", "case_dir"} <= set(first) & set(ninth)
    assert first["prices"]["default"] == ninth["prices"]["default"] == '""' and DEFAULT_PRICES == "ercot-2022"
    assert reproduce.notebook_defaults()["prices"] == ""


def test_notebook_09_on_a_case_of_ones_own_skips_the_year_in_one_line(tmp_path, monkeypatch):
    """Real papermill: with case_dir, one line says the year study needs the measured homes, nothing is written
    for the year, and the notebook completes (its size study, kept small here, runs on the measured homes)."""
    import papermill as pm

    monkeypatch.setenv("DESMARKET_OUTPUT_ROOT", str(tmp_path / "out"))
    nb = ROOT / "notebooks" / "09_beyond_one_day.ipynb"
    target = tmp_path / "09.ipynb"
    example = project_root() / "examples" / "three_homes"
    pm.execute_notebook(
        str(nb),
        str(target),
        cwd=str(nb.parent),
        kernel_name="python3",
        progress_bar=False,
        parameters={
            "run_dir": "results/runs/x",
            "case_dir": str(example),
            "size_homes": "3",
            "size_seeds": 1,
            "size_scenarios": 2,
        },
        extra_arguments=reproduce.QUIET_KERNEL,
        shutdown_kernel="immediate",
    )
    text = [
        o.get("text", "") for c in nbformat.read(target, as_version=4).cells if c.cell_type == "code" for o in c.outputs
    ]
    skipped = [t for t in text if t.startswith("year study skipped")]
    assert skipped == [
        (f"year study skipped: it needs the measured homes, and {example} is a case of its own (no year tables)\n")
    ]
    tables = sorted(p.name for p in (tmp_path / "out" / "results" / "runs" / "x" / "tables").iterdir())
    assert tables == ["horizon.csv", "size_study.csv", "size_summary.csv", "size_timings.csv"]  # horizon: any case


def test_printed_text_is_one_output_however_the_kernel_chunked_it():
    """A rerun under load split one cell's printed lines into two stream outputs: not byte-identical."""
    stream = lambda name, text: nbformat.v4.new_output("stream", name=name, text=text)
    chunks = [stream("stdout", "a\n"), stream("stdout", "b\n"), stream("stderr", "w\n"), stream("stdout", "c\n")]
    figure = nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"})
    merged = reproduce.merged_streams([*chunks, figure, stream("stdout", "d\n")])
    assert [(o.get("name"), o.get("text")) for o in merged] == [
        ("stdout", "a\nb\n"),
        ("stderr", "w\n"),
        ("stdout", "c\n"),
        (None, None),
        ("stdout", "d\n"),
    ]
