"""The accelerated market process (issue 21): every technique lands on the exact clearing, lost answers are
survived, a silent home stops the process by name, batched responses equal the per-home ones and keep privacy."""

import pickle

import numpy as np
import pytest

import desmarket as dm
from desmarket import coordinated, formulation
from desmarket.synthetic import random_case

T = dm.HOURS
pytestmark = pytest.mark.filterwarnings("ignore::desmarket.RoutingWarning")


def _exact(case):
    m1 = dm.solve_independent(case, method="central")
    market = dm.clear_market(case, method="central")
    return m1, market, dm.settle(case, m1, market, 0.2)


def _agrees_with_central(case, settings, *, surplus_rel=1e-4, gain_abs=1e-3):
    """The issue's targets against the central clearing: Delta C to 1e-4 relative, each M3 gain to 1e-3 $."""
    m1, exact, reference = _exact(case)
    co = dm.clear_market(case, method="coordinated", coordination=settings)
    settled = dm.settle(case, m1, co, 0.2)
    assert settled.surplus == pytest.approx(reference.surplus, rel=surplus_rel)
    assert settled.home_gain == pytest.approx(reference.home_gain, abs=gain_abs)
    assert co.home_cost == pytest.approx(exact.home_cost, abs=1e-3)
    pinned = ~exact.balanced
    assert co.price[pinned] == pytest.approx(exact.price[pinned], abs=1e-4)
    return co


def flat_pair(pv_seller: float):
    """Two homes, one scenario, no battery, rigid loads, no utility (tests/test_model.py): solvable by hand."""
    load, pv = np.zeros((2, 1, T)), np.zeros((2, 1, T))
    load[0], pv[1] = 1.0, pv_seller
    return dm.create_case(
        load,
        pv,
        utility_a=0.0,
        utility_b=0.0,
        lmp=np.full(T, 0.05),
        battery_kwh=0.0,
        battery_kw=0.0,
        load_min_factor=1.0,
        load_max_factor=1.0,
    )


TECHNIQUES = {
    "plain ADMM": dm.Coordination.plain(),
    "over-relaxation only": dm.Coordination(anderson=0, warm_start=False),
    "Anderson only": dm.Coordination(relaxation=1.0, warm_start=False),
    "default": dm.Coordination(),
    "spectral penalty per hour": dm.Coordination(spectral="hour"),
    "spectral penalty per home": dm.Coordination(spectral="home"),
    "fixed penalty (no residual balancing per hour)": dm.Coordination(adaptive_hours=False),
}


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_technique_gives_the_hand_solved_clearing(name):
    """Home 2 (3 kW of PV) supplies home 1 (1 kW of load) and exports 2 kW: price k^s LMP, trades +-1 kW."""
    case = flat_pair(pv_seller=3.0)
    co = dm.clear_market(case, method="coordinated", coordination=TECHNIQUES[name])
    assert co.trade[:, 0, :] == pytest.approx(np.array([[-1.0] * T, [1.0] * T]), abs=1e-3)
    assert co.price == pytest.approx(np.full((1, T), 0.9 * 0.05), abs=1e-4)
    q = case.market.net_metering_usd_per_kwh
    assert co.home_cost == pytest.approx([0.0, -2 * q * T], abs=1e-3)


@pytest.mark.parametrize("seed", [410, 411])
def test_the_default_equals_central_on_random_cases(seed):
    _agrees_with_central(random_case(seed, n_homes=5, n_scenarios=2), dm.Coordination())


def test_the_default_equals_central_under_congestion():
    case = random_case(1, n_homes=4, n_scenarios=2).replace(grid_limit_kw=2.5)
    co = _agrees_with_central(case, dm.Coordination())
    exact = dm.clear_market(case, method="central")
    assert exact.congested.any()  # a limit binds: the scarcity price is reached by the process too
    assert co.price[exact.congested] == pytest.approx(exact.price[exact.congested], abs=1e-4)


ON_A_RANDOM_CASE = ["plain ADMM", "over-relaxation only", "Anderson only", "spectral penalty per hour"]


