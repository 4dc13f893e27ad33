"""desmarket: distributed energy trading with a market value allocation mechanism.

A reproduction of Hu et al., "Optimization model for distributed energy trading based on a market value
allocation mechanism in the electricity spot market", Front. Energy Res. 12:1476691 (2024).
"""

from .case import (
    DEFAULT_HOME,
    HOURS,
    Case,
    CaseError,
    Market,
    create_case,
    load_case,
    paper_retail_tariff,
)

from .model import (
    DEFAULT_SOLVER,
    Handles,
    Operation,
    SolverError,
    RoutingWarning,
    assemble_operation,
    build_clearing,
    build_independent,
    clearing_price,
    pro_rata_flows,
    read_operation,
    solve,
)
from .coordinated import Coordination, NotConvergedError
from .engine import METHODS, clear_market, solve_independent
from .settlement import (
    NoTradeError,
    Settlement,
    contribution_rates,
    cooperative_surplus,
    equal_rates,
    market_contribution,
    nash_bargaining,
    profit_rate_sweep,
    settle,
)

__all__ = [
    "Case",
    "CaseError",
    "Coordination",
    "METHODS",
    "NotConvergedError",
    "assemble_operation",
    "DEFAULT_HOME",
    "DEFAULT_SOLVER",
    "HOURS",
    "Handles",
    "Market",
    "NoTradeError",
    "Operation",
    "RoutingWarning",
    "Settlement",
    "SolverError",
    "build_clearing",
    "build_independent",
    "clear_market",
    "clearing_price",
    "contribution_rates",
    "cooperative_surplus",
    "create_case",
    "equal_rates",
    "load_case",
    "market_contribution",
    "nash_bargaining",
    "paper_retail_tariff",
    "pro_rata_flows",
    "profit_rate_sweep",
    "read_operation",
    "settle",
    "solve",
    "solve_independent",
]

__version__ = "0.1.0"
