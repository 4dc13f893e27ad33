"""The solving methods: decomposed and coordinated against central, congestion, parallel backends, privacy."""

import numpy as np
import pytest
from joblib import parallel_config

import desmarket as dm
from desmarket import coordinated, engine, formulation, pieces
from desmarket.synthetic import infeasible_case, random_case

T = dm.HOURS
# congested cases book some flows pro rata above a limit (MODEL.md tie-break); that is tested in test_model.py
pytestmark = pytest.mark.filterwarnings("ignore::desmarket.RoutingWarning")


def congested_case(seed: int, limit: float = 2.5):
    """A random community behind tight connections: grid and trade limits bind in some hours."""
    return random_case(seed, n_homes=4, n_scenarios=2).replace(grid_limit_kw=limit)


def heavy_pair():
    """Two homes with 9 kW of load and no PV behind 10 kW connections: the connections bind (scarcity price)."""
    return dm.create_case(
        np.full((2, 1, T), 9.0),
        np.zeros((2, 1, T)),
        utility_a=-0.003,
        utility_b=0.45,
        lmp=0.04 + 0.02 * np.sin(np.arange(T) / 4),
    )


def _agree(case, method, *, surplus_rel, trade_limit=None):
    """Method against central: per-home costs 1e-3 $, pinned prices 1e-4 $/kWh, Delta C to ``surplus_rel``."""
    ref_m1 = dm.solve_independent(case, method="central")
    ref = dm.clear_market(case, method="central", trade_limit=trade_limit)
    m1 = dm.solve_independent(case, method=method)
    mk = dm.clear_market(case, method=method, trade_limit=trade_limit)
    assert m1.home_cost == pytest.approx(ref_m1.home_cost, abs=1e-3)
    assert mk.home_cost == pytest.approx(ref.home_cost, abs=1e-3)
    assert mk.aggregator_revenue == pytest.approx(ref.aggregator_revenue, abs=1e-3)
    pinned = ~ref.balanced
    assert mk.price[pinned] == pytest.approx(ref.price[pinned], abs=1e-4)
    surplus, ref_surplus = dm.cooperative_surplus(m1, mk), dm.cooperative_surplus(ref_m1, ref)
    # a surplus near 0 (nothing to gain) is compared absolutely: 1e-9 $ exact, 1e-5 $ coordinated
    assert surplus == pytest.approx(ref_surplus, rel=surplus_rel, abs=1e-9 if surplus_rel < 1e-4 else 1e-5)
    return ref, mk


@pytest.mark.parametrize("seed", range(6))
def test_decomposed_equals_central(seed):
    case = random_case(300 + seed, n_homes=3 + seed, n_scenarios=1 + seed % 4, idle_home=seed == 2)
    ref, mk = _agree(case, "decomposed", surplus_rel=1e-6)
    assert mk.price == pytest.approx(ref.price, abs=1e-6)  # also in balanced hours (the regularised dual)


@pytest.mark.parametrize("seed", range(4))
def test_decomposed_equals_central_under_congestion(seed):
    case = congested_case(seed)
    ref, mk = _agree(case, "decomposed", surplus_rel=1e-6)
    assert mk.price == pytest.approx(ref.price, abs=1e-6)


def test_scarcity_price_is_the_same_for_every_method():
    case = heavy_pair()
    ref, mk = _agree(case, "decomposed", surplus_rel=1e-6)
    assert np.any(ref.price > case.buy_price + 1e-4)  # the connection limit binds: price above k^b LMP
    _agree(case, "coordinated", surplus_rel=1e-3)


def test_decomposed_with_a_tight_trade_limit():
    case = random_case(11, n_homes=5, n_scenarios=2)
    _agree(case, "decomposed", surplus_rel=1e-6, trade_limit=0.3)


@pytest.mark.parametrize("seed", range(3))
def test_coordinated_agrees_with_central(seed):
    case = random_case(400 + seed, n_homes=4, n_scenarios=2)
    _agree(case, "coordinated", surplus_rel=1e-3)


def test_coordinated_agrees_under_congestion():
    _agree(congested_case(1), "coordinated", surplus_rel=1e-3)


