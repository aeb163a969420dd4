"""Dashboards as code: output up to date, queries name real metrics, the SDK reads them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm
from prometheus_client import CollectorRegistry, Counter, Gauge
from typer.testing import CliRunner

from dashboards import build, common, queries
from streams import metrics
from streams.cli import app

BOARDS = sorted(build.BOARDS)


def _boards() -> dict[str, dict[str, Any]]:
    return {stem: json.loads(build.render()[f"{stem}.json"]) for stem in BOARDS}


def test_generated_files_are_up_to_date() -> None:
    assert build.stale() == [], "run `pantau dashboards` and commit dashboards/generated/"


def test_stale_detects_edited_missing_and_orphaned_files(tmp_path: Path) -> None:
    build.write(tmp_path)
    assert build.stale(tmp_path) == []
    (tmp_path / "overview.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "pipeline.json").unlink()
    (tmp_path / "old-board.json").write_text("{}\n", encoding="utf-8")
    assert build.stale(tmp_path) == [
        "overview.json: out of date",
        "pipeline.json: missing",
        "old-board.json: not produced by any dashboard",
    ]
    changed = build.write(tmp_path)
    assert {p.name for p in changed} == {"overview.json", "pipeline.json", "old-board.json"}
    assert build.stale(tmp_path) == []


def test_cli_check_fails_on_stale_output_and_write_fixes_it(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["dashboards", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "overview.json: missing" in " ".join(result.output.split())
    assert runner.invoke(app, ["dashboards", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["dashboards", "--out", str(tmp_path), "--check"]).exit_code == 0


@pytest.mark.parametrize("stem", BOARDS)
def test_every_query_names_only_registered_metrics(stem: str) -> None:
    board = _boards()[stem]
    known = queries.known_series(metrics.REGISTRY)
    found = queries.panel_queries(board) + queries.other_queries(board)
    assert found, f"{stem} has no queries"
    for item in found:
        names = queries.metric_names(item.expr)
        assert names, f"{item.where}: no metric in {item.expr!r}"
        unknown = names - known
        assert not unknown, f"{item.where}: {sorted(unknown)} not in streams.metrics.REGISTRY"


@pytest.mark.parametrize("stem", BOARDS)
def test_every_variable_a_query_uses_is_defined(stem: str) -> None:
    board = _boards()[stem]
    defined = {v["name"] for v in board.get("templating", {}).get("list", [])}
    for item in queries.panel_queries(board) + queries.other_queries(board):
        missing = queries.variables(item.expr) - defined - set(queries.BUILTINS)
        assert not missing, f"{item.where}: undefined variables {missing}"
        queries.substitute(item.expr, dict.fromkeys(defined, ".*"))  # no KeyError


@pytest.mark.parametrize("stem", BOARDS)
def test_dashboards_read_back_with_the_sdk_models(stem: str) -> None:
    register_default_plugins()
    raw = _boards()[stem]
    board = dm.Dashboard.from_json(raw)
    assert board.uid == raw["uid"] and board.uid.startswith("pantau-")
    assert raw["schemaVersion"] == 42
    assert board.panels, stem
    ids = []
    titles = []
    targets = 0
    for panel in board.panels:
        ids.append(panel.id_val)
        titles.append(panel.title)
        if isinstance(panel, dm.RowPanel):
            continue
        assert isinstance(panel, dm.Panel)
        assert panel.datasource is not None and panel.datasource.uid == common.DATASOURCE_UID
        assert panel.description, f"{stem} / {panel.title}: say what the panel shows"
        assert panel.targets, f"{stem} / {panel.title}: no query"
        for target in panel.targets:
            assert isinstance(target, pm.Dataquery), f"{stem} / {panel.title}"
            assert target.expr
            targets += 1
    assert targets == len(queries.panel_queries(raw))
    assert len(ids) == len(set(ids)), f"{stem}: duplicate panel ids"
    assert len(titles) == len(set(titles)), f"{stem}: duplicate panel titles"


def test_dashboard_uids_are_distinct() -> None:
    uids = [board["uid"] for board in _boards().values()]
    assert len(uids) == len(set(uids))


def _panel(stem: str, title: str) -> dict[str, Any]:
    for panel in _boards()[stem]["panels"]:
        if panel["title"] == title:
            return panel
    raise AssertionError(f"{stem}: no panel {title!r}")


@pytest.mark.parametrize(
    ("stem", "title", "line"),
    [
        ("overview", "Provider error rate (api_error_rate, 5 min)", 0.05),
        ("overview", "Latency p95 by channel", 0.8),
        ("channel", "Provider error and decline ratio by window", 0.05),
    ],
)
def test_threshold_lines_match_the_alert_thresholds(stem: str, title: str, line: float) -> None:
    defaults = _panel(stem, title)["fieldConfig"]["defaults"]
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, line]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"


def test_channel_dashboard_has_channel_and_method_variables() -> None:
    board = _boards()["channel"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"channel", "method"}
    for name, variable in variables.items():
        assert variable["query"].endswith(f", {name})")
        assert variable["includeAll"] and variable["multi"]
    for item in queries.panel_queries(board):
        assert "$channel" in item.expr, f"{item.where} ignores the channel variable"


def test_overview_marks_failovers_and_restores() -> None:
    names = {a["name"]: a["expr"] for a in _boards()["overview"]["annotations"]["list"]}
    assert 'action=~"failover"' in names["Failovers"]
    assert 'action=~"restore"' in names["Restores"]


def test_provisioning_datasource_uid_is_the_one_panels_use() -> None:
    files = build.render()
    datasource = yaml.safe_load(files["provisioning/datasources/pantau.yaml"])
    assert datasource["datasources"][0]["uid"] == common.DATASOURCE_UID
    provider = yaml.safe_load(files["provisioning/dashboards/pantau.yaml"])
    assert provider["providers"][0]["type"] == "file"
    assert provider["providers"][0]["options"]["path"] == build.GRAFANA_DASHBOARDS_PATH


def test_metric_name_helpers_refuse_the_wrong_kind() -> None:
    registry = CollectorRegistry()
    hits = Counter("x_hits_total", "h", registry=registry)
    level = Gauge("x_level", "l", registry=registry)
    assert common.counter(hits) == "x_hits_total"
    assert common.gauge(level) == "x_level"
    with pytest.raises(TypeError, match="x_level is a gauge, not a counter"):
        common.counter(level)
    with pytest.raises(TypeError):
        common.bucket(hits)
    assert queries.known_series(registry) == {"x_hits_total", "x_hits_created", "x_level"}


def test_metric_names_reads_series_not_labels_functions_or_strings() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, channel) (rate(a_bucket{channel=~"$channel",'
        'x="b_total"}[$__rate_interval]))) / on (channel) group_left max(c_ratio) > 0.05 '
        "and d_up"
    )
    assert queries.metric_names(expr) == {"a_bucket", "c_ratio", "d_up"}
    assert queries.variables(expr) == {"channel", "__rate_interval"}
    filled = queries.substitute(expr, {"channel": "BCA"})
    assert 'channel=~"BCA"' in filled and "[1m]" in filled
    with pytest.raises(KeyError):
        queries.substitute("x{m=~\"$method\"}", {})


def test_per_channel_overview_panels_link_to_the_channel_drill_down() -> None:
    boards = _boards()
    channel_uid = boards["channel"]["uid"]
    linked = 0
    for panel in boards["overview"]["panels"]:
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
            target = f"/d/{channel_uid}?var-channel=${{__field.labels.channel}}"
            assert link["url"].startswith(target)
            assert any("channel) (" in t["expr"] for t in panel["targets"]), panel["title"]
            linked += 1
    assert linked == 4
    for stem, board in boards.items():
        menus = [link for link in board["links"] if link["type"] == "dashboards"]
        assert menus and menus[0]["tags"] == common.TAGS, stem
