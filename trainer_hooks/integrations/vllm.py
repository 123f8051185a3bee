"""DLC as a vLLM logits processor (science.md §3 DLC), for vLLM's default multi-process engine.

Load it by name, so vLLM's engine process imports it (nothing is pickled)::

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=POLICY_DIR,
        logits_processors=["trainer_hooks.integrations.vllm:DLCLogitsProcessor"],
        additional_config={"sharpwatch_dlc": {"memory_path": MEMORY_DIR, "mu": 0.5}},
    )
    llm.generate(prompts, SamplingParams(n=8))  # sampled from softmax(f_θ − μ·f_φ)
    llm.generate(prompts, SamplingParams(extra_args={"sharpwatch_dlc": False}))  # plain

Installing sharpwatch also registers the class under vLLM's ``vllm.logits_processors`` entry
point, so vLLM loads it for every engine; it acts only where ``additional_config`` carries
``"sharpwatch_dlc"`` and is inert otherwise. Loaded both ways at once (the entry point and the
name above) only the first instance acts, so μ is never applied twice.

``memory_path`` is the directory of a Hugging Face causal LM sharing the policy's tokenizer
(``save_pretrained``). The processor reloads it when its files change, at the next request
admitted: the trainer saves the updated memory after each step and the next rollout samples
with it. The memory keeps a KV cache per request (one forwarded token per request per step).

One class serves both model runners: vLLM's V1 runner (``vllm.v1.sample.logits_processor``:
``__init__(vllm_config, device, is_pin_memory)``, ``update_state``, ``apply(logits)``) and Model
Runner V2 (``vllm.v1.worker.gpu.sample.logits_processor``: ``__init__(vllm_config,
req_states)``, ``add_request(slot, params)``, ``apply(logits, ctx)``), which vLLM ≥ 0.32 uses by
default on GPUs; it subclasses both interfaces and dispatches on the arguments vLLM passes.
Speculative decoding is refused (vLLM's V1 runner refuses custom processors with it too).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from trainer_hooks._vllm import (
    CONFIG_KEY,
    DLCBatchCore,
    DLCSlotCore,
    MemoryCheckpoint,
    parse_dlc_config,
    request_enabled,
)

try:
    from vllm.v1.sample.logits_processor import LogitsProcessor as _V1LogitsProcessor
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trainer_hooks.integrations.vllm needs vLLM >= 0.10 (its v1 logits-processor "
        "interface): pip install vllm, or run .ci/envs/vllm.sh for a CPU build"
    ) from exc

try:  # Model Runner V2's interface (vLLM >= 0.32)
    from vllm.v1.worker.gpu.sample.logits_processor import (
        LogitsProcessor as _V2LogitsProcessor,
    )
except ImportError:  # pragma: no cover - older vLLM: V1 runner only

    class _V2LogitsProcessor:  # type: ignore[no-redef]
        """Placeholder base when the installed vLLM has no Model Runner V2."""


log = logging.getLogger("trainer_hooks.integrations.vllm")

__all__ = ["DLCLogitsProcessor", "DLCWorkerExtension"]

# One acting instance per engine configuration (entry point + FQCN would otherwise apply DLC
# twice): id(vllm_config) -> the config, kept so that its id cannot be reused.
_CLAIMED: dict[int, object] = {}


def _claim(vllm_config: object) -> bool:
    if id(vllm_config) in _CLAIMED:
        return False
    _CLAIMED[id(vllm_config)] = vllm_config
    return True


class DLCLogitsProcessor(_V1LogitsProcessor, _V2LogitsProcessor):  # type: ignore[misc]
    """Subtracts μ·f_φ(prefix) from the logits of every request that did not opt out."""

    def __init__(
        self, vllm_config: Any, device_or_states: Any, is_pin_memory: bool | None = None
    ) -> None:
        # V1 passes (vllm_config, device, is_pin_memory); V2 (vllm_config, req_states).
        self.v2 = not isinstance(device_or_states, torch.device | str)
        self._req_states = device_or_states if self.v2 else None
        device = device_or_states.device if self.v2 else torch.device(device_or_states)
        settings = parse_dlc_config(getattr(vllm_config, "additional_config", None))
        self.active = settings is not None and _claim(vllm_config)
        self._v1: DLCBatchCore | None = None
        self._v2: DLCSlotCore | None = None
        self._checkpoint: MemoryCheckpoint | None = None
        if settings is None:
            log.debug('no additional_config["%s"]: sharpwatch DLC is inert', CONFIG_KEY)
            return
        if not self.active:
            log.info("sharpwatch DLC is loaded twice for this engine; this copy stays inert")
            return
        self._checkpoint = MemoryCheckpoint(settings.memory_path, device)
        if self.v2:
            self._v2 = DLCSlotCore(
                self._checkpoint.model, mu=settings.mu, incremental=settings.incremental
            )
        else:
            self._v1 = DLCBatchCore(
                self._checkpoint.model, mu=settings.mu, incremental=settings.incremental
            )
        log.info(
            "sharpwatch DLC: memory %s, mu=%s, %s memory, model runner %s",
            settings.memory_path,
            settings.mu,
            "incremental" if settings.incremental else "full-prefix",
            "V2" if self.v2 else "V1",
        )

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        request_enabled(sampling_params)  # raises ValueError for a non-bool opt-out flag

    def is_argmax_invariant(self) -> bool:
        return False  # DLC changes which token is most likely

    def _reload_if_saved(self) -> None:
        ckpt = self._checkpoint
        if ckpt is None or not ckpt.changed():
            return
        model = ckpt.load()
        core = self._v1 if self._v1 is not None else self._v2
        assert core is not None
        core.runner.set_model(model)
        log.info("sharpwatch DLC: reloaded the memory from %s", ckpt.path)

    # V1 model runner
    def update_state(self, batch_update: Any | None) -> None:
        if self._v1 is None:
            return
        if batch_update is not None and batch_update.added:
            self._reload_if_saved()
        self._v1.update(batch_update)

    # V2 model runner
    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        if self._v2 is None:
            return False
        self._reload_if_saved()
        return self._v2.add_request(req_idx, sampling_params)

    def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        if ctx is None:
            return logits if self._v1 is None else self._v1.apply(logits)
        if self._v2 is None:
            return logits
        assert self._req_states is not None
        return self._v2.apply(logits, ctx, self._req_states.all_token_ids.gpu)


def _processors(model_runner: Any) -> list[Any]:
    batch = getattr(model_runner, "input_batch", None)  # V1 runner
    if batch is not None and hasattr(batch, "logitsprocs"):
        return list(batch.logitsprocs.all)
    sampler = getattr(model_runner, "sampler", None)  # Model Runner V2
    return list(getattr(sampler, "logits_processors", []))


class DLCWorkerExtension:
    """A vLLM worker extension: ``LLM(..., worker_extension_cls=
    "trainer_hooks.integrations.vllm.DLCWorkerExtension")`` (a dotted path), then
    ``llm.collective_rpc("sharpwatch_dlc_status")`` tells what each worker loaded: the
    processors, and how many DLC copies act and on which model runner."""

    model_runner: Any

    def sharpwatch_dlc_status(self) -> dict[str, Any]:
        import os

        procs = _processors(self.model_runner)
        ours = [p for p in procs if isinstance(p, DLCLogitsProcessor)]
        return {
            "pid": os.getpid(),
            "processors": [f"{type(p).__module__}:{type(p).__qualname__}" for p in procs],
            "dlc_instances": len(ours),
            "dlc_active": sum(1 for p in ours if p.active),
            "runner": ["V2" if p.v2 else "V1" for p in ours if p.active],
        }
