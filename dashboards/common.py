"""Shared dashboard defaults: datasource, thresholds, metric names, PromQL and panel builders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import bargauge, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat as stat_panel
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prom_models
from grafana_foundation_sdk.models.common import DataSourceRef

# ---- where the data comes from ---------------------------------------------------------------
DATASOURCE_UID = "pantau-prometheus"  # the provisioned datasource carries this uid
DATASOURCE_NAME = "Pantau Prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

# ---- dashboard defaults ------------------------------------------------------------------------
TAGS = ["pantau"]
TIME_FROM = "now-3h"
REFRESH = "30s"
RATE = "$__rate_interval"  # Grafana widens it to at least four scrape intervals
FOLDER = "Pantau"

# ---- the lines drawn on panels: the same thresholds the alert rules use -----------------------
ERROR_RATE_LINE = 0.05  # api_error_rate (provider error ratio) alert threshold
LATENCY_P95_LINE_S = 0.8  # p95 latency held above this for 15 min fails a channel over
SETTLEMENT_DELAY_LINE_S = 4 * 3600.0  # settlement delay p95 alert threshold
CONSUMER_LAG_LINE_S = 60.0

# ---- panel sizes (Grafana's grid is 24 wide) ---------------------------------------------------
WIDE = 24
HALF = 12
THIRD = 8
QUARTER = 6
HEIGHT = 8
STAT_HEIGHT = 4

Panel = cogbuilder.Builder[dm.Panel]


# ---- metric names, always taken from the metric objects in streams.metrics ---------------------
def _name(metric: Any, kind: str) -> str:
    if metric._type != kind:
        raise TypeError(f"{metric._name} is a {metric._type}, not a {kind}")
    return str(metric._name)


def counter(metric: Any) -> str:
    """The sample name of a counter (prometheus-client keeps `_total` off `_name`)."""
    return _name(metric, "counter") + "_total"


def gauge(metric: Any) -> str:
    """The sample name of a gauge."""
    return _name(metric, "gauge")


def bucket(metric: Any) -> str:
    """The `_bucket` series of a histogram."""
    return _name(metric, "histogram") + "_bucket"


def hist_count(metric: Any) -> str:
    """The `_count` series of a histogram."""
    return _name(metric, "histogram") + "_count"


def hist_sum(metric: Any) -> str:
    """The `_sum` series of a histogram."""
    return _name(metric, "histogram") + "_sum"


def info(metric: Any) -> str:
    """The `_info` series of an Info metric."""
    return _name(metric, "info") + "_info"


# ---- PromQL ------------------------------------------------------------------------------------
def selector(name: str, **matchers: str) -> str:
    """`name{label=~"value"}`: values may be regexes or template variables."""
    if not matchers:
        return name
    inner = ",".join(f'{label}=~"{value}"' for label, value in sorted(matchers.items()))
    return f"{name}{{{inner}}}"


def by(labels: Sequence[str]) -> str:
    """A `by (...)` clause, or nothing for a total."""
    return f" by ({', '.join(labels)})" if labels else ""


def rate(name: str, labels: Sequence[str] = (), window: str = RATE, **matchers: str) -> str:
    """Per-second rate of a counter, summed by labels."""
    return f"sum{by(labels)} (rate({selector(name, **matchers)}[{window}]))"


def increase(name: str, labels: Sequence[str] = (), window: str = RATE, **matchers: str) -> str:
    """Increase of a counter over the window, summed by labels."""
    return f"sum{by(labels)} (increase({selector(name, **matchers)}[{window}]))"


def quantile(
    q: float, histogram: Any, labels: Sequence[str] = (), window: str = RATE, **matchers: str
) -> str:
    """A quantile from a histogram's buckets per label set (histograms aggregate)."""
    keep = ["le", *labels]
    return (
        f"histogram_quantile({q}, sum by ({', '.join(keep)}) "
        f"(rate({selector(bucket(histogram), **matchers)}[{window}])))"
    )


# ---- panels ------------------------------------------------------------------------------------
def query(expr: str, legend: str = "", ref: str = "A") -> prom.Dataquery:
    """One Prometheus query of a panel."""
    target = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    return target


def distribution_query(expr: str, ref: str = "A") -> prom.Dataquery:
    """A histogram's buckets (`sum by (le)`) as one instant distribution over the time range."""
    return (
        query(expr, "{{le}}", ref)
        .format(prom_models.PromQueryFormat.HEATMAP)
        .instant()
    )


