"""docker-compose.yml and the Dockerfile: the services exist and are wired to each other."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings
from streams.topics import Topics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _kafka_name(compose: dict[str, Any]) -> str:
    names = [
        name
        for name, svc in _services(compose).items()
        if str(svc.get("image", "")).startswith("apache/kafka:")
        and "KAFKA_PROCESS_ROLES" in (svc.get("environment") or {})
    ]
    assert len(names) == 1, names
    return names[0]


def _pantau_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _services(compose).items() if s.get("build")}


def _workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _pantau_services(compose).items() if s.get("command") == ["worker"]}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_kafka_runs_in_kraft_mode_from_a_pinned_official_image(compose: dict[str, Any]) -> None:
    kafka = _services(compose)[_kafka_name(compose)]
    image = kafka["image"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", image), image
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert not any("zookeeper" in name for name in _services(compose))
    assert "healthcheck" in kafka


def test_two_workers_and_the_simulator_use_the_kafka_service(compose: dict[str, Any]) -> None:
    kafka_name = _kafka_name(compose)
    advertised = _services(compose)[kafka_name]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    workers = _workers(compose)
    assert len(workers) >= 2
    simulators = [
        s for s in _pantau_services(compose).values() if "pantau simulate" in str(s.get("command"))
    ]
    assert len(simulators) == 1
    for service in [*workers.values(), *simulators]:
        env = service["environment"]
        broker = env["PANTAU_BROKER"]
        Settings(broker=broker)  # a URL the settings accept
        host_port = broker.split("://", 1)[1]
        assert host_port.split(":")[0] == kafka_name
        assert f"://{host_port}" in advertised, (broker, advertised)
        deps = _depends(service)
        assert deps.get(kafka_name) == "service_healthy"
        assert deps.get("topics") == "service_completed_successfully"
    # One consumer group: the workers share partitions rather than each reading everything.
    assert len({w["environment"]["PANTAU_APP_ID"] for w in workers.values()}) == 1
    # Each worker's views and metrics are reachable on its own host port.
    published = [p.split(":")[0] for w in workers.values() for p in w.get("ports", [])]
    assert len(published) == len(set(published))


def test_every_topic_is_created_with_the_partitions_and_compaction_pantau_expects(
    compose: dict[str, Any],
) -> None:
    topics_service = _services(compose)["topics"]
    env = topics_service["environment"]
    plain = env["TOPICS"].split()
    compacted = env["COMPACTED_TOPICS"].split()
    defaults = Topics()
    assert sorted(plain + compacted) == sorted(defaults.all())
    assert sorted(compacted) == sorted(defaults.compacted())
    assert int(env["PARTITIONS"]) == Settings().partitions
    for worker in _workers(compose).values():
        assert int(worker["environment"]["PANTAU_PARTITIONS"]) == int(env["PARTITIONS"])
    script = topics_service["command"][0]
    assert "--if-not-exists" in script and "cleanup.policy=compact" in script
    assert "$$COMPACTED_TOPICS" in script and "$$TOPICS" in script and "$$PARTITIONS" in script
    assert _depends(topics_service).get(_kafka_name(compose)) == "service_healthy"
    assert env["BOOTSTRAP"].split(":")[0] == _kafka_name(compose)


def test_workers_trust_the_simulator_callbacks_through_a_shared_secrets_file(
    compose: dict[str, Any],
) -> None:
    secrets = _services(compose)["sim-secrets"]
    mount = next(v for v in secrets["volumes"] if v.startswith("sim-secrets:"))
    directory = mount.split(":")[1]
    assert f"{directory}/callbacks.yaml" in secrets["command"][0]
    for worker in _workers(compose).values():
        assert worker["environment"]["PANTAU_SECRETS_FILE"] == f"{directory}/callbacks.yaml"
        assert f"sim-secrets:{directory}:ro" in worker["volumes"]
        assert _depends(worker).get("sim-secrets") == "service_completed_successfully"


def test_dockerfile_installs_every_package_and_runs_pantau() -> None:
    text = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", text, re.M), package
    assert "-c constraints.txt" in text
    assert re.search(r'^ENTRYPOINT \["pantau"\]$', text, re.M)
    assert re.search(r"^USER (?!root)", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")  # Debian's v1, which `make test` installs
    return [legacy] if legacy is not None else None


def test_docker_compose_config_accepts_the_file() -> None:
    cli = _compose_cli()
    assert cli is not None, "no docker compose client: `make compose` installs one"
    result = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
