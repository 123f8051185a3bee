"""Reading the Grafana dashboards the way Grafana would: their targets, variables and the
substitution of template variables and macros."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
PROVISIONING = REPO / "docker" / "grafana" / "provisioning"

#: ``$name``, ``${name}``, ``${name:format}``, ``[[name]]``.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PROVISIONING / "datasources" / "sharpwatch.yaml").read_text())
    return {source["uid"]: source for source in config["datasources"]}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, target) for every panel target, annotation and query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", {"datasource": panel["datasource"], **target}
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation:
            yield (
                f"annotation {annotation['name']!r}",
                {
                    "datasource": annotation["datasource"],
                    **annotation["target"],
                },
            )
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield (
                f"variable {variable['name']!r}",
                {
                    "datasource": variable["datasource"],
                    "variable": True,
                    "expr" if variable["datasource"]["type"] == "prometheus" else "rawSql": text,
                },
            )


def used_variables(text: str) -> set[str]:
    names = set()
    for match in VARIABLE.finditer(text):
        name = next(group for group in match.groups() if group)
        if not name.startswith("__"):  # Grafana's own: $__interval, ${__data.fields...}, ...
            names.add(name)
    return names


def substitute(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name] if name in values else match.group(0)

    return VARIABLE.sub(replace, text)


def promql(expr: str, project: str, run: str) -> str:
    """A dashboard expression as Grafana sends it for one project and run."""
    return substitute(
        expr,
        {"project": project, "run": run, "__rate_interval": "1m", "__interval": "15s"},
    )


def sql(text: str, project: str, run: str, queries: list[str]) -> str:
    """A dashboard SQL query as Grafana's PostgreSQL data source sends it: single values with
    quotes doubled, multi-value variables as a quoted list, macros expanded."""
    quoted = ",".join("'" + q.replace("'", "''") + "'" for q in queries)
    text = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"\1 BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'",
        text,
    )
    return substitute(
        text,
        {"project": project.replace("'", "''"), "run": run.replace("'", "''"), "query": quoted},
    )
