"""The Grafana dashboards: structure, data-source uids that provisioning defines, resolvable
template variables; their SQL runs on a real PostgreSQL store fed through the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.db.models import Alert, Command, Run
from service.grafana_push import DataSourceOptions, datasources
from service.settings import Settings
from tests._servers import postgres_url_or_skip, scratch_postgres_database
from tests.dashboards._grafana import (
    dashboards,
    panels,
    provisioned_datasources,
    sql,
    targets,
    used_variables,
)
from tests.service._helpers import run_body, step_record

EXPECTED = {
    "fleet.json": "sharpwatch-fleet",
    "query-drilldown.json": "sharpwatch-query-drilldown",
    "run-health.json": "sharpwatch-run-health",
}


def test_dashboards_have_stable_uids_and_titles() -> None:
    found = dashboards()
    assert {name: d["uid"] for name, d in found.items()} == EXPECTED
    for dashboard in found.values():
        assert dashboard["title"].startswith("sharpwatch / ")
        assert "sharpwatch" in dashboard["tags"]
        assert dashboard.get("id") is None  # Grafana assigns ids; uids are the identity


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_targets_and_datasources(name: str) -> None:
    dashboard = dashboards()[name]
    sources = provisioned_datasources()
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(dashboard):
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] in sources
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
    for where, target in targets(dashboard):
        source = sources[target["datasource"]["uid"]]
        assert target["datasource"]["type"] == source["type"], where
        if source["type"] == "prometheus":
            assert target["expr"].strip(), where
        else:
            assert target["rawSql"].strip(), where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_template_variable_used_is_defined(name: str) -> None:
    dashboard = dashboards()[name]
    defined = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert len(defined) == len(set(defined))
    for where, target in targets(dashboard):
        query = target.get("expr") or target.get("rawSql") or ""
        undefined = used_variables(query) - set(defined)
        assert not undefined, f"{where} uses undefined {undefined}"
        if target.get("variable"):
            # A variable may only refer to the ones defined before it (Grafana resolves in order).
            own = where.split("'")[1]
            assert used_variables(query) <= set(defined[: defined.index(own)]), where
    for panel in panels(dashboard):
        undefined = used_variables(panel["title"]) - set(defined)
        assert not undefined, f"title {panel['title']!r} uses undefined {undefined}"


def test_provisioning_and_push_define_the_same_datasources() -> None:
    provisioned = provisioned_datasources()
    pushed = {source["uid"]: source for source in datasources(DataSourceOptions())}
    assert provisioned.keys() == pushed.keys() == {"sharpwatch-prometheus", "sharpwatch-postgres"}
    for uid, source in pushed.items():
        for key in ("name", "type", "access", "url"):
            assert provisioned[uid][key] == source[key], (uid, key)
    assert (
        provisioned["sharpwatch-postgres"]["jsonData"]["database"]
        == pushed["sharpwatch-postgres"]["jsonData"]["database"]
    )


def test_run_health_covers_what_the_issue_asks() -> None:
    dashboard = dashboards()["run-health.json"]
    exprs = " ".join(t.get("expr", "") for _, t in targets(dashboard))
    for series in (
        "sharpwatch_run_entropy_nats",
        "sharpwatch_run_success_rate_ratio",
        "sharpwatch_run_p_star_ratio",
        "1 - sharpwatch_run_p_star_ratio",
        "sharpwatch_run_degenerate_all_fail_ratio",
        "sharpwatch_run_zprime_gt1_ratio",
        "sharpwatch_run_zprime_raw_gt1_ratio",
        "sharpwatch_run_log_zprime_raw_mean_nats",
        "sharpwatch_run_reward_accuracy_ratio",
        "sharpwatch_run_alpha",
        "sharpwatch_run_alpha_pinned",
        "sharpwatch_run_model_collapse_step",
    ):
        assert series in exprs, series
    # raw and calibrated Z' are told apart in every legend (science.md §7)
    zprime = next(p for p in panels(dashboard) if p["title"].startswith("Z' pressure"))
    legends = [t["legendFormat"] for t in zprime["targets"]]
    assert all(legend.startswith(("raw ", "calibrated ")) for legend in legends), legends
    entropy = next(p for p in panels(dashboard) if p["title"].startswith("Entropy"))
    steps = entropy["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, 0.10]
    annotations = {a["name"] for a in dashboard["annotations"]["list"]}
    assert {"Alerts", "Commands", "Model Collapse Step"} <= annotations


# -- the SQL panels, annotations and variables on a real PostgreSQL store --------------------


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    with scratch_postgres_database(postgres_url_or_skip()) as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def fed_store(postgres_engine: Engine) -> tuple[sessionmaker[Session], str, str, list[str]]:
    session_factory = make_session_factory(postgres_engine)
    app = create_app(
        Settings(database_url=postgres_engine.url.render_as_string(hide_password=False)),
        engine=postgres_engine,
        session_factory=session_factory,
        registry=CollectorRegistry(),
    )
    with TestClient(app, base_url="http://localhost") as client:
        run_id = client.post("/api/v1/runs", json=run_body("o'brien run")).json()["id"]
        response = client.post(
            f"/api/v1/runs/{run_id}/steps",
            json={"steps": [step_record(s, n_queries=6) for s in range(12)]},
        )
        assert response.status_code == 200, response.text
    with session_factory() as session:
        common: dict[str, Any] = {"run_id": run_id, "first_step": 3, "last_step": 4}
        session.add(
            Alert(
                rule="probe_decline",
                severity="warning",
                status="open",
                message="m",
                action="a",
                **common,
            )
        )
        session.add(
            Command(
                run_id=run_id, kind="early_stop", status="pending", source="operator", reason="r"
            )
        )
        session.execute(update(Run).where(Run.id == run_id).values(model_collapse_step=7))
        session.commit()
    return session_factory, "proj", "o'brien run", ["q1", "q3"]


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["query-drilldown.json", "run-health.json"])
def test_sql_queries_return_rows_on_postgres(
    name: str, fed_store: tuple[sessionmaker[Session], str, str, list[str]]
) -> None:
    factory, project, run, queries = fed_store
    checked = 0
    with factory() as session:
        for where, target in targets(dashboards()[name]):
            if "rawSql" not in target:
                continue
            statement = sql(target["rawSql"], project, run, queries)
            rows = session.execute(text(statement.replace(":", r"\:"))).all()
            assert rows, f"{where} returned nothing:\n{statement}"
            checked += 1
    assert checked >= (3 if name == "run-health.json" else 9)
