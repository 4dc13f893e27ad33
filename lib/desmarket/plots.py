"""Figures of the study (the paper's Figures 2-5), drawn from the tables of :mod:`desmarket.report`.

Each function takes a DataFrame (so replotting never re-solves) and returns a matplotlib Figure drawn in the
study's style (:data:`STYLE`, a seaborn style applied per figure: importing this module changes no global
matplotlib state); :func:`save_figure` writes a PNG without volatile metadata.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

#: seaborn style and context of every figure, applied inside each figure function only.
STYLE = {"style": "whitegrid", "context": "notebook", "palette": "deep"}


def styled(draw):
    """Draw the figure inside the study's seaborn style and context, leaving global rcParams as they were."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]), \
                sns.color_palette(STYLE["palette"]):
            return draw(*args, **kwargs)
    return wrapper


#: Above this many homes, per-home figures drop per-home labels (they would overlap) and name only the extremes.
MAX_LABELLED_HOMES = 30

CURVES = {"load": "load", "pv_used": "PV used", "charge": "charge", "discharge": "discharge",
          "net_load": "net load (load + charge - discharge - PV)"}


def _step(ax, hours, values, **style):
    """Hourly values as steps over [h, h+1), the last hour included."""
    hours, values = np.asarray(hours), np.asarray(values)
    return ax.step(np.append(hours, hours[-1] + 1), np.append(values, values[-1]), where="post", **style)


MODE_COLORS = {"without market": "tab:gray", "with market": "tab:blue"}


@styled
def figure2_home_curves(profile: pd.DataFrame, home: str) -> plt.Figure:
    """Figure 2: one home's expected power curves (A) without and (B) with the market, kW."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, (mode, frame) in zip(axes, profile.groupby("mode", sort=False)):
        for col, label in CURVES.items():
            _step(ax, frame["hour"], frame[col], label=label, lw=2 if col == "net_load" else 1.3)
        ax.axhline(0, color="black", lw=0.6)
        ax.set(title=f"({'AB'[list(MODE_COLORS).index(mode)]}) home {home}, {mode}", xlabel="hour",
               xticks=range(0, 25, 4))
    axes[0].set_ylabel("power, kW (expected over scenarios)")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


@styled
def figure3_net_load(profile: pd.DataFrame, reduction_kwh: float) -> plt.Figure:
    """Figure 3: the community's aggregated net load with and without the market, against the LMP."""
    fig, ax = plt.subplots(figsize=(9, 4))
    for mode, frame in profile.groupby("mode", sort=False):
        _step(ax, frame["hour"], frame["net_load"], color=MODE_COLORS[mode], lw=2, label=mode)
    ax.axvspan(8, 20, color="tab:orange", alpha=0.08, label=f"8:00-20:00: {reduction_kwh:.1f} kWh less")
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="hour", ylabel="aggregated net load, kW", xticks=range(0, 25, 2))
    lmp = profile[profile["mode"] == "without market"]
    twin = ax.twinx()
    _step(twin, lmp["hour"], 1000 * lmp["lmp"], color="tab:red", ls="--", label="LMP")
    twin.set_ylabel("LMP, $/MWh", color="tab:red")
    twin.grid(False)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


@styled
def figure4_cost_reduction(table: pd.DataFrame) -> plt.Figure:
    """Figure 4: cost reduction of each home under M2 and M3 ($/day), with the bargaining weights alpha."""
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["reduction_m2_usd"], 0.4, label="M2 (equal)", color="tab:gray")
    ax.bar(x + 0.2, table["reduction_m3_usd"], 0.4, label="M3 (contribution rate)", color="tab:blue")
    if len(table) <= MAX_LABELLED_HOMES:
        ax.set(xticks=x, xticklabels=table.index, xlabel="home")
    else:
        ax.set(xticks=[], xlabel=f"{len(table)} homes, in the order of the case")
    ax.set(ylabel="cost reduction, $/day")
    twin = ax.twinx()
    twin.plot(x, table["alpha_m3"], "o", color="tab:red", label="α M3")
    twin.plot(x, table["alpha_m2"], "_", color="black", ms=14, label="α M2")
    twin.set_ylabel("bargaining weight α")
    twin.set_ylim(0, max(table["alpha_m3"].max(), table["alpha_m2"].max()) * 1.3)
    twin.grid(False)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


