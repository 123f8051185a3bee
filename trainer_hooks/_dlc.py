"""Distribution-level calibration, DLC (science.md §3; seed 002 §3.2, Algorithm 1 lines 4-6, 21-22).

A memory model m_φ with logits f_φ(q, o) is trained after each step with cross-entropy on the
sampled (q, o) pairs, so that it tracks how often outputs were generated; rollouts then sample from
softmax(f_θ(q, ·) − μ·f_φ(q, ·)), μ default 0.5. For a causal LM the subtraction happens per
decoding step: :class:`DLCLogitsProcessor` runs the memory LM on the same prefix (a Hugging Face
``generate`` logits processor, duck-typed: transformers is not imported), incrementally with a KV
cache when the memory is a Hugging Face causal LM (one forwarded token per row per step instead of
the whole prefix; :mod:`trainer_hooks._incremental`).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._incremental import IncrementalCausalLM

__all__ = [
    "CausalLMMemory",
    "DLCLogitsProcessor",
    "DLCMemory",
    "LinearMemory",
    "MemoryModule",
    "calibrated_logits",
]

DEFAULT_MU = 0.5


def _check_mu(mu: float) -> float:
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu) or mu < 0:
        raise ConfigurationError(f"mu must be a finite number >= 0, got {mu!r}")
    return float(mu)


def calibrated_logits(
    policy_logits: torch.Tensor, memory_logits: torch.Tensor, mu: float = DEFAULT_MU
) -> torch.Tensor:
    """f̃ = f_θ − μ·f_φ (science.md §3), in the policy logits' dtype.

    When the memory's vocabulary is smaller than the policy's (padded vocabularies), only the
    shared leading entries are calibrated.
    """
    m = _check_mu(mu)
    if memory_logits.shape[:-1] != policy_logits.shape[:-1]:
        raise ShapeError(
            f"memory logits {list(memory_logits.shape)} and policy logits "
            f"{list(policy_logits.shape)} differ before the vocabulary dim"
        )
    if m == 0.0:
        return policy_logits
    v = min(int(policy_logits.shape[-1]), int(memory_logits.shape[-1]))
    f_phi = memory_logits[..., :v].to(device=policy_logits.device, dtype=policy_logits.dtype)
    if v == policy_logits.shape[-1]:
        return policy_logits - m * f_phi
    out = policy_logits.clone()
    out[..., :v] -= m * f_phi
    return out


@runtime_checkable
class MemoryModule(Protocol):
    """What :class:`DLCMemory` needs from a memory network."""

    def memory_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """f_φ(q, ·) for the next output: ``[..., V]``."""
        ...

    def memory_loss(
        self, inputs: torch.Tensor, targets: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-entropy of the sampled outputs (0-d, differentiable)."""
        ...


