"""A tiny GRPO run on a language model, CPU-sized: entropy collapse, and IAC's delay of it.

The task is verifiable small-integer arithmetic with many correct answers: the prompt is a target
``n`` (2..16), the response two digits ``x y`` and an end token; the reward is 1 when
``x + y == n`` and the response ends there. For n = 9 there are 10 correct answers, for n = 2
three: the setting of science.md §2, where GRPO sharpens onto the answers it happens to sample
and suppresses the other correct ones.

1. **Pre-RL (SFT).** A small causal transformer (plain torch, built here; no downloads) learns a
   noisy answer distribution: a uniformly random correct pair with probability ``1 - noise``, a
   uniformly random pair otherwise. With the default ``noise = 0.75`` it starts RL at a pass@1
   of about 0.25 (well above p*(8) = 0.083) and a token entropy of about 1.6 nats.
2. **GRPO.** ``B`` prompts per step, ``G`` sampled responses each, GRPO advantages
   ``(r - mean) / (std + eps)`` per group, an on-policy token-mean policy-gradient loss, Adam, no
   KL. Two runs from the same SFT checkpoint with the same seeds and the same budget: the
   **baseline** (IAC off) and **IAC** (α = 1; Ã = A·(G − S⁺)^α on positive advantages), both
   through ``trainer_hooks.watch`` (metrics, IAC and, with ``--url`` or ``--serve``, streaming
   to the service).

Usage (the docs' curves and tables: ``docs/tiny_grpo.md``)::

    python examples/tiny_grpo.py --serve --seeds 0 1 2 3 4 --out docs/img/tiny_grpo.png
    python examples/tiny_grpo.py --url http://127.0.0.1:8000     # stream to a running service
    python examples/tiny_grpo.py --device cuda                     # same script on a GPU

With a service (``--url``, or ``--serve``: one in this process on a temporary SQLite file) the
curves, tables and plot are the ones the service *stored*, read back over REST, together with the
step at which its ``entropy_floor`` rule fired. By default the service only *observes* (alerts, no
automatic stop or α change: the comparison keeps the same budget); ``--obey-service`` lets it
stop runs and adjust α.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
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
    noise: float = 0.75  # SFT: share of uniformly random (mostly wrong) pairs; pass@1 ~0.25
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
    """Per-step curves of one GRPO run: the monitor's metrics, or with a service the ones it
    stored (``stored``), with the first step its ``entropy_floor`` alert opened."""

    name: str
    entropy: list[float] = field(default_factory=list)
    success_rate: list[float] = field(default_factory=list)
    distinct_correct: list[float] = field(default_factory=list)  # per prompt, of the G samples
    alpha: list[float] = field(default_factory=list)
    stopped_at: int | None = None
    run_id: int | None = None
    seconds: float = 0.0
    stored: bool = False
    floor_alert_step: int | None = None


def grpo(
    cfg: TinyConfig,
    init: TinyLM,
    name: str,
    *,
    url: str | None = None,
    obey_service: bool = False,
    project: str = "tiny-grpo",
    token: str | None = None,
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
        token=token,
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
            correct = rewards.view(-1).tolist()
            distinct = (
                sum(
                    len({keys[i * g + j] for j in range(g) if correct[i * g + j] > 0.5})
                    for i in range(b)
                )
                / b
            )  # distinct correct answers per prompt
            result = run.step(
                StepInputs(
                    rewards=rewards,
                    advantages=advantages,
                    logits=logits.detach().view(b, g, RESPONSE_LEN, -1),
                    mask=torch.ones(b, g, RESPONSE_LEN, device=cfg.device),
                    answer_keys=keys,
                    query_ids=query_ids(targets.tolist()),
                    extra={"distinct_correct": distinct},
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
            curves.distinct_correct.append(distinct)
            if step % 25 == 0 or step == cfg.steps - 1:
                log(
                    f"{name:>9} step {step:4d} entropy {curves.entropy[-1]:.3f} "
                    f"success {curves.success_rate[-1]:.2f} "
                    f"distinct-correct {curves.distinct_correct[-1]:.2f} "
                    + (f"α {result.alpha:g}" if cfg.iac else "IAC off")
                )
            if run.should_stop:
                curves.stopped_at = step
                log(f"{name}: stopped by the service at step {step}")
                break
        if run.run is not None:
            curves.run_id = run.run.id
    curves.seconds = time.monotonic() - started
    return curves


def read_back(url: str, curves: Curves, token: str | None = None) -> Curves:
    """Replace ``curves`` by what the service stored for its run (over REST), after checking the
    two agree, and record the first step the service's ``entropy_floor`` alert opened."""
    assert curves.run_id is not None, "read_back needs a run streamed to the service"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as http:
        body = http.get(
            f"/api/v1/runs/{curves.run_id}/steps",
            params={"metrics": "entropy,success_rate,distinct_correct", "limit": 10000},
        )
        body.raise_for_status()
        steps = body.json()["items"]
        alerts = http.get(f"/api/v1/runs/{curves.run_id}/alerts", params={"rule": "entropy_floor"})
        alerts.raise_for_status()
    if [s["step"] for s in steps] != list(range(len(curves.entropy))):
        raise RuntimeError(
            f"run {curves.run_id}: the service stored {len(steps)} steps, "
            f"the trainer sent {len(curves.entropy)}"
        )
    stored = {
        k: [float(s["metrics"][k]) for s in steps]
        for k in ("entropy", "success_rate", "distinct_correct")
    }
    for k, values in stored.items():
        mine = getattr(curves, k)
        if any(not math.isclose(a, b, abs_tol=1e-9) for a, b in zip(values, mine, strict=True)):
            raise RuntimeError(f"run {curves.run_id}: stored {k} differs from the trainer's")
    opened = [a["first_step"] for a in alerts.json()["items"]]
    return replace(
        curves,
        entropy=stored["entropy"],
        success_rate=stored["success_rate"],
        distinct_correct=stored["distinct_correct"],
        stored=True,
        floor_alert_step=min(opened) if opened else None,
    )


