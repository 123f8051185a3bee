"""The live page speaks the wire's vocabularies (issue 15): every status, kind, severity, verdict
and source string its script compares against is a member of the enum the API answers with, its
run-status filter offers exactly the run statuses, and its stylesheet gives each state a badge.
No browser needed: these read the static files."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from service.wire import (
    AlertStatus,
    CommandKind,
    CommandStatus,
    RunSource,
    RunStatus,
    Severity,
    Verdict,
)

WEB = Path(__file__).parents[2] / "service" / "web"
SCRIPT = (WEB / "app.js").read_text()
STYLE = (WEB / "style.css").read_text()

# The script's names for the API's objects, and the enum of each field it compares.
FIELDS: dict[tuple[str, str], type[StrEnum]] = {
    ("run", "status"): RunStatus,
    ("run", "verdict"): Verdict,
    ("run", "source"): RunSource,
    ("c", "status"): CommandStatus,
    ("c", "kind"): CommandKind,
    ("a", "status"): AlertStatus,
    ("a", "severity"): Severity,
    ("b", "status"): AlertStatus,
    ("b", "severity"): Severity,
}
COMPARISON = re.compile(r'\b(\w+)\.(\w+) [!=]== "([^"]*)"')


def test_every_compared_string_is_a_member_of_its_vocabulary() -> None:
    checked = 0
    for name, field, value in COMPARISON.findall(SCRIPT):
        vocabulary = FIELDS.get((name, field))
        if vocabulary is None:
            continue
        assert value in {member.value for member in vocabulary}, (name, field, value)
        checked += 1
    assert checked >= 10, "the script's comparisons were not found: update the pattern"


def test_the_run_status_filter_offers_every_run_status() -> None:
    options = re.search(r'\.\.\.\[("all"(?:, "\w+")*)\]\.map', SCRIPT)
    assert options is not None
    assert re.findall(r'"(\w+)"', options.group(1)) == ["all", *(s.value for s in RunStatus)]


def test_every_state_has_a_badge_style() -> None:
    styled = set(re.findall(r"\.badge\.(\w+)", STYLE))
    for vocabulary in (Verdict, RunStatus, CommandStatus, AlertStatus, Severity):
        assert {member.value for member in vocabulary} <= styled, vocabulary.__name__
