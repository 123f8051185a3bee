"""DLCLogitsProcessor against vLLM 0.32's own interface classes and loaders (no engine): both
the V1 runner's and Model Runner V2's loaders accept it by FQCN and by entry point, and built as
each runner builds it, it subtracts μ·f_φ(prefix) from enabled rows only (V2: rows reordered
every step, tokens read from the runner's all_token_ids buffer)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.vllm._venv import ROOT, run_in_vllm_env

sys.path.insert(0, str(ROOT / "examples"))
import tiny_lm

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(600)


def test_processor_implements_both_model_runner_interfaces(tmp_path: Path) -> None:
    tiny_lm.build_llama(tmp_path / "policy", 20)
    tiny_lm.build_llama(tmp_path / "memory", 20, hidden=64, layers=1, seed=1, logit_scale=4.0)
    out = tmp_path / "report.json"
    run_in_vllm_env(
        [
            "tests/vllm/interface_check.py",
            str(tmp_path / "policy"),
            str(tmp_path / "memory"),
            str(out),
        ],
        timeout=300,
    )
    report = json.loads(out.read_text())
    for key in ("v1_subclass", "v2_subclass", "v1_fqcn", "v2_fqcn"):
        assert report[key] is True, key
    for key in ("v1_entry_point", "v2_entry_point", "v2_runner", "inert_without_config"):
        assert report[key] is True, key
    assert report["v2_added"] == [True, False]  # the opted-out request is declined
    assert report["v2_max_error"] < 1e-5
    assert report["v1_error"] < 1e-5
    assert report["v1_argmax_invariant"] is False
    assert 'extra_args["sharpwatch_dlc"] must be true or false' in report["validate"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_importing_the_integration_without_vllm_says_how_to_get_it() -> None:
    with pytest.raises(ImportError, match=r"vllm\.sh"):
        import trainer_hooks.integrations.vllm  # noqa: F401