def moving_mean_below(values: Sequence[float], threshold: float, window: int = 5) -> int | None:
    """First step whose ``window``-step moving mean is below ``threshold``; None if none is."""
    for t in range(len(values) - window + 1):
        if sum(values[t : t + window]) / window < threshold:
            return t
    return None


def entropy_half_life(entropy: Sequence[float], window: int = 5) -> int | None:
    """First step where the ``window``-step moving mean of the entropy falls below half its
    value at step 0 (the first window); None if it never does."""
    if len(entropy) < window:
        return None
    start = sum(entropy[:window]) / window
    return moving_mean_below(entropy, 0.5 * start, window)


FLOOR = 0.1  # the service's entropy_floor default (science.md §5)


def summary(curves: Curves, tail: int = 20) -> dict[str, Any]:
    ent = curves.entropy
    return {
        "name": curves.name,
        "steps": len(ent),
        "stored": curves.stored,
        "entropy_start": sum(ent[:5]) / max(1, len(ent[:5])),
        "entropy_end": sum(ent[-tail:]) / max(1, len(ent[-tail:])),
        "entropy_min": min(ent) if ent else math.nan,
        "entropy_half_life": entropy_half_life(ent),
        "entropy_floor_step": moving_mean_below(ent, FLOOR),
        "floor_alert_step": curves.floor_alert_step,
        "success_start": sum(curves.success_rate[:5]) / max(1, len(ent[:5])),
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
    token: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Curves]:
    """SFT once, then the baseline and the IAC run from the same checkpoint and seeds; with a
    service, the curves returned are the ones it stored."""
    init = pretrain(cfg, log)
    out: dict[str, Curves] = {}
    for name, variant in (
        ("baseline", replace(cfg, iac=False)),
        ("iac", replace(cfg, iac=True)),
    ):
        run_name = f"tiny-grpo-{name}-seed{cfg.seed}"
        curves = grpo(
            variant, init, run_name, url=url, obey_service=obey_service, token=token, log=log
        )
        out[name] = read_back(url, curves, token) if url is not None else curves
    return out


def _window(values: Sequence[float], step: int, half: int = 2) -> float:
    """Mean of ``values`` over ``step ± half`` (clipped to the run)."""
    lo, hi = max(0, step - half), min(len(values), step + half + 1)
    return sum(values[lo:hi]) / max(1, hi - lo)