@pytest.mark.parametrize("name", [*ON_A_RANDOM_CASE, "fixed penalty (no residual balancing per hour)"])
def test_each_technique_equals_central_on_a_random_case(name):
    _agrees_with_central(random_case(412, n_homes=3, n_scenarios=2), TECHNIQUES[name])


def test_residual_balancing_per_hour_equals_central_under_congestion():
    case = random_case(1, n_homes=4, n_scenarios=2).replace(grid_limit_kw=2.5)
    co = _agrees_with_central(case, dm.Coordination(adaptive_hours=True))
    exact = dm.clear_market(case, method="central")
    assert co.price[exact.congested] == pytest.approx(exact.price[exact.congested], abs=1e-4)


def test_residual_balancing_per_hour_ends_a_drift_sooner():
    # a case whose fixed-penalty process spends most rounds with prices drifting where no answer moves
    # (docs/usage/speed.md): 216 rounds, against 68 with the penalty balanced per hour
    case = random_case(3, n_homes=5, n_scenarios=3)
    rounds = {
        name: len(dm.clear_market(case, method="coordinated", coordination=settings).convergence)
        for name, settings in (("fixed", dm.Coordination(adaptive_hours=False)), ("default", dm.Coordination()))
    }
    assert rounds["default"] < 0.7 * rounds["fixed"], rounds
    assert dm.Coordination().adaptive_hours and not dm.Coordination.plain().adaptive_hours
    assert not dm.Coordination(spectral="hour").adaptive_hours and not dm.Coordination(adaptive=True).adaptive_hours


def test_hourly_balance_raises_the_penalty_where_only_the_imbalance_is_left():
    """Hour 0: the same imbalance every round and no answer moving (a drift): rho x4 at each update, up to 64
    rho0. Hour 1: balanced but the answers swing: rho / 4. Hour 2: both small: unchanged. Fixed after its rounds."""
    balance = coordinated.HourlyBalance(1e-3, accepted=1e-3, tol_price=1e-6, every=1, rounds=10)
    rho = np.full((1, 3), 1e-3)
    swing = np.array([[0.0, 1.0, 0.0]])
    history = []
    for k in range(1, 8):
        trades = np.zeros((2, 1, 3))
        trades[:, 0, 0] = 0.5  # imbalance 1 kW in hour 0, the same answers each round
        trades[:, 0, 1] = np.array([1.0, -1.0]) * (-1) ** k * swing[0, 1]  # sum 0, answers swing by 2 kW
        new = balance.update(k, rho, trades, trades)
        if new is not None:
            rho = new
        history.append(rho.copy())
    assert history[0] == pytest.approx(np.full((1, 3), 1e-3))  # the first round only records
    assert history[1][0, 0] == pytest.approx(4e-3) and history[1][0, 1] == pytest.approx(2.5e-4)
    assert history[-1][0, 0] == pytest.approx(64e-3) and history[-1][0, 1] == pytest.approx(1e-3 / 64)
    assert history[-1][0, 2] == pytest.approx(1e-3)
    assert balance.update(11, rho, trades, trades) is None  # after its rounds the penalty stays fixed


def test_acceleration_takes_fewer_rounds_than_plain_admm():
    case = random_case(410, n_homes=5, n_scenarios=2)
    rounds = {
        name: len(dm.clear_market(case, method="coordinated", coordination=TECHNIQUES[name]).convergence)
        for name in ("plain ADMM", "default")
    }
    assert rounds["default"] < rounds["plain ADMM"], rounds


def test_the_convergence_table_records_the_economics_and_the_lost_answers():
    case = random_case(2, n_homes=3, n_scenarios=2)
    co = dm.clear_market(case, method="coordinated")
    log = co.convergence
    for column in ("surplus_usd", "surplus_change", "alpha_change", "gain_change_usd", "unanswered"):
        assert column in log.columns
    assert (log.unanswered == 0).all()
    settings = dm.Coordination()
    calm = log.iloc[-settings.patience :]  # the stop: the last rounds all within every tolerance
    accepted = max(settings.tol_residual, case.n_homes * settings.tol_imbalance)  # kW of |sum_i x_i|
    assert (calm.residual_kw <= accepted).all()
    assert (calm.gain_change_usd <= settings.tol_gain).all() and (calm.alpha_change <= settings.tol_alpha).all()
    m1 = dm.solve_independent(case)
    assert log.surplus_usd.iloc[-1] == pytest.approx(dm.cooperative_surplus(m1, co), abs=1e-6)


