"""The study layer: what-if answers by Parameter values equal rebuilt problems, nothing is rebuilt, and the
layers above it stay pure (report solves nothing, plots set no global state)."""

import ast
import inspect

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest

import desmarket as dm
from desmarket import io, pieces, plots, report
from desmarket import study as studies
from desmarket.synthetic import random_case

pytestmark = pytest.mark.usefixtures("quiet_routing")


@pytest.fixture(scope="module")
def case():
    return random_case(7, n_homes=5, n_scenarios=3)


def _same_study(a: studies.Study, b: studies.Study, tol: float = 1e-6) -> None:
    """Same costs (tol, $), prices and alpha; dispatch within 1e-4 kW: the epsilon tie-break fixes the battery's
    timing only weakly (model.DEFAULT_SOLVER_OPTIONS), so two formulations of one optimum differ there first."""
    for name in ("independent", "market"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.home_cost == pytest.approx(y.home_cost, abs=tol)
        assert x.aggregator_revenue == pytest.approx(y.aggregator_revenue, abs=tol)
        for arr in ("load", "charge", "discharge", "energy", "trade"):
            assert getattr(x, arr) == pytest.approx(getattr(y, arr), abs=1e-4)
    pinned = ~b.market.balanced
    assert a.market.price[pinned] == pytest.approx(b.market.price[pinned], abs=1e-6)
    assert a.m3.surplus == pytest.approx(b.m3.surplus, abs=tol)
    assert a.m3.alpha == pytest.approx(b.m3.alpha, abs=1e-6)


def test_baseline_equals_the_engine(case):
    bench = studies.Workbench(case)
    _same_study(bench.study(0.2), studies.run_study(case, 0.2), tol=1e-9)


@pytest.mark.parametrize(
    "changes, replace",
    [
        ({"buy_ratio": 1.2, "sell_ratio": 0.8}, {"market": {"buy_ratio": 1.2, "sell_ratio": 0.8}}),
        ({"buy_ratio": 1.0, "sell_ratio": 1.0}, {"market": {"buy_ratio": 1.0, "sell_ratio": 1.0}}),
        ({"regularization": 1e-3}, {"market": {"regularization": 1e-3}}),
        ({"net_metering": 0.02}, {"market": {"net_metering_usd_per_kwh": 0.02}}),
    ],
)
def test_market_parameters_by_values_equal_a_rebuilt_case(case, changes, replace):
    got = studies.Workbench(case).study(0.3, **changes)
    want = studies.run_study(case.replace(**replace), 0.3)
    _same_study(got, want)
    assert got.case.market == want.case.market


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0])
def test_battery_scale_equals_a_rebuilt_case(case, scale):
    """Scaling every battery scales its feasible schedules (formulation.Parameters); checked against new data."""
    got = studies.Workbench(case).study(0.2, battery_scale=scale)
    bigger = case.replace(battery_kwh=case.column("battery_kwh") * scale, battery_kw=case.column("battery_kw") * scale)
    _same_study(got, studies.run_study(bigger, 0.2))
    assert got.case.column("battery_kwh") == pytest.approx(bigger.column("battery_kwh"))


def test_prices_by_values_equal_a_rebuilt_case(case):
    retail, lmp = case.retail * 1.3, np.roll(case.lmp, 3)
    got = studies.Workbench(case).study(0.2, retail=retail, lmp=lmp)
    want = studies.run_study(studies.variant_case(case, retail=retail, lmp=lmp), 0.2)
    _same_study(got, want)


def test_scenario_subset_needs_no_solve_and_equals_the_smaller_case(case):
    bench = studies.Workbench(case)
    bench.study(0.2)
    solves = bench.solves
    keep = case.scenarios[1:]
    got = bench.study(0.2, scenarios=keep)
    assert bench.solves == solves  # reweighting of solved scenarios only
    want = studies.run_study(studies.variant_case(case, scenarios=keep), 0.2)
    _same_study(got, want)
    assert got.case.probability == pytest.approx(case.probability[1:] / case.probability[1:].sum())


