"""Collapse detectors: the pure decision logic behind sharpwatch alerts (no DB, no HTTP).

Per ingested step the service calls :func:`process_step` (or the stages :func:`evaluate` →
:func:`compute_transitions` → :func:`decide_alpha` → :func:`verdict`) with the run's
:class:`DetectorConfig`, :class:`RunPolicy`, group size G, the last ``config.history_needed()``
step records (sorted by step, newest = the ingested step), the persisted :class:`DetectorState`
(JSON via ``to_json``/``from_json``) and the run's open alerts. Everything is deterministic; a step
not newer than ``state.last_step`` is skipped (no transitions, state unchanged).

Rules are declared one per :class:`Rule` in ``rules_*.py`` and collected by the
:class:`RuleRegistry` (``REGISTRY``); their names, the config fields, the evaluation order and the
table in docs/detectors.md follow from it. The list below is rendered from it at import.
See docs/detectors.md for the full table with recommended actions.
"""

from service.detectors.alpha import AlphaAction, AlphaDecision, decide_alpha
from service.detectors.config import DetectorConfig, config_model
from service.detectors.evaluate import evaluate
from service.detectors.inputs import missing_inputs, rule_inputs
from service.detectors.names import RuleStatus, Severity, p_star
from service.detectors.pipeline import StepOutcome, process_step
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.registry import REGISTRY, RULE_NAMES, RuleName, RuleRegistry
from service.detectors.replay import Replayer, ReplayResult, replay, replay_detailed
from service.detectors.results import Evaluation, Firing, RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_docs import rules_summary
from service.detectors.rule_settings import RuleSettings, TrendSettings
from service.detectors.state import DetectorState, Peak
from service.detectors.transitions import (
    ActionKind,
    AlertAction,
    OpenAlert,
    Transitions,
    compute_transitions,
)
from service.detectors.triage import (
    TriageCandidate,
    TriageCandidateResult,
    TriageFlag,
    TriageRequest,
    TriageResponse,
    triage,
    triage_candidates,
)
from service.detectors.verdict import Verdict, verdict

__all__ = [
    "REGISTRY",
    "RULE_NAMES",
    "ActionKind",
    "AlertAction",
    "AlphaAction",
    "AlphaDecision",
    "DetectorConfig",
    "DetectorState",
    "Evaluation",
    "Firing",
    "OpenAlert",
    "Peak",
    "ReplayResult",
    "Replayer",
    "Rule",
    "RuleDoc",
    "RuleName",
    "RuleRegistry",
    "RuleResult",
    "RuleSettings",
    "RuleStatus",
    "RunPolicy",
    "Severity",
    "StepOutcome",
    "StepRecord",
    "Transitions",
    "TrendSettings",
    "TriageCandidate",
    "TriageCandidateResult",
    "TriageFlag",
    "TriageRequest",
    "TriageResponse",
    "Verdict",
    "compute_transitions",
    "config_model",
    "decide_alpha",
    "evaluate",
    "missing_inputs",
    "p_star",
    "process_step",
    "replay",
    "replay_detailed",
    "rule_inputs",
    "triage",
    "triage_candidates",
    "verdict",
]

__doc__ = f"{__doc__}\n{rules_summary()}\n"
