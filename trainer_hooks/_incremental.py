"""Incremental next-token logits of a causal LM memory (science.md §3 DLC, per decoding step).

DLC subtracts μ·f_φ(prefix) from the policy's logits at every decoding step. Re-running the memory
LM over the whole prefix each step costs O(T) forwarded tokens per step, O(T²) per sequence.
:class:`IncrementalCausalLM` keeps a KV cache per sequence (keyed by the caller) and runs only the
tokens a sequence gained since the last call: one token per decoding step.

The model is a Hugging Face style causal LM: ``model(input_ids, attention_mask=, position_ids=,
past_key_values=, use_cache=True)`` returning ``.logits`` ``[B, L, V]`` and ``.past_key_values``
(a ``DynamicCache``: ``.layers[i].keys/.values``, or the older ``key_cache``/``value_cache``
lists, or a tuple of ``(key, value)`` pairs), with full attention (no sliding-window layers).
Sequences that gained exactly one token are run together as one batch: their caches are stacked,
left-padded to the longest, with an attention mask hiding the padding and explicit position ids;
while the same sequences keep decoding in the same order, the batched cache is reused as it is.
Sequences that gained several tokens (a prompt, a resumed request) run one by one.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer_hooks._errors import ShapeError

__all__ = ["IncrementalCausalLM"]

_Layers = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Row:
    length: int
    layers: _Layers  # per layer (key, value), each [1, H, length, D]
    logits: torch.Tensor  # [V], next-token logits after `length` tokens


def _cache_layers(cache: Any) -> _Layers:
    """The (key, value) tensors of every layer of a returned cache."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    if isinstance(cache, tuple | list):
        return [(kv[0], kv[1]) for kv in cache]
    raise TypeError(f"unsupported KV cache type {type(cache).__name__}")


def _make_cache(template: Any, layers: _Layers) -> Any:
    """A cache of ``template``'s type holding ``layers``."""
    if isinstance(template, tuple | list):
        return tuple(layers)
    cache = type(template)()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


class IncrementalCausalLM:
    """Next-token logits for many growing token sequences, one KV cache per sequence.

    :meth:`step` takes, per key, the tokens the sequence gained since the previous call (all of
    them on the first call) and returns ``[R, V]`` logits for the next token of each. A key with
    no new tokens returns its previous logits. :meth:`forget` drops a key, :meth:`reset` all.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self._rows: dict[Hashable, _Row] = {}
        self._template: Any = None
        # The batched cache of the last decode step: (keys in order, cache, attention mask).
        self._batch: tuple[tuple[Hashable, ...], Any, torch.Tensor] | None = None
        self.tokens_forwarded = 0  # tokens run through the model so far (for benchmarks/tests)
        # transformers >= 5.2x names the cache argument `cache`; earlier versions `past_key_values`.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def length(self, key: Hashable) -> int:
        """Tokens of ``key``'s sequence already consumed (0 for an unknown key)."""
        row = self._rows.get(key)
        return 0 if row is None else row.length

    def forget(self, key: Hashable) -> None:
        if self._rows.pop(key, None) is not None and self._batch and key in self._batch[0]:
            self._batch = None

    def reset(self) -> None:
        self._rows.clear()
        self._batch = None

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def _forward(self, ids: torch.Tensor, past: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        self.tokens_forwarded += int(ids.numel())
        if past is not None:
            kwargs[self._cache_arg] = past
        with torch.no_grad():
            out = self.model(ids, use_cache=True, **kwargs)
        cache = getattr(out, "past_key_values", None)
        if cache is None:
            cache = out.cache
        return out.logits[:, -1, :], cache

    def _run_alone(self, key: Hashable, tokens: Sequence[int]) -> None:
        row = self._rows.get(key)
        ids = torch.tensor([list(tokens)], dtype=torch.int64, device=self._device())
        past = None if row is None else _make_cache(self._template, row.layers)
        logits, cache = self._forward(ids, past)
        if self._template is None:
            self._template = cache
        length = (0 if row is None else row.length) + len(tokens)
        self._rows[key] = _Row(length, _cache_layers(cache), logits[0])
        if self._batch is not None and key in self._batch[0]:
            self._batch = None

    def _run_batch(self, keys: list[Hashable], tokens: list[int]) -> None:
        device = self._device()
        lengths = [self._rows[k].length for k in keys]
        batch = self._batch
        if batch is not None and batch[0] == tuple(keys):
            past, mask = batch[1], batch[2]
        else:
            longest = max(lengths)
            n_layers = len(self._rows[keys[0]].layers)
            stacked: _Layers = []
            for layer in range(n_layers):
                k0, v0 = self._rows[keys[0]].layers[layer]
                ks = k0.new_zeros((len(keys), k0.shape[1], longest, k0.shape[3]))
                vs = v0.new_zeros((len(keys), v0.shape[1], longest, v0.shape[3]))
                for r, key in enumerate(keys):
                    k, v = self._rows[key].layers[layer]
                    ks[r, :, longest - lengths[r] :] = k[0]
                    vs[r, :, longest - lengths[r] :] = v[0]
                stacked.append((ks, vs))
            past = _make_cache(self._template, stacked)
            mask = torch.zeros((len(keys), longest), dtype=torch.int64, device=device)
            for r, n in enumerate(lengths):
                mask[r, longest - n :] = 1
        mask = torch.cat([mask, mask.new_ones((len(keys), 1))], dim=1)
        ids = torch.tensor(tokens, dtype=torch.int64, device=device)[:, None]
        positions = torch.tensor(lengths, dtype=torch.int64, device=device)[:, None]
        logits, cache = self._forward(ids, past, attention_mask=mask, position_ids=positions)
        layers = _cache_layers(cache)
        width = mask.shape[1]
        for r, key in enumerate(keys):
            n = lengths[r] + 1
            rows_layers = [
                (k[r : r + 1, :, width - n :], v[r : r + 1, :, width - n :]) for k, v in layers
            ]
            self._rows[key] = _Row(n, rows_layers, logits[r])
        self._batch = (tuple(keys), cache, mask)

    def step(self, keys: Sequence[Hashable], new_tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Consume each key's new tokens; next-token logits ``[len(keys), V]``."""
        if len(keys) != len(new_tokens):
            raise ShapeError(f"{len(keys)} keys but {len(new_tokens)} token lists")
        decode_keys: list[Hashable] = []
        decode_tokens: list[int] = []
        for key, tokens in zip(keys, new_tokens, strict=True):
            if len(tokens) == 0:
                if key not in self._rows:
                    raise ShapeError(f"sequence {key!r} is new and has no tokens")
            elif len(tokens) == 1 and key in self._rows:
                decode_keys.append(key)
                decode_tokens.append(int(tokens[0]))
            else:
                self._run_alone(key, tokens)
        if decode_keys:
            self._run_batch(decode_keys, decode_tokens)
        return torch.stack([self._rows[k].logits for k in keys])
