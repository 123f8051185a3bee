"""Screenshots of the live page for the docs: ``python docs/screenshots.py`` (from the repository
root; needs torch, selenium, and Debian's chromium + chromium-driver, see .ci/system-packages).

Starts the service on a scratch SQLite database, trains real toy runs (examples/toy_softmax.py,
with the real ``trainer_hooks.Monitor`` and ``SharpwatchClient``) into it, adds one label-free run
replayed from a synthetic trace (reward accuracy collapsing, so the Model Collapse Step shows: the
toy has no pseudo-reward), then saves:

- ``docs/img/ui-runs.png``: the run list;
- ``docs/img/ui-run.png``: the toy run that collapses (entropy floor, auto-stop, α commands);
- ``docs/img/ui-run-label-free.png``: the label-free run with its Model Collapse Step;
- ``docs/img/ui-run-fold.png``: the collapsing run as a 1400×900 window shows it, unscrolled
  (verdict, stop reason, best step, open alerts, pending commands);
- ``docs/img/ui-run-failed.png``: a run whose trainer failed, with the hooks' reason.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from service.db.engine import make_engine  # noqa: E402
from service.db.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests._servers import ServerThread  # noqa: E402
from trainer_hooks import Monitor, SharpwatchClient  # noqa: E402

OUT = ROOT / "docs" / "img"
WIDTH = 1440


def _toy() -> Any:
    spec = importlib.util.spec_from_file_location(
        "toy_softmax", ROOT / "examples" / "toy_softmax.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_softmax"] = module
    spec.loader.exec_module(module)
    return module


def train_toy(url: str, name: str, seed: int, **config: Any) -> int:
    """One real toy run, streamed through the hooks exactly as a trainer would."""
    toy = _toy()
    cfg = toy.ToyConfig(**config)
    with SharpwatchClient(url) as client:
        run = client.register_run(
            name,
            project="toy-softmax",
            group_size=cfg.group_size,
            config={"optimizer": cfg.optimizer, "advantage": cfg.advantage, "reference_beta": 1.0},
            tags={"example": "toy_softmax"},
        )
        monitor = Monitor(**cfg.monitor_options(), sender=client)
        toy.run_toy(cfg, seed, monitor=monitor)
        client.flush(timeout=60)
        return run.id


def label_free_trace(n: int = 220) -> list[dict[str, Any]]:
    """A TTRL-style label-free run: proxy reward keeps rising while reward accuracy decays after
    step 60 and ground-truth reward peaks near step 80 (science.md §4's reward hacking)."""
    records = []
    for s in range(n):
        accuracy = max(0.002, min(0.9, 0.905 - 0.01 * (s - 60)))
        gt = 0.3 + 0.00375 * s if s <= 80 else 0.6 - 0.008 * (s - 80)
        records.append(
            {
                "step": s,
                "metrics": {
                    "entropy": max(0.12, 0.55 - 0.0018 * s),
                    "success_rate": min(0.9, 0.35 + 0.0025 * s),
                    "degenerate_all_fail": max(0.0, 0.2 - 0.001 * s),
                    "degenerate_all_pass": min(0.6, 0.02 + 0.002 * s),
                    "zprime_gt1_frac": min(0.95, 0.6 + 0.003 * s),
                    "zprime_raw_gt1_frac": min(0.8, 0.15 + 0.003 * s),
                    "log_zprime_raw_p90": 0.1 + 0.004 * s,
                    "reward_accuracy": accuracy,
                    "proxy_reward": 0.3 + 0.003 * s,
                    "gt_reward": max(0.0, gt),
                    "alpha": 1.0,
                },
            }
        )
    return records


def replay(url: str, name: str, records: list[dict[str, Any]]) -> int:
    with SharpwatchClient(url) as client:
        run = client.register_run(name, project="label-free", group_size=16, kl_beta=0.02)
        for record in records:
            client.submit(record)
        client.flush(timeout=60)
        return run.id


def browser(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
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
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def shoot(
    driver: Any, url: str, ready_css: str, path: Path, min_height: int = 900, fold: int = 0
) -> None:
    """Screenshot the whole page, or with ``fold`` only a ``fold``-pixel-high 1400-wide window."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(1400 if fold else WIDTH, fold or min_height)
    driver.get(url)
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.CSS_SELECTOR, ready_css)))
    time.sleep(1.0)  # one more poll, fonts, canvas
    if not fold:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(WIDTH, max(min_height, height))
        time.sleep(0.8)
    driver.save_screenshot(str(path))
    print(path.relative_to(ROOT))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="sharpwatch-shots-"))
    url = f"sqlite:///{scratch / 'shots.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    app = create_app(Settings(database_url=url), registry=CollectorRegistry())
    try:
        with ServerThread(app) as server:
            base = server.url
            collapsing = train_toy(
                base, "momentum-normalized-g8", seed=1, steps=150, optimizer="momentum"
            )
            train_toy(base, "sgd-iac-dlc-g8", seed=1, steps=400, iac=True, dlc=True)
            train_toy(base, "sgd-raw-g4", seed=2, steps=150, advantage="raw", group_size=4)
            label_free = replay(base, "ttrl-majority-vote", label_free_trace())
            failed = replay(base, "grpo-bad-shapes", label_free_trace(30))
            with httpx.Client(base_url=base) as http:
                http.patch(f"/api/v1/runs/{label_free}", json={"status": "finished"})
                http.post(
                    f"/api/v1/runs/{collapsing}/commands",
                    json={"kind": "adjust_alpha", "alpha": 1.5, "reason": "operator: hold modes"},
                )
                http.patch(
                    f"/api/v1/runs/{failed}",
                    json={
                        "status": "failed",
                        "failure_reason": "step 30 failed in trainer_hooks: ShapeError: "
                        "answer_keys is nested as 15 rows of lengths [8]; rewards is [16, 8]: "
                        "pass [B][G] (here [16][8]) or a flat list of B·G = 128 keys",
                    },
                )
            driver = browser(str(scratch / "profile"))
            try:
                driver.get(base + "/")
                driver.execute_script("localStorage.setItem('sharpwatch.theme', 'dark')")
                shoot(
                    driver,
                    base + "/",
                    "tr[data-run-id] .chips, tr[data-run-id]",
                    OUT / "ui-runs.png",
                )
                ready = 'figure[data-chart="entropy"] canvas'
                shoot(driver, f"{base}/#/runs/{collapsing}", ready, OUT / "ui-run.png")
                driver.get("about:blank")
                shoot(driver, f"{base}/#/runs/{label_free}", ready, OUT / "ui-run-label-free.png")
                driver.get("about:blank")
                shoot(
                    driver, f"{base}/#/runs/{collapsing}", ready, OUT / "ui-run-fold.png", fold=900
                )
                driver.get("about:blank")
                shoot(driver, f"{base}/#/runs/{failed}", ready, OUT / "ui-run-failed.png", fold=900)
            finally:
                driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
