"""docs/architecture.md stays a true map: every module and package of the code is named on it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "architecture.md").read_text()


def _named(path: str) -> bool:
    """``service/x.py`` counts as named when the page has it in backticks, whole or as one of a
    row's ``a.py``, ``b.py`` list after its folder."""
    if f"`{path}`" in PAGE or f"`{path}/`" in PAGE:
        return True
    folder, _, name = path.rpartition("/")
    rows = [line for line in PAGE.splitlines() if f"`{folder}/" in line]
    return any(re.search(rf"`{re.escape(name)}`", row) for row in rows)


def test_every_module_and_package_is_on_the_map() -> None:
    missing = []
    for package in ("service", "trainer_hooks"):
        for child in sorted((ROOT / package).iterdir()):
            if child.name.startswith("__") or child.name.startswith("."):
                continue
            if child.is_dir() and (child / "__init__.py").exists():
                if not _named(f"{package}/{child.name}"):
                    missing.append(f"{package}/{child.name}/")
            elif child.suffix == ".py" and not _named(f"{package}/{child.name}"):
                missing.append(f"{package}/{child.name}")
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_the_recipes_name_files_that_exist() -> None:
    recipes = PAGE.split("## Recipes", 1)[1]
    for path in re.findall(r"`((?:service|trainer_hooks|tests|docs)/[\w/]+\.py)`", recipes):
        assert (ROOT / path).exists(), path
