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

__version__ = "0.1.0"
