"""Market simulator: synthetic users with hidden ground truth, publishing real events (live) for demos."""

from tickmatch.market.population import Population

__all__ = ["Population"]
