"""``trainer_hooks.watch`` against a real service: steps stream, commands come back — α from the
next step with an ack naming that step, early_stop at once — and a resumed trainer continues."""

from __future__ import annotations

import time

import httpx
import torch

from tests._servers import ServerThread
from trainer_hooks import StepInputs, grpo_advantages, watch

G = 8
B = 4


def _inputs(seed: int) -> StepInputs:
    generator = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(B, G, generator=generator) > 0.5).float()
    entropy = torch.rand(B, G, 6, generator=generator)
    return StepInputs(
        rewards=rewards,
        advantages=grpo_advantages(rewards),
        token_entropy=entropy,
        mask=torch.ones(B, G, 6),
        answer_keys=[str(int(x)) for x in torch.randint(0, 3, (B * G,), generator=generator)],
    )


def _wait_for(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _commands(url: str, run_id: int) -> list[dict[str, object]]:
    return httpx.get(f"{url}/api/v1/runs/{run_id}/commands/history").json()["items"]


def test_alpha_adjust_applies_from_next_step_and_acks_it(server: ServerThread) -> None:
    with watch(server.url, name="alpha", group_size=G, kl_beta=0.04, poll_wait=5) as run:
        for step in range(3):
            run.step(_inputs(step))
        assert _wait_for(lambda: run.run is not None and run.poller is not None)
        assert run.run is not None
        run_id = run.run.id
        httpx.post(
            f"{server.url}/api/v1/runs/{run_id}/commands",
            json={"kind": "adjust_alpha", "alpha": 1.75, "reason": "operator test"},
        )
        assert _wait_for(lambda: run.monitor.pending_alpha == 1.75)
        assert run.alpha == 1.0  # not before the next step
        result = run.step(_inputs(3))
        assert result.alpha == 1.75
        assert result.metrics["alpha"] == 1.75
        assert _wait_for(lambda: _commands(server.url, run_id)[0]["status"] == "applied")
        assert _commands(server.url, run_id)[0]["applied_step"] == 3
        assert httpx.get(f"{server.url}/api/v1/runs/{run_id}").json()["alpha"] == 1.75


def test_early_stop_sets_should_stop_and_calls_back(server: ServerThread) -> None:
    stops: list[str] = []
    with watch(
        server.url,
        name="stop",
        group_size=G,
        kl_beta=0.04,
        poll_wait=5,
        on_stop=lambda request: stops.append(request.reason),
    ) as run:
        run.step(_inputs(0))
        assert _wait_for(lambda: run.poller is not None)
        assert run.run is not None
        run_id = run.run.id
        httpx.post(
            f"{server.url}/api/v1/runs/{run_id}/commands",
            json={"kind": "early_stop", "reason": "collapse", "best_step": 0},
        )
        assert _wait_for(lambda: run.should_stop)
        assert stops == ["collapse"]
        assert run.stop_request is not None
        assert run.stop_request.best_step == 0
        assert _wait_for(lambda: _commands(server.url, run_id)[0]["status"] == "applied")
    state = httpx.get(f"{server.url}/api/v1/runs/{run_id}").json()
    assert state["status"] == "stopped"


def test_resumed_trainer_continues_steps_and_run_ends_finished(server: ServerThread) -> None:
    with watch(server.url, name="resume", group_size=G, kl_beta=0.04) as first:
        for step in range(5):
            first.step(_inputs(step))
        assert first.run is not None
        run_id = first.run.id
    assert httpx.get(f"{server.url}/api/v1/runs/{run_id}").json()["status"] == "finished"
    with watch(server.url, name="resume", group_size=G, kl_beta=0.04) as second:
        result = second.step(_inputs(5))
        assert result.step == 5
        assert second.run is not None
        assert second.run.id == run_id
    steps = httpx.get(f"{server.url}/api/v1/runs/{run_id}/steps").json()["items"]
    assert [s["step"] for s in steps] == list(range(6))


def test_offline_watch_computes_without_a_service() -> None:
    with watch(None, name="offline", group_size=G, kl_beta=0.04) as run:
        result = run.step(_inputs(0))
    assert result.advantages is not None
    assert result.metrics["success_rate"] is not None
    assert run.client is None


def test_watch_with_its_documented_defaults_streams_zprime(server: ServerThread) -> None:
    """``watch(url, name=..., group_size=8)`` (kl_beta = 0, no reference_beta) works: the run
    records the default reference β and Z'(q) is computed with it."""
    with watch(server.url, name="defaults", group_size=G, poll_wait=5) as run:
        result = run.step(_inputs(0))
        assert run.client is not None
        assert run.client.flush(timeout=10)
        assert run.run is not None
        run_id = run.run.id
    assert run.monitor.zprime_beta == 0.04
    assert result.metrics["log_zprime_mean"] is not None
    stored = httpx.get(f"{server.url}/api/v1/runs/{run_id}").json()
    assert stored["config"]["reference_beta"] == 0.04