def test_any_split_into_pieces_gives_the_same_operation():
    case = random_case(5, n_homes=7, n_scenarios=3)
    for solve in (dm.solve_independent, dm.clear_market):
        whole = solve(case, chunk_rows=10_000, n_jobs=1)
        for chunk in (1, 4, 9):
            split = solve(case, chunk_rows=chunk, n_jobs=1)
            assert split.home_cost == pytest.approx(whole.home_cost, abs=1e-7)
            assert split.load == pytest.approx(whole.load, abs=1e-5)
            if whole.price is not None:
                assert split.price == pytest.approx(whole.price, abs=1e-7)


def test_trade_balance_through_partial_sums_has_the_same_dual(monkeypatch):
    case = random_case(8, n_homes=9, n_scenarios=2)
    ref = dm.clear_market(case, method="central")
    monkeypatch.setattr(formulation, "TRADE_GROUP", 2)  # 5 partial sums per scenario
    mk = dm.clear_market(case, n_jobs=1)
    assert mk.price == pytest.approx(ref.price, abs=1e-6)
    assert mk.home_cost == pytest.approx(ref.home_cost, abs=1e-6)


def test_group_sums_cover_every_row_once():
    scenario = np.array([0, 1, 0, 1, 0, 1, 0])
    to_groups, to_scen = formulation._group_sums(scenario, 2)
    assert np.all(to_groups.sum(axis=0) == 1)  # each row in exactly one group
    assert np.all(to_groups.sum(axis=1) <= 2)
    per_scenario = (to_scen @ to_groups).toarray()
    assert np.array_equal(per_scenario, np.stack([scenario == 0, scenario == 1]).astype(float))


def test_results_do_not_depend_on_the_number_of_workers():
    case = random_case(6, n_homes=6, n_scenarios=4)
    one = dm.clear_market(case, chunk_rows=6, n_jobs=1)
    two = dm.clear_market(case, chunk_rows=6, n_jobs=2)
    assert np.array_equal(one.load, two.load) and np.array_equal(one.price, two.price)
    assert np.array_equal(one.home_cost, two.home_cost)


def test_unknown_method_lists_the_methods():
    case = random_case(0)
    for solve in (dm.solve_independent, dm.clear_market):
        with pytest.raises(ValueError, match="central.*decomposed.*coordinated"):
            solve(case, method="magic")


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_bad_chunk_size(chunk):
    with pytest.raises(ValueError, match="chunk_rows"):
        dm.clear_market(random_case(0), chunk_rows=chunk)


def test_not_a_case():
    with pytest.raises(TypeError, match="load_case"):
        dm.clear_market("results/case")


def test_method_and_convergence_are_recorded():
    case = random_case(2, n_homes=3, n_scenarios=2)
    for method in ("central", "decomposed"):
        op = dm.clear_market(case, method=method)
        assert op.method == method and op.convergence is None and op.wall_seconds > 0
    co = dm.clear_market(case, method="coordinated")
    assert co.method == "coordinated"
    log = co.convergence
    assert list(log.columns[:4]) == ["residual_kw", "price_change", "dual_residual", "rho"]
    last = log.iloc[-1]
    settings = dm.Coordination()
    accepted = max(settings.tol_residual, case.n_homes * settings.tol_imbalance)  # the imbalance grows with N
    assert last.residual_kw <= accepted and last.price_change <= settings.tol_price
    assert last.dual_residual <= settings.tol_price
    assert (log.iloc[:-1][["residual_kw", "dual_residual"]].max(axis=1) > 0).all()
    assert log.bytes_from_each_home.iloc[0] == 2 * T * 8  # one float per scenario and hour


def test_relaxed_tolerances_stop_sooner_and_keep_delta_c():
    """Coordination.relaxed() (large communities, make bench): fewer iterations, the same Delta C to 1e-3."""
    case = random_case(4, n_homes=6, n_scenarios=2)
    m1 = dm.solve_independent(case, n_jobs=1)
    exact = dm.settle(case, m1, dm.clear_market(case, n_jobs=1), 0.2)
    strict = dm.clear_market(case, method="coordinated")
    relaxed = dm.clear_market(case, method="coordinated", coordination=dm.Coordination.relaxed())
    assert len(relaxed.convergence) < len(strict.convergence)
    last = relaxed.convergence.iloc[-1]
    assert last.residual_kw <= 1e-3 and last.dual_residual <= 1e-5 and last.price_change <= 1e-5
    assert dm.settle(case, m1, relaxed, 0.2).surplus == pytest.approx(exact.surplus, rel=1e-3)


