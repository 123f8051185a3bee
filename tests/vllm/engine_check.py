"""Runs in the vLLM environment (.ci/envs/vllm.sh), in vLLM's default multi-process engine:
samples from a tiny policy with the sharpwatch DLC processor loaded by its FQCN (and by the
entry point), some requests with DLC and some opted out, and writes the sampled tokens and what
the worker loaded as JSON for tests/vllm/test_vllm_dlc.py to check against the Hugging Face path.

    python tests/vllm/engine_check.py POLICY_DIR MEMORY_DIR MU OUT.json [--runner v1|v2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

FQCN = "trainer_hooks.integrations.vllm:DLCLogitsProcessor"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("policy")
    ap.add_argument("memory")
    ap.add_argument("mu", type=float)
    ap.add_argument("out")
    ap.add_argument("--prompts", type=int, nargs="+", action="append", required=True)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--max-tokens", type=int, default=3)
    args = ap.parse_args()

    from vllm import LLM, SamplingParams

    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "1", "multi-process only"
    t0 = time.time()
    llm = LLM(
        model=args.policy,
        dtype="float32",
        gpu_memory_utilization=0.05,
        max_model_len=64,
        max_num_seqs=256,
        enforce_eager=True,
        seed=1234,
        logits_processors=[FQCN],
        worker_extension_cls="trainer_hooks.integrations.vllm.DLCWorkerExtension",
        additional_config={"sharpwatch_dlc": {"memory_path": args.memory, "mu": args.mu}},
    )
    started = time.time() - t0
    prompts = [{"prompt_token_ids": p} for p in args.prompts]
    dlc = SamplingParams(n=args.n, max_tokens=args.max_tokens, temperature=1.0, ignore_eos=True)
    plain = SamplingParams(
        n=args.n,
        max_tokens=args.max_tokens,
        temperature=1.0,
        ignore_eos=True,
        extra_args={"sharpwatch_dlc": False},
    )
    t1 = time.time()
    # one generate call: DLC and opted-out requests share the engine's batches
    outs = llm.generate(prompts + prompts, [dlc] * len(prompts) + [plain] * len(prompts))
    sampled = time.time() - t1
    k = len(prompts)
    rejected = None
    try:
        llm.generate(prompts[:1], SamplingParams(max_tokens=1, extra_args={"sharpwatch_dlc": 1}))
    except Exception as exc:  # vLLM rejects the request with our validation message
        rejected = str(exc)
    result = {
        "prompts": args.prompts,
        "dlc": [[list(c.token_ids) for c in o.outputs] for o in outs[:k]],
        "plain": [[list(c.token_ids) for c in o.outputs] for o in outs[k:]],
        "workers": llm.collective_rpc("sharpwatch_dlc_status"),
        "main_pid": os.getpid(),
        "rejected": rejected,
        "seconds": {"start": started, "sample": sampled},
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
