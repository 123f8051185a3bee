"""The toy RLVR experiment of seed 002 §2.4 / App. G-H (science.md §6): the reusable loop.

``examples/toy_softmax.py`` (figures, tests) and ``sharpwatch demo`` run it. Four classes with
fixed embeddings (Cat, Persian, Dog, Siamese); the query is an input embedding, the output a
sampled label, the policy softmax(W·e_q) — a linear policy whose W starts as the matrix of class
embeddings (science.md §6 **Decision**). Only Persian inputs are trained, G labels per step,
reward 1 for Cat or Persian. Private: not part of the ``trainer_hooks`` API.

- **collapse step**: the first step t at which one correct mode holds at least
  ``COLLAPSE_SHARE`` (0.95) of the correct mass at Persian; ``steps + 1`` when it never happens.
- **Siamese fall step**: the first step at which π(Siamese|Siamese) falls below half its initial
  value; ``steps + 1`` when it never happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from trainer_hooks._dlc import DLCMemory, LinearMemory
from trainer_hooks._group import grpo_advantages
from trainer_hooks._monitor import Monitor
from trainer_hooks._types import StepInputs, StepResult


class Stepper(Protocol):
    """What the loop steps: a :class:`Monitor` or a :class:`trainer_hooks.RunSession`."""

    def step(self, inputs: StepInputs) -> StepResult: ...

    @property
    def should_stop(self) -> bool: ...


CLASSES = ("Cat", "Persian", "Dog", "Siamese")
CAT, PERSIAN, DOG, SIAMESE = range(4)
EMBEDDINGS = {
    "Cat": (0.5, 0.5, 0.5, 0.1),
    "Persian": (0.75, 0.5, 0.25, 0.1),
    "Dog": (0.1, 0.1, 0.1, 0.9),
}
SIAMESE_EMBEDDINGS = {
    "high": (0.25, 0.5, 0.75, 0.1),
    "mid": (0.1, 0.5, 0.9, 0.1),
    "low": (0.0, 0.5, 1.0, 0.1),
}
COLLAPSE_SHARE = 0.95

Advantage = Literal["raw", "mean_shifted", "normalized"]
Optim = Literal["sgd", "momentum", "adamw"]
Similarity = Literal["high", "mid", "low"]


@dataclass(frozen=True)
class ToyConfig:
    """One toy run. ``lr`` applies to SGD/momentum; AdamW uses ``adamw_lr``.

    Defaults (ours; the paper gives no learning rate): raw-reward advantages, SGD at lr 0.3 and
    the *same nominal* lr for momentum and AdamW (the paper's point is that they amplify the
    effective step), G = 8, 500 steps, loss −mean_s(Ã_s·log π(o_s|q)).
    """

    advantage: Advantage = "raw"
    optimizer: Optim = "sgd"
    group_size: int = 8
    steps: int = 500
    similarity: Similarity = "high"
    lr: float = 0.3
    momentum: float = 0.9
    adamw_lr: float = 0.3
    iac: bool = False
    alpha: float = 1.0
    dlc: bool = False
    mu: float = 0.5
    memory_lr: float = 0.5

    def monitor_options(self) -> dict[str, Any]:
        """The :class:`Monitor` (or ``watch``) settings for this run: the toy has no KL term, so
        Z'(q) uses a reference β = 1; μ is reported only when DLC samples with it."""
        return {
            "group_size": self.group_size,
            "kl_beta": 0.0,
            "reference_beta": 1.0,
            "iac": self.iac,
            "alpha": self.alpha,
            "mu": self.mu if self.dlc else 0.0,
        }


@dataclass(frozen=True)
class ToyResult:
    """Per-step curves (index 0 = before training) and derived steps."""

    config: ToyConfig
    seed: int
    probs: torch.Tensor  # [steps + 1, 4]: π(·|Persian)
    siamese: torch.Tensor  # [steps + 1]: π(Siamese|Siamese)
    collapse_step: int
    winner: str | None
    siamese_fall_step: int
    entropy: list[float | None]  # the monitor's per-step entropy metric (nats)


def embedding_matrix(similarity: Similarity = "high") -> torch.Tensor:
    rows = [EMBEDDINGS["Cat"], EMBEDDINGS["Persian"], EMBEDDINGS["Dog"]]
    rows.append(SIAMESE_EMBEDDINGS[similarity])
    return torch.tensor(rows, dtype=torch.float64)


