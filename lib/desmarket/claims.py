"""The paper's claims (Section 3) as data: their kinds, units, sources and our reasons where we differ.

``resources/paper_claims.toml`` holds them (its header documents the fields); :func:`paper_claims` reads it,
:func:`parse_claims` validates the format, :func:`agreement` compares a value of ours with a claim and
:func:`claim_note` writes a claim's note for a run. Pure: nothing here solves; only :func:`paper_claims` reads
(the package's own resource). :func:`desmarket.report.scorecard` puts them beside our numbers.
"""

from __future__ import annotations

import string
import tomllib
from importlib import resources

import numpy as np
import pandas as pd

#: Kinds of a paper claim (field ``kind`` of paper_claims.toml) and how each is compared with ours.
CLAIM_KINDS = {
    "number": "sign and order of magnitude (within a factor 10) of the paper's value",
    "sign": "sign only: the paper states a direction, not a value",
    "unreported": "nothing to compare: the paper reports no value; ours is shown with its reason",
}
#: What the scorecard's paper column shows for a claim of kind "unreported".
NOT_REPORTED = "not reported"
#: Where a run's case comes from (``source`` of :func:`desmarket.report.scorecard`): "measured", built by
#: :func:`desmarket.data.build_case` from the measured CityLearn homes (notebook 01 without ``case_dir``), or
#: "case", a user's case directory (``make reproduce CASE=dir``). A claim's note is its ``reason`` for the
#: measured data and its ``reason_case`` (if given, else ``reason``) for a user's case.
DATA_SOURCES = ("measured", "case")
#: Fields a claim's reason may name in braces, filled from the run (:func:`desmarket.report.note_fields`).
NOTE_FIELDS = ("rho", "buy_ratio", "sell_ratio")


def parse_claims(text: str) -> pd.DataFrame:
    """Claims in the TOML format of ``resources/paper_claims.toml``, one row per headline key, in order.

    Columns: claim, unit, kind, paper (value, NaN for kinds "sign" and "unreported"), paper_text, sign, reason,
    reason_case (the note for a user's case; default the reason), source (where our value comes from:
    "headline", :func:`desmarket.report.headline`, or "fairness" and "rules", notebook 08). Reasons are templates:
    ``{rho}`` and the other :data:`NOTE_FIELDS` are filled from the run by :func:`desmarket.report.scorecard`.
    Validated: an unknown kind, a missing field, a paper value on an "unreported" claim or an unknown field in
    braces is a ValueError naming the claim.
    """
    rows = []
    for key, claim in tomllib.loads(text).items():
        kind = claim.get("kind")
        needed = {"number": ("paper",), "sign": ("paper_text", "sign"), "unreported": ()}.get(kind)
        if needed is None:
            raise ValueError(f"paper claims [{key}]: kind must be one of {list(CLAIM_KINDS)}, got {kind!r}")
        missing = [f for f in ("claim", "unit", "reason", *needed) if f not in claim]
        if missing:
            raise ValueError(f"paper claims [{key}]: missing {missing}; see the header of paper_claims.toml")
        if kind == "unreported" and {"paper", "paper_text", "sign"} & set(claim):
            raise ValueError(f"paper claims [{key}]: kind \"unreported\" takes no paper, paper_text or sign")
        rows.append(
            {
                "key": key,
                "claim": claim["claim"],
                "unit": claim["unit"],
                "kind": kind,
                "paper": float(claim.get("paper", np.nan)),
                "paper_text": claim.get("paper_text", ""),
                "sign": float(claim.get("sign", np.nan)),
                "reason": claim["reason"],
                "reason_case": claim.get("reason_case", claim["reason"]),
                "source": claim.get("source", "headline"),
            }
        )
        for field in ("reason", "reason_case"):
            _check_template(key, field, rows[-1][field])
        if rows[-1]["source"] not in CLAIM_SOURCES:
            raise ValueError(f"paper claims [{key}]: source must be one of {CLAIM_SOURCES}, got {rows[-1]['source']!r}")
    return pd.DataFrame(rows).set_index("key")


def _check_template(key: str, field: str, text: str) -> None:
    """A claim's reason names only :data:`NOTE_FIELDS` in braces (a literal brace is written twice)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(
            f"paper claims [{key}]: {field} is not a valid template ({exc}); write a literal brace twice, {{{{ or }}}}"
        ) from None
    unknown = sorted(names - set(NOTE_FIELDS))
    if unknown:
        raise ValueError(
            f"paper claims [{key}]: {field} names unknown fields {unknown}; use only "
            f"{{{'}, {'.join(NOTE_FIELDS)}}} (filled from the run)"
        )


def claim_note(claim, fields: dict, source: str = "measured") -> str:
    """The note of one claim (a row of :func:`parse_claims`) for a run: its reason for the measured data or its
    reason_case for a user's case (``source``, :data:`DATA_SOURCES`), with the run's
    :func:`desmarket.report.note_fields`."""
    if source not in DATA_SOURCES:
        raise ValueError(f"source must be one of {DATA_SOURCES} (where the case comes from), got {source!r}")
    return (claim.reason if source == "measured" else claim.reason_case).format_map(fields)


def agreement(kind: str, paper: float, sign: float, ours: float) -> tuple[str, str]:
    """(same direction, same order of magnitude) of ours against a claim, "yes" / "no" / "n/a" (CLAIM_KINDS)."""
    if kind == "unreported" or ours is None or not np.isfinite(ours):
        return "n/a", "n/a"
    if kind == "sign":
        return ("yes" if np.sign(ours) == sign else "no"), "n/a"
    direction = "yes" if np.sign(paper) == np.sign(ours) else "no"
    magnitude = "yes" if paper != 0 and ours != 0 and abs(np.log10(abs(ours) / abs(paper))) <= 1 else "no"
    return direction, magnitude


#: Where our value of a claim comes from (field ``source`` of paper_claims.toml, default "headline"); "rules"
#: rows are not the paper's claims but the project's answer to them (issue 22: a settlement rule in the core,
#: notebook 08, written to fairness_scorecard.csv with the "fairness" rows).
CLAIM_SOURCES = ("headline", "fairness", "rules")


def paper_claims() -> pd.DataFrame:
    """The paper's claims from the package's ``resources/paper_claims.toml`` (:func:`parse_claims`)."""
    text = resources.files("desmarket").joinpath("resources/paper_claims.toml").read_text(encoding="utf-8")
    return parse_claims(text)