def _fmt_steps(steps: Sequence[int | None], horizon: int) -> str:
    shown = ", ".join("—" if s is None else str(s) for s in steps)
    # A run that never crosses counts as its horizon in the median (a lower bound).
    med = statistics.median(horizon if s is None else s for s in steps)
    never = sum(s is None for s in steps)
    suffix = f" (median {med:g}" + (f"; {never} never, counted as {horizon})" if never else ")")
    return shown + suffix


def markdown(cfg: TinyConfig, seeds: Sequence[int], results: Sequence[dict[str, Curves]]) -> str:
    """The results tables of docs/tiny_grpo.md, from the (stored) curves."""
    names = {"baseline": "baseline", "iac": f"IAC α = {cfg.alpha:g}"}
    steps = len(results[0]["baseline"].entropy)
    marks = [t for t in (0, 10, 25, 50, 75, 100, 125, 150, 175) if t < steps] + [steps - 3]
    stored = all(c.stored for r in results for c in r.values())
    source = "stored by the service" if stored else "computed by the monitor (offline)"
    lines = [
        f"Curves {source}; pre-RL noise {cfg.noise:g}, {steps} GRPO steps, B = "
        f"{cfg.prompts_per_step}, G = {cfg.group_size}, seeds {', '.join(map(str, seeds))}. "
        "Means over seeds of a 5-step window.",
        "",
        "| step | " + " | ".join(str(t) for t in marks) + " |",
        "| --- |" + " --- |" * len(marks),
    ]
    for metric, label in (
        ("entropy", "entropy (nats)"),
        ("success_rate", "success rate"),
        ("distinct_correct", "distinct correct answers per group"),
    ):
        for name in ("baseline", "iac"):
            row = [
                statistics.mean(_window(getattr(r[name], metric), t) for r in results)
                for t in marks
            ]
            digits = 3 if metric == "entropy" else 2
            lines.append(
                f"| {label}, {names[name]} | " + " | ".join(f"{v:.{digits}f}" for v in row) + " |"
            )
    lines += [
        "",
        f"Per seed ({', '.join(map(str, seeds))}):",
        "",
        "| | baseline | " + names["iac"] + " |",
        "| --- | --- | --- |",
    ]
    per_seed: list[tuple[str, Callable[[Curves], Any]]] = [
        (
            "entropy half-life (first step the 5-step mean is below half its start)",
            lambda c: entropy_half_life(c.entropy),
        ),
        (
            f"first step the 5-step mean entropy is below the {FLOOR:g}-nat floor",
            lambda c: moving_mean_below(c.entropy, FLOOR),
        ),
    ]
    if stored:
        per_seed.append(
            ("step the service's `entropy_floor` alert opened", lambda c: c.floor_alert_step)
        )
    for label, fn in per_seed:
        cells = [_fmt_steps([fn(r[name]) for r in results], steps) for name in ("baseline", "iac")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    ends = [
        ", ".join(f"{summary(r[name])['entropy_end']:.3f}" for r in results)
        for name in ("baseline", "iac")
    ]
    lines.append(f"| entropy over the last 20 steps (nats) | {ends[0]} | {ends[1]} |")

    def crossing(c: Curves) -> int:  # a run that never crosses counts as its horizon
        step = moving_mean_below(c.entropy, FLOOR)
        return steps if step is None else step

    later = sum(crossing(r["iac"]) > crossing(r["baseline"]) for r in results)
    lines += [
        "",
        f"IAC crosses the floor later than the baseline in {later} of {len(results)} seeds.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: Sequence[dict[str, Curves]], path: Path, cfg: TinyConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colors = {"baseline": "tab:red", "iac": "tab:blue"}
    labels = {"baseline": "GRPO baseline", "iac": f"GRPO + IAC (α = {cfg.alpha:g})"}
    panels = ("entropy", "success_rate", "distinct_correct")
    for name in ("baseline", "iac"):
        for res in results:  # each seed thin, the mean over seeds bold
            curves = res[name]
            for ax, metric in zip(axes, panels, strict=True):
                ax.plot(getattr(curves, metric), color=colors[name], alpha=0.3, lw=0.7)
            if curves.floor_alert_step is not None:
                axes[0].axvline(curves.floor_alert_step, color=colors[name], ls=":", lw=0.8)
        for ax, metric in zip(axes, panels, strict=True):
            series = [getattr(r[name], metric) for r in results]
            mean = [statistics.mean(v) for v in zip(*series, strict=True)]
            ax.plot(mean, color=colors[name], lw=1.8, label=labels[name])
    axes[0].axhline(FLOOR, color="grey", ls="--", lw=0.8, label=f"entropy floor {FLOOR:g}")
    axes[0].set_yscale("log")
    axes[0].set_title("response token entropy (nats, log scale)", fontsize=9)
    axes[1].set_title("success rate", fontsize=9)
    axes[2].set_title("distinct correct answers per group (of G)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("GRPO step")
    axes[0].legend(fontsize=8)
    stored = all(c.stored for r in results for c in r.values())
    fig.suptitle(
        f"tiny GRPO, baseline vs IAC: {len(results)} seed(s) (thin) and their mean (bold), "
        f"pre-RL noise {cfg.noise:g}"
        + ("; as stored by the service, dotted: its entropy_floor alerts" if stored else ""),
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextmanager
def _service(args: argparse.Namespace) -> Iterator[str | None]:
    """The service to stream to: ``--url``, one started here (``--serve``), or none."""
    if not args.serve:
        yield args.url
        return
    from service.demo import local_service  # the service's own extra; needed only here

    with tempfile.TemporaryDirectory(prefix="tiny-grpo-") as scratch:
        database = args.database or Path(scratch) / "tiny_grpo.db"
        with local_service(database) as url:
            print(f"service on {url} (SQLite {database})")
            yield url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="stream to the sharpwatch service at this URL")
    target.add_argument(
        "--serve", action="store_true", help="start a service in this process and stream to it"
    )
    parser.add_argument("--database", type=Path, help="with --serve: keep the SQLite file here")
    parser.add_argument("--token", default=os.environ.get("SHARPWATCH_TOKEN"), help="API token")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=TinyConfig.steps)
    parser.add_argument("--sft-steps", type=int, default=TinyConfig.sft_steps)
    parser.add_argument("--noise", type=float, default=TinyConfig.noise, help="SFT noise share")
    parser.add_argument("--group-size", type=int, default=TinyConfig.group_size)
    parser.add_argument("--prompts-per-step", type=int, default=TinyConfig.prompts_per_step)
    parser.add_argument("--lr", type=float, default=TinyConfig.lr)
    parser.add_argument("--alpha", type=float, default=TinyConfig.alpha)
    parser.add_argument("--obey-service", action="store_true", help="let the service stop/adjust")
    parser.add_argument("--out", type=Path, help="write the plot (PNG) here")
    parser.add_argument("--json", type=Path, help="write the curves and summaries (JSON) here")
    parser.add_argument("--markdown", type=Path, help="write the results tables here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if not 0.0 <= args.noise <= 1.0:
        parser.error(f"--noise must be in [0, 1], got {args.noise}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.out and importlib.util.find_spec("matplotlib") is None:
        parser.error("--out draws with matplotlib: pip install matplotlib (or drop --out)")
    # One thread by default: the model is tiny, and the same thread count on every machine keeps
    # the trajectories (and the docs' numbers) the same for the same seeds.
    torch.set_num_threads(args.threads)
    cfgs = [
        TinyConfig(
            steps=args.steps,
            sft_steps=args.sft_steps,
            noise=args.noise,
            group_size=args.group_size,
            prompts_per_step=args.prompts_per_step,
            lr=args.lr,
            alpha=args.alpha,
            seed=seed,
            device=args.device,
        )
        for seed in args.seeds
    ]
    with _service(args) as url:
        results = [
            experiment(cfg, url=url, obey_service=args.obey_service, token=args.token)
            for cfg in cfgs
        ]
    rows = [
        summary(c) | {"seed": s}
        for s, res in zip(args.seeds, results, strict=True)
        for c in res.values()
    ]
    for row in rows:
        print(json.dumps(row))
    report = markdown(cfgs[0], args.seeds, results)
    print(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": asdict(cfgs[0]) | {"seeds": args.seeds},
                    "summaries": rows,
                    "curves": [{k: asdict(v) for k, v in r.items()} for r in results],
                }
            )
        )
    if args.out:
        plot(results, args.out, cfgs[0])
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
