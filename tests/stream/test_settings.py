"""Settings come from the environment with clear errors naming the variable."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from tickmatch.stream.settings import DOCS, ENV, Settings, SettingsError, markdown_table
from tickmatch.stream.topics import bootstrap_of


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url is None and settings.tick_interval_s == 0.5
    custom = Settings.from_env(
        {
            "BROKER_URL": "kafka://k:9092",
            "TICKMATCH_TICK_INTERVAL_S": "0.25",
            "TICKMATCH_PARTITIONS": "8",
            "TICKMATCH_WEB_ENABLED": "yes",
        }
    )
    assert (custom.broker_url, custom.tick_interval_s, custom.partitions, custom.web_enabled) == (
        "kafka://k:9092",
        0.25,
        8,
        True,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TICKMATCH_TICK_INTERVAL_S": "fast"}, "TICKMATCH_TICK_INTERVAL_S='fast' is not a valid float"),
        ({"TICKMATCH_TICK_INTERVAL_S": "0"}, "TICKMATCH_TICK_INTERVAL_S must be > 0"),
        ({"TICKMATCH_PARTITIONS": "2.5"}, "TICKMATCH_PARTITIONS='2.5' is not a valid int"),
        ({"TICKMATCH_PARTITIONS": "0"}, "TICKMATCH_PARTITIONS must be in 1..1024"),
        ({"TICKMATCH_WEB_ENABLED": "maybe"}, "TICKMATCH_WEB_ENABLED='maybe' is not a valid bool"),
        ({"TICKMATCH_CENSOR_AFTER_S": "inf"}, "not finite"),
        ({"TICKMATCH_LABEL_GRACE_S": "30", "TICKMATCH_CENSOR_AFTER_S": "10"}, "must be below"),
    ],
)
def test_bad_values_are_reported_by_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Settings.from_env(env)


def test_every_field_has_an_environment_variable() -> None:
    assert set(ENV) == set(Settings.__dataclass_fields__)


def test_bootstrap_of_faust_urls() -> None:
    assert bootstrap_of("kafka://a:1;kafka://b:2") == "a:1,b:2"
    assert bootstrap_of("b:9") == "b:9"


def test_the_readme_documents_every_setting_as_the_code_does() -> None:
    """DOCS is the one place a setting's meaning is written; the README's table is its rendering."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme
    assert set(DOCS) == set(ENV) == {f.name for f in fields(Settings)}
