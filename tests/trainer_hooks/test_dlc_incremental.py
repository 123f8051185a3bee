"""DLC with an incremental (KV-cached) memory: the HF generate processor and the vLLM cores
(V1 persistent batch, Model Runner V2 slots) against a float64 full-prefix reference on the same
tiny Llama, plus the vLLM configuration and opt-out rules and the memory checkpoint reload."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.trainer_hooks._tiny_llama import full_prefix, tiny_llama
from trainer_hooks import CausalLMMemory, ConfigurationError, DLCLogitsProcessor, DLCMemory
from trainer_hooks._vllm import (
    DLCBatchCore,
    DLCSlotCore,
    MemoryCheckpoint,
    parse_dlc_config,
    request_enabled,
)

V = 40
MU = 0.7


def test_hf_processor_incremental_matches_full_prefix_and_forwards_one_token_per_row() -> None:
    model = tiny_llama()
    inc = DLCLogitsProcessor(CausalLMMemory(model), mu=MU)
    full = DLCLogitsProcessor(CausalLMMemory(model), mu=MU, incremental=False)
    assert inc.incremental
    assert not full.incremental
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (3, 6), generator=g)
    for _ in range(10):
        scores = torch.randn(3, V, generator=g, dtype=torch.float64)
        a = inc(ids, scores.clone())
        b = full(ids, scores.clone())
        ref = scores - MU * torch.stack([full_prefix(model, row.tolist()) for row in ids])
        torch.testing.assert_close(a, ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(b, ref, rtol=0, atol=1e-10)
        ids = torch.cat([ids, torch.randint(0, V, (3, 1), generator=g)], dim=1)
    assert inc.tokens_forwarded == 3 * 6 + 3 * 9
    # a new generate call (a shorter prefix) starts over from its full prefix
    fresh = torch.randint(0, V, (2, 4), generator=g)
    scores = torch.zeros(2, V, dtype=torch.float64)
    out = inc(fresh, scores.clone())
    ref = -MU * torch.stack([full_prefix(model, row.tolist()) for row in fresh])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


def test_hf_processor_restarts_after_the_memory_is_trained() -> None:
    model = tiny_llama().to(torch.float32).train()
    mem = DLCMemory(CausalLMMemory(model), mu=MU, lr=0.5)
    proc = DLCLogitsProcessor(mem)
    ids = torch.tensor([[1, 2, 3, 4]])
    proc(ids, torch.zeros(1, V))
    mem.update(torch.tensor([[1, 2, 3, 4, 5]]), mask=torch.tensor([[0, 0, 0, 1, 1]]))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    out = proc(ids, torch.zeros(1, V))
    model.eval()
    torch.testing.assert_close(out[0], -MU * full_prefix(model, [1, 2, 3, 4, 5]))


def test_hf_processor_rejects_incremental_without_a_cache() -> None:
    class Plain(torch.nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*ids.shape, V)

    with pytest.raises(ConfigurationError, match="incremental=True"):
        DLCLogitsProcessor(CausalLMMemory(Plain()), incremental=True)
    with pytest.raises(ConfigurationError, match="incremental must be"):
        DLCLogitsProcessor(CausalLMMemory(Plain()), incremental=1)  # type: ignore[arg-type]


def _params(enabled: bool | None = None) -> SimpleNamespace:
    return SimpleNamespace(extra_args=None if enabled is None else {"sharpwatch_dlc": enabled})


@pytest.mark.parametrize("incremental", [True, False])
def test_v1_batch_core_matches_reference_through_moves_and_removals(incremental: bool) -> None:
    model = tiny_llama()
    core = DLCBatchCore(model, mu=MU, incremental=incremental)
    assert core.runner.incremental is incremental
    g = torch.Generator().manual_seed(5)
    prompts = {k: torch.randint(0, V, (3 + k,), generator=g).tolist() for k in range(4)}
    outputs: dict[int, list[int]] = {k: [] for k in range(4)}
    swap, one_way = SimpleNamespace(name="SWAP"), SimpleNamespace(name="UNIDIRECTIONAL")
    # rows 0..2 enabled, row 3 opted out
    core.update(
        SimpleNamespace(
            removed=[],
            added=[
                (k, _params(None if k != 3 else False), prompts[k], outputs[k]) for k in range(4)
            ],
            moved=[],
        )
    )
    where = {0: 0, 1: 1, 2: 2, 3: 3}  # request -> row
    for step in range(8):
        if step == 3:
            core.update(SimpleNamespace(removed=[], added=[], moved=[(0, 2, swap)]))
            where[0], where[2] = 2, 0
        if step == 5:  # request 1 finishes, request 3 (opted out) moves into its row
            core.update(SimpleNamespace(removed=[1], added=[], moved=[(3, 1, one_way)]))
            del where[1]
            where[3] = 1
        n_rows = max(where.values()) + 1
        scores = torch.randn(n_rows, V, generator=g, dtype=torch.float64)
        out = core.apply(scores.clone())
        for req, row in where.items():
            if req == 3:
                torch.testing.assert_close(out[row], scores[row], rtol=0, atol=0)
            else:
                ref = scores[row] - MU * full_prefix(model, prompts[req] + outputs[req])
                torch.testing.assert_close(out[row], ref, rtol=0, atol=1e-10)
        for req in where:
            outputs[req].append(int(torch.randint(0, V, (1,), generator=g)))
    if incremental:  # prompts once, then one token per live request per step
        assert core.runner.tokens_forwarded < 3 + 4 + 5 + 8 * 3


class _Ctx(SimpleNamespace):
    """The fields of vLLM's V2 LogitsContext the core reads."""