def test_not_converged_names_the_missed_tolerance():
    case = random_case(2, n_homes=3, n_scenarios=2)
    with pytest.raises(dm.NotConvergedError, match=r"in 3 iterations: trade imbalance \(kW\).*max_iterations") as err:
        dm.clear_market(case, method="coordinated", coordination=dm.Coordination(max_iterations=3))
    assert len(err.value.convergence) == 3


@pytest.mark.parametrize("bad", [{"rho": 0}, {"tol_price": -1.0}, {"max_iterations": 0}, {"tol_residual": np.nan}])
def test_bad_coordination_settings(bad):
    with pytest.raises(ValueError, match="Coordination"):
        dm.Coordination(**bad)


def test_infeasible_home_is_an_error_for_every_method(method):
    case = infeasible_case(2)
    with pytest.raises(dm.SolverError, match="infeasible"):
        dm.clear_market(case, method=method)


# ----------------------------------------------------------------------------------- privacy
def test_the_aggregator_sees_only_schedules_and_homes_only_prices_and_their_own_data(monkeypatch):
    """Section 2.1.2: the aggregator never receives utilities, batteries or profiles; a home never another's."""
    case = random_case(3, n_homes=3, n_scenarios=2)
    s = case.n_scenarios
    seen_by_aggregator, seen_by_homes = [], []
    real_update, real_response = coordinated.aggregator_update, coordinated.home_response

    def spy_update(state, trades, settings):
        seen_by_aggregator.append((state, trades, settings))
        return real_update(state, trades, settings)

    def spy_response(home, price, previous, rho, **kw):
        seen_by_homes.append((home, price, previous, rho))
        return real_response(home, price, previous, rho, **kw)

    monkeypatch.setattr(coordinated, "aggregator_update", spy_update)
    monkeypatch.setattr(coordinated, "home_response", spy_response)
    dm.clear_market(case, method="coordinated", n_jobs=1)
    assert seen_by_aggregator and seen_by_homes
    for state, trades, settings in seen_by_aggregator:
        assert set(vars(state)) == {"price", "rho", "trades"}
        assert isinstance(trades, np.ndarray) and trades.shape == (case.n_homes, s, T)
        assert isinstance(settings, dm.Coordination)
    for home, price, previous, rho in seen_by_homes:
        assert isinstance(home, formulation.Block)
        i = home.rows[0] // s
        assert np.array_equal(home.rows, np.arange(i * s, (i + 1) * s))  # its own rows, nobody else's
        # the announcement: prices and the penalty per (scenario, hour) (residual balancing per hour), public
        assert price.shape == previous.shape == (s, T) and (np.isscalar(rho) or np.shape(rho) == (s, T))


def test_a_home_response_depends_only_on_its_own_data():
    case = random_case(4, n_homes=3, n_scenarios=2)
    other = case.replace(
        utility_b=case.column("utility_b") * np.array([1.0, 3.0, 0.5]),
        battery_kwh=np.array([case.column("battery_kwh")[0], 0.0, 20.0]),
    )
    price = np.broadcast_to(case.buy_price, (2, T)).copy()
    mine = [
        coordinated.home_response(formulation.case_block(c, np.arange(2)), price, np.zeros((2, T)), 0.01)
        for c in (case, other)
    ]
    assert np.array_equal(mine[0]["x"], mine[1]["x"]) and np.array_equal(mine[0]["d"], mine[1]["d"])


# -------------------------------------------------------------------------------------- dask
def test_the_same_code_runs_on_a_dask_cluster():
    distributed = pytest.importorskip("distributed")
    case = random_case(9, n_homes=5, n_scenarios=4)
    local_m1 = dm.solve_independent(case, chunk_rows=5, n_jobs=1)
    local = dm.clear_market(case, chunk_rows=5, n_jobs=1)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as tasks, parallel_config(backend="dask"):
            on_dask_m1 = dm.solve_independent(case, chunk_rows=5)
            on_dask = dm.clear_market(case, chunk_rows=5)
        ran = {t["worker"] for t in tasks.data}
    assert len(tasks.data) >= 2 * 4  # 4 M1 pieces + 4 clearing pieces, at least
    assert ran  # workers of the cluster ran them
    assert np.array_equal(on_dask_m1.load, local_m1.load)
    assert np.array_equal(on_dask.load, local.load) and np.array_equal(on_dask.price, local.price)
    assert np.array_equal(on_dask.home_cost, local.home_cost)


