"""docker-compose.yml cannot be run here (no Docker), so its contract with the code is checked by reading it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tickmatch.stream.settings import ENV, Settings
from tickmatch.stream.topics import ALL, MODELS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_kafka_runs_in_kraft_mode_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "healthcheck" in kafka


def test_topic_job_creates_every_topic_with_the_configured_partitions(compose: dict[str, Any]) -> None:
    script = "\n".join(compose["services"]["topics"]["command"])
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop is not None
    assert set(loop.group(1).split()) == set(ALL)
    partitions = re.search(r"--partitions (\d+)", script)
    assert partitions is not None
    assert re.search(rf"--topic {MODELS} --partitions 1 ", script)
    for name in ("worker", "trainer", "simulator"):
        env = compose["services"][name]["environment"]
        assert env["TICKMATCH_PARTITIONS"] == partitions.group(1)


def test_services_use_only_known_settings_and_valid_values(compose: dict[str, Any]) -> None:
    for name in ("worker", "trainer", "simulator"):
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert set(env) <= set(ENV.values()), set(env) - set(ENV.values())
        settings = Settings.from_env(env)  # raises SettingsError on a bad value
        assert settings.broker_url == "kafka://kafka:9092"


def test_two_workers_one_trainer_and_a_simulator(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["trainer"]["command"] == ["trainer"] and "deploy" not in services["trainer"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["worker"]
    assert services["simulator"]["command"][0] == "simulate"
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_kafka_has_a_cluster_id_and_an_external_listener(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert len(env["CLUSTER_ID"]) == 22  # base64 of a 16-byte id, what KRaft's storage format expects
    assert "EXTERNAL://localhost:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "EXTERNAL:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert "29092:29092" in kafka["ports"]


def test_workers_are_health_checked_on_ready_with_cpus_matching_the_engine_threads(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    probe = " ".join(worker["healthcheck"]["test"])
    assert "/ready" in probe and str(Settings().web_port) in probe
    threads = int(worker["environment"]["TICKMATCH_MATCH_THREADS"])
    assert float(worker["deploy"]["resources"]["limits"]["cpus"]) == threads
    assert compose["services"]["simulator"]["depends_on"]["worker"]["condition"] == "service_healthy"
