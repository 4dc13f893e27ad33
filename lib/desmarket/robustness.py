"""Which findings come from the market and which from the prices (issue 19): every claim under each price source.

The study's numbers rest on one price series. :func:`claims_by_source` runs the year study
(:func:`desmarket.year.claims_by_day`) once per shipped price source (:data:`ROBUSTNESS_SOURCES`: ERCOT 2022,
ERCOT 2021 with Winter Storm Uri, and the synthetic PJM-like generator) on the same homes, scenarios and seeds;
:func:`robustness_table` gives per claim and source the paper's day, the median and 5-95 % range over the year
and the share of days agreeing with the paper, and a verdict: the claim holds for every source, for none, or
depends on the prices. :func:`fairness_by_source` adds the paper day's fairness numbers per source (the
stand-alone share of ΔC, M3's core excess, the aggregator's Shapley share; the exact game of
:mod:`desmarket.fairness`). Rows are reused between runs where their inputs are unchanged
(:mod:`desmarket.daycache`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import fairness, year
from .data import PAPER_DATE, build_case, load_measured_homes, price_source
from .daycache import cached_rows, data_digest
from .errors import quiet_warnings
from .paper import PAPER_PROFIT_RATE
from .report import agreement
from .study import run_study

#: The shipped price sources, the default first.
ROBUSTNESS_SOURCES = ("ercot-2022", "ercot-2021", "pjm-like")
#: Version of :func:`fairness_row` (bump when what it computes changes; :mod:`desmarket.daycache`).
FAIRNESS_VERSION = 1
#: A claim "holds" for a source when at least this share of the year's studied days agrees with the paper.
HOLDS_SHARE = 0.5


def claims_by_source(
    sources=ROBUSTNESS_SOURCES, dates=None, *, tables=(), fresh: bool = False, n_jobs: int | None = -1, **kw
) -> pd.DataFrame:
    """The year study's rows (:func:`desmarket.year.claims_by_day`) of every source, stacked, with a ``prices``
    column (the source's tag). ``dates``: the days (default every day of the measured data); ``tables``: earlier
    tables whose rows are reused by key (any source's rows, and notebook 09's ``claims_by_day.csv``, whose keys
    are the same); ``kw``: n_homes, n_scenarios, seed, profit_rate. ``attrs["reused"]`` counts the reused rows."""
    frames, reused = [], 0
    for name in sources:
        source = price_source(name)
        frame = year.claims_by_day(dates, prices=source, tables=tables, fresh=fresh, n_jobs=n_jobs, **kw)
        reused += frame.attrs["reused"]
        frame = frame.drop(columns="prices", errors="ignore")  # rows reused from a stacked table carry it
        frame.insert(0, "prices", source.tag)
        frames.append(frame)
    out = pd.concat(frames)
    out.attrs["reused"] = reused
    return out


def _day_agrees(kind: str, paper, sign, value: float) -> str:
    """yes / no (in direction, and in order of magnitude where the paper gives a number), or n/a."""
    if pd.isna(value):
        return "n/a"
    direction, magnitude = agreement(kind, paper, sign, value)
    if direction == "n/a":
        return "n/a"
    return "yes" if direction == "yes" and magnitude != "no" else "no"


def robustness_table(by_source: pd.DataFrame, claims: pd.DataFrame, date=PAPER_DATE) -> pd.DataFrame:
    """Per claim of the paper (source "headline") and price source: the value on ``date`` (``<source> day``),
    the median over the year with its 5-95 % range (``<source> year``) and the share of the year's days agreeing
    with the paper (``<source> agreeing``); then ``holds over the year``: the sources under which at least
    :data:`HOLDS_SHARE` of the days agree (``every source``, ``no source``, or their names; ``n/a`` where the
    paper gives no value), and ``paper day agrees``: the sources under which ``date`` itself agrees."""
    day = pd.Timestamp(date).strftime("%Y-%m-%d")
    headline = claims[claims["source"] == "headline"]
    out = pd.DataFrame({"claim": headline["claim"], "unit": headline["unit"]})
    year_holds: dict[str, list[str]] = {}
    day_holds: dict[str, list[str]] = {}
    for tag, rows in by_source.groupby("prices", sort=False):
        summary = year.claims_summary(rows, claims)
        ok = rows[rows["status"] == "ok"]
        values = ok.loc[day] if day in ok.index else None
        days, years, shares = [], [], []
        year_holds[tag], day_holds[tag] = [], []
        for key, c in headline.iterrows():
            v = float(values[key]) if values is not None and pd.notna(values[key]) else np.nan
            s = summary.loc[key]
            days.append(v)
            years.append(f"{s['median']:.3g} ({s['p05']:.3g} to {s['p95']:.3g})" if s["days"] else "")
            shares.append(s["share_agree"])
            year_holds[tag].append(
                "n/a" if pd.isna(s["share_agree"]) else "yes" if s["share_agree"] >= HOLDS_SHARE else "no"
            )
            day_holds[tag].append(_day_agrees(c.kind, c.paper, c.sign, v))
        out[f"{tag} day"] = days
        out[f"{tag} year"] = years
        out[f"{tag} agreeing"] = shares
    out["paper"] = [
        {"sign": c.paper_text, "unreported": "not reported"}.get(c.kind, c.paper) for _, c in headline.iterrows()
    ]
    out["holds over the year"] = [_which({t: h[k] for t, h in year_holds.items()}) for k in range(len(headline))]
    out["paper day agrees"] = [_which({t: h[k] for t, h in day_holds.items()}) for k in range(len(headline))]
    out.index.name = "key"
    return out


def _which(holds: dict) -> str:
    """``every source``, ``no source``, the names of the sources that hold, or ``n/a``."""
    if all(h == "n/a" for h in holds.values()):
        return "n/a"
    yes = [tag for tag, h in holds.items() if h == "yes"]
    if len(yes) == len(holds):
        return "every source"
    return ", ".join(yes) if yes else "no source"


def fairness_row(case, profit_rate: float = PAPER_PROFIT_RATE, n_jobs: int | None = -1) -> dict:
    """The fairness numbers of one case (exact game, :func:`desmarket.fairness.coalition_values`, N <= 14):
    ΔC ($/day, Eq. 20), the sum of the stand-alone values v({aggregator, i}) as a share of ΔC, M3's core excess
    ($/day; <= 0: in the core) and the aggregator's Shapley value as a share of ΔC."""
    with quiet_warnings():
        study = run_study(case, profit_rate, n_jobs=n_jobs)
        values = fairness.coalition_values(case, study.independent, n_jobs=n_jobs, progress=False)
    surplus = study.m3.surplus
    singles = sum(v for homes, v in values.items() if len(homes) == 1)
    shapley = fairness.shapley_value(case, values=values)
    gains = np.r_[study.m3.aggregator_gain, study.m3.home_gain]
    return {
        "surplus_usd": surplus,
        "standalone_share_of_delta_c": singles / surplus,
        "m3_core_excess_usd": fairness.core_excess(case, gains, values)[0],
        "aggregator_shapley_share": float(shapley.iloc[0, 0]) / surplus,
    }


def fairness_by_source(
    sources=ROBUSTNESS_SOURCES,
    date=PAPER_DATE,
    *,
    n_homes: int = 10,
    n_scenarios: int = 10,
    seed: int = 0,
    profit_rate: float = PAPER_PROFIT_RATE,
    tables=(),
    fresh: bool = False,
    n_jobs: int | None = -1,
) -> pd.DataFrame:
    """:func:`fairness_row` of the case of ``date`` under each price source (one row per source, index
    ``prices``, with the price day), reused from ``tables`` where the inputs are unchanged."""
    measured = load_measured_homes()
    digest = data_digest(measured)
    resolved = [price_source(s) for s in sources]
    params = {"n_homes": n_homes, "n_scenarios": n_scenarios, "seed": seed, "profit_rate": profit_rate}
    keys = [
        year.day_key(date, digest, s, study="robustness_fairness", version=FAIRNESS_VERSION, **params) for s in resolved
    ]

    def compute(missing):
        rows = []
        for source in missing:
            with quiet_warnings():
                case = build_case(
                    n_homes=n_homes, n_scenarios=n_scenarios, date=date, seed=seed, measured=measured, prices=source
                )
            day = source.price_day(date).strftime("%Y-%m-%d")
            rows.append({"prices": source.tag, "price_day": day, **fairness_row(case, profit_rate, n_jobs)})
        return rows

    return cached_rows(compute, resolved, keys, tables, index="prices")
