"""The settlement rules of issue 22 (stand-alone, marginal, synergy = M4, nucleolus at rho): their definitions
by hand, their promises on random communities, and the masked coalition values against the per-coalition ones."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import desmarket as dm
from desmarket import coalitions
from desmarket import fairness as F
from desmarket.settlement import VALUE_RULES, RuleValues, rule_shares
from desmarket.synthetic import random_case

nonneg = st.floats(0.0, 10.0, allow_nan=False)


def _game(n, v):
    """Value vector over bitmasks from a function of the frozenset of players (player 0: the aggregator)."""
    return np.array([v(frozenset(k for k in range(n) if (m >> k) & 1)) for m in range(1 << n)], dtype=float)


def _solved(seed, n_homes=3, n_scenarios=1):
    case = random_case(seed, n_homes=n_homes, n_scenarios=n_scenarios)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        return case, dm.solve_independent(case), dm.clear_market(case)


# ------------------------------------------------------------------ the definitions, by hand
def test_marginal_rule_on_a_four_home_game_by_hand():
    """v(N) = 10, v(N - 1) = 7, v(N - 2) = 8, v(N - 3) = 9, v(N - 4) = 10: m = (3, 2, 1, 0), shares m / 6, and
    at rho = 0.2 the homes gain 0.8 x 10 x m / 6 = (4, 8/3, 4/3, 0)."""
    values = RuleValues(np.full(4, np.nan), np.array([7.0, 8.0, 9.0, 10.0]), 10.0)
    shares = rule_shares("marginal", 4, values=values)
    assert shares == pytest.approx([0.5, 1 / 3, 1 / 6, 0.0], abs=1e-15)
    assert 0.8 * 10.0 * shares == pytest.approx([4.0, 8 / 3, 4 / 3, 0.0])


def test_marginal_rule_reads_the_game_by_hand():
    """The same four-home game as a full value vector (the aggregator a veto player): rule_values_of_game finds
    the leave-one-out values where the hand computation puts them."""
    case = random_case(0, n_homes=4)
    out = {1: 7.0, 2: 8.0, 3: 9.0, 4: 10.0}  # v(N - {player i}), players 1..4 are the homes

    def v(S):
        if 0 not in S or len(S) == 1:
            return 0.0
        if len(S) == 5:
            return 10.0
        return out[({1, 2, 3, 4} - S).pop()] if len(S) == 4 else float(len(S) - 1)

    vector = _game(5, v)
    series = _series(case, vector)
    rv = F.rule_values_of_game(case, series)
    assert rv.leave_one_out == pytest.approx([7.0, 8.0, 9.0, 10.0]) and rv.grand == 10.0
    assert F.game_shares(case, None, series, "marginal") == pytest.approx([0.5, 1 / 3, 1 / 6, 0.0])


def _series(case, vector):
    """A coalition_values-like Series (index: tuples of home ids) of a bitmask game, player 0 the aggregator."""
    import pandas as pd

    ids, n = case.home_ids, case.n_homes
    index, data = [], []
    for mask in range(1 << n):
        index.append(tuple(ids[k] for k in range(n) if (mask >> k) & 1))
        data.append(vector[1 | (mask << 1)] if mask else 0.0)
    return pd.Series(data, index=pd.Index(index, tupleize_cols=False))


@given(st.lists(nonneg, min_size=2, max_size=6), st.floats(0.1, 20.0))
def test_m4_is_the_standalone_rule_when_nobody_trades(s, extra):
    s = np.array(s)
    s[0] += 0.5  # some stand-alone value
    values = RuleValues(s, np.full(len(s), np.nan), float("nan"))
    m4 = rule_shares("synergy", len(s), np.zeros(len(s)), values, s.sum() + extra)
    assert m4 == pytest.approx(rule_shares("standalone", len(s), values=values), abs=1e-12)


@given(st.lists(nonneg, min_size=2, max_size=6), st.floats(0.1, 20.0))
def test_m4_is_m3_when_every_standalone_value_is_zero(c, surplus):
    c = np.array(c)
    c[-1] += 0.25
    values = RuleValues(np.zeros(len(c)), np.full(len(c), np.nan), float("nan"))
    m4 = rule_shares("synergy", len(c), c, values, surplus)
    assert m4 == pytest.approx(rule_shares("contribution", len(c), c), abs=1e-12)
    assert m4 == pytest.approx(c / c.sum(), abs=1e-12)


#: Stand-alone values as the rules read them: zero, or clear of the noise floor (VALUE_TOLERANCE, tested below).
clear_value = st.one_of(st.just(0.0), st.floats(1e-5, 10.0, allow_nan=False))


@given(st.lists(st.tuples(clear_value, nonneg), min_size=2, max_size=6), st.floats(-2.0, 5.0))
def test_m4_credits_standalone_value_and_splits_the_synergy_by_contribution(pairs, synergy):
    """sigma_i Delta C = s_i + synergy c_i / sum c when the synergy is positive; s_i Delta C / sum s otherwise
    (a negative synergy is noise and is shared like the stand-alone value, so nobody loses)."""
    s, c = (np.array(x) for x in zip(*pairs))
    s[0], c[-1] = s[0] + 1.0, c[-1] + 1.0
    surplus = s.sum() + synergy
    values = RuleValues(s, np.full(len(s), np.nan), float("nan"))
    shares = rule_shares("synergy", len(s), c, values, surplus)
    expect = s + synergy * c / c.sum() if synergy > 0 else s * surplus / s.sum()
    assert shares * surplus == pytest.approx(expect, abs=1e-9)
    assert shares.sum() == pytest.approx(1.0) and np.all(shares >= 0)


def test_a_standalone_value_below_the_noise_floor_counts_as_zero():
    """The case hypothesis found: s_2 = 7.8e-8 < VALUE_TOLERANCE is solver noise, so it is no stand-alone credit
    and the 7.8e-8 of ΔC above s_1 is synergy, split by contribution (home 3 trades, home 2 does not)."""
    from desmarket.settlement import VALUE_TOLERANCE

    s, c = np.array([1.0, 7.8e-8, 0.0]), np.array([0.0, 0.0, 1.0])
    assert s[1] < VALUE_TOLERANCE
    surplus = s.sum()
    shares = rule_shares("synergy", 3, c, RuleValues(s, np.full(3, np.nan), float("nan")), surplus)
    assert shares * surplus == pytest.approx([1.0, 0.0, 7.8e-8], abs=1e-12)


def test_a_rule_without_anything_to_share():
    """M3 raises when nobody trades (as before); the new rules fall back to the equal split (M2)."""
    n = 3
    values = RuleValues(np.zeros(n), np.full(n, 4.0), 4.0)
    with pytest.raises(dm.NoTradeError, match="rule='equal'"):
        rule_shares("contribution", n, np.zeros(n), values, 4.0)
    for rule in VALUE_RULES:
        assert rule_shares(rule, n, np.zeros(n), values, 4.0) == pytest.approx(np.full(n, 1 / 3), abs=1e-15)


def test_unknown_rule_is_one_case_error_listing_the_rules():
    case, m1, mk = _solved(1)
    with pytest.raises(dm.CaseError, match="rule.*shapley.*contribution, equal, standalone, marginal, synergy"):
        dm.settle(case, m1, mk, 0.2, "shapley")
    with pytest.raises(dm.CaseError, match="method"):
        F.coalition_values(case, m1, method="fast")


# ---------------------------------------------------------------- the core of textbook games
@given(st.integers(2, 6), st.floats(0.0, 1.0), st.floats(1.0, 4.0), st.floats(0.1, 5.0))
@settings(max_examples=40, deadline=None)
def test_standalone_rule_is_in_the_core_of_a_convex_game(n_homes, rho, power, scale):
    """The symmetric convex game v(S) = scale m^power for S = the aggregator and m homes (0 without it; power >= 1,
    so its increments grow: convex). Every home has the same stand-alone value, so the rule pays the homes
    (1 - rho) V m / N and a coalition gets rho V + (1 - rho) V m / N >= V m / N >= v(S) (convex, v(0) = 0)."""
    vector = _game(n_homes + 1, lambda S: scale * (len(S) - 1) ** power if 0 in S else 0.0)
    standalone = np.full(n_homes, vector[0b11])  # v({aggregator, home})
    shares = rule_shares("standalone", n_homes, values=RuleValues(standalone, np.full(n_homes, np.nan), np.nan))
    grand = vector[-1]
    x = np.r_[rho * grand, (1 - rho) * grand * shares]
    assert x.sum() == pytest.approx(grand)
    assert F.max_excess(vector, x)[0] <= 1e-9 * grand


def test_standalone_rule_is_not_in_the_core_of_every_convex_game_at_rho_zero():
    """Why the rule keeps rho: v(S) = (sum_S w)^2 with ten homes of weight 1 and one of weight 10. The ten small
    homes together are worth 100, but their stand-alone shares (1 each of 110) give them 400 x 10 / 110 = 36.4
    at rho = 0; the aggregator's share closes the gap from rho = (100 - 36.4) / (400 - 36.4) on."""
    w = np.r_[np.ones(10), 10.0]
    vector = _game(12, lambda S: sum(w[k - 1] for k in S if k) ** 2 if 0 in S else 0.0)
    shares = rule_shares("standalone", 11, values=RuleValues(w**2, np.full(11, np.nan), np.nan))
    grand = vector[-1]
    at = lambda rho: F.max_excess(vector, np.r_[rho * grand, (1 - rho) * grand * shares])[0]
    assert at(0.0) == pytest.approx(100 - 400 * 10 / 110)
    bound = (100 - 400 * 10 / 110) / (400 - 400 * 10 / 110)
    assert at(bound + 1e-9) <= 1e-9 < at(bound - 1e-3)


