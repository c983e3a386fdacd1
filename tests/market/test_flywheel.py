"""``tickmatch flywheel`` end to end on a tiny market: JSON with every promised key, PNGs written."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tickmatch.cli import main
from tickmatch.market.flywheel import mean_ci, t95


def test_flywheel_cli_reports_every_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["flywheel", "--hours", "0.05", "--seeds", "2", "--json", "--out", str(tmp_path)])
    assert code == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["policies"]) == {"random", "fifo", "heuristic", "learned", "oracle"}
    for metrics in summary["policies"].values():
        assert {"chat_minutes_per_user_hour", "match_rate", "mean_wait_s", "return_rate"} <= set(metrics)
        assert 0.0 < metrics["match_rate"] <= 1.0
    for key in ("learned_vs_oracle", "auroc", "bayes_auroc", "mse", "learned_minus_heuristic", "off_policy"):
        assert key in summary
    assert 0.5 < summary["bayes_auroc"] <= 1.0
    for png in summary["plots"]:
        assert Path(png).stat().st_size > 10_000
    assert orjson.loads((tmp_path / "flywheel.json").read_text()) == summary


def test_flywheel_cli_rejects_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flywheel", "--policies", "magic"]) == 2
    assert "unknown policy 'magic'" in capsys.readouterr().err


def test_confidence_interval() -> None:
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0
    assert ci["ci_high"] - 2.0 == pytest.approx(t95(2) * 1.0 / 3**0.5)
    assert t95(2) == 4.303 and t95(11) == 2.228 and t95(1000) == 1.96