@styled
def figure5_profit_rate(sweep: pd.DataFrame) -> plt.Figure:
    """Figure 5: net benefits of the aggregator and each home against the profit rate rho (M3), and the total."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for party, frame in sweep.groupby("party", sort=False):
        style = dict(lw=2.5, color="tab:red") if party == "aggregator" else dict(lw=1, alpha=0.8)
        ax.plot(frame["profit_rate"], frame["net_benefit_usd"], label=party, **style)
    total = sweep.groupby("profit_rate")["net_benefit_usd"].sum()
    ax.plot(total.index, total.to_numpy(), "k--", lw=2, label=f"total ({total.iloc[0]:.2f} $)")
    ax.set(xlabel="aggregator profit rate ρ", ylabel="net benefit, $/day")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


@styled
def figure_alpha_vs_traded(table: pd.DataFrame, correlation: float) -> plt.Figure:
    """Contribution rate alpha (M3) against each home's traded energy (Section 3.3)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    alpha = "alpha" if "alpha" in table else "alpha_m3"
    ax.scatter(table["traded_kwh"], table[alpha], color="tab:blue")
    named = table if len(table) <= MAX_LABELLED_HOMES else table.nlargest(5, alpha)  # the top five only
    for home, row in named.iterrows():
        ax.annotate(str(home), (row["traded_kwh"], row[alpha]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlabel="traded energy, kWh/day", ylabel="contribution rate α (M3)", title=f"Pearson r = {correlation:.3f}")
    fig.tight_layout()
    return fig


@styled
def figure_inputs(hourly: pd.DataFrame) -> plt.Figure:
    """The inputs: community baseline load and PV in each scenario (kW), and the prices ($/kWh)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for _, frame in hourly.groupby("scenario", sort=False):
        ax.plot(frame["hour"], frame["load_kw"], color="tab:blue", alpha=0.4, lw=1)
        ax.plot(frame["hour"], frame["pv_kw"], color="tab:orange", alpha=0.4, lw=1)
    ax.plot([], [], color="tab:blue", label="baseline load (one line per scenario)")
    ax.plot([], [], color="tab:orange", label="available PV")
    ax.set(xlabel="hour", ylabel="community total, kW", xticks=range(0, 25, 4))
    ax.legend(fontsize=8)
    one = hourly.drop_duplicates("hour")
    _step(bx, one["hour"], one["retail"], label="retail TOU price p_t")
    _step(bx, one["hour"], one["lmp"], label="LMP")
    bx.set(xlabel="hour", ylabel="$/kWh", xticks=range(0, 25, 4))
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


@styled
def figure_market_process(convergence: pd.DataFrame, prices: np.ndarray, reference: np.ndarray,
                          balanced: np.ndarray, congested: np.ndarray | None = None) -> plt.Figure:
    """The coordinated market process: (A) distance of the announced prices from the exact clearing price per
    iteration, in pinned and in balanced (scenario, hour) pairs; (B) the residuals per iteration (log scales).

    prices: (K, S, T) clearing prices per iteration, $/kWh; reference: (S, T) exact prices; balanced, congested:
    (S, T) states of the exact clearing (Operation.balanced, .congested).
    """
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    it = np.arange(1, len(prices) + 1)
    error = np.abs(prices - reference)
    congested = np.zeros_like(balanced) if congested is None else congested
    groups = ((~balanced & ~congested, "pinned to kᵇ·LMP or kˢ·LMP"), (balanced, "balanced (any price in the band)"),
              (congested, "congested (a limit binds)"))
    for mask, label in groups:
        if mask.any():
            ax.semilogy(it, np.maximum(1000 * error[:, mask].max(axis=1), 1e-12), label=label)
    ax.set(xlabel="iteration", ylabel="max |price - exact clearing price|, $/MWh",
           title="(A) prices approach the exact clearing price")
    ax.legend(fontsize=8, loc="upper right")
    bx.semilogy(convergence.index, convergence["residual_kw"], label="trade imbalance max |sum x|, kW")
    bx.semilogy(convergence.index, convergence["dual_residual"].clip(lower=1e-16), label="dual residual, $/kWh")
    bx.semilogy(convergence.index, convergence["price_change"].clip(lower=1e-16), label="price change, $/kWh")
    bx.set(xlabel="iteration", title="(B) residuals (stop: all below their tolerances)")
    bx.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path) -> Path:
    """Write a PNG (no timestamp or version metadata, so reruns give the same file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path
