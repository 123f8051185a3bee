"""The step metrics of the wire contract, declared once: name, unit, meaning (science.md section
in brackets) and where the service stores each (its own column of ``steps`` or the step's
``extras`` JSON). The ORM's columns, the storage layer, the schemas' docs, the detectors and the
trainer hooks all read this table; a new column-stored metric still needs a migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "HOOK_STEP_METRICS",
    "HOOK_STEP_METRIC_NAMES",
    "STEP_COLUMNS",
    "STEP_METRICS",
    "STEP_METRIC_NAMES",
    "MetricSpec",
    "Storage",
]


class Storage(StrEnum):
    """Where a step metric is stored."""

    COLUMN = "column"  # its own nullable float column of ``steps`` (series, Grafana SQL)
    EXTRAS = "extras"  # the step's ``extras`` JSON, with any name the table does not know


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    description: str
    storage: Storage = Storage.COLUMN


#: The standard step metrics: each is a column of ``steps``.
STEP_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("entropy", "nats", "mean token entropy of the step's responses [§1, §3]"),
    MetricSpec("success_rate", "fraction 0..1", "batch success rate, mean of S+/G [§1]"),
    MetricSpec("degenerate_all_fail", "fraction 0..1", "share of groups with S+ = 0 [§1]"),
    MetricSpec("degenerate_all_pass", "fraction 0..1", "share of groups with S+ = G [§1]"),
    # Z'(q) twice (science.md §2 Decision, §7): from the advantages used for the update
    # (calibrated: IAC raises every positive advantage, so it grows with α) and from the raw
    # advantages (the policy's own over-sharpening pressure: zprime_pressure and the α
    # controller read these, never the calibrated ones). Equal when IAC is off.
    MetricSpec(
        "log_zprime_mean",
        "nats",
        "mean over queries of log Z'(q), calibrated: from the advantages used for the update "
        "(after IAC; grows with α) [§2]",
    ),
    MetricSpec(
        "log_zprime_p90", "nats", "90th percentile over queries of calibrated log Z'(q) [§2]"
    ),
    MetricSpec(
        "zprime_gt1_frac", "fraction 0..1", "share of queries with calibrated Z'(q) > 1 [§2]"
    ),
    MetricSpec(
        "log_zprime_raw_mean",
        "nats",
        "mean over queries of log Z'(q), raw: from the advantages before IAC (the policy's "
        "over-sharpening pressure) [§2, §7]",
    ),
    MetricSpec("log_zprime_raw_p90", "nats", "90th percentile over queries of raw log Z'(q) [§2]"),
    MetricSpec(
        "zprime_raw_gt1_frac",
        "fraction 0..1",
        "share of queries with raw Z'(q) > 1; zprime_pressure and the α controller read it [§7]",
    ),
    MetricSpec("reward_accuracy", "fraction 0..1", "pseudo = oracle reward, per sample [§4]"),
    MetricSpec("label_accuracy", "fraction 0..1", "pseudo-label = ground truth, per query [§4]"),
    MetricSpec("proxy_reward", "reward units", "mean pseudo (intrinsic) reward [§4]"),
    MetricSpec("gt_reward", "reward units", "mean ground-truth (oracle) reward [§4]"),
    MetricSpec("response_length", "tokens", "mean response length [§4]"),
    MetricSpec("repetition_rate", "fraction 0..1", "share of repeated n-grams in responses [§4]"),
    MetricSpec("kl", "nats", "KL divergence to the reference policy"),
    MetricSpec("alpha", "dimensionless", "IAC calibration strength in effect [§3]"),
    MetricSpec("mu", "dimensionless", "DLC calibration strength in effect [§3]"),
    MetricSpec("probe_success", "fraction 0..1", "success rate on the held-out probe set [§2]"),
    MetricSpec("probe_entropy", "nats", "mean token entropy on the held-out probe set [§2]"),
    MetricSpec("loss", "loss units", "training loss"),
    MetricSpec("grad_norm", "norm units", "gradient norm before clipping"),
)

STEP_METRIC_NAMES: frozenset[str] = frozenset(m.name for m in STEP_METRICS)


def _extra(name: str, unit: str, description: str) -> MetricSpec:
    return MetricSpec(name, unit, description, Storage.EXTRAS)


#: Step metrics the trainer hooks (``trainer_hooks.Monitor``) report beyond the standard ones:
#: the counts and settings behind them. They travel in the record's ``metrics`` like the
#: standard ones and are stored with the step as extras (no column; detectors may read them).
HOOK_STEP_METRICS: tuple[MetricSpec, ...] = (
    _extra("reward_var_observed", "reward units^2", "mean within-group reward variance [§1]"),
    _extra("reward_var_expected", "reward units^2", "mean of p(1-p)(G-1)/G, p = success_rate [§1]"),
    _extra("p_star", "fraction 0..1", "p*(G) = 1 - 2^(-1/G) of the run's G [§1]"),
    _extra("entropy_tokens", "count", "response tokens the entropy averages over [§7]"),
    _extra("entropy_empty_rows", "count", "unmasked positions whose logits were all -inf [§7]"),
    _extra("iac", "flag 0/1", "IAC applied to the returned advantages [§3]"),
    _extra("iac_s_plus_threshold", "flag 0/1", "IAC counts S+ by reward threshold, not A > 0 [§7]"),
    _extra("zprime_queries", "count", "queries of the step that have a Z'(q) [§2, §7]"),
    _extra("zprime_beta", "dimensionless", "the beta Z'(q) was computed with [§2]"),
    _extra(
        "zprime_beta_is_reference",
        "flag 0/1",
        "beta is the reference beta (run has no KL) [§2]",
    ),
    _extra(
        "zprime_exact_support",
        "flag 0/1",
        "Z'(q) from sequence log-probs, not Good-Turing [§7]",
    ),
    _extra("zprime_pi_is_reference", "flag 0/1", "those log-probs are pi_ref's [§7]"),
    _extra("reward_accuracy_agree", "count", "responses whose pseudo = oracle reward [§4]"),
    _extra("reward_accuracy_total", "count", "responses reward accuracy counts [§4, §7]"),
    _extra("collapse_threshold", "fraction 0..1", "Model Collapse Step threshold [§4]"),
    _extra("model_collapse_step", "step", "first step with reward accuracy < threshold [§4]"),
)

HOOK_STEP_METRIC_NAMES: frozenset[str] = frozenset(m.name for m in HOOK_STEP_METRICS)

#: The columns of ``steps`` that hold a metric, in table order (the ORM and storage derive theirs).
STEP_COLUMNS: tuple[str, ...] = tuple(
    m.name for m in (*STEP_METRICS, *HOOK_STEP_METRICS) if m.storage is Storage.COLUMN
)
