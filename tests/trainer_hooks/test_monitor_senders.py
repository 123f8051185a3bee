"""Monitor: a list of senders (add/remove), per-section metrics named by the metric table."""

from __future__ import annotations

import pytest
import torch

from service.wire.metrics import HOOK_STEP_METRIC_NAMES, STEP_METRIC_NAMES
from service.wire.query import QUERY_FIELDS
from tests.trainer_hooks.test_monitor import G, _inputs, _Sink
from trainer_hooks import (
    ConfigurationError,
    Monitor,
    watch,
)
from trainer_hooks._record import DeferredRecord
from trainer_hooks._sections import SECTIONS, StepPacker
from trainer_hooks.integrations._deferred import DeferredSender, hold_records


class _DeferredSink(_Sink):
    def __init__(self) -> None:
        super().__init__()
        self.deferred: list[DeferredRecord] = []

    def submit_deferred(self, record: DeferredRecord) -> None:
        self.deferred.append(record)


class _Broken:
    def submit(self, record: dict[str, object]) -> None:
        raise RuntimeError("sender down")


def test_every_sender_gets_each_record_in_order_added() -> None:
    first, second = _Sink(), _DeferredSink()
    m = Monitor(group_size=G, kl_beta=0.05, sender=first)
    m.add_sender(second)
    assert m.senders == (first, second)
    res = m.step(_inputs())
    assert first.records == [res.record]
    assert len(second.deferred) == 1
    assert second.records == []
    assert second.deferred[0].build() is res.record  # one record, built once, shared


def test_removed_sender_gets_nothing_more() -> None:
    a, b = _Sink(), _Sink()
    m = Monitor(group_size=G, kl_beta=0.05)
    m.add_sender(a)
    m.add_sender(b)
    m.step(_inputs())
    m.remove_sender(a)
    m.step(_inputs())
    assert [r["step"] for r in a.records] == [0]
    assert [r["step"] for r in b.records] == [0, 1]
    assert m.senders == (b,)


def test_sender_list_is_validated() -> None:
    a = _Sink()
    m = Monitor(group_size=G, kl_beta=0.05, sender=a)
    with pytest.raises(ConfigurationError, match="already attached"):
        m.add_sender(a)
    with pytest.raises(ConfigurationError, match="not attached"):
        m.remove_sender(_Sink())
    with pytest.raises(ConfigurationError, match="StepSender"):
        m.add_sender(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="StepSender"):
        Monitor(group_size=G, kl_beta=0.05, sender=object())  # type: ignore[arg-type]


def test_a_failing_sender_does_not_starve_the_others() -> None:
    ok = _Sink()
    m = Monitor(group_size=G, kl_beta=0.05, sender=_Broken())
    m.add_sender(ok)
    m.step(_inputs())
    m.step(_inputs())
    assert m.sender_errors == 2
    assert [r["step"] for r in ok.records] == [0, 1]


def test_hold_records_joins_the_senders_and_keeps_the_others() -> None:
    """An integration's DeferredSender is added to the monitor's list; a sender the loop
    attached itself keeps getting every record at once."""
    mine = _Sink()
    with watch(None, name="senders", group_size=G, kl_beta=0.05, sender=mine) as run:
        deferred = hold_records(run)
        assert isinstance(deferred, DeferredSender)
        assert run.monitor.senders == (mine, deferred)
        res = run.step(_inputs())
        assert mine.records == [res.record]
        assert deferred.pending_step == 0
        assert deferred.complete({"entropy": 0.5}) == 0


def test_every_metric_the_monitor_emits_is_in_the_metric_table() -> None:
    m = Monitor(group_size=G, kl_beta=0.05)
    inputs = _inputs()
    res = m.step(inputs)
    table = STEP_METRIC_NAMES | HOOK_STEP_METRIC_NAMES
    passthrough = set(inputs.extra)
    assert set(res.metrics) - passthrough <= table, set(res.metrics) - passthrough - table
    columns = res.record["queries"]
    assert isinstance(columns, dict)
    assert {f.name for f in QUERY_FIELDS} <= set(columns)  # every input given: every column


def test_a_section_cannot_emit_a_name_outside_the_table() -> None:
    pk = StepPacker(torch.device("cpu"))
    with pytest.raises(KeyError, match="not in the metric table"):
        pk.add("entropy_typo", torch.tensor(1.0))
    pk.add("entropy", torch.tensor(1.0))
    pk.add_passthrough("lr", torch.tensor(1e-6))  # the caller's own names pass through
    assert set(pk.fetch()) == {"entropy", "lr"}


def test_sections_are_small_named_units() -> None:
    names = [s.__name__ for s in SECTIONS]
    assert names.index("iac_section") < names.index("zprime_section")
    assert names.index("length_section") < names.index("repetition_section")
    assert all(n.endswith("_section") for n in names)