def test_nucleolus_at_rho_pins_the_aggregator_and_treats_symmetric_homes_equally():
    vector = _game(4, lambda S: (len(S) - 1) ** 2 * 1.0 if 0 in S else 0.0)  # symmetric, convex
    x = F.nucleolus_at_rate(vector, 0.2)
    assert x[0] == pytest.approx(0.2 * vector[-1])
    assert x[1:] == pytest.approx(np.full(3, 0.8 * vector[-1] / 3))
    assert F.smallest_core_rate(vector) == pytest.approx(0.0, abs=1e-9)  # v(homes alone) = 0: all to homes is core
    glove = _game(3, lambda S: float(0 in S and len(S) > 1))  # the aggregator holds the only left glove
    assert F.smallest_core_rate(glove) == pytest.approx(1.0)


# ------------------------------------------------------------ the promises on random communities
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.2, 0.55]))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_rule_is_budget_balanced_and_individually_rational(seed, rho):
    case, m1, mk = _solved(seed, n_homes=2 + seed % 3)
    surplus = dm.cooperative_surplus(m1, mk)
    values = F.coalition_values(case, m1, n_jobs=1)  # per-coalition clearings: independent of the masked solve
    for rule in VALUE_RULES:
        st_ = dm.settle(case, m1, mk, rho, rule, n_jobs=1)
        assert st_.home_gain.sum() + st_.aggregator_gain == pytest.approx(surplus, abs=1e-9)  # budget balance
        assert st_.aggregator_gain == pytest.approx(rho * surplus, abs=1e-9)
        assert np.all(st_.home_gain >= -1e-9) and np.all(st_.alpha >= 0)  # individual rationality
        assert st_.home_cost == pytest.approx(m1.home_cost - st_.home_gain, abs=1e-9)  # Eq. 26 payments
        # the masked values behind the rule agree with per-coalition clearings
        again = dm.settle(case, m1, mk, rho, rule, values=F.rule_values_of_game(case, values))
        assert again.home_gain == pytest.approx(st_.home_gain, abs=1e-5)


