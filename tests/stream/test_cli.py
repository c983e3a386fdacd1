"""The CLI: user errors end in one clear line (exit 2), schemas export, and the demo's JSON contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tickmatch.cli import main


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tickmatch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def test_bad_setting_is_one_line_not_a_traceback() -> None:
    done = run_cli("worker", env={"TICKMATCH_TICK_INTERVAL_S": "soon"})
    assert done.returncode == 2
    assert (
        done.stderr.strip() == "tickmatch: error: TICKMATCH_TICK_INTERVAL_S='soon' is not a valid float: "
        "could not convert string to float: 'soon'"
    )


def test_bad_argument_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--seconds", "-3"])
    assert exit_info.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


def test_schemas_command_writes_one_file_per_record(tmp_path: Path) -> None:
    assert main(["schemas", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chat-end.v1.json",
        "chat-heartbeat.v1.json",
        "duration-label.v1.json",
        "join.v1.json",
        "leave.v1.json",
        "match-decision.v1.json",
        "model-update.v1.json",
        "profile-update.v1.json",
        "shard-stats.v1.json",
        "tick-stats.v1.json",
    ]


@pytest.mark.integration
def test_demo_learns_live_and_keeps_its_json_contract(tmp_path: Path) -> None:
    """The whole flywheel on the embedded broker: worker, trainer and market as separate processes. Labels reach
    the trainer, its versions reach the worker, and the decisions topic shows the versions advancing."""
    env = {
        "TICKMATCH_DATA_DIR": str(tmp_path),
        "TICKMATCH_CENSOR_AFTER_S": "5",
        "TICKMATCH_LABEL_GRACE_S": "1",
        "TICKMATCH_TRAIN_MIN_LABELS": "40",
        "TICKMATCH_TRAIN_EVERY": "40",
    }
    env.pop("BROKER_URL", None)
    done = run_cli("demo", "--seconds", "10", "--rate", "40", "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "events",
        "decisions",
        "matched_users",
        "labels",
        "censored_labels",
        "dlq",
        "double_booked",
        "tick_p50_ms",
        "tick_p99_ms",
        "mean_wait_s",
    ):
        assert key in result
    assert result["decisions"] > 0 and result["labels"] > 0
    assert result["double_booked"] == 0 and result["dlq"] == 0
    assert result["matched_users"] == 2 * result["decisions"] and result["unlabelled_decisions"] == 0
    assert result["events"] == result["events_sent"]
    assert "embedded Tansu broker on 127.0.0.1:" in done.stderr
    # versions in decision order: the heuristic first, then learned versions, each newer than the last
    versions = result["model_versions"]
    assert versions[0] == "heuristic-v2", versions
    learned = [int(v.removeprefix("duration-v")) for v in versions[1:]]
    assert len(learned) >= 2 and learned == sorted(set(learned)), versions
    assert result["learned_decisions"] > 0 and result["models_published"] >= len(learned)
