"""A small run of the chaos benchmark as a test: real worker processes on a real broker, kill -9 x3, a SIGTERM
restart and a scale 1 -> 2 -> 1 under 200 joins/s with retried joins, leaves and chat-ends; the independent
verifier (``bench.chaos.verify``) must find nobody double-booked, matched after a leave the worker had applied,
or lost, and every decision labelled. Speed figures are the benchmark's business, not asserted here."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bench.chaos import run


def test_kill_9_restarts_and_a_rebalance_lose_no_one_and_double_book_no_one(tmp_path: Path) -> None:
    args = argparse.Namespace(
        seconds=40.0, rate=200.0, shards=8, kills=3, terms=1, scale=True, censor_after=10.0,
        snapshot_interval=5.0, dup_share=0.3, seed=11, data=str(tmp_path), session_timeout=4.0,
    )  # fmt: skip
    result = asyncio.run(run(args))
    assert result["decisions"] > 1000 and result["recoveries"] >= 3, result
    assert result["double_booked_users"] == 0, result
    assert result["matched_after_leave"] == 0, result
    assert result["lost_waiting_users"] == 0, result
    assert result["decisions_without_label"] == 0, result
    assert result["duplicate_decisions"] == 0 and result["duplicate_labels"] == 0, result
