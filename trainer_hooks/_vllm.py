"""DLC inside vLLM: the pure-torch part of the logits processor (science.md §3 DLC).

vLLM calls a logits processor once per decoding step with the ``[rows, V]`` logits of the batch;
DLC subtracts μ·f_φ(prefix) from the rows of requests that did not opt out. This module holds
what does not need vLLM (so the main test suite covers it):

- :class:`DLCBatchCore` follows the V1 model runner's persistent batch (``update_state``'s
  ``BatchUpdate``: removed, then added, then moved; added entries carry ``(index,
  sampling_params, prompt_token_ids, output_token_ids)`` with the output list a live reference).
- :class:`DLCSlotCore` follows Model Runner V2 (``add_request(slot, params)``; ``apply(logits,
  ctx)`` with ``ctx.idx_mapping_np`` mapping rows to slots, ``ctx.seq_lens_upper_bound_np``,
  ``ctx.input_ids``, and the request state's ``all_token_ids`` buffer).
- :func:`parse_dlc_config` reads ``additional_config["sharpwatch_dlc"]``; :class:`MemoryCheckpoint`
  loads the memory LM from ``memory_path`` and reloads it when the files change (the trainer
  saves the memory after each update).

Both cores run the memory through :class:`~trainer_hooks._incremental.IncrementalCausalLM` (one
token per request per step) when the memory model takes a KV cache (Hugging Face causal LMs),
and re-run the full prefix otherwise. ``trainer_hooks.integrations.vllm.DLCLogitsProcessor`` is
the vLLM class built on them. Requests opt out with
``SamplingParams(extra_args={"sharpwatch_dlc": False})``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer_hooks._dlc import (
    DEFAULT_MU,
    CausalLMMemory,
    DLCMemory,
    MemoryModule,
    _causal_lm,
    calibrated_logits,
)
from trainer_hooks._errors import ConfigurationError
from trainer_hooks._incremental import IncrementalCausalLM

log = logging.getLogger("trainer_hooks.vllm")

__all__ = [
    "CONFIG_KEY",
    "DLCBatchCore",
    "DLCSettings",
    "DLCSlotCore",
    "MemoryCheckpoint",
    "parse_dlc_config",
    "request_enabled",
]

CONFIG_KEY = "sharpwatch_dlc"
_keys = count()


@dataclass(frozen=True)
class DLCSettings:
    """``additional_config["sharpwatch_dlc"]``: where the memory LM lies, μ, and whether the
    memory keeps a KV cache per request (``incremental``, default true; false re-runs the full
    prefix every step, for comparison)."""

    memory_path: str
    mu: float = DEFAULT_MU
    incremental: bool = True


def parse_dlc_config(additional_config: Any) -> DLCSettings | None:
    """The DLC settings in vLLM's ``additional_config``, or None when it has none.

    Raises :class:`ConfigurationError` naming the field when the settings are invalid.
    """
    if not isinstance(additional_config, Mapping) or CONFIG_KEY not in additional_config:
        return None
    raw = additional_config[CONFIG_KEY]
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f'additional_config["{CONFIG_KEY}"] must be a dict with memory_path and mu, '
            f"got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - {"memory_path", "mu", "incremental"})
    if unknown:
        raise ConfigurationError(
            f'additional_config["{CONFIG_KEY}"] has unknown keys {unknown}; '
            "allowed: memory_path, mu, incremental"
        )
    path = raw.get("memory_path")
    if not isinstance(path, str) or not path:
        raise ConfigurationError(
            f'additional_config["{CONFIG_KEY}"]["memory_path"] must be the directory of a '
            f"saved causal LM (save_pretrained), got {path!r}"
        )
    if not (Path(path) / "config.json").is_file():
        raise ConfigurationError(
            f'additional_config["{CONFIG_KEY}"]["memory_path"]: {path!r} holds no config.json; '
            "save the memory LM there with save_pretrained first"
        )
    mu = raw.get("mu", DEFAULT_MU)
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu) or mu < 0:
        raise ConfigurationError(
            f'additional_config["{CONFIG_KEY}"]["mu"] must be a finite number >= 0, got {mu!r}'
        )
    incremental = raw.get("incremental", True)
    if not isinstance(incremental, bool):
        raise ConfigurationError(
            f'additional_config["{CONFIG_KEY}"]["incremental"] must be true or false, '
            f"got {incremental!r}"
        )
    return DLCSettings(memory_path=path, mu=float(mu), incremental=incremental)


def request_enabled(sampling_params: Any) -> bool:
    """False when the request opted out with ``extra_args={"sharpwatch_dlc": False}``.

    Raises :class:`ConfigurationError` (a ``ValueError``, which vLLM turns into a rejected
    request) when the value is not a bool.
    """
    extra = getattr(sampling_params, "extra_args", None) or {}
    value = extra.get(CONFIG_KEY, True)
    if not isinstance(value, bool):
        raise ConfigurationError(
            f'SamplingParams.extra_args["{CONFIG_KEY}"] must be true or false, got {value!r}'
        )
    return value


def _weights_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    return [path / "config.json", *files]


class MemoryCheckpoint:
    """The memory LM saved at ``path``, loaded on ``device`` in float32; :meth:`changed` tells
    when the files were rewritten (the trainer saved an updated memory) so it can be reloaded."""

    def __init__(self, path: str, device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        self._stamp: tuple[int, ...] = ()
        self.model: nn.Module = self.load()

    def _current_stamp(self) -> tuple[int, ...]:
        try:
            return tuple(os.stat(f).st_mtime_ns for f in _weights_files(self.path))
        except OSError:  # a file is being replaced right now: keep the loaded weights
            return self._stamp

    def load(self) -> nn.Module:
        from transformers import AutoModelForCausalLM  # the memory is a Hugging Face LM

        self._stamp = self._current_stamp()
        model: nn.Module = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=torch.float32)
        self.model = model.to(self.device).eval()
        return self.model

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp


def _raw_model(memory: DLCMemory | MemoryModule | nn.Module) -> nn.Module:
    model: Any = memory.model if isinstance(memory, DLCMemory) else memory
    if isinstance(model, CausalLMMemory):
        model = model.model
    if not isinstance(model, nn.Module):
        raise ConfigurationError("memory must be a DLCMemory, a CausalLMMemory or a causal LM")
    return model


class _MemoryRunner:
    """Next-token memory logits for keyed growing sequences: incremental or full-prefix."""

    def __init__(
        self,
        memory: DLCMemory | MemoryModule | nn.Module,
        *,
        incremental: bool | None,
        pad_id: int,
    ) -> None:
        self.memory = memory
        self.model = _raw_model(memory)
        can = _causal_lm(memory) is not None
        if incremental and not can:
            raise ConfigurationError(
                "incremental=True needs a memory model whose forward takes use_cache and a "
                "KV cache (a Hugging Face causal LM)"
            )
        self.incremental = can if incremental is None else incremental
        self.pad_id = pad_id
        self._inc = IncrementalCausalLM(self.model)
        self._full: dict[Hashable, list[int]] = {}
        self._version = getattr(memory, "version", 0)

    @property
    def tokens_forwarded(self) -> int:
        return self._inc.tokens_forwarded

    def length(self, key: Hashable) -> int:
        if self.incremental:
            return self._inc.length(key)
        return len(self._full.get(key, ()))

    def forget(self, key: Hashable) -> None:
        self._inc.forget(key)
        self._full.pop(key, None)

    def reset(self) -> None:
        self._inc.reset()
        self._full.clear()

    def set_model(self, model: nn.Module) -> None:
        self.model = model
        self._inc = IncrementalCausalLM(model)
        self._full.clear()

    def step(self, keys: Sequence[Hashable], new_tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        version = getattr(self.memory, "version", 0)
        if version != self._version:  # the memory was trained since: its caches are stale
            self._version = version
            self.reset()
            raise _StaleMemoryError
        if self.incremental:
            return self._inc.step(keys, new_tokens)
        seqs = []
        for key, tokens in zip(keys, new_tokens, strict=True):
            seq = self._full.setdefault(key, [])
            seq.extend(int(t) for t in tokens)
            seqs.append(seq)
        width = max(len(s) for s in seqs)
        dev = next(iter(self.model.parameters())).device
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.int64)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64, device=dev)
        self._inc.tokens_forwarded += int(ids.numel())
        with torch.no_grad():
            out: Any = self.model(ids.to(dev))
        full = out if isinstance(out, torch.Tensor) else out.logits
        return full[torch.arange(len(seqs), device=dev), lengths - 1]


class _StaleMemoryError(Exception):
    """The memory changed under the cached state; the caller replays the full sequences."""


def _tail(prompt: Sequence[int], output: Sequence[int], start: int) -> list[int]:
    """(prompt + output)[start:] without building the concatenation."""
    n = len(prompt)
    if start >= n:
        return list(output[start - n :])
    return [*prompt[start:], *output]


class _DLCCore:
    """What both model runners' cores hold: μ and the memory runner.

    ``memory`` is a :class:`DLCMemory`, a :class:`CausalLMMemory` or a causal LM module;
    ``incremental`` (default: when the model takes a KV cache) keeps one cache per request.
    """

    def __init__(
        self,
        memory: DLCMemory | MemoryModule | nn.Module,
        mu: float | None = None,
        pad_id: int = 0,
        *,
        incremental: bool | None = None,
    ) -> None:
        default_mu = memory.mu if isinstance(memory, DLCMemory) else DEFAULT_MU
        self.mu = default_mu if mu is None else float(mu)
        self.runner = _MemoryRunner(memory, incremental=incremental, pad_id=pad_id)
        self._track_no_requests()

    def _track_no_requests(self) -> None:
        """Start the core's request bookkeeping empty (each runner keys requests its own way)."""
        raise NotImplementedError


