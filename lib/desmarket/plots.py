"""Figures of the study (the paper's Figures 2-5), drawn from the tables of :mod:`desmarket.report`.

Each function takes a DataFrame (so replotting never re-solves) and returns a matplotlib Figure drawn in the
study's style (:data:`STYLE`, a seaborn style applied per figure: importing this module changes no global
matplotlib state); :func:`save_figure` writes a PNG without volatile metadata.

Every figure reads at any number of homes. Above :data:`MAX_LABELLED_HOMES`, per-home bars, lines and labels
become distributions and only the extreme homes are named; labels are placed so that they overlap neither each
other nor the curves (:func:`_label_points`); legends sit outside the axes, so they never cover data. Every axis
has its unit, and symbols are Unicode (ΔC, ρ, α), never LaTeX.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.text import Text

from .report import peak_import

#: seaborn style and context of every figure, applied inside each figure function only.
STYLE = {"style": "whitegrid", "context": "notebook", "palette": "deep"}
#: Resolution of :func:`save_figure`, dots per inch.
DPI = 110


def styled(draw):
    """Draw the figure inside the study's seaborn style and context, leaving global rcParams as they were."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with (
            sns.axes_style(STYLE["style"]),
            sns.plotting_context(STYLE["context"]),
            sns.color_palette(STYLE["palette"]),
        ):
            return draw(*args, **kwargs)

    return wrapper


#: Above this many homes, per-home figures show distributions and name only the extremes (labels would overlap).
MAX_LABELLED_HOMES = 30
#: How many homes at each end a figure names above MAX_LABELLED_HOMES.
NAMED_EXTREMES = 3
#: Font size of legends and point labels, pt.
SMALL = 9

CURVES = {
    "load": "load",
    "pv_used": "PV used",
    "charge": "charge",
    "discharge": "discharge",
    "net_load": "net load (load + charge − discharge − PV)",
}
MODE_COLORS = {"without market": "tab:gray", "with market": "tab:blue"}
HOURS_LABEL = "hour of the day, h"


# ======================================================================================== helpers
def _step(ax, hours, values, **style):
    """Hourly values as steps over [h, h+1), the last hour included; the line's data holds every corner, so the
    drawn shape can be read back (:func:`_line_pixels`)."""
    hours, values = np.asarray(hours, dtype=float), np.asarray(values, dtype=float)
    x = np.repeat(np.append(hours, hours[-1] + 1), 2)[1:-1]
    return ax.plot(x, np.repeat(values, 2), **style)


def _hour_axis(ax, step: int = 4) -> None:
    """x axis of a daily profile: 0-24 h."""
    ax.set(xlabel=HOURS_LABEL, xlim=(0, 24), xticks=range(0, 25, step))


def _line_pixels(lines, spacing: float = 2.0) -> np.ndarray:
    """(K, 2) display coordinates along drawn lines, at most ``spacing`` pixels apart: obstacles for labels."""
    out = [np.zeros((0, 2))]
    for line in lines:
        xy = np.asarray(line.get_xydata(), dtype=float)
        px = line.get_transform().transform(xy[np.isfinite(xy).all(axis=1)])
        out.append(px[-1:])
        for a, b in zip(px[:-1], px[1:]):
            steps = max(1, int(np.ceil(np.hypot(*(b - a)) / spacing)))
            out.append(a + np.linspace(0, 1, steps, endpoint=False)[:, None] * (b - a))
    return np.vstack(out)


