"""``sharpwatch demo``: two real toy RLVR runs streamed into a sharpwatch service in a minute.

By default it feeds the service already running on this machine (``sharpwatch serve`` in another
terminal, http://127.0.0.1:8000, or ``--url``), so its runs appear on that service's live page and
the links it prints stay live. ``--serve`` instead starts a service of its own in this process
(SQLite, ``--port``, default 8000) and keeps it up after the runs until Ctrl-C. Its first line says
where the data goes. It trains the toy experiment of science.md §6 (``trainer_hooks._toy``)
through ``trainer_hooks.watch``, exactly as a trainer would:

1. **collapsing** — momentum SGD on raw rewards, no calibration: within ~30 steps the policy
   collapses onto one of the two correct answers; the service raises alerts and stops the run.
2. **IAC + DLC** — the same seed with IAC (α = 1) and DLC (μ = 0.5): both correct answers keep
   their mass.

As it goes it prints each run's alerts and commands, then where to look (REST, ``/metrics``, the
live page, the dashboards). torch is imported only when the demo runs: importing ``service``
never imports it (the demo needs the ``hooks`` extra).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from service.wire import CommandKind

__all__ = [
    "DEFAULT_URL",
    "DemoReport",
    "NoServiceError",
    "RunReport",
    "add_demo_parser",
    "local_service",
    "run_demo",
]

DEFAULT_URL = "http://127.0.0.1:8000"


class NoServiceError(RuntimeError):
    """Nothing answers as a sharpwatch service at the demo's URL."""


@dataclass
class RunReport:
    """What one demo run did, as the service stored it."""

    name: str
    run_id: int
    steps: int
    status: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    final_entropy: float | None = None
    winner: str | None = None
    correct_mass: tuple[float, float] = (0.0, 0.0)  # π(Cat|Persian), π(Persian|Persian)


@dataclass
class DemoReport:
    url: str
    database: str
    runs: list[RunReport]
    seconds: float


class _Server:
    """uvicorn in a daemon thread on 127.0.0.1 and an ephemeral port."""

    def __init__(self, app: Any, port: int = 0) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="sharpwatch-demo", daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo service did not start")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def local_service(database: Path, port: int = 0) -> Iterator[str]:
    """The service on the SQLite file ``database`` (migrated first) in a daemon thread of this
    process, on 127.0.0.1 and ``port`` (0: an ephemeral one); yields its base URL and stops it on
    exit.
    The demo and ``examples/tiny_grpo.py --serve`` use it."""
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.db.engine import make_engine
    from service.db.migrate import upgrade
    from service.settings import Settings

    url = f"sqlite:///{database}"
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    server = _Server(create_app(Settings(database_url=url), registry=CollectorRegistry()), port)
    base = server.start()
    try:
        yield base
    finally:
        server.stop()


class _Printer:
    """A single progress line on a terminal (rewritten in place), plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._line = False

    def progress(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._line = True

    def say(self, text: str = "") -> None:
        if self._line:
            self.out.write("\r\033[K")
            self._line = False
        self.out.write(text + "\n")
        self.out.flush()


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / max(1, total))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done:>3}/{total}"


class _Watcher:
    """Prints the run's new alerts and commands (read back through the REST API)."""

    def __init__(self, http: httpx.Client, printer: _Printer) -> None:
        self.http = http
        self.printer = printer
        self.seen_alerts: set[tuple[Any, ...]] = set()
        self.seen_commands: set[tuple[Any, ...]] = set()

    def poll(self, run_id: int) -> None:
        try:
            alerts = self.http.get(f"/api/v1/runs/{run_id}/alerts").json()
            commands = self.http.get(f"/api/v1/runs/{run_id}/commands/history").json()
        except (httpx.HTTPError, ValueError):
            return
        for alert in reversed(_items(alerts)):
            key = (alert.get("id"), alert.get("status"))
            if key in self.seen_alerts:
                continue
            self.seen_alerts.add(key)
            self.printer.say(
                f"  ! alert  {alert.get('severity', '?'):>8} {alert.get('rule', '?')} "
                f"[{alert.get('status', '?')}] at step {alert.get('first_step')}: "
                f"{_short(alert.get('message') or '')}"
            )
        for command in reversed(_items(commands)):
            key = (command.get("id"), command.get("status"))
            if key in self.seen_commands:
                continue
            self.seen_commands.add(key)
            what = command.get("kind", "?")
            if what == CommandKind.ADJUST_ALPHA:
                what += f" α → {command.get('alpha')}"
            applied = command.get("applied_step")
            where = f", applied at step {applied}" if applied is not None else ""
            self.printer.say(
                f"  > command {what} from the {command.get('source', '?')} "
                f"[{command.get('status', '?')}{where}]: {_short(command.get('reason') or '')}"
            )


