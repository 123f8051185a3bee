"""The GPU check (issue 21): everything a session lent a GPU machine runs, in one call, in minutes.

    bash benchmarks/gpu_wheels.sh                      # here: the wheels the device image lacks
    # on the device (the `run` tool), from the repository root:
    bash benchmarks/gpu_check.sh "$OUT"                # installs the wheels, then runs this file

What it measures, each into one JSON results file (``--out``):

1. ``environment``: torch, CUDA, the device.
2. ``cuda_tests``: the CUDA-only tests (``pytest -k cuda``), passed / failed / skipped.
3. ``monitor_step``: ``Monitor.step`` at B=512 × G=16 × T=1024 (the inputs of bench_hooks) on the
   device, median ms over repeats (goal on a GPU: < 2 ms), and the number of device→host
   synchronisations in one step, counted with ``torch.cuda.set_sync_debug_mode("error")``
   (every sync outside the one allowed copy raises): goal exactly 1.
4. ``entropy_bandwidth``: token entropy from bf16 logits [8 × 4096 × 152064] (10 GB), as bytes
   read per second, against the device's measured copy bandwidth (goal: ≥ 50 % of it).
5. ``tiny_grpo``: ``examples/tiny_grpo.py --device cuda`` (a short run), wall time and result.

Without CUDA it runs the same code on the CPU with smaller shapes (a dry run) and says so in
every section (``"device": "cpu"``, ``"fallback": true``). ``--quick`` shrinks everything further
(the test suite's dry run).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trainer_hooks._sections as monitor_mod  # noqa: E402
from trainer_hooks import Monitor, StepInputs, grpo_advantages, token_entropy  # noqa: E402

GPU_ENTROPY_SHAPE = (8, 4096, 152064)
CPU_ENTROPY_SHAPE = (1, 256, 152064)
QUICK_ENTROPY_SHAPE = (1, 32, 152064)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "device_name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


def cuda_tests() -> dict[str, Any]:
    """The CUDA-only tests; without CUDA they skip, and the section says so."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-k",
            "cuda",
            "tests/trainer_hooks",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = [line for line in result.stdout.splitlines() if line.strip()][-1:] or [""]
    return {
        "returncode": result.returncode,
        "summary": tail[0],
        "seconds": round(time.perf_counter() - started, 1),
        "fallback": not torch.cuda.is_available(),
        "passed": result.returncode in (0, 5) and "failed" not in tail[0],
    }


def _step_inputs(device: torch.device, b: int, g: int, t: int) -> StepInputs:
    gen = torch.Generator().manual_seed(0)
    rewards = (torch.rand(b, g, generator=gen) < torch.rand(b, 1, generator=gen)).float()
    keys = [str(int(k)) for k in torch.randint(0, 6, (b * g,), generator=gen)]
    return StepInputs(
        rewards=rewards.to(device),
        advantages=grpo_advantages(rewards).to(device),
        token_entropy=torch.rand(b, g, t, generator=gen).to(device),
        mask=torch.ones(b, g, t).to(device),
        answer_keys=keys,
        oracle_rewards=rewards.to(device),
        ref_logprobs=(-torch.rand(b, g, generator=gen) * 5).to(device),
        loss=torch.tensor(0.1, device=device),
        grad_norm=1.0,
        kl=0.01,
    )


def monitor_step(quick: bool = False) -> dict[str, Any]:
    device = _device()
    b, g, t = (64, 16, 128) if quick else (512, 16, 1024)
    inputs = _step_inputs(device, b, g, t)
    monitor = Monitor(group_size=g, kl_beta=0.04)
    for _ in range(3):
        monitor.step(inputs)
    _sync(device)
    repeats = 5 if quick else 50
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        monitor.step(inputs)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "device": device.type,
        "fallback": device.type != "cuda",
        "shape": [b, g, t],
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, 3),
        "goal_ms": 2.0 if device.type == "cuda" else 3.0,
        "host_syncs_per_step": _count_syncs(monitor, inputs, device),
    }


