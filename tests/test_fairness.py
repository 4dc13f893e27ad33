"""Cooperative-game functions on textbook games and axioms, then the market game against hand-derived values."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import desmarket as dm
from desmarket import fairness as F
from desmarket.synthetic import random_case


def game(n, v):
    """Value vector over bitmasks from a function of the frozenset of players."""
    return np.array([v(frozenset(k for k in range(n) if (m >> k) & 1)) for m in range(1 << n)], dtype=float)


GLOVES = game(3, lambda s: float(min(len(s & {0}), len(s & {1, 2}))))  # player 0 has the left glove


def test_glove_game():
    assert F.shapley_from_values(GLOVES) == pytest.approx([2 / 3, 1 / 6, 1 / 6])
    assert F.nucleolus_from_values(GLOVES) == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)  # the core is one point
    e, x = F.least_core_from_values(GLOVES)
    assert e == pytest.approx(0.0, abs=1e-9) and x == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)


def test_airport_game():
    """Runway costs 1, 3, 6: Shapley splits each segment among those who use it (Littlechild and Owen 1973)."""
    cost = [1.0, 3.0, 6.0]
    v = game(3, lambda s: max((cost[k] for k in s), default=0.0))
    assert F.shapley_from_values(v) == pytest.approx([1 / 3, 1 / 3 + 1, 1 / 3 + 1 + 3])


def test_three_player_nucleolus():
    """v(12) = 20, v(13) = 30, v(23) = 40, v(123) = 90: the nucleolus is (25, 30, 35) (worked by hand: player
    1's singleton and pair {2, 3} bound the first round at 25, then {2} and {1, 3} at 30)."""
    pairs = {frozenset({0, 1}): 20.0, frozenset({0, 2}): 30.0, frozenset({1, 2}): 40.0}
    v = game(3, lambda s: 90.0 if len(s) == 3 else pairs.get(s, 0.0))
    assert F.nucleolus_from_values(v) == pytest.approx([25.0, 30.0, 35.0], abs=1e-7)
    assert F.max_excess(v, [25.0, 30.0, 35.0])[0] == pytest.approx(-25.0)


def test_bad_games_are_rejected():
    with pytest.raises(ValueError, match="2\\^n"):
        F.shapley_from_values(np.zeros(5))
    with pytest.raises(ValueError, match="empty coalition"):
        F.shapley_from_values(np.ones(4))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=15, max_size=15),
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=15, max_size=15),
)
def test_shapley_axioms_on_random_games(a, b):
    v, w = np.r_[0.0, a], np.r_[0.0, b]
    phi = F.shapley_from_values(v)
    assert phi.sum() == pytest.approx(v[-1], abs=1e-9)  # efficiency
    assert F.shapley_from_values(v + w) == pytest.approx(phi + F.shapley_from_values(w), abs=1e-9)  # additivity
    null = game(4, lambda s: v[sum(1 << k for k in s if k != 3)])  # player 3 adds nothing anywhere
    assert F.shapley_from_values(null)[3] == pytest.approx(0.0, abs=1e-12)
    sym = game(4, lambda s: float(len(s & {0, 1})) ** 2 + len(s))  # players 0 and 1 interchangeable
    s = F.shapley_from_values(sym)
    assert s[0] == pytest.approx(s[1]) and s[2] == pytest.approx(s[3])
    x = F.nucleolus_from_values(v)
    assert x.sum() == pytest.approx(v[-1], abs=1e-7)  # the nucleolus is efficient ...
    e, _ = F.least_core_from_values(v)
    assert F.max_excess(v, x)[0] == pytest.approx(e, abs=1e-6)  # ... and in the least core


# ======================================================================================== the market
@pytest.fixture(scope="module")
def two_homes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        case = random_case(11, n_homes=2, n_scenarios=2)
        return case, dm.solve_independent(case), dm.clear_market(case)


