"""DLC as a vLLM (v1 engine) logits processor (science.md §3 DLC).

vLLM's v1 interface (``vllm.v1.sample.logits_processor.LogitsProcessor``) is batch-level and
stateful: ``update_state(batch_update)`` receives the requests removed from / added to / moved
within the persistent batch (added entries carry ``(index, sampling_params, prompt_token_ids,
output_token_ids)``, where the output list is a live reference), and ``apply(logits)`` transforms
the ``[num_requests, V]`` logits. :class:`DLCBatchCore` is the pure-torch part (what the tests
cover); :func:`make_vllm_dlc_processor` wraps it in a vLLM subclass, importing vLLM lazily.
Requests opt out with ``SamplingParams(extra_args={"sharpwatch_dlc": False})``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trainer_hooks._dlc import DLCMemory, MemoryModule, calibrated_logits

__all__ = ["DLCBatchCore", "make_vllm_dlc_processor"]


class DLCBatchCore:
    """Per-row prefix tracking + memory-logit subtraction for a persistent batch."""

    def __init__(
        self, memory: DLCMemory | MemoryModule, mu: float | None = None, pad_id: int = 0
    ) -> None:
        self._memory = memory
        self.mu = (memory.mu if isinstance(memory, DLCMemory) else 0.5) if mu is None else mu
        self.pad_id = pad_id
        self.rows: dict[int, tuple[Sequence[int], Sequence[int]]] = {}

    def update(self, batch_update: Any | None) -> None:
        """Apply a vLLM ``BatchUpdate`` (removed, then added, then moved)."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(int(index), None)
        for added in batch_update.added:
            index, params, prompt, output = added[0], added[1], added[2], added[3]
            extra = getattr(params, "extra_args", None) or {}
            if extra.get("sharpwatch_dlc", True) is False:
                self.rows.pop(int(index), None)
                continue
            self.rows[int(index)] = (list(prompt or []), output)
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(int(a), None), self.rows.pop(int(b), None)
            if ra is not None:
                self.rows[int(b)] = ra
            if rb is not None and getattr(direction, "name", str(direction)).upper() == "SWAP":
                self.rows[int(a)] = rb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Subtract μ·f_φ(prefix) from every enabled row of ``logits`` ``[R, V]``."""
        if not self.rows or self.mu == 0.0:
            return logits
        idx = sorted(i for i in self.rows if i < logits.shape[0])
        if not idx:
            return logits
        seqs = [list(self.rows[i][0]) + list(self.rows[i][1]) for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.int64)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        dev = logits.device
        ids, lengths = ids.to(dev), lengths.to(dev)
        mem = self._memory
        model = mem.model if isinstance(mem, DLCMemory) else mem
        assert isinstance(model, torch.nn.Module)
        with torch.no_grad():
            out: Any = model(ids)
        full = out if isinstance(out, torch.Tensor) else out.logits
        f_phi = full[torch.arange(len(seqs), device=dev), lengths - 1]
        rows = torch.tensor(idx, dtype=torch.int64, device=dev)
        logits[rows] = calibrated_logits(logits[rows], f_phi, self.mu)
        return logits


def make_vllm_dlc_processor(memory: DLCMemory | MemoryModule, mu: float | None = None) -> type:
    """A ``vllm.v1.sample.logits_processor.LogitsProcessor`` subclass bound to ``memory``.

    Pass the returned class to ``LLM(..., logits_processors=[cls])``. Requires vLLM (imported
    here, not at ``import trainer_hooks``); raises ``ImportError`` when it is missing.
    """
    try:
        from vllm.v1.sample.logits_processor import LogitsProcessor
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "make_vllm_dlc_processor needs vLLM: pip install 'sharpwatch[vllm]'"
        ) from exc

    class SharpwatchDLCLogitsProcessor(LogitsProcessor):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
            self._core = DLCBatchCore(memory, mu)

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update: Any | None) -> None:
            self._core.update(batch_update)

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            return self._core.apply(logits)

    return SharpwatchDLCLogitsProcessor
