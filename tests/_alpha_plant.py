"""A small policy whose over-sharpening responds to IAC α, for closed-loop tests of the α
controller (science.md §7): the real :class:`trainer_hooks.Monitor` measures it, the real
``service.detectors`` pipeline decides α, and the decided α goes back into the monitor and the
policy, as the CommandPoller would deliver it.

The policy (B queries, 4 answer modes each: two correct, two wrong) is
``softmax(base_q + s·[κ, −κ, 0, 0])``: the sharpening ``s`` moves mass onto the first correct
mode and away from the second (over-sharpening, seed 002 Def. 2.1: a correct mode loses
probability). ``s`` relaxes with rate ``rate`` toward ``gain·(drive − α)`` (at least 0): the
trainer's sharpening drive against IAC's counter-pressure, the model's one assumption about what α
does (IAC delays collapse, science.md §2–§3). Every step samples G responses per query and hands
the Monitor rewards, GRPO advantages, answer keys, the sampled responses' log-probs (science.md §7
Z' from sequence log-probs) and token entropies (a fixed fraction of the mode distribution's
entropy). Nothing here reads the Monitor's calibrated metrics: the loop is closed only through α.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from service.detectors import DetectorConfig, Replayer, RunPolicy, StepRecord
from trainer_hooks import Monitor, StepInputs

KAPPA = torch.tensor([2.0, -2.0, 0.0, 0.0], dtype=torch.float64)
CORRECT = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
TOKEN_ENTROPY_SCALE = 0.35


@dataclass
class Plant:
    queries: int = 128
    group: int = 16
    gain: float = 0.8
    rate: float = 0.05
    seed: int = 0
    sharpness: float = 0.0
    gen: torch.Generator = field(init=False)
    base: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)
        offset = torch.tensor([-0.4, -0.4, 0.3, 0.3], dtype=torch.float64)
        self.base = (
            torch.randn(self.queries, 4, generator=self.gen, dtype=torch.float64) * 0.5 + offset
        )

    def policy(self) -> torch.Tensor:
        return torch.softmax(self.base + self.sharpness * KAPPA, dim=-1)

    def sample(self) -> StepInputs:
        p = self.policy()
        modes = torch.multinomial(p, self.group, replacement=True, generator=self.gen)
        rewards = CORRECT[modes]
        mean = rewards.mean(dim=1, keepdim=True)
        std = rewards.std(dim=1, keepdim=True)
        advantages = (rewards - mean) / (std + 1e-4)
        logprobs = torch.log(torch.gather(p, 1, modes))
        entropy = -(p * p.log()).sum(dim=-1)
        tokens = (TOKEN_ENTROPY_SCALE * entropy)[:, None].expand(self.queries, self.group)
        return StepInputs(
            rewards=rewards,
            advantages=advantages,
            answer_keys=[f"mode{m}" for m in modes.reshape(-1).tolist()],
            ref_logprobs=logprobs,
            token_entropy=tokens.reshape(-1, 1).contiguous(),
        )

    def update(self, drive: float, alpha: float) -> None:
        target = max(0.0, self.gain * (drive - alpha))
        self.sharpness += self.rate * (target - self.sharpness)


@dataclass(frozen=True)
class LoopTrace:
    alpha: list[float]  # α in effect at each step (what the Monitor reported)
    sharpness: list[float]
    metrics: list[dict[str, float | None]]
    replayer: Replayer


def run_loop(
    steps: int,
    drive: Callable[[int], float],
    *,
    alpha: float = 1.0,
    policy: RunPolicy | None = None,
    operator: Callable[[int, Replayer, Monitor], None] | None = None,
    seed: int = 0,
) -> LoopTrace:
    """``steps`` closed-loop steps; ``drive(step)`` is the trainer's sharpening drive. ``operator``
    runs before each step (to pin or release α as an operator would)."""
    plant = Plant(seed=seed)
    monitor = Monitor(group_size=plant.group, kl_beta=0.0, reference_beta=2.0, alpha=alpha)
    replayer = Replayer(DetectorConfig(), policy, group_size=plant.group, initial_alpha=alpha)
    alphas: list[float] = []
    sharpness: list[float] = []
    metrics: list[dict[str, float | None]] = []
    for step in range(steps):
        if operator is not None:
            operator(step, replayer, monitor)
        result = monitor.step(plant.sample())
        alphas.append(result.alpha)
        sharpness.append(plant.sharpness)
        metrics.append(result.metrics)
        outcome = replayer.ingest(StepRecord.from_mapping(result.record))
        assert outcome is not None
        if outcome.alpha.changed:
            monitor.set_alpha(outcome.alpha.new_alpha, reason=outcome.alpha.reason)
        plant.update(drive(step), result.alpha)
    return LoopTrace(alphas, sharpness, metrics, replayer)
