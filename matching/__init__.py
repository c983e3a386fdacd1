"""The matching engine: pure numpy, no Kafka. Pool arrays, pair scoring, candidate selection, matching."""

from matching.features import HEURISTIC_VERSION, embed_profile
from matching.match import Matching, match_pool
from matching.pool import Pool, PoolError

__all__ = ["HEURISTIC_VERSION", "Matching", "Pool", "PoolError", "embed_profile", "match_pool"]
