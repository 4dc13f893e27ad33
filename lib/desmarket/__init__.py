"""desmarket: distributed energy trading with a market value allocation mechanism.

A reproduction of Hu et al., "Optimization model for distributed energy trading based on a market value
allocation mechanism in the electricity spot market", Front. Energy Res. 12:1476691 (2024).

Layers, from the bottom, each importing only its own and those below (``tests/test_layers.py``):

* :mod:`~desmarket.errors` -- the one error family (``DesmarketError`` and its kinds) and the warnings;
* :mod:`~desmarket.case` -- the validated input (``load_case``, ``create_case``);
* :mod:`~desmarket.formulation` -- the model of M1 and the clearing (Eqs. 5-19), written once for every method;
* :mod:`~desmarket.model` -- build, solve, read one problem of all rows (the central reference), the tie-break;
* :mod:`~desmarket.engine` -- ``solve_independent`` / ``clear_market`` by method: central, decomposed
  (:mod:`~desmarket.pieces`, parallel) or the coordinated market process (:mod:`~desmarket.coordinated`);
* :mod:`~desmarket.settlement` -- the Nash-bargaining settlement (M2, M3, and the value rules of issue 22);
* :mod:`~desmarket.report` (tables, pure) and :mod:`~desmarket.plots` (figures, pure);
* :mod:`~desmarket.results` (``Study``, the record of a run), :mod:`~desmarket.claims` (the paper's claims);
* :mod:`~desmarket.horizon` -- Eq. 15's fixed end state of storage against a daily cycle;
* :mod:`~desmarket.study` -- a case's built problems for what-if questions
  (``Workbench``: sensitivity, solver agreement);
* :mod:`~desmarket.fairness` -- the cooperative game of the market: Shapley, nucleolus, core;
* :mod:`~desmarket.io` (result files and run folders) and :mod:`desmarket.data` (building cases from data);
* :mod:`~desmarket.twostage` -- the day-ahead market: two stages, VSS and EVPI, the held-out day, the year.
"""

from .case import (
    DEFAULT_HOME,
    HOURS,
    Case,
    Market,
    create_case,
    load_case,
    paper_retail_tariff,
)
from .coordinated import Coordination
from .engine import METHODS, clear_market, solve_independent
from .errors import (
    CaseError,
    DataError,
    DesmarketError,
    DesmarketWarning,
    InfeasibleCaseError,
    MismatchError,
    NotConvergedError,
    NoTradeError,
    OutputError,
    RegularizationWarning,
    RoutingWarning,
    SolverError,
    UnansweredError,
)
from .fairness import (
    allocation_table,
    coalition_value,
    coalition_values,
    core_excess,
    least_core,
    nucleolus,
    rule_verdicts,
    shapley_value,
    standalone_values,
)
from .model import (
    Operation,
    assemble_operation,
    build_clearing,
    build_independent,
    case_fingerprint,
    clearing_price,
    read_operation,
    solve,
)
from .paper import PAPER_PROFIT_RATE
from .settlement import (
    SETTLE_RULES,
    Settlement,
    contribution_rates,
    cooperative_surplus,
    market_contribution,
    nash_bargaining,
    profit_rate_sweep,
    rule_values,
    settle,
)
from .study import Study, Workbench, run_study
from .twostage import realised_day, stochastic_value, stochastic_values

__all__ = [
    # the error family (desmarket.errors)
    "DesmarketError",
    "CaseError",
    "DataError",
    "SolverError",
    "InfeasibleCaseError",
    "NotConvergedError",
    "UnansweredError",
    "NoTradeError",
    "MismatchError",
    "OutputError",
    "DesmarketWarning",
    "RoutingWarning",
    "RegularizationWarning",
    # the input
    "Case",
    "Market",
    "create_case",
    "load_case",
    "paper_retail_tariff",
    "DEFAULT_HOME",
    "HOURS",
    # solving: M1 and the market clearing, by method
    "solve_independent",
    "clear_market",
    "METHODS",
    "Coordination",
    "Operation",
    # the models, for building on them: build, solve, read
    "build_independent",
    "build_clearing",
    "solve",
    "read_operation",
    "clearing_price",
    "assemble_operation",
    "case_fingerprint",
    # the settlement
    "settle",
    "Settlement",
    "cooperative_surplus",
    "market_contribution",
    "contribution_rates",
    "nash_bargaining",
    "profit_rate_sweep",
    "SETTLE_RULES",
    "rule_values",
    # the study layer
    "Study",
    "Workbench",
    "run_study",
    "PAPER_PROFIT_RATE",
    # fairness: the cooperative game of the market
    "coalition_value",
    "coalition_values",
    "shapley_value",
    "standalone_values",
    "nucleolus",
    "least_core",
    "core_excess",
    "allocation_table",
    "rule_verdicts",
    # two stages: the day-ahead market (issue 20)
    "stochastic_value",
    "stochastic_values",
    "realised_day",
]

__version__ = "0.1.0"
