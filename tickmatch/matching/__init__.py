"""The matching engine: pure numpy/numba, no Kafka.

``matching.pool`` (waiting users as arrays), ``matching.model`` (pair scores), ``matching.policy`` (waiting-time
minimum), ``matching.engine`` (one tick: candidates, auction, refill), ``matching.exact`` (reference optimum).
Import the modules you need; this package imports nothing heavy on its own.
"""
