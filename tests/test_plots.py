"""Figures serve a reader at any size: every figure of desmarket.plots renders at 10 and at 200 homes, within a
fixed pixel size, with few and non-overlapping labels; above plots.MAX_LABELLED_HOMES the per-home figures show
distributions; Figure 3 marks the peak import of each mode and shows the clearing price beside the LMP."""

import functools
import io
import itertools
import warnings

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from matplotlib.text import Text

import desmarket as dm
from desmarket import plots, report
from desmarket.study import run_study
from desmarket.synthetic import random_case

#: Largest figure saved by plots.save_figure, pixels (width, height).
MAX_PIXELS = (1600, 900)
#: Most tick labels, annotations and legend entries a figure may carry (a proxy for "no crowded labels").
MAX_TEXTS = 40
SIZES = (10, 200)


pytestmark = pytest.mark.usefixtures("quiet_routing")


@pytest.fixture(scope="module")
def studies():
    """One solved study per size; the 200-home solve takes a few seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        return {n: run_study(random_case(3, n_homes=n, n_scenarios=2), 0.2) for n in SIZES}


@pytest.fixture(scope="module")
def market_process():
    """Inputs of figure_market_process from a coordinated run: (K, S, T) arrays, independent of the home count."""
    case = random_case(3, n_homes=10, n_scenarios=2)
    history = []
    co = dm.clear_market(case, method="coordinated", callback=history.append)
    return co.convergence, np.stack([s.price for s in history]), co.price, co.balanced


def _figures(study, process) -> dict:
    """Every figure of plots, built from the report tables the notebooks pass (notebooks 01, 04-07)."""
    case = study.case
    home = report.showcase_home(study)
    rates = report.contribution_table(case, study.market, study.profit_rate)
    sweep = dm.profit_rate_sweep(case, study.independent, study.market, np.linspace(0.0, 1.0, 21))
    return {
        "figure2_home_curves": lambda: plots.figure2_home_curves(report.hourly_profile(study, home), home),
        "figure3_net_load": lambda: plots.figure3_net_load(
            report.hourly_profile(study), report.headline(study)["peak_net_load_reduction_kwh"]
        ),
        "figure4_cost_reduction": lambda: plots.figure4_cost_reduction(report.settlement_table(study)),
        "figure5_profit_rate": lambda: plots.figure5_profit_rate(sweep),
        "figure_alpha_vs_traded": lambda: plots.figure_alpha_vs_traded(
            rates, report.correlation(rates["alpha"], rates["traded_kwh"])
        ),
        "figure_inputs": lambda: plots.figure_inputs(report.inputs_hourly(case)),
        "figure_market_process": lambda: plots.figure_market_process(*process),
        "figure_allocations": lambda: plots.figure_allocations(_allocations(study)),
        "figure_year": lambda: plots.figure_year(_year()[0], "2017-06-13"),
        "figure_claim_distributions": lambda: plots.figure_claim_distributions(*_year()),
        "figure_year_by_source": lambda: plots.figure_year_by_source(_by_source()),
        "figure_sizes": lambda: plots.figure_sizes(_sizes()),
        "figure_size_timings": lambda: plots.figure_size_timings(_sizes()),
        "figure_rules": lambda: plots.figure_rules(*_rules(study), study.profit_rate),
        "figure_fairness_year": lambda: plots.figure_fairness_year(*_fairness_year()),
    }


@functools.lru_cache(maxsize=1)
def _year():
    """A few days of the year study (one of them a failed daylight-saving day) and their summary."""
    from desmarket import io as dio
    from desmarket import year

    days = ["2017-03-10", "2017-03-11", "2017-03-12", "2017-06-13", "2017-06-14"]
    by_day = year.claims_by_day(days, n_jobs=1, n_homes=4, n_scenarios=3)
    return by_day, year.claims_summary(by_day, dio.paper_claims())


def _rules(study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gains and verdicts in the layout of fairness.rule_verdicts (the exact game stops at 14 homes, so stand-ins:
    M2, M3 and a 'shapley' column proportional to each home's load; made-up core excesses and profit rates)."""
    table = _allocations(study).rename(columns={"M2": "equal", "M3": "contribution"})
    verdicts = pd.DataFrame(
        {"core_excess_usd": [0.8, -0.05], "core_profit_rate": [0.5, 0.04]}, index=["equal", "contribution"]
    )
    return table, verdicts


@functools.lru_cache(maxsize=1)
def _fairness_year():
    """A few days of the year study of the rules (one a failed daylight-saving day), 3 homes, and its summary."""
    from desmarket import fairness_year

    days = ["2017-01-10", "2017-03-12", "2017-06-13", "2017-09-12"]
    by_day = fairness_year.fairness_by_day(days, n_jobs=1, n_homes=3)
    return by_day, fairness_year.fairness_by_season(by_day)