def test_v2_slot_core_matches_reference_with_reordered_rows_and_reused_slots() -> None:
    model = tiny_llama()
    core = DLCSlotCore(model, mu=MU)
    g = torch.Generator().manual_seed(7)
    max_len = 40
    all_ids = torch.zeros(8, max_len, dtype=torch.int32)
    seqs: dict[int, list[int]] = {}
    for slot, n in ((5, 4), (2, 6), (6, 3)):
        seqs[slot] = torch.randint(0, V, (n,), generator=g).tolist()
        all_ids[slot, :n] = torch.tensor(seqs[slot], dtype=torch.int32)
    assert core.add_request(5, _params())
    assert core.add_request(2, _params(True))
    assert not core.add_request(6, _params(False))
    for step in range(7):
        order = [5, 6, 2] if step % 2 == 0 else [2, 5, 6]  # rows are reordered every step
        if step == 4:  # slot 5 is recycled for a new request
            seqs[5] = torch.randint(0, V, (5,), generator=g).tolist()
            all_ids[5, :5] = torch.tensor(seqs[5], dtype=torch.int32)
            assert core.add_request(5, _params())
        ctx = _Ctx(
            expanded_idx_mapping=torch.tensor(order),
            idx_mapping=torch.tensor(order),
            idx_mapping_np=np.array(order),
            input_ids=torch.tensor([seqs[s][-1] for s in order]),
            seq_lens_upper_bound_np=np.array([len(seqs[s]) for s in order]),
        )
        scores = torch.randn(3, V, generator=g, dtype=torch.float64)
        out = core.apply(scores.clone(), ctx, all_ids)
        for r, s in enumerate(order):
            if s == 6:
                torch.testing.assert_close(out[r], scores[r], rtol=0, atol=0)
            else:
                ref = scores[r] - MU * full_prefix(model, seqs[s])
                torch.testing.assert_close(out[r], ref, rtol=0, atol=1e-10)
        for s in order:  # sampled tokens are committed before the next step
            tok = int(torch.randint(0, V, (1,), generator=g))
            all_ids[s, len(seqs[s])] = tok
            seqs[s].append(tok)


