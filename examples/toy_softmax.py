"""The toy RLVR experiment of seed 002 §2.4 / App. G-H (science.md §6), on a CPU.

Four classes with fixed embeddings (Cat, Persian, Dog, Siamese). The query is an input embedding,
the output a sampled label, the policy softmax(W·e_q) — a linear policy whose W starts as the
matrix of class embeddings (science.md §6 **Decision**). Only Persian inputs are trained, G labels
per step, reward 1 for Cat or Persian. We track π(·|Persian) (Figures 1, 4, 5) and the held-out
π(Siamese|Siamese) (Figure 2).

The loop (``trainer_hooks._toy``, shared with ``sharpwatch demo``) uses the real hooks:
:class:`trainer_hooks.Monitor` (metrics and IAC-calibrated advantages),
:func:`trainer_hooks.grpo_advantages` (mean-shifted / normalised advantages),
:class:`trainer_hooks.DLCMemory` with :class:`trainer_hooks.LinearMemory` (DLC sampling).

This script checks each ordering the paper states (``ORDERINGS``) over several seeds and says, with
counts, whether it reproduces; where our faithful setup breaks one it also measures the named
variant beside it. It writes into ``--out`` only: ``toy_orderings.json`` (the counts),
``toy_orderings.md`` (the table docs/science.md §6 pastes) and the four figures, whose titles carry
the counts. ``python examples/toy_softmax.py --out docs/img`` regenerates the committed ones.

Definitions:

- **collapse step**: the first step t at which one correct mode holds at least ``share`` (0.95 by
  default) of the correct mass at Persian, i.e. max(π(Cat|P), π(Persian|P)) / (π(Cat|P) +
  π(Persian|P)) >= share; ``steps + 1`` when it never happens (censored).
- **minority share**: min(π(Cat|P), π(Persian|P)) / (π(Cat|P) + π(Persian|P)) after the last step;
  lower = sharper. The criterion variant for orderings whose runs are censored.
- **Siamese fall step**: the first step at which π(Siamese|Siamese) falls below half its initial
  value; ``steps + 1`` when it never happens.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

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
    "ORDERINGS",
    "PERSIAN",
    "SIAMESE",
    "SIAMESE_EMBEDDINGS",
    "Advantage",
    "Check",
    "Optim",
    "Ordering",
    "Runs",
    "Similarity",
    "ToyConfig",
    "ToyResult",
    "collapse_step",
    "embedding_matrix",
    "evaluate",
    "fall_step",
    "main",
    "median_step",
    "minority_share",
    "render_markdown",
    "run_toy",
    "verdict",
]

SUMMARY_JSON = "toy_orderings.json"
SUMMARY_MD = "toy_orderings.md"
FIGURES = (
    "toy_fig1_advantages.png",
    "toy_fig2_coupling.png",
    "toy_fig4_optimizers.png",
    "toy_fig5_calibration.png",
)


# ---------------------------------------------------------------------------------------------
# runs (cached: the figures and the ordering checks share them)
# ---------------------------------------------------------------------------------------------


class Runs:
    """``runs(cfg)`` → the results of ``cfg`` for every seed, each run computed once."""

    def __init__(self, seeds: Sequence[int], steps: int) -> None:
        if not seeds:
            raise ValueError("seeds: need at least one seed")
        if steps < 1:
            raise ValueError(f"steps: must be >= 1, got {steps}")
        self.seeds = list(seeds)
        self.steps = steps
        self._cache: dict[tuple[ToyConfig, int], ToyResult] = {}

    def __call__(self, cfg: ToyConfig) -> list[ToyResult]:
        cfg = replace(cfg, steps=self.steps)
        out = []
        for s in self.seeds:
            if (cfg, s) not in self._cache:
                self._cache[(cfg, s)] = run_toy(cfg, s)
            out.append(self._cache[(cfg, s)])
        return out

    def by_config(self) -> dict[ToyConfig, list[ToyResult]]:
        """Every configuration run so far, with its results in seed order."""
        out: dict[ToyConfig, list[ToyResult]] = {}
        for (cfg, _), r in self._cache.items():
            out.setdefault(cfg, []).append(r)
        return out


def minority_share(r: ToyResult) -> float:
    """min(π(Cat|P), π(Persian|P)) / (π(Cat|P) + π(Persian|P)) after the last step."""
    cat, per = float(r.probs[-1, CAT]), float(r.probs[-1, PERSIAN])
    return min(cat, per) / (cat + per)


# Per-run scores; smaller = sharper / faster collapse / faster fall.
Metric = Literal["collapse", "collapse_0.8", "minority", "siamese_fall"]
_METRICS: dict[str, Callable[[ToyResult], float]] = {
    "collapse": lambda r: float(r.collapse_step),
    "collapse_0.8": lambda r: float(collapse_step(r.probs, 0.8)[0]),
    "minority": minority_share,
    "siamese_fall": lambda r: float(r.siamese_fall_step),
}
_METRIC_TEXT = {
    "collapse": "collapse step (95 % share)",
    "collapse_0.8": "collapse step (80 % share)",
    "minority": "final minority share",
    "siamese_fall": "π(Siamese|Siamese) half-life step",
}


# ---------------------------------------------------------------------------------------------
# the paper's orderings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One way to test an ordering, counted per (pair, seed).

    ``kind="faster"``: metric(a[i]) < metric(b[i]) for the same seed (a is the one the paper says
    collapses / falls first). ``kind="collapses"``: a[i] collapses (95 % share) within ``within``
    steps (``None`` or more = the run's length). ``kind="holds"``: a[i] never collapses (95 %
    share).
    """

    label: str
    kind: Literal["faster", "collapses", "holds"]
    a: tuple[ToyConfig, ...]
    b: tuple[ToyConfig, ...] = ()
    metric: Metric = "collapse"
    within: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "faster" and len(self.a) != len(self.b):
            raise ValueError("b: a 'faster' check pairs every config of a with one of b")
        if not self.a:
            raise ValueError("a: at least one config")

    def count(self, runs: Runs) -> tuple[int, int]:
        """(runs or pairs in which the ordering holds, how many there were)."""
        held = total = 0
        for i, cfg in enumerate(self.a):
            ra = runs(cfg)
            if self.kind == "faster":
                score = _METRICS[self.metric]
                for x, y in zip(ra, runs(self.b[i]), strict=True):
                    held += score(x) < score(y)
                    total += 1
                continue
            limit = runs.steps if self.within is None else min(self.within, runs.steps)
            for x in ra:
                collapsed = x.collapse_step <= limit
                held += collapsed if self.kind == "collapses" else not collapsed
                total += 1
        return held, total


