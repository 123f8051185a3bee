"""The live page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by Selenium) against a real uvicorn on SQLite, fed by the real trainer client.

Skips when the browser or its driver is missing, and fails instead when
SHARPWATCH_REQUIRE_SERVICES=1 (as in CI; ``.ci/system-packages`` installs them).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests._servers import ServerThread, unavailable
from trainer_hooks import SharpwatchClient

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
GROUP = 8
WAIT = 15.0
OPERATOR_TOKEN = "operator-token-for-the-test"


def _record(step: int) -> dict[str, Any]:
    """A starving run (success 0.05 < p*(8) ≈ 0.083): warnings, but no automatic stop."""
    return {
        "step": step,
        "metrics": {
            "entropy": 0.6 - 0.004 * step,
            "success_rate": 0.05,
            "degenerate_all_fail": 0.95**GROUP,
            "degenerate_all_pass": 0.0,
            "zprime_gt1_frac": 0.9,
            "zprime_raw_gt1_frac": 0.2 + 0.005 * step,
            "log_zprime_raw_p90": 0.1,
            "alpha": 1.0,
        },
    }


class OperatorGate:
    """Stands in for the coming authentication: commands need the operator token (403 without
    it); every Authorization header the page sends is recorded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, str, str | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            token = auth.decode() if auth is not None else None
            self.seen.append((scope["method"], scope["path"], token))
            if (
                scope["method"] == "POST"
                and scope["path"].endswith("/commands")
                and token != f"Bearer {OPERATOR_TOKEN}"
            ):
                body = b'{"detail": "operator token required", "field": null}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _app(tmp_path: Path) -> FastAPI:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return create_app(Settings(database_url=url), registry=CollectorRegistry())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(_app(tmp_path)) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        unavailable(
            "Chromium",
            f"need {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
            "chromium-driver, or .ci/system-packages)",
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable("Selenium", str(exc))
        raise
    profile = tempfile.mkdtemp(prefix="sharpwatch-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    except Exception as exc:
        shutil.rmtree(profile, ignore_errors=True)
        unavailable("Chromium", f"did not start: {exc}")
        raise
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {WAIT} s waiting for {what}") from None


def _text(driver: Any, css: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def _attr(driver: Any, css: str, name: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        value = driver.find_element(By.CSS_SELECTOR, css).get_attribute(name)
    except (NoSuchElementException, StaleElementReferenceException):
        return None
    return None if value is None else str(value)


def _page_errors(driver: Any) -> list[str]:
    """Console errors (script errors, CSP violations, failed requests) other than the 403 the
    test provokes on purpose."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "403" not in entry["message"]
    ]


def _painted_pixels(driver: Any, chart: str) -> int:
    return int(
        driver.execute_script(
            """
            const canvas = document.querySelector(`figure[data-chart="${arguments[0]}"] canvas`);
            if (!canvas || !canvas.width) return 0;
            const ctx = canvas.getContext("2d");
            const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
            return n;
            """,
            chart,
        )
    )


def _feed(client: SharpwatchClient, steps: range) -> None:
    for step in steps:
        client.submit(_record(step))
    assert client.flush(timeout=20), "the client did not deliver the steps"


def test_page_and_assets_are_served(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "__ASSET_VERSION__" not in page.text
        assert "cdn" not in page.text.lower()
        versioned = [part.split('"')[0] for part in page.text.split('src="')[1:]]
        assert any(src.startswith("/static/app.js?v=") for src in versioned)
        for src in versioned:
            asset = http.get(src)
            assert asset.status_code == 200, src
            assert "immutable" in asset.headers["cache-control"]
        plain = http.get("/static/app.js")
        assert plain.headers["cache-control"] == "no-cache"
        again = http.get("/static/app.js", headers={"if-none-match": plain.headers["etag"]})
        assert again.status_code == 304
        assert http.get("/static/vendor/uplot/LICENSE").status_code == 200
        assert http.get("/static/nope.js").status_code == 404
        assert "/" not in http.get("/openapi.json").json()["paths"]


def test_live_page_follows_a_run_and_stops_it(server: ServerThread, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    with SharpwatchClient(server.url, flush_interval=0.01) as client:
        run = client.register_run("starving-run", project="web", group_size=GROUP, kl_beta=0.04)
        _feed(client, range(20))
        http = client.http
        api_run = http.get(f"/api/v1/runs/{run.id}").json()
        assert api_run["last_step"] == 19
        assert api_run["verdict"] == "warning"

        # the run list: the run with its verdict, last step and open alerts
        browser.get(server.url + "/")
        row = f'tr[data-run-id="{run.id}"]'
        _wait(browser, lambda d: _attr(d, f"{row} .last-step", "data-step") == "19", "last step")
        assert _text(browser, f"{row} .verdict") == "warning"
        _wait(browser, lambda d: "signal_starvation" in (_text(d, f"{row} .alerts") or ""), "chips")

        # the run page: charts with data, alerts, commands
        browser.find_element(By.CSS_SELECTOR, f"{row} a.run-name").click()
        _wait(browser, lambda d: d.current_url.endswith(f"#/runs/{run.id}"), "run page URL")
        _wait(browser, lambda d: _text(d, "#run-last-step") == "19", "run page last step")
        for chart in ("entropy", "success", "zprime", "alpha"):
            _wait(
                browser,
                lambda d, c=chart: _attr(d, f'figure[data-chart="{c}"]', "data-points") == "20",
                f"{chart} chart data",
            )
            assert _painted_pixels(browser, chart) > 500, f"{chart} chart is blank"
        assert _attr(browser, 'figure[data-chart="reward"]', "data-points") == "0"
        _wait(browser, lambda d: _text(d, '#alerts tr[data-rule="signal_starvation"]'), "alert")
        assert "open" in (_text(browser, '#alerts tr[data-rule="signal_starvation"]') or "")
        # raw and calibrated Z' side by side, under their own names
        assert _text(browser, '.tile[data-metric="zprime_raw_gt1_frac"] .v') == "0.295"
        assert _text(browser, '.tile[data-metric="zprime_gt1_frac"] .v') == "0.900"

        # an operator's α pins it; the page says so until the pin is released
        assert _attr(browser, "#run-alpha-pin", "data-pinned") == "false"
        pinned = http.post(
            f"/api/v1/runs/{run.id}/commands",
            json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "hold it"},
            headers={"authorization": f"Bearer {OPERATOR_TOKEN}"},
        )
        assert pinned.status_code == 201, pinned.text
        _wait(browser, lambda d: _attr(d, "#run-alpha-pin", "data-pinned") == "true", "pin shown")
        assert "pinned by operator" in (_text(browser, "#run-alpha-pin") or "")
        assert http.patch(f"/api/v1/runs/{run.id}", json={"alpha_pinned": False}).status_code == 200
        _wait(browser, lambda d: _attr(d, "#run-alpha-pin", "data-pinned") == "false", "released")

        # a new step appears without a reload
        browser.execute_script("window.__sameDocument = true;")
        _feed(client, range(20, 21))
        _wait(browser, lambda d: _text(d, "#run-last-step") == "20", "last step 20")
        _wait(
            browser,
            lambda d: _attr(d, 'figure[data-chart="entropy"]', "data-points") == "21",
            "the entropy chart to grow",
        )
        assert browser.execute_script("return window.__sameDocument === true;")

        # stop: the confirm dialog, then an early_stop command from the operator
        browser.find_element(By.ID, "stop-reason").send_keys("stopped by the browser test")
        browser.find_element(By.ID, "stop-run").click()
        _wait(browser, ec.alert_is_present(), "the confirm dialog")
        browser.switch_to.alert.accept()
        _wait(browser, lambda d: _text(d, '#commands tr[data-kind="early_stop"]'), "command row")
        history = http.get(f"/api/v1/runs/{run.id}/commands/history").json()["items"]
        stops = [c for c in history if c["kind"] == "early_stop"]
        assert len(stops) == 1
        assert stops[0]["source"] == "operator"
        assert stops[0]["reason"] == "stopped by the browser test"
        _wait(browser, lambda d: not d.find_element(By.ID, "stop-run").is_enabled(), "disabled")
        assert "stop requested" in (_text(browser, "#stop-note") or "")
    assert _page_errors(browser) == []


def test_token_is_sent_and_a_403_says_operator_token(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    gate: OperatorGate | None = None

    def gated(app: ASGIApp) -> OperatorGate:
        nonlocal gate
        gate = OperatorGate(app)
        return gate

    app = _app(tmp_path)
    app.add_middleware(gated)  # type: ignore[arg-type]
    with ServerThread(app) as server, SharpwatchClient(server.url) as client:
        run = client.register_run("gated-run", project="web", group_size=GROUP)
        _feed(client, range(3))
        browser.get(f"{server.url}/#/runs/{run.id}")
        _wait(browser, lambda d: _text(d, "#run-last-step") == "2", "run page")

        browser.find_element(By.ID, "stop-run").click()
        _wait(browser, ec.alert_is_present(), "the confirm dialog")
        browser.switch_to.alert.accept()
        _wait(browser, lambda d: "needs an operator token" in (_text(d, "#banner") or ""), "403")
        assert client.http.get(f"/api/v1/runs/{run.id}/commands/history").json()["items"] == []

        browser.find_element(By.ID, "token-summary").click()
        field = browser.find_element(By.ID, "token-input")
        field.clear()
        field.send_keys(OPERATOR_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        assert browser.execute_script("return localStorage.getItem('sharpwatch.token');") == (
            OPERATOR_TOKEN
        )
        browser.find_element(By.ID, "stop-run").click()
        _wait(browser, ec.alert_is_present(), "the confirm dialog")
        browser.switch_to.alert.accept()
        _wait(browser, lambda d: _text(d, '#commands tr[data-kind="early_stop"]'), "command row")
        assert gate is not None
        sent = [(method, path) for method, path, token in gate.seen if token]
        assert ("POST", f"/api/v1/runs/{run.id}/commands") in sent
        assert any(m == "GET" and p.startswith("/api/v1/runs") for m, p in sent)
        assert all(path.startswith("/api/v1/") for _, path in sent)


def test_imported_runs_are_marked(
    sqlite_server: ServerThread, browser: Any, tmp_path: Path
) -> None:
    from service.importer import run_import
    from tests.service.importer._logs import write_summary_writer_run

    write_summary_writer_run(tmp_path / "tb" / "old-collapse", steps=12)
    (report,) = run_import([tmp_path / "tb"], url=sqlite_server.url, project="web")
    with SharpwatchClient(sqlite_server.url, flush_interval=0.01) as client:
        live = client.register_run("live-run", project="web", group_size=GROUP, kl_beta=0.04)
        _feed(client, range(3))

    browser.get(sqlite_server.url + "/")
    imported_row = f'tr[data-run-id="{report.run_id}"]'
    live_row = f'tr[data-run-id="{live.id}"]'
    _wait(browser, lambda d: _text(d, imported_row) and _text(d, live_row), "both rows")
    assert "imported" in (_text(browser, f"{imported_row} .sub") or "")
    assert "imported" not in (_text(browser, f"{live_row} .sub") or "")
    browser.get(report.link)
    _wait(browser, lambda d: _text(d, "#run-last-step") == "11", "the imported run's page")
    assert _text(browser, "#run-imported") == "imported"
    browser.get(f"{sqlite_server.url}/#/runs/{live.id}")
    _wait(browser, lambda d: _text(d, "#run-last-step") == "2", "the live run's page")
    assert _text(browser, "#run-imported") is None


def _in_viewport(driver: Any, css: str) -> bool:
    return bool(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); if (!e) return false;"
            "const r = e.getBoundingClientRect();"
            "return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;",
            css,
        )
    )


def test_run_state_is_above_the_fold_with_best_step_and_integer_steps(
    server: ServerThread, browser: Any
) -> None:
    """At 1400×900: the verdict, the stop reason, the open alerts and the pending commands are
    visible without scrolling; the best step agrees with the stop; step ticks are integers."""
    from tests.service.detectors import _traces

    trace = _traces.entropy_collapse()
    with httpx.Client(base_url=server.url) as http:
        run_id = http.post(
            "/api/v1/runs", json={"project": "web", "name": "collapsed", "group_size": GROUP}
        ).json()["id"]
        steps = [{"step": r["step"], "metrics": r["metrics"]} for r in trace]
        assert http.post(f"/api/v1/runs/{run_id}/steps", json={"steps": steps}).status_code == 200
        http.post(
            f"/api/v1/runs/{run_id}/commands",
            json={"kind": "adjust_alpha", "alpha": 1.5, "reason": "operator"},
        )
        run = http.get(f"/api/v1/runs/{run_id}").json()
    assert run["verdict"] == "stopped", run
    assert run["best_step"] is not None, run
    browser.set_window_size(1400, 900)
    browser.get(f"{server.url}/#/runs/{run_id}")
    _wait(browser, lambda d: _text(d, "#ov-verdict") == "stopped", "the verdict")
    assert _text(browser, "#ov-best-step") == str(run["best_step"])
    assert run["stop_reason"][:40] in (_text(browser, "#ov-reason") or "")
    assert "entropy_floor" in (_text(browser, "#ov-alerts") or "")
    pending = _text(browser, "#ov-commands") or ""
    assert "early_stop" in pending
    assert "adjust_alpha" in pending
    for css in ("#ov-verdict", "#ov-best-step", "#ov-reason", "#ov-alerts", "#ov-commands"):
        assert _in_viewport(browser, css), f"{css} is below the fold at 1400×900"
    assert _page_errors(browser) == []

    # A run of a few steps is where fractional step ticks (2.5) used to appear.
    with httpx.Client(base_url=server.url) as http:
        short = http.post(
            "/api/v1/runs", json={"project": "web", "name": "short", "group_size": GROUP}
        ).json()["id"]
        steps = [{"step": s, "metrics": {"entropy": 0.5, "success_rate": 0.5}} for s in range(6)]
        assert http.post(f"/api/v1/runs/{short}/steps", json={"steps": steps}).status_code == 200
    browser.get(f"{server.url}/#/runs/{short}")
    _wait(browser, lambda d: _attr(d, 'figure[data-chart="entropy"]', "data-points") == "6", "6")
    _wait(browser, lambda d: _attr(d, 'figure[data-chart="entropy"]', "data-xticks"), "ticks")
    for chart in ("entropy", "success"):
        ticks = _attr(browser, f'figure[data-chart="{chart}"]', "data-xticks") or ""
        assert ticks, chart
        assert all(float(t).is_integer() for t in ticks.split(",")), (chart, ticks)
    assert _page_errors(browser) == []


def test_run_page_shows_dead_notifications(tmp_path: Path, browser: Any) -> None:
    """A channel whose receiver refuses connections: its notification is dead-lettered after
    its one try, and the run page lists it as dead (issue 20)."""
    url = f"sqlite:///{tmp_path / 'notify.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    settings = Settings(
        database_url=url, notify_max_attempts=1, notify_poll_interval=0.05, notify_timeout=1.0
    )
    with ServerThread(create_app(settings, registry=CollectorRegistry())) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        channel = http.post(
            "/api/v1/notifications/channels",
            json={"name": "nowhere", "kind": "slack", "url": "http://127.0.0.1:9/hook"},
        ).json()
        http.post("/api/v1/notifications/subscriptions", json={"channel_id": channel["id"]})
        run_id = http.post(
            "/api/v1/runs",
            json={"name": "nan", "project": "web", "group_size": GROUP, "kl_beta": 0.04},
        ).json()["id"]
        record = {"step": 0, "metrics": {"entropy": 0.5, "loss": None}, "non_finite": ["loss"]}
        assert http.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]}).is_success
        browser.get(f"{server.url}/#/runs/{run_id}")
        _wait(
            browser,
            lambda d: "2 dead" in (_text(d, "#notify-title") or ""),
            "two dead notifications",
        )
        row = _text(browser, '#notifications tr[data-status="dead"]') or ""
        assert "ConnectError" in row
        http.close()
    assert _page_errors(browser) == []
