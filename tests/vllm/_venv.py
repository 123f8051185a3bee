"""The vLLM environment the tests drive: built by .ci/envs/vllm.sh (CI builds it before the
test run). Missing, the tests skip locally and fail in CI (CI=true or
SHARPWATCH_REQUIRE_SERVICES=1), saying how to build it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "envs" / "vllm.sh"


def vllm_python() -> str:
    """The environment's python (``SHARPWATCH_VLLM_PYTHON`` overrides the script's answer)."""
    python = (
        os.environ.get("SHARPWATCH_VLLM_PYTHON")
        or subprocess.run(
            ["bash", str(SCRIPT), "--where"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    if not Path(python).is_file() or not (Path(python).parents[1] / ".ready").is_file():
        message = f"the vLLM environment is not built ({python}): run bash .ci/envs/vllm.sh"
        if os.environ.get("CI") == "true" or os.environ.get("SHARPWATCH_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (CI: the vLLM tests must run, not skip)")
        pytest.skip(message)
    return python


def run_in_vllm_env(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in the vLLM environment with the checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # vLLM's default: the multi-process engine
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of host memory for the KV cache
    proc = subprocess.run(
        [vllm_python(), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        raise AssertionError(f"{args[0]} failed with exit code {proc.returncode}:\n{tail}")
    return proc
