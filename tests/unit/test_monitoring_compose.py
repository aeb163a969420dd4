"""docker-compose monitoring: pinned images, every worker scraped, rules and dashboards mounted."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import build

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "dashboards" / "prometheus"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return dict(compose["services"])


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (relative to the repository) of bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source[2:]
    return found


@pytest.mark.parametrize("name", ["prometheus", "alertmanager", "grafana"])
def test_monitoring_images_are_pinned(services: dict[str, dict[str, Any]], name: str) -> None:
    image = services[name]["image"]
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), image


def test_prometheus_scrapes_every_worker_on_its_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    workers = {
        name: svc for name, svc in services.items() if svc.get("command") == ["worker"]
    }
    assert len(workers) >= 2
    expected = {
        f"{name}:{svc['environment']['PANTAU_METRICS_PORT']}" for name, svc in workers.items()
    }
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["pantau-worker"]["static_configs"] for t in sc["targets"]}
    assert targets == expected
    assert set(workers) <= set(services["prometheus"]["depends_on"])


def test_prometheus_loads_the_rules_and_alerts_to_alertmanager(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_in_container = Path(config_arg.split("=", 1)[1])
    host_dir = ROOT / mounts[str(config_in_container.parent)]
    assert host_dir == PROM_DIR
    config = yaml.safe_load((host_dir / config_in_container.name).read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        assert (host_dir / rule_file).is_file(), rule_file
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: run `make promtool`"
    result = subprocess.run(
        [exe, "check", "config", str(PROM_DIR / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_and_inhibitions_name_real_receivers_and_alerts(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = _mounts(services["alertmanager"])
    config_arg = next(
        a for a in services["alertmanager"]["command"] if a.startswith("--config.file=")
    )
    path = Path(config_arg.split("=", 1)[1])
    config = yaml.safe_load((ROOT / mounts[str(path.parent)] / path.name).read_text("utf-8"))
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert {r["receiver"] for r in config["route"]["routes"]} <= receivers
    rules = yaml.safe_load((PROM_DIR / "pantau.rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = re.findall(r"Pantau\w+", matcher)
            assert names and set(names) <= alerts, matcher


def test_grafana_gets_the_provisioning_and_the_generated_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = _mounts(services["grafana"])
    generated = "dashboards/generated"
    for kind in ("datasources", "dashboards"):
        assert mounts[f"/etc/grafana/provisioning/{kind}"] == f"{generated}/provisioning/{kind}"
    assert mounts[build.GRAFANA_DASHBOARDS_PATH] == generated
    for source in mounts.values():
        assert (ROOT / source).is_dir(), source
    datasource = build.datasource_provisioning()["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services["grafana"]["depends_on"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(build.GRAFANA_DASHBOARDS_PATH + "/")
    assert (ROOT / generated / Path(home).name).is_file()