def test_engine_does_not_import_dask():
    import ast

    for module in (formulation, engine, pieces, coordinated):
        tree = ast.parse(open(module.__file__).read())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"dask", "distributed"}, module.__name__


def test_market_process_notebook_helpers():
    """The message table and the figure of notebook 07, on a small run."""
    from desmarket import plots, report

    case = random_case(2, n_homes=3, n_scenarios=2)
    history = []
    co = dm.clear_market(case, method="coordinated", callback=history.append)
    assert len(history) == len(co.convergence)
    assert np.array_equal(history[-1].price, co.price)
    messages = report.message_table(case, co.convergence)
    k = len(co.convergence)
    # to each home: the price and the penalty per (scenario, hour) (residual balancing per hour, the default)
    assert messages.loc["aggregator", "bytes_per_home_per_iteration"] == (2 * T + 2 * T) * 8
    fixed = dm.clear_market(case, method="coordinated", coordination=dm.Coordination(adaptive_hours=False))
    assert report.message_table(case, fixed.convergence).loc["aggregator", "bytes_per_home_per_iteration"] == (
        (2 * T + 1) * 8  # the price per (scenario, hour) and one penalty
    )
    assert messages.loc["each home", "bytes_over_the_run_all_homes"] == k * 3 * 2 * T * 8
    fig = plots.figure_market_process(co.convergence, np.stack([s.price for s in history]), co.price, co.balanced)
    assert len(fig.axes) == 2