def test_two_home_game_by_hand(two_homes):
    case, m1, mk = two_homes
    a, b = case.home_ids
    values = F.coalition_values(case, m1, n_jobs=1)
    lookup = dict(zip(values.index, values))
    r = dm.settle(case, m1, mk, 0.2).surplus
    assert lookup[(a, b)] == pytest.approx(r, abs=1e-9)  # the grand coalition is the market
    for h in (a, b):  # a home alone with the aggregator: the surplus of its own one-home case
        alone = case.select([h])
        expected = dm.settle(alone, dm.solve_independent(alone), dm.clear_market(alone), 0.2, "equal").surplus
        assert lookup[(h,)] == pytest.approx(expected, abs=1e-6)
        assert F.coalition_value(case, [h], m1) == pytest.approx(expected, abs=1e-6)
    p, q = lookup[(a,)], lookup[(b,)]
    shapley = F.shapley_value(case, values=values)["shapley_usd"]
    # veto player with two homes: six orders, worked by hand
    assert shapley[a] == pytest.approx((p + 2 * (r - q)) / 6, abs=1e-9)
    assert shapley[b] == pytest.approx((q + 2 * (r - p)) / 6, abs=1e-9)
    assert shapley["aggregator"] == pytest.approx(r - shapley[a] - shapley[b], abs=1e-9)
    assert shapley.sum() == pytest.approx(r, abs=1e-9)


@pytest.mark.parametrize("control", F.CONTROLS)
def test_sampled_shapley_converges_to_exact(control):
    case = random_case(5, n_homes=4, n_scenarios=1)
    values = F.coalition_values(case, n_jobs=1)
    exact = F.shapley_value(case, values=values)["shapley_usd"]
    errors = []
    for samples in (50, 2000):
        est = F.shapley_value(case, samples=samples, seed=3, control=control)
        errors.append(np.abs(est["shapley_usd"] - exact).max())
        assert np.all(np.abs(est["shapley_usd"] - exact) <= 4 * est["std_error_usd"] + 1e-9)
        assert est["shapley_usd"].sum() == pytest.approx(exact.sum(), abs=1e-9)  # every permutation is efficient
    assert errors[1] < errors[0]


def test_standalone_control_is_unbiased_and_cuts_the_standard_error():
    case = random_case(8, n_homes=5, n_scenarios=1)
    values = F.coalition_values(case, n_jobs=1)
    exact = F.shapley_value(case, values=values)["shapley_usd"]
    lookup = dict(zip(values.index, values))
    alone = F.standalone_values(case, n_jobs=1)
    assert alone.to_numpy() == pytest.approx([lookup[(h,)] for h in case.home_ids], abs=1e-9)
    game_only = F.shapley_value(case, samples=30, seed=4, control=None)
    cv = F.shapley_value(case, samples=30, seed=4)  # the same 30 orders
    assert cv[["plain_shapley_usd", "plain_std_error_usd"]].to_numpy() == pytest.approx(
        game_only[["plain_shapley_usd", "plain_std_error_usd"]].to_numpy(), abs=1e-12
    )
    # each refinement cuts the error: position averaged, then the control variate on top
    assert cv["std_error_usd"].sum() < game_only["std_error_usd"].sum() < game_only["plain_std_error_usd"].sum()
    assert np.all(np.abs(cv["shapley_usd"] - exact) <= 4 * cv["std_error_usd"] + 1e-9)
    # unbiased: the mean over independent seeds approaches the exact value within its own standard error
    means = np.mean([F.shapley_value(case, samples=6, seed=k)["shapley_usd"] for k in range(20)], axis=0)
    spread = cv["std_error_usd"].to_numpy() * np.sqrt(30 / (6 * 20))
    assert np.all(np.abs(means - exact.to_numpy()) <= 5 * spread + 1e-9)
    with pytest.raises(ValueError, match="control"):
        F.shapley_value(case, samples=5, control="stratified")


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None, derandomize=True)
def test_sampling_estimators_average_to_the_exact_shapley_value_over_every_order(seed):
    """Over all N! orders (and, for the textbook estimator, all N + 1 aggregator positions) the per-order draws
    average to the exact Shapley value of a random veto game: both estimators are unbiased by construction."""
    n = 4
    rng = np.random.default_rng(seed)
    table = rng.normal(size=1 << n)  # v of each home set with the aggregator
    table[0] = 0.0
    v = np.zeros(1 << (n + 1))
    v[1::2] = table  # bit 0 = the aggregator: without it, 0
    exact = F.shapley_from_values(v)
    orders = np.array(list(itertools.permutations(range(n))))
    masks = np.cumsum(np.r_[0, 0, 0, 0][None, :] + (1 << orders), axis=1)
    prefix = np.hstack([np.zeros((len(orders), 1)), table[masks]])
    averaged = F._averaged_draws(prefix, orders)
    assert averaged.sum(axis=1) == pytest.approx(prefix[:, -1])  # efficient order by order
    assert averaged.mean(axis=0) == pytest.approx(exact, abs=1e-12)
    every = np.repeat(orders, n + 1, axis=0), np.tile(np.arange(n + 1), len(orders))
    drawn = F._drawn_position_draws(np.repeat(prefix, n + 1, axis=0), *every)
    assert drawn.mean(axis=0) == pytest.approx(exact, abs=1e-12)