@dataclass(frozen=True)
class Ordering:
    """A claim of the paper, its source, the faithful check and the variants measured beside it."""

    key: str
    claim: str
    source: str
    faithful: Check
    variants: tuple[Check, ...] = field(default_factory=tuple)


def _describe(cfg: ToyConfig) -> str:
    """The fields that differ from the faithful setup, e.g. ``advantage=normalized lr=1.0``."""
    base = replace(_BASE, steps=cfg.steps)
    diff = [f"{k}={v}" for k, v in asdict(cfg).items() if getattr(base, k) != v]
    return " ".join(diff) or "faithful"


def verdict(held: int, of: int) -> str:
    """``reproduced`` when it holds in >= 5/6 of the cases, ``mixed`` above half, else ``not
    reproduced``."""
    if of <= 0:
        raise ValueError("of: no cases")
    if 6 * held >= 5 * of:
        return "reproduced"
    if 2 * held > of:
        return "mixed"
    return "not reproduced"


_BASE = ToyConfig()  # raw rewards, SGD lr 0.3, G = 8, W = embeddings (science.md §6 Decision)
_GS = (4, 8, 16)
SIMS: tuple[Similarity, ...] = ("high", "mid", "low")


def _adv(adv: Advantage, **kw: Any) -> tuple[ToyConfig, ...]:
    return tuple(replace(_BASE, advantage=adv, group_size=g, **kw) for g in _GS)


