"""The ``sharpwatch`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from service.errors import ConfigurationError, SharpwatchError
from service.preflight import one_line
from service.settings import Settings

Handler = Callable[[argparse.Namespace], int]


def _settings(overrides: dict[str, object]) -> Settings:
    """Settings from the environment with command-line overrides, exported back to the
    environment so uvicorn's worker processes build the same ones."""
    from service.preflight import load_settings

    for name, value in overrides.items():
        if value is not None:
            os.environ[f"SHARPWATCH_{name.upper()}"] = str(value)
    return load_settings()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.db.engine import make_engine
    from service.db.migrate import upgrade
    from service.logging_setup import configure_logging
    from service.preflight import bind_socket, check_database, check_redis
    from service.serving import GuardedHttpProtocol

    settings = _settings(
        {"host": args.host, "port": args.port, "workers": args.workers, "log_level": args.log_level}
    )
    configure_logging(settings.log_level)
    check_database(settings)
    check_redis(settings)
    if settings.migrate_on_start:
        engine = make_engine(settings.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
    sock = bind_socket(settings)
    print(
        f"sharpwatch serving on http://{settings.host}:{settings.port} "
        f"(database {settings.database_url}, "
        f"broker {'redis' if settings.redis_url else 'in-process'}, "
        f"workers {settings.workers}); API docs at /docs",
        file=sys.stderr,
    )
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        fd=sock.fileno(),  # bound above, so "serving" is never printed for a port in use
        workers=settings.workers,
        log_config=None,
        access_log=settings.log_level in ("debug", "info"),
        timeout_graceful_shutdown=5,
        http=GuardedHttpProtocol,  # header-size and slow-client limits (service/serving.py)
    )
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from service.db.engine import make_engine
    from service.db.migrate import current_revision, upgrade

    settings = _settings({})
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine, args.revision)
        print(f"database at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def _db_current(_args: argparse.Namespace) -> int:
    from service.db.engine import make_engine
    from service.db.migrate import current_revision, head_revision

    engine = make_engine(_settings({}).database_url)
    try:
        print(f"current {current_revision(engine)} head {head_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def _with_session(action: Callable[[Any], int]) -> int:
    from service.db.engine import make_engine, make_session_factory
    from service.db.migrate import upgrade

    engine = make_engine(_settings({}).database_url)
    try:
        upgrade(engine)
        with make_session_factory(engine)() as session:
            return action(session)
    finally:
        engine.dispose()


def _tokens_create(args: argparse.Namespace) -> int:
    from service.storage import runs as run_store
    from service.storage import tokens as token_store

    def create(session: Any) -> int:
        if args.kind == "ingest":
            if args.run is None:
                print("sharpwatch: --run RUN_ID is required for an ingest token", file=sys.stderr)
                return 2
            run_store.get(session, args.run)
        row, token = token_store.issue(session, args.kind, args.name, args.run)
        print(f"created {row.kind} token {row.id} ({row.name}); it is shown only once:")
        print(token)
        return 0

    return _with_session(create)


def _tokens_list(args: argparse.Namespace) -> int:
    from service.storage import tokens as token_store

    def show(session: Any) -> int:
        rows = token_store.list_tokens(session, include_revoked=args.all)
        header = ("id", "kind", "run", "prefix", "created", "revoked")
        print("{:>4}  {:8}  {:>5}  {:10}  {:25}  {:25}  name".format(*header))
        for row in rows:
            print(
                f"{row.id:>4}  {row.kind:8}  {row.run_id or '-':>5}  {row.prefix:10}  "
                f"{row.created_at.isoformat(timespec='seconds'):25}  "
                f"{row.revoked_at.isoformat(timespec='seconds') if row.revoked_at else '-':25}  "
                f"{row.name}"
            )
        return 0

    return _with_session(show)


def _tokens_revoke(args: argparse.Namespace) -> int:
    from service.storage import tokens as token_store

    def revoke(session: Any) -> int:
        row = token_store.revoke(session, args.token_id)
        print(
            f"revoked token {row.id} ({row.kind}, {row.name}); running services drop it "
            "within 5 seconds"
        )
        return 0

    return _with_session(revoke)


def _gc(args: argparse.Namespace) -> int:
    from service.storage import retention as retention_store

    def collect(session: Any) -> int:
        report = retention_store.collect(
            session, project=args.project, dry_run=args.dry_run, batch_rows=args.batch_rows
        )
        verb = "would delete" if args.dry_run else "deleted"
        for item in report:
            print(
                f"run {item.run_id} ({item.project}): {verb} {item.rows_deleted} per-query rows "
                f"of steps <= {item.cutoff_step}"
            )
        total = sum(item.rows_deleted for item in report)
        print(f"{verb} {total} per-query rows in {len(report)} runs")
        return 0

    return _with_session(collect)


def _runs_delete(args: argparse.Namespace) -> int:
    from service.storage import runs as run_store

    def remove(session: Any) -> int:
        run = run_store.get(session, args.run_id)
        name = f"{run.project}/{run.name}"
        run_store.delete_run(session, args.run_id)
        print(f"deleted run {args.run_id} ({name}) and everything stored about it")
        return 0

    return _with_session(remove)


def settings_table() -> str:
    """The README's configuration table, generated from ``Settings``."""
    lines = ["| setting | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "unset" if default is None else f"`{default}`"
        lines.append(
            f"| `{name}` | `SHARPWATCH_{name.upper()}` | {shown} | {field.description or ''} |"
        )
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_table())
    else:
        for name, value in _settings({}).model_dump().items():
            print(f"SHARPWATCH_{name.upper()}={value}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharpwatch", description="RLVR training-health monitoring service."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations, then run the service")
    serve.add_argument("--host", help="bind address (SHARPWATCH_HOST)")
    serve.add_argument("--port", type=int, help="port (SHARPWATCH_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (SHARPWATCH_WORKERS)")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="SHARPWATCH_LOG_LEVEL"
    )
    serve.set_defaults(handler=_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    up = db.add_parser("upgrade", help="apply migrations up to a revision (default head)")
    up.add_argument(
        "revision",
        nargs="?",
        default="head",
        help="Alembic revision to upgrade to, e.g. 0004 (default: head, the newest)",
    )
    up.set_defaults(handler=_db_upgrade)
    db.add_parser("current", help="show the current and head revisions").set_defaults(
        handler=_db_current
    )

    tokens = commands.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument(
        "--kind",
        choices=["operator", "read", "ingest"],
        default="operator",
        help="operator: read and command every run; read: read only; ingest: write one run's "
        "steps (needs --run). Default operator",
    )
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument("--run", type=int, help="run id (ingest tokens only)")
    create.set_defaults(handler=_tokens_create)
    listing = tokens.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.set_defaults(handler=_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id", type=int, help="the token's id, as `tokens list` shows it")
    revoke.set_defaults(handler=_tokens_revoke)

    gc = commands.add_parser(
        "gc", help="apply the projects' retention: delete per-query rows past their window"
    )
    gc.add_argument("--project", help="only this project (default: every project with settings)")
    gc.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    gc.add_argument(
        "--batch-rows",
        type=_positive_int,
        default=10_000,
        help="rows per delete transaction (default 10000); smaller holds locks shorter",
    )
    gc.set_defaults(handler=_gc)
    runs = commands.add_parser("runs", help="runs").add_subparsers(
        dest="runs_command", required=True
    )
    delete = runs.add_parser("delete", help="delete a run and everything stored about it")
    delete.add_argument("run_id", type=int, help="the run's id")
    delete.set_defaults(handler=_runs_delete)

    config = commands.add_parser("config", help="show the effective settings")
    config.add_argument("--markdown", action="store_true", help="print the settings table")
    config.set_defaults(handler=_config)
    from service.grafana_push import add_dashboards_parser

    add_dashboards_parser(commands)
    from service.demo import add_demo_parser

    add_demo_parser(commands)
    from service.doctor import add_doctor_parser

    add_doctor_parser(commands)
    from service.importer import add_import_parser

    add_import_parser(commands)
    from service.notify_cli import add_notify_parser

    add_notify_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ValidationError as exc:
        print(f"sharpwatch: configuration error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"sharpwatch: {one_line(exc.message)}", file=sys.stderr)
        return 2
    except SharpwatchError as exc:
        print(f"sharpwatch: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