def test_core_excess_and_allocation_table(two_homes):
    case, m1, mk = two_homes
    values = F.coalition_values(case, m1, n_jobs=1)
    table = F.allocation_table(case, m1, mk, 0.2, values)
    parties = table.iloc[:3]
    r = dm.settle(case, m1, mk, 0.2).surplus
    assert parties.sum().to_numpy() == pytest.approx(np.full(5, r), abs=1e-7)  # every rule splits Delta C
    assert table.loc["l1_distance_to_shapley_usd", "shapley"] == pytest.approx(0.0, abs=1e-12)
    e, who = F.core_excess(case, parties["nucleolus"], values)
    assert e == pytest.approx(table.loc["core_excess_usd", "nucleolus"])
    assert who and set(who) <= {"aggregator", *case.home_ids}
    e_all, _ = F.core_excess(case, np.r_[r, 0.0, 0.0], values)  # the aggregator takes all: a veto player may
    assert e_all <= 1e-9


def test_too_many_homes_points_to_sampling():
    with pytest.raises(ValueError, match="samples"):
        F.coalition_values(random_case(1, n_homes=15, n_scenarios=1))


def test_core_profit_rate_is_where_the_core_excess_turns_negative(two_homes):
    case, m1, mk = two_homes
    values = F.coalition_values(case, m1, n_jobs=1)
    for rule in ("contribution", "equal"):
        rho = F.core_profit_rate(case, mk, values, rule)
        assert 0.0 <= rho <= 1.0
        for r, inside in ((rho + 1e-3, True), (rho - 1e-3, False)):
            if not 0 <= r <= 1:
                continue
            st_ = dm.settle(case, m1, mk, r, rule)
            e, _ = F.core_excess(case, np.r_[st_.aggregator_gain, st_.home_gain], values)
            assert (e <= 1e-9) == inside, (rule, r, e)


def test_least_core_exact_and_sampled_bound(two_homes):
    """Exact: the LP over every coalition equals the generic least core; sampled: a lower bound, labelled."""
    case, m1, _ = two_homes
    values = F.coalition_values(case, m1, n_jobs=1)
    exact = F.least_core(case, values)
    assert exact.exact and exact.value == pytest.approx(F.least_core_from_values(F.game_vector(case, values))[0])
    assert exact.allocation.sum() == pytest.approx(dm.settle(case, m1, dm.clear_market(case), 0.2).surplus)
    four = random_case(5, n_homes=4, n_scenarios=1)
    truth = F.least_core(four).value
    sampled = F.least_core(four, samples=3, seed=1)
    assert not sampled.exact and sampled.value <= truth + 1e-9
    assert F.least_core(four, samples=50, seed=1).value == pytest.approx(truth, abs=1e-9)  # all 14 coalitions
    members = np.array([[1, 0], [0, 1]], dtype=bool)  # two players, v({i}) = 1, v(N) = 1: e* = 1/2
    assert F.least_core_from_coalitions(members, np.array([1.0, 1.0]), 1.0)[0] == pytest.approx(0.5)


def test_sampled_nucleolus_is_labelled_and_exact_with_every_coalition():
    four = random_case(5, n_homes=4, n_scenarios=1)
    exact = F.nucleolus(four)
    assert exact.name == "nucleolus_usd"
    full = F.nucleolus(four, samples=50, seed=1)  # the sample then holds every coalition
    assert full.name == "nucleolus_sampled_usd"
    assert full.to_numpy() == pytest.approx(exact.to_numpy(), abs=1e-7)
    few = F.nucleolus(four, samples=2, seed=1)
    assert few.sum() == pytest.approx(exact.sum(), abs=1e-9)  # efficient whatever the sample


