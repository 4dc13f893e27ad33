"""Solver failures on feasible cases (issue 17): the formulation PIQP cannot solve, the fallback to Clarabel,
infeasibility told by status (never by message), and the API edges of the engine (n_jobs, Coordination, no homes)."""

import dataclasses
import re

import cvxpy as cp
import numpy as np
import pytest

import desmarket as dm
from desmarket import coordinated, formulation, pieces
from desmarket.data import build_case
from desmarket.synthetic import random_case

T = dm.HOURS
pytestmark = pytest.mark.filterwarnings("ignore::desmarket.RoutingWarning")


def without_load(case: dm.Case, home: int) -> dm.Case:
    """The case with one home's load set to zero in every scenario and hour (its PV and battery kept)."""
    load = case.load.copy()
    load[home] = 0.0
    return dataclasses.replace(case, load=load)


#: Two-home cases with one home at zero load all day that PIQP called infeasible (issue 17), at 10 scenarios:
#: synthetic seeds 4, 6, 9 (clearing) and measured seeds 0, 9 (M1 or clearing).
ZERO_LOAD_CASES = {
    "synthetic-4": lambda: without_load(random_case(4, n_homes=2, n_scenarios=10), 1),
    "synthetic-6": lambda: without_load(random_case(6, n_homes=2, n_scenarios=10), 1),
    "synthetic-9": lambda: without_load(random_case(9, n_homes=2, n_scenarios=10), 1),
    "measured-0-home0": lambda: without_load(build_case(n_homes=2, n_scenarios=10, seed=0), 0),
    "measured-0-home1": lambda: without_load(build_case(n_homes=2, n_scenarios=10, seed=0), 1),
    "measured-9-home1": lambda: without_load(build_case(n_homes=2, n_scenarios=10, seed=9), 1),
}


def _agree_with_central(case, m1, market):
    ref_m1, ref = dm.solve_independent(case, method="central"), dm.clear_market(case, method="central")
    assert m1.home_cost == pytest.approx(ref_m1.home_cost, abs=1e-6)
    assert market.home_cost == pytest.approx(ref.home_cost, abs=1e-6)
    assert market.aggregator_revenue == pytest.approx(ref.aggregator_revenue, abs=1e-6)
    assert dm.cooperative_surplus(m1, market) == pytest.approx(dm.cooperative_surplus(ref_m1, ref), abs=1e-6)


# ------------------------------------------------------------------------- the formulation's cause
@pytest.mark.parametrize("name", ZERO_LOAD_CASES)
def test_a_home_without_load_solves_with_the_default_method(name):
    """Eq. 10 over a zero-load row (0 >= 0 over fixed variables) made PIQP say infeasible; it is left out
    where the bounds imply it, so PIQP itself solves the case (no fallback) and agrees with central."""
    case = ZERO_LOAD_CASES[name]()
    m1, market = dm.solve_independent(case, n_jobs=1), dm.clear_market(case, n_jobs=1)
    assert m1.solver == market.solver == "PIQP"
    _agree_with_central(case, m1, market)


def test_daily_minimum_is_left_out_only_where_the_bounds_imply_it():
    case = without_load(random_case(4, n_homes=3, n_scenarios=2), 1)
    block = formulation.case_block(case, np.arange(6))
    d = formulation.formulate(block, market=False)[1].d
    (constraint,) = formulation.daily_minimum(d, block)
    assert constraint.shape == (4,)  # rows 2, 3 (home 1) have no load: 4 of 6 rows keep Eq. 10
    full = formulation.case_block(random_case(4, n_homes=3, n_scenarios=2), np.arange(6))
    assert formulation.daily_minimum(d, full)[0].shape == (6,)
    assert formulation.daily_minimum(d, block._replace(load_min=block.load)) == []  # load_min_factor = 1


# ------------------------------------------------------------------------------------ the fallback
def _piqp_fails(monkeypatch, status="infeasible", message="PIQP returned status 'infeasible'"):
    """Make every PIQP solve of a piece fail with ``status``, as PIQP did on feasible pieces."""
    real = pieces.solve

    def flaky(problem, solver="CLARABEL", **options):
        if str(solver).upper() == "PIQP":
            error = dm.SolverError(message)
            error.status = status
            raise error
        return real(problem, solver, **options)

    monkeypatch.setattr(pieces, "solve", flaky)