def test_costs_are_recomputed_by_hand_at_the_new_prices(case):
    """The reported costs are those of the prices solved (not the case's), recomputed here from the dispatch."""
    _, m1, mk = studies.Workbench(case).operations(buy_ratio=1.5, retail=case.retail * 2)
    pi = case.probability
    a, b = case.column("utility_a")[:, None, None], case.column("utility_b")[:, None, None]
    for op, price in ((m1, case.retail * 2), (mk, case.retail * 2)):
        bill = np.einsum("s,nst->n", pi, op.net_load * price)
        credit = np.einsum("s,nst->n", pi, op.net_surplus) * case.market.net_metering_usd_per_kwh
        utility = np.einsum("s,nst->n", pi, a * op.load**2 + b * op.load)
        assert op.home_cost == pytest.approx(bill - credit - utility, abs=1e-9)
    buy, sell = 1.5 * case.lmp, case.sell_price
    totals = lambda v: v.sum(axis=0)
    revenue = pi @ (
        (case.retail * 2 - buy) * totals(mk.net_load)
        + (sell - case.market.net_metering_usd_per_kwh) * totals(mk.net_surplus)
    ).sum(axis=1)
    assert mk.aggregator_revenue == pytest.approx(revenue, abs=1e-9)


def test_sensitivity_builds_each_problem_once(case, monkeypatch):
    built = []
    original = studies.formulate
    monkeypatch.setattr(studies, "formulate", lambda *a: built.append(1) or original(*a))
    bench = studies.Workbench(case, chunk_rows=6)  # several pieces per problem
    table = studies.sensitivity(bench, 0.2, n_scenarios_options=(1, 2))
    n_pieces = len(pieces.independent_pieces(case, 6)) + len(pieces.clearing_pieces(case, 6))
    assert len(built) == n_pieces
    # re-solves: baseline both, k^b/k^s the clearing only (3 rows), battery both (3), epsilon both (2), scenarios none
    m1, mk = len(pieces.independent_pieces(case, 6)), len(pieces.clearing_pieces(case, 6))
    assert bench.solves == (m1 + mk) * (1 + 3 + 2) + mk * 3
    assert list(table.index.get_level_values("choice").unique()) == [
        "baseline",
        "k^b / k^s",
        "battery kWh and kW",
        "scenarios",
        "epsilon",
    ]
    base = studies.run_study(case, 0.2)  # other pieces (256 rows), so equal to the solver's tolerance
    assert table.loc[("baseline", "MODEL.md default"), "surplus_usd"] == pytest.approx(base.m3.surplus, rel=1e-7)


def test_second_solver_is_a_re_solve_of_the_same_problems(case, monkeypatch):
    bench = studies.Workbench(case)
    baseline = bench.study(0.2)
    monkeypatch.setattr(studies, "formulate", lambda *a: pytest.fail("rebuilt a problem"))
    table = studies.solver_agreement(bench, baseline)
    assert table["agree"].all(), table
    assert studies.solver_agreement(bench, baseline, max_rows=case.n_homes) is None


def test_workbench_rejects_bad_input(case):
    with pytest.raises(TypeError, match="load_case"):
        studies.Workbench("cases/paper")
    with pytest.raises(ValueError, match="battery_scale"):
        studies.Workbench(case).study(battery_scale=-1)
    with pytest.raises(ValueError, match="subset"):
        studies.Workbench(case).study(scenarios=["nope"])
    with pytest.raises(dm.CaseError, match="market.json"):
        studies.Workbench(case).study(buy_ratio=0.5)  # below sell ratio: the case's own validation


