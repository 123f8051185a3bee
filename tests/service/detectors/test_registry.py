"""The rule registry: everything about the rules derives from the ``Rule`` values declared in the
``rules_*.py`` modules, so a new rule is one declaration in one file (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import pytest
from pydantic import Field, ValidationError

from service.detectors import (
    REGISTRY,
    RULE_NAMES,
    ActionKind,
    DetectorConfig,
    DetectorState,
    Rule,
    RuleDoc,
    RuleName,
    RuleRegistry,
    RuleSettings,
    RuleStatus,
    RunPolicy,
    Severity,
    StepRecord,
    compute_transitions,
    config_model,
    evaluate,
    missing_inputs,
    rule_inputs,
)
from service.detectors._context import RuleContext
from service.detectors.evaluate import RULES
from service.detectors.results import RuleResult
from service.detectors.rule_docs import BEGIN, END, replace_table, rules_table

REPO = Path(__file__).resolve().parents[3]


def test_names_config_evaluation_and_inputs_all_follow_the_registry() -> None:
    assert REGISTRY.names == RULE_NAMES
    assert get_args(RuleName) == RULE_NAMES
    assert tuple(DetectorConfig.model_fields) == ("history_steps", *RULE_NAMES)
    assert tuple(RULES) == RULE_NAMES
    assert tuple(rule_inputs()) == RULE_NAMES
    for rule in REGISTRY:
        assert DetectorConfig.model_fields[rule.name].annotation is rule.settings
        assert DetectorConfig().rule(rule.name).severity is rule.severity
    orders = [rule.order for rule in REGISTRY]
    assert orders == sorted(orders)


def test_the_docs_rule_table_is_the_registry_rendered() -> None:
    page = (REPO / "docs" / "detectors.md").read_text()
    assert f"{BEGIN}\n{rules_table()}\n{END}" in page, (
        "docs/detectors.md's rule table drifted from the registry: run `python docs/rules_table.py`"
    )
    assert replace_table(page, rules_table()) == page


def test_the_table_fills_in_the_defaults_and_the_policy() -> None:
    rows = {line.split(" | ")[0]: line for line in rules_table().splitlines()[2:]}
    assert "| < 0.10 nats on every observation of the window | 5 obs |" in rows["| `entropy_floor`"]
    assert "| critical, auto-stop |" in rows["| `entropy_floor`"]
    assert "| `gt_reward` (configurable `metric`), mean of last 3 |" in rows["| `rise_then_fall`"]
    assert "| warning |" in rows["| `rise_then_fall`"]
    stops_on_slope = RunPolicy(auto_stop_rules=frozenset({"entropy_slope"}))
    assert "| warning, auto-stop |" in rules_table(policy=stops_on_slope)


# --- a rule defined here, outside the package, through the registry's public means -------------


class EntropyCeilingSettings(RuleSettings):
    """``entropy_ceiling``: the newest entropy is above ``ceiling``."""

    severity: Severity = Field(Severity.CRITICAL, strict=False, description="Alert severity.")
    window: int = Field(250, ge=1, le=1000, description="Unused; counts in history_needed.")
    ceiling: float = Field(5.0, gt=0.0, description="Entropy ceiling in nats.")


def entropy_ceiling(ctx: RuleContext, s: EntropyCeilingSettings) -> RuleResult:
    gated = ctx.gate("entropy_ceiling", s, "entropy")
    if gated is not None:
        return gated
    value = ctx.newest.value("entropy")
    assert value is not None
    if value <= s.ceiling:
        return ctx.clear("entropy_ceiling", f"entropy {value:g} <= {s.ceiling:g}")
    return ctx.fire(
        "entropy_ceiling",
        observed={"entropy": value},
        thresholds={"ceiling": s.ceiling},
        message=f"entropy {value:g} above {s.ceiling:g}",
        action="check the sampling temperature",
    )


ENTROPY_CEILING = Rule(
    name="entropy_ceiling",
    order=65,  # between model_collapse_step (60) and reward_accuracy_divergence (70)
    settings=EntropyCeilingSettings,
    check=entropy_ceiling,
    reads=(("entropy",),),
    doc=RuleDoc(
        signal="`entropy`",
        threshold="> {ceiling:g} nats",
        window="newest step",
        action="check the sampling temperature",
    ),
)


def test_a_rule_defined_in_a_test_is_evaluated_configurable_and_listed() -> None:
    rules = REGISTRY.extended(ENTROPY_CEILING)
    config_class = config_model(rules)
    names = rules.names
    assert names.index("entropy_ceiling") == names.index("model_collapse_step") + 1
    assert tuple(config_class.model_fields) == ("history_steps", *names)

    config = config_class.model_validate({"entropy_ceiling": {"ceiling": 2.0}})
    assert config.settings(ENTROPY_CEILING).ceiling == 2.0
    assert config.rule("entropy_ceiling").severity is Severity.CRITICAL
    assert config.history_needed() == 250
    assert DetectorConfig().history_needed() == 200
    with pytest.raises(ValidationError, match="ceiling"):
        config_class.model_validate({"entropy_ceiling": {"ceiling": -1.0}})
    with pytest.raises(ValidationError, match="no_such_rule"):
        config_class.model_validate({"no_such_rule": {}})

    history = [StepRecord(step=s, metrics={"entropy": 3.0}) for s in range(3)]
    ev = evaluate(config, 8, history, DetectorState())
    assert [r.rule for r in ev.results] == list(names)
    assert ev.result("entropy_ceiling").status is RuleStatus.FIRING
    firing = ev.result("entropy_ceiling").firing
    assert firing is not None
    assert firing.severity is Severity.CRITICAL
    opened = compute_transitions(config, RunPolicy(auto_stop_rules=frozenset()), ev, {})
    assert [(a.kind, a.rule) for a in opened.actions] == [(ActionKind.OPEN, "entropy_ceiling")]
    calm = evaluate(config_class(), 8, history, DetectorState())
    assert calm.result("entropy_ceiling").status is RuleStatus.CLEAR

    assert rule_inputs(config)["entropy_ceiling"] == (("entropy",),)
    assert missing_inputs(set(), config)["entropy_ceiling"] == ("entropy",)
    assert "| `entropy_ceiling` | `entropy` | > 5 nats | newest step | critical |" in (
        rules_table(rules)
    )
    # the built-in rules are untouched
    assert "entropy_ceiling" not in DetectorConfig.model_fields
    assert "entropy_ceiling" not in RULE_NAMES


def test_the_registry_refuses_clashing_rules() -> None:
    with pytest.raises(ValueError, match="two rules named"):
        REGISTRY.extended(Rule("entropy_floor", 999, *_rest()))
    with pytest.raises(ValueError, match="share order 60"):
        REGISTRY.extended(Rule("other", 60, *_rest()))
    with pytest.raises(ValueError, match="reserved"):
        RuleRegistry([Rule("history_steps", 1, *_rest())])
    with pytest.raises(ValueError, match="lower-case identifier"):
        Rule("Bad-Name", 1, *_rest())
    with pytest.raises(KeyError):
        DetectorConfig().settings(ENTROPY_CEILING)


def _rest() -> tuple[object, ...]:
    return (EntropyCeilingSettings, entropy_ceiling, ENTROPY_CEILING.reads, ENTROPY_CEILING.doc)


# --- a new rule module added to a copy of the package, and nothing else -------------------------

_NEW_RULE_MODULE = '''
"""A new rule, in a file of its own: the only change to the package."""

from __future__ import annotations

from pydantic import Field

from service.detectors._context import RuleContext
from service.detectors.results import RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_settings import RuleSettings


class LossSpikeSettings(RuleSettings):
    """``loss_spike``: the newest loss is above ``limit``."""

    limit: float = Field(10.0, gt=0.0, description="Largest tolerated loss.")


def loss_spike(ctx: RuleContext, s: LossSpikeSettings) -> RuleResult:
    gated = ctx.gate("loss_spike", s, "loss")
    if gated is not None:
        return gated
    loss = ctx.newest.value("loss") or 0.0
    if loss <= s.limit:
        return ctx.clear("loss_spike", f"loss {loss:g}")
    return ctx.fire(
        "loss_spike",
        observed={"loss": loss},
        thresholds={"limit": s.limit},
        message=f"loss {loss:g} above {s.limit:g}",
        action="lower the learning rate",
    )


LOSS_SPIKE_RULE = Rule(
    name="loss_spike",
    order=15,
    settings=LossSpikeSettings,
    check=loss_spike,
    reads=(("loss",),),
    doc=RuleDoc(
        signal="`loss`", threshold="> {limit:g}", window="newest step", action="lower the LR"
    ),
)
'''

_PROBE = """
import json
import service.detectors as det
from service.detectors import DetectorConfig, DetectorState, RunPolicy, StepRecord, evaluate
from service.detectors import compute_transitions, rule_inputs
from service.detectors.rule_docs import rules_table

