"""Regenerate the rule table of docs/detectors.md from the rule registry:
``python docs/rules_table.py`` (from the repository root). The table lies between the
``rules-table`` markers; ``tests/service/detectors/test_registry.py`` fails when it drifts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.detectors.rule_docs import replace_table, rules_table

PAGE = Path(__file__).resolve().parent / "detectors.md"


def main() -> int:
    PAGE.write_text(replace_table(PAGE.read_text(), rules_table()))
    print(f"wrote the rule table of {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