def test_masked_and_direct_coalition_values_equal_a_clearing_per_coalition():
    case, m1, _ = _solved(7, n_homes=4, n_scenarios=2)
    select = F.coalition_values(case, m1, n_jobs=1)
    masked = F.coalition_values(case, m1, n_jobs=1, method="masked")
    assert list(masked.index) == list(select.index)
    assert masked.to_numpy() == pytest.approx(select.to_numpy(), abs=1e-6)
    again = F.coalition_values(case, m1, n_jobs=2, method="masked")
    assert np.array_equal(again.to_numpy(), masked.to_numpy())  # the same bytes whatever the workers
    direct = F.coalition_values(case, m1, n_jobs=1, method="direct")
    assert list(direct.index) == list(select.index)
    assert direct.to_numpy() == pytest.approx(select.to_numpy(), abs=1e-7)
    assert np.array_equal(F.coalition_values(case, m1, n_jobs=2, method="direct").to_numpy(), direct.to_numpy())
    assert coalitions.standalone_values(case, m1) == pytest.approx(
        F.standalone_values(case, m1, n_jobs=1).to_numpy(), abs=1e-6
    )


def test_synergy_rule_is_the_standalone_rule_in_a_community_that_cannot_trade():
    """Homes without PV or battery never have a surplus, so nobody trades; each home still gains alone with the
    aggregator (its flexible load meets the wholesale price), so M4 falls back to the stand-alone rule."""
    T = dm.HOURS
    lmp = 0.04 + 0.03 * np.sin(np.arange(T) / 3)
    case = dm.create_case(
        np.ones((3, 1, T)) * [[[1.0]], [[1.5]], [[2.0]]],
        np.zeros((3, 1, T)),
        utility_a=-0.002,
        utility_b=0.1,  # marginal utility between the wholesale and the retail price: loads respond to the price
        lmp=lmp,
        battery_kwh=0.0,
        battery_kw=0.0,
    )
    m1, mk = dm.solve_independent(case), dm.clear_market(case)
    assert mk.traded_energy.sum() == 0
    assert np.all(coalitions.standalone_values(case, m1) > 1e-3)  # the fallback is exercised, not 1/N
    m4 = dm.settle(case, m1, mk, 0.2, "synergy", n_jobs=1)
    alone = dm.settle(case, m1, mk, 0.2, "standalone", n_jobs=1)
    assert m4.alpha == pytest.approx(alone.alpha, abs=1e-12) and alone.alpha.sum() == pytest.approx(0.8)