def _freeze_layout(fig: plt.Figure) -> None:
    """Run the figure's layout once and keep it, so labels placed in display coordinates stay where they were put."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


#: Candidate label offsets (points), nearest first: sixteen directions on growing rings.
_DIRECTIONS = (
    (1, 1),
    (-1, 1),
    (1, -1),
    (-1, -1),
    (1, 0),
    (-1, 0),
    (0, 1),
    (0, -1),
    (1, 2),
    (-1, 2),
    (1, -2),
    (-1, -2),
    (2, 1),
    (-2, 1),
    (2, -1),
    (-2, -1),
)
_OFFSETS = [
    (r * ux / np.hypot(ux, uy), r * uy / np.hypot(ux, uy))
    for r in (5, 12, 20, 30, 44, 60, 80, 100)
    for ux, uy in _DIRECTIONS
]


def _label_points(ax, x, y, labels, obstacles=None, fontsize: float = SMALL, pad: float = 3.0) -> list:
    """Name the points (x, y) (data coordinates of ``ax``) with no label over another label, an obstacle (display
    coordinates, e.g. :func:`_line_pixels` of the curves and the points themselves) or the axes' edge.

    Greedy: each label takes the first free offset of :data:`_OFFSETS`, nearest first, with a thin leader line
    when it sits away from its point; if none is free, the one with the fewest conflicts (leaving the axes
    counts most, then another label, then each obstacle point). Call after :func:`_freeze_layout`.
    """
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    obstacles = np.zeros((0, 2)) if obstacles is None else np.asarray(obstacles, dtype=float).reshape(-1, 2)
    placed: list = []
    notes: list = []

    def attempt(xi, yi, text, dx, dy):
        ha = "left" if dx > 0.1 else "right" if dx < -0.1 else "center"
        va = "bottom" if dy > 0.1 else "top" if dy < -0.1 else "center"
        leader = dict(arrowstyle="-", color="0.4", lw=0.6, shrinkA=1, shrinkB=2) if np.hypot(dx, dy) > 8 else None
        note = ax.annotate(
            text,
            (xi, yi),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=fontsize,
            arrowprops=leader,
            zorder=5,
        )
        note.update_positions(renderer)  # the text's own box, without its leader line
        return note, Text.get_window_extent(note, renderer)

    def conflicts(box, anchor) -> float:
        outside = not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1)
        hits = box.padded(pad).count_contains(obstacles)
        leader = _leader(anchor, box)  # it must cross no curve and no other label either
        if len(leader):
            hits += (_near_segment(obstacles, anchor, leader[-1]) & (np.hypot(*(obstacles - anchor).T) > 6)).sum()
            hits += 1e3 * any(b.count_contains(leader) for b in placed)
        return 1e6 * outside + 1e3 * sum(box.overlaps(b) for b in placed) + hits

    for xi, yi, text in zip(x, y, labels):
        anchor = ax.transData.transform((xi, yi))
        best: tuple[float, tuple[float, float] | None] = (np.inf, None)
        for offset in _OFFSETS:
            note, box = attempt(xi, yi, text, *offset)
            cost = conflicts(box, anchor)
            note.remove()
            best = min(best, (cost, offset), key=lambda c: c[0])
            if cost == 0:
                break
        note, box = attempt(xi, yi, text, *(best[1] or _OFFSETS[0]))
        placed.append(box)
        notes.append(note)
        obstacles = np.vstack([obstacles, _leader(anchor, box)])  # later labels keep off this leader line
    return notes


def _leader(anchor: np.ndarray, box, spacing: float = 2.0) -> np.ndarray:
    """Display points along the leader line from a point to the nearest point of its label's box (none when
    the label touches its point)."""
    end = np.clip(anchor, [box.x0, box.y0], [box.x1, box.y1])
    length = np.hypot(*(end - anchor))
    if length <= 8:
        return np.zeros((0, 2))
    return anchor + np.linspace(0, 1, int(np.ceil(length / spacing)) + 1)[:, None] * (end - anchor)


def _near_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray, distance: float = 2.0) -> np.ndarray:
    """(K,) True where a display point lies within ``distance`` pixels of the segment a-b."""
    d = b - a
    t = np.clip(((points - a) @ d) / max(d @ d, 1e-9), 0, 1)
    return np.hypot(*(a + t[:, None] * d - points).T) < distance


def _extremes(values: pd.Series, k: int = NAMED_EXTREMES) -> pd.Series:
    """The k smallest and k largest of a per-home series (all of it when it is short), in ascending order."""
    ordered = values.sort_values(kind="stable")
    return ordered if len(ordered) <= 2 * k else pd.concat([ordered.iloc[:k], ordered.iloc[-k:]])


# ======================================================================================== figures
@styled
def figure2_home_curves(profile: pd.DataFrame, home: str) -> plt.Figure:
    """Figure 2: one home's expected power curves (A) without and (B) with the market, kW; legend below both."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True, layout="constrained")
    for ax, (mode, frame) in zip(axes, profile.groupby("mode", sort=False)):
        for col, label in CURVES.items():
            _step(ax, frame["hour"], frame[col], label=label, lw=2.2 if col == "net_load" else 1.4)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"({'AB'[list(MODE_COLORS).index(mode)]}) home {home}, {mode}")
        _hour_axis(ax)
    axes[0].set_ylabel("power, kW (expected over scenarios)")
    fig.get_layout_engine().set(wspace=0.04)  # type: ignore[union-attr, call-arg]  # constrained layout
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=len(CURVES),
        fontsize=SMALL,
        frameon=False,
    )
    return fig


def _peak_text(mode: str, hour: int, kw: float) -> str:
    """Label of a peak import in Figure 3."""
    return f"peak {mode}:\n{kw:.1f} kW at {int(hour):02d}:00"


def _peaks_title(peak: pd.Series) -> str:
    """Title of Figure 3: the peak import (kW) without and with the market, and its change where it is defined."""
    before, after = peak["without market"], peak["with market"]
    change = f" ({100 * (after / before - 1):+.0f} %)" if before > 0 else ""
    return f"peak import {before:.1f} kW without the market, {after:.1f} kW with it{change}"


