"""A result used with a case it was not solved on is refused (issue 17): the case fingerprint of every Operation
(desmarket.model.case_fingerprint) is checked by the settlement, the fairness game, the result files and the study."""

import json

import numpy as np
import pandas as pd
import pytest

import desmarket as dm
from desmarket import fairness, io
from desmarket import study as studies
from desmarket.errors import MismatchError
from desmarket.synthetic import random_case

pytestmark = pytest.mark.usefixtures("quiet_routing")


def _perturbed(case: dm.Case) -> dm.Case:
    """The same homes, scenarios and probabilities, other loads and LMP: a different case that the old checks
    (ids, shapes, probabilities) could not tell apart."""
    frames = case.to_frames()
    frames["profiles"]["load_kw"] = frames["profiles"]["load_kw"] * 1.3
    frames["prices"]["lmp_usd_per_kwh"] = frames["prices"]["lmp_usd_per_kwh"][::-1].to_numpy()
    return dm.Case.from_frames(**frames)


@pytest.fixture(scope="module")
def pair():
    """(case, its M1, its clearing, another case with the same ids and probabilities, that case's M1, clearing)."""
    case = random_case(7, n_homes=3, n_scenarios=2)
    other = _perturbed(case)
    assert other.home_ids == case.home_ids and np.array_equal(other.probability, case.probability)
    return (
        case,
        dm.solve_independent(case),
        dm.clear_market(case),
        other,
        dm.solve_independent(other),
        dm.clear_market(other),
    )


def test_settle_refuses_a_market_solved_on_another_case(pair):
    case, m1, mk, other, m1_other, mk_other = pair
    with pytest.raises(MismatchError, match="market result was solved on another case.*Solve it on this case"):
        dm.settle(case, m1, mk_other, 0.2)
    with pytest.raises(MismatchError, match="independent result was solved on another case"):
        dm.settle(other, m1, mk_other, 0.2)
    with pytest.raises(MismatchError, match="solved on different cases"):
        dm.cooperative_surplus(m1, mk_other)
    with pytest.raises(MismatchError, match="independent result"):
        dm.cooperative_surplus(m1, mk, other)
    with pytest.raises(MismatchError, match="market result"):
        dm.contribution_rates(case, mk_other, 0.2)
    with pytest.raises(MismatchError):
        dm.profit_rate_sweep(case, m1, mk_other, [0.0, 0.5])
    with pytest.raises(MismatchError):
        studies.settled_study(case, m1_other, mk, 0.2)
    # the right pairs still settle, budget-balanced
    st = dm.settle(other, m1_other, mk_other, 0.2)
    assert st.aggregator_gain + st.home_gain.sum() == pytest.approx(st.surplus)
    assert dm.cooperative_surplus(m1, mk, case) == pytest.approx(dm.settle(case, m1, mk, 0.2).surplus)


def test_the_fairness_game_refuses_the_m1_of_another_case(pair):
    """Coalition values take each home's part of the grand M1: the M1 given must be the case's (checked before
    any coalition is cleared)."""
    case, m1, mk, other, m1_other, _ = pair
    calls = [
        lambda: fairness.coalition_values(case, m1_other, n_jobs=1),
        lambda: fairness.coalition_value(case, case.home_ids[:2], m1_other),
        lambda: fairness.standalone_values(case, m1_other, n_jobs=1),
        lambda: fairness.shapley_value(case, independent=m1_other, n_jobs=1),
        lambda: fairness.shapley_value(case, samples=2, independent=m1_other, n_jobs=1),
        lambda: fairness.sampled_game(case, 2, independent=m1_other),
    ]
    for call in calls:
        with pytest.raises(MismatchError, match="independent result was solved on another case"):
            call()
    with pytest.raises(TypeError, match="M1 result"):
        fairness.coalition_values(case, mk, n_jobs=1)
    values = fairness.coalition_values(case, m1, n_jobs=1)
    with pytest.raises(MismatchError):
        fairness.allocation_table(case, m1_other, mk, 0.2, values)
    with pytest.raises(MismatchError, match="market result"):
        fairness.core_profit_rate(case, pair[5], values)


def test_result_files_keep_the_fingerprint_and_are_checked(pair, tmp_path):
    case, m1, mk, other, _, _ = pair
    io.save_operation(m1, case, tmp_path, "m1")
    io.save_operation(mk, case, tmp_path, "market")
    back = io.load_operation(case, tmp_path, "market")
    assert back.fingerprint == mk.fingerprint == dm.model.case_fingerprint(case)
    study = studies.load_study(case, tmp_path, 0.2)
    assert study.m3.surplus == pytest.approx(dm.settle(case, m1, mk, 0.2).surplus, abs=1e-9)
    with pytest.raises(MismatchError, match=r"market_summary.json was solved on another case.*03_market_clearing"):
        io.load_operation(other, tmp_path, "market")
    with pytest.raises(MismatchError, match="m1_summary.json was solved on another case"):
        studies.load_study(other, tmp_path, 0.2)
    summary = tmp_path / "m1_summary.json"  # a file written before the fingerprint: refused, with the fix
    meta = json.loads(summary.read_text())
    del meta["case_fingerprint"]
    summary.write_text(json.dumps(meta))
    with pytest.raises(MismatchError, match="no case_fingerprint.*rerun the notebook 02_independent"):
        io.load_operation(case, tmp_path, "m1")


def test_workbench_operations_carry_the_fingerprint_of_their_variant(pair):
    """What-if answers are fingerprinted as the variant case they answer (other k^b, a scenario subset)."""
    case = pair[0]
    variant, m1, mk = studies.Workbench(case).operations(buy_ratio=1.2, scenarios=case.scenarios[:1])
    fp = dm.model.case_fingerprint(variant)
    assert m1.fingerprint == mk.fingerprint == fp != dm.model.case_fingerprint(case)
    dm.settle(variant, m1, mk, 0.2, "equal")
    with pytest.raises(MismatchError):
        dm.settle(case.replace(market={"buy_ratio": 1.2}), m1, mk, 0.2, "equal")


def test_a_result_file_of_an_older_format_is_a_data_error_naming_it(pair, tmp_path):
    case, _, mk, *_ = pair
    io.save_operation(mk, case, tmp_path, "market")
    prices = tmp_path / "market_prices.csv"
    table = pd.read_csv(prices)
    table.drop(columns="congested").to_csv(prices, index=False)
    with pytest.raises(dm.DataError, match=r"market_prices\.csv, column 'congested'.*rerun the notebook"):
        io.load_operation(case, tmp_path, "market")