def _orderings() -> tuple[Ordering, ...]:
    raw, ms, norm = _adv("raw"), _adv("mean_shifted"), _adv("normalized")
    raw_lr1 = _adv("raw", lr=1.0)
    ms_lr1 = (replace(ms[0], lr=1.0), replace(ms[2], lr=1.0))
    norm_lr1 = (replace(norm[0], lr=1.0), replace(norm[2], lr=1.0))
    fig2 = replace(_BASE, advantage="normalized")
    sgd, mom, adamw = _BASE, replace(_BASE, optimizer="momentum"), replace(_BASE, optimizer="adamw")
    adamw_slow = replace(adamw, adamw_lr=0.03)
    sim = tuple(replace(fig2, group_size=g, similarity=s) for g in (4, 16) for s in SIMS)
    return (
        Ordering(
            "all_collapse",
            "every estimator and G collapses onto Cat or Persian within 500 steps",
            "§2.4, Figure 1",
            Check("raw, mean-shifted, normalised × G 4, 8, 16", "collapses", raw + ms + norm),
            (
                Check("raw only", "collapses", raw),
                Check("raw, SGD lr 1.0", "collapses", raw_lr1),
                Check(
                    "mean-shifted, normalised, G 4, 16, SGD lr 1.0", "collapses", ms_lr1 + norm_lr1
                ),
            ),
        ),
        Ordering(
            "raw_before_mean_shifted",
            "raw rewards collapse faster than mean-shifted advantages",
            "§2.4, Figure 1",
            Check("G 4, 8, 16", "faster", raw, ms),
            (
                Check("same runs", "faster", raw, ms, "minority"),
                Check("G 4, 16, SGD lr 1.0", "faster", (raw_lr1[0], raw_lr1[2]), ms_lr1),
            ),
        ),
        Ordering(
            "mean_shifted_before_normalized",
            "mean-shifted advantages collapse faster than normalised ones",
            "§2.4, Figure 1",
            Check("G 4, 8, 16", "faster", ms, norm),
            (
                Check("same runs", "faster", ms, norm, "minority"),
                Check(
                    "G 4, 16, SGD lr 1.0",
                    "faster",
                    ms_lr1,
                    norm_lr1,
                    "minority",
                ),
            ),
        ),
        Ordering(
            "larger_g_delays_collapse",
            "larger G delays collapse at Persian (G 4 before G 16)",
            "§2.4, Figure 1",
            Check("raw", "faster", raw[:1], raw[2:]),
            (
                Check("raw, SGD lr 1.0", "faster", raw_lr1[:1], raw_lr1[2:]),
                Check(
                    "mean-shifted and normalised",
                    "faster",
                    (ms[0], norm[0]),
                    (ms[2], norm[2]),
                    "minority",
                ),
            ),
        ),
        Ordering(
            "larger_g_speeds_siamese_fall",
            "larger G speeds the fall of π(Siamese|Siamese) (G 16 before G 4)",
            "§2.4, Figure 2",
            Check(
                "normalised, high, mid, low similarity", "faster", sim[3:], sim[:3], "siamese_fall"
            ),
            (Check("raw, high similarity", "faster", raw[2:], raw[:1], "siamese_fall"),),
        ),
        Ordering(
            "similarity_speeds_siamese_fall",
            "higher Persian–Siamese similarity speeds the fall of π(Siamese|Siamese)",
            "§2.4, Figure 2; App. G",
            Check(
                "normalised, G 4 and 16: high before mid, mid before low",
                "faster",
                (sim[0], sim[1], sim[3], sim[4]),
                (sim[1], sim[2], sim[4], sim[5]),
                "siamese_fall",
            ),
        ),
        Ordering(
            "momentum_before_sgd",
            "momentum collapses faster than SGD",
            "App. G, Figure 4",
            Check("raw, G 8, same lr 0.3", "faster", (mom,), (sgd,)),
        ),
        Ordering(
            "momentum_within_20",
            "momentum collapses within 20 steps regardless of G",
            "App. G, Figure 4",
            Check(
                "raw, G 4, 8, 16, lr 0.3",
                "collapses",
                tuple(replace(mom, group_size=g) for g in _GS),
                within=20,
            ),
            (
                Check(
                    "within 50 steps",
                    "collapses",
                    tuple(replace(mom, group_size=g) for g in _GS),
                    within=50,
                ),
            ),
        ),
        Ordering(
            "adamw_before_sgd",
            "AdamW collapses faster than SGD",
            "App. G, Figure 4",
            Check("raw, G 8, same lr 0.3", "faster", (adamw,), (sgd,)),
        ),
        Ordering(
            "iac_delays_sgd",
            "IAC (α = 1) delays collapse, SGD",
            "App. H, Figure 5 (a)",
            Check("raw, G 8", "faster", (sgd,), (replace(sgd, iac=True),)),
            (
                Check(
                    "same runs",
                    "faster",
                    (sgd,),
                    (replace(sgd, iac=True),),
                    "minority",
                ),
                Check(
                    "SGD lr 1.0",
                    "faster",
                    (replace(sgd, lr=1.0),),
                    (replace(sgd, lr=1.0, iac=True),),
                ),
            ),
        ),
        Ordering(
            "iac_delays_adamw",
            "IAC (α = 1) delays collapse, AdamW",
            "App. H, Figure 5 (c)",
            Check("raw, G 8, AdamW lr 0.3", "faster", (adamw,), (replace(adamw, iac=True),)),
            (
                Check(
                    "AdamW lr 0.03",
                    "faster",
                    (adamw_slow,),
                    (replace(adamw_slow, iac=True),),
                    "minority",
                ),
            ),
        ),
        Ordering(
            "iac_dlc_holds_sgd",
            "IAC + DLC (μ = 0.5) holds both modes, SGD",
            "App. H, Figure 5 (b)",
            Check("raw, G 8", "holds", (replace(sgd, iac=True, dlc=True),)),
        ),
        Ordering(
            "iac_dlc_holds_adamw",
            "IAC + DLC (μ = 0.5) holds both modes, AdamW",
            "App. H, Figure 5 (d)",
            Check("raw, G 8, AdamW lr 0.3", "holds", (replace(adamw, iac=True, dlc=True),)),
            (
                Check(
                    "AdamW lr 0.03 instead of 0.3",
                    "holds",
                    (replace(adamw_slow, iac=True, dlc=True),),
                ),
            ),
        ),
    )