# ------------------------------------------------------------------------------------- lost answers
def test_a_tenth_of_the_answers_lost_gives_the_same_clearing():
    case = random_case(410, n_homes=5, n_scenarios=2)
    co = _agrees_with_central(case, dm.Coordination(dropout=0.1, seed=3))
    lost = co.convergence.unanswered
    assert lost.sum() > 0  # answers were lost, and the process still converged
    share = lost.sum() / (case.n_homes * len(lost))
    assert 0.03 < share < 0.2


def test_lost_answers_are_seeded():
    case = random_case(2, n_homes=3, n_scenarios=2)
    runs = [
        dm.clear_market(case, method="coordinated", coordination=dm.Coordination(dropout=0.2, seed=k))
        for k in (5, 5, 6)
    ]
    assert np.array_equal(runs[0].price, runs[1].price) and np.array_equal(runs[0].load, runs[1].load)
    assert runs[0].convergence.unanswered.tolist() == runs[1].convergence.unanswered.tolist()
    assert runs[0].convergence.unanswered.tolist() != runs[2].convergence.unanswered.tolist()


def test_a_home_that_never_answers_stops_the_process_by_name(monkeypatch):
    case = random_case(2, n_homes=3, n_scenarios=2)

    def home_1_is_silent(rng, n_homes, dropout):
        lost = np.zeros(n_homes, dtype=bool)
        lost[1] = True
        return lost

    monkeypatch.setattr(coordinated, "lost_answers", home_1_is_silent)
    settings = dm.Coordination(max_unanswered=4)
    with pytest.raises(dm.UnansweredError, match=case.home_ids[1]) as err:
        dm.clear_market(case, method="coordinated", coordination=settings)
    assert err.value.home_ids == (case.home_ids[1],) and err.value.rounds == 4
    assert len(err.value.convergence) == 4 and (err.value.convergence.unanswered == 1).all()
    assert isinstance(err.value, dm.NotConvergedError)  # a solver failure: studies record it, never settle it
    again = pickle.loads(pickle.dumps(err.value))
    assert again.home_ids == err.value.home_ids and str(again) == str(err.value)


def test_no_answer_at_all_names_every_home():
    case = random_case(2, n_homes=3, n_scenarios=2)
    with pytest.raises(dm.UnansweredError) as err:
        dm.clear_market(case, method="coordinated", coordination=dm.Coordination(dropout=1.0, max_unanswered=2))
    assert err.value.home_ids == case.home_ids


@pytest.mark.parametrize(
    "bad",
    [
        {"dropout": 1.5},
        {"dropout": -0.1},
        {"relaxation": 2.0},
        {"relaxation": 0},
        {"anderson": -1},
        {"max_unanswered": 0},
        {"patience": 0},
        {"tol_gain": 0},
        {"profit_rate": 1.0},
        {"batched": "yes"},
        {"seed": 1.5},
        {"spectral": True},
        {"spectral_rounds": 0},
        {"tol_imbalance": 0},
        {"adaptive_hours": 1},
    ],
)
def test_bad_coordination_settings_name_the_field(bad):
    (field,) = bad
    with pytest.raises(ValueError, match=rf"^Coordination\.{field} must be"):
        dm.Coordination(**bad)


@pytest.mark.parametrize("other", [{"spectral": "hour"}, {"adaptive": True}])
def test_residual_balancing_per_hour_excludes_the_other_adaptive_penalties(other):
    with pytest.raises(ValueError, match="adaptive_hours"):
        dm.Coordination(adaptive_hours=True, **other)


