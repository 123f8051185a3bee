"""docs/science.md quotes the papers exactly (issue 13 item 8).

The misquotes are gone; every table, figure, theorem, appendix and section it cites for a seed
exists in that seed's text, and every two-decimal figure it quotes from a seed appears there. The
seed texts live outside the repository (``SHARPWATCH_SEEDS_DIR``, else ``shared/seeds`` beside
the checkout, where CI lays it, else /work/shared/seeds); the checks that need them skip where
they are absent (and fail instead with SHARPWATCH_REQUIRE_SERVICES=1, as in CI), the others
always run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

SCIENCE = Path(__file__).parents[1] / "docs" / "science.md"
_SEED_DIRS = [
    Path(p)
    for p in (
        os.environ.get("SHARPWATCH_SEEDS_DIR"),
        Path(__file__).resolve().parents[2] / "shared" / "seeds",  # beside the checkout (CI)
        "/work/shared/seeds",  # the developers' machines, for a clone made elsewhere
    )
    if p
]
SEEDS = next((d for d in _SEED_DIRS if d.is_dir()), _SEED_DIRS[0])


def _sections() -> list[tuple[str, str]]:
    """(heading, body) of every ``## `` section."""
    parts = re.split(r"^## ", SCIENCE.read_text(), flags=re.M)[1:]
    return [(p.split("\n", 1)[0], p) for p in parts]


def _seed_text(number: str) -> str:
    files = sorted(SEEDS.glob(f"{number}_*.txt"))
    if not files:
        message = f"seed {number} text not found under {SEEDS} (set SHARPWATCH_SEEDS_DIR)"
        if os.environ.get("SHARPWATCH_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return files[0].read_text()


def test_misquotes_are_gone() -> None:
    text = " ".join(SCIENCE.read_text().split())
    # in no table of seed 002; Table 4's IAC − DAPO PASS@8 is +0.20..+4.22
    assert "+6.2" not in text
    assert "Tables 2–5" not in text
    assert "grows with G and with coupling" not in text  # App. G: λ/ρ falls as coupling rises
    assert "R grows with coupling" not in text


def test_table_4_differences_quoted_are_the_tables() -> None:
    """The IAC − DAPO PASS@8 gains docs/science.md quotes, recomputed from Table 4's cells."""
    text = " ".join(SCIENCE.read_text().split())
    seed = _seed_text("002")
    table = seed[seed.index("Table 4.") : seed.index("the same setting with identical")]
    pass8 = table[table.index("PASS@8") :]
    rows = {
        line.split("\t")[-5].strip(): [float(re.sub("<.*?>", "", c)) for c in line.split("\t")[-4:]]
        for line in pass8.splitlines()
        if line.count("\t") >= 4
    }
    gains = [i - d for i, d in zip(rows["IAC"], rows["DAPO"], strict=True)]
    for benchmark, gain in zip(("Math500", "LightEval", "Minerva", "O-Bench"), gains, strict=True):
        assert f"{benchmark} +{gain:.2f}" in text
    both = [x - d for x, d in zip(rows["DAPO+IAC"], rows["DAPO"], strict=True)]
    assert f"+{min(both):.2f} (O-Bench) to +{max(both):.2f} (LightEval" in text


_CITATION = re.compile(
    r"\b(Table|Figure|Theorem|Corollary|Definition|Algorithm) (\d+(?:\.\d+)?)"
    r"|\bApp\. ([A-I])\b"
    r"|§(\d\.\d)"
)


def _cited_seeds(heading: str, body: str) -> list[str]:
    own = re.findall(r"seed (\d{3})", heading)
    return own or sorted(set(re.findall(r"seed (\d{3})", body)))


def _exists(seed: str, match: re.Match[str]) -> bool:
    kind, num, app, sec = match.groups()
    if kind is not None:
        return re.search(rf"{kind} {re.escape(num)}\b", seed) is not None
    if app is not None:
        return re.search(rf"^#+ {app}\. ", seed, flags=re.M) is not None
    return re.search(rf"^#+ {re.escape(sec)}\. ", seed, flags=re.M) is not None


def test_every_citation_exists_in_the_seed_it_is_attributed_to() -> None:
    checked = 0
    for heading, body in _sections():
        seeds = _cited_seeds(heading, body)
        if not seeds:
            continue
        for line in body.splitlines():
            # a line naming other seeds than its section's cites those
            named = re.findall(r"seed (\d{3})", line) or seeds
            texts = [_seed_text(n) for n in named]
            for m in _CITATION.finditer(line):
                assert any(_exists(t, m) for t in texts), (
                    f"{m.group(0)!r} not in seed {named}: {line}"
                )
                checked += 1
    assert checked >= 20


def test_quoted_figures_appear_in_their_seed() -> None:
    """Every number with two or more decimals in a seed's section appears in that seed, except the
    p*(G) values we compute (checked against the formula), the signed differences of Table 4's
    cells (recomputed in ``test_table_4_differences_quoted_are_the_tables``) and our own
    **Decision** sentences."""
    computed = {f"{1 - 2 ** (-1 / g):.4f}" for g in (8, 16)}
    checked = 0
    for heading, body in _sections():
        seeds = _cited_seeds(heading, body)
        if not seeds or heading.startswith("6."):  # §6 quotes our own runs
            continue
        texts = [_seed_text(n) for n in seeds]
        # a table's source column quotes the paper; its other columns are our settings
        quoted = "\n".join(
            line.rstrip(" |").rsplit("|", 1)[-1] if line.startswith("|") else line
            for line in body.splitlines()
        )
        # a **Decision** states our own setting, not a quote
        sentences = [x for x in re.split(r"\.\s", " ".join(quoted.split())) if "Decision" not in x]
        for num in re.findall(r"(?<![\d.+])\d+\.\d{2,}(?![\d.])", " ".join(sentences)):
            if num in computed:
                continue
            assert any(num in t for t in texts), f"{num} ({heading}) not in seeds {seeds}"
            checked += 1
    assert checked >= 15


def test_p_star_values_are_the_formula() -> None:
    text = SCIENCE.read_text()
    assert "p\\*(8) = 0.0830" in text
    assert f"{1 - 2 ** (-1 / 16):.4f}" == "0.0424"
    assert "0.0424" in text
