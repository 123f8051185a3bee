"""IncrementalCausalLM against the full-prefix forward of the same tiny Llama (float64)."""

from __future__ import annotations

import pytest
import torch

from tests.trainer_hooks._tiny_llama import full_prefix, tiny_llama
from trainer_hooks._errors import ShapeError
from trainer_hooks._incremental import IncrementalCausalLM


def test_matches_full_prefix_through_adds_removals_and_chunks() -> None:
    model = tiny_llama()
    inc = IncrementalCausalLM(model)
    g = torch.Generator().manual_seed(1)
    seqs: dict[str, list[int]] = {
        "a": torch.randint(0, 40, (5,), generator=g).tolist(),
        "b": torch.randint(0, 40, (9,), generator=g).tolist(),
        "c": torch.randint(0, 40, (2,), generator=g).tolist(),
    }
    seen = dict.fromkeys(seqs, 0)
    for step in range(12):
        if step == 4:  # a request leaves, another joins mid-way
            inc.forget("b")
            del seqs["b"], seen["b"]
            seqs["d"] = torch.randint(0, 40, (7,), generator=g).tolist()
            seen["d"] = 0
        if step == 7:  # a request gains three tokens at once (a resumed request)
            seqs["a"] += torch.randint(0, 40, (2,), generator=g).tolist()
        keys = sorted(seqs)
        news = [seqs[k][seen[k] :] for k in keys]
        out = inc.step(keys, news)
        for r, k in enumerate(keys):
            ref = full_prefix(model, seqs[k])
            torch.testing.assert_close(out[r], ref, rtol=0, atol=1e-10)
            seen[k] = len(seqs[k])
            assert inc.length(k) == len(seqs[k])
        for k in keys:  # every sequence decodes one sampled token
            seqs[k].append(int(torch.randint(0, 40, (1,), generator=g)))


def test_decoding_costs_one_token_per_sequence_per_step() -> None:
    inc = IncrementalCausalLM(tiny_llama())
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]
    inc.step([0, 1], prompts)
    assert inc.tokens_forwarded == 10
    for t in range(20):
        inc.step([0, 1], [[t % 40], [(t + 3) % 40]])
    assert inc.tokens_forwarded == 10 + 2 * 20


def test_no_new_tokens_returns_previous_logits_and_unknown_key_fails() -> None:
    model = tiny_llama()
    inc = IncrementalCausalLM(model)
    first = inc.step(["x"], [[3, 4, 5]])
    again = inc.step(["x"], [[]])
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    with pytest.raises(ShapeError, match="new and has no tokens"):
        inc.step(["y"], [[]])
    with pytest.raises(ShapeError, match="2 keys but 1"):
        inc.step(["x", "y"], [[1]])
    inc.reset()
    assert len(inc) == 0
    assert "x" not in inc