# ------------------------------------------------------------------------------------ lean controllers
def test_a_lean_controller_answers_as_a_full_one():
    """A lean controller (compiled data only, a solver set up per answer) gives the full one's answers."""
    case = random_case(12, n_homes=3, n_scenarios=2)
    s = case.n_scenarios
    rng = np.random.default_rng(1)
    for i in range(3):
        home = formulation.case_block(case, np.arange(i * s, (i + 1) * s))
        full, lean = coordinated.HomeController(home, "PIQP"), coordinated.HomeController(home, "PIQP", lean=True)
        assert lean._piqp["solver"] is None and full._piqp["setup"] is None
        for _ in range(3):  # successive rounds
            price = case.buy_price * (1 + 0.2 * rng.standard_normal((s, T)))
            target, rho = rng.standard_normal((s, T)), 10 ** rng.uniform(-2, -1)
            a, b = full.respond(price, target, rho), lean.respond(price, target, rho)
            for key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), key


@pytest.mark.parametrize("seed", [12, 410])
def test_homes_cut_from_one_compilation_answer_as_if_compiled_alone(seed):
    """compile_homes: each home's rows of one compiled block are the problem compiled for the home alone, so its
    controller answers the same to the last digit (homes without a battery, with trade limits included)."""
    case = random_case(seed, n_homes=4, n_scenarios=3)
    case = case.replace(battery_kwh=case.column("battery_kwh") * np.array([1.0, 0.0, 1.0, 2.0]))
    s = case.n_scenarios
    x_bar = np.array([0.5, 3.0, 1.0, 2.0])
    compiled = coordinated.compile_homes(formulation.case_block(case, np.arange(4 * s), x_bar), s)
    assert compiled is not None and len(compiled) == 4
    rng = np.random.default_rng(seed)
    for i in range(4):
        home = formulation.case_block(case, np.arange(i * s, (i + 1) * s), x_bar)
        for lean in (False, True):
            alone = coordinated.HomeController(home, "PIQP", lean=lean)
            cut = coordinated.HomeController(home, "PIQP", lean=lean, compiled=compiled[i])
            assert cut.handles is None  # nothing compiled for the home itself
            for _ in range(2):
                price = case.buy_price * (1 + 0.2 * rng.standard_normal((s, T)))
                target, rho = rng.standard_normal((s, T)), 10 ** rng.uniform(-3, -1)
                a, b = alone.respond(price, target, rho), cut.respond(price, target, rho)
                for key in a:
                    assert np.array_equal(a[key], b[key]), (i, lean, key)


def test_the_process_is_the_same_with_homes_compiled_one_by_one(monkeypatch):
    case = random_case(411, n_homes=6, n_scenarios=2)
    grouped = dm.clear_market(case, method="coordinated", n_jobs=1)
    monkeypatch.setattr(coordinated, "compile_homes", lambda block, rows_per_home: None)  # each home on its own
    alone = dm.clear_market(case, method="coordinated", n_jobs=1)
    assert np.array_equal(grouped.trade, alone.trade) and np.array_equal(grouped.price, alone.price)


def test_large_communities_get_lean_controllers():
    assert not coordinated.lean_controllers(1_000, 10)
    assert coordinated.lean_controllers(10_000, 10)
    limit = coordinated.CONTROLLER_BYTES / coordinated.FULL_ROW_BYTES  # rows of full controllers that fit
    assert not coordinated.lean_controllers(int(limit), 1) and coordinated.lean_controllers(int(limit) + 1, 1)


def test_the_process_with_lean_controllers_equals_central(monkeypatch):
    monkeypatch.setattr(coordinated, "CONTROLLER_BYTES", 1.0)  # nothing fits: every controller lean
    built = []  # the controllers the process builds
    real_init = coordinated.HomeController.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self.lean)

    monkeypatch.setattr(coordinated.HomeController, "__init__", spy)
    case = random_case(410, n_homes=5, n_scenarios=2)
    m1, exact, reference = _exact(case)
    co = dm.clear_market(case, method="coordinated", n_jobs=1)
    assert built == [True] * case.n_homes  # each home's controller built once, kept for the whole process
    settled = dm.settle(case, m1, co, 0.2)
    assert settled.surplus == pytest.approx(reference.surplus, rel=1e-4)
    assert settled.home_gain == pytest.approx(reference.home_gain, abs=1e-3)


