"""Runs in the vLLM environment: DLCLogitsProcessor against vLLM's own interface classes and
loaders, for both model runners, without an engine (tests/vllm/test_vllm_interfaces.py).

    python tests/vllm/interface_check.py POLICY_DIR MEMORY_DIR OUT.json
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import torch

FQCN = "trainer_hooks.integrations.vllm:DLCLogitsProcessor"


def main() -> None:
    _, memory_dir, out = sys.argv[1:4]
    from transformers import AutoModelForCausalLM
    from vllm import SamplingParams
    from vllm.v1.sample import logits_processor as v1
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState
    from vllm.v1.worker.gpu.sample.logits_processor import interface as v2
    from vllm.v1.worker.gpu.sample.logits_processor import loader as v2_loader

    from trainer_hooks.integrations.vllm import DLCLogitsProcessor

    report: dict[str, object] = {}
    report["v1_subclass"] = issubclass(DLCLogitsProcessor, v1.LogitsProcessor)
    report["v2_subclass"] = issubclass(DLCLogitsProcessor, v2.LogitsProcessor)
    report["v1_fqcn"] = v1._load_logitsprocs_by_fqcns([FQCN]) == [DLCLogitsProcessor]
    report["v2_fqcn"] = v2_loader._load_v2_logitsprocs_by_fqcns([FQCN]) == [DLCLogitsProcessor]
    report["v1_entry_point"] = DLCLogitsProcessor in v1._load_logitsprocs_plugins()
    report["v2_entry_point"] = DLCLogitsProcessor in v2_loader._load_v2_logitsprocs_plugins()

    mu = 0.5
    memory = AutoModelForCausalLM.from_pretrained(memory_dir, dtype=torch.float32).eval()
    config = SimpleNamespace(
        additional_config={"sharpwatch_dlc": {"memory_path": memory_dir, "mu": mu}}
    )
    vocab = memory.config.vocab_size

    def reference(seq: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return memory(torch.tensor([seq])).logits[0, -1]

    # Model Runner V2: the processor built as vLLM's loader builds it
    max_reqs, max_len = 4, 32
    all_ids = torch.zeros(max_reqs, max_len, dtype=torch.int32)
    states = LogitsProcRequestState(
        device=torch.device("cpu"),
        max_num_reqs=max_reqs,
        vocab_size=vocab,
        all_token_ids=SimpleNamespace(gpu=all_ids),
        prompt_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
        prefill_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
        total_len=SimpleNamespace(gpu=torch.zeros(max_reqs, dtype=torch.int32)),
    )
    proc = DLCLogitsProcessor(config, states)
    seqs = {1: [2, 5, 6, 7], 3: [2, 9]}
    for slot, seq in seqs.items():
        all_ids[slot, : len(seq)] = torch.tensor(seq, dtype=torch.int32)
    added = [
        proc.add_request(1, SamplingParams()),
        proc.add_request(3, SamplingParams(extra_args={"sharpwatch_dlc": False})),
    ]
    worst = 0.0
    for step in range(4):
        order = [3, 1] if step % 2 else [1, 3]
        ctx = LogitsContext(
            expanded_idx_mapping=torch.tensor(order),
            idx_mapping=torch.tensor(order),
            idx_mapping_np=np.array(order),
            expanded_local_pos=torch.zeros(2, dtype=torch.int64),
            input_ids=torch.tensor([seqs[s][-1] for s in order]),
            pos=torch.tensor([len(seqs[s]) - 1 for s in order]),
            seq_lens_upper_bound_np=np.array([len(seqs[s]) for s in order]),
        )
        logits = torch.randn(2, vocab)
        got = proc.apply(logits.clone(), ctx)
        for r, s in enumerate(order):
            want = logits[r] - mu * reference(seqs[s]) if s == 1 else logits[r]
            worst = max(worst, float((got[r] - want).abs().max()))
        for s in order:
            tok = 4 + step + s
            all_ids[s, len(seqs[s])] = tok
            seqs[s].append(tok)
    report["v2_added"] = added
    report["v2_max_error"] = worst
    report["v2_runner"] = proc.v2

    # V1 runner: constructed as build_logitsprocs does, fed a BatchUpdate
    proc1 = DLCLogitsProcessor(
        SimpleNamespace(additional_config=config.additional_config), torch.device("cpu"), False
    )
    out_ids: list[int] = []
    proc1.update_state(
        v1.BatchUpdate(
            batch_size=1, removed=[], added=[(0, SamplingParams(), [2, 5], out_ids)], moved=[]
        )
    )
    logits = torch.randn(1, vocab)
    got = proc1.apply(logits.clone())
    report["v1_error"] = float((got[0] - (logits[0] - mu * reference([2, 5]))).abs().max())
    report["v1_argmax_invariant"] = proc1.is_argmax_invariant()
    inert = DLCLogitsProcessor(SimpleNamespace(additional_config={}), torch.device("cpu"), False)
    report["inert_without_config"] = not inert.active
    try:
        DLCLogitsProcessor.validate_params(SamplingParams(extra_args={"sharpwatch_dlc": "no"}))
        report["validate"] = "accepted"
    except ValueError as exc:
        report["validate"] = str(exc)
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
