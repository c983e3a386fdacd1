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


def dict_config(level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` that sends every record, as JSON, to stderr at ``level``."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
    }


def setup(level: str = "INFO") -> None:
    """Install :func:`dict_config` for this process."""
    logging.config.dictConfig(dict_config(level))