def test_the_process_answers_the_same_whatever_the_number_of_workers(monkeypatch):
    """Each group of homes lives in one worker (pieces.OwnedPool), and a home's answer depends only on its own
    controller: the process is the same, to the last digit, in one process or in two workers."""
    monkeypatch.setattr(coordinated, "BATCH_ROWS", 8)  # groups of 4 homes: 6 groups, 3 in each worker
    case = random_case(411, n_homes=24, n_scenarios=2)
    assert len(coordinated._batches(24, 2, 2)) == 6
    runs = [
        dm.clear_market(case, method="coordinated", coordination=dm.Coordination.relaxed(), coordinated_jobs=jobs)
        for jobs in (1, 2)
    ]
    assert len(runs[0].convergence) == len(runs[1].convergence)
    assert np.array_equal(runs[0].trade, runs[1].trade) and np.array_equal(runs[0].price, runs[1].price)


# ---------------------------------------------------------------------------------------- batched
def test_a_batch_answers_as_its_homes_do_one_by_one():
    case = random_case(12, n_homes=3, n_scenarios=2)
    s = case.n_scenarios
    homes = [formulation.case_block(case, np.arange(i * s, (i + 1) * s)) for i in range(3)]
    block = formulation.case_block(case, np.arange(3 * s))
    batch = coordinated.BatchController(block, "PIQP")
    rng = np.random.default_rng(0)
    for _ in range(3):  # successive rounds of the same controllers
        price = case.buy_price * (1 + 0.2 * rng.standard_normal((s, T)))
        targets, rho = rng.standard_normal((3, s, T)), 10 ** rng.uniform(-3, -1)
        together = batch.respond_all(homes, (price + rho * targets).reshape(3 * s, T), rho)
        for i, home in enumerate(homes):
            alone = coordinated.HomeController(home, "PIQP").respond(price, targets[i], rho)
            for key in alone:
                assert together[key][i * s : (i + 1) * s] == pytest.approx(alone[key], abs=1e-4), key


def test_the_batched_process_equals_central():
    _agrees_with_central(random_case(412, n_homes=3, n_scenarios=2), dm.Coordination(batched=True))


def test_batched_homes_see_only_their_own_data_and_the_price(monkeypatch):
    """Privacy (Section 2.1.2) in the batch: each home posts only its own linear term, from its own rows."""
    case = random_case(3, n_homes=3, n_scenarios=2)
    s = case.n_scenarios
    posted, real_post = [], coordinated.Fleet.post

    def spy_post(self, home, linear):
        posted.append((home, linear))
        return real_post(self, home, linear)

    monkeypatch.setattr(coordinated.Fleet, "post", spy_post)
    dm.clear_market(
        case,
        method="coordinated",
        coordination=dm.Coordination(batched=True, max_iterations=5, tol_residual=1e3, tol_price=1e3, economic=False),
    )
    assert posted
    for home, linear in posted:
        i = home.rows[0] // s
        assert np.array_equal(home.rows, np.arange(i * s, (i + 1) * s))  # its own rows, nobody else's
        assert isinstance(home, formulation.Block) and linear.shape == (s, T)


def test_a_batched_answer_depends_only_on_the_homes_own_data():
    case = random_case(4, n_homes=3, n_scenarios=2)
    other = case.replace(
        utility_b=case.column("utility_b") * np.array([1.0, 3.0, 0.5]),
        battery_kwh=np.array([case.column("battery_kwh")[0], 0.0, 20.0]),
    )
    price = np.broadcast_to(case.buy_price, (2, T)).copy()
    mine = []
    for c in (case, other):
        homes = [formulation.case_block(c, np.arange(2 * i, 2 * i + 2)) for i in range(3)]
        batch = coordinated.BatchController(formulation.case_block(c, np.arange(6)), "PIQP")
        mine.append(batch.respond_all(homes, np.concatenate([price] * 3), 0.01))
    for key in ("x", "d"):
        assert mine[0][key][:2] == pytest.approx(mine[1][key][:2], abs=1e-5)


