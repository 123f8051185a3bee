"""A step's metrics on the host, after its one device-to-host copy.

Small functions, one per concern, each reading and completing the step's ``raw`` dict of
metric name → float (names from the metric table, ``service/wire/metrics.py``):
entropy's defined-ness, the run's settings, Z'(q)'s provenance, the Model Collapse Step. Then
:func:`wire_metrics` turns ``raw`` into the record's ``metrics`` (non-finite → ``None``, named
in ``non_finite``).
"""

from __future__ import annotations

import logging

from service.wire.finite import split_non_finite
from trainer_hooks._types import StepInputs
from trainer_hooks._unsupervised import ModelCollapseTracker

__all__ = [
    "ZPRIME_STEP_METRICS",
    "collapse_metrics",
    "entropy_defined",
    "wire_metrics",
    "zprime_metrics",
]

logger = logging.getLogger("trainer_hooks")

#: Step metrics of Z'(q), dropped together when no query of the step has a Z'.
ZPRIME_STEP_METRICS = (
    "log_zprime_mean",
    "log_zprime_p90",
    "zprime_gt1_frac",
    "log_zprime_raw_mean",
    "log_zprime_raw_p90",
    "zprime_raw_gt1_frac",
)


def entropy_defined(raw: dict[str, float], *, warned: bool) -> bool:
    """science.md §7: a step without selected response tokens has no entropy (absent, not
    NaN); unmasked all ``-inf`` logit rows are an input error, logged once (returns whether it
    has been logged now or before) and counted in ``entropy_empty_rows``, never a NaN that trips
    ``non_finite``."""
    if raw.get("entropy_tokens") == 0.0:
        raw.pop("entropy", None)
    empty = raw.get("entropy_empty_rows", 0.0)
    if empty > 0 and not warned:
        logger.warning(
            "sharpwatch: %d unmasked token positions have all -inf logits (no distribution); "
            "they are left out of entropy (entropy_empty_rows counts them each step). Check "
            "the response mask or the logits processor.",
            int(empty),
        )
        return True
    return warned


def zprime_metrics(
    raw: dict[str, float], inputs: StepInputs, *, beta: float, beta_is_reference: bool
) -> None:
    """Z'(q) absent when no query has one (science.md §7); else which β and π it used."""
    if raw.get("zprime_queries") == 0.0:
        for name in ZPRIME_STEP_METRICS:
            raw.pop(name, None)
    if "log_zprime_mean" not in raw:
        return
    raw["zprime_beta"] = beta
    raw["zprime_beta_is_reference"] = 1.0 if beta_is_reference else 0.0
    exact = inputs.ref_logprobs is not None or inputs.old_logprobs is not None
    raw["zprime_exact_support"] = 1.0 if exact else 0.0
    if exact:
        raw["zprime_pi_is_reference"] = 1.0 if inputs.ref_logprobs is not None else 0.0


def collapse_metrics(raw: dict[str, float], tracker: ModelCollapseTracker, step: int) -> None:
    """Feed the step's reward accuracy to the Model Collapse Step tracker (science.md §4)."""
    if "reward_accuracy" not in raw:
        return
    tracker.update(
        step,
        raw["reward_accuracy"],
        agree=raw.get("reward_accuracy_agree"),
        total=raw.get("reward_accuracy_total"),
    )
    raw["collapse_threshold"] = tracker.threshold
    if tracker.collapse_step is not None:
        raw["model_collapse_step"] = float(tracker.collapse_step)


def wire_metrics(raw: dict[str, float]) -> tuple[dict[str, float | None], list[str]]:
    """The record's ``metrics`` (sorted by name; non-finite values → ``None``) and the names
    of the non-finite ones."""
    return split_non_finite({name: raw[name] for name in sorted(raw)})