class DLCBatchCore(_DLCCore):
    """DLC for vLLM's V1 model runner: per-row request tracking + memory-logit subtraction
    (arguments: :class:`_DLCCore`)."""

    rows: dict[int, tuple[int, Sequence[int], Sequence[int]]]  # row -> (key, prompt, output)

    def _track_no_requests(self) -> None:
        self.rows = {}

    def _drop(self, index: int) -> None:
        old = self.rows.pop(index, None)
        if old is not None:
            self.runner.forget(old[0])

    def update(self, batch_update: Any | None) -> None:
        """Apply a vLLM ``BatchUpdate`` (removed, then added, then moved)."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._drop(int(index))
        for added in batch_update.added:
            index, params, prompt, output = added[0], added[1], added[2], added[3]
            self._drop(int(index))
            if request_enabled(params):
                self.rows[int(index)] = (next(_keys), list(prompt or []), output)
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(int(a), None), self.rows.pop(int(b), None)
            if ra is not None:
                self.rows[int(b)] = ra
            if getattr(direction, "name", str(direction)).upper() == "SWAP":
                if rb is not None:
                    self.rows[int(a)] = rb
            elif rb is not None:  # a one-way move overwrites b
                self.runner.forget(rb[0])

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Subtract μ·f_φ(prefix) from every enabled row of ``logits`` ``[R, V]``."""
        if not self.rows or self.mu == 0.0:
            return logits
        idx = sorted(i for i in self.rows if i < logits.shape[0])
        if not idx:
            return logits
        try:
            f_phi = self._memory_logits(idx)
        except _StaleMemoryError:
            f_phi = self._memory_logits(idx)
        rows = torch.tensor(idx, dtype=torch.int64, device=logits.device)
        logits[rows] = calibrated_logits(logits[rows], f_phi, self.mu)
        return logits

    def _memory_logits(self, idx: list[int]) -> torch.Tensor:
        keys, news = [], []
        for i in idx:
            key, prompt, output = self.rows[i]
            seen = self.runner.length(key)
            if seen > len(prompt) + len(output):  # the request restarted
                self.runner.forget(key)
                seen = 0
            new = _tail(prompt, output, seen)
            if any(t < 0 for t in new):
                raise ConfigurationError(
                    "sharpwatch DLC saw a placeholder (-1) where a sampled token should be: "
                    "vLLM's async scheduling fills output tokens in only for processors named "
                    "in logits_processors. Pass logits_processors=['trainer_hooks.integrations."
                    "vllm:DLCLogitsProcessor'] (not only the entry point) or async_scheduling=False"
                )
            keys.append(key)
            news.append(new)
        return self.runner.step(keys, news)