# ========================================================================================= purity
def _calls(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return names


def test_report_neither_solves_nor_reads_files():
    forbidden = {
        "solve",
        "solve_independent",
        "clear_market",
        "settle",
        "run_study",
        "load_operation",
        "read_csv",
        "load_case",
        "open",
        "read_text",
        "Workbench",
    }
    assert not (_calls(report) & forbidden), _calls(report) & forbidden
    for name in ("engine", "study", "io"):
        assert not hasattr(report, name)


def test_plots_set_no_global_state():
    before = dict(mpl.rcParams)
    table = pd.DataFrame({"traded_kwh": [1.0, 2.0], "alpha": [0.3, 0.5]}, index=["a", "b"])
    fig = plots.figure_alpha_vs_traded(table, 1.0)
    assert {k for k in before if str(before[k]) != str(mpl.rcParams[k])} == set()
    assert fig.axes[0].get_facecolor()[:3] == pytest.approx((1, 1, 1))  # but the figure has the study's style
    assert "sns.set" not in inspect.getsource(plots).replace("sns.set_", "")


# ========================================================================================= claims
def test_claims_file_names_every_headline_number_and_is_validated():
    claims = io.paper_claims()
    study = studies.run_study(random_case(1), 0.2)
    assert set(claims.index[claims["source"] == "headline"]) == set(report.headline(study))
    assert set(claims["source"]) <= set(report.CLAIM_SOURCES)
    assert set(claims["kind"]) <= set(report.CLAIM_KINDS)
    headline_claims = claims[claims["source"] == "headline"]
    card = report.scorecard(study, headline_claims)
    assert list(card.index) == list(headline_claims.index)
    with pytest.raises(KeyError, match="notebook 08"):  # fairness claims need their values
        report.scorecard(study, claims)
    fair = claims[claims["source"] == "fairness"]
    rows = report.scorecard(study, fair, values={k: -1.0 for k in fair.index})
    assert (rows["same_direction"] == "yes").all() and (rows["paper"] == "claimed fair").all()
    with pytest.raises(ValueError, match=r"\[x\].*kind"):
        report.parse_claims('[x]\nclaim = "c"\nunit = "-"\nkind = "vibe"\nreason = ""\n')
    with pytest.raises(ValueError, match=r"\[x\].*missing \['paper'\]"):
        report.parse_claims('[x]\nclaim = "c"\nunit = "-"\nkind = "number"\nreason = ""\n')


def test_scorecard_kinds_compare_as_documented():
    assert report.agreement("number", 5.0, np.nan, 40.0) == ("yes", "yes")
    assert report.agreement("number", 5.0, np.nan, 60.0) == ("yes", "no")
    assert report.agreement("number", 5.0, np.nan, -5.0) == ("no", "yes")
    assert report.agreement("sign", np.nan, 1.0, 0.2) == ("yes", "n/a")
    assert report.agreement("sign", np.nan, 1.0, -0.9) == ("no", "n/a")
    assert report.agreement("number", 5.0, np.nan, np.nan) == ("n/a", "n/a")
    assert report.agreement("unreported", np.nan, np.nan, 98.0) == ("n/a", "n/a")  # nothing to compare with
    claims = report.parse_claims('[surplus_usd]\nclaim = "c"\nunit = "%"\nkind = "unreported"\nreason = "why"\n')
    card = report.scorecard(studies.run_study(random_case(1), 0.2), claims)
    assert card.loc["surplus_usd", ["paper", "same_direction", "same_order_of_magnitude", "note"]].tolist() == [
        "not reported",
        "n/a",
        "n/a",
        "why",
    ]  # the reason is always shown: there is no agreement to explain it
    with pytest.raises(ValueError, match=r"\[x\].*unreported"):
        report.parse_claims('[x]\nclaim = "c"\nunit = "-"\nkind = "unreported"\npaper = 1.0\nreason = ""\n')


#: The notes of the reference run (ρ = 0.2, the measured CityLearn homes) before they were generated: the
#: generated notes must stay byte-identical to these.
REFERENCE_NOTES = {
    "surplus_usd": "our homes (California), LMP (synthetic, 2024 PJM level) and kᵇ/kˢ differ from the paper's",
    "storage_change_pct": "our homes already cycle their batteries in M1 to store midday PV for the evening (sunny "
    "California, large PV), so the market adds relatively less",
    "m3_core_excess_usd": "at ρ = 0.2 the aggregator and a group of homes would gain by leaving out the homes M3 pays "
    "most: α rewards traded energy, while almost all of ΔC is each home's stand-alone value "
    "(notebook 08)",
}


def _disagreeing(claims):
    """Values that disagree in direction with every claim, so that every note is shown."""
    return {k: -np.sign(c.paper if c.kind == "number" else c.sign or 1.0) or -1.0 for k, c in claims.iterrows()}


def test_scorecard_notes_are_generated_from_the_run():
    """A rho = 0 run's note said "at ρ = 0.2", a user case's spoke of "our homes (California)" (issue 17). The
    notes are now filled from the run's profit rate and the case's source; the reference run's are unchanged."""
    claims = io.paper_claims()
    reference = {"rho": "0.2", "buy_ratio": "1.1", "sell_ratio": "0.9"}
    for key, text in REFERENCE_NOTES.items():
        assert report.claim_note(claims.loc[key], reference, "measured") == text
    case = random_case(1, n_homes=3, n_scenarios=1)
    zero = studies.run_study(case, 0.0)
    assert report.note_fields(zero)["rho"] == "0"
    card = report.scorecard(zero, claims, values=_disagreeing(claims))
    assert (card["same_direction"] == "no").loc[list(REFERENCE_NOTES)].all()
    assert card.loc["m3_core_excess_usd", "note"].startswith("at ρ = 0 the aggregator")
    assert card.loc["surplus_usd", "note"] == REFERENCE_NOTES["surplus_usd"]  # measured is the default source
    own = report.scorecard(zero, claims, values=_disagreeing(claims), source="case")
    assert not own["note"].str.contains("California|our homes").any(), own["note"]
    assert own.loc["surplus_usd", "note"] == "the case's homes, LMP and kᵇ/kˢ (1.1 / 0.9) differ from the paper's"
    with pytest.raises(ValueError, match="source must be one of"):
        report.scorecard(zero, claims, values=_disagreeing(claims), source="California")
    with pytest.raises(ValueError, match=r"\[x\].*unknown fields \['rate'\]"):
        report.parse_claims('[x]\nclaim = "c"\nunit = "-"\nkind = "unreported"\nreason = "at {rate}"\n')


def test_reference_scorecard_notes_match_the_committed_tables():
    """The committed scorecards (notebooks 06 and 08, ρ = 0.2, measured homes) hold exactly the generated notes."""
    claims = io.paper_claims()
    fields = {"rho": "0.2", "buy_ratio": "1.1", "sell_ratio": "0.9"}
    for name in ("scorecard.csv", "fairness_scorecard.csv"):
        card = pd.read_csv(io.project_root() / "results" / "tables" / name, index_col="key", keep_default_na=False)
        for key, note in card["note"].items():
            if note:
                assert report.claim_note(claims.loc[key], fields) == note


def _lonely_battery_case():
    """Three homes with less PV than load, only the first with a battery: with the market it serves the others'
    evening load (they trade); with battery scale 0 nobody can supply anyone, so the contribution rates are
    undefined."""
    n, hours = 3, np.arange(dm.HOURS)
    lmp = 0.03 + 0.05 * np.exp(-0.5 * ((hours - 18) / 2.0) ** 2)
    pv = np.broadcast_to(np.where((hours >= 10) & (hours < 15), 0.2, 0.0), (n, 1, dm.HOURS))
    return dm.create_case(
        np.ones((n, 1, dm.HOURS)),
        pv,
        utility_a=np.full(n, -0.003),
        utility_b=np.full(n, 0.3),
        lmp=lmp,
        battery_kwh=[13.5, 0.0, 0.0],
        battery_kw=[5.0, 0.0, 0.0],
    )


def test_a_sensitivity_row_that_cannot_be_computed_is_a_row_with_its_reason(tmp_path):
    table = studies.sensitivity(studies.Workbench(_lonely_battery_case()), 0.2)
    failed = table.loc[("battery kWh and kW", "x0.0")]
    assert failed["reason"].startswith("NoTradeError: no home's trades")
    assert failed.drop("reason").isna().all()
    ok = table.drop(("battery kWh and kW", "x0.0"))
    assert (ok["reason"] == "").all() and ok.drop(columns="reason").notna().all().all()
    assert len(table) == len(studies.sensitivity_variants(_lonely_battery_case()))
    path = report.save_table(table, tmp_path / "sensitivity.csv", decimals=3)  # as notebook 06 writes it
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert back["reason"].fillna("").tolist() == table["reason"].tolist()
