"""The report screenshot of docs/import.md: ``python docs/import_screenshot.py`` (from the
repository root; needs the ``import`` extra, torch for SummaryWriter, and Debian's chromium).

Writes a TRL-shaped TensorBoard log with torch's SummaryWriter (``train/`` prefix and the
training arguments as transformers' callback writes them; a seeded synthetic curve: entropy
decays towards 0.05 nats while the 0/1 reward climbs, as in seed 002's DAPO runs), imports it
into a service on a scratch SQLite file with ``sharpwatch import``'s own code, renders the
report with rich, exports it as SVG and screenshots that with headless chromium into
``docs/img/import-report.png``.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402
from rich.console import Console  # noqa: E402

from service.app import create_app  # noqa: E402
from service.db.engine import make_engine  # noqa: E402
from service.db.migrate import upgrade  # noqa: E402
from service.importer import render, run_import  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests._servers import ServerThread  # noqa: E402

OUT = ROOT / "docs" / "img" / "import-report.png"
STEPS = 300


def write_log(logdir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    rng = random.Random(7)
    writer = SummaryWriter(str(logdir))
    writer.add_text("args", json.dumps({"num_generations": 8, "beta": 0.0}))
    for step in range(1, STEPS + 1):
        entropy = 0.05 + 0.55 * math.exp(-step / 70) + rng.gauss(0, 0.003)
        reward = min(0.97, 0.25 + 0.7 * (1 - math.exp(-step / 90)) + rng.gauss(0, 0.02))
        writer.add_scalar("train/entropy", entropy, step)
        writer.add_scalar("train/reward", max(0.0, reward), step)
        writer.add_scalar("train/reward_std", 0.45 - 0.3 * step / STEPS, step)
        writer.add_scalar("train/frac_reward_zero_std", min(0.95, 0.2 + 0.7 * step / STEPS), step)
        writer.add_scalar("train/completions/mean_length", 310 - 0.4 * step, step)
        writer.add_scalar("train/loss", rng.gauss(0, 0.01), step)
        writer.add_scalar("train/grad_norm", 0.3 + rng.random() * 0.1, step)
        writer.add_scalar("train/learning_rate", 1e-6, step)
    writer.close()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sw-import-shot-"))
    try:
        os.chdir(work)  # the report shows the paths as given: relative, as a user types them
        logs = Path("outputs") / "qwen2.5-math-grpo" / "runs" / "Nov20_09-14-02_gpu-node-3"
        write_log(logs)
        url = f"sqlite:///{work / 'sharpwatch.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        app = create_app(Settings(database_url=url), registry=CollectorRegistry())
        with ServerThread(app, port=8000) as server:
            (report,) = run_import([Path("outputs") / "qwen2.5-math-grpo"], url=server.url)
        console = Console(record=True, width=118, file=open(work / "report.txt", "w"))  # noqa: SIM115
        console.print("$ sharpwatch import outputs/qwen2.5-math-grpo/\n", style="dim")
        render(report, console)
        svg = work / "report.svg"
        text = console.export_svg(title="sharpwatch import")
        svg.write_text(text)
        box = re.search(r'viewBox="0 0 ([0-9.]+) ([0-9.]+)"', text)
        assert box is not None, "rich's SVG has a viewBox"
        width, height = (math.ceil(float(v)) for v in box.groups())
        OUT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                shutil.which("chromium") or "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={OUT}",
                f"--window-size={width},{height}",
                "--default-background-color=00000000",
                svg.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        print(f"wrote {OUT}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
