"""DLC (science.md §3): memory training, calibrated logits, HF and vLLM processors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainer_hooks import (
    CausalLMMemory,
    ConfigurationError,
    DLCBatchCore,
    DLCLogitsProcessor,
    DLCMemory,
    LinearMemory,
    calibrated_logits,
)


def test_calibrated_logits_formula() -> None:
    f_theta = torch.tensor([[1.0, 2.0, 3.0]])
    f_phi = torch.tensor([[0.0, 2.0, -2.0]])
    assert torch.equal(calibrated_logits(f_theta, f_phi, 0.5), torch.tensor([[1.0, 1.0, 4.0]]))
    assert calibrated_logits(f_theta, f_phi, 0.0) is f_theta
    with pytest.raises(ConfigurationError, match="mu"):
        calibrated_logits(f_theta, f_phi, -1.0)


def test_memory_tracks_sampling_frequency() -> None:
    torch.manual_seed(0)
    mem = DLCMemory(LinearMemory(2, 3), lr=0.5)
    q = torch.tensor([[1.0, 0.0]]).expand(64, 2)
    labels = torch.tensor([0] * 40 + [1] * 16 + [2] * 8)
    for _ in range(400):
        loss = mem.update(q, labels)
    freq = torch.softmax(mem.memory_logits(q[:1]), -1)[0]
    assert torch.allclose(freq, torch.tensor([40 / 64, 16 / 64, 8 / 64]), atol=0.02)
    assert loss.dim() == 0
    # calibrated sampling boosts the rarely sampled output relative to the frequent one
    cal = mem.calibrate(torch.zeros(1, 3), q[:1])
    assert cal[0, 2] > cal[0, 0]


class _TinyLM(nn.Module):
    def __init__(self, vocab: int = 7) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
        # causal by construction: the logits at t depend on token t only
        return SimpleNamespace(logits=self.emb(input_ids))


def test_hf_logits_processor_subtracts_memory_on_prefix() -> None:
    torch.manual_seed(0)
    lm = CausalLMMemory(_TinyLM())
    mem = DLCMemory(lm, mu=0.5, lr=0.1)
    ids = torch.tensor([[1, 2, 3, 4], [3, 3, 3, 3]])
    mem.update(ids, mask=torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]))
    proc = DLCLogitsProcessor(mem)
    scores = torch.randn(2, 7)
    out = proc(ids, scores.clone())
    expect = scores - 0.5 * lm.model.emb.weight[ids[:, -1]].detach()
    assert torch.allclose(out, expect)


def test_vllm_core_tracks_batch_updates() -> None:
    lm = CausalLMMemory(_TinyLM())
    core = DLCBatchCore(lm, mu=1.0)
    out0: list[int] = [5]
    params = SimpleNamespace(extra_args=None)
    off = SimpleNamespace(extra_args={"sharpwatch_dlc": False})
    swap = SimpleNamespace(name="SWAP")
    core.update(
        SimpleNamespace(removed=[], added=[(0, params, [1, 2], out0), (1, off, [3], [])], moved=[])
    )
    logits = torch.zeros(2, 7)
    res = core.apply(logits.clone())
    assert torch.allclose(res[0], -lm.model.emb.weight[5].detach())
    assert torch.equal(res[1], torch.zeros(7))  # opted out
    out0.append(6)  # vLLM appends to the live output list
    core.update(SimpleNamespace(removed=[], added=[], moved=[(0, 1, swap)]))
    res = core.apply(torch.zeros(2, 7))
    assert torch.equal(res[0], torch.zeros(7))
    assert torch.allclose(res[1], -lm.model.emb.weight[6].detach())
    core.update(SimpleNamespace(removed=[1], added=[], moved=[]))
    assert torch.equal(core.apply(torch.zeros(2, 7)), torch.zeros(2, 7))


def test_memory_validation() -> None:
    with pytest.raises(ConfigurationError, match="model"):
        DLCMemory(nn.Linear(2, 2))
    with pytest.raises(ConfigurationError, match="lr"):
        DLCMemory(LinearMemory(2, 2), lr=0.0)
    with pytest.raises(ConfigurationError, match="num_outputs"):
        LinearMemory(2, 1)
