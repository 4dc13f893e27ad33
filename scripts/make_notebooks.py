"""Write the notebook chain notebooks/NN_*.ipynb (sources only; `make reproduce` executes them in place).

The notebooks are generated so that their structure stays uniform: a markdown cell naming what the notebook
reproduces and what it reads and writes, one `parameters` cell of scalars, then calls into `desmarket`.
Run: python scripts/make_notebooks.py   (then `make reproduce`)
"""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]

COMMON = '''n_homes = 10  # community size (paper: 10 homes)
n_scenarios = 10  # similar days of load and PV, equiprobable
date = ""  # target day of the measured data, empty for desmarket.data.PAPER_DATE
seed = 0  # seeds the scenario draw, utility coefficients and synthetic LMP
profit_rate = 0.2  # rho, profit rate of the aggregator (paper 0.2, giving alpha 0.08 per home under M2)
run_dir = "results"  # where this run's case, tables and figures go (relative to the project root)'''

SETUP = '''import warnings

import numpy as np
import pandas as pd
from IPython.display import display

import desmarket as dm
from desmarket import data, io, plots, report

pd.set_option("display.precision", 4)
warnings.simplefilter("ignore", dm.RoutingWarning)  # reported as over_limit_kw in notebook 03 instead
paths = io.run_paths(run_dir)
case = dm.load_case(paths.case)'''