config = DetectorConfig.model_validate({"loss_spike": {"limit": 2.0}})
policy = RunPolicy.model_validate({"auto_stop_rules": ["loss_spike"]})
history = [StepRecord(step=s, metrics={"loss": 1.0 + s}) for s in range(4)]
ev = evaluate(config, 8, history, DetectorState())
tr = compute_transitions(config, policy, ev, {})
state = DetectorState.from_json(tr.state.with_resolved({"loss_spike": 3}).to_json())
try:
    DetectorConfig.model_validate({"loss_spike": {"limit": "high"}})
    rejected = False
except ValueError:
    rejected = True
print(json.dumps({
    "file": det.__file__,
    "names": list(det.RULE_NAMES),
    "fields": list(DetectorConfig.model_fields),
    "status": ev.result("loss_spike").status.value,
    "order": [r.rule for r in ev.results],
    "stop": tr.stop,
    "inputs": rule_inputs()["loss_spike"],
    "table": rules_table(),
    "docstring": "``loss_spike``" in (det.__doc__ or ""),
    "resolved": dict(state.last_resolved),
    "rejected": rejected,
}))
"""


def test_a_new_rule_module_touches_only_its_own_file(tmp_path: Path) -> None:
    copy = tmp_path / "service"
    shutil.copytree(REPO / "service", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "detectors" / "rules_loss_spike.py").write_text(textwrap.dedent(_NEW_RULE_MODULE))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"].startswith(str(tmp_path))
    expected = [RULE_NAMES[0], "loss_spike", *RULE_NAMES[1:]]
    assert out["names"] == expected
    assert out["fields"] == ["history_steps", *expected]
    assert out["order"] == expected
    assert out["status"] == "firing"
    assert out["stop"] is True
    assert out["inputs"] == [["loss"]]
    row = "| `loss_spike` | `loss` | > 10 | newest step | warning | lower the LR | — |"
    assert row in out["table"].splitlines()
    assert out["docstring"] is True
    assert out["resolved"] == {"loss_spike": 3}
    assert out["rejected"] is True