def test_verdict_table_on_a_small_community():
    case, m1, mk = _solved(3, n_homes=4, n_scenarios=1)
    values = F.coalition_values(case, m1, n_jobs=1)
    verdicts, gains = F.rule_verdicts(case, m1, mk, 0.2, values)
    assert list(verdicts.index) == list(F.VERDICT_RULES)
    assert np.abs(verdicts["budget_gap_usd"]).max() < 1e-6
    assert verdicts["individually_rational"].all()
    shapley = F.shapley_from_values(F.game_vector(case, values))
    for rule in F.VERDICT_RULES:  # recomputed from the gains
        assert verdicts.loc[rule, "l1_distance_to_shapley_usd"] == pytest.approx(np.abs(gains[rule] - shapley).sum())
        excess = F.core_excess(case, gains[rule].to_numpy(), values)[0]
        assert verdicts.loc[rule, "core_excess_usd"] == pytest.approx(excess)
    # the nucleolus at rho is the least-core point with the aggregator pinned: no rule keeping rho does better
    assert verdicts.loc["nucleolus", "core_excess_usd"] <= verdicts["core_excess_usd"].min() + 1e-9
    # a rule is in the core from its core_profit_rate on
    for rule in VALUE_RULES:
        rho = verdicts.loc[rule, "core_profit_rate"]
        if rho < 0.999:
            above = dm.settle(case, m1, mk, min(rho + 0.001, 1.0), rule, values=F.rule_values_of_game(case, values))
            assert F.core_excess(case, np.r_[above.aggregator_gain, above.home_gain], values)[0] <= 1e-6


def test_sampled_verdicts_bound_the_exact_ones_from_below():
    """On a game small enough to enumerate, the sampled verdict's core excess is a lower bound of the exact one,
    budget balance and individual rationality agree, and its coalitions include every single home."""
    case, m1, mk = _solved(11, n_homes=4, n_scenarios=1)
    values = F.coalition_values(case, m1, n_jobs=1)
    exact, _ = F.rule_verdicts(case, m1, mk, 0.2, values, rules=VALUE_RULES)
    sampled = F.sampled_rule_verdicts(case, m1, mk, 0.2, samples=3, orders=8, rules=VALUE_RULES, n_jobs=1)
    assert np.all(sampled["core_excess_lower_bound_usd"] <= exact["core_excess_usd"] + 1e-6)
    assert np.abs(sampled["budget_gap_usd"]).max() < 1e-9
    assert sampled["individually_rational"].all()
    assert (sampled["coalitions_checked"] >= 2 * case.n_homes).all()
    # without the "everyone but one" coalitions and the Shapley orders (what fits at 1,000 homes), direct values
    light = ("equal", "contribution", "standalone", "synergy")
    cheap = F.sampled_rule_verdicts(
        case, m1, mk, 0.2, samples=3, orders=0, rules=light, n_jobs=1, leave_one_out=False, method="direct"
    )
    both = [r for r in light if r in sampled.index]  # fewer coalitions checked: a lower bound of the bound
    assert np.all(
        cheap.loc[both, "core_excess_lower_bound_usd"] <= sampled.loc[both, "core_excess_lower_bound_usd"] + 1e-7
    )
    assert cheap["individually_rational"].all() and cheap["l1_distance_to_shapley_usd"].isna().all()
    with pytest.raises(dm.CaseError, match="leave_one_out"):
        F.sampled_rule_verdicts(case, m1, mk, 0.2, samples=3, orders=0, n_jobs=1, leave_one_out=False)