@styled
def figure3_net_load(profile: pd.DataFrame, reduction_kwh: float) -> plt.Figure:
    """Figure 3: the community's aggregated net load with and without the market, against the LMP and the local
    clearing price (both $/MWh, right axis), with the paper's 8:00-20:00 window and the peak import of each mode.

    profile: :func:`desmarket.report.hourly_profile` of the community (its ``price`` column, the clearing price
    expected over the scenarios, is drawn where present); reduction_kwh: the 8:00-20:00 reduction (Figure 3's
    headline). The peaks (:func:`desmarket.report.peak_import`) show what the window leaves out: with the market
    the batteries charge from the grid in the cheapest (night) hours.
    """
    fig, ax = plt.subplots(figsize=(10, 5.2), layout="constrained")
    ax.axvspan(
        8,
        20,
        color="tab:orange",
        alpha=0.08,
        lw=0,
        label=f"8:00–20:00 (the paper's window): {abs(reduction_kwh):.1f} kWh "
        + ("less" if reduction_kwh >= 0 else "more")
        + " net load with the market",
    )
    curves = []
    for mode, frame in profile.groupby("mode", sort=False):
        curves += _step(ax, frame["hour"], frame["net_load"], color=MODE_COLORS[mode], lw=2, label=f"net load {mode}")
    ax.axhline(0, color="black", lw=0.6)
    _hour_axis(ax)
    ax.set_ylabel("aggregated net load (import − export), kW")
    peaks = peak_import(profile)
    low, high = profile["net_load"].min(), profile["net_load"].max()
    ax.set_ylim(min(low, 0) - 0.08 * (high - low), high + 0.35 * (high - low))
    for mode, peak in peaks.iterrows():
        curves += ax.plot(
            peak["hour"] + 0.5, peak["net_load_kw"], "o", ms=8, color=MODE_COLORS[mode], mec="white", mew=1.5, zorder=4
        )
    twin = ax.twinx()
    one = profile.drop_duplicates("hour")
    prices = _step(twin, one["hour"], 1000 * one["lmp"], color="tab:red", ls="--", lw=1.4, label="LMP")
    if "price" in profile and profile["price"].notna().any():
        market = profile[profile["price"].notna()]
        prices += _step(
            twin,
            market["hour"],
            1000 * market["price"],
            color="tab:purple",
            ls=":",
            lw=1.8,
            label="local clearing price (expected)",
        )
    twin.set_ylabel("price, $/MWh")
    shown = 1000 * (
        profile[["lmp", "price"]].to_numpy(dtype=float) if "price" in profile else profile["lmp"].to_numpy(dtype=float)
    )
    low, high = min(0.0, 1.35 * np.nanmin(shown)), 1.35 * max(np.nanmax(shown), 0.0)  # negative LMPs shown too
    twin.set_ylim(low, high if high > low else low + 1.0)
    twin.grid(False)
    ax.set_title(_peaks_title(peaks["net_load_kw"]))
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=SMALL, frameon=False)
    _freeze_layout(fig)
    _label_points(
        ax,
        peaks["hour"] + 0.5,
        peaks["net_load_kw"],
        [_peak_text(m, p["hour"], p["net_load_kw"]) for m, p in peaks.iterrows()],
        obstacles=_line_pixels(curves + prices),
    )
    return fig


def _surplus(table: pd.DataFrame) -> float | None:
    """ΔC ($/day) read off a settlement table: a home's cost reduction is α_i ΔC (Eq. 26), so ΔC = Σ reduction / Σ α;
    None when the table's α do not scale its reductions."""
    alpha = table[["alpha_m2", "alpha_m3"]].to_numpy(dtype=float)
    gain = table[["reduction_m2_usd", "reduction_m3_usd"]].to_numpy(dtype=float)
    surplus = gain.sum() / alpha.sum() if alpha.sum() > 0 else np.nan
    return float(surplus) if surplus > 0 and np.allclose(gain, surplus * alpha, rtol=1e-3, atol=1e-4) else None


def _alpha_axis(ax, surplus: float) -> None:
    """Right axis of Figure 4 in units of α = reduction / ΔC (Eq. 26): each bar or point also reads as α."""
    right = ax.secondary_yaxis("right", functions=(lambda r: r / surplus, lambda a: a * surplus))
    right.set_ylabel("bargaining weight α = reduction / ΔC")


