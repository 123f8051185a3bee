"""The README's training-loop example runs as written against a real service."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import torch
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests._servers import ServerThread
from trainer_hooks import grpo_advantages

README = Path(__file__).parents[1] / "README.md"


def _loop_example() -> str:
    text = README.read_text()
    section = text[text.index("## A training loop with the hooks") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_readme_loop_example_runs(tmp_path: Path) -> None:
    code = _loop_example()
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'readme.db'}"), registry=CollectorRegistry()
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'readme.db'}")
    upgrade(engine)
    engine.dispose()
    generator = torch.Generator().manual_seed(0)
    updates: list[torch.Tensor] = []

    def rollout(_batch: int) -> tuple[torch.Tensor, ...]:
        rewards = (torch.rand(4, 8, generator=generator) > 0.5).float()
        keys = [str(int(k)) for k in torch.randint(0, 3, (32,), generator=generator)]
        return rewards, grpo_advantages(rewards), keys, torch.rand(4, 8, 5), torch.ones(4, 8, 5)

    with ServerThread(app) as server:
        namespace = {
            "loader": range(6),
            "rollout": rollout,
            "update_policy": updates.append,
        }
        exec(
            compile(code.replace("http://127.0.0.1:8000", server.url), "README", "exec"), namespace
        )
        runs = httpx.get(f"{server.url}/api/v1/runs").json()["items"]
        assert [(r["name"], r["last_step"], r["status"]) for r in runs] == [
            ("grpo-math", 5, "finished")
        ]
        steps = httpx.get(f"{server.url}/api/v1/runs/{runs[0]['id']}/steps").json()["steps"]
        assert all(s["metrics"]["log_zprime_mean"] is not None for s in steps)
    assert len(updates) == 6
