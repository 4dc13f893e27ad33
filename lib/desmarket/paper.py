"""The paper's own values that the library uses as defaults, in one place (stdlib only: every layer may import it).

Hu et al. 2024, Section 3; the paper's values of what we compare (its claims) are data, in
``resources/paper_claims.toml`` (:mod:`desmarket.claims`).
"""

#: The aggregator's profit rate rho (Section 3: alpha = 0.08 per home under M2 with 10 homes means rho = 0.2), the
#: default of every function that takes one. The notebooks' parameters cells repeat it as a literal, because
#: papermill reads literals only.
PAPER_PROFIT_RATE = 0.2