class LinearMemory(nn.Module):
    """Default memory for the toy/classification case: f_φ(q, ·) = W_φ·e_q + b_φ.

    Zero-initialised, so before any update it is uniform and calibration is a no-op.
    """

    def __init__(self, in_features: int, num_outputs: int, *, bias: bool = True) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ConfigurationError(f"in_features must be an int >= 1, got {in_features!r}")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 2:
            raise ConfigurationError(f"num_outputs must be an int >= 2, got {num_outputs!r}")
        self.linear = nn.Linear(in_features, num_outputs, bias=bias)
        nn.init.zeros_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(queries)
        return out

    def memory_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.forward(inputs)

    def memory_loss(
        self, inputs: torch.Tensor, targets: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if targets is None:
            raise ConfigurationError("LinearMemory.memory_loss needs targets (sampled labels)")
        logits = self(inputs)
        if targets.shape != logits.shape[:-1]:
            raise ShapeError(
                f"targets has shape {list(targets.shape)}; expected {list(logits.shape[:-1])}"
            )
        return nn.functional.cross_entropy(logits, targets.to(torch.int64))


class CausalLMMemory(nn.Module):
    """Wrap a (small) causal LM as a DLC memory: f_φ(q, o_<t, ·) = the LM's next-token logits.

    ``model(input_ids, attention_mask=...)`` may return a tensor ``[B, L, V]`` or an object with a
    ``.logits`` attribute (Hugging Face models). Training is token-level cross-entropy on the
    sampled responses: ``mask`` ``[B, L]`` marks the response tokens of ``input_ids`` (prompt +
    response); each marked token is predicted from its prefix.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out: Any = (
            self.model(input_ids)
            if attention_mask is None
            else self.model(input_ids, attention_mask=attention_mask)
        )
        logits = out if isinstance(out, torch.Tensor) else out.logits
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            raise ShapeError("the wrapped model must return logits shaped [B, L, V]")
        return logits

    def memory_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Next-token logits after the full prefix ``inputs`` ``[B, L]`` -> ``[B, V]``."""
        return self.forward(inputs)[:, -1, :]

    def memory_loss(
        self, inputs: torch.Tensor, targets: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if inputs.dim() != 2 or inputs.shape[1] < 2:
            raise ShapeError(f"input_ids has shape {list(inputs.shape)}; expected [B, L>=2]")
        logits = self(inputs)[:, :-1, :].float()
        tgt = inputs[:, 1:]
        ce = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none"
        ).reshape(tgt.shape)
        if mask is None:
            return ce.mean()
        if mask.shape != inputs.shape:
            raise ShapeError(f"mask has shape {list(mask.shape)}; expected {list(inputs.shape)}")
        w = mask[:, 1:].to(ce.dtype)
        return (ce * w).sum() / w.sum().clamp_min(1.0)


class DLCMemory:
    """The DLC memory network and its optimiser (Algorithm 1 lines 21-22).

    ``model`` is a :class:`MemoryModule` (e.g. :class:`LinearMemory`, :class:`CausalLMMemory`).
    ``optimizer`` defaults to SGD with ``lr``. :meth:`update` takes ``updates_per_step`` gradient
    steps of cross-entropy on the step's sampled pairs and returns the last loss as a detached
    device tensor (no host synchronisation).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mu: float = DEFAULT_MU,
        lr: float = 0.1,
        optimizer: torch.optim.Optimizer | None = None,
        updates_per_step: int = 1,
    ) -> None:
        if not isinstance(model, MemoryModule):
            raise ConfigurationError(
                "model must provide memory_logits() and memory_loss() (see MemoryModule)"
            )
        if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
            raise ConfigurationError(f"lr must be a finite number > 0, got {lr!r}")
        if (
            isinstance(updates_per_step, bool)
            or not isinstance(updates_per_step, int)
            or updates_per_step < 1
        ):
            raise ConfigurationError(
                f"updates_per_step must be an int >= 1, got {updates_per_step!r}"
            )
        self.model = model
        self.mu = _check_mu(mu)
        self.updates_per_step = updates_per_step
        self.optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=float(lr))
        self.version = 0  # bumped by every update: caches of memory logits are then stale

    def _module(self) -> MemoryModule:
        m = self.model
        assert isinstance(m, MemoryModule)
        return m

    def update(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Train the memory on the step's sampled (query, output) pairs; returns the loss."""
        self.model.train()
        loss = torch.zeros(())
        for _ in range(self.updates_per_step):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._module().memory_loss(inputs, targets, mask)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
        self.version += 1
        return loss.detach()

    def memory_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """f_φ for ``inputs`` without gradients."""
        self.model.eval()
        with torch.no_grad():
            return self._module().memory_logits(inputs)

    def calibrate(self, policy_logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Sampling logits f_θ − μ·f_φ for ``inputs``."""
        return calibrated_logits(policy_logits, self.memory_logits(inputs), self.mu)


def _causal_lm(memory: object) -> nn.Module | None:
    """The Hugging Face style LM inside ``memory`` when it takes a KV cache, else None."""
    model: Any = memory.model if isinstance(memory, DLCMemory) else memory
    if isinstance(model, CausalLMMemory):
        model = model.model
    if not isinstance(model, nn.Module):
        return None
    params = inspect.signature(model.forward).parameters
    if "use_cache" in params and ("cache" in params or "past_key_values" in params):
        return model
    return None


class DLCLogitsProcessor:
    """Hugging Face ``generate`` logits processor applying DLC at every decoding step.

    Duck-typed ``__call__(input_ids [B, L], scores [B, V]) -> scores`` (transformers accepts any
    callable with this signature in a ``LogitsProcessorList``). The memory LM sees the same
    prefix ``input_ids`` (prompt + tokens generated so far). With ``incremental`` (the default
    when the memory is a Hugging Face causal LM taking a KV cache) it keeps a cache per row and
    forwards only the newest column each step; a call that does not continue the previous one
    (another batch, a shorter prefix, a memory trained since) starts over from the full prefix.
    ``incremental=False`` re-runs the full prefix every step.
    """

    def __init__(
        self,
        memory: DLCMemory | MemoryModule,
        mu: float | None = None,
        *,
        incremental: bool | None = None,
    ) -> None:
        if isinstance(memory, DLCMemory):
            self._memory: DLCMemory | MemoryModule = memory
            self.mu = memory.mu if mu is None else _check_mu(mu)
        elif isinstance(memory, MemoryModule):
            self._memory = memory
            self.mu = DEFAULT_MU if mu is None else _check_mu(mu)
        else:
            raise ConfigurationError("memory must be a DLCMemory or a MemoryModule")
        if incremental is not None and not isinstance(incremental, bool):
            raise ConfigurationError(f"incremental must be a bool or None, got {incremental!r}")
        lm = _causal_lm(memory)
        if incremental and lm is None:
            raise ConfigurationError(
                "incremental=True needs a memory LM whose forward takes use_cache and a KV cache "
                "(a Hugging Face causal LM inside CausalLMMemory)"
            )
        self.incremental = lm is not None if incremental is None else incremental
        self._inc = IncrementalCausalLM(lm) if self.incremental and lm is not None else None
        self._state: tuple[int, int, int, torch.Tensor] | None = None  # version, B, L, last ids

    @property
    def tokens_forwarded(self) -> int:
        """Tokens the incremental memory has run so far (0 for the full-prefix path)."""
        return 0 if self._inc is None else self._inc.tokens_forwarded

    def reset(self) -> None:
        """Drop the cached memory state (the next call starts from the full prefix)."""
        self._state = None
        if self._inc is not None:
            self._inc.reset()

    def memory_next_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self._inc is not None:
            return self._incremental_next_logits(input_ids)
        if isinstance(self._memory, DLCMemory):
            return self._memory.memory_logits(input_ids)
        with torch.no_grad():
            return self._memory.memory_logits(input_ids)

    def _incremental_next_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert self._inc is not None
        b, length = int(input_ids.shape[0]), int(input_ids.shape[1])
        version = int(getattr(self._memory, "version", 0))
        state = self._state
        continues = (
            state is not None
            and state[:3] == (version, b, length - 1)
            and torch.equal(input_ids[:, -2], state[3])
        )
        if continues:
            news = input_ids[:, -1:].tolist()
        else:
            self._inc.reset()
            self._inc.model.eval()
            news = input_ids.tolist()
        out = self._inc.step(list(range(b)), news)
        self._state = (version, b, length, input_ids[:, -1].clone())
        return out

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.mu == 0.0:
            return scores
        return calibrated_logits(scores, self.memory_next_logits(input_ids), self.mu)
