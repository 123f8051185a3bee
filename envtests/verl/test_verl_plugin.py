"""veRL 0.9.1 itself, in its own venv (.ci/envs/verl.sh), with the sharpwatch distribution
installed (not imported from the checkout): its ``verl.plugins`` entry point, loaded by
``import verl`` in a fresh process, registers ``iac_grpo``; veRL's own registry and v1 advantage
path compute, on veRL-shaped inputs, advantages equal to a float64 reference written here; and on
the v1 trainer's logging path (veRL's ``Tracking``) our numbers reach veRL's TensorBoard backend
as ``sharpwatch/*`` while the step records reach a real service."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
G = 4


# -- the reference: veRL's GRPO outcome advantage, then IAC (science.md §3), loop by loop ------
def reference(
    scores: list[float], uids: list[str], *, alpha: float, norm: bool, eps: float = 1e-6
) -> list[float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for s, u in zip(scores, uids, strict=True):
        groups[u].append(s)
    out = []
    for s, u in zip(scores, uids, strict=True):
        vals = groups[u]
        if len(vals) == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        a = (s - mean) / (std + eps) if norm else s - mean
        successes = sum(v >= 0.5 for v in vals)
        out.append(a * (len(vals) - successes) ** alpha if a > 0 else a)
    return out


def reference_success_rate(scores: list[float], uids: list[str]) -> float:
    """The batch success rate of science.md §1: the mean over groups of S⁺/G."""
    groups: dict[str, list[float]] = defaultdict(list)
    for s, u in zip(scores, uids, strict=True):
        groups[u].append(s)
    return sum(sum(v >= 0.5 for v in vals) / len(vals) for vals in groups.values()) / len(groups)


def batch(seed: int) -> dict[str, Any]:
    """veRL-shaped inputs: rows not grouped, uneven groups and a singleton, the outcome reward on
    each response's last token, a response mask."""
    import random

    rng = random.Random(seed)
    uids = ["u-a"] * G + ["u-b"] * G + ["u-c"] * 3 + ["u-d"]
    rng.shuffle(uids)
    t = 6
    lengths = [rng.randint(1, t) for _ in uids]
    scores = [float(rng.random() > 0.4) for _ in uids]
    rewards = [[0.0] * t for _ in uids]
    for row, (n, s) in enumerate(zip(lengths, scores, strict=True)):
        rewards[row][n - 1] = s
    mask = [[1.0 if k < n else 0.0 for k in range(t)] for n in lengths]
    return {"uids": uids, "rewards": rewards, "mask": mask, "scores": scores, "lengths": lengths}


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """A fresh interpreter of this venv; nothing of ours is imported unless the code does."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPWATCH_")}
    full_env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    full_env.update(env or {})
    out = subprocess.run(
        [sys.executable, "-P", "-c", textwrap.dedent(code)],
        env=full_env,
        cwd=str(ROOT.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    return lines[-1][len("RESULT ") :]


def test_the_installed_distribution_declares_the_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="verl.plugins") if e.name == "sharpwatch"]
    assert ep.value == "trainer_hooks.integrations._verl_plugin"
    assert ep.dist is not None
    assert ep.dist.name == "sharpwatch"
    import trainer_hooks

    # The code under test is the installed distribution's, not the checkout's.
    assert not Path(trainer_hooks.__file__).resolve().is_relative_to(ROOT)


CALL_REGISTRY = """
    import json, sys
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    cases = json.loads(CASES)
    loaded = sorted(m for m in sys.modules if m.startswith("trainer_hooks"))
    try:
        fn = core_algos.get_adv_estimator_fn("iac_grpo")
    except ValueError as exc:
        print("RESULT " + json.dumps({"error": str(exc), "loaded": loaded}))
        raise SystemExit(0)
    results = []
    for case in cases:
        b = case["batch"]
        config = OmegaConf.create(
            {"norm_adv_by_std_in_grpo": case["norm"], "iac_alpha": case["alpha"]}
        )
        adv, ret = fn(
            token_level_rewards=torch.tensor(b["rewards"]),
            response_mask=torch.tensor(b["mask"]),
            index=np.array(b["uids"], dtype=object),
            config=config,
        )
        results.append({"adv": adv.tolist(), "same": bool(torch.equal(adv, ret))})
    print("RESULT " + json.dumps(
        {"module": fn.__module__, "name": fn.__name__, "loaded": loaded, "results": results}
    ))