def test_home_controller_direct_piqp_path_equals_the_cvxpy_path():
    """The controller's PIQP update path (price and rho changed in place) solves the same problem as cvxpy."""
    case = random_case(12, n_homes=3, n_scenarios=2)
    rng = np.random.default_rng(0)
    for i in range(case.n_homes):
        home = formulation.case_block(case, np.arange(2 * i, 2 * i + 2))
        direct = coordinated.HomeController(home, "PIQP")
        via_cvxpy = coordinated.HomeController(home, "PIQP", direct=False)
        assert direct._piqp is not None and via_cvxpy._piqp is None
        for _ in range(3):  # successive updates of the same controller
            price = case.buy_price * (1 + 0.2 * rng.standard_normal((2, T)))
            previous, rho = rng.standard_normal((2, T)), 10 ** rng.uniform(-3, -1)
            a, b = direct.respond(price, previous, rho), via_cvxpy.respond(price, previous, rho)
            for key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_progress_bar_only_on_a_terminal(monkeypatch):
    """run_tasks draws a tqdm bar when stderr is a terminal, and nothing otherwise (executed notebooks stay
    byte-identical)."""
    import io as _io
    import sys

    class Terminal(_io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((Terminal(), True), (_io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert pieces.run_tasks(abs, [(-1,), (-2,)], 1, progress="coalitions") == [1, 2]
        assert ("coalitions: 100%" in stream.getvalue()) == shown


@pytest.mark.parametrize("workers", [1, 2])
def test_an_owned_pool_keeps_each_object_where_it_lives(workers):
    """OwnedPool: object k lives in worker k mod workers for the pool's life, so its state carries from call to
    call; results come back in the objects' order; an error raised there is raised here."""
    with pieces.OwnedPool([[k] for k in range(5)], workers) as pool:
        assert pool.workers == workers
        pool.call("append", own=[(10 * k,) for k in range(5)])  # each object gets its own argument only
        pool.call("append", (7,))  # and a shared one
        assert pool.call("copy") == [[k, 10 * k, 7] for k in range(5)]
        with pytest.raises(ValueError, match="not in list"):
            pool.call("index", (99,))
        with pytest.raises(ValueError, match="2 argument tuples for 5 objects"):
            pool.call("append", own=[(1,), (2,)])
        assert pool.call("pop") == [7] * 5  # the state survived the error


def test_an_owned_pool_does_not_run_a_script_again_in_its_workers(tmp_path):
    """A script without an ``if __name__ == "__main__"`` guard runs once, as with joblib: the workers do not
    import the main module (multiprocessing's forkserver and spawn would run it again in each)."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from desmarket import pieces\n"
        "print('top level', flush=True)\n"
        "with pieces.OwnedPool([[1], [2], [3]], 2) as pool:\n"
        "    print(pool.call('copy'), flush=True)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == ["top level", "[[1], [2], [3]]"]


# ------------------------------------------------------------------------------ one formulation
def test_every_method_builds_its_problems_with_the_one_formulation(monkeypatch):
    """Central, decomposed, coordinated and the Workbench all call formulation.formulate (issue 18): central
    once (one block of all rows, weights pi_s), decomposed once per piece (weight 1), coordinated once per group
    of homes (weight 1, no trade balance; each home's problem is cut from it, coordinated.compile_homes)."""
    from desmarket import model, study

    assert model.formulate is pieces.formulate is coordinated.formulate is study.formulate is formulation.formulate
    case = random_case(3, n_homes=3, n_scenarios=2)
    calls = []

    def spy(block, market, *args, **kw):
        calls.append((tuple(block.rows), tuple(block.weight), market, kw.get("trade_balance", True)))
        return formulation.formulate(block, market, *args, **kw)

    for module in (model, pieces, coordinated):
        monkeypatch.setattr(module, "formulate", spy)
    dm.clear_market(case, method="central")
    assert calls == [(tuple(range(6)), tuple(np.tile(case.probability, 3)), True, True)]
    calls.clear()
    dm.clear_market(case, chunk_rows=3, n_jobs=1)  # one scenario (3 homes) per piece
    assert [c[0] for c in calls] == [(0, 2, 4), (1, 3, 5)] and all(set(c[1]) == {1.0} and c[2] for c in calls)
    calls.clear()
    # residual stop only and no warm start (issue 21: the default also solves M1 first, checked below)
    quick = dm.Coordination(max_iterations=2, tol_residual=1e3, tol_price=1e3, economic=False, warm_start=False)
    dm.clear_market(case, method="coordinated", coordination=quick)
    assert [c[0] for c in calls] == [tuple(range(6))]  # the one group of the 3 homes' rows
    assert all(set(c[1]) == {1.0} and c[2] and not c[3] for c in calls)
    calls.clear()
    dm.clear_market(
        case,
        method="coordinated",
        coordination=dm.Coordination(
            max_iterations=50, tol_residual=1e3, tol_price=1e3, tol_surplus=1, tol_alpha=1, tol_gain=1e3
        ),
    )
    homes = [c for c in calls if c[2]]
    m1 = [c for c in calls if not c[2]]  # the disagreement point and price forecast: M1 by pieces, once
    assert [c[0] for c in homes] == [tuple(range(6))]
    assert all(set(c[1]) == {1.0} and not c[3] for c in homes)
    assert sorted(r for c in m1 for r in c[0]) == list(range(6)) and all(set(c[1]) == {1.0} for c in m1)


@pytest.mark.parametrize("market", [False, True])
def test_the_central_problem_is_a_weighted_piece_of_all_rows(market):
    """The central problem and the decomposed piece of all rows compile to the same constraints (PIQP's
    standard form, exactly); with one scenario (pi = 1) to the same problem, objective included."""

    def data(problem):
        d = problem.get_problem_data("PIQP")[0]
        return {
            k: d[k].toarray() if hasattr(d[k], "toarray") else np.asarray(d[k])
            for k in ("P", "q", "A", "b", "F", "G", "lower_bounds", "upper_bounds")
        }

    build = dm.build_clearing if market else dm.build_independent
    for n_scenarios in (1, 3):
        case = random_case(9, n_homes=4, n_scenarios=n_scenarios)
        central = data(build(case)[0])
        piece = data(formulation.formulate(formulation.case_block(case, np.arange(4 * n_scenarios)), market)[0])
        same = ("A", "b", "F", "G", "lower_bounds", "upper_bounds") + (("P", "q") if n_scenarios == 1 else ())
        for key in same:
            assert np.array_equal(central[key], piece[key]), (n_scenarios, key)
        if n_scenarios > 1:
            assert not np.array_equal(central["q"], piece["q"])  # weighted by pi_s


def test_no_other_module_writes_the_model():
    """Variables of Eqs. 5-19 are created in desmarket.formulation only (the settlement's Nash bargaining,
    Eqs. 23-25, has its own payments)."""
    import ast
    import pathlib

    where = set()
    for path in pathlib.Path(formulation.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None  # a call creates one; an annotation names it
            if isinstance(func, ast.Attribute) and func.attr == "Variable" and getattr(func.value, "id", "") == "cp":
                where.add(path.name)
    assert where == {"formulation.py", "settlement.py"}