def _count_syncs(monitor: Monitor, inputs: StepInputs, device: torch.device) -> int | None:
    """Device→host synchronisations in one step: the allowed copy (``to_host``) is counted; any
    other sync raises under ``set_sync_debug_mode("error")``. On the CPU nothing synchronises:
    only the ``to_host`` calls are counted."""
    original: Callable[[torch.Tensor], list[float]] = monitor_mod.to_host
    calls = 0

    def counted(packed: torch.Tensor) -> list[float]:
        nonlocal calls
        calls += 1
        if device.type != "cuda":
            return original(packed)
        torch.cuda.set_sync_debug_mode(0)
        try:
            return original(packed)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monitor_mod.to_host = counted  # type: ignore[assignment]
    try:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        monitor.step(inputs)
    except RuntimeError as exc:  # an unexpected synchronisation
        print(f"monitor_step: hidden sync: {exc}", file=sys.stderr)
        return None
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
        monitor_mod.to_host = original  # type: ignore[assignment]
    return calls


def _copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Device memory bandwidth as bytes moved (read + write) per second by a plain copy."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / min(times)


def entropy_bandwidth(quick: bool = False) -> dict[str, Any]:
    device = _device()
    if device.type == "cuda":
        shape = GPU_ENTROPY_SHAPE
    else:
        shape = QUICK_ENTROPY_SHAPE if quick else CPU_ENTROPY_SHAPE
    logits = torch.randn(shape, device=device, dtype=torch.bfloat16) * 3 + 20
    nbytes = logits.numel() * logits.element_size()
    token_entropy(logits)
    _sync(device)
    times = []
    for _ in range(2 if quick else 5):
        t0 = time.perf_counter()
        token_entropy(logits)
        _sync(device)
        times.append(time.perf_counter() - t0)
    read_per_s = nbytes / min(times)
    copy = _copy_bandwidth(device, min(nbytes, 4 * 2**30))
    return {
        "device": device.type,
        "fallback": device.type != "cuda",
        "shape": list(shape),
        "dtype": "bfloat16",
        "gb": round(nbytes / 1e9, 3),
        "best_ms": round(min(times) * 1e3, 2),
        "read_gb_per_s": round(read_per_s / 1e9, 1),
        "copy_gb_per_s": round(copy / 1e9, 1),
        "share_of_copy": float(f"{read_per_s / copy:.3g}"),  # 3 significant digits: tiny on a CPU
        "goal_share": 0.5,
    }


def tiny_grpo(quick: bool = False) -> dict[str, Any]:
    device = _device()
    steps = "3" if quick else "60"
    command = [
        sys.executable, "examples/tiny_grpo.py", "--device", device.type,
        "--steps", steps, "--seeds", "0",
    ]  # fmt: skip
    if quick:
        command += ["--sft-steps", "5"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=480)
    return {
        "device": device.type,
        "fallback": device.type != "cuda",
        "command": " ".join(command[1:]),
        "returncode": result.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "tail": result.stdout.strip().splitlines()[-3:] + result.stderr.strip().splitlines()[-3:],
    }


SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "monitor_step": monitor_step,
    "entropy_bandwidth": entropy_bandwidth,
    "tiny_grpo": tiny_grpo,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results file (JSON)")
    parser.add_argument("--quick", action="store_true", help="small shapes (CI's dry run)")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["cuda_tests", *SECTIONS], help="sections to skip"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"environment": environment()}
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is absent: running the CPU fallbacks (a dry run)", file=sys.stderr)
    if "cuda_tests" not in args.skip:
        results["cuda_tests"] = cuda_tests()
    for name, section in SECTIONS.items():
        if name in args.skip:
            continue
        try:
            results[name] = section(args.quick)
        except Exception as exc:  # one broken section must not lose the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"gpu_check: results in {args.out}", file=sys.stderr)
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