def _items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        items = body.get("items", [])
        return list(items) if isinstance(items, list) else []
    return list(body) if isinstance(body, list) else []


def _short(text: str, limit: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _train(
    url: str,
    token: str | None,
    name: str,
    cfg_kwargs: dict[str, Any],
    seed: int,
    printer: _Printer,
    watcher: _Watcher,
) -> RunReport:
    from trainer_hooks import watch
    from trainer_hooks._toy import CAT, PERSIAN, ToyConfig, run_toy

    cfg = ToyConfig(**cfg_kwargs)
    printer.say(f"\n== {name}: {_describe(cfg)}, {cfg.steps} steps, G={cfg.group_size}")
    with watch(
        url,
        name=name,
        token=token,
        project="demo",
        poll_wait=1.0,
        config={"example": "toy_softmax", **cfg_kwargs, "seed": seed},
        tags={"demo": "true"},
        **cfg.monitor_options(),
    ) as run:
        entropy: list[float | None] = []

        def on_step(step: int, result: Any) -> None:
            entropy.append(result.metrics.get("entropy"))
            if step % 10 == 0 and run.run is not None:
                if run.client is not None:
                    run.client.flush(timeout=5.0)
                watcher.poll(run.run.id)
            e = entropy[-1]
            printer.progress(
                f"  {_bar(step + 1, cfg.steps)} entropy {e if e is None else f'{e:.3f}'} "
                f"α {result.alpha:g}"
            )

        result = run_toy(cfg, seed, monitor=run, on_step=on_step)
        stopped = run.should_stop
        run_id = run.run.id if run.run is not None else 0
    http = watcher.http
    watcher.poll(run_id)
    state = http.get(f"/api/v1/runs/{run_id}").json()
    last = result.probs[-1]
    report = RunReport(
        name=name,
        run_id=run_id,
        steps=len(result.entropy),
        status=str(state.get("status")),
        alerts=_items(http.get(f"/api/v1/runs/{run_id}/alerts").json()),
        commands=_items(http.get(f"/api/v1/runs/{run_id}/commands/history").json()),
        final_entropy=result.entropy[-1] if result.entropy else None,
        winner=result.winner,
        correct_mass=(float(last[CAT]), float(last[PERSIAN])),
    )
    ending = "stopped by the service" if stopped else "finished"
    printer.say(
        f"  {ending} after {report.steps} steps: entropy {_fmt(report.final_entropy)} nats, "
        f"π(Cat|Persian) {report.correct_mass[0]:.2f}, π(Persian|Persian) "
        f"{report.correct_mass[1]:.2f}; {len(report.alerts)} alert(s), "
        f"{len(report.commands)} command(s)"
    )
    return report


def _describe(cfg: Any) -> str:
    parts = [f"{cfg.optimizer} on {cfg.advantage} advantages"]
    parts.append(f"IAC α={cfg.alpha:g}" if cfg.iac else "no IAC")
    if cfg.dlc:
        parts.append(f"DLC μ={cfg.mu:g}")
    return ", ".join(parts)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


#: The two runs: the collapsing configuration, then IAC + DLC on the same seed.
DEMO_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("toy-collapsing", {"optimizer": "momentum", "advantage": "raw", "steps": 150}),
    (
        "toy-iac-dlc",
        {"optimizer": "momentum", "advantage": "raw", "steps": 150, "iac": True, "dlc": True},
    ),
)


