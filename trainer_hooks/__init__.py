"""sharpwatch trainer hooks: per-step RLVR health metrics, IAC/DLC calibration and the client
that streams them to the sharpwatch service.

Errors: every exception raised on purpose derives from :class:`SharpwatchHooksError`
(see ``trainer_hooks._errors``).
"""

from trainer_hooks._client import RunInfo, SharpwatchClient, sanitize_record
from trainer_hooks._commands import CommandPoller
from trainer_hooks._dlc import (
    CausalLMMemory,
    DLCLogitsProcessor,
    DLCMemory,
    LinearMemory,
    MemoryModule,
    calibrated_logits,
)
from trainer_hooks._entropy import EntropySummary, entropy_summary, token_entropy
from trainer_hooks._errors import ConfigurationError, ServiceError, ShapeError, SharpwatchHooksError
from trainer_hooks._group import GroupStats, group_stats, grpo_advantages, p_star, p_star_mirror
from trainer_hooks._iac import iac_calibrate
from trainer_hooks._layout import GroupLayout, make_layout
from trainer_hooks._monitor import Monitor
from trainer_hooks._probe import (
    CheckpointProbe,
    ProbeInputs,
    TriageEntry,
    measure_checkpoint,
    probe_metrics,
    triage_checkpoints,
)
from trainer_hooks._types import AlphaChange, StepInputs, StepResult, StepSender, StopRequest
from trainer_hooks._unsupervised import (
    ModelCollapseTracker,
    RewardAgreement,
    repetition_rate,
    reward_agreement,
)
from trainer_hooks._vllm import DLCBatchCore
from trainer_hooks._watch import RunSession, watch
from trainer_hooks._zprime import (
    ModeAssignment,
    ZPrimeResult,
    assign_modes,
    log_zprime,
    zprime_lower_bound_normalized,
)

__all__ = [
    "AlphaChange",
    "CausalLMMemory",
    "CheckpointProbe",
    "CommandPoller",
    "ConfigurationError",
    "DLCBatchCore",
    "DLCLogitsProcessor",
    "DLCMemory",
    "EntropySummary",
    "GroupLayout",
    "GroupStats",
    "LinearMemory",
    "MemoryModule",
    "ModeAssignment",
    "ModelCollapseTracker",
    "Monitor",
    "ProbeInputs",
    "RewardAgreement",
    "RunInfo",
    "RunSession",
    "ServiceError",
    "ShapeError",
    "SharpwatchClient",
    "SharpwatchHooksError",
    "StepInputs",
    "StepResult",
    "StepSender",
    "StopRequest",
    "TriageEntry",
    "ZPrimeResult",
    "assign_modes",
    "calibrated_logits",
    "entropy_summary",
    "group_stats",
    "grpo_advantages",
    "iac_calibrate",
    "log_zprime",
    "make_layout",
    "measure_checkpoint",
    "p_star",
    "p_star_mirror",
    "probe_metrics",
    "repetition_rate",
    "reward_agreement",
    "sanitize_record",
    "token_entropy",
    "triage_checkpoints",
    "watch",
    "zprime_lower_bound_normalized",
]
