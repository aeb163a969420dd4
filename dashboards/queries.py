"""Queries read back out of generated dashboards: per panel, metric names, variables filled in."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Grafana's built-in variables, as a test against Prometheus fills them in.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "inf", "nan", "le"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel of a generated dashboard."""

    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def where(self) -> str:
        """Human-readable location: dashboard / panel [ref]."""
        return f"{self.dashboard} / {self.panel} [{self.ref}]"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def panel_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    """Every Prometheus query of every panel (rows' nested panels included)."""
    found = []
    for panel in _panels(board.get("panels") or []):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if expr:
                found.append(PanelQuery(board["title"], panel["title"], target["refId"], expr))
    return found


def other_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    """Queries outside panels: template variables and annotations."""
    found = []
    for variable in (board.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if isinstance(query, str) and query:
            found.append(PanelQuery(board["title"], f"${variable['name']}", "variable", query))
    for item in (board.get("annotations") or {}).get("list") or []:
        if item.get("expr"):
            found.append(PanelQuery(board["title"], item["name"], "annotation", item["expr"]))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression reads."""
    text = _STRING.sub('""', expr)
    while True:
        stripped = _BRACES.sub("", _BRACKETS.sub("", text))
        if stripped == text:
            break
        text = stripped
    text = _GROUPING.sub("", text)
    text = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        if text[max(0, match.start() - 1)] == "$" and match.start() > 0:
            continue
        names.add(word)
    return names


def variables(expr: str) -> set[str]:
    """Template variables ($name or ${name}) an expression uses."""
    return {a or b for a, b in _VARIABLE.findall(expr)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Fill in template variables (Grafana built-ins included); unknown ones raise KeyError."""
    merged = {**BUILTINS, **values}

    def fill(match: re.Match[str]) -> str:
        return merged[match.group(1) or match.group(2)]

    return _VARIABLE.sub(fill, expr)


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def known_series(registry: Any) -> set[str]:
    """Every series name a prometheus-client registry can expose (with children or not)."""
    names = set()
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def variable_defaults(board: Mapping[str, Any]) -> dict[str, str]:
    """Each template variable's value as the dashboard opens: "All" becomes its allValue."""
    values = {}
    for variable in (board.get("templating") or {}).get("list") or []:
        current = (variable.get("current") or {}).get("value")
        if current in (None, "$__all", ["$__all"]):
            values[variable["name"]] = variable.get("allValue") or ".*"
        else:
            values[variable["name"]] = current if isinstance(current, str) else "|".join(current)
    return values


def is_instant(board: Mapping[str, Any], item: PanelQuery) -> bool:
    """True when the panel asks Prometheus for one instant value rather than a range."""
    for panel in _panels(board.get("panels") or []):
        if panel.get("title") == item.panel:
            for target in panel.get("targets") or []:
                if target.get("refId") == item.ref:
                    return bool(target.get("instant")) and not target.get("range")
    return False
