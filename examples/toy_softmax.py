"""The toy RLVR experiment of seed 002 §2.4 / App. G-H (science.md §6), on a CPU.

Four classes with fixed embeddings (Cat, Persian, Dog, Siamese). The query is an input embedding,
the output a sampled label, the policy softmax(W·e_q) — a linear policy whose W starts as the
matrix of class embeddings (science.md §6 **Decision**). Only Persian inputs are trained, G labels
per step, reward 1 for Cat or Persian. We track π(·|Persian) (Figure 1, 4, 5) and the held-out
π(Siamese|Siamese) (Figure 2).

The loop (``trainer_hooks._toy``, shared with ``sharpwatch demo``) uses the real hooks:
:class:`trainer_hooks.Monitor` (metrics and IAC-calibrated advantages),
:func:`trainer_hooks.grpo_advantages` (mean-shifted / normalised advantages),
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

from dataclasses import replace
from pathlib import Path

import torch

# The loop itself lives in the package, so ``sharpwatch demo`` can run it after a plain install.
from trainer_hooks._toy import (
    CAT,
    CLASSES,
    COLLAPSE_SHARE,
    DOG,
    EMBEDDINGS,
    PERSIAN,
    SIAMESE,
    SIAMESE_EMBEDDINGS,
    Advantage,
    Optim,
    Similarity,
    ToyConfig,
    ToyResult,
    collapse_step,
    embedding_matrix,
    fall_step,
    median_step,
    run_toy,
)

__all__ = [
    "CAT",
    "CLASSES",
    "COLLAPSE_SHARE",
    "DOG",
    "EMBEDDINGS",
    "PERSIAN",
    "SIAMESE",
    "SIAMESE_EMBEDDINGS",
    "Advantage",
    "Optim",
    "Similarity",
    "ToyConfig",
    "ToyResult",
    "collapse_step",
    "embedding_matrix",
    "fall_step",
    "main",
    "median_step",
    "run_toy",
]


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
