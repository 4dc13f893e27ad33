"""Fill the generated blocks of README.md and the docs pages from the committed result files (`make reproduce`).

A block is the text between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`. It may stand in any of
the files of PAGES (README.md holds the scorecard; docs/findings.md the result tables; docs/usage/speed.md the
benchmark), at most once per file, and every block must stand in at least one. `--check` exits 1 if a file
is not what the result files give (tests/test_readme.py runs it), so no page ever drifts from results/.
"""

import argparse
import re
import sys

import pandas as pd

from desmarket.io import project_root

ROOT = project_root()
TABLES = ROOT / "results" / "tables"
#: The files whose generated blocks this script fills, relative to the repository root.
PAGES = ("README.md", "docs/findings.md", "docs/usage/speed.md")


def _markdown(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_float_dtype(frame[col]):
            frame[col] = frame[col].map(lambda v: "" if pd.isna(v) else format(v, floatfmt))
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


#: Columns of the README's size table: (column of size_summary.csv, heading, factor).
SIZE_COLUMNS = (
    ("surplus_per_home_usd", "ΔC per home, $/day", 1),
    ("trading_share", "ΔC needing trades, %", 100),
    ("matched_kwh_per_home", "traded, kWh/home/day", 1),
    ("alpha_gini", "Gini of α", 1),
    ("balanced_share", "balanced cells, %", 100),
    ("congested_share", "congested cells, %", 100),
)


def _season_table(seasons: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: per season the median over its days and, in brackets, the share of days that agree."""
    out = seasons[["claim"]].copy()
    for name in ("winter", "spring", "summer", "autumn"):
        out[name] = [
            ("" if pd.isna(m) else f"{m:.3g}") + ("" if pd.isna(a) else f" ({100 * a:.0f} %)")
            for m, a in seasons[[f"{name}_median", f"{name}_agree"]].itertuples(index=False)
        ]
    out["paper"] = seasons["paper"]
    return out


def _size_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per day and size: the median over seeds, with the range in brackets."""
    out = summary[["season", "n_homes", "seeds"]].copy()
    for col, head, k in SIZE_COLUMNS:
        fmt = ".1f" if k == 100 else ".3f"
        out[head] = [
            f"{k * m:{fmt}} ({k * lo:{fmt}}–{k * hi:{fmt}})"
            for m, lo, hi in summary[[f"{col}_median", f"{col}_min", f"{col}_max"]].itertuples(index=False)
        ]
    return out


def _robustness_table(robust: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: per price source the paper day's value and the year's median with the share of days
    agreeing in brackets; the paper's value and the verdict."""
    sources = [c.removesuffix(" day") for c in robust.columns if c.endswith(" day")]
    out = robust[["claim"]].copy()
    for tag in sources:
        out[f"{tag}: paper day / year median (days agreeing)"] = [
            ("" if pd.isna(d) else f"{d:.3g}")
            + " / "
            + (y.split(" (")[0] if isinstance(y, str) else "")
            + ("" if pd.isna(a) else f" ({100 * a:.0f} %)")
            for d, y, a in robust[[f"{tag} day", f"{tag} year", f"{tag} agreeing"]].itertuples(index=False)
        ]
    out["paper"] = robust["paper"]
    out["holds over the year for"] = robust["holds over the year"]
    out["paper day agrees for"] = robust["paper day agrees"]
    return out


#: Rows of the README's horizon table: (column of horizon_summary.csv, heading, factor, format).
HORIZON_ROWS = (
    ("days", "days studied", 1, ".0f"),
    ("surplus_usd_median", "ΔC, $/day (median)", 1, ".2f"),
    ("market_peak_import_kw_median", "market's peak import, kW (median)", 1, ".1f"),
    ("peak_import_change_pct_median", "peak import change vs M1, % (median)", 1, "+.0f"),
    ("share_of_days_peak_raised", "days on which the market raises the peak import, %", 100, ".0f"),
    ("share_of_days_peak_in_last_hour", "days with the peak in the last hour (23:00), %", 100, ".0f"),
    ("market_import_last_hour_kw_median", "import in the last hour, kW (median)", 1, ".1f"),
    ("share_of_days_peak_in_6_cheapest_hours", "days with the peak in one of the 6 cheapest hours, %", 100, ".0f"),
)


def _horizon_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per quantity of the horizon comparison over the year, one column per end-of-day rule."""
    summary = summary.set_index("rule")
    rows = {head: [format(k * summary.loc[r, col], fmt) for r in summary.index] for col, head, k, fmt in HORIZON_ROWS}
    return pd.DataFrame(rows, index=summary.index).T.rename_axis("over the year").reset_index()


def blocks() -> dict:
    read = lambda name: pd.read_csv(TABLES / name, keep_default_na=False, na_values=[""])
    if (TABLES / "scorecard_days.csv").exists():  # notebook 09: every row, with the share of days that agree
        card = read("scorecard_days.csv")
        card["days_agreeing"] = card["days_agreeing"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.0f} %")
        days = ["days_agreeing"]
    else:
        card = read("scorecard.csv")
        if (TABLES / "fairness_scorecard.csv").exists():  # notebook 08's rows (the paper's fairness claim)
            card = pd.concat([card, read("fairness_scorecard.csv")], ignore_index=True)
        days = []
    card = card[["claim", "unit", "paper", "ours", "same_direction", "same_order_of_magnitude", *days, "note"]]
    card["ours"] = card["ours"].map(lambda v: f"{v:.3f}")
    card["note"] = card["note"].fillna("")
    table4 = pd.read_csv(TABLES / "table4_costs.csv")
    sens = pd.read_csv(TABLES / "sensitivity.csv")
    if "reason" in sens and sens["reason"].isna().all():  # every row computed: no reason to show
        sens = sens.drop(columns="reason")
    out = {
        "scorecard": _markdown(card),
        "table4": _markdown(table4),
        "sensitivity": _markdown(sens),
    }
    if (TABLES / "fairness_game.csv").exists():
        out["fairness_game"] = _markdown(pd.read_csv(TABLES / "fairness_game.csv"))
        out["fairness_allocations"] = _markdown(pd.read_csv(TABLES / "fairness_allocations.csv"))
    if (TABLES / "claims_summary.csv").exists():
        out["claims_summary"] = _markdown(
            pd.read_csv(TABLES / "claims_summary.csv", keep_default_na=False, na_values=[""]).drop(columns="key")
        )
    if (TABLES / "claims_by_season.csv").exists():
        out["claims_by_season"] = _markdown(
            _season_table(pd.read_csv(TABLES / "claims_by_season.csv", keep_default_na=False, na_values=[""]))
        )
    if (TABLES / "robustness.csv").exists():
        out["robustness"] = _markdown(_robustness_table(read("robustness.csv")))
    if (TABLES / "robustness_fairness.csv").exists():
        fair = read("robustness_fairness.csv").drop(columns="key")
        fair.columns = [
            "prices",
            "price day",
            "ΔC, $/day",
            "stand-alone share of ΔC",
            "M3 core excess, $/day",
            "aggregator Shapley share",
        ]
        out["robustness_fairness"] = _markdown(fair)
    if (TABLES / "horizon_summary.csv").exists():
        out["horizon_summary"] = _markdown(_horizon_table(read("horizon_summary.csv")))
    if (TABLES / "size_summary.csv").exists():
        out["size_summary"] = _markdown(_size_table(pd.read_csv(TABLES / "size_summary.csv")))
    bench = ROOT / "results" / "bench" / "bench.csv"
    if bench.exists():
        table = pd.read_csv(bench)
        central = table[table.method == "central"].set_index("homes").total_s
        table["central_time_ratio"] = table.homes.map(central) / table.total_s  # x faster than central
        machine = (ROOT / "results" / "bench" / "machine.txt").read_text().strip()
        out["bench"] = f"Machine: {machine}\n\n" + _markdown(table, ".3g")
    return out


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)


def render(text: str, name: str = "README.md", body: dict | None = None, required: bool = True) -> str:
    """``text`` with its generated blocks replaced. A block twice in one file is an error; with ``required``
    (one file alone, as before) a missing block is an error too."""
    for block, content in (blocks() if body is None else body).items():
        text, found = _pattern(block).subn(lambda m: m.group(1) + content + "\n" + m.group(2), text)
        if found > 1 or (required and found != 1):
            raise SystemExit(
                f"{name}: expected one block <!-- generated:{block} --> ... <!-- /generated:{block} -->, found {found}"
            )
    return text


def render_pages(root=ROOT, pages=PAGES) -> dict:
    """{page: (old text, new text)} for every page; a block that stands in no page is an error."""
    body = blocks()
    out = {}
    for page in pages:
        text = (root / page).read_text(encoding="utf-8")
        out[page] = (text, render(text, page, body, required=False))
    for block in body:
        if not any(_pattern(block).search(old) for old, _ in out.values()):
            raise SystemExit(
                f"no page holds the block <!-- generated:{block} --> ... <!-- /generated:{block} -->; "
                f"add it to one of {', '.join(pages)}"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is out of date")
    args = parser.parse_args()
    pages = render_pages()
    stale = [page for page, (old, new) in pages.items() if old != new]
    if args.check:
        if stale:
            print(f"{', '.join(stale)} out of date with results/: run `make reproduce` (or scripts/update_readme.py)")
            return 1
        return 0
    for page in stale:
        (ROOT / page).write_text(pages[page][1], encoding="utf-8")
    print(f"generated blocks updated ({', '.join(stale) or 'all pages already up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