NOTEBOOKS = {
    "01_data_prep": (
        """# 01 · Data preparation: the community, its scenarios and prices

Reproduces **Section 3.1 (Dataset)** and **Table 1** (storage parameters) and **Table 2** (operation modes).
The paper used 10 Pecan Street homes in Austin and PJM prices; neither can be downloaded here, so the case is
built from measured CityLearn homes (Fontana, California) and a seeded PJM-like LMP (see `data/README.md`).

**Reads:** `data/raw/citylearn2022/` · **Writes:** `<run_dir>/case/` (the case, in the format of the README),
`<run_dir>/tables/table1_storage.csv`, `table2_modes.csv`, `inputs_daily.csv`, `<run_dir>/figures/inputs.png`""",
        [
            '''import numpy as np
import pandas as pd
from IPython.display import display

import desmarket as dm
from desmarket import data, io, plots, report

pd.set_option("display.precision", 4)
paths = io.run_paths(run_dir)''',
            '''case = data.build_case(n_homes=n_homes, n_scenarios=n_scenarios, date=date or data.PAPER_DATE, seed=seed)
case.save(paths.case)
print(case)
print("homes:", ", ".join(case.home_ids))
print("scenario days:", ", ".join(case.scenarios))''',
            '''inputs = report.inputs_table(case)
report.save_table(inputs, paths.tables / "inputs_daily.csv", decimals=3)
display(inputs)''',
            '''table1 = report.table1_storage(case)
report.save_table(table1, paths.tables / "table1_storage.csv")
table2 = report.table2_modes()
report.save_table(table2, paths.tables / "table2_modes.csv")
display(table1.head(3), table2)''',
            '''fig = plots.figure_inputs(report.inputs_hourly(case))
_ = plots.save_figure(fig, paths.figures / "inputs.png")''',
        ],
    ),
    "02_independent": (
        """# 02 · Independent operation (mode M1): the disagreement point

Reproduces **Section 2.1.3 (Eqs. 5-15)**: each home alone minimises its expected retail bill minus the
net-metering credit minus its load utility. Gives C⁰ per home and the aggregator's revenue R_A⁰ (Eq. 1).

**Reads:** `<run_dir>/case/` · **Writes:** `<run_dir>/operation/m1_*.csv`, `<run_dir>/tables/m1_costs.csv`""",
        [
            SETUP,
            '''m1 = dm.solve_independent(case)
io.save_operation(m1, case, paths.operation, "m1")
costs = report.cost_breakdown(m1, case)
report.save_table(costs, paths.tables / "m1_costs.csv")
display(costs.round(3))
print(f"aggregator revenue R_A0 = {m1.aggregator_revenue:.3f} $/day")
print(f"tie-break regularisation left out of the costs: {m1.regularization_cost:.4f} $/day")''',
        ],
    ),
    "03_market_clearing": (
        """# 03 · Market clearing: the cooperative operation and the local clearing price

Reproduces **Section 2.1.4 (Eqs. 16-20)**: the aggregator and all homes face the wholesale price together;
the dual of the trade balance (Eq. 18) is the clearing price. Gives C* per home, R_A* and the cooperative
surplus ΔC (Eq. 20). Hours where the community neither imports nor exports are *balanced*: there the
price is not pinned to k^b·LMP or k^s·LMP.

**Reads:** `<run_dir>/case/`, `<run_dir>/operation/m1_*` · **Writes:** `<run_dir>/operation/market_*.csv`,
`<run_dir>/tables/market_costs.csv`, `clearing_prices.csv`""",
        [
            SETUP,
            '''market = dm.clear_market(case)
io.save_operation(market, case, paths.operation, "market")
m1 = io.load_operation(case, paths.operation, "m1")
costs = report.cost_breakdown(market, case)
report.save_table(costs, paths.tables / "market_costs.csv")
display(costs.round(3))
print(f"aggregator revenue R_A* = {market.aggregator_revenue:.3f} $/day")
print(f"cooperative surplus dC = {dm.cooperative_surplus(m1, market):.3f} $/day")
print(f"tie-break regularisation left out of the costs: {market.regularization_cost:.4f} $/day")
print(f"largest pro-rata flow above a grid limit: {market.over_limit_kw:.2f} kW (accounting only; README, tie-break)")''',
            '''prices = report.price_table(case, market)
report.save_table(prices, paths.tables / "clearing_prices.csv", decimals=5)
print(f"balanced (scenario, hour) pairs: {int(market.balanced.sum())} of {market.balanced.size}")
display(prices.groupby("state")["price_usd_per_kwh"].describe().round(4))''',
            '''# MODEL.md "Uniqueness": with the tie-break, a second solver gives the same per-home answers
study = report.load_study(case, paths.operation, profit_rate)
agreement = report.solver_agreement(case, study)  # None for cases above report.AGREEMENT_MAX_ROWS rows
if agreement is None:
    print("second-solver check skipped: case larger than", report.AGREEMENT_MAX_ROWS, "home x scenario rows")
else:
    display(agreement[["second_solver", "tolerance", "agree"]])''',
        ],
    ),
    "04_contribution_rates": (
        """# 04 · Market value contribution rates

Reproduces **Section 2.2.1 (Eqs. 21-22)**: a home's contribution is the value of its traded energy at the
clearing price, buying and selling alike; α_i = (1 − ρ) · its share of all contributions. Also the claim of
**Section 3.3**: α correlates strongly and positively with the traded energy.

**Reads:** `<run_dir>/case/`, `<run_dir>/operation/market_*` · **Writes:** `<run_dir>/tables/contribution_rates.csv`,
`<run_dir>/figures/alpha_vs_traded.png`""",
        [
            SETUP,
            '''market = io.load_operation(case, paths.operation, "market")
rates = report.contribution_table(case, market, profit_rate)
report.save_table(rates, paths.tables / "contribution_rates.csv", decimals=5)
display(rates.round(4))
r = report.alpha_traded_correlation(rates)
print(f"sum of alpha = {rates['alpha'].sum():.4f} (1 - rho = {1 - profit_rate:.4f})")
print(f"Pearson correlation of alpha with traded energy: {r:.3f}")''',
            '''_ = plots.save_figure(plots.figure_alpha_vs_traded(rates, r), paths.figures / "alpha_vs_traded.png")''',
        ],
    ),
    "05_settlement": (
        """# 05 · Settlement under M1, M2 and M3

Reproduces **Tables 3 and 4** and **Figures 2, 3 and 4** (Section 3.2-3.3): energy per home without and with the
market; costs of the aggregator and each home under M1, the market before payment, M2 (equal split, Eq. 29)
and M3 (contribution rates, Eq. 30), with Γ_i = (C_i* − C_i⁰) + α_i ΔC (Eq. 26).

**Reads:** `<run_dir>/case/`, `<run_dir>/operation/m1_*`, `market_*` · **Writes:** `<run_dir>/tables/table3_energy.csv`,
`table4_costs.csv`, `settlement.csv`, `<run_dir>/figures/figure2_home.png`, `figure3_net_load.png`,
`figure4_cost_reduction.png`""",
        [
            SETUP,
            '''study = report.load_study(case, paths.operation, profit_rate)
table3 = report.table3_energy(study)
report.save_table(table3, paths.tables / "table3_energy.csv", decimals=2)
display(table3.round(2))''',
            '''table4 = report.table4_costs(study)
report.save_table(table4, paths.tables / "table4_costs.csv", decimals=3)
display(table4.round(3))
settlement = report.settlement_table(study)
report.save_table(settlement, paths.tables / "settlement.csv", decimals=4)
display(settlement.round(3))''',
            '''home = report.showcase_home(study)
fig2 = plots.figure2_home_curves(report.hourly_profile(study, home), home)
_ = plots.save_figure(fig2, paths.figures / "figure2_home.png")
community = report.hourly_profile(study)
report.save_table(community, paths.tables / "figure3_net_load.csv", decimals=3, index=False)
reduction = report.headline(study)["peak_net_load_reduction_kwh"]
print(f"aggregated net load reduction 8:00-20:00: {reduction:.1f} kWh")
_ = plots.save_figure(plots.figure3_net_load(community, reduction), paths.figures / "figure3_net_load.png")
_ = plots.save_figure(plots.figure4_cost_reduction(settlement), paths.figures / "figure4_cost_reduction.png")''',
        ],
    ),
    "06_profit_rate": (
        """# 06 · Profit-rate sweep, scorecard and sensitivity

Reproduces **Figure 5** (Section 3.4): net benefits of the aggregator and each home under M3 as ρ grows; the
total stays at ΔC because ρ only moves the split (one clearing, nothing re-solved). Then the **scorecard**:
every claim of the paper beside ours, and a **sensitivity** table: how the headline numbers move when each
[choice] of MODEL.md changes (these re-solve the case).

**Reads:** `<run_dir>/case/`, `<run_dir>/operation/*` · **Writes:** `<run_dir>/tables/figure5_profit_rate.csv`,
`scorecard.csv`, `sensitivity.csv`, `<run_dir>/figures/figure5_profit_rate.png`""",
        [
            SETUP,
            '''study = report.load_study(case, paths.operation, profit_rate)
sweep = dm.profit_rate_sweep(case, study.independent, study.market, np.linspace(0.0, 1.0, 21))
report.save_table(sweep, paths.tables / "figure5_profit_rate.csv", decimals=4, index=False)
totals = sweep.groupby("profit_rate")["net_benefit_usd"].sum()
print(f"total net benefit over rho: min {totals.min():.3f}, max {totals.max():.3f} $/day")
_ = plots.save_figure(plots.figure5_profit_rate(sweep), paths.figures / "figure5_profit_rate.png")''',
            '''card = report.scorecard(study, report.SCORECARD_REASONS)
report.save_table(card, paths.tables / "scorecard.csv", decimals=3)
display(card.drop(columns="note").round(3))''',
            '''sensitivity = report.sensitivity(case, profit_rate, n_scenarios_options=(1, 5))
report.save_table(sensitivity, paths.tables / "sensitivity.csv", decimals=3)
display(sensitivity.round(3))''',
        ],
    ),
    "07_market_process": (
        """# 07 · The market process: coordinated prices, home controllers, and the same settlement

Reproduces the paper's **market process (Section 2.1.1, steps 2-3)** and its **privacy argument
(Section 2.1.2)**: the aggregator announces prices, each home's energy management controller optimises its own
resources against them and reports only its trading schedule, and the aggregator updates the prices until the
trades balance. We run it as ADMM for the exchange problem (Boyd et al. 2011, §7.3.2; see
`desmarket.coordinated`) and check that it lands on the clearing of notebook 03 and the settlement of notebook 05.

**Reads:** `<run_dir>/case/`, `<run_dir>/operation/m1_*`, `market_*` · **Writes:**
`<run_dir>/tables/market_process_convergence.csv`, `market_process_messages.csv`,
`<run_dir>/figures/market_process.png`""",
        [
            SETUP,
            '''# NBVAL_IGNORE_OUTPUT
# (iteration counts and residuals depend on the CPU's floating point, so nbval does not compare them)
history = []  # the aggregator's state after each iteration: prices, rho and the schedules it received
process = dm.clear_market(case, method="coordinated", callback=history.append)
convergence = process.convergence
report.save_table(convergence, paths.tables / "market_process_convergence.csv", decimals=12)
print(f"converged in {len(convergence)} iterations")  # its time is in `make bench`
display(convergence.iloc[[0, 9, 99, -1]] if len(convergence) > 100 else convergence.tail())''',
            '''market = io.load_operation(case, paths.operation, "market")  # the exact clearing of notebook 03
prices = np.stack([state.price for state in history])
fig = plots.figure_market_process(convergence, prices, market.price, market.balanced)
_ = plots.save_figure(fig, paths.figures / "market_process.png")
pinned = ~market.balanced
print(f"largest price difference where pinned: below 1e-4 $/kWh: {np.abs(process.price - market.price)[pinned].max() < 1e-4}")
print(f"balanced (scenario, hour) pairs, where any price in [k^s LMP, k^b LMP] clears: {int(market.balanced.sum())}")''',
            '''messages = report.message_table(case, convergence)
report.save_table(messages, paths.tables / "market_process_messages.csv", decimals=0)
display(messages.drop(columns="bytes_over_the_run_all_homes"))''',
            '''# the same settlement as notebook 05 (M3 at the same rho)
m1 = io.load_operation(case, paths.operation, "m1")
via_process = dm.settle(case, m1, process, profit_rate)
exact = dm.settle(case, m1, market, profit_rate)
print(f"Delta C: market process {via_process.surplus:.3f} $/day, exact clearing {exact.surplus:.3f} $/day")
print(f"every home's M3 gain within 1e-3 $: {np.abs(via_process.home_gain - exact.home_gain).max() < 1e-3}")
print(f"every alpha within 1e-3: {np.abs(via_process.alpha - exact.alpha).max() < 1e-3}")''',
        ],
    ),
}


def notebook(intro: str, cells: list[str]) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    params = nbf.v4.new_code_cell(COMMON, metadata={"tags": ["parameters"]})
    nb.cells = [nbf.v4.new_markdown_cell(intro), params, *(nbf.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (desmarket)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    for name, (intro, cells) in NOTEBOOKS.items():
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbf.write(notebook(intro, cells), path)
        print("wrote", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
