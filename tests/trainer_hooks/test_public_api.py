"""The public surface of ``trainer_hooks`` is exactly this list."""

from __future__ import annotations

import subprocess
import sys

import trainer_hooks

EXPECTED = [
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


def test_all_is_exactly_the_public_api() -> None:
    assert trainer_hooks.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(trainer_hooks, name) is not None


def test_import_does_not_pull_web_stack_or_optional_deps() -> None:
    code = (
        "import sys, trainer_hooks; "
        "print(','.join(m for m in ('fastapi', 'sqlalchemy', 'vllm', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""