@styled
def figure4_cost_reduction(table: pd.DataFrame) -> plt.Figure:
    """Figure 4: cost reduction of each home under M2 and M3, $/day; the right axis reads it as α (Eq. 26).

    Up to :data:`MAX_LABELLED_HOMES` homes: a pair of bars per home. Above: the homes sorted by their M3 reduction,
    the M2 and M3 reductions as two curves over that ranking, the three smallest and largest named.
    table: :func:`desmarket.report.settlement_table`.
    """
    fig, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
    n = len(table)
    m2: dict[str, Any] = {"label": "M2 (equal split)", "color": "tab:gray"}
    m3: dict[str, Any] = {"label": "M3 (contribution rate)", "color": "tab:blue"}
    if n <= MAX_LABELLED_HOMES:
        x = np.arange(n)
        ax.bar(x - 0.2, table["reduction_m2_usd"], 0.4, **m2)
        ax.bar(x + 0.2, table["reduction_m3_usd"], 0.4, **m3)
        ax.set_xticks(x, [str(h) for h in table.index], rotation=90 if n > 15 else 0)
        ax.set(xlabel="home", xlim=(-0.7, n - 0.3))
    else:
        ranked = table.sort_values("reduction_m3_usd", kind="stable")
        rank = np.arange(1, n + 1)
        lines = ax.plot(rank, ranked["reduction_m2_usd"], lw=2, **m2)
        lines += ax.plot(rank, ranked["reduction_m3_usd"], lw=2, marker="o" if n <= 200 else None, ms=3, **m3)
        ax.set(xlabel=f"{n} homes, ranked by their M3 cost reduction (1 = smallest)", xlim=(0, n + 1))
    ax.set_ylim(0, 1.12 * max(table["reduction_m2_usd"].max(), table["reduction_m3_usd"].max(), 1e-9))
    ax.set_ylabel("cost reduction, $/day")
    surplus = _surplus(table)
    if surplus is not None:
        _alpha_axis(ax, surplus)
        ax.set_title(f"ΔC = {surplus:.2f} $/day: each home gets α ΔC (Eq. 26)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=SMALL, frameon=False)
    if n > MAX_LABELLED_HOMES:
        _freeze_layout(fig)
        named = _extremes(ranked["reduction_m3_usd"])
        position = pd.Series(rank, index=ranked.index)
        _label_points(ax, position[named.index], named, [str(h) for h in named.index], obstacles=_line_pixels(lines))
    return fig


def _home_spread(homes: pd.DataFrame) -> pd.DataFrame:
    """Per profit rate, the spread of the homes' net benefits (Figure 5 above MAX_LABELLED_HOMES): min, 10 %,
    median, 90 %, max. homes: profit rate x home."""
    q = homes.quantile([0.1, 0.5, 0.9], axis=1).T
    return pd.DataFrame(
        {"min": homes.min(axis=1), "p10": q[0.1], "median": q[0.5], "p90": q[0.9], "max": homes.max(axis=1)}
    )


@styled
def figure5_profit_rate(sweep: pd.DataFrame) -> plt.Figure:
    """Figure 5: net benefits under M3 against the profit rate ρ, $/day. (A) the aggregator, all homes together
    and the total (ΔC, constant in ρ); (B) each home on its own scale: one line per home up to
    :data:`MAX_LABELLED_HOMES` homes (legend in the order of their benefit at the smallest ρ), above that their
    median, 10-90 % band and min/max. Legends sit outside the axes.

    sweep: :func:`desmarket.settlement.profit_rate_sweep` (profit_rate, party, alpha, net_benefit_usd).
    """
    wide = sweep.pivot_table(index="profit_rate", columns="party", values="net_benefit_usd", sort=False)
    homes = wide.drop(columns="aggregator")
    total = wide.sum(axis=1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), sharex=True, layout="constrained")
    ax.plot(wide.index, wide["aggregator"], color="tab:red", lw=2.5, label="aggregator (ρ ΔC)")
    ax.plot(homes.index, homes.sum(axis=1), color="tab:blue", lw=2.5, label=f"all {homes.shape[1]} homes together")
    ax.plot(total.index, total, "k--", lw=2, label=f"total = ΔC = {total.iloc[0]:.2f} $/day")
    ax.set(title="(A) the aggregator and the homes", ylabel="net benefit, $/day")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=SMALL, frameon=False)
    if homes.shape[1] <= MAX_LABELLED_HOMES:
        order = homes.iloc[0].sort_values(ascending=False).index
        colors = sns.color_palette(STYLE["palette"] if len(order) <= 10 else "husl", len(order))
        for home, color in zip(order, colors):
            bx.plot(homes.index, homes[home], color=color, lw=1.4, label=str(home))
        bx.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            ncol=1 if len(order) <= 15 else 2,
            fontsize=SMALL - 1 if len(order) > 15 else SMALL,
            frameon=False,
            title="home",
        )
        bx.set_title("(B) each home")
    else:
        spread = _home_spread(homes)
        bx.fill_between(
            spread.index, spread["p10"], spread["p90"], color="tab:blue", alpha=0.25, lw=0, label="10–90 % of the homes"
        )
        bx.plot(spread.index, spread["median"], color="tab:blue", lw=2.2, label="median home")
        bx.plot(spread.index, spread["max"], color="tab:blue", ls=":", lw=1.2, label="min and max")
        bx.plot(spread.index, spread["min"], color="tab:blue", ls=":", lw=1.2)
        bx.set_title(f"(B) the spread of the {homes.shape[1]} homes")
        bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=SMALL, frameon=False)
    bx.set_ylabel("net benefit of a home, $/day")
    for axis in (ax, bx):
        axis.set_xlabel("aggregator profit rate ρ (share of ΔC)")
        axis.set_ylim(bottom=min(0.0, axis.get_ylim()[0]))
    return fig


