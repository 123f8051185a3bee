"""A tiny RLVR loop whose rollouts come from vLLM, with DLC inside vLLM and the hooks streaming.

Runs in the vLLM environment (``bash .ci/envs/vllm.sh`` prints its python), CPU-sized:

- **Task.** The prompt is ``<s> wK`` for a target ``K`` in 0..7; the response is two words. The
  reward is 1 when the first word's index is ``K`` modulo 4: four correct answers per prompt
  among 16 words, so GRPO can sharpen onto one of them (science.md §2).
- **Rollouts.** vLLM (its default multi-process engine) samples ``G`` responses per prompt with
  DLC on: ``trainer_hooks.integrations.vllm:DLCLogitsProcessor`` loaded by name, configured by
  ``additional_config={"sharpwatch_dlc": {"memory_path": ..., "mu": μ}}``. vLLM also returns
  each response's log-probability under the policy (its raw log-probs).
- **Trainer.** The same tiny Llama in Hugging Face/torch computes rewards, GRPO advantages,
  IAC (through ``trainer_hooks.watch``: the α the service controls) and a policy-gradient step;
  the DLC memory (a Llama an eighth of the policy's size) takes a cross-entropy step on the
  sampled responses (``DLCMemory``).
- **Weights into vLLM every step**, as TRL's colocate mode and veRL do: the policy is saved and
  ``llm.collective_rpc("reload_weights", kwargs={"weights_path": ...})`` loads it in place in
  the engine's worker; the memory is saved where the processor reloads it from.
- **The service.** Every step streams (entropy from the trainer's logits, success rate,
  answer keys, the responses' tokens and their sequence log-probs from vLLM as ``old_logprobs``
  for Z'(q), science.md §7, and α, μ); an ``early_stop`` from the service ends the loop at
  once, an ``adjust_alpha`` takes effect from the next step.

Usage (the curves in docs/vllm_rlvr.md)::

    PY=$(bash .ci/envs/vllm.sh)
    PYTHONPATH=. $PY examples/vllm_rlvr.py --serve --steps 60 --json /tmp/vllm_rlvr.json
    PYTHONPATH=. $PY examples/vllm_rlvr.py --url http://127.0.0.1:8000 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_lm

from trainer_hooks import CausalLMMemory, DLCMemory, StepInputs, grpo_advantages, watch

WORDS = 16
VOCAB = len(tiny_lm.SPECIALS) + WORDS
TARGETS = 8
RESPONSE_LEN = 2
FQCN = "trainer_hooks.integrations.vllm:DLCLogitsProcessor"


def word(i: int) -> int:
    return len(tiny_lm.SPECIALS) + i


def rewards_for(targets: list[int], responses: list[list[int]]) -> torch.Tensor:
    first = torch.tensor([r[0] for r in responses])
    tgt = torch.tensor(targets)
    idx = first - len(tiny_lm.SPECIALS)
    return ((idx >= 0) & (idx % 4 == tgt % 4)).to(torch.float32)


def build_models(directory: Path, seed: int) -> tuple[Path, Path]:
    policy_dir, memory_dir = directory / "policy", directory / "memory"
    tiny_lm.build_llama(policy_dir, VOCAB, hidden=128, layers=2, heads=2, seed=seed)
    memory = tiny_lm.build_llama(memory_dir, VOCAB, hidden=64, layers=1, heads=2, seed=seed + 1)
    with torch.no_grad():  # a memory that has seen nothing is uniform: DLC starts as a no-op
        memory.lm_head.weight.zero_()
    memory.save_pretrained(str(memory_dir))
    return policy_dir, memory_dir


def run_loop(args: argparse.Namespace, url: str | None, scratch: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM
    from vllm import LLM, SamplingParams

    torch.manual_seed(args.seed)
    policy_dir, memory_dir = build_models(scratch, args.seed)
    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    memory_lm = AutoModelForCausalLM.from_pretrained(str(memory_dir), dtype=torch.float32)
    memory = DLCMemory(CausalLMMemory(memory_lm), mu=args.mu, lr=args.memory_lr)
    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    llm = LLM(
        model=str(policy_dir),
        dtype="float32",
        gpu_memory_utilization=0.05,
        max_model_len=32,
        max_num_seqs=128,
        enforce_eager=True,
        enable_prefix_caching=False,  # prompts' KV must not outlive a weight update
        seed=args.seed,
        logits_processors=[FQCN],
        additional_config={"sharpwatch_dlc": {"memory_path": str(memory_dir), "mu": args.mu}},
    )
    gen = torch.Generator().manual_seed(args.seed)
    b, g = args.prompts_per_step, args.group_size
    policy_rules = {"auto_stop_rules": [], "auto_alpha": False} if args.observe_only else None
    history: dict[str, Any] = {"alpha": [], "entropy": [], "success_rate": [], "seconds": []}
    history |= {"stopped_at": None, "run_id": None, "steps": 0}
    with watch(
        url,
        name=args.name,
        project="vllm-rlvr",
        group_size=g,
        kl_beta=0.0,
        reference_beta=0.04,
        alpha=args.alpha,
        mu=args.mu,
        config={k: v for k, v in vars(args).items() if isinstance(v, int | float | str)},
        tags={"example": "vllm_rlvr"},
        policy=policy_rules,
    ) as run:
        for step in range(args.steps):
            started = time.monotonic()
            targets = torch.randperm(TARGETS, generator=gen)[:b].tolist()  # distinct queries
            prompts = [{"prompt_token_ids": [tiny_lm.BOS, word(t)]} for t in targets]
            params = SamplingParams(
                n=g, max_tokens=RESPONSE_LEN, temperature=1.0, ignore_eos=True, logprobs=0
            )
            outs = llm.generate(prompts, params, use_tqdm=False)
            responses = [list(c.token_ids) for o in outs for c in o.outputs]
            seq_logprobs = torch.tensor(
                [[c.cumulative_logprob for c in o.outputs] for o in outs], dtype=torch.float32
            )
            rewards = rewards_for([t for t in targets for _ in range(g)], responses).view(b, g)
            advantages = grpo_advantages(rewards)
            ids = torch.tensor(
                [[tiny_lm.BOS, word(targets[i // g]), *r] for i, r in enumerate(responses)]
            )  # [B*G, 2 + RESPONSE_LEN]
            policy.train()
            logits = policy(ids[:, :-1]).logits[:, 1:].float()  # the response positions
            keys = [str(r[0]) for r in responses]
            result = run.step(
                StepInputs(
                    rewards=rewards,
                    advantages=advantages,
                    logits=logits.detach().view(b, g, RESPONSE_LEN, -1),
                    mask=torch.ones(b, g, RESPONSE_LEN),
                    answer_keys=keys,
                    token_ids=ids[:, 2:].reshape(b, g, RESPONSE_LEN),
                    old_logprobs=seq_logprobs,  # the sampling policy's, from vLLM (§7)
                    query_ids=[f"w{t}" for t in targets],
                )
            )
            used = result.advantages
            assert used is not None
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 2:, None]).squeeze(-1)
            loss = -(used.reshape(-1, 1) * logp).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mask = torch.zeros_like(ids)
            mask[:, 2:] = 1
            memory.update(ids, mask=mask)
            # new weights into vLLM: the policy in place in the worker, the memory for the
            # processor (reloaded when the next request is admitted)
            policy.save_pretrained(str(policy_dir))
            memory_lm.save_pretrained(str(memory_dir))
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(policy_dir)})

            m = result.metrics
            history["alpha"].append(result.alpha)
            history["entropy"].append(float(m["entropy"] or 0.0))
            history["success_rate"].append(float(m["success_rate"] or 0.0))
            history["seconds"].append(time.monotonic() - started)
            history["steps"] = step + 1
            if step % 10 == 0 or step == args.steps - 1:
                print(
                    f"step {step:4d} success {history['success_rate'][-1]:.2f} "
                    f"entropy {history['entropy'][-1]:.3f} α {result.alpha:g}",
                    flush=True,
                )
            if run.should_stop:
                history["stopped_at"] = step
                print(f"stopped by the service at step {step}", flush=True)
                break
        if run.run is not None:
            history["run_id"] = run.run.id
    return history


@contextmanager
def _service(args: argparse.Namespace, scratch: Path) -> Iterator[str | None]:
    if not args.serve:
        yield args.url
        return
    from service.demo import local_service

    with local_service(scratch / "vllm_rlvr.db") as url:
        print(f"service on {url}", flush=True)
        yield url


def read_back(url: str, run_id: int) -> dict[str, list[float]]:
    """The curves the service stored for the run."""
    import httpx

    with httpx.Client(base_url=url, timeout=30.0) as http:
        body = http.get(
            f"/api/v1/runs/{run_id}/steps",
            params={"metrics": "entropy,success_rate,alpha,log_zprime_mean", "limit": 10000},
        )
        body.raise_for_status()
        items = body.json()["items"]
    return {
        k: [s["metrics"].get(k) for s in items]
        for k in ("entropy", "success_rate", "alpha", "log_zprime_mean")
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="stream to the sharpwatch service at this URL")
    target.add_argument("--serve", action="store_true", help="start a service in this process")
    parser.add_argument("--name", default="vllm-rlvr")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--memory-lr", type=float, default=0.5)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--mu", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--observe-only",
        action="store_true",
        help="the service's rules only alert (no automatic stop or α change); operator "
        "commands still act",
    )
    parser.add_argument("--json", type=Path, help="write the loop's and the service's curves")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.group_size < 2 or not 1 <= args.prompts_per_step <= TARGETS:
        parser.error(f"--steps >= 1, --group-size >= 2, 1 <= --prompts-per-step <= {TARGETS}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="vllm-rlvr-") as tmp:
        scratch = Path(tmp)
        with _service(args, scratch) as url:
            history = run_loop(args, url, scratch)
            stored = read_back(url, history["run_id"]) if url and history["run_id"] else None
    out = {"loop": history, "service": stored}
    if args.json:
        args.json.write_text(json.dumps(out))
    print(json.dumps({k: history[k] for k in ("steps", "stopped_at", "run_id")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