def test_a_piece_piqp_fails_on_is_solved_by_clarabel(monkeypatch):
    case = random_case(11, n_homes=3, n_scenarios=4)
    _piqp_fails(monkeypatch)
    m1 = dm.solve_independent(case, n_jobs=1, chunk_rows=6)
    market = dm.clear_market(case, n_jobs=1, chunk_rows=6)
    assert m1.solver == "PIQP (CLARABEL for 2 of 2 pieces)"
    assert market.solver == "PIQP (CLARABEL for 2 of 2 pieces)"
    _agree_with_central(case, m1, market)


def test_the_old_formulation_falls_back_and_still_agrees(monkeypatch):
    """The real PIQP failure: Eq. 10 written over every row again (as before the fix); Clarabel solves it."""
    case = ZERO_LOAD_CASES["synthetic-4"]()
    monkeypatch.setattr(formulation, "daily_minimum", lambda d, block: [cp.sum(d, axis=1) >= block.load.sum(axis=1)])
    m1, market = dm.solve_independent(case, n_jobs=1), dm.clear_market(case, n_jobs=1)
    assert market.solver == "PIQP (CLARABEL for 1 of 1 pieces)"
    _agree_with_central(case, m1, market)


def infeasible_alone():
    """Home '1' needs 120 kWh a day behind a 4 kW connection (96 kWh) with a battery that must end where it
    started: infeasible, though every hourly and daily check of desmarket.feasibility passes. Home '2' is fine."""
    load = np.stack([np.full((1, T), 5.0), np.full((1, T), 1.0)])
    return dm.create_case(
        load,
        np.zeros((2, 1, T)),
        utility_a=-0.002,
        utility_b=0.3,
        lmp=np.full(T, 0.04),
        battery_kwh=13.5,
        battery_kw=5.0,
        grid_limit_kw=4.0,
    )


def test_a_really_infeasible_case_still_names_its_homes():
    with pytest.raises(dm.InfeasibleCaseError, match=r"cannot be served even alone \(M1\): \['1'\]"):
        dm.solve_independent(infeasible_alone(), n_jobs=1)


def test_infeasible_is_told_by_status_not_by_words(monkeypatch):
    """A failure whose message happens to say 'infeasible' but whose status does not is a SolverError, and not
    the user's infeasible case (the old test of str(exc) called it infeasible)."""

    def broken(problem, solver="CLARABEL", **options):
        error = dm.SolverError(f"{solver} failed (an infeasible-looking crash)")
        error.status = None
        raise error

    monkeypatch.setattr(pieces, "solve", broken)
    with pytest.raises(dm.SolverError, match="infeasible-looking") as err:
        dm.clear_market(random_case(0), n_jobs=1)
    assert not isinstance(err.value, dm.InfeasibleCaseError)


def test_an_inaccurate_fallback_is_retried_once_at_relaxed_tolerances_and_logged(monkeypatch, caplog):
    """PIQP fails; Clarabel ends 'optimal_inaccurate' at its default tolerances (as it did on the degenerate EEV
    piece of a one-scenario case before TWO_STAGE_OPTIONS let PIQP solve it) and is retried at RELAXED_OPTIONS."""
    from desmarket import model

    calls = []

    def flaky(problem, solver="CLARABEL", **options):
        calls.append((str(solver).upper(), options))
        if str(solver).upper() == "PIQP" or options != pieces.RELAXED_OPTIONS:
            raise dm.SolverError(f"{solver} stalled", status="optimal_inaccurate")
        return model.solve(problem, solver, **options)

    monkeypatch.setattr(pieces, "solve", flaky)
    problem, _ = model.build_clearing(random_case(2, n_homes=2, n_scenarios=1))
    with caplog.at_level("WARNING"):
        assert pieces.solve_with_fallback(problem, "PIQP") == 1
    assert problem.status == "optimal"
    assert [solver for solver, _ in calls] == ["PIQP", "CLARABEL", "CLARABEL"]
    assert "solved at" in caplog.text
    calls.clear()
    with pytest.raises(dm.SolverError, match="stalled"):  # an explicit Clarabel option set gets no retry
        pieces.solve_with_fallback(problem, "CLARABEL", {"tol_feas": 1e-12})
    assert len(calls) == 1