def collapse_step(probs: torch.Tensor, share: float = COLLAPSE_SHARE) -> tuple[int, str | None]:
    """First step where one of Cat/Persian holds >= ``share`` of the correct mass at Persian."""
    correct = probs[:, CAT] + probs[:, PERSIAN]
    top, arg = torch.maximum(probs[:, CAT], probs[:, PERSIAN]), probs[:, PERSIAN] > probs[:, CAT]
    hit = (top / correct >= share).nonzero()
    if hit.numel() == 0:
        return probs.shape[0], None
    t = int(hit[0, 0])
    return t, ("Persian" if bool(arg[t]) else "Cat")


def fall_step(curve: torch.Tensor, fraction: float = 0.5) -> int:
    """First step where ``curve`` falls below ``fraction`` × its initial value."""
    hit = (curve < fraction * curve[0]).nonzero()
    return int(hit[0, 0]) if hit.numel() else int(curve.shape[0])


def _optimizer(cfg: ToyConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(params, lr=cfg.adamw_lr, weight_decay=0.0)


def run_toy(
    cfg: ToyConfig,
    seed: int,
    monitor: Stepper | None = None,
    *,
    on_step: Callable[[int, StepResult], None] | None = None,
) -> ToyResult:
    """Train the linear softmax policy on Persian inputs only; return the probability curves.

    ``monitor`` (a :class:`Monitor` or a ``RunSession``) computes the metrics and the advantages;
    the loop ends early once its ``should_stop`` turns true (an early_stop from the service).
    ``on_step(step, result)`` runs after every step (progress displays)."""
    gen = torch.Generator().manual_seed(seed)
    emb = embedding_matrix(cfg.similarity)
    e_p, e_s = emb[PERSIAN], emb[SIAMESE]
    w = torch.nn.Parameter(emb.clone())  # Decision: W init = class-embedding matrix
    opt = _optimizer(cfg, [w])
    if monitor is None:
        monitor = Monitor(**cfg.monitor_options())
    memory = (
        DLCMemory(LinearMemory(4, 4).double(), mu=cfg.mu, lr=cfg.memory_lr) if cfg.dlc else None
    )
    g = cfg.group_size
    queries = e_p.expand(g, 4)
    probs = [torch.softmax(w.detach() @ e_p, -1)]
    siamese = [float(torch.softmax(w.detach() @ e_s, -1)[SIAMESE])]
    entropy: list[float | None] = []
    for step in range(cfg.steps):
        logits = w @ e_p  # [4]
        sample_logits = logits.detach()
        if memory is not None:
            sample_logits = memory.calibrate(sample_logits.unsqueeze(0), e_p.unsqueeze(0))[0]
        labels = torch.multinomial(
            torch.softmax(sample_logits, -1), g, replacement=True, generator=gen
        )
        rewards = ((labels == CAT) | (labels == PERSIAN)).to(torch.float64).unsqueeze(0)  # [1, G]
        if cfg.advantage == "raw":
            adv = rewards.clone()
        else:
            adv = grpo_advantages(rewards, normalize=cfg.advantage == "normalized")
        res = monitor.step(
            StepInputs(
                rewards=rewards,
                advantages=adv,
                answer_keys=[CLASSES[int(i)] for i in labels],
                logits=logits.detach().expand(1, g, 1, 4),
            )
        )
        entropy.append(res.metrics.get("entropy"))
        used = res.advantages
        assert used is not None
        logp = torch.log_softmax(logits, -1)[labels]
        loss = -(used.reshape(-1) * logp).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if memory is not None:
            memory.update(queries, labels)
        with torch.no_grad():
            probs.append(torch.softmax(w @ e_p, -1))
            siamese.append(float(torch.softmax(w @ e_s, -1)[SIAMESE]))
        if on_step is not None:
            on_step(step, res)
        if monitor.should_stop:
            break
    p = torch.stack(probs)
    cs, winner = collapse_step(p)
    s = torch.tensor(siamese, dtype=torch.float64)
    return ToyResult(cfg, seed, p, s, cs, winner, fall_step(s), entropy)


def median_step(results: list[ToyResult], attr: str = "collapse_step") -> float:
    vals = sorted(float(getattr(r, attr)) for r in results)
    n = len(vals)
    return vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])