"""


def _cases() -> list[dict[str, Any]]:
    return [
        {"batch": batch(seed), "alpha": alpha, "norm": norm}
        for seed in (0, 1)
        for alpha in (0.0, 1.0, 1.5)
        for norm in (True, False)
    ]


def test_verl_registry_returns_ours_loaded_by_the_plugin_and_it_matches_the_reference() -> None:
    cases = _cases()
    code = f"CASES = {json.dumps(json.dumps(cases))}\n" + textwrap.dedent(CALL_REGISTRY)
    out = json.loads(run_python(code))
    assert out["module"] == "trainer_hooks.integrations.verl"
    assert out["name"] == "compute_iac_grpo_advantage"
    # Only veRL was imported by the code: the plugin mechanism loaded ours.
    assert "trainer_hooks.integrations._verl_plugin" in out["loaded"]
    for case, got in zip(cases, out["results"], strict=True):
        b = case["batch"]
        want = reference(b["scores"], b["uids"], alpha=case["alpha"], norm=case["norm"])
        assert got["same"]  # returns == advantages, as veRL's outcome estimators
        for row, (n, a) in enumerate(zip(b["lengths"], want, strict=True)):
            expected_row = [a if k < n else 0.0 for k in range(len(b["mask"][0]))]
            assert got["adv"][row] == pytest.approx(expected_row, abs=1e-5), (case, row)
    # IAC changed something where it should (α > 0 and a group with a positive advantage).
    assert out["results"][2]["adv"] != out["results"][0]["adv"]


def test_without_plugins_verl_does_not_know_the_estimator() -> None:
    code = f"CASES = {json.dumps(json.dumps(_cases()[:1]))}\n" + textwrap.dedent(CALL_REGISTRY)
    out = json.loads(run_python(code, env={"VERL_USE_EXTERNAL_PLUGINS": "none"}))
    assert "iac_grpo" in out["error"]
    assert out["loaded"] == []
    # Naming the plugin loads it.
    out = json.loads(run_python(code, env={"VERL_USE_EXTERNAL_PLUGINS": "sharpwatch"}))
    assert out["module"] == "trainer_hooks.integrations.verl"


# -- the v1 trainer path against a real service -----------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """The real service, run by the project's own environment (its python:
    SHARPWATCH_SERVICE_PYTHON, which .ci/envs/run-verl-tests.sh sets), on a scratch SQLite file."""
    python = os.environ.get("SHARPWATCH_SERVICE_PYTHON")
    assert python, "set SHARPWATCH_SERVICE_PYTHON to the project environment's python"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPWATCH_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "SHARPWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'sw.db'}",
        }
    )
    log_path = tmp_path / "service.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [python, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=str(ROOT),
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log_tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the service did not start: {log_tail}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()


V1_DRIVER = """
    import json, time
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    import verl  # the plugin loads here, as in veRL's v1 driver (a Ray actor)
    from verl import DataProto
    from verl.trainer.ppo.v1 import trainer_base
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
    from verl.utils.tracking import Tracking

    # The v1 trainer logs through this very class (PPOTrainer.fit: self.logger = Tracking(...),
    # then self.logger.log(data=metrics, step=self.global_steps)).
    assert trainer_base.Tracking is Tracking
    import inspect
    fit = inspect.getsource(trainer_base.PPOTrainer.fit)
    assert "self.logger = Tracking(" in fit and "self.logger.log(data=metrics" in fit

    batches = json.loads(BATCHES)
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "iac_alpha": 1.0})
    tracking = Tracking(
        project_name="sw", experiment_name="v1", default_backend=["tensorboard"], config={}
    )
    advantages = []
    for step, b in enumerate(batches, start=1):
        data = DataProto.from_dict(
            tensors={
                "token_level_rewards": torch.tensor(b["rewards"]),
                "response_mask": torch.tensor(b["mask"]),
            },
            non_tensors={"uid": np.array(b["uids"], dtype=object)},
        )
        keys = [f"{u}_0_0" for u in b["uids"]]
        data = compute_advantage_for_multi_trajectories(
            data, batch_keys=keys, adv_estimator="iac_grpo", num_repeat=4,
            norm_adv_by_std_in_grpo=True, config=config,
        )
        advantages.append(data.batch["advantages"].tolist())
        metrics = {"actor/entropy": 1.0 - 0.1 * step, "actor/pg_loss": 0.25,
                   "critic/score/mean": float(np.mean(b["scores"]))}
        tracking.log(data=metrics, step=step)
        if step == 1:  # let the background status read the service once
            from trainer_hooks.integrations import verl as sw
            deadline = time.monotonic() + 30
            while sw._active_tap.status.open_alerts is None and time.monotonic() < deadline:
                time.sleep(0.05)
    tracking.finish(exit_code=0)
    print("RESULT " + json.dumps({"advantages": advantages}))
