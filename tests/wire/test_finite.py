"""The wire's one non-finite rule: NaN, +inf and -inf travel as null (named in ``non_finite``
for a step metric); every finite float, however large, travels as itself (issue 15)."""

from __future__ import annotations

import math
import sys

import pytest

from service.detectors import StepRecord as DetectorRecord
from service.wire.finite import finite_or_none, is_finite, split_non_finite
from trainer_hooks import sanitize_record
from trainer_hooks._step_metrics import wire_metrics
from trainer_hooks.integrations._deferred import DeferredSender

LARGE = sys.float_info.max


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_both_infinities_are_non_finite(value: float) -> None:
    assert not is_finite(value)
    assert finite_or_none(value) is None


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-320, -LARGE, LARGE, 1e308])
def test_large_and_tiny_finite_values_pass_as_they_are(value: float) -> None:
    assert is_finite(value)
    assert finite_or_none(value) == value


def test_split_names_each_non_finite_metric_once_after_the_given_names() -> None:
    metrics = {"a": math.nan, "b": LARGE, "c": None, "d": -math.inf, "e": 2, "kl": math.inf}
    clean, names = split_non_finite(metrics, ["kl", "x"])
    assert clean == {"a": None, "b": LARGE, "c": None, "d": None, "e": 2.0, "kl": None}
    assert isinstance(clean["e"], float)
    assert names == ["kl", "x", "a", "d"]
    with pytest.raises(ValueError, match="could not convert"):
        split_non_finite({"a": "not a number"})  # type: ignore[dict-item]


def test_the_trainer_side_and_the_detectors_apply_the_same_rule() -> None:
    raw = {"b": LARGE, "a": math.nan, "c": -math.inf, "d": 0.5}
    expected = split_non_finite({k: raw[k] for k in sorted(raw)})
    assert wire_metrics(raw) == expected
    record = sanitize_record({"step": 1, "metrics": raw, "queries": [{"entropy": math.inf}]})
    assert (record["metrics"], record["non_finite"]) == split_non_finite(raw)
    assert record["queries"] == [{"entropy": None}]
    columns = {"query_id": ["a", "b"], "entropy": [math.inf, 0.5], "n_modes": [1, None]}
    record = sanitize_record({"step": 1, "queries": columns})
    want = {"query_id": ["a", "b"], "entropy": [None, 0.5], "n_modes": [1, None]}
    assert record["queries"] == want
    assert columns["entropy"][0] == math.inf  # the caller's record is not changed

    class Sink:
        def __init__(self) -> None:
            self.records: list[dict[str, object]] = []

        def submit(self, record: dict[str, object]) -> None:
            self.records.append(record)

    sink = Sink()
    deferred = DeferredSender(sink)
    deferred.submit({"step": 1, "metrics": {"entropy": 0.3}, "non_finite": []})
    deferred.complete({"loss": math.nan, "grad_norm": LARGE, "entropy": math.inf})
    (sent,) = sink.records
    assert sent["metrics"] == {"entropy": 0.3, "loss": None, "grad_norm": LARGE}
    assert sent["non_finite"] == ["loss"]

    detector = DetectorRecord(1, {"a": math.nan, "b": LARGE, "c": math.inf})
    assert detector.non_finite_names() == ("a", "c")
    assert detector.value("b") == LARGE
    assert detector.value("a") is None
