"""Collapse detectors: the pure decision logic behind sharpwatch alerts (no DB, no HTTP).

Per ingested step the service calls :func:`process_step` (or the stages :func:`evaluate` →
:func:`compute_transitions` → :func:`decide_alpha` → :func:`verdict`) with the run's
:class:`DetectorConfig`, :class:`RunPolicy`, group size G, the last ``config.history_needed()``
step records (sorted by step, newest = the ingested step), the persisted :class:`DetectorState`
(JSON via ``to_json``/``from_json``) and the run's open alerts. Everything is deterministic; a step
not newer than ``state.last_step`` is skipped (no transitions, state unchanged).

Rules (name — signal; default; severity; section of science.md). Windows count observations:

- ``entropy_floor`` — entropy < 0.10 nats on each of the last 5 observations; critical, auto-stop;
  §1(b), §5.
- ``entropy_slope`` — least-squares entropy slope over 20 observations projects the floor within
  100 steps; warning; §1(b).
- ``signal_starvation`` — mean success rate over 5 < p*(G) = 1 − 2^(−1/G) or > 1 − p*(G); warning;
  §1, §5.
- ``degenerate_groups`` — mean (all_fail + all_pass) over 5 > 0.5; warning; §1.
- ``zprime_pressure`` — mean zprime_raw_gt1_frac (raw Z', before IAC) over 10 >= 0.5, or slope
  >= 0.01/step while >= 0.25; warning; §2, §7.
- ``model_collapse_step`` — reward accuracy < 0.01 (window 1); records the step; critical,
  auto-stop; §4, §5.
- ``reward_accuracy_divergence`` — over 20 steps proxy_reward slope >= +0.002/step while
  reward_accuracy slope <= −0.002/step; warning; §4.
- ``rise_then_fall`` — gt_reward (3-observation mean) >= 0.05 below its running peak, >= 10 steps
  after the peak; records the best step for rollback; warning; §4.
- ``probe_decline`` — over 5 probe evaluations probe_success slope <= −0.001/step or probe_entropy
  slope <= −0.002/step while training success slope >= +0.001/step; warning; §2.
- ``length_collapse`` — response length and entropy both fall >= 0.5 %/step (relative slope, 20
  steps); warning; §4.
- ``repetition_collapse`` — repetition rate rises >= 0.005/step over 20 steps and is >= 0.2;
  warning; §4.
- ``non_finite`` — any metric of the newest step NaN/inf; critical at once, auto-stop.

See docs/detectors.md for the full table with recommended actions.
"""

from service.detectors.alpha import AlphaAction, AlphaDecision, decide_alpha
from service.detectors.config import (
    DegenerateGroupsSettings,
    DetectorConfig,
    EntropyFloorSettings,
    EntropySlopeSettings,
    LengthCollapseSettings,
    ModelCollapseSettings,
    NonFiniteSettings,
    ProbeDeclineSettings,
    RepetitionCollapseSettings,
    RewardAccuracyDivergenceSettings,
    RiseThenFallSettings,
    RuleSettings,
    SignalStarvationSettings,
    ZPrimePressureSettings,
)
from service.detectors.evaluate import evaluate
from service.detectors.inputs import missing_inputs, rule_inputs
from service.detectors.names import RULE_NAMES, RuleName, RuleStatus, Severity, p_star
from service.detectors.pipeline import StepOutcome, process_step
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.replay import Replayer, ReplayResult, replay, replay_detailed
from service.detectors.results import Evaluation, Firing, RuleResult
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
    "RULE_NAMES",
    "ActionKind",
    "AlertAction",
    "AlphaAction",
    "AlphaDecision",
    "DegenerateGroupsSettings",
    "DetectorConfig",
    "DetectorState",
    "EntropyFloorSettings",
    "EntropySlopeSettings",
    "Evaluation",
    "Firing",
    "LengthCollapseSettings",
    "ModelCollapseSettings",
    "NonFiniteSettings",
    "OpenAlert",
    "Peak",
    "ProbeDeclineSettings",
    "RepetitionCollapseSettings",
    "ReplayResult",
    "Replayer",
    "RewardAccuracyDivergenceSettings",
    "RiseThenFallSettings",
    "RuleName",
    "RuleResult",
    "RuleSettings",
    "RuleStatus",
    "RunPolicy",
    "Severity",
    "SignalStarvationSettings",
    "StepOutcome",
    "StepRecord",
    "Transitions",
    "TriageCandidate",
    "TriageCandidateResult",
    "TriageFlag",
    "TriageRequest",
    "TriageResponse",
    "Verdict",
    "ZPrimePressureSettings",
    "compute_transitions",
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