def test_v2_slot_core_refuses_speculative_decoding() -> None:
    core = DLCSlotCore(tiny_llama(), mu=MU)
    core.add_request(0, _params())
    ctx = _Ctx(
        expanded_idx_mapping=torch.tensor([0, 0]),
        idx_mapping=torch.tensor([0]),
        idx_mapping_np=np.array([0]),
        input_ids=torch.tensor([1, 2]),
        seq_lens_upper_bound_np=np.array([3]),
    )
    with pytest.raises(ConfigurationError, match="speculative decoding"):
        core.apply(torch.zeros(2, V), ctx, torch.zeros(1, 8, dtype=torch.int32))


def test_config_and_opt_out_validation(tmp_path: Path) -> None:
    assert parse_dlc_config({}) is None
    assert parse_dlc_config(None) is None
    (tmp_path / "config.json").write_text("{}")
    cfg = parse_dlc_config({"sharpwatch_dlc": {"memory_path": str(tmp_path), "mu": 0.25}})
    assert cfg is not None
    assert (cfg.memory_path, cfg.mu, cfg.incremental) == (str(tmp_path), 0.25, True)
    cfg = parse_dlc_config({"sharpwatch_dlc": {"memory_path": str(tmp_path), "incremental": False}})
    assert cfg is not None
    assert (cfg.mu, cfg.incremental) == (0.5, False)
    bad = [
        ({"sharpwatch_dlc": "x"}, "must be a dict"),
        ({"sharpwatch_dlc": {"memory_path": str(tmp_path), "nu": 1}}, "unknown keys"),
        ({"sharpwatch_dlc": {"mu": 0.5}}, "memory_path"),
        ({"sharpwatch_dlc": {"memory_path": str(tmp_path / "none")}}, "no config.json"),
        ({"sharpwatch_dlc": {"memory_path": str(tmp_path), "mu": -1}}, r"\[\"mu\"\]"),
        ({"sharpwatch_dlc": {"memory_path": str(tmp_path), "mu": True}}, r"\[\"mu\"\]"),
        ({"sharpwatch_dlc": {"memory_path": str(tmp_path), "incremental": 1}}, "incremental"),
    ]
    for config, match in bad:
        with pytest.raises(ConfigurationError, match=match):
            parse_dlc_config(config)
    assert request_enabled(_params())
    assert request_enabled(_params(True))
    assert not request_enabled(_params(False))
    with pytest.raises(ConfigurationError, match="true or false"):
        request_enabled(SimpleNamespace(extra_args={"sharpwatch_dlc": "no"}))


def test_memory_checkpoint_reloads_when_the_trainer_saves(tmp_path: Path) -> None:
    model = tiny_llama().to(torch.float32)
    model.save_pretrained(tmp_path)
    ckpt = MemoryCheckpoint(str(tmp_path))
    assert not ckpt.changed()
    ids = torch.tensor([[1, 2, 3]])
    before = full_prefix(ckpt.model, [1, 2, 3])
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    model.save_pretrained(tmp_path)
    for f in tmp_path.iterdir():  # coarse file systems: make the rewrite visible
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert ckpt.changed()
    ckpt.load()
    assert not ckpt.changed()
    after = full_prefix(ckpt.model, [1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(after, model(ids).logits[0, -1])
    assert not torch.allclose(before, after)


def test_v1_batch_core_refuses_async_placeholders() -> None:
    core = DLCBatchCore(tiny_llama(), mu=MU)
    output = [7]
    core.update(SimpleNamespace(removed=[], added=[(0, _params(), [1, 2], output)], moved=[]))
    core.apply(torch.zeros(1, V, dtype=torch.float64))
    output.append(-1)  # vLLM's async scheduling: the sampled token is not on the host yet
    with pytest.raises(ConfigurationError, match="async_scheduling"):
        core.apply(torch.zeros(1, V, dtype=torch.float64))
