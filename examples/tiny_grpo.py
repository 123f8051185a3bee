"""A tiny GRPO run on a language model, CPU-sized: entropy collapse, and IAC's effect on it.

The task is verifiable small-integer arithmetic with many correct answers: the prompt is a target
``n`` (2..16), the response two digits ``x y`` and an end token; the reward is 1 when
``x + y == n`` and the response ends there. For n = 9 there are 10 correct answers, for n = 2
three: the setting of science.md §2, where GRPO sharpens onto the answers it happens to sample
and suppresses the other correct ones.

1. **Pre-RL (SFT).** A small causal transformer (plain torch, built here; no downloads) learns a
   noisy answer distribution: a uniformly random correct pair with probability ``1 - noise``, a
   uniformly random pair otherwise. It starts RL with high entropy and a middling success rate.
2. **GRPO.** ``B`` prompts per step, ``G`` sampled responses each, GRPO advantages
   ``(r - mean) / (std + eps)`` per group, an on-policy token-mean policy-gradient loss, Adam, no
   KL. Two runs from the same SFT checkpoint with the same seeds and the same budget: the
   **baseline** (IAC off) and **IAC** (α = 1; Ã = A·(G − S⁺)^α on positive advantages), both
   through ``trainer_hooks.watch`` (metrics, IAC and, with ``--url``, streaming to the service).

Usage (the docs' curves: ``docs/tiny_grpo.md``)::

    python examples/tiny_grpo.py --out docs/img/tiny_grpo.png --json tiny_grpo.json
    python examples/tiny_grpo.py --url http://127.0.0.1:8000     # stream both runs
    python examples/tiny_grpo.py --device cuda                     # same script on a GPU

By default the service only *observes* (alerts, no automatic stop or α change: the comparison
stays the same budget); ``--obey-service`` lets it stop runs and adjust α.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from trainer_hooks import StepInputs, grpo_advantages, watch

# -- vocabulary: digits, BOS, '=', EOS --------------------------------------------------------
DIGITS = [str(d) for d in range(10)]
BOS, EQ, EOS = 10, 11, 12
VOCAB = [*DIGITS, "<s>", "=", "</s>"]
PROMPT_LEN = 4  # <s> d1 d0 =
RESPONSE_LEN = 3  # x y </s>
N_MIN, N_MAX = 2, 16


@dataclass(frozen=True)
class TinyConfig:
    """One experiment. ``iac`` and ``alpha`` are the only things the two runs differ in."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    sft_steps: int = 400
    sft_batch: int = 256
    sft_lr: float = 3e-3
    noise: float = 0.5  # SFT: share of uniformly random (mostly wrong) pairs
    steps: int = 200  # GRPO steps
    prompts_per_step: int = 16  # B
    group_size: int = 8  # G
    lr: float = 1e-3
    temperature: float = 1.0
    iac: bool = False
    alpha: float = 1.0
    seed: int = 0
    device: str = "cpu"


# -- the model --------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A causal transformer over :data:`VOCAB` with learned positions (7 positions)."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(len(VOCAB), cfg.d_model)
        self.pos = nn.Embedding(PROMPT_LEN + RESPONSE_LEN, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, len(VOCAB))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.ln(x))
        return logits


