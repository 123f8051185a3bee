"""Tiny Llama policies and memories built from a config, with a word-level tokenizer built in
code (no downloads), saved with ``save_pretrained`` so that vLLM and Hugging Face load the same
weights. Used by examples/vllm_rlvr.py, benchmarks/bench_vllm_dlc.py and tests/vllm/.

vLLM's CPU attention needs a head dimension it supports (64 works, 16 does not), so the policy
keeps ``hidden_size / heads == 64``; the memory runs in Hugging Face code and may be any size.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
PAD, UNK, BOS, EOS = 0, 1, 2, 3


def words(n: int) -> list[str]:
    """The vocabulary: the specials, then ``n`` words ``w0 .. w{n-1}``."""
    return [*SPECIALS, *(f"w{i}" for i in range(n))]


def save_tokenizer(directory: str | Path, vocab: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    fast.save_pretrained(str(directory))


def build_llama(
    directory: str | Path,
    vocab_size: int,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    logit_scale: float = 1.0,
) -> torch.nn.Module:
    """A randomly initialised Llama saved (float32) with a tokenizer at ``directory``.

    ``logit_scale`` multiplies the output head so the next-token distribution is peaked enough
    for sampling tests to tell distributions apart.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=512,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.float32)
    if logit_scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(logit_scale)
    Path(directory).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    save_tokenizer(directory, words(vocab_size - len(SPECIALS)))
    return model.eval()