ORDERINGS: tuple[Ordering, ...] = _orderings()


def _criterion(check: Check, steps: int) -> str:
    if check.kind == "faster":
        return _METRIC_TEXT[check.metric]
    if check.kind == "holds":
        return f"never collapses (95 % share) in {steps} steps"
    limit = steps if check.within is None else min(check.within, steps)
    return f"collapses (95 % share) within {limit} steps"


def evaluate(runs: Runs, orderings: Sequence[Ordering] = ORDERINGS) -> dict[str, Any]:
    """The JSON summary: for each ordering, the faithful check and each variant with counts."""

    def one(check: Check, faithful: bool) -> dict[str, Any]:
        held, of = check.count(runs)
        return {
            "label": check.label,
            "faithful": faithful,
            "metric": _criterion(check, runs.steps),
            "held": held,
            "of": of,
            "verdict": verdict(held, of),
        }

    rows = []
    for o in orderings:
        checks = [one(o.faithful, True)] + [one(v, False) for v in o.variants]
        rows.append({"key": o.key, "claim": o.claim, "source": o.source, "checks": checks})
    reproduced = sum(r["checks"][0]["verdict"] == "reproduced" for r in rows)
    per_config = [
        {
            "config": _describe(cfg),
            "collapse_step": [r.collapse_step for r in results],
            "winner": [r.winner for r in results],
            "minority_share": [round(minority_share(r), 4) for r in results],
            "siamese_fall_step": [r.siamese_fall_step for r in results],
        }
        for cfg, results in runs.by_config().items()
    ]
    return {
        "seeds": runs.seeds,
        "steps": runs.steps,
        "faithful_setup": asdict(_BASE) | {"steps": runs.steps},
        "rule": "reproduced: holds in >= 5/6 of the runs or seed-paired comparisons; "
        "mixed: in more than half; else not reproduced",
        "reproduced": reproduced,
        "orderings_total": len(rows),
        "orderings": rows,
        "runs": per_config,
    }