def test_sampled_shapley_depends_on_the_seed_only_not_on_workers():
    case = random_case(5, n_homes=4, n_scenarios=1)
    one = F.shapley_value(case, samples=40, seed=2, n_jobs=1)
    two = F.shapley_value(case, samples=40, seed=2, n_jobs=2)
    assert np.array_equal(one.to_numpy(), two.to_numpy())
    assert not np.array_equal(one.to_numpy(), F.shapley_value(case, samples=40, seed=3, n_jobs=1).to_numpy())


def test_sampled_shapley_on_the_paper_case_covers_the_exact_value():
    """Against the exact Shapley value of the committed game of the paper case (notebook 08's 1,024 coalition
    values, rounded to 1e-4 $/day): the sampled estimate's error shrinks with permutations and its standard
    error covers the exact value."""
    import pandas as pd

    from desmarket import data
    from desmarket.io import project_root

    table = pd.read_csv(project_root() / "results" / "tables" / "coalition_values.csv", keep_default_na=False)
    case = data.build_case()
    values = pd.Series(
        table["value_usd_per_day"].to_numpy(),
        index=pd.Index([tuple(h.split(" + ")) if h else () for h in table["homes"]], tupleize_cols=False),
    )
    exact = F.shapley_value(case, values=values)["shapley_usd"]
    m1 = dm.solve_independent(case)
    errors = []
    for samples in (16, 128):
        est = F.shapley_value(case, samples=samples, seed=0, independent=m1)
        error = np.abs(est["shapley_usd"] - exact)
        assert np.all(error <= 4 * est["std_error_usd"] + 1e-3), error.max()  # 1e-3: the table's rounding
        assert est["shapley_usd"].sum() == pytest.approx(values[case.home_ids], abs=1e-3)
        errors.append(error.max())
    assert errors[1] < errors[0]


def test_core_excess_says_which_gains_it_expects(two_homes):
    """Gains are N + 1, the aggregator's first: the homes' gains alone were a raw numpy matmul error, and a Series
    without the aggregator silently became NaN. Checked before any coalition is cleared."""
    case, m1, mk = two_homes
    st = dm.settle(case, m1, mk, 0.2)
    with pytest.raises(ValueError, match=r"N \+ 1 = 3 values, the aggregator's first.*got shape \(2,\)"):
        F.core_excess(case, st.home_gain)
    with pytest.raises(ValueError, match=r"missing \['aggregator'\]"):
        F.core_excess(case, pd.Series(st.home_gain, index=case.home_ids))
    with pytest.raises(ValueError, match="finite"):
        F.core_excess(case, [np.nan, 0.0, 0.0])


# ================================================================ the direct coalition clearing (coalitions.py)
def _tight_case(seed, grid_limit_kw):
    """random_case's homes (one idle: rows left empty once its fixed columns go) behind a tight connection, so
    that grid and trade limits bind in some coalitions' clearings."""
    from desmarket.synthetic import LMP_SHAPE, LOAD_SHAPE, SOLAR_SHAPE

    rng = np.random.default_rng(seed)
    n, s, T = 4, 2, dm.HOURS
    load = rng.uniform(0.3, 1.5, (n, 1, 1)) * LOAD_SHAPE * rng.uniform(0.75, 1.25, (n, s, T))
    pv = rng.uniform(2.0, 5.0, (n, 1, 1)) * SOLAR_SHAPE * rng.uniform(0.6, 1.0, (n, s, T))
    load[-1], pv[-1] = 0.0, 0.0
    return dm.create_case(
        load,
        pv,
        utility_a=-rng.uniform(0.1, 0.5, n) / 100,
        utility_b=rng.uniform(20.0, 50.0, n) / 100,
        lmp=0.035 * LMP_SHAPE * rng.uniform(0.8, 1.2, T),
        probability=rng.dirichlet(np.full(s, 2.0)),
        battery_kwh=np.array([13.5, 6.4, 0.0, 0.0]),
        grid_limit_kw=grid_limit_kw,
    )