"""


def test_v1_path_streams_steps_and_puts_sharpwatch_numbers_in_verl_tracking(
    service: str, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    batches = [batch(seed) for seed in (10, 11, 12)]
    code = f"BATCHES = {json.dumps(json.dumps(batches))}\n" + textwrap.dedent(V1_DRIVER)
    out = json.loads(
        run_python(
            code,
            env={
                "SHARPWATCH_URL": service,
                "SHARPWATCH_RUN_NAME": "verl-v1",
                "SHARPWATCH_GROUP_SIZE": str(G),
                "SHARPWATCH_STATUS_INTERVAL": "0.05",
                "TENSORBOARD_DIR": str(tmp_path / "tb"),
            },
        )
    )
    # veRL's v1 advantage path used ours, with the session's α (1.0).
    for b, got in zip(batches, out["advantages"], strict=True):
        want = reference(b["scores"], b["uids"], alpha=1.0, norm=True)
        for row, (n, a) in enumerate(zip(b["lengths"], want, strict=True)):
            assert got[row][:n] == pytest.approx([a] * n, abs=1e-5)
            assert all(v == 0.0 for v in got[row][n:])
    runs = httpx.get(f"{service}/api/v1/runs").json()
    (run,) = [r for r in runs["items"] if r["name"] == "verl-v1"]
    assert run["status"] == "finished"  # Tracking.finish closed the run the plugin opened
    steps = httpx.get(f"{service}/api/v1/runs/{run['id']}/steps").json()["items"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    # veRL's TensorBoard backend got sharpwatch/* at veRL's step (global_steps = record + 1).
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    series = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in tags}
    for name in ("entropy", "success_rate", "p_star", "alpha", "open_alerts"):
        assert f"sharpwatch/{name}" in tags, sorted(tags)
    for verl_step, record, b in zip([1, 2, 3], steps, batches, strict=True):
        metrics = record["metrics"]
        assert metrics["entropy"] == pytest.approx(1.0 - 0.1 * verl_step)
        assert series["sharpwatch/entropy"][verl_step] == pytest.approx(1.0 - 0.1 * verl_step)
        assert series["sharpwatch/success_rate"][verl_step] == pytest.approx(
            reference_success_rate(b["scores"], b["uids"]), abs=1e-6
        )
        assert metrics["success_rate"] == pytest.approx(
            series["sharpwatch/success_rate"][verl_step], abs=1e-6
        )
        assert series["sharpwatch/p_star"][verl_step] == pytest.approx(1 - 2 ** (-1 / G))
        assert series["sharpwatch/alpha"][verl_step] == 1.0
        assert series["actor/entropy"][verl_step] == pytest.approx(1.0 - 0.1 * verl_step)
    alerts = httpx.get(f"{service}/api/v1/runs/{run['id']}/collapse").json()["open_alerts"]
    assert series["sharpwatch/open_alerts"][3] == float(len(alerts))


RAY_DRIVER = """
    import json, os
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class TaskRunner:  # where veRL's v1 driver runs: a Ray actor, another process
        def run(self, batch):
            import sys
            before = sorted(m for m in sys.modules if m.startswith(("trainer_hooks", "verl")))
            import numpy as np
            import torch
            from omegaconf import OmegaConf
            from verl import DataProto
            from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
            from verl.utils.tracking import Tracking

            tracking = Tracking(
                project_name="sw", experiment_name="ray", default_backend=["console"], config={}
            )
            data = DataProto.from_dict(
                tensors={
                    "token_level_rewards": torch.tensor(batch["rewards"]),
                    "response_mask": torch.tensor(batch["mask"]),
                },
                non_tensors={"uid": np.array(batch["uids"], dtype=object)},
            )
            data = compute_advantage_for_multi_trajectories(
                data, batch_keys=[f"{u}_0_0" for u in batch["uids"]], adv_estimator="iac_grpo",
                num_repeat=4, config=OmegaConf.create({"iac_alpha": 1.0}),
            )
            tracking.log(data={"actor/entropy": 0.5}, step=1)
            tracking.finish(exit_code=0)
            return {"pid": os.getpid(), "before": before,
                    "advantages": data.batch["advantages"].tolist()}

    out = ray.get(TaskRunner.remote().run.remote(json.loads(BATCH)))
    out["driver_pid"] = os.getpid()
    ray.shutdown()
    print("RESULT " + json.dumps(out))
"""


def test_in_a_ray_actor_like_the_v1_driver(service: str) -> None:
    """The v1 driver is a Ray actor: nothing the launch script imports reaches it. The plugin
    registers iac_grpo there, and the SHARPWATCH_* environment of the launch opens the run."""
    b = batch(20)
    code = f"BATCH = {json.dumps(json.dumps(b))}\n" + textwrap.dedent(RAY_DRIVER)
    out = json.loads(
        run_python(code, env={"SHARPWATCH_URL": service, "SHARPWATCH_RUN_NAME": "verl-ray"})
    )
    assert out["pid"] != out["driver_pid"]
    assert out["before"] == []  # the actor had imported neither veRL nor ours
    want = reference(b["scores"], b["uids"], alpha=1.0, norm=True)
    for row, (n, a) in enumerate(zip(b["lengths"], want, strict=True)):
        assert out["advantages"][row][:n] == pytest.approx([a] * n, abs=1e-5)
    runs = httpx.get(f"{service}/api/v1/runs").json()["items"]
    (run,) = [r for r in runs if r["name"] == "verl-ray"]
    assert run["status"] == "finished"
    assert run["group_size"] == G
    steps = httpx.get(f"{service}/api/v1/runs/{run['id']}/steps").json()["items"]
    assert [s["step"] for s in steps] == [0]
    assert steps[0]["metrics"]["entropy"] == 0.5
