"""The rule registry: everything about the rules derives from the ``Rule`` values declared in the
``rules_*.py`` modules, so a new rule is one declaration in one file (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from service.detectors import (
    REGISTRY,
    RULE_NAMES,
    ActionKind,
    DetectorConfig,
    DetectorState,
    Rule,
    RuleName,
    RuleRegistry,
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
from service.detectors.evaluate import RULES
from service.detectors.rule_docs import BEGIN, END, replace_table, rules_table
from tests.service.detectors._example_rule import ENTROPY_CEILING_RULE, EntropyCeilingSettings

REPO = Path(__file__).resolve().parents[3]
NEW_MODULE = "rules_entropy_ceiling.py"


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


# --- a rule defined outside the package (tests/service/detectors/_example_rule.py) ---------------

ROW = (
    "| `entropy_ceiling` | `entropy` | > 5 nats | newest step | critical | "
    "check the sampling temperature | — |"
)


def test_a_rule_defined_in_a_test_is_evaluated_configurable_and_listed() -> None:
    rules = REGISTRY.extended(ENTROPY_CEILING_RULE)
    config_class = config_model(rules)
    names = rules.names
    assert names == (RULE_NAMES[0], "entropy_ceiling", *RULE_NAMES[1:])
    assert tuple(config_class.model_fields) == ("history_steps", *names)

    config = config_class.model_validate({"entropy_ceiling": {"ceiling": 2.0}})
    assert config.settings(ENTROPY_CEILING_RULE).ceiling == 2.0
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
    assert ROW in rules_table(rules).splitlines()
    # the built-in rules are untouched
    assert "entropy_ceiling" not in DetectorConfig.model_fields
    assert "entropy_ceiling" not in RULE_NAMES


def test_the_registry_refuses_clashing_rules() -> None:
    rest = (
        EntropyCeilingSettings,
        ENTROPY_CEILING_RULE.check,
        ENTROPY_CEILING_RULE.reads,
        ENTROPY_CEILING_RULE.doc,
    )
    with pytest.raises(ValueError, match="two rules named"):
        REGISTRY.extended(Rule("entropy_floor", 999, *rest))
    with pytest.raises(ValueError, match="share order 60"):
        REGISTRY.extended(Rule("other", 60, *rest))
    with pytest.raises(ValueError, match="reserved"):
        RuleRegistry([Rule("history_steps", 1, *rest)])
    with pytest.raises(ValueError, match="lower-case identifier"):
        Rule("Bad-Name", 1, *rest)
    with pytest.raises(KeyError):
        DetectorConfig().settings(ENTROPY_CEILING_RULE)


_PROBE = """
import json
import service.detectors as det
from service.detectors import DetectorConfig, DetectorState, RunPolicy, StepRecord, evaluate
from service.detectors import compute_transitions, rule_inputs
from service.detectors.rule_docs import rules_table

config = DetectorConfig.model_validate({"entropy_ceiling": {"ceiling": 2.0}})
policy = RunPolicy.model_validate({"auto_stop_rules": ["entropy_ceiling"]})
history = [StepRecord(step=s, metrics={"entropy": 3.0}) for s in range(3)]
ev = evaluate(config, 8, history, DetectorState())
tr = compute_transitions(config, policy, ev, {})
state = DetectorState.from_json(tr.state.with_resolved({"entropy_ceiling": 3}).to_json())
try:
    DetectorConfig.model_validate({"entropy_ceiling": {"ceiling": "high"}})
    rejected = False
except ValueError:
    rejected = True
print(json.dumps({
    "file": det.__file__,
    "names": list(det.RULE_NAMES),
    "fields": list(DetectorConfig.model_fields),
    "status": ev.result("entropy_ceiling").status.value,
    "order": [r.rule for r in ev.results],
    "stop": tr.stop,
    "inputs": rule_inputs()["entropy_ceiling"],
    "table": rules_table(),
    "docstring": "``entropy_ceiling``" in (det.__doc__ or ""),
    "resolved": dict(state.last_resolved),
    "rejected": rejected,
}))
"""


def test_a_new_rule_module_touches_only_its_own_file(tmp_path: Path) -> None:
    copy = tmp_path / "service"
    shutil.copytree(REPO / "service", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).with_name("_example_rule.py"), copy / "detectors" / NEW_MODULE)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"].startswith(str(tmp_path))
    expected = [RULE_NAMES[0], "entropy_ceiling", *RULE_NAMES[1:]]
    assert out["names"] == expected
    assert out["fields"] == ["history_steps", *expected]
    assert out["order"] == expected
    assert out["status"] == "firing"
    assert out["stop"] is True
    assert out["inputs"] == [["entropy"]]
    assert ROW in out["table"].splitlines()
    assert out["docstring"] is True
    assert out["resolved"] == {"entropy_ceiling": 3}
    assert out["rejected"] is True