class DLCSlotCore(_DLCCore):
    """DLC for vLLM's Model Runner V2: per-slot state, rows mapped to slots each step
    (arguments: :class:`_DLCCore`)."""

    slots: dict[int, int]  # slot -> request key

    def _track_no_requests(self) -> None:
        self.slots = {}

    def add_request(self, slot: int, sampling_params: Any) -> bool:
        old = self.slots.pop(int(slot), None)
        if old is not None:
            self.runner.forget(old)
        if not request_enabled(sampling_params) or self.mu == 0.0:
            return False
        self.slots[int(slot)] = next(_keys)
        return True

    def apply(self, logits: torch.Tensor, ctx: Any, all_token_ids: torch.Tensor) -> torch.Tensor:
        """``all_token_ids`` ``[max_reqs, max_len]``: the committed tokens per slot."""
        if not self.slots:
            return logits
        if int(ctx.expanded_idx_mapping.shape[0]) != int(ctx.idx_mapping.shape[0]):
            raise ConfigurationError(
                "sharpwatch DLC does not support speculative decoding (several logits rows "
                "per request); disable speculative_config"
            )
        slots = [int(s) for s in ctx.idx_mapping_np]
        rows = [r for r, s in enumerate(slots) if s in self.slots]
        if not rows:
            return logits
        try:
            f_phi = self._memory_logits(rows, slots, ctx, all_token_ids)
        except _StaleMemoryError:
            f_phi = self._memory_logits(rows, slots, ctx, all_token_ids)
        index = torch.tensor(rows, dtype=torch.int64, device=logits.device)
        logits[index] = calibrated_logits(logits[index], f_phi, self.mu)
        return logits

    def _memory_logits(
        self, rows: list[int], slots: list[int], ctx: Any, all_token_ids: torch.Tensor
    ) -> torch.Tensor:
        fed = ctx.input_ids.tolist()  # the token fed at each row's position (the last one)
        keys, news = [], []
        for r in rows:
            key = self.slots[slots[r]]
            total = int(ctx.seq_lens_upper_bound_np[r])
            seen = self.runner.length(key)
            if seen >= total:  # the request was recomputed from an earlier point
                self.runner.forget(key)
                seen = 0
            committed = (
                all_token_ids[slots[r], seen : total - 1].tolist() if total - 1 > seen else []
            )
            keys.append(key)
            news.append([*committed, int(fed[r])])
        return self.runner.step(keys, news)
