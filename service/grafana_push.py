"""``sharpwatch dashboards push``: upsert sharpwatch's Grafana data sources and dashboards through
the Grafana HTTP API (grafana-client).

The same dashboards (``dashboards/*.json``) and data sources (fixed uids ``sharpwatch-prometheus``
and ``sharpwatch-postgres``, as in ``docker/grafana/provisioning/``) that the compose stack
provisions from files, pushed to any Grafana with a service-account token: the folder is created
if missing, a data source is updated in place when its uid exists and created otherwise, and every
dashboard is saved with ``overwrite: true`` so a push is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import service

PROMETHEUS_UID = "sharpwatch-prometheus"
POSTGRES_UID = "sharpwatch-postgres"
FOLDER_UID = "sharpwatch"
FOLDER_TITLE = "sharpwatch"
PASSWORD_ENV = "SHARPWATCH_GRAFANA_POSTGRES_PASSWORD"


def dashboards_dir() -> Path:
    """The installed copy (wheel: ``service/_dashboards``) or the source tree's ``dashboards/``."""
    package_dir = Path(service.__file__).resolve().parent
    for candidate in (package_dir / "_dashboards", package_dir.parent / "dashboards"):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise FileNotFoundError(f"no dashboards next to {package_dir}; pass --dashboards-dir")


def load_dashboards(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` dashboard of ``directory``, sorted by file name; each must have a uid."""
    dashboards = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        if not isinstance(dashboard, dict) or not dashboard.get("uid"):
            raise ValueError(f"{path}: not a dashboard with a uid")
        dashboards.append(dashboard)
    return dashboards


@dataclass(frozen=True, slots=True)
class DataSourceOptions:
    prometheus_url: str = "http://prometheus:9090"
    postgres_host: str = "postgres:5432"
    postgres_database: str = "sharpwatch"
    postgres_user: str = "grafana_reader"
    postgres_password: str | None = None
    postgres_sslmode: str = "disable"


def datasources(options: DataSourceOptions) -> list[dict[str, Any]]:
    """The two data sources the dashboards refer to by uid."""
    postgres: dict[str, Any] = {
        "uid": POSTGRES_UID,
        "name": "sharpwatch PostgreSQL",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "url": options.postgres_host,
        "user": options.postgres_user,
        "jsonData": {
            "database": options.postgres_database,
            "sslmode": options.postgres_sslmode,
            "postgresVersion": 1600,
            "timescaledb": False,
        },
    }
    if options.postgres_password is not None:
        postgres["secureJsonData"] = {"password": options.postgres_password}
    return [
        {
            "uid": PROMETHEUS_UID,
            "name": "sharpwatch Prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": options.prometheus_url,
            "isDefault": False,
            "jsonData": {"timeInterval": "15s", "httpMethod": "POST"},
        },
        postgres,
    ]


@dataclass(frozen=True, slots=True)
class PushResult:
    folder_created: bool
    datasources_created: list[str]
    datasources_updated: list[str]
    dashboards: list[str]


def push(
    grafana_url: str,
    token: str,
    dashboards: list[dict[str, Any]],
    sources: list[dict[str, Any]],
    *,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    timeout: float = 10.0,
) -> PushResult:
    """Upsert the folder, the data sources and the dashboards; raises grafana-client's errors."""
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError

    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=timeout)

    def exists(get: Any, uid: str) -> bool:
        try:
            get(uid)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    folder_created = False
    if not exists(api.folder.get_folder, folder_uid):
        api.folder.create_folder(folder_title, uid=folder_uid)
        folder_created = True
    created: list[str] = []
    updated: list[str] = []
    for source in sources:
        if exists(api.datasource.get_datasource_by_uid, source["uid"]):
            api.datasource.update_datasource_by_uid(source["uid"], source)
            updated.append(source["uid"])
        else:
            api.datasource.create_datasource(source)
            created.append(source["uid"])
    pushed: list[str] = []
    for dashboard in dashboards:
        api.dashboard.update_dashboard(
            {
                "dashboard": {**dashboard, "id": None},
                "folderUid": folder_uid,
                "overwrite": True,
                "message": f"sharpwatch dashboards push ({service.__version__})",
            }
        )
        pushed.append(dashboard["uid"])
    return PushResult(folder_created, created, updated, pushed)


def _push(args: argparse.Namespace) -> int:
    from grafana_client.client import GrafanaException

    directory = Path(args.dashboards_dir) if args.dashboards_dir else dashboards_dir()
    dashboards = load_dashboards(directory)
    password = args.postgres_password
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    sources = (
        []
        if args.skip_datasources
        else datasources(
            DataSourceOptions(
                prometheus_url=args.prometheus_url,
                postgres_host=args.postgres_host,
                postgres_database=args.postgres_database,
                postgres_user=args.postgres_user,
                postgres_password=password,
            )
        )
    )
    try:
        result = push(args.grafana_url, args.token, dashboards, sources, folder_uid=args.folder_uid)
    except (GrafanaException, OSError) as exc:
        print(f"sharpwatch: Grafana push failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"folder {args.folder_uid} ({'created' if result.folder_created else 'exists'}); "
        f"data sources created {result.datasources_created or '-'}, "
        f"updated {result.datasources_updated or '-'}; dashboards {result.dashboards}"
    )
    return 0


def add_dashboards_parser(subparsers: Any) -> None:
    """Add ``dashboards push`` to the ``sharpwatch`` command line."""
    dashboards = subparsers.add_parser("dashboards", help="Grafana dashboards").add_subparsers(
        dest="dashboards_command", required=True
    )
    push_parser = dashboards.add_parser(
        "push", help="upsert sharpwatch's Grafana data sources and dashboards through the API"
    )
    push_parser.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000")
    push_parser.add_argument(
        "--token",
        default=os.environ.get("GRAFANA_TOKEN"),
        help="service-account token (default $GRAFANA_TOKEN)",
    )
    push_parser.add_argument(
        "--dashboards-dir", help="default: the dashboards shipped with sharpwatch"
    )
    push_parser.add_argument("--folder-uid", default=FOLDER_UID, help="folder for the dashboards")
    push_parser.add_argument(
        "--prometheus-url",
        default="http://prometheus:9090",
        help="URL Grafana reaches Prometheus at",
    )
    push_parser.add_argument(
        "--postgres-host", default="postgres:5432", help="host:port Grafana reaches PostgreSQL at"
    )
    push_parser.add_argument(
        "--postgres-database",
        default="sharpwatch",
        help="database Grafana reads (default sharpwatch)",
    )
    push_parser.add_argument(
        "--postgres-user", default="grafana_reader", help="a read-only role is enough"
    )
    push_parser.add_argument(
        "--postgres-password", default=None, help=f"default ${PASSWORD_ENV}; unset keeps Grafana's"
    )
    push_parser.add_argument(
        "--skip-datasources", action="store_true", help="push only the dashboards"
    )
    push_parser.set_defaults(handler=_push_checked)


def _push_checked(args: argparse.Namespace) -> int:
    if not args.token:
        print("sharpwatch: --token (or $GRAFANA_TOKEN) is required", file=sys.stderr)
        return 2
    return _push(args)