def run_demo(
    *,
    seed: int = 1,
    url: str | None = None,
    token: str | None = None,
    serve: bool = False,
    port: int = 8000,
    database: Path | None = None,
    out: TextIO | None = None,
    wait_forever: Callable[[], None] | None = None,
) -> DemoReport:
    """Run the demo; returns what the service stored.

    Without ``serve`` the runs go to the service at ``url`` (default :data:`DEFAULT_URL`), which
    must be running (:class:`NoServiceError` otherwise). With ``serve`` the demo starts its own
    service on ``port`` and the SQLite file ``database`` (default: a temporary one) and keeps it up
    after the runs until ``wait_forever`` returns (default: until Ctrl-C)."""
    try:
        import torch  # noqa: F401  (the hooks extra)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "sharpwatch demo needs PyTorch (the hooks extra): pip install 'sharpwatch[hooks]'"
        ) from exc
    printer = _Printer(out or sys.stdout)
    if not serve:
        target = (url or DEFAULT_URL).rstrip("/")
        _check_service(target, token)
        printer.say(
            f"sharpwatch demo: streaming two toy runs to the service at {target} "
            "(they stay in its database and on its live page)"
        )
        return _run_all(target, token, seed, printer, serve=False, database=None)
    scratch = None
    if database is None:
        scratch = Path(tempfile.mkdtemp(prefix="sharpwatch-demo-"))
        database = scratch / "demo.db"
    try:
        with local_service(database, port) as own:
            printer.say(
                f"sharpwatch demo: streaming two toy runs to its own service on {own} "
                f"(SQLite {database}{', removed on exit' if scratch else ''}); it keeps serving "
                "after the runs until Ctrl-C"
            )
            report = _run_all(own, None, seed, printer, serve=True, database=database)
            (wait_forever or _wait_for_interrupt)()
            return report
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _check_service(url: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.get(f"{url}/healthz", headers=headers, timeout=5.0)
        healthy = answer.status_code == 200 and answer.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        healthy = False
    if not healthy:
        raise NoServiceError(
            f"no sharpwatch service answers at {url}: start one with `sharpwatch serve` in "
            "another terminal, point the demo at yours with --url URL, or run "
            "`sharpwatch demo --serve` to start one in this process"
        )


def _run_all(
    url: str,
    token: str | None,
    seed: int,
    printer: _Printer,
    *,
    serve: bool,
    database: Path | None,
) -> DemoReport:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=10.0, headers=headers) as http:
        printer.say("training the toy RLVR experiment (science.md §6) through trainer_hooks")
        watcher = _Watcher(http, printer)
        runs = [_train(url, token, name, cfg, seed, printer, watcher) for name, cfg in DEMO_RUNS]
    seconds = time.monotonic() - started
    _where_to_look(printer, url, runs, seconds, serve)
    return DemoReport(
        url=url, database=str(database) if database else "", runs=runs, seconds=seconds
    )


def _where_to_look(
    printer: _Printer, url: str, runs: list[RunReport], seconds: float, serve: bool
) -> None:
    printer.say(
        f"\ndone in {seconds:.0f} s. Where to look"
        + (" (this demo serves them until Ctrl-C):" if serve else " (on the running service):")
    )
    printer.say(f"  live page      {url}/")
    for run in runs:
        printer.say(f"  run {run.name:<15} {url}/#/runs/{run.run_id}")
        printer.say(f"    steps        {url}/api/v1/runs/{run.run_id}/steps")
        printer.say(f"    alerts       {url}/api/v1/runs/{run.run_id}/alerts")
        printer.say(f"    commands     {url}/api/v1/runs/{run.run_id}/commands/history")
    printer.say(f"  Prometheus     {url}/metrics")
    printer.say(f"  API docs       {url}/docs")
    printer.say(
        "  dashboards     docker compose up -d (Grafana on http://127.0.0.1:3000), or "
        "sharpwatch dashboards push --grafana-url URL --token TOKEN"
    )


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return


def _main(args: Any) -> int:
    database = Path(args.database) if args.database else None
    if database is not None and not args.serve:
        print("sharpwatch: --database needs --serve (it is the demo's own service's store)")
        return 2
    try:
        run_demo(
            seed=args.seed,
            url=args.url,
            token=args.token,
            serve=args.serve,
            port=args.port,
            database=database,
        )
    except NoServiceError as exc:
        print(f"sharpwatch: {exc}", file=sys.stderr)
        return 2
    return 0


def add_demo_parser(commands: Any) -> None:
    """Register ``sharpwatch demo`` on the CLI's subcommands."""
    demo = commands.add_parser(
        "demo",
        help="stream two toy RLVR runs into the running service (or --serve: a service of its own)",
    )
    demo.add_argument("--seed", type=int, default=1, help="toy seed (default 1)")
    demo.add_argument(
        "--url",
        default=os.environ.get("SHARPWATCH_URL", DEFAULT_URL),
        help=f"the running service to feed (default $SHARPWATCH_URL or {DEFAULT_URL})",
    )
    demo.add_argument(
        "--token",
        default=os.environ.get("SHARPWATCH_TOKEN"),
        help="bearer token when the service requires authentication (default $SHARPWATCH_TOKEN)",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="start a service of its own in this process instead, and keep it up after the "
        "runs (Ctrl-C to quit)",
    )
    demo.add_argument(
        "--port", type=int, default=8000, help="port of the --serve service (default 8000)"
    )
    demo.add_argument(
        "--database", help="with --serve: keep its SQLite file here (default: temporary)"
    )
    demo.set_defaults(handler=_main)
