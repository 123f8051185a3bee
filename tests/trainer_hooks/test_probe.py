"""Held-out probe and pre-RL triage (science.md §1 two-stage diagnostic, §2)."""

from __future__ import annotations

import pytest
import torch

from trainer_hooks import (
    CheckpointProbe,
    ProbeInputs,
    measure_checkpoint,
    p_star,
    probe_metrics,
    triage_checkpoints,
)


def test_probe_metrics() -> None:
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    ent = torch.tensor([[[1.0, 3.0], [2.0, 0.0]], [[4.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[[1, 1], [1, 0]], [[1, 0], [0, 0]]])
    s, e = probe_metrics(ProbeInputs(r, token_entropy=ent, mask=mask))
    assert s.item() == 0.25
    assert e is not None
    assert e.item() == pytest.approx((1 + 3 + 2 + 4) / 4)


def test_measure_checkpoint() -> None:
    logits = torch.zeros(1, 2, 3, 4)  # uniform -> entropy log 4
    cp = measure_checkpoint("ckpt", torch.tensor([[1.0, 0.0]]), logits=logits)
    assert cp.pass_at_1 == 0.5
    assert cp.entropy == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_triage_ranks_by_entropy_and_flags() -> None:
    cands = [
        CheckpointProbe("sft-deep", pass_at_1=0.40, entropy=0.10),
        CheckpointProbe("sft-mid", pass_at_1=0.30, entropy=0.50),
        CheckpointProbe("sft-shallow", pass_at_1=0.05, entropy=0.60),
    ]
    out = triage_checkpoints(cands, group_size=8)
    assert [e.name for e in out] == ["sft-shallow", "sft-mid", "sft-deep"]
    assert [e.rank for e in out] == [1, 2, 3]
    assert out[0].flags == ("pass_at_1_below_p_star",)  # 0.05 < p*(8) = 0.083
    assert out[1].flags == ()
    assert out[2].flags == ("low_entropy",)  # 0.10 < 0.8 x median 0.50
    assert out[0].p_star == p_star(8)
    assert out[2].entropy_floor == pytest.approx(0.4)