def headline(summary: dict[str, Any]) -> str:
    """The one line the README quotes."""
    return (
        f"{summary['reproduced']} of {summary['orderings_total']} orderings reproduced under the "
        f"faithful setup over {len(summary['seeds'])} seeds × {summary['steps']} steps"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(summary: dict[str, Any]) -> str:
    """The table docs/science.md §6 carries, generated from the summary (never typed by hand)."""
    lines = [
        f"{headline(summary)} (`examples/toy_softmax.py --seeds {len(summary['seeds'])} "
        f"--steps {summary['steps']}`; {summary['rule']}).",
        "",
        "| paper's ordering | source | faithful setup — criterion | held | verdict "
        "| variants measured — criterion: held, verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary["orderings"]:
        f, *variants = row["checks"]
        var = "; ".join(
            f"{v['label']} — {v['metric']}: {v['held']}/{v['of']} {v['verdict']}" for v in variants
        )
        cells = (
            row["claim"],
            row["source"],
            f"{f['label']} — {f['metric']}",
            f"{f['held']}/{f['of']}",
            f["verdict"],
            var or "—",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _counts(summary: dict[str, Any], key: str) -> str:
    row = next(r for r in summary["orderings"] if r["key"] == key)
    f = row["checks"][0]
    return f"{f['held']}/{f['of']}"


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def _plot_probs(ax: Any, results: list[ToyResult], title: str) -> None:
    for i, r in enumerate(results):
        steps = range(r.probs.shape[0])
        cat = "π(Cat|Persian)" if i == 0 else None
        per = "π(Persian|Persian)" if i == 0 else None
        ax.plot(steps, r.probs[:, CAT].numpy(), color="tab:orange", lw=0.8, alpha=0.6, label=cat)
        ax.plot(steps, r.probs[:, PERSIAN].numpy(), color="tab:blue", lw=0.8, alpha=0.6, label=per)
    ax.set_title(title, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")


def _collapsed(results: list[ToyResult]) -> str:
    steps = results[0].config.steps
    hit = sorted(r.collapse_step for r in results if r.collapse_step <= steps)
    med = f", median step {median_step(results):g}" if 2 * len(hit) > len(results) else ""
    return f"collapsed {len(hit)}/{len(results)}{med}"


def figure_titles(summary: dict[str, Any]) -> dict[str, str]:
    """Each figure's title: the setup and the faithful counts of the orderings it shows."""
    n, c = len(summary["seeds"]), (lambda key: _counts(summary, key))
    return {
        FIGURES[0]: f"Toy softmax (Fig. 1), {n} seeds, SGD lr 0.3. Orderings held: all collapse "
        f"{c('all_collapse')}; raw before mean-shifted {c('raw_before_mean_shifted')}; "
        f"mean-shifted before normalised {c('mean_shifted_before_normalized')}; "
        f"G=4 before G=16 (raw) {c('larger_g_delays_collapse')}",
        FIGURES[1]: f"Toy softmax (Fig. 2), normalised, Persian only, {n} seeds. Orderings held: "
        f"G=16 falls before G=4 {c('larger_g_speeds_siamese_fall')}; higher similarity falls "
        f"first {c('similarity_speeds_siamese_fall')}",
        FIGURES[2]: f"Toy softmax (Fig. 4), raw, G=8, same lr 0.3, {n} seeds. Orderings held: "
        f"momentum before SGD {c('momentum_before_sgd')}; AdamW before SGD "
        f"{c('adamw_before_sgd')}",
        FIGURES[3]: f"Toy softmax (Fig. 5), raw, G=8, {n} seeds. Orderings held: IAC delays "
        f"collapse (SGD) {c('iac_delays_sgd')}, (AdamW lr 0.3) {c('iac_delays_adamw')}; IAC+DLC "
        f"keeps both modes (SGD) {c('iac_dlc_holds_sgd')}, (AdamW lr 0.3) "
        f"{c('iac_dlc_holds_adamw')}; third row: AdamW lr 0.03 variant",
    }


def _figures(runs: Runs, summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, titles = len(runs.seeds), figure_titles(summary)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.suptitle(textwrap.fill(titles[name], 120), fontsize=9)
        fig.tight_layout()
        written.append(out / name)
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    # Figure 1: advantage estimator × group size
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4), sharey=True)
    for row, g in enumerate((4, 16)):
        for col, adv in enumerate(("raw", "mean_shifted", "normalized")):
            rs = runs(replace(_BASE, advantage=adv, group_size=g))  # type: ignore[arg-type]
            _plot_probs(axes[row, col], rs, f"{adv}, G={g}: {_collapsed(rs)}")
    axes[0, 0].legend(fontsize=7)
    save(fig, FIGURES[0])

    # Figure 2: π(Siamese|Siamese) vs similarity and G
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    for col, sim in enumerate(("high", "mid", "low")):
        for g in _GS:
            cfg = replace(_BASE, advantage="normalized", similarity=sim, group_size=g)  # type: ignore[arg-type]
            curve = torch.stack([r.siamese for r in runs(cfg)]).mean(0)
            axes[col].plot(curve[:151].numpy(), label=f"G={g}")
        axes[col].set_title(f"{sim} similarity: π(Siamese|Siamese), mean of {n} seeds", fontsize=8)
        axes[col].set_xlabel("step")
    axes[0].legend(fontsize=7)
    save(fig, FIGURES[1])

    # Figure 4 (App. G): optimisers
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    for col, optim in enumerate(("sgd", "momentum", "adamw")):
        rs = runs(replace(_BASE, optimizer=optim))  # type: ignore[arg-type]
        _plot_probs(axes[col], rs, f"{optim}: {_collapsed(rs)}")
    axes[0].legend(fontsize=7)
    save(fig, FIGURES[2])

    # Figure 5 (App. H): IAC and IAC + DLC under SGD and AdamW (and the AdamW lr variant)
    fig, axes = plt.subplots(3, 3, figsize=(12, 9), sharey=True)
    rows = (
        ("sgd", replace(_BASE)),
        ("adamw lr 0.3", replace(_BASE, optimizer="adamw")),
        ("adamw lr 0.03 (variant)", replace(_BASE, optimizer="adamw", adamw_lr=0.03)),
    )
    for row, (name, base) in enumerate(rows):
        variants = (
            ("baseline", base),
            ("IAC α=1", replace(base, iac=True)),
            ("IAC + DLC μ=0.5", replace(base, iac=True, dlc=True)),
        )
        for col, (vname, cfg) in enumerate(variants):
            rs = runs(cfg)
            _plot_probs(axes[row, col], rs, f"{name}: {vname}: {_collapsed(rs)}")
    axes[0, 0].legend(fontsize=7)
    save(fig, FIGURES[3])
    return written


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="toy_softmax.py",
        description="Run the toy RLVR experiment of seed 002 §2.4 / App. G-H over several seeds, "
        "check each ordering the paper states, and write the counts (toy_orderings.json, "
        "toy_orderings.md) and the figures into --out. Nothing is written anywhere else; "
        "`--out docs/img` regenerates the committed figures.",
    )
    p.add_argument("--out", required=True, type=Path, help="directory to write into (created)")
    p.add_argument("--seeds", type=int, default=6, help="number of seeds, 0..N-1 (default 6)")
    p.add_argument("--steps", type=int, default=500, help="training steps per run (default 500)")
    p.add_argument("--no-figures", action="store_true", help="write the summary only")
    return p


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = _parser().parse_args(argv)
    if args.seeds < 1:
        _parser().error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps < 1:
        _parser().error(f"--steps must be >= 1, got {args.steps}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 4×4 matrices: threads only add overhead
    try:
        runs = Runs(range(args.seeds), args.steps)
        summary = evaluate(runs)
        written = [out / SUMMARY_JSON, out / SUMMARY_MD]
        written[0].write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        written[1].write_text(render_markdown(summary))
        if not args.no_figures:
            written += _figures(runs, summary, out)
    finally:
        torch.set_num_threads(threads)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
