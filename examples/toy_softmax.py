"""The toy RLVR experiment of seed 002 §2.4 / App. G-H (science.md §6), on a CPU.

Four classes with fixed embeddings (Cat, Persian, Dog, Siamese). The query is an input embedding,
the output a sampled label, the policy softmax(W·e_q) — a linear policy whose W starts as the
matrix of class embeddings (science.md §6 **Decision**). Only Persian inputs are trained, G labels
per step, reward 1 for Cat or Persian. We track π(·|Persian) (Figure 1, 4, 5) and the held-out
π(Siamese|Siamese) (Figure 2).

The loop uses the real hooks: :class:`trainer_hooks.Monitor` (metrics and IAC-calibrated
advantages), :func:`trainer_hooks.grpo_advantages` (mean-shifted / normalised advantages),
:class:`trainer_hooks.DLCMemory` with :class:`trainer_hooks.LinearMemory` (DLC sampling).

Definitions used by the tests and plots:

- **collapse step**: the first step t at which one correct mode holds at least
  ``COLLAPSE_SHARE`` (0.95) of the correct mass at Persian, i.e.
  max(π(Cat|P), π(Persian|P)) / (π(Cat|P) + π(Persian|P)) >= 0.95; ``steps + 1`` when it never
  happens (censored).
- **Siamese fall step**: the first step at which π(Siamese|Siamese) falls below half its initial
  value; ``steps + 1`` when it never happens.

Run ``python examples/toy_softmax.py`` to write the PNG figures to ``docs/img/``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from trainer_hooks import (
    DLCMemory,
    LinearMemory,
    Monitor,
    StepInputs,
    grpo_advantages,
)

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


def run_toy(cfg: ToyConfig, seed: int, monitor: Monitor | None = None) -> ToyResult:
    """Train the linear softmax policy on Persian inputs only; return the probability curves."""
    gen = torch.Generator().manual_seed(seed)
    emb = embedding_matrix(cfg.similarity)
    e_p, e_s = emb[PERSIAN], emb[SIAMESE]
    w = torch.nn.Parameter(emb.clone())  # Decision: W init = class-embedding matrix
    opt = _optimizer(cfg, [w])
    if monitor is None:
        # β only scales Z'(q); the toy has no KL term, so a reference β = 1 is recorded.
        monitor = Monitor(
            group_size=cfg.group_size,
            kl_beta=0.0,
            reference_beta=1.0,
            iac=cfg.iac,
            alpha=cfg.alpha,
            mu=cfg.mu if cfg.dlc else 0.0,
        )
    memory = (
        DLCMemory(LinearMemory(4, 4).double(), mu=cfg.mu, lr=cfg.memory_lr) if cfg.dlc else None
    )
    g = cfg.group_size
    queries = e_p.expand(g, 4)
    probs = [torch.softmax(w.detach() @ e_p, -1)]
    siamese = [float(torch.softmax(w.detach() @ e_s, -1)[SIAMESE])]
    entropy: list[float | None] = []
    for _ in range(cfg.steps):
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
        loss.backward()
        opt.step()
        if memory is not None:
            memory.update(queries, labels)
        with torch.no_grad():
            probs.append(torch.softmax(w @ e_p, -1))
            siamese.append(float(torch.softmax(w @ e_s, -1)[SIAMESE]))
    p = torch.stack(probs)
    cs, winner = collapse_step(p)
    s = torch.tensor(siamese, dtype=torch.float64)
    return ToyResult(cfg, seed, p, s, cs, winner, fall_step(s), entropy)


def median_step(results: list[ToyResult], attr: str = "collapse_step") -> float:
    vals = sorted(float(getattr(r, attr)) for r in results)
    n = len(vals)
    return vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def _plot_probs(ax: object, res: ToyResult, title: str) -> None:
    import matplotlib.pyplot as plt  # noqa: F401  (Agg is selected by main)

    steps = range(res.probs.shape[0])
    a = ax  # matplotlib Axes
    a.plot(steps, res.probs[:, CAT].numpy(), label="π(Cat|Persian)", color="tab:orange")  # type: ignore[attr-defined]
    a.plot(steps, res.probs[:, PERSIAN].numpy(), label="π(Persian|Persian)", color="tab:blue")  # type: ignore[attr-defined]
    a.set_title(title, fontsize=9)  # type: ignore[attr-defined]
    a.set_ylim(0, 1)  # type: ignore[attr-defined]
    a.set_xlabel("step")  # type: ignore[attr-defined]


def main(out_dir: str = "docs/img", seed: int = 1) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    # Figure 1: advantage estimator × group size
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharey=True)
    for row, g in enumerate((4, 16)):
        for col, adv in enumerate(("raw", "mean_shifted", "normalized")):
            r = run_toy(ToyConfig(advantage=adv, group_size=g), seed)  # type: ignore[arg-type]
            _plot_probs(axes[row, col], r, f"{adv}, G={g} (collapse step {r.collapse_step})")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Toy softmax (Fig. 1): advantage estimator and group size, SGD")
    fig.tight_layout()
    written.append(out / "toy_fig1_advantages.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    # Figure 2: π(Siamese|Siamese) vs similarity and G
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for col, sim in enumerate(("high", "mid", "low")):
        for g in (4, 8, 16, 32):
            cfg = ToyConfig(advantage="normalized", similarity=sim, group_size=g, steps=150)  # type: ignore[arg-type]
            rs = [run_toy(cfg, s) for s in range(5)]
            curve = torch.stack([r.siamese for r in rs]).mean(0)
            axes[col].plot(curve.numpy(), label=f"G={g}")
        axes[col].set_title(f"{sim} similarity: π(Siamese|Siamese), mean of 5 seeds", fontsize=9)
        axes[col].set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.suptitle("Toy softmax (Fig. 2): semantic coupling, normalised advantages, Persian only")
    fig.tight_layout()
    written.append(out / "toy_fig2_coupling.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    # Figure 4 (App. G): optimisers
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for col, optim in enumerate(("sgd", "momentum", "adamw")):
        r = run_toy(ToyConfig(optimizer=optim), seed)  # type: ignore[arg-type]
        _plot_probs(axes[col], r, f"{optim} (collapse step {r.collapse_step})")
    axes[0].legend(fontsize=8)
    fig.suptitle("Toy softmax (Fig. 4): optimiser at the same lr 0.3, raw rewards, G=8")
    fig.tight_layout()
    written.append(out / "toy_fig4_optimizers.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    # Figure 5 (App. H): IAC and IAC + DLC under SGD and AdamW
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharey=True)
    for row, optim in enumerate(("sgd", "adamw")):
        base = ToyConfig(optimizer=optim)  # type: ignore[arg-type]
        variants = (
            ("baseline", base),
            ("IAC α=1", replace(base, iac=True)),
            ("IAC + DLC μ=0.5", replace(base, iac=True, dlc=True)),
        )
        for col, (name, cfg) in enumerate(variants):
            r = run_toy(cfg, seed)
            _plot_probs(axes[row, col], r, f"{optim}: {name} (collapse step {r.collapse_step})")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Toy softmax (Fig. 5): IAC delays collapse, IAC + DLC holds both modes")
    fig.tight_layout()
    written.append(out / "toy_fig5_calibration.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
