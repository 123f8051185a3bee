"""A tiny float64 Llama built from a config (no hub), and its full-prefix next-token logits: the
reference the incremental (KV-cached) memory is checked against."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int = 0, vocab: int = 40) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return transformers.LlamaForCausalLM(cfg).to(torch.float64).eval()


def full_prefix(model: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    """Next-token logits after ``seq``, from a forward over the whole prefix."""
    with torch.no_grad():
        return model(torch.tensor([seq])).logits[0, -1]