def test_solver_errors_carry_their_status_through_pickling():
    import pickle

    case = infeasible_alone().select(["1"])
    with pytest.raises(dm.SolverError) as err:
        dm.model.central_independent(case)
    assert err.value.status == "infeasible"
    assert pickle.loads(pickle.dumps(err.value)).status == "infeasible"


# -------------------------------------------------------------------------- the home controllers
class FailingFirst:
    """Wraps a piqp solver: its first ``failures`` solves report primal infeasibility, as PIQP did on a feasible
    response of a 30-home case (scripts/bench.py --homes 30)."""

    def __init__(self, solver, failures=1):
        import piqp

        self.solver, self.failures, self.infeasible = solver, failures, piqp.PIQP_PRIMAL_INFEASIBLE

    def update(self, **kw):
        self.solver.update(**kw)

    def solve(self):
        if self.failures:
            self.failures -= 1
            return self.infeasible
        return self.solver.solve()

    @property
    def result(self):
        return self.solver.result


def test_home_controller_falls_back_to_clarabel():
    case = random_case(12, n_homes=3, n_scenarios=2)
    home = formulation.case_block(case, np.arange(2))
    direct = coordinated.HomeController(home, "PIQP")
    direct._piqp["solver"] = FailingFirst(direct._piqp["solver"])
    reference = coordinated.HomeController(home, "CLARABEL", direct=False)
    rng = np.random.default_rng(1)
    for _ in range(2):  # the failed response, then PIQP again
        price = case.buy_price * (1 + 0.2 * rng.standard_normal((2, T)))
        previous, rho = rng.standard_normal((2, T)), 0.01
        a, b = direct.respond(price, previous, rho), reference.respond(price, previous, rho)
        for key in b:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert direct.fallbacks == 1


def test_a_real_piqp_failure_of_a_home_response_is_solved():
    """The state at which PIQP called home 14 of the bench's 30-home case infeasible (iteration 4): the cvxpy
    PIQP controller fails there too; with the fallback it answers as a Clarabel controller does."""
    case = random_case(0, n_homes=30, n_scenarios=10)
    states = []
    with pytest.raises(dm.NotConvergedError):
        coordinated.coordinate(
            case, dm.Coordination(tol_residual=1e-3, tol_price=1e-5, max_iterations=3), n_jobs=1, callback=states.append
        )
    state, s = states[-1], case.n_scenarios
    home = formulation.case_block(case, np.arange(14 * s, 15 * s), dm.model.trade_limits(case))
    args = (state.announcement(), state.trades[14], state.rho)
    via_piqp = coordinated.HomeController(home, "PIQP", direct=False).respond(*args)
    via_clarabel = coordinated.HomeController(home, "CLARABEL", direct=False).respond(*args)
    assert via_piqp["x"] == pytest.approx(via_clarabel["x"], abs=1e-6)


def test_the_coordinated_process_records_its_fallbacks(monkeypatch):
    case = random_case(400, n_homes=4, n_scenarios=2)
    real = coordinated.HomeController._fast
    first = []

    def compile_with_one_failure(self, data, offsets):
        fast = real(self, data, offsets)
        if not first:  # the first home's first response fails
            first.append(True)
            fast["solver"] = FailingFirst(fast["solver"])
        return fast

    monkeypatch.setattr(coordinated.HomeController, "_fast", compile_with_one_failure)
    co = dm.clear_market(case, method="coordinated", n_jobs=1)
    assert co.solver == f"PIQP (CLARABEL for 1 of {4 * len(co.convergence)} home responses)"
    ref = dm.clear_market(case, method="central")
    assert co.home_cost == pytest.approx(ref.home_cost, abs=1e-3)


