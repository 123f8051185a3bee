"""Real-shaped inputs for the numerics tests (issue 13): what an RLVR step on a real LLM hands
the Monitor.

Logits come from real architectures built from their configs (no hub): Llama 3 (vocabulary
128 256) and Qwen2 (151 936, and the padded 152 064 of Qwen2.5 checkpoints, whose padding
columns a logits processor sets to -inf), with tiny hidden sizes and random init, rescaled to
the spread and constant offset real checkpoints show (std 1–10, offsets ±100) and with peaked
positions (entropy near the 0.10-nat floor). Batches are left- or right-padded, and the padded
positions hold garbage (NaN, ±inf, 1e30, a row of -inf; random token ids), as trainers leave
them. Rewards are graded (0, 0.25, 0.5, 1), some responses have no answer key (None), some
responses repeat within their group, and each response carries its sequence log-probability
under the sampled distribution (computed here in float64 from the clean logits).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["ARCHS", "RealBatch", "real_batch"]

#: name -> (architecture, vocabulary size, real (unpadded) vocabulary size)
ARCHS: dict[str, tuple[str, int, int]] = {
    "llama3-128k": ("llama", 128_256, 128_256),
    "qwen2-152k": ("qwen2", 151_936, 151_936),
    "qwen2.5-padded": ("qwen2", 152_064, 151_665),
}

B, G, T = 2, 4, 8
GARBAGE = (float("nan"), float("inf"), float("-inf"), 1e30, -1e30)


@dataclass(frozen=True)
class RealBatch:
    """One step's tensors; ``logits`` etc. hold garbage wherever ``mask`` is False."""

    name: str
    logits: torch.Tensor  # [B, G, T, V], dtype as asked; -inf at padded vocabulary columns
    mask: torch.Tensor  # [B, G, T] bool
    token_ids: torch.Tensor  # [B, G, T] int64, random ids at masked positions
    rewards: torch.Tensor  # [B, G] graded
    oracle_rewards: torch.Tensor  # [B, G] binary
    advantages: torch.Tensor  # [B, G] GRPO, fp32
    old_logprobs: torch.Tensor  # [B, G] float64 sequence log-probs at ``temperature``
    answer_keys: list[str | None]  # [B·G], None = no extractable answer
    temperature: float


@functools.lru_cache(maxsize=4)
def _model_logits(arch: str, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(raw logits [B·G, T, V] float32, input ids [B·G, T])`` of a tiny random model."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kw = {
        "vocab_size": vocab,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
    }
    torch.manual_seed(seed)
    model = (
        LlamaForCausalLM(LlamaConfig(**kw))
        if arch == "llama"
        else Qwen2ForCausalLM(Qwen2Config(**kw))
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B * G, T), generator=gen)
    # responses 1 and 2 of each group are the same sequence (a repeated sample)
    ids = ids.reshape(B, G, T)
    ids[:, 2] = ids[:, 1]
    ids = ids.reshape(B * G, T)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    return logits, ids


def real_batch(
    name: str,
    *,
    padding: str = "right",
    dtype: torch.dtype = torch.float32,
    offset: float = 30.0,
    temperature: float = 0.7,
    seed: int = 0,
) -> RealBatch:
    """A real-shaped step for architecture ``name`` (a key of :data:`ARCHS`); ``logits`` in
    ``dtype`` (the float64 reference reads the same rounded values at the unmasked positions)."""
    base = _base(name, padding, offset, temperature, seed)
    logits = base.logits.to(dtype)
    flat = logits.reshape(-1, logits.shape[-1])
    for k, row in enumerate(torch.nonzero(~base.mask.reshape(-1)).reshape(-1).tolist()):
        flat[row] = GARBAGE[k % len(GARBAGE)]
    return RealBatch(
        name=base.name,
        logits=logits,
        mask=base.mask,
        token_ids=base.token_ids,
        rewards=base.rewards,
        oracle_rewards=base.oracle_rewards,
        advantages=base.advantages,
        old_logprobs=base.old_logprobs,
        answer_keys=base.answer_keys,
        temperature=base.temperature,
    )


@functools.lru_cache(maxsize=8)
def _base(name: str, padding: str, offset: float, temperature: float, seed: int) -> RealBatch:
    arch, vocab, real_vocab = ARCHS[name]
    raw, ids = _model_logits(arch, vocab, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    # realistic spread per response (std 1..10) and constant offset; peaked positions (the
    # sampled token's logit raised by 3..15) reach entropies from ~1e-9 to ~0.1 to log V
    std = torch.tensor([1.0, 3.0, 3.0, 10.0] * B).reshape(B * G, 1, 1)
    x = (raw - raw.mean()) / raw.std() * std + offset
    peak = torch.rand(B * G, T, generator=gen) < 0.5
    spike = torch.where(peak, 3.0 + 12.0 * torch.rand(B * G, T, generator=gen), 0.0)
    x.scatter_add_(-1, ids.unsqueeze(-1), spike.unsqueeze(-1))
    if real_vocab < vocab:
        x[..., real_vocab:] = float("-inf")
    x = x.reshape(B, G, T, vocab)
    token_ids = ids.reshape(B, G, T).clone()

    # response lengths 3..T; response 2 repeats response 1, so it has the same length
    lengths = torch.randint(3, T + 1, (B, G), generator=gen)
    lengths[:, 2] = lengths[:, 1]
    lengths[0, 3] = 0  # a fully masked response (e.g. dropped by dynamic sampling)
    pos = torch.arange(T)
    if padding == "right":
        mask = pos < lengths.unsqueeze(-1)
    elif padding == "left":  # the response's tokens sit at the end of the row
        mask = pos >= (T - lengths).unsqueeze(-1)
        for b in range(B):
            for g in range(G):
                n = int(lengths[b, g])
                token_ids[b, g] = torch.roll(token_ids[b, g], T - n)
                x[b, g] = torch.roll(x[b, g], T - n, dims=0)
    else:
        raise ValueError(padding)
    # sequence log-probs under softmax(x / temperature) over the response tokens
    lp = torch.log_softmax(x.double() / temperature, dim=-1)
    tok_lp = lp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    old_logprobs = torch.where(mask, tok_lp, 0.0).sum(-1)
    old_logprobs[:, 2] = old_logprobs[:, 1]  # same sequence: same log-prob
    token_ids = torch.where(mask, token_ids, torch.randint(0, vocab, (B, G, T), generator=gen))

    rewards = torch.tensor([[1.0, 0.5, 0.5, 0.0], [0.25, 0.0, 0.0, 1.0]])
    oracle = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    mean = rewards.mean(-1, keepdim=True)
    advantages = ((rewards - mean) / (rewards.std(-1, keepdim=True) + 1e-6)).float()
    keys: list[str | None] = ["42", "7", "7", None, None, "3", "3", "5"]
    return RealBatch(
        name=name,
        logits=x,
        mask=mask,
        token_ids=token_ids,
        rewards=rewards,
        oracle_rewards=oracle,
        advantages=advantages,
        old_logprobs=old_logprobs,
        answer_keys=keys,
        temperature=temperature,
    )