def test_large_communities_clear_each_coalition_over_its_own_rows(monkeypatch):
    """Above MAX_MASKED_ROWS the mask Parameter's dense tensor would not fit: each coalition is then built over
    its own rows; both ways give the same values, and the stand-alone values match a clearing per home."""
    case, m1, _ = _solved(5, n_homes=4, n_scenarios=2)
    masks = np.array([[1, 1, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    masked = coalitions.masked_values(case, m1, masks, n_jobs=1)
    monkeypatch.setattr(coalitions, "MAX_MASKED_ROWS", 1)
    assert coalitions.masked_values(case, m1, masks, n_jobs=1) == pytest.approx(masked, abs=1e-6)
    monkeypatch.setattr(coalitions, "STANDALONE_CHUNK", 3)  # two problems of homes
    assert coalitions.standalone_values(case, m1) == pytest.approx(
        F.standalone_values(case, m1, n_jobs=1).to_numpy(), abs=1e-6
    )


def _one_exporter_case():
    """Two homes without PV (loads 1 and 1.5 kW) and one with a 1 kW PV peak over a 0.3 kW load, no batteries:
    the exporter's midday surplus (<= 0.7 kW) is below either other home's lowest load (0.8 kW), so every
    coalition that holds a home without PV imports at every hour, and the exporter alone does not."""
    T = dm.HOURS
    sun = np.clip(np.sin((np.arange(T) - 6) / 13 * np.pi), 0, None)
    return dm.create_case(
        np.ones((3, 1, T)) * np.array([1.0, 1.5, 0.3])[:, None, None],
        np.zeros((3, 1, T)) + np.array([0.0, 0.0, 1.0])[:, None, None] * sun,
        utility_a=-0.002,
        utility_b=0.1,
        lmp=0.04 + 0.03 * np.sin(np.arange(T) / 3),
        battery_kwh=0.0,
        battery_kw=0.0,
    )


def test_a_clearing_price_certifies_the_sub_coalitions_that_keep_its_sign():
    """The grand clearing imports at every hour, so its price lambda^b clears every sub-coalition that also
    imports at every hour (KKT, coalitions.certified_costs): only the grand coalition and the exporter alone are
    solved, and the five certified values -- those pairing the exporter with an importer gain from trade --
    equal a clearing per coalition."""
    case = _one_exporter_case()
    m1 = dm.solve_independent(case)
    masks = coalitions.all_masks(3)
    values, solves = coalitions.certified_values(case, m1, masks, n_jobs=1)
    assert solves == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        select = F.coalition_values(case, m1, n_jobs=1)
    by_mask = {tuple(np.flatnonzero(m)): v for m, v in zip(masks, values)}
    for homes, v in select.items():
        assert by_mask[tuple(case.home_ids.index(h) for h in homes)] == pytest.approx(v, abs=1e-7)
    a, b, c = (by_mask[(k,)] for k in range(3))
    assert by_mask[(0, 2)] > a + c + 1e-4 and by_mask[(1, 2)] > b + c + 1e-4  # trade creates value


def test_a_coalition_piqp_does_not_solve_is_cleared_through_cvxpy(monkeypatch):
    """Where a direct PIQP call does not return solved, the coalition is cleared by the engine's own problem
    (Clarabel fallback): the same values."""
    case = _one_exporter_case()
    m1 = dm.solve_independent(case)
    masks = coalitions.all_masks(3)
    values, _ = coalitions.certified_values(case, m1, masks, n_jobs=1)
    monkeypatch.setattr(coalitions.ScenarioProgram, "solve", lambda self, members: None)
    again, solves = coalitions.certified_values(case, m1, masks, n_jobs=1)
    assert solves == 7 and again == pytest.approx(values, abs=1e-7)