# --------------------------------------------------------------------------------------- Anderson
def test_anderson_finds_the_fixed_point_of_a_linear_map_sooner():
    """w -> A w + b with A of spectral radius 0.95: plain iteration needs hundreds of steps to 1e-8, Anderson
    (memory 5) far fewer, and both reach the fixed point solved by hand, (I - A)^-1 b."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = q @ np.diag([0.95, 0.9, 0.5, 0.3, -0.4, 0.1]) @ q.T
    b = rng.standard_normal(6)
    exact = np.linalg.solve(np.eye(6) - A, b)

    def steps(accelerate: bool) -> int:
        w, acc = np.zeros(6), coordinated.Anderson(5)
        for k in range(1, 2000):
            g = A @ w + b
            w = acc.step(w, g) if accelerate else g
            if np.abs(w - exact).max() < 1e-8:
                return k
        return 2000

    plain, accelerated = steps(False), steps(True)
    assert plain > 300 and accelerated < 30, (plain, accelerated)


# ------------------------------------------------------------------------------- penalty and stop
def test_the_accepted_imbalance_grows_with_the_community():
    """max(tol_residual, N tol_imbalance) kW (Boyd et al. 2011, Section 3.3.1): 5e-4 kW of |sum x| is too much
    for 3 homes (1e-4 kW accepted), within the tolerance for 100 homes (1e-3 kW)."""
    settings = dm.Coordination(tol_imbalance=1e-5)
    info = {"residual_kw": 5e-4, "price_change": 0.0, "dual_residual": 0.0}
    assert coordinated._missed(info, settings, False, 3) == ["trade imbalance (kW) 0.0005 > 0.0001"]
    assert coordinated._missed(info, settings, False, 100) == []


def test_the_spectral_penalty_finds_each_hours_curvature():
    """Homes answering x = (lambda_hat - c) / h (a quadratic F_i of curvature h per (scenario, hour)): the
    Barzilai-Borwein estimate of Xu et al. (2017) is h in every hour, per hour and per home alike."""
    rng = np.random.default_rng(1)
    h = np.array([[1e-3, 4e-3, 2e-2]])  # (S, T) = (1, 3), $/kWh per kW
    c = rng.standard_normal((4, 1, 3)) * 0.01
    rho = np.full((1, 3), 4e-3)
    for per_home in (False, True):
        penalty = coordinated.SpectralPenalty(4e-3, per_home=per_home)
        estimates = []
        for k in (1, 2):
            x = rng.standard_normal((4, 1, 3))
            estimates.append(penalty.update(k, rho, h * x + c, x))
        assert estimates[0] is None  # the first round only records
        assert estimates[1] == pytest.approx(np.broadcast_to(h, estimates[1].shape), rel=1e-9)
    frozen = coordinated.SpectralPenalty(4e-3, rounds=2)
    assert frozen.update(3, rho, h * x + c, x) is None  # after its rounds the penalty stays fixed


def test_a_penalty_per_home_shares_the_imbalance_by_its_inverse():
    """ADMM's z-step in the metric of per-home penalties: targets still sum to zero, and a home with half
    another's penalty takes twice its share of the imbalance; one penalty for all gives the plain mean."""
    trades = np.array([[[3.0]], [[-1.0]], [[1.0]]])  # (N, S, T) = (3, 1, 1): 3 kW of imbalance
    rho = np.array([[[1.0]], [[1.0]], [[0.5]]])
    z = coordinated.next_targets(np.zeros_like(trades), trades, 1.0, rho)
    assert z.sum() == pytest.approx(0.0, abs=1e-12)
    assert trades - z == pytest.approx(3.0 * np.array([[[0.25]], [[0.25]], [[0.5]]]))
    same = coordinated.next_targets(np.zeros_like(trades), trades, 1.0, np.ones_like(trades))
    assert same == pytest.approx(coordinated.next_targets(np.zeros_like(trades), trades, 1.0))
