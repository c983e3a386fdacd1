"""Structured logs for our processes: one JSON object per line on stderr, ``extra`` fields kept.

Why: a worker's interesting facts travel in ``extra`` (which shards a revoke dropped, a rejected model's error);
the default text format drops them. stdout stays free for results (the demo's JSON line). The worker hands
:func:`dict_config` to Faust's worker (which would otherwise install its own coloured text handler); the trainer
calls :func:`setup`.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import orjson

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class RateLimit(logging.Filter):
    """Lets the same message (logger + format string) through at most once per ``period_s``; the next one that
    passes carries ``suppressed``, the count dropped in between.

    Why: with the broker gone, aiokafka and Faust log every reconnect attempt (~14,000 lines in 90 s, measured), and
    a flood of malformed input would log a warning per event; the first line says what happened, the count says
    how often, and the dead-letter topic keeps every event.

    Our own records below WARNING always pass: they are lifecycle lines, one per partition or per snapshot (a
    recovery logs "partition recovered" for each partition within milliseconds; rate-limited, only the first of
    them reached the log, and the chaos benchmark's replay counts read from those lines came out short)."""

    def __init__(self, period_s: float = 10.0) -> None:
        super().__init__()
        self.period_s = period_s
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name.startswith("tickmatch"):
            return True
        key = (record.name, str(record.msg))
        last = self._last.get(key)
        if last is not None and record.created - last < self.period_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = record.created
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.suppressed = dropped
        if len(self._last) > 10_000:  # messages with variable text: keep the memory bounded
            self._last.clear()
        return True


def dict_config(level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` that sends every record, as JSON, to stderr at ``level``, repeated
    messages rate-limited (:class:`RateLimit`)."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "filters": {"rate": {"()": f"{__name__}.RateLimit"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["rate"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def setup(level: str = "INFO") -> None:
    """Install :func:`dict_config` for this process."""
    logging.config.dictConfig(dict_config(level))
