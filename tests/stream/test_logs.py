"""The log rate limit: floods are cut to one line per period with a count, our lifecycle lines never are."""

from __future__ import annotations

import logging

from tickmatch.stream.logs import RateLimit


def record(name: str, level: int, msg: str, created: float) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    rec.created = created
    return rec


def test_a_repeated_message_passes_once_per_period_and_then_says_how_many_were_dropped() -> None:
    limit = RateLimit(period_s=10.0)
    passed = [limit.filter(record("aiokafka.conn", logging.ERROR, "Unable to connect", t)) for t in (0.0, 1.0, 2.0)]
    assert passed == [True, False, False]
    later = record("aiokafka.conn", logging.ERROR, "Unable to connect", 10.5)
    assert limit.filter(later) and getattr(later, "suppressed", None) == 2
    # our own warnings are limited too: a flood of malformed input must not flood the log
    own = [limit.filter(record("tickmatch.agents.runtime", logging.WARNING, "bad input", t)) for t in (0.0, 0.1)]
    assert own == [True, False]


def test_our_lifecycle_lines_all_pass() -> None:
    limit = RateLimit(period_s=10.0)
    lines = [record("tickmatch.agents.recovery", logging.INFO, "partition recovered", 0.001 * p) for p in range(4)]
    assert all(limit.filter(line) for line in lines)  # one per partition, within milliseconds
