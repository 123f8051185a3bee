"""The README's training-loop example runs as written against a real service."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import torch

from tests._servers import ServerThread
from trainer_hooks import grpo_advantages

README = Path(__file__).parents[1] / "README.md"


def _loop_example() -> str:
    text = README.read_text()
    section = text[text.index("## A training loop with the hooks") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_readme_loop_example_runs(sqlite_server: ServerThread) -> None:
    url = sqlite_server.url
    source = _loop_example().replace("http://127.0.0.1:8000", url)
    generator = torch.Generator().manual_seed(0)
    updates: list[torch.Tensor] = []

    def rollout(_batch: int) -> tuple[torch.Tensor, ...]:
        rewards = (torch.rand(4, 8, generator=generator) > 0.5).float()
        keys = [str(int(k)) for k in torch.randint(0, 3, (32,), generator=generator)]
        return rewards, grpo_advantages(rewards), keys, torch.rand(4, 8, 5), torch.ones(4, 8, 5)

    namespace = {"loader": range(6), "rollout": rollout, "update_policy": updates.append}
    exec(compile(source, "README", "exec"), namespace)

    runs = httpx.get(f"{url}/api/v1/runs").json()["items"]
    assert [(r["name"], r["last_step"], r["status"]) for r in runs] == [
        ("grpo-math", 5, "finished")
    ]
    steps = httpx.get(f"{url}/api/v1/runs/{runs[0]['id']}/steps").json()["items"]
    assert all(s["metrics"]["log_zprime_mean"] is not None for s in steps)
    assert len(updates) == 6