@styled
def figure_alpha_vs_traded(table: pd.DataFrame, correlation: float) -> plt.Figure:
    """Section 3.3: contribution rate α (M3, Eq. 22) against each home's traded energy. Every home is named up to
    :data:`MAX_LABELLED_HOMES` homes; above, only the three largest and three smallest α."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    alpha = "alpha" if "alpha" in table else "alpha_m3"
    many = len(table) > MAX_LABELLED_HOMES
    points = ax.scatter(
        table["traded_kwh"], table[alpha], color="tab:blue", s=12 if many else 36, alpha=0.55 if many else 1.0, lw=0
    )
    ax.set(
        xlabel="traded energy, kWh/day",
        ylabel="contribution rate α (M3), share of ΔC",
        title=f"{len(table)} homes, Pearson r = {correlation:.3f}",
    )
    ax.margins(0.12)
    _freeze_layout(fig)
    named = _extremes(table[alpha]) if many else table[alpha]
    _label_points(
        ax,
        table.loc[named.index, "traded_kwh"],
        named,
        [str(h) for h in named.index],
        obstacles=ax.transData.transform(points.get_offsets()),
        pad=4,
    )
    return fig


#: Colours of the settlement rules of notebook 08.
RULE_COLORS = {
    "M2": "tab:gray",
    "M3": "tab:blue",
    "shapley": "tab:red",
    "nucleolus": "tab:purple",
    "proportional_standalone": "tab:olive",
}


@styled
def figure_allocations(table: pd.DataFrame) -> plt.Figure:
    """Notebook 08: (A) each party's gain against M1 ($/day) under each rule (columns of ``table``, rows
    ``aggregator`` then the homes); (B) each home's M3 gain against its Shapley value, the diagonal is equality.

    Up to :data:`MAX_LABELLED_HOMES` homes, (A) is grouped bars; above, one curve per rule over the homes sorted
    by their Shapley value, with the aggregator's gains in the title. (B) names the homes farthest from the
    diagonal.
    """
    rules = [r for r in RULE_COLORS if r in table.columns]
    homes = table.drop(index="aggregator")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained", gridspec_kw={"width_ratios": [2, 1]})
    if len(homes) <= MAX_LABELLED_HOMES:
        x = np.arange(len(table))
        width = 0.8 / len(rules)
        for k, rule in enumerate(rules):
            ax.bar(x + (k - (len(rules) - 1) / 2) * width, table[rule], width, color=RULE_COLORS[rule], label=rule)
        ax.set(xticks=x, xlabel="party")
        ax.set_xticklabels(table.index, rotation=45 if len(table) > 12 else 0)
    else:
        order = homes.sort_values("shapley").index
        for rule in rules:
            ax.plot(np.arange(len(order)), homes.loc[order, rule], color=RULE_COLORS[rule], lw=1.5, label=rule)
        ax.set(
            xticks=[],
            xlabel=f"{len(homes)} homes, sorted by their Shapley value",
            title="aggregator: " + ", ".join(f"{r} {table.loc['aggregator', r]:.2f}" for r in rules) + " $/day",
        )
    ax.set_ylabel("gain against M1, $/day")
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14 if len(homes) <= 12 else -0.2),
        ncol=len(rules),
        fontsize=SMALL,
        frameon=False,
    )
    points = bx.scatter(
        homes["shapley"], homes["M3"], color="tab:blue", s=14 if len(homes) > MAX_LABELLED_HOMES else 36
    )
    top = max(homes["shapley"].max(), homes["M3"].max()) * 1.1
    bx.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="M3 = Shapley")
    bx.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="Shapley value of the home, $/day",
        ylabel="M3 gain of the home, $/day",
        title="(B) M3 against Shapley, per home",
    )
    bx.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.14 if len(homes) <= 12 else -0.2), fontsize=SMALL, frameon=False
    )
    _freeze_layout(fig)
    far = (homes["M3"] - homes["shapley"]).abs().nlargest(min(NAMED_EXTREMES, len(homes)))
    _label_points(
        bx,
        homes.loc[far.index, "shapley"],
        homes.loc[far.index, "M3"],
        [str(h) for h in far.index],
        obstacles=bx.transData.transform(points.get_offsets()),
        pad=4,
    )
    ax.set_title(ax.get_title() or "(A) each party's gain under each rule")
    return fig


@styled
def figure_year(by_day: pd.DataFrame, run_date: str) -> plt.Figure:
    """ΔC (Eq. 20) of the paper case built on each day of the measured year, $/day; failed days marked at the
    bottom (their reasons are in the table); the run's day (the paper's day in the reference run) marked. Where
    a day's ΔC exceeds 20 times the median (scarcity prices, e.g. ERCOT's storm days) the axis is logarithmic."""
    fig, ax = plt.subplots(figsize=(12, 4.2), layout="constrained")
    dates = pd.to_datetime(by_day.index)
    ok = (by_day["status"] == "ok").to_numpy()
    surplus = pd.to_numeric(by_day["surplus_usd"], errors="coerce").to_numpy()
    ax.plot(dates[ok], surplus[ok], ".", color="tab:blue", ms=4, label="ΔC of the day")
    weekly = pd.Series(surplus, index=dates).where(ok).rolling("28D", min_periods=7).median()
    ax.plot(weekly.index, weekly.to_numpy(), color="tab:blue", lw=2, label="28-day median")
    ax.plot(
        dates[~ok],
        np.zeros((~ok).sum()),
        "|",
        color="tab:gray",
        ms=10,
        transform=ax.get_xaxis_transform(),
        label=f"no case that day ({int((~ok).sum())} days: data gaps, see the table)",
    )  # on the x-axis
    if run_date in by_day.index and by_day.loc[run_date, "status"] == "ok":
        ax.plot(
            pd.Timestamp(run_date),
            by_day.loc[run_date, "surplus_usd"],
            "o",
            color="tab:red",
            ms=8,
            label=f"the run's day, {run_date}",
        )
    spiky = ok.any() and np.nanmax(surplus[ok]) > 20 * np.nanmedian(surplus[ok]) > 0  # price spikes (ERCOT)
    if spiky:  # a log axis keeps the ordinary days readable beside days of scarcity prices
        ax.set_yscale("log")
    ax.set(ylabel="ΔC, $/day" + (" (log scale)" if spiky else ""), xlabel="day of the measured year")
    if not spiky:
        ax.set_ylim(0, None)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=SMALL, frameon=False)
    return fig


@styled
def figure_year_by_source(by_source: pd.DataFrame, labels: dict | None = None, month: int = 2) -> plt.Figure:
    """ΔC (Eq. 20) on each day of the measured year, one panel per price source (rows of
    :func:`desmarket.robustness.claims_by_source`, column ``prices``), on one logarithmic axis so that storm days
    and ordinary days both read; the home days of ``month`` (February: their ERCOT 2021 prices are those of
    Winter Storm Uri) are shaded. ``labels``: a title per source tag (default the tag)."""
    tags = list(dict.fromkeys(by_source["prices"]))
    fig, axes = plt.subplots(
        len(tags), 1, figsize=(12, 2.4 * len(tags) + 0.6), sharex=True, sharey=True, layout="constrained", squeeze=False
    )
    for ax, tag in zip(axes[:, 0], tags, strict=True):
        rows = by_source[by_source["prices"] == tag]
        ok = rows[rows["status"] == "ok"]
        dates = pd.to_datetime(ok.index)
        surplus = pd.to_numeric(ok["surplus_usd"], errors="coerce")
        ax.plot(dates, surplus.to_numpy(), ".", ms=4, color="tab:blue", label="ΔC of the day")
        inside = dates.month == month
        ax.plot(
            dates[inside],
            surplus.to_numpy()[inside],
            ".",
            ms=6,
            color="tab:red",
            label=f"home days in {pd.Timestamp(2000, month, 1):%B}",
        )
        if inside.any():
            ax.axvspan(dates[inside].min(), dates[inside].max() + pd.Timedelta(days=1), color="tab:red", alpha=0.08)
        top = surplus.idxmax()
        ax.annotate(
            f"{surplus.max():,.0f} $/day on {top} (prices of {ok.loc[top, 'price_day']})",
            (pd.Timestamp(top), surplus.max()),
            xytext=(8, -4),
            textcoords="offset points",
            fontsize=SMALL,
            va="top",
        )
        ax.set_yscale("log")
        ax.set_title(
            f"{(labels or {}).get(tag, tag)}: median {surplus.median():.2f} $/day over {len(ok)} days",
            fontsize=SMALL + 1,
            loc="left",
        )
        ax.set_ylabel("ΔC, $/day (log)")
    axes[0, 0].legend(loc="upper right", fontsize=SMALL, frameon=False)
    axes[-1, 0].set_xlabel("home day of the measured year (each takes the prices of its source's mapped day)")
    return fig


def _unit(unit: str) -> str:
    """A unit after a number: ' %', ' $/day'; nothing for a pure number ('-')."""
    return "" if unit in ("-", "") else f" {unit}"


@styled
def figure_claim_distributions(by_day: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    """One panel per claim of the paper: its distribution over the days of the year (histogram), with the
    paper's value (red) and the median over the days (blue, dashed); claims that are the same on every day
    are named in the title instead of drawn."""
    keys = [
        k
        for k in summary.index
        if pd.notna(pd.to_numeric(pd.Series([summary.loc[k, "paper"]]), errors="coerce").iloc[0])
        or k == "peak_import_change_pct"
    ]
    ok = by_day[by_day["status"] == "ok"]
    spread = {k: pd.to_numeric(ok[k], errors="coerce").dropna() for k in keys}
    constant = [k for k in keys if np.ptp(spread[k]) <= 1e-6 * max(1.0, spread[k].abs().max())]
    keys = [k for k in keys if k not in constant]
    cols = 3
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.7 * rows), layout="constrained", squeeze=False)
    if constant:
        fig.suptitle(
            "the same on every day: "
            + "; ".join(
                f"{summary.loc[k, 'claim']} = {spread[k].iloc[0]:.3g}{_unit(summary.loc[k, 'unit'])}" for k in constant
            ),
            fontsize=SMALL,
        )
    for ax, key in zip(axes.flat, keys):
        x = pd.to_numeric(ok[key], errors="coerce").dropna()
        ax.hist(x, bins=30, color="tab:blue", alpha=0.7)
        paper = pd.to_numeric(pd.Series([summary.loc[key, "paper"]]), errors="coerce").iloc[0]
        if pd.notna(paper):
            ax.axvline(paper, color="tab:red", lw=2)
        ax.axvline(x.median(), color="tab:blue", lw=1.5, ls="--")
        ax.set_title(textwrap.fill(f"{summary.loc[key, 'claim']} ({summary.loc[key, 'unit']})", 48), fontsize=SMALL)
        ax.tick_params(labelsize=SMALL)
        ax.ticklabel_format(axis="x", useOffset=False)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color="tab:red", lw=2), plt.Line2D([], [], color="tab:blue", lw=1.5, ls="--")]
    fig.legend(
        handles,
        ["the paper's value", "median over the days"],
        loc="outside lower center",
        ncol=2,
        fontsize=SMALL,
        frameon=False,
    )
    fig.supylabel("days")
    return fig


@styled
def figure_inputs(hourly: pd.DataFrame) -> plt.Figure:
    """The inputs: community baseline load and PV in each scenario (kW), and the prices ($/kWh)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for _, frame in hourly.groupby("scenario", sort=False):
        ax.plot(frame["hour"], frame["load_kw"], color="tab:blue", alpha=0.4, lw=1)
        ax.plot(frame["hour"], frame["pv_kw"], color="tab:orange", alpha=0.4, lw=1)
    ax.plot([], [], color="tab:blue", label="baseline load (one line per scenario)")
    ax.plot([], [], color="tab:orange", label="available PV (one line per scenario)")
    ax.set(ylabel="community total, kW", title="(A) load and PV")
    _hour_axis(ax)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, fontsize=SMALL, frameon=False)
    one = hourly.drop_duplicates("hour")
    _step(bx, one["hour"], one["retail"], label="retail time-of-use price pₜ")
    _step(bx, one["hour"], one["lmp"], label="LMP")
    bx.set(ylabel="price, $/kWh", title="(B) prices")
    _hour_axis(bx)
    bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=SMALL, frameon=False)
    return fig


