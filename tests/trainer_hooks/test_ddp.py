"""``trainer_hooks.watch`` under ``torch.distributed`` (gloo, 2 processes on the CPU) against a real
service: only rank 0 registers and sends, and rank 1 learns the α change and the stop at the same
step as rank 0, through the per-step broadcast."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests._servers import ServerThread
from trainer_hooks import StepInputs, grpo_advantages, watch

G = 4
B = 2
MAX_STEPS = 12
ALPHA_AFTER = 2  # rank 0 has the service send adjust_alpha after this step
STOP_AFTER = 5  # ... and early_stop after this one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _inputs(step: int, rank: int) -> StepInputs:
    generator = torch.Generator().manual_seed(1000 * rank + step)
    rewards = (torch.rand(B, G, generator=generator) > 0.5).float()
    rewards[:, 0] = 1.0  # never all-fail, so IAC has positive advantages to scale
    rewards[:, 1] = 0.0
    return StepInputs(
        rewards=rewards,
        advantages=grpo_advantages(rewards),
        token_entropy=torch.rand(B, G, 3, generator=generator),
        mask=torch.ones(B, G, 3),
    )


def _wait(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def _worker(rank: int, world: int, init: str, url: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    trace: list[dict[str, object]] = []
    try:
        with watch(url, name="ddp", group_size=G, kl_beta=0.04, poll_wait=2) as run:
            assert (run.client is not None) == (rank == 0)
            for step in range(MAX_STEPS):
                result = run.step(_inputs(step, rank))
                trace.append(
                    {
                        "step": result.step,
                        "alpha": result.alpha,
                        "stop": run.should_stop,
                        "advantages": result.advantages.tolist()  # type: ignore[union-attr]
                        if result.advantages is not None
                        else None,
                    }
                )
                if rank == 0 and step in (ALPHA_AFTER, STOP_AFTER):
                    assert run.run is not None
                    body = (
                        {"kind": "adjust_alpha", "alpha": 1.5, "reason": "ddp test"}
                        if step == ALPHA_AFTER
                        else {"kind": "early_stop", "reason": "ddp test", "best_step": 1}
                    )
                    httpx.post(f"{url}/api/v1/runs/{run.run.id}/commands", json=body)
                    # Rank 0 holds the command until the next step's broadcast.
                    if step == ALPHA_AFTER:
                        _wait(lambda: run._held_alpha is not None)
                        assert run.monitor.pending_alpha == 1.0
                    else:
                        _wait(lambda: run._held_stop is not None)
                        assert not run.should_stop
                        assert not run.monitor.should_stop
                if run.should_stop:
                    break
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(trace))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_rank1_sees_alpha_and_stop_with_rank0_only_sending(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    init = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(_worker, args=(2, init, sqlite_server.url, str(tmp_path)), nprocs=2, join=True)
    traces = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # Both ranks took the same steps, with the same α, and stopped at the same step.
    expected_alpha = [1.0] * (ALPHA_AFTER + 1) + [1.5] * (STOP_AFTER - ALPHA_AFTER + 1)
    for trace in traces:
        assert [t["step"] for t in trace] == list(range(STOP_AFTER + 2))
        assert [t["alpha"] for t in trace] == expected_alpha
        assert [t["stop"] for t in trace] == [False] * (STOP_AFTER + 1) + [True]
    # Rank 1 calibrated its own advantages with the broadcast α: (G - S+)^1.5 on positives.
    step = ALPHA_AFTER + 1
    rewards = _inputs(step, 1).rewards
    raw = grpo_advantages(rewards)
    factor = (G - (rewards >= 0.5).sum(1, keepdim=True)).double() ** 1.5
    expected = torch.where(raw > 0, raw * factor, raw)
    got = torch.tensor(traces[1][step]["advantages"], dtype=expected.dtype)
    assert torch.allclose(got, expected, atol=1e-5)

    # Only rank 0 talked to the service: one run, one record per step.
    runs = httpx.get(f"{sqlite_server.url}/api/v1/runs").json()
    items = runs["items"] if isinstance(runs, dict) else runs
    assert [r["name"] for r in items] == ["ddp"]
    run_id = items[0]["id"]
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps").json()["items"]
    assert [s["step"] for s in steps] == list(range(STOP_AFTER + 2))
    history = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/commands/history").json()[
        "items"
    ]
    by_kind = {c["kind"]: c for c in history}
    assert by_kind["adjust_alpha"]["status"] == "applied"
    assert by_kind["adjust_alpha"]["applied_step"] == ALPHA_AFTER + 1
    assert by_kind["early_stop"]["status"] == "applied"
    state = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}").json()
    assert state["status"] == "stopped"
    assert state["alpha"] == 1.5