def targets(*queries: tuple[str, str]) -> list[prom.Dataquery]:
    """Queries from (expr, legend) pairs, with refs A, B, C…"""
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def threshold_steps(line: float | None, color: str = "red") -> db.ThresholdsConfig:
    """Green below a line, the given colour from it up (or plain green without a line)."""
    steps = [dm.Threshold(value=None, color="green")]
    if line is not None:
        steps.append(dm.Threshold(value=line, color=color))
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(common_models.LegendPlacement.BOTTOM)
    )


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prom.Dataquery],
    *,
    line: float | None = None,
    stacked: bool = False,
    width: int = HALF,
    minimum: float | None = 0,
) -> timeseries.Panel:
    """A time series panel; `line` draws a red threshold line (an alert threshold)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(list(queries))
        .span(width)
        .height(HEIGHT)
        .legend(_legend())
        .thresholds(threshold_steps(line))
        .fill_opacity(10)
        .line_width(1)
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if line is not None:
        panel = panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common_models.GraphThresholdsStyleMode.DASHED
            )
        )
    if stacked:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)
        ).fill_opacity(60)
    return panel


def stat(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prom.Dataquery],
    *,
    line: float | None = None,
    width: int = QUARTER,
) -> stat_panel.Panel:
    """A single-number panel (the latest value), red from `line` up."""
    return (
        stat_panel.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(list(queries))
        .span(width)
        .height(STAT_HEIGHT)
        .thresholds(threshold_steps(line))
        .color_mode(
            common_models.BigValueColorMode.BACKGROUND
            if line is not None
            else common_models.BigValueColorMode.VALUE
        )
        .graph_mode(common_models.BigValueGraphMode.AREA)
    )


def bar_gauge(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prom.Dataquery],
    *,
    width: int = HALF,
) -> bargauge.Panel:
    """Bars, one per series (e.g. one per histogram bucket or per rule)."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(list(queries))
        .span(width)
        .height(HEIGHT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .thresholds(threshold_steps(None))
        .min(0)
    )


def state_timeline(
    title: str,
    description: str,
    queries: Sequence[prom.Dataquery],
    mappings: dict[str, tuple[str, str]],
    *,
    width: int = WIDE,
) -> statetimeline.Panel:
    """A state timeline: numeric values mapped to named, coloured states."""
    options: dict[str, dm.ValueMappingResult] = {
        value: dm.ValueMappingResult(text=text, color=color)
        for value, (text, color) in mappings.items()
    }
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(queries))
        .span(width)
        .height(HEIGHT)
        .mappings([dm.ValueMap(options=options)])
        .show_value(common_models.VisibilityMode.NEVER)
    )


# ---- template variables and annotations --------------------------------------------------------
ALL = "$__all"  # Grafana's value for a variable's "All" option


def label_variable(
    name: str, metric: str, label: str, title: str, **matchers: str
) -> db.QueryVariable:
    """A multi-value variable listing a label's values on a metric, "All" selected at first;
    matchers may name earlier variables (chained: methods of the chosen channels)."""
    source = selector(metric, **matchers)
    return (
        db.QueryVariable(name)
        .label(title)
        .datasource(DATASOURCE)
        .query(f"label_values({source}, {label})")
        .definition(f"label_values({source}, {label})")
        .current(dm.VariableOption(selected=True, text="All", value=ALL))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def annotation(name: str, expr: str, color: str, title: str, text: str) -> db.AnnotationQuery:
    """Marks on every time series where the expression has a value (e.g. a state change)."""
    return (
        db.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(color)
        .expr(expr)
        .step("60s")
        .title_format(title)
        .text_format(text)
    )


# ---- links -------------------------------------------------------------------------------------
CHANNEL_UID = "pantau-channel"  # the drill-down every per-channel series links to


def channel_link() -> db.DashboardLink:
    """A data link from a series labelled with a channel to that channel's drill-down."""
    return (
        db.DashboardLink("Open ${__field.labels.channel} in the Channel dashboard")
        .url(f"/d/{CHANNEL_UID}?var-channel=${{__field.labels.channel}}&${{__url_time_range}}")
        .type(dm.DashboardLinkType.LINK)
    )


def other_dashboards() -> db.DashboardLink:
    """A menu of every Pantau dashboard, keeping the time range and variables."""
    return (
        db.DashboardLink("Pantau")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(TAGS)
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )


# ---- assembly ----------------------------------------------------------------------------------
Row = tuple[str, Sequence[Panel]]


def dashboard(
    uid: str,
    title: str,
    description: str,
    rows: Sequence[Row],
    *,
    variables: Sequence[db.QueryVariable] = (),
    annotations: Sequence[db.AnnotationQuery] = (),
) -> db.Dashboard:
    """A dashboard from titled rows of panels, with the shared defaults and stable panel ids."""
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time(TIME_FROM, "now")
        .timezone("browser")
        .refresh(REFRESH)
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
        .link(other_dashboards())
    )
    for variable in variables:
        board = board.with_variable(variable)
    for item in annotations:
        board = board.annotation(item)
    panel_id = 0
    for row_title, panels in rows:
        panel_id += 1
        board = board.with_row(db.Row(row_title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))  # type: ignore[attr-defined]
    return board
