"""The benchmark's contract (tiny sizes; the numbers themselves live in the README, not in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.tick import main


def test_bench_prints_one_json_object_last_and_writes_the_histogram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--n", "300", "700", "--dim", "8", "--ticks", "5", "--floor-runs", "2", "--quality-pools", "2",
         "--quality-n", "80", "--out", str(tmp_path), "--json"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["n"], r["dim"]) for r in report["results"]] == [(300, 8), (700, 8)]
    for row in report["results"]:
        assert row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"] <= row["max_ms"]
        assert row["floor_ms"] > 0 and row["ratio_p999_to_floor"] == pytest.approx(
            row["p999_ms"] / row["floor_ms"], rel=0.1
        )
        assert 0.5 <= row["quality_min"] <= row["quality_vs_exact"] <= 1.0 + 1e-6
    assert (tmp_path / "tick_latency.png").stat().st_size > 1000
    assert json.loads((tmp_path / "tick.json").read_text())["results"] == report["results"]


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--churn", "1.5"])
    assert exc.value.code == 2
    assert "churn" in capsys.readouterr().err