@functools.lru_cache(maxsize=1)
def _by_source():
    """The same days under two price sources (desmarket.robustness), February days among them."""
    from desmarket import robustness

    days = ["2017-02-13", "2017-02-14", "2017-06-13"]
    return robustness.claims_by_source(("ercot-2021", "pjm-like"), days, n_jobs=1, n_homes=3, n_scenarios=2)


@functools.lru_cache(maxsize=1)
def _sizes():
    """A small size study on the summer and the winter day (two sizes, two seeds)."""
    from desmarket import sizes

    return sizes.size_study([3, 6], seeds=[0, 1], n_jobs=1, n_scenarios=2)


def _allocations(study) -> pd.DataFrame:
    """An allocation table in the layout of fairness.allocation_table (its rule columns; the exact game stops at
    14 homes, so a stand-in 'shapley' column proportional to each home's load serves the rendering test)."""
    load = report.daily_energy(study.case, study.market)["load_kwh"].to_numpy()
    rest = study.m3.surplus - study.m3.aggregator_gain
    return pd.DataFrame(
        {
            "M2": np.r_[study.m2.aggregator_gain, study.m2.home_gain],
            "M3": np.r_[study.m3.aggregator_gain, study.m3.home_gain],
            "shapley": np.r_[study.m3.aggregator_gain, rest * load / load.sum()],
        },
        index=["aggregator", *study.case.home_ids],
    )


@pytest.fixture(scope="module")
def drawn(studies, market_process):
    """{(homes, name): Figure}, drawn once; closed at the end of the module."""
    with plt.rc_context({"figure.max_open_warning": 0}):  # every figure at two sizes is open at once, on purpose
        figs = {(n, name): build() for n in SIZES for name, build in _figures(studies[n], market_process).items()}
    yield figs
    for fig in figs.values():
        plt.close(fig)


def _in_view(ax, label, axis: int) -> bool:
    """A tick label whose tick lies inside the axis' view limits (labels of ticks beyond them are not drawn)."""
    lo, hi = sorted(ax.get_xlim() if axis == 0 else ax.get_ylim())
    at = label.get_position()[axis]
    return lo - 1e-9 * (hi - lo) <= at <= hi + 1e-9 * (hi - lo)


def _texts(fig, names_only: bool = False):
    """Every visible, non-empty text of a drawn figure: tick labels, annotations and legend entries, and unless
    ``names_only`` also axis labels and titles."""
    fig.canvas.draw()
    axes = list(fig.axes) + [child for ax in fig.axes for child in ax.child_axes]
    out = []
    for ax in axes:
        out += [t for t in ax.get_xticklabels() if ax.xaxis.get_visible() and _in_view(ax, t, 0)] + ax.texts
        out += [t for t in ax.get_yticklabels() if ax.yaxis.get_visible() and _in_view(ax, t, 1)]
        out += [] if names_only else [ax.xaxis.label, ax.yaxis.label, ax.title]
        legend = ax.get_legend()
        out += legend.get_texts() if legend else []
    out += [t for legend in fig.legends for t in legend.get_texts()] + ([] if names_only else fig.texts)
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _legends(fig):
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]


def test_every_figure_function_is_covered(studies, market_process):
    assert set(_figures(studies[10], market_process)) == {n for n in dir(plots) if n.startswith("figure")}


@pytest.mark.parametrize(
    "n, name",
    list(
        itertools.product(
            SIZES,
            [
                "figure2_home_curves",
                "figure3_net_load",
                "figure4_cost_reduction",
                "figure5_profit_rate",
                "figure_alpha_vs_traded",
                "figure_inputs",
                "figure_market_process",
                "figure_allocations",
                "figure_year",
                "figure_claim_distributions",
                "figure_sizes",
                "figure_size_timings",
                "figure_rules",
                "figure_fairness_year",
            ],
        )
    ),
)
def test_figure_renders_within_a_fixed_size(drawn, n, name):
    fig = drawn[(n, name)]
    assert isinstance(fig, plt.Figure)
    width, height = fig.get_size_inches() * plots.DPI
    assert width <= MAX_PIXELS[0] and height <= MAX_PIXELS[1], (name, width, height)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=plots.DPI)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "name",
    [
        "figure2_home_curves",
        "figure3_net_load",
        "figure4_cost_reduction",
        "figure5_profit_rate",
        "figure_alpha_vs_traded",
        "figure_inputs",
        "figure_allocations",
    ],
)
def test_at_200_homes_labels_are_few_and_do_not_overlap(drawn, name):
    fig = drawn[(200, name)]
    assert len(_texts(fig, names_only=True)) <= MAX_TEXTS, (name, len(_texts(fig, names_only=True)))
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in _texts(fig)]  # without leader lines
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        overlap = (min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0), min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0))
        assert min(overlap) <= 1.0, f"{name}: {a!r} overlaps {b!r}"


@pytest.mark.parametrize(
    "name",
    [
        "figure2_home_curves",
        "figure3_net_load",
        "figure4_cost_reduction",
        "figure5_profit_rate",
        "figure_inputs",
        "figure_sizes",
    ],
)
def test_legends_sit_outside_the_axes(drawn, name):
    """A legend never covers data: it lies outside every axes of its figure (Figures 2 and 3: below them)."""
    fig = drawn[(10, name)]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = _legends(fig)
    assert legends, name
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            frame = ax.get_window_extent(renderer)
            assert not box.overlaps(frame), f"{name}: a legend covers an axes"