@styled
def figure_market_process(
    convergence: pd.DataFrame,
    prices: np.ndarray,
    reference: np.ndarray,
    balanced: np.ndarray,
    congested: np.ndarray | None = None,
    baseline: np.ndarray | None = None,
    baseline_label: str = "plain ADMM",
) -> plt.Figure:
    """The coordinated market process: (A) distance of the announced prices from the exact clearing price per
    iteration, in pinned and in balanced (scenario, hour) pairs; (B) the residuals per iteration (log scales).

    prices: (K, S, T) clearing prices per iteration, $/kWh; reference: (S, T) exact prices; balanced, congested:
    (S, T) states of the exact clearing (Operation.balanced, .congested). baseline: (K', S, T) the prices of
    another run of the process (e.g. plain ADMM), drawn in (A) as its largest distance over all pairs, dashed.
    """
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    it = np.arange(1, len(prices) + 1)
    error = np.abs(prices - reference)
    congested = np.zeros_like(balanced) if congested is None else congested
    groups = (
        (~balanced & ~congested, "pinned to kᵇ·LMP or kˢ·LMP"),
        (balanced, "balanced (any price in the band)"),
        (congested, "congested (a limit binds)"),
    )
    for mask, label in groups:
        if mask.any():
            ax.semilogy(it, np.maximum(1000 * error[:, mask].max(axis=1), 1e-12), label=label)
    if baseline is not None:
        other = np.abs(baseline - reference).reshape(len(baseline), -1).max(axis=1)
        ax.semilogy(
            np.arange(1, len(baseline) + 1),
            np.maximum(1000 * other, 1e-12),
            color="grey",
            linestyle="--",
            label=f"{baseline_label}, all pairs",
        )
    ax.set(
        xlabel="iteration",
        ylabel="max |price - exact clearing price|, $/MWh",
        title="(A) prices approach the exact clearing price",
    )
    ax.legend(fontsize=8, loc="upper right")
    bx.semilogy(convergence.index, convergence["residual_kw"], label="trade imbalance max |sum x|, kW")
    bx.semilogy(convergence.index, convergence["dual_residual"].clip(lower=1e-16), label="dual residual, $/kWh")
    bx.semilogy(convergence.index, convergence["price_change"].clip(lower=1e-16), label="price change, $/kWh")
    bx.set(xlabel="iteration", title="(B) residuals (stop: all below their tolerances)")
    bx.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path, close: bool = False) -> Path:
    """Write a PNG (no timestamp or version metadata, so reruns give the same file); returns the path.

    close: close the figure after writing it, so that a notebook does not show it inline (for a figure of
    measured times, which differ on every run and would change the committed notebook)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    if close:
        plt.close(fig)
    return path


#: Panels of :func:`figure_sizes`: column of the size-study table, y label, scale of the value.
SIZE_PANELS = (
    ("surplus_per_home_usd", "ΔC per home, $/day", 1.0),
    ("trading_share", "share of ΔC that needs trading, %", 100.0),
    ("alpha_gini", "Gini of α (M3)", 1.0),
    ("balanced_share", "balanced (scenario, hour) cells, %", 100.0),
    ("matched_kwh_per_home", "energy traded between homes,\nkWh per home per day", 1.0),
    ("congested_share", "congested (scenario, hour) cells, %", 100.0),
)
SEASON_COLORS = {"summer": "tab:orange", "winter": "tab:blue"}


def _dots_and_median(ax, rows: pd.DataFrame, col: str, scale: float, color: str, label: str) -> None:
    """One dot per community of a size-study table and a line through the median per size (the line is labelled)."""
    ax.plot(rows["n_homes"], scale * rows[col], "o", color=color, alpha=0.45, ms=5, clip_on=False)
    median = rows.groupby("n_homes")[col].median()
    ax.plot(median.index, scale * median.to_numpy(), "-", color=color, lw=2, clip_on=False, label=label)


def _homes_axis(ax, rows: pd.DataFrame) -> None:
    """Log-scale x axis of community sizes, a tick at each size of the table."""
    sizes = sorted(rows["n_homes"].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("homes in the community")


@styled
def figure_sizes(rows: pd.DataFrame) -> plt.Figure:
    """The size study (:func:`desmarket.sizes.size_study`): one panel per quantity against the number of homes
    (log scale), one colour per day; dots are seeds, the line their median. No solve times: the figure is the
    same on every rerun. Communities that failed (status not "ok") are left out; the table keeps them."""
    rows = rows[rows["status"] == "ok"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), layout="constrained")
    for ax, (col, label, scale) in zip(axes.flat, SIZE_PANELS):
        for season, part in rows.groupby("season"):
            _dots_and_median(
                ax, part, col, scale, SEASON_COLORS.get(season, "tab:gray"), f"{season}, {part['date'].iloc[0]}"
            )
        _homes_axis(ax, rows)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 10.0) if col == "congested_share" else None)
        ax.set(ylabel=label)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=max(1, len(labels)),
        fontsize=SMALL,
        frameon=False,
        title="day (dots: seeds; line: their median)",
        title_fontsize=SMALL,
    )
    return fig


@styled
def figure_size_timings(rows: pd.DataFrame) -> plt.Figure:
    """Solve times of the size study against the number of homes (log-log): M1 and the clearing, median over
    seeds and days (dots: each community). Measured times: the figure differs on every run."""
    rows = rows[rows["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for col, label, color in (("m1_seconds", "M1", "tab:gray"), ("clearing_seconds", "clearing", "tab:blue")):
        _dots_and_median(ax, rows, col, 1.0, color, f"{label} (median)")
    ax.set(yscale="log", ylabel="solve time, s (one worker)")
    _homes_axis(ax, rows)
    ax.legend(loc="upper left", fontsize=SMALL, frameon=False)
    return fig


#: Colours and names of the settlement rules of issue 22 (keys: :data:`desmarket.fairness.VERDICT_RULES`).
SETTLE_RULE_STYLE = {
    "equal": ("tab:gray", "M2 equal split"),
    "contribution": ("tab:blue", "M3 contribution rate"),
    "standalone": ("tab:olive", "stand-alone value"),
    "marginal": ("tab:cyan", "marginal contribution"),
    "synergy": ("tab:green", "M4 stand-alone + synergy"),
    "nucleolus": ("tab:purple", "nucleolus at ρ"),
}


@styled
def figure_rules(gains: pd.DataFrame, verdicts: pd.DataFrame, profit_rate: float) -> plt.Figure:
    """Notebook 08, the rules of issue 22 on one day: (A) each home's gain under each rule against the Shapley
    value's split of the homes' share (1 - rho) Delta C (on the diagonal they agree); (B) each rule's core excess
    ($/day; <= 0: no coalition would leave), the smallest rho that puts it in the core written on its bar.

    gains: :func:`desmarket.fairness.rule_verdicts` gains (parties x rules, plus a ``shapley`` column);
    verdicts: its verdict table."""
    rules = [r for r in SETTLE_RULE_STYLE if r in gains.columns]
    homes = gains.drop(index="aggregator")
    split = homes["shapley"] * homes[rules[0]].sum() / homes["shapley"].sum()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    many = len(homes) > MAX_LABELLED_HOMES
    for rule in rules:
        color, name = SETTLE_RULE_STYLE[rule]
        ax.scatter(split, homes[rule], color=color, s=10 if many else 28, label=name, alpha=0.8)
    top = max(split.max(), homes[rules].to_numpy().max()) * 1.1
    ax.plot([0, top], [0, top], color="black", lw=0.8, ls="--")
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel=f"Shapley value's split of the homes' share (1 − ρ) ΔC, $/day (ρ = {profit_rate:g})",
        ylabel="gain of the home under the rule, $/day",
        title=f"{len(homes)} homes: each rule against the Shapley split",
    )
    ax.legend(fontsize=SMALL, frameon=False, loc="upper left")
    excess = verdicts.loc[rules, "core_excess_usd"]
    y = np.arange(len(rules))
    bx.barh(y, excess, color=[SETTLE_RULE_STYLE[r][0] for r in rules])
    bx.axvline(0, color="black", lw=0.8)
    bx.set_yticks(y, [SETTLE_RULE_STYLE[r][1] for r in rules])
    bx.invert_yaxis()
    for k, rule in enumerate(rules):
        rate = verdicts.loc[rule, "core_profit_rate"]
        what = "a split in the core" if rule == "nucleolus" else "in the core"
        bx.annotate(
            f"{what} from ρ = {rate:.2f}",
            (max(excess[rule], 0.0), k),
            xytext=(4, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=SMALL,
        )
    low, high = min(excess.min(), 0.0), max(excess.max(), 0.0)
    bx.set_xlim(low - 0.05 * (high - low), high + 0.6 * (high - low))
    bx.set(xlabel=f"core excess at ρ = {profit_rate:g}, $/day (≤ 0: in the core)", title="stability")
    return fig


@styled
def figure_fairness_year(by_day: pd.DataFrame, seasons: pd.DataFrame) -> plt.Figure:
    """The rules over the year (:mod:`desmarket.fairness_year`): (A) each rule's core excess on every studied
    day ($/day; dots, with the median as a bar); (B) the share of days on which it is in the core, per season.

    by_day: :func:`~desmarket.fairness_year.fairness_by_day`; seasons: its
    :func:`~desmarket.fairness_year.fairness_by_season`."""
    ok = by_day[by_day["status"] == "ok"]
    rules = [r for r in SETTLE_RULE_STYLE if f"{r}_core_excess_usd" in ok.columns]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    rng = np.random.default_rng(0)  # jitter only: the figure is the same on every run
    for k, rule in enumerate(rules):
        color, _ = SETTLE_RULE_STYLE[rule]
        x = pd.to_numeric(ok[f"{rule}_core_excess_usd"])
        ax.scatter(k + rng.uniform(-0.3, 0.3, len(x)), x, s=4, color=color, alpha=0.5)
        ax.plot([k - 0.35, k + 0.35], [x.median()] * 2, color="black", lw=2)
    ax.axhline(0, color="black", lw=0.8, ls="--")
    ax.set_yscale("symlog", linthresh=0.1)  # linear within +-0.1 $/day, logarithmic beyond: outliers and zero both show
    every = pd.concat([pd.to_numeric(ok[f"{r}_core_excess_usd"]) for r in rules])
    ax.set_ylim(min(every.min(), 0.0) * 1.6, max(every.max(), 0.0) * 1.6 + 0.01)
    ax.set_xticks(range(len(rules)), [SETTLE_RULE_STYLE[r][1] for r in rules], rotation=20, ha="right")
    ax.set(ylabel="core excess, $/day (≤ 0: in the core; symlog)", title=f"{len(ok)} days (bar: median)")
    names = ["winter", "spring", "summer", "autumn"]
    width = 0.8 / len(rules)
    by_name = {SETTLE_RULE_STYLE[r][1]: r for r in rules}
    for k, (name, rule) in enumerate(by_name.items()):
        part = seasons[seasons["rule"] == name].set_index("season")
        x, share = np.arange(4) + (k - (len(rules) - 1) / 2) * width, part.reindex(names)["share_in_core"]
        bx.bar(x, share, width, color=SETTLE_RULE_STYLE[rule][0], label=name)
        for xi, si in zip(x, share):
            if si == 0:  # a bar of height zero, written out so that it is seen
                bx.text(xi, 0.01, "0", ha="center", va="bottom", fontsize=SMALL - 2, color=SETTLE_RULE_STYLE[rule][0])
    bx.set_xticks(range(4), names)
    bx.set(ylim=(0, 1.05), ylabel="share of the season's days in the core", title="in the core, by season")
    bx.legend(fontsize=SMALL, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    return fig
