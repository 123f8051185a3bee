"""The ``sharpwatch/*`` numbers for the trainer's loggers, and the service status behind
open alerts and the Model Collapse Step (a real service)."""

from __future__ import annotations

import time

import pytest
import torch

from tests._servers import ServerThread
from trainer_hooks import StepInputs, watch
from trainer_hooks.integrations._logged import (
    LOGGED_METRICS,
    LOGGED_PREFIX,
    ServiceStatus,
    logged_metrics,
)


def test_logged_metrics_copies_what_exists_and_nothing_else() -> None:
    metrics = {"entropy": 0.25, "success_rate": 0.5, "alpha": 1.0, "log_zprime_mean": None}
    metrics["kl"] = 0.1  # not one of ours to re-log
    out = logged_metrics(metrics)
    assert out == {
        "sharpwatch/entropy": 0.25,
        "sharpwatch/success_rate": 0.5,
        "sharpwatch/alpha": 1.0,
    }
    assert logged_metrics({"entropy": float("nan")}) == {}
    assert all(LOGGED_PREFIX + name not in out for name in ("log_zprime_mean", "kl"))
    assert "log_zprime_raw_mean" in LOGGED_METRICS
    assert "log_zprime_mean" in LOGGED_METRICS


def test_service_status_reads_open_alerts_and_collapse_step(sqlite_server: ServerThread) -> None:
    detectors = {"entropy_floor": {"floor": 5.0, "window": 1}}
    policy = {"auto_stop_rules": [], "auto_alpha": False}
    with watch(
        sqlite_server.url,
        name="status",
        group_size=2,
        kl_beta=0.1,
        detectors=detectors,
        policy=policy,
    ) as run:
        status = ServiceStatus(run, interval=0.05).start()
        deadline = time.monotonic() + 15
        while status.open_alerts is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert status.open_alerts == 0
        rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        oracle = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # every pseudo-reward disagrees
        result = run.step(
            StepInputs(
                rewards=rewards,
                oracle_rewards=oracle,
                token_entropy=torch.full((2, 2, 3), 0.5),
                mask=torch.ones(2, 2, 3),
            )
        )
        deadline = time.monotonic() + 15
        while (
            status.open_alerts != 2 or status.model_collapse_step != 0
        ) and time.monotonic() < deadline:
            time.sleep(0.02)
        # entropy_floor and the Model Collapse Step (reward accuracy 0 < 1 %) are open.
        assert status.open_alerts == 2, status.open_alert_rules
        assert status.model_collapse_step == 0
        out = logged_metrics(result.metrics, status)
        assert out["sharpwatch/open_alerts"] == 2.0
        assert out["sharpwatch/model_collapse_step"] == 0.0
        assert out["sharpwatch/reward_accuracy"] == 0.0
        assert out["sharpwatch/entropy"] == pytest.approx(0.5)
        status.close()


def test_service_status_without_a_service_stays_unknown() -> None:
    with watch(None, name="offline", group_size=2, kl_beta=0.1) as run:
        status = ServiceStatus(run).start()
        assert status.refresh() is False
        assert status.open_alerts is None
        assert logged_metrics({"alpha": 1.0}, status) == {"sharpwatch/alpha": 1.0}
    with pytest.raises(ValueError, match="interval"):
        ServiceStatus(run, interval=0)