# -- the task ---------------------------------------------------------------------------------
def prompts_for(targets: torch.Tensor) -> torch.Tensor:
    """``[N]`` targets -> ``[N, 4]`` prompt ids ``<s> d1 d0 =``."""
    n = targets.shape[0]
    bos = torch.full((n,), BOS, device=targets.device)
    eq = torch.full((n,), EQ, device=targets.device)
    return torch.stack([bos, targets // 10, targets % 10, eq], dim=1)


def rewards_for(targets: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """1.0 when the response is ``x y </s>`` with x + y == target, else 0.0."""
    x, y, end = responses[:, 0], responses[:, 1], responses[:, 2]
    ok = (x < 10) & (y < 10) & (end == EOS) & (x + y == targets)
    return ok.to(torch.float32)


def query_ids(targets: Sequence[int]) -> list[str]:
    """Per-step query ids, unique within the step: ``n=7``, and ``n=7#2`` for a second draw."""
    seen: dict[int, int] = {}
    out = []
    for t in targets:
        seen[t] = seen.get(t, 0) + 1
        out.append(f"n={t}" if seen[t] == 1 else f"n={t}#{seen[t]}")
    return out


def n_correct(target: int) -> int:
    return sum(1 for x in range(10) if 0 <= target - x <= 9)


def sft_batch(cfg: TinyConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """Teacher sequences: a random correct pair, or with probability ``noise`` a random pair."""
    targets = torch.randint(N_MIN, N_MAX + 1, (n,), generator=gen)
    lo = (targets - 9).clamp_min(0)
    hi = targets.clamp_max(9)
    x = lo + (torch.rand(n, generator=gen) * (hi - lo + 1).float()).long().clamp_max(hi - lo)
    y = targets - x
    noisy = torch.rand(n, generator=gen) < cfg.noise
    x = torch.where(noisy, torch.randint(0, 10, (n,), generator=gen), x)
    y = torch.where(noisy, torch.randint(0, 10, (n,), generator=gen), y)
    eos = torch.full((n,), EOS)
    return torch.cat([prompts_for(targets), torch.stack([x, y, eos], dim=1)], dim=1)


def pretrain(cfg: TinyConfig, log: Callable[[str], None] = print) -> TinyLM:
    """The pre-RL checkpoint (deterministic for ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = TinyLM(cfg).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    for step in range(cfg.sft_steps):
        seq = sft_batch(cfg, cfg.sft_batch, gen).to(cfg.device)
        logits = model(seq[:, :-1])[:, PROMPT_LEN - 1 :]
        loss = F.cross_entropy(logits.reshape(-1, len(VOCAB)), seq[:, PROMPT_LEN:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.sft_steps - 1:
            log(f"sft step {step:4d} loss {loss.item():.3f}")
    return model


@torch.no_grad()
def sample(
    model: TinyLM, prompts: torch.Tensor, temperature: float, gen: torch.Generator
) -> torch.Tensor:
    """Sample ``RESPONSE_LEN`` tokens after each prompt (a fixed length; the reward checks EOS)."""
    seq = prompts
    for _ in range(RESPONSE_LEN):
        logits = model(seq)[:, -1].float() / temperature
        probs = torch.softmax(logits, -1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=gen).to(seq.device)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


# -- GRPO -------------------------------------------------------------------------------------
@dataclass
class Curves:
    """Per-step curves of one GRPO run (the monitor's own metrics)."""

    name: str
    entropy: list[float] = field(default_factory=list)
    success_rate: list[float] = field(default_factory=list)
    distinct_correct: list[float] = field(default_factory=list)  # per prompt, of the G samples
    alpha: list[float] = field(default_factory=list)
    stopped_at: int | None = None
    run_id: int | None = None
    seconds: float = 0.0


def grpo(
    cfg: TinyConfig,
    init: TinyLM,
    name: str,
    *,
    url: str | None = None,
    obey_service: bool = False,
    project: str = "tiny-grpo",
    log: Callable[[str], None] = print,
) -> Curves:
    """One GRPO run from a copy of ``init``; returns its curves."""
    model = TinyLM(cfg).to(cfg.device)
    model.load_state_dict(init.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(10_000 + cfg.seed)  # the same for both runs
    curves = Curves(name)
    policy: dict[str, Any] | None = (
        None if obey_service else {"auto_stop_rules": [], "auto_alpha": False}
    )
    started = time.monotonic()
    b, g = cfg.prompts_per_step, cfg.group_size
    with watch(
        url,
        name=name,
        project=project,
        group_size=g,
        kl_beta=0.0,
        reference_beta=0.04,
        iac=cfg.iac,
        alpha=cfg.alpha,
        mu=0.0,
        config={k: v for k, v in asdict(cfg).items() if k != "device"},
        tags={"example": "tiny_grpo"},
        policy=policy,
    ) as run:
        for step in range(cfg.steps):
            targets = torch.randint(N_MIN, N_MAX + 1, (b,), generator=gen).to(cfg.device)
            prompts = prompts_for(targets).repeat_interleave(g, dim=0)  # [B*G, 4]
            model.eval()
            seq = sample(model, prompts, cfg.temperature, gen)
            model.train()
            responses = seq[:, PROMPT_LEN:]
            rewards = rewards_for(targets.repeat_interleave(g), responses).view(b, g)
            advantages = grpo_advantages(rewards)
            logits = model(seq[:, :-1])[:, PROMPT_LEN - 1 :].float()  # [B*G, 3, V]
            keys = [f"{int(r[0])}{int(r[1])}{int(r[2])}" for r in responses.tolist()]
            result = run.step(
                StepInputs(
                    rewards=rewards,
                    advantages=advantages,
                    logits=logits.detach().view(b, g, RESPONSE_LEN, -1),
                    mask=torch.ones(b, g, RESPONSE_LEN, device=cfg.device),
                    answer_keys=keys,
                    query_ids=query_ids(targets.tolist()),
                )
            )
            used = result.advantages
            assert used is not None
            logp = torch.log_softmax(logits, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
            loss = -(used.reshape(-1, 1) * logp).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

            m = result.metrics
            curves.entropy.append(float(m["entropy"] or 0.0))
            curves.success_rate.append(float(m["success_rate"] or 0.0))
            curves.alpha.append(result.alpha)
            correct = rewards.view(-1) > 0.5
            distinct = [
                len({keys[i * g + j] for j in range(g) if correct[i * g + j]}) for i in range(b)
            ]
            curves.distinct_correct.append(sum(distinct) / b)
            if step % 25 == 0 or step == cfg.steps - 1:
                log(
                    f"{name:>9} step {step:4d} entropy {curves.entropy[-1]:.3f} "
                    f"success {curves.success_rate[-1]:.2f} "
                    f"distinct-correct {curves.distinct_correct[-1]:.2f} α {result.alpha:g}"
                )
            if run.should_stop:
                curves.stopped_at = step
                log(f"{name}: stopped by the service at step {step}")
                break
        if run.run is not None:
            curves.run_id = run.run.id
    curves.seconds = time.monotonic() - started
    return curves


def entropy_half_life(entropy: Sequence[float], window: int = 5) -> int | None:
    """First step where the ``window``-step moving mean of the entropy falls below half its
    value at step 0 (the first window); None if it never does."""
    if len(entropy) < window:
        return None
    start = sum(entropy[:window]) / window
    for t in range(len(entropy) - window + 1):
        if sum(entropy[t : t + window]) / window < 0.5 * start:
            return t
    return None


def summary(curves: Curves, tail: int = 20) -> dict[str, Any]:
    ent = curves.entropy
    return {
        "name": curves.name,
        "steps": len(ent),
        "entropy_start": sum(ent[:5]) / max(1, len(ent[:5])),
        "entropy_end": sum(ent[-tail:]) / max(1, len(ent[-tail:])),
        "entropy_min": min(ent) if ent else math.nan,
        "entropy_half_life": entropy_half_life(ent),
        "success_end": sum(curves.success_rate[-tail:]) / max(1, len(ent[-tail:])),
        "distinct_correct_end": sum(curves.distinct_correct[-tail:]) / max(1, len(ent[-tail:])),
        "stopped_at": curves.stopped_at,
        "seconds": round(curves.seconds, 1),
    }


def experiment(
    cfg: TinyConfig,
    *,
    url: str | None = None,
    obey_service: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Curves]:
    """SFT once, then the baseline and the IAC run from the same checkpoint and seeds."""
    init = pretrain(cfg, log)
    out: dict[str, Curves] = {}
    for name, variant in (
        ("baseline", replace(cfg, iac=False)),
        ("iac", replace(cfg, iac=True)),
    ):
        run_name = f"tiny-grpo-{name}-seed{cfg.seed}"
        out[name] = grpo(variant, init, run_name, url=url, obey_service=obey_service, log=log)
    return out


def plot(results: Sequence[dict[str, Curves]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colors = {"baseline": "tab:red", "iac": "tab:blue"}
    labels = {"baseline": "GRPO baseline", "iac": "GRPO + IAC (α = 1)"}
    for k, res in enumerate(results):
        for name, curves in res.items():
            label = labels[name] if k == 0 else None
            kw: dict[str, Any] = {"color": colors[name], "alpha": 0.85, "lw": 1.2, "label": label}
            axes[0].plot(curves.entropy, **kw)
            axes[1].plot(curves.success_rate, **kw)
            axes[2].plot(curves.distinct_correct, **kw)
    axes[0].axhline(0.1, color="grey", ls="--", lw=0.8, label="entropy floor 0.1")
    axes[0].set_title("response token entropy (nats)", fontsize=9)
    axes[1].set_title("success rate", fontsize=9)
    axes[2].set_title("distinct correct answers per group (of G)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("GRPO step")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"tiny GRPO: baseline vs IAC, {len(results)} seed(s), same seeds and budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="sharpwatch service URL (default: offline)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=TinyConfig.steps)
    parser.add_argument("--sft-steps", type=int, default=TinyConfig.sft_steps)
    parser.add_argument("--group-size", type=int, default=TinyConfig.group_size)
    parser.add_argument("--prompts-per-step", type=int, default=TinyConfig.prompts_per_step)
    parser.add_argument("--lr", type=float, default=TinyConfig.lr)
    parser.add_argument("--alpha", type=float, default=TinyConfig.alpha)
    parser.add_argument("--obey-service", action="store_true", help="let the service stop/adjust")
    parser.add_argument("--out", type=Path, help="write the plot (PNG) here")
    parser.add_argument("--json", type=Path, help="write the curves and summaries (JSON) here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for seed in args.seeds:
        cfg = TinyConfig(
            steps=args.steps,
            sft_steps=args.sft_steps,
            group_size=args.group_size,
            prompts_per_step=args.prompts_per_step,
            lr=args.lr,
            alpha=args.alpha,
            seed=seed,
            device=args.device,
        )
        results.append(experiment(cfg, url=args.url, obey_service=args.obey_service))
    rows = [
        summary(c) | {"seed": s}
        for s, res in zip(args.seeds, results, strict=True)
        for c in res.values()
    ]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "summaries": rows,
                    "curves": [{k: asdict(v) for k, v in r.items()} for r in results],
                }
            )
        )
    if args.out:
        plot(results, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