@pytest.mark.parametrize("grid_limit_kw", [10.0, 2.0])
def test_the_reduced_coalition_problem_clears_as_the_full_one(grid_limit_kw):
    """Every coalition of each scenario: the reduced problem (routing and limits out, Eqs. 16-19 summed), where
    it is routable, has the full clearing's cost to 1e-7 $/day; where it is not (a limit binds: exercised at a
    2 kW connection), solve falls back to the full problem; solving several coalitions in one block-diagonal
    PIQP problem gives each one's own clearing."""
    from desmarket import coalitions as C

    case = _tight_case(3, grid_limit_kw)
    masks = C.all_masks(case.n_homes)[1:]
    cost = lambda solved: float((solved.wholesale - solved.utility).sum())
    fallbacks = 0
    for scenario in range(case.n_scenarios):
        program = C.ScenarioProgram(case, scenario)
        assert program.reduced is not None
        coalition_list = [np.flatnonzero(m) for m in masks]
        together = program.solve(coalition_list)
        reduced = program.solve_reduced(coalition_list)
        for members, both, alone in zip(coalition_list, together, reduced):
            full = program.solve_full(members)
            assert cost(both) == pytest.approx(cost(full), abs=1e-7)
            if alone is None:
                fallbacks += 1
            else:
                assert cost(alone) == pytest.approx(cost(full), abs=1e-7)
                assert cost(program.solve(members)) == pytest.approx(cost(alone), abs=1e-7)  # alone, batched
    assert (fallbacks > 0) == (grid_limit_kw < 5)


def test_routable_checks_each_homes_grid_and_trade_interval():
    """Hour 1 imports 3 kW: a home consuming 3 kW behind a 2 kW connection is routable only with a neighbour that
    can take its extra kW within its own limits (Eqs. 7, 17-19); an exporter beyond its trade limit is not."""
    from desmarket.coalitions import routable

    two = np.array([2.0, 2.0])
    assert routable(np.array([[3.0], [0.0]]), two, two)  # the neighbour buys 1 kW more and sells it on
    assert not routable(np.array([[3.0]]), two[:1], two[:1])  # alone: 3 kW through a 2 kW connection
    assert not routable(np.array([[3.0], [0.0]]), two, np.array([0.5, 2.0]))  # its trade limit binds
    assert routable(np.array([[-1.0], [1.5]]), two, two)  # the importer takes the exporter's kW
    assert not routable(np.array([[-1.0], [1.5]]), two, np.array([2.0, 0.5]))  # 1 kW trade needed, 0.5 allowed
    assert routable(np.zeros((2, 3)), two, two)


@settings(max_examples=60, deadline=None)
@given(
    nets=st.lists(st.lists(st.floats(-4, 4), min_size=3, max_size=3), min_size=1, max_size=5),
    grid=st.floats(0.5, 5),
    limit=st.floats(0.1, 5),
)
def test_a_routing_meets_every_equation_and_limit_or_there_is_none(nets, grid, limit):
    """coalitions.routing: Pl - Ps = n + x (Eq. 17), sum x = 0 (Eq. 18), 0 <= Pl, Ps <= grid (Eq. 7) with one of
    them 0, |x| <= x_bar (Eq. 19), each limit kept by the margin; None exactly when routable says no."""
    from desmarket.coalitions import routable, routing

    net = np.array(nets)
    k = len(net)
    grid_kw, x_bar, margin = np.full(k, grid), np.full(k, limit), 1e-4
    flows = routing(net, grid_kw, x_bar, margin)
    assert (flows is not None) == routable(net, grid_kw, x_bar, margin)
    if flows is None:
        return
    x, Pl, Ps = flows
    np.testing.assert_allclose(Pl - Ps, net + x, atol=1e-9)
    np.testing.assert_allclose(x.sum(axis=0), 0.0, atol=1e-9)
    assert (Pl >= 0).all() and (Ps >= 0).all() and (np.minimum(Pl, Ps) == 0).all()
    assert (Pl <= grid - margin + 1e-12).all() and (Ps <= grid - margin + 1e-12).all()
    assert (np.abs(x) <= limit - margin + 1e-9).all()
    np.testing.assert_allclose(Pl.sum(axis=0), np.maximum(net.sum(axis=0), 0), atol=1e-9)  # netted: one direction