# ------------------------------------------------------------------------------------- API edges
@pytest.mark.parametrize("count", [1, 4])  # one piece (task), and several
@pytest.mark.parametrize("bad", [0, -(pieces.cpu_count() + 1), -50, 1.5, 2.0, True, False, "2"])
def test_n_jobs_has_one_rule_whatever_the_number_of_pieces(bad, count):
    case = random_case(0)  # 4 homes x 2 scenarios: 8 rows
    for solve in (dm.solve_independent, dm.clear_market):
        with pytest.raises(ValueError, match=r"^n_jobs must be None, a positive integer"):
            solve(case, n_jobs=bad, chunk_rows=8 // count)
    with pytest.raises(ValueError, match=r"^coordinated_jobs must be"):
        dm.clear_market(case, method="coordinated", coordinated_jobs=bad)
    with pytest.raises(ValueError, match=r"^n_jobs must be"):
        pieces.map_chunks(len, [[1]] * count, n_jobs=bad)
    with pytest.raises(ValueError, match=r"^n_jobs must be"):
        pieces.run_tasks(abs, [(-1,)] * count, bad)


@pytest.mark.parametrize("good", [None, 1, 2, -1, -pieces.cpu_count(), np.int64(1)])
def test_good_n_jobs_are_accepted(good):
    assert pieces.run_tasks(abs, [(-1,), (-2,)], good) == [1, 2]
    assert pieces.worker_count(good) >= 1


@pytest.mark.parametrize(
    "settings",
    [
        {"rho": np.float32(0.002)},
        {"rho": np.float64(0.002)},
        {"tol_residual": np.float16(1e-3)},
        {"rho": 1},
        {"max_iterations": np.int64(50)},
        {"max_iterations": np.int32(5)},
        {"balance": np.int64(10)},
    ],
)
def test_coordination_accepts_numpy_scalars(settings):
    accepted = dm.Coordination(**settings)
    for key, value in settings.items():
        assert getattr(accepted, key) == value and type(getattr(accepted, key)) in (int, float)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_iterations", True),
        ("max_iterations", 2.0),
        ("max_iterations", np.float64(3)),
        ("max_iterations", 0),
        ("rho", True),
        ("rho", "0.1"),
        ("rho", np.inf),
        ("tol_price", np.float32(-1)),
        ("balance", 0),
        ("tol_residual", None),
    ],
)
def test_coordination_rejects_bools_and_non_numbers_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"^Coordination\.{field} must be .*, got {re.escape(repr(value))}$"):
        dm.Coordination(**{field: value})


def test_a_case_without_homes_is_one_clear_error(method):
    case = random_case(0)
    empty = dataclasses.replace(case, homes=case.homes.iloc[:0], load=case.load[:0], pv=case.pv[:0])
    for solve in (dm.solve_independent, dm.clear_market):
        with pytest.raises(dm.CaseError, match="no homes"):
            solve(empty, method=method)


# ---------------------------------------------------------------------------------- scripts/bench.py
@pytest.fixture(scope="module")
def bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
    spec = importlib.util.spec_from_file_location("bench_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_child_reports_a_failure_as_a_row(bench, capsys):
    assert bench.child_run(3, 2, "magic", 0) == 1
    row = bench._last_json(capsys.readouterr().out)
    assert row["error"].startswith("ValueError: unknown method 'magic'")


def test_bench_prints_each_row_and_keeps_them_when_one_fails(bench, monkeypatch, capsys):
    def fake(homes, scenarios, method, seed):
        if method == "coordinated":
            return {
                "homes": homes,
                "scenarios": scenarios,
                "method": method,
                "error": "SolverError: boom",
                "peak_memory_gib": 0.1,
            }
        return {
            "homes": homes,
            "scenarios": scenarios,
            "method": method,
            "m1_s": 1.0,
            "clearing_s": 2.0,
            "solver": "PIQP",
            "iterations": float("nan"),
            "surplus_usd": 4.5,
            "peak_memory_gib": 0.2,
        }

    monkeypatch.setattr(bench, "measured", fake)
    monkeypatch.setattr("sys.argv", ["bench.py", "--homes", "30", "--methods", "central", "coordinated", "decomposed"])
    bench.main()
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("3 runs; expected: ")
    assert "coordinated ... FAILED: SolverError: boom" in out
    assert "decomposed ... 3.0 s (M1 1.0 s, clearing 2.0 s)" in out  # the run after the failure still ran
    table = out.split("coordinated settings in the bench")[1]
    assert "boom" in table and table.count("PIQP") == 2 and "central / decomposed = 1.0x" in out


def test_a_solver_cvxpy_does_not_have_is_not_replaced_by_the_fallback():
    for solve in (dm.solve_independent, dm.clear_market):
        with pytest.raises(dm.SolverError, match="NOT_A_SOLVER"):
            solve(random_case(0), solver="NOT_A_SOLVER", n_jobs=1)
    with pytest.raises(dm.SolverError, match="NOT_A_SOLVER"):
        dm.clear_market(random_case(0), method="coordinated", solver="NOT_A_SOLVER")
