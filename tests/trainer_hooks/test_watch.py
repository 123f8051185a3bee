"""``trainer_hooks.watch`` against a real service: steps stream, commands come back — α from the
next step with an ack naming that step, early_stop at once — and a resumed trainer continues."""

from __future__ import annotations

import time

import httpx
import torch

from tests._servers import ServerThread
from trainer_hooks import RunSession, StepInputs, grpo_advantages, watch

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


def test_answer_keys_nested_as_b_by_g_equal_the_flat_form() -> None:
    from trainer_hooks import Monitor

    generator = torch.Generator().manual_seed(3)
    rewards = (torch.rand(B, G, generator=generator) > 0.5).float()
    flat = [str(int(x)) for x in torch.randint(0, 3, (B * G,), generator=generator)]
    nested = [flat[b * G : (b + 1) * G] for b in range(B)]
    entropy = torch.rand(B, G, 5, generator=generator)
    results = []
    for keys, ent, mask in (
        (flat, entropy, torch.ones(B, G, 5)),
        (nested, entropy, torch.ones(B, G, 5)),
        (nested, entropy.reshape(B * G, 5), torch.ones(B * G, 5)),  # tokens flat, rewards dense
    ):
        monitor = Monitor(group_size=G, kl_beta=0.04)
        inputs = StepInputs(
            rewards=rewards,
            advantages=grpo_advantages(rewards),
            answer_keys=keys,
            token_entropy=ent,
            mask=mask,
        )
        results.append(monitor.step(inputs).metrics)
    assert results[0]["log_zprime_mean"] is not None
    assert results[0] == results[1] == results[2]


def test_ragged_nested_answer_keys_name_the_expected_layout() -> None:
    import pytest

    from trainer_hooks import ShapeError

    rewards = torch.ones(B, G)
    with pytest.raises(ShapeError, match=r"\[B\]\[G\] \(here \[4\]\[8\]\)"):
        StepInputs(rewards=rewards, answer_keys=[["a"] * G] * (B - 1) + [["a"] * (G - 1)])


def test_a_step_that_fails_in_the_hooks_is_visible_on_the_run(server: ServerThread) -> None:
    """The README loop with a wrong shape: the error reaches the loop, and the run says failed,
    with the hooks' reason, and a verdict that is not "healthy"."""
    import pytest

    from trainer_hooks import ShapeError

    bad = _inputs(1)
    wrong = StepInputs(rewards=bad.rewards, advantages=bad.advantages, answer_keys=["x"])

    def loop() -> None:
        with watch(server.url, name="bad-shape", group_size=G, poll_wait=5) as run:
            run.step(_inputs(0))
            assert _wait_for(lambda: run.run is not None)
            session.append(run)
            run.step(wrong)  # the ShapeError leaves the loop, as in the README's example

    session: list[RunSession] = []
    with pytest.raises(ShapeError):
        loop()
    run = session[0]
    assert run.run is not None
    stored = httpx.get(f"{server.url}/api/v1/runs/{run.run.id}").json()
    assert stored["status"] == "failed"
    assert stored["verdict"] == "failed"
    assert stored["failure_reason"].startswith("step 1 failed in trainer_hooks: ShapeError:")
    assert "answer_keys" in stored["failure_reason"]


def test_an_error_in_the_loop_itself_is_recorded_as_the_failure(server: ServerThread) -> None:
    import pytest

    def loop() -> RunSession:
        with watch(server.url, name="loop-error", group_size=G, poll_wait=5) as run:
            run.step(_inputs(0))
            assert _wait_for(lambda: run.run is not None)
            session.append(run)
            raise RuntimeError("CUDA out of memory")

    session: list[RunSession] = []
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        loop()
    run = session[0]
    assert run.run is not None
    stored = httpx.get(f"{server.url}/api/v1/runs/{run.run.id}").json()
    assert stored["status"] == "failed"
    assert stored["failure_reason"] == (
        "the training loop raised: RuntimeError: CUDA out of memory"
    )