def test_figure4_bars_up_to_the_threshold_sorted_curves_above(drawn, studies):
    few, many = drawn[(10, "figure4_cost_reduction")], drawn[(200, "figure4_cost_reduction")]
    assert sum(isinstance(p, Rectangle) for p in few.axes[0].patches) == 2 * 10
    assert [t.get_text() for t in few.axes[0].get_xticklabels()] == [str(h) for h in studies[10].case.home_ids]
    ax = many.axes[0]
    assert not [p for p in ax.patches if isinstance(p, Rectangle)]
    m3 = next(line for line in ax.lines if line.get_label().startswith("M3"))
    assert np.all(np.diff(m3.get_ydata()) >= 0)  # homes sorted by their M3 reduction
    assert len(ax.texts) == 2 * plots.NAMED_EXTREMES
    assert all("α" in child.get_ylabel() for child in ax.child_axes)  # the right axis reads the reduction as α


def test_figure5_lines_per_home_up_to_the_threshold_spread_above(drawn, studies):
    few, many = drawn[(10, "figure5_profit_rate")], drawn[(200, "figure5_profit_rate")]
    assert len(few.axes[1].lines) == 10
    labels = many.axes[1].get_legend_handles_labels()[1]
    assert len(many.axes[1].lines) <= 4 and "median home" in labels and "10–90 % of the homes" in labels
    total = [line for line in many.axes[0].lines if "ΔC" in line.get_label() and "total" in line.get_label()]
    assert total and np.allclose(total[0].get_ydata(), studies[200].m3.surplus, rtol=1e-6)


def test_alpha_scatter_names_every_home_up_to_the_threshold_and_only_the_extremes_above(drawn):
    assert len(drawn[(10, "figure_alpha_vs_traded")].axes[0].texts) == 10
    assert len(drawn[(200, "figure_alpha_vs_traded")].axes[0].texts) == 2 * plots.NAMED_EXTREMES


@pytest.mark.parametrize("n", SIZES)
def test_figure3_marks_each_peak_import_and_shows_the_clearing_price(drawn, studies, n):
    profile = report.hourly_profile(studies[n])
    peaks = report.peak_import(profile)
    fig = drawn[(n, "figure3_net_load")]
    notes = [t.get_text() for t in fig.axes[0].texts]
    for mode, peak in peaks.iterrows():
        assert any(
            mode in t and f"{peak['net_load_kw']:.1f} kW" in t and f"{int(peak['hour']):02d}:00" in t for t in notes
        ), (mode, notes)
    price_lines = [line for line in fig.axes[1].lines if "clearing price" in line.get_label()]
    assert price_lines and np.nanmax(price_lines[0].get_ydata()) == pytest.approx(
        1000 * profile["price"].max(), rel=1e-9
    )
    assert all("kW" in ax.get_ylabel() or "$/MWh" in ax.get_ylabel() for ax in fig.axes)


def test_hourly_profile_has_the_expected_clearing_price_and_peak_import_matches_the_headline(studies):
    study = studies[10]
    profile = report.hourly_profile(study)
    market = profile[profile["mode"] == "with market"]
    assert profile.loc[profile["mode"] == "without market", "price"].isna().all()
    assert market["price"].to_numpy() == pytest.approx(study.case.probability @ study.market.price)
    peaks = report.peak_import(profile)
    community = {m: f["net_load"].to_numpy() for m, f in profile.groupby("mode")}
    assert list(peaks.index) == ["without market", "with market"]
    for mode, peak in peaks.iterrows():
        assert peak["net_load_kw"] == community[mode].max() == community[mode][int(peak["hour"])]
    change = 100 * (peaks["net_load_kw"].iloc[1] / peaks["net_load_kw"].iloc[0] - 1)
    assert report.headline(study)["peak_import_change_pct"] == pytest.approx(change)


def test_drawing_every_figure_leaves_rcparams_as_they_were(studies, market_process):
    before = {k: str(v) for k, v in mpl.rcParams.items()}
    for build in _figures(studies[10], market_process).values():
        plt.close(build())
    assert {k for k, v in mpl.rcParams.items() if str(v) != before[k]} == set()


def test_symbols_are_unicode_not_latex(drawn):
    """Labels, titles, annotations and legends (tick labels of log axes are matplotlib's own mathtext)."""
    for (n, name), fig in drawn.items():
        ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()}
        for text in (t for t in _texts(fig) if id(t) not in ticks):
            assert "$\\" not in text.get_text() and "\\alpha" not in text.get_text(), (n, name, text.get_text())


def test_save_figure_can_close_so_a_notebook_does_not_show_it(tmp_path):
    fig, _ = plt.subplots()
    path = plots.save_figure(fig, tmp_path / "x.png", close=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
